"""Taylor coefficients through `jax.experimental.jet`."""

from typing import ClassVar

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.experimental import jet as jet_module

from .._errors import TaylorRuleError
from ._base import AbstractTaylorMethod, flatten_state, output_leaves


# Custom-derivative primitives: jet has no rule for them and fails with an
# UnexpectedTracerError (JAX issue 30352), so they are reported up front.
_CUSTOM_CALLS = ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr")


def _sub_jaxprs(params) -> list:
    out = []
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jex_core.ClosedJaxpr):
                out.append(v.jaxpr)
            elif isinstance(v, jex_core.Jaxpr):
                out.append(v)
    return out


def _unsupported(jaxpr, dependent: list[bool], found: dict[str, None]) -> None:
    """Collect, in order of appearance, the primitives that `jet` cannot expand.

    Only operations that depend on the expanded inputs (t and y) are checked: jet
    evaluates everything else (e.g. functions of `args` alone) as plain constants.
    """
    live = {v for v, d in zip(jaxpr.invars, dependent) if d}
    for eqn in jaxpr.eqns:
        inputs = [not isinstance(v, jex_core.Literal) and v in live for v in eqn.invars]
        if not any(inputs):
            continue
        live.update(eqn.outvars)
        name = eqn.primitive.name
        if name in _CUSTOM_CALLS:
            found.setdefault(f"{name} (a jax.custom_jvp/custom_vjp function)", None)
        elif eqn.primitive not in jet_module.jet_rules:
            found.setdefault(name, None)
        elif name in ("jit", "pjit"):
            for sub in _sub_jaxprs(eqn.params):
                _unsupported(sub, inputs, found)


class JetMethod(AbstractTaylorMethod):
    """Normalised Taylor coefficients by recursive `jax.experimental.jet`.

    Coefficient `k + 1` comes from a jet of order `k` of the vector field through the
    truncated series known so far, `y^[k+1] = f^[k] / (k + 1)`. The calls are unrolled
    in Python, and `factorial_scaled=False` keeps the series normalised (the default
    derivative form converts through `exp(lgamma)` and loses 10-100x accuracy).

    !!! warning "Compilation time"

        The traced program grows like `order**2` to `order**3`: measured on Kepler,
        order 16 compiles in about 4 s and order 24 in about 13 s on a 2-core CPU.
        Unrolled jet is still the right layout: a padded scan compiles barely faster
        and runs up to 25x slower.

    **Supported operations:** those with a rule in `jax.experimental.jet.jet_rules`.
    Notably unsupported: `tan`, `atan`, `asin`, `acos`, `cbrt`, `exp2`, `lgamma`,
    control flow (`cond`, `while`, `scan`), linear solves, and every `jax.custom_jvp`
    / `jax.custom_vjp` function (e.g. `jax.nn.relu`, `jax.nn.softplus`). These raise
    [`taylorode.TaylorRuleError`][] at trace time; `method="recurrence"` handles them.
    """

    name: ClassVar[str] = "jet"
    max_order: ClassVar[int] = 60

    def expand(self, fn, t0, y0, args, order):
        t0, leaves, treedef = flatten_state(t0, y0)

        def flat(t, *ys):
            return output_leaves(fn, treedef, t, list(ys), args)

        self._check_rules(flat, t0, leaves)
        coeffs = [leaves, flat(t0, *leaves)]
        one = jnp.ones_like(t0)
        zero = jnp.zeros_like(t0)
        for k in range(1, order):
            t_series = [one] + [zero] * (k - 1)
            y_series = [[c[i] for c in coeffs[1 : k + 1]] for i in range(len(leaves))]
            _, f_series = jet_module.jet(
                flat, (t0, *leaves), (t_series, *y_series), factorial_scaled=False
            )
            coeffs.append([fs[k - 1] / (k + 1) for fs in f_series])
        return [jtu.tree_unflatten(treedef, c) for c in coeffs[: order + 1]]

    @staticmethod
    def _check_rules(flat, t0, leaves) -> None:
        jaxpr = jax.make_jaxpr(flat)(t0, *leaves).jaxpr
        found: dict[str, None] = {}
        _unsupported(jaxpr, [True] * len(jaxpr.invars), found)
        if found:
            names = ", ".join(found)
            raise TaylorRuleError(
                f"method='jet' cannot expand this vector field: jax.experimental.jet "
                f"has no Taylor rule for {names}. Use method='recurrence' (the default: "
                "taylorode's own engine, which covers these and honours "
                "taylorode.custom_taylor rules) or method='jvp' (exact, practical up "
                "to order ~8)."
            )
