"""Taylor coefficients through a tower of nested `jax.jvp`s."""

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._base import AbstractTaylorMethod, flatten_state, output_leaves


class JvpMethod(AbstractTaylorMethod):
    """Normalised Taylor coefficients by a tower of nested `jax.jvp`s.

    The `k`-th time derivative of the solution is the Lie derivative of the
    `(k-1)`-th along the flow: `y^(k)(t, y) = d/ds y^(k-1)(t + s, y + s f(t, y))`
    at `s = 0`. Each level is one `jax.jvp` of the previous, so the method is exact,
    works with every operation JAX can differentiate, and honours `jax.custom_jvp`
    rules.

    !!! warning "Practical limit"

        Each level differentiates the whole program below it, so the traced program
        roughly doubles with each order: fine up to order ~8, slow to compile beyond
        ~10. Orders above 12 are refused. Use `method="jet"` for higher orders.
    """

    name: ClassVar[str] = "jvp"
    max_order: ClassVar[int] = 12

    def expand(self, fn, t0, y0, args, order):
        t0, leaves, treedef = flatten_state(t0, y0)

        def field(t, ys):
            return output_leaves(fn, treedef, t, ys, args)

        # tower[k](t, ys) returns the list of derivatives [y^(0), ..., y^(k)].
        def tower0(t, ys):
            return [ys]

        def next_level(prev):
            def level(t, ys):
                tangent = (jnp.ones_like(t), field(t, ys))
                primal_out, tangent_out = jax.jvp(prev, (t, ys), tangent)
                return primal_out + [tangent_out[-1]]

            return level

        tower = tower0
        for _ in range(order):
            tower = next_level(tower)
        derivs = tower(t0, leaves)
        return [
            jtu.tree_unflatten(treedef, [d / math.factorial(k) for d in dk])
            for k, dk in enumerate(derivs)
        ]
