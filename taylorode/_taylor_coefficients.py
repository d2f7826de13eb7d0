from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jaxtyping import PyTree

from ._coefficients import AbstractTaylorMethod, check_order, resolve_method
from ._polynomial import stack


def taylor_coefficients(
    vector_field: Callable[[Any, PyTree, Any], PyTree],
    t0: Any,
    y0: PyTree,
    args: Any,
    order: int,
    *,
    method: str | AbstractTaylorMethod = "recurrence",
) -> PyTree:
    r"""Normalised Taylor coefficients of the solution of an ODE.

    For $y'(t) = f(t, y(t), \text{args})$ with $y(t_0) = y_0$, returns
    $y^{[k]} = y^{(k)}(t_0) / k!$ for $k = 0, \ldots, \text{order}$, so that
    $y(t_0 + h) \approx \sum_k y^{[k]} h^k$. Non-autonomous fields are expanded with
    $t = t_0 + s$.

    **Arguments:**

    - `vector_field`: a function `f(t, y, args)` returning a PyTree of the same
        structure as `y` (the same signature as `diffrax.ODETerm`).
    - `t0`: the expansion time.
    - `y0`: the state at `t0`; any PyTree of arrays.
    - `args`: passed through to `vector_field`; not expanded.
    - `order`: the highest coefficient returned, a Python int (at least 1).
    - `method`: `"recurrence"` (the default: taylorode's own engine, per-primitive
        recurrences whose program stays far smaller than jet's as the order grows; see
        [`taylorode.RecurrenceMethod`][]), `"jet"` (recursive
        `jax.experimental.jet` in normalised form; compile time grows like order² to
        order³) or `"jvp"` (a nested `jax.jvp` tower: exact and honours
        `jax.custom_jvp`, but its program grows exponentially with the order, so it
        is limited to order 12 and is best kept at or below 8).

    **Returns:**

    A PyTree of the structure of `y0` whose leaves have a new leading axis of length
    `order + 1`: `out[k]` is $y^{[k]}$.

    **Raises:**

    - `ValueError` for an invalid `order` or `method`.
    - [`taylorode.TaylorRuleError`][] when the method meets an operation without a
        Taylor rule; the message names it (and, for `"recurrence"`, where it is).
    """
    method = resolve_method(method)
    order = check_order(order, method)
    return stack(method.expand(vector_field, jnp.asarray(t0), y0, args, order))
