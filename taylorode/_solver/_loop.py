"""A while loop that runs as `lax.while_loop` and is differentiable in reverse mode.

`Taylor.step` makes all its expansions (at the step's start when it has no carried
series, after each switch, at its end) through one loop, so that the compiled program
holds one copy of the coefficient kernel. `lax.while_loop` costs nothing measurable per
step on XLA:CPU (a fixed-trip `fori_loop` with a conditional inside costs 0.3 µs a
step, as much as a whole Lorenz expansion), but JAX cannot transpose it. Here the
primal is the while loop, and the JVP is that of the same body run `max_steps` times,
each iteration a real conditional (batch-uniform under `vmap`, per-lane selects), which
JAX can linearise and transpose: programs that are not differentiated keep the fast
loop, and differentiated ones pay for the fixed trip count only there.
"""

from collections.abc import Callable
from typing import TypeVar

import equinox as eqx
import equinox.internal as eqxi
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu


_C = TypeVar("_C")


def bounded_while_loop(cond_fun: Callable[[_C], object], body_fun: Callable[[_C], _C], init_val: _C, max_steps: int) -> _C:
    """`lax.while_loop(cond_fun, body_fun, init_val)` for a loop known to stop within
    `max_steps` iterations, differentiable in forward and reverse mode (see the module
    doc). `cond_fun` and `body_fun` may close over traced values."""
    cond = eqx.filter_closure_convert(cond_fun, init_val)
    body = eqx.filter_closure_convert(body_fun, init_val)
    return _loop(cond, body, init_val, max_steps=max_steps)


@eqx.filter_custom_jvp
def _loop(cond, body, init_val, *, max_steps):
    return lax.while_loop(lambda v: cond(v), lambda v: body(v), init_val)


def _unrolled(cond, body, init_val, max_steps):
    def one(_, val):
        go = cond(val)

        def run(val):
            new = body(val)
            return jtu.tree_map(lambda n, o: jnp.where(go, n, o), new, val)

        return lax.cond(eqxi.unvmap_any(go), run, lambda val: val, val)

    return lax.fori_loop(0, max_steps, one, init_val)


@_loop.def_jvp
def _loop_jvp(primals, tangents, *, max_steps):
    return eqx.filter_jvp(lambda c, b, v: _unrolled(c, b, v, max_steps), primals, tangents)
