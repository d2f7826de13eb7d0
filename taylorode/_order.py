"""Choosing the Taylor order: from the tolerance, and per step among a few orders.

Jorba & Zou's model of a Taylor series with radius of convergence rho: the terms decay
like `(h/rho)^j`, so at relative tolerance eps an order-i step can be
`h_i = rho * eps^(1/i) * F(i)` long, `F(i) = exp(-2/i - 0.7/(i-1))` being their
safety factor (`jorba_zou_factor`). An order-i coefficient set costs about `i^2`
(Cauchy products), so the work per unit time is `i^2 / h_i`. The radius cancels when
orders are compared, which leaves a function of eps alone; its minimum over real i is
at `i = -ln(eps)/2`, which is Jorba & Zou's order rule `p = ceil(-ln(eps)/2 + 1)`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def tolerance_scale(rtol, atol, y0, y1):
    """`atol + rtol * max(|y0|, |y1|)` per component, in the dtype of `y0`: what an
    error is measured against (as diffrax's `PIDController` does)."""
    y = jnp.maximum(jnp.abs(y0), jnp.abs(y1))
    with jax.numpy_dtype_promotion("standard"):
        return (atol + rtol * y).astype(jnp.result_type(y0))


def jorba_zou_factor(order) -> float:
    """`exp(-2/p - 0.7/(p-1))`: the step, as a fraction of the radius of convergence
    measured against the tolerance, that Jorba & Zou's rule takes at order p."""
    p = max(int(order), 2)
    return math.exp(-2.0 / p - 0.7 / (p - 1))


def order_from_tolerance(eps: float, max_order: int) -> int:
    """Jorba & Zou's order `max(2, ceil(-ln(eps)/2 + 1))`, at most `max_order`."""
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"The tolerance must be positive and finite; got {eps!r}.")
    return min(max(2, math.ceil(-0.5 * math.log(eps) + 1)), max_order)


def concrete_tolerance(rtol, atol) -> float:
    """The static tolerance the order is chosen from: `rtol`, or `atol` where
    `rtol = 0` (the smallest entry where they are arrays)."""
    try:
        r = float(np.min(np.asarray(rtol)))
        a = float(np.min(np.asarray(atol)))
    except Exception as e:  # a tracer: the tolerance is only known at run time
        raise ValueError(
            "`taylorode.Taylor()` chooses its order from the step-size controller's "
            "tolerance at trace time, but the tolerance is a traced value here (for "
            "example a `jit` argument or a vmapped array). Give the order yourself, "
            "`Taylor(order=p)`, or pass the tolerance as a Python float."
        ) from e
    return r if r > 0 else a


def log_work_per_time(order: int, log_eps):
    """`log(i^2 / h_i) + log(rho)` under Jorba & Zou's model (see the module doc)."""
    i = float(order)
    return 2.0 * math.log(i) - log_eps / i - math.log(jorba_zou_factor(order))


def select_order_index(orders: tuple[int, ...], eps_eff):
    """Index into `orders` (ascending) of the order with the least estimated work per
    unit time at effective relative tolerance `eps_eff` (traced)."""
    eps_eff = jnp.asarray(eps_eff)
    tiny = jnp.finfo(eps_eff.dtype).tiny
    log_eps = jnp.log(jnp.clip(eps_eff, tiny, 1.0))
    work = jnp.stack([log_work_per_time(q, log_eps) for q in orders])
    return jnp.argmin(work).astype(jnp.int32)
