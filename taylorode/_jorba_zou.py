"""Jorba & Zou's model of a Taylor step: order from the tolerance, radius of
convergence, step length and work per unit time. The one place where this model is
written; the solver's error estimate (`taylorode.Taylor`), the step-size controller
(`taylorode.TaylorController`) and the diagnostics (`taylorode.stiffness_diagnostics`)
all use it.

A Taylor series with radius of convergence rho has terms that decay like `(h/rho)^j`.
At relative tolerance eps an order-i step can be `h_i = rho * eps^(1/i) * F(i)` long,
with `F(i) = exp(-2/i - 0.7/(i-1))` their safety factor (`jorba_zou_factor`). The radius
is estimated from the last two coefficients, `rho = min_j (eps / |y^[j]|)^(1/j)` over
`j = p-1, p` with the tolerance-scaled norm (`radius_from_terms`). An order-i
coefficient set costs about `i^2` (Cauchy products), so the work per unit time is
`i^2 / h_i`. The radius cancels when orders are compared, which leaves a function of eps
alone; its minimum over real i is at `i = -ln(eps)/2`, which is Jorba & Zou's order rule
`p = ceil(-ln(eps)/2 + 1)` (`order_from_tolerance`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ._precision import check_tolerances


def tolerance_scale(rtol, atol, y0, y1) -> Array:
    """`atol + rtol * max(|y0|, |y1|)` per component, in the real dtype of `y0` (a
    complex state's included): what an error is measured against (as diffrax's
    `PIDController` does)."""
    y = jnp.maximum(jnp.abs(y0), jnp.abs(y1))
    with jax.numpy_dtype_promotion("standard"):
        return (atol + rtol * y).astype(jnp.result_type(y))


def jorba_zou_factor(order: int) -> float:
    """`exp(-2/p - 0.7/(p-1))`: the step, as a fraction of the radius of convergence
    measured against the tolerance, that Jorba & Zou's rule takes at order p."""
    p = max(int(order), 2)
    return math.exp(-2.0 / p - 0.7 / (p - 1))


def order_from_tolerance(eps: float, max_order: int) -> int:
    """Jorba & Zou's order `max(2, ceil(-ln(eps)/2 + 1))`, at most `max_order`."""
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"The tolerance must be positive and finite; got {eps!r}.")
    return min(max(2, math.ceil(-0.5 * math.log(eps) + 1)), max_order)


# The orders compiled where the tolerance is only known at run time: Jorba & Zou's
# order for tolerances 1e-3 ... 1e-14 lies within 2 of one of them.
RUNTIME_ORDERS = (6, 10, 14, 18)


def is_traced(*values) -> bool:
    """Whether any of `values` is only known at run time (a `jit` argument, a vmapped
    array), so that it cannot be read as a number at trace time."""
    try:
        for v in values:
            np.asarray(v, dtype=float)
    except Exception:  # a tracer
        return True
    return False


def static_tolerance(rtol, atol) -> float | None:
    """The static tolerance the order is chosen from: `rtol`, or `atol` where
    `rtol = 0` (the smallest entry where they are arrays); `None` where the tolerance
    is traced (`is_traced`)."""
    if is_traced(rtol, atol):
        return None
    check_tolerances(rtol, atol, "taylorode.Taylor()")
    r, a = float(np.min(np.asarray(rtol))), float(np.min(np.asarray(atol)))
    return r if r > 0 else a


def valid_tolerance(rtol, atol) -> Array:
    """Whether (traced) tolerances are finite, non-negative and not both zero."""
    r, a = jnp.asarray(rtol), jnp.asarray(atol)
    ok = jnp.all(jnp.isfinite(r) & (r >= 0)) & jnp.all(jnp.isfinite(a) & (a >= 0))
    return ok & (jnp.any(r > 0) | jnp.any(a > 0))


def runtime_orders(max_order: int) -> tuple[int, ...]:
    """`RUNTIME_ORDERS`, at most `max_order` each (ascending, distinct)."""
    return tuple(sorted({min(q, max_order) for q in RUNTIME_ORDERS}))


def term_error(u: ArrayLike, v: ArrayLike, q: int) -> Array:
    """The error of an order-q step in the exponent-`1/q` form, from its last two terms
    `u = |c_{q-1}|`, `v = |c_q|` measured against the tolerance: `max(v, u^(q/(q-1)))`,
    so that `term_error^(-1/q) = min(u^(-1/(q-1)), v^(-1/q))` is the radius of
    `radius_from_terms` in units of the step."""
    return jnp.maximum(v, u ** (q / (q - 1)))


def step_factor(r: ArrayLike, order: int) -> Array:
    """`r^(-1/p) * F(p)`: the next step as a multiple of the last, from the error `r`
    (in the `term_error` form, measured against the tolerance) of the series where it
    starts; infinite where `r = 0` (a polynomial solution)."""
    r = jnp.asarray(r)
    safe = jnp.where(r > 0, r, 1)
    return jnp.where(r > 0, safe ** (-1.0 / order), jnp.inf) * jorba_zou_factor(order)


def radius_from_terms(log_scale: ArrayLike, log_norms: dict[int, ArrayLike]) -> Array:
    """`min_j exp((log_scale - log_norms[j]) / j)`: the radius of convergence measured
    against the scale `exp(log_scale)`, from the norms of the coefficients y^[j]. In
    logarithms, so that a zero coefficient gives an infinite radius, not NaN."""
    radius = jnp.asarray(jnp.inf)
    for j, log_norm in log_norms.items():
        radius = jnp.minimum(radius, jnp.exp((log_scale - log_norm) / j))
    return radius


def log_work_per_time(order: int, log_eps):
    """`log(i^2 / h_i) + log(rho)` under Jorba & Zou's model (see the module doc)."""
    i = float(order)
    return 2.0 * math.log(i) - log_eps / i - math.log(jorba_zou_factor(order))


def select_order_index(orders: tuple[int, ...], eps_eff) -> Array:
    """Index into `orders` (ascending) of the order with the least estimated work per
    unit time at effective relative tolerance `eps_eff` (traced)."""
    eps_eff = jnp.asarray(eps_eff)
    tiny = jnp.finfo(eps_eff.dtype).tiny
    log_eps = jnp.log(jnp.clip(eps_eff, tiny, 1.0))
    work = jnp.stack([log_work_per_time(q, log_eps) for q in orders])
    return jnp.argmin(work).astype(jnp.int32)
