"""Step sizes from the Taylor series' radius of convergence (Jorba & Zou 2005)."""

import math
from collections.abc import Callable

import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from diffrax import AbstractAdaptiveStepSizeController, RESULTS
from jaxtyping import PyTree

from .._coefficients import resolve_method


def jorba_zou_factor(order) -> float:
    """`exp(-2/p - 0.7/(p-1))`: the step, as a fraction of the radius of convergence
    measured against the tolerance, that Jorba & Zou's rule takes at order p."""
    p = max(int(order), 2)
    return math.exp(-2.0 / p - 0.7 / (p - 1))


def _scaled(rtol, atol, y0, y1, e):
    y = jnp.maximum(jnp.abs(y0), jnp.abs(y1))
    with jax.numpy_dtype_promotion("standard"):
        return e / (atol + rtol * y)


class TaylorController(AbstractAdaptiveStepSizeController):
    r"""Step sizes from the radius of convergence of the Taylor series, as dedicated
    Taylor integrators choose them (Jorba & Zou 2005; heyoka).

    Use it with [`taylorode.Taylor`][]. With $\hat c_j = y^{[j]} h^j$ the scaled
    coefficients of the step just taken (order $p$, step $h$), the solver's error
    estimate is $e = \max(|\hat c_{p-1}|, |\hat c_p|)$ per component, and the
    controller measures it against the tolerance
    $r = \|e / (\text{atol} + \text{rtol}\max(|y_0|, |y_1|))\|_\infty$. Then:

    - the step is accepted iff $r \le 1$ (its last two terms are within tolerance);
    - $\rho = h\, r^{-1/p}$ estimates the radius of convergence measured against the
      tolerance, and the next step is
      $h_{\text{next}} = \rho\, e^{-2/p}\, e^{-0.7/(p-1)}$.

    With `atol = rtol = ε` and $\max|y| = N$ this is Jorba & Zou's rule
    $h = \rho_{JZ}\, e^{-2} e^{-0.7/(p-1)}$ with $\rho_{JZ} = (N/\|y^{[p]}\|_\infty)^{1/p}$
    at their order $p = \lceil -\tfrac12 \ln ε + 1\rceil$ (for other orders it keeps
    the same distance $(ε/e^2)^{1/p}$ from the radius), so `rtol` and `atol` play the
    parts of heyoka's relative and absolute tolerance. The step aimed at leaves
    $r \approx e^{-2.7}$: a step is rejected only when the radius shrinks by more than
    $e^{2.7/p}$ (14 % at order 20) from one step to the next.

    A zero error estimate (a polynomial solution, or a zero vector field) grows the
    step by `factormax`.

    ??? cite "References"

        ```bibtex
        @article{jorba2005software,
            author={Jorba, {\`A}ngel and Zou, Maorong},
            title={A Software Package for the Numerical Integration of {ODE}s by
                   Means of High-Order {T}aylor Methods},
            journal={Experimental Mathematics},
            volume={14},
            number={1},
            pages={99--117},
            year={2005}
        }
        ```
    """

    rtol: float
    atol: float
    norm: Callable[[PyTree], jax.Array] = optx.max_norm
    dtmin: float | None = None
    dtmax: float | None = None
    force_dtmin: bool = True
    factormin: float = 0.2
    factormax: float = 10.0

    def wrap(self, direction):
        return self

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        at_dtmin = jnp.array(False)
        if dt0 is not None:
            return t0 + dt0, at_dtmin
        if error_order is None:
            raise ValueError("TaylorController needs a solver with an error order (use taylorode.Taylor).")
        # The first step from the radius at y0: one coefficient set of the solver's order,
        # by the solver's own coefficient method when it has one (`func` is the solver's
        # bound `func` method).
        p = int(error_order)
        method = getattr(getattr(func, "__self__", None), "method", "recurrence")
        unit = terms.contr(t0, t0 + 1)

        def rhs(t, y, args):
            return terms.vf_prod(t, y, args, unit)

        coeffs = resolve_method(method).expand(rhs, t0, y0, args, p)
        radius = jnp.inf
        for j in (p - 1, p):
            if j < 1:
                continue
            r = self.norm(jtu.tree_map(lambda y, c: _scaled(self.rtol, self.atol, y, y, c), y0, coeffs[j]))
            radius = jnp.minimum(radius, jnp.where(r > 0, r ** (-1.0 / j), jnp.inf))
        dt = lax.stop_gradient(radius * jorba_zou_factor(p))
        dt = jnp.where(jnp.isfinite(dt), dt, jnp.abs(t1 - t0))
        dt = self._clip(dt)
        return t0 + dt.astype(jnp.result_type(t0)), at_dtmin

    def _clip(self, dt):
        if self.dtmax is not None:
            dt = jnp.minimum(dt, self.dtmax)
        if self.dtmin is not None:
            dt = jnp.maximum(dt, self.dtmin)
        return dt

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        del args
        if y_error is None:
            raise RuntimeError("TaylorController needs a solver that provides an error estimate.")
        at_dtmin = controller_state
        p = int(error_order)
        h = t1 - t0
        r = self.norm(jtu.tree_map(_scale_fn(self.rtol, self.atol), y0, y1_candidate, y_error))
        r = lax.stop_gradient(jnp.asarray(r))
        keep = r <= 1
        if self.dtmin is not None:
            keep = keep | at_dtmin
        factor = jnp.where(r > 0, r ** (-1.0 / p), jnp.inf) * jorba_zou_factor(p)
        factormax = jnp.where(keep, self.factormax, 1.0)
        factor = jnp.clip(factor, self.factormin, factormax)
        factor = eqxi.nondifferentiable(lax.stop_gradient(factor))
        dt = h * factor.astype(jnp.result_type(h))
        result = RESULTS.successful
        if self.dtmax is not None:
            dt = jnp.minimum(dt, self.dtmax)
        if self.dtmin is not None:
            if not self.force_dtmin:
                result = RESULTS.where(dt < self.dtmin, RESULTS.dt_min_reached, result)
            at_dtmin = dt <= self.dtmin
            dt = jnp.maximum(dt, self.dtmin)
        next_t0 = jnp.where(keep, t1, t0)
        next_t1 = next_t0 + dt
        return keep, next_t0, next_t1, False, at_dtmin, result


def _scale_fn(rtol, atol):
    def scale(y0, y1, e):
        nan = jnp.isnan(y1).any()
        y1 = jnp.where(nan, y0, y1)
        return _scaled(rtol, atol, y0, y1, e)

    return scale


TaylorController.__init__.__doc__ = """**Arguments:**

- `rtol`, `atol`: relative and absolute tolerance, per component:
    `atol + rtol * max(|y0|, |y1|)`.
- `norm`: how the scaled error estimate is reduced to a number; default the
    infinity norm (as in Jorba & Zou and heyoka).
- `dtmin`, `dtmax`: smallest and largest step allowed.
- `force_dtmin`: at `dtmin`, accept the step anyway (`True`) or stop the solve with
    `RESULTS.dt_min_reached` (`False`).
- `factormin`, `factormax`: bounds on the ratio of successive steps.
"""
