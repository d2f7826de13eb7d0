"""Step sizes from the Taylor series' radius of convergence (Jorba & Zou 2005)."""

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
from .._handshake import TaylorControllerNorm
from .._order import jorba_zou_factor, tolerance_scale
from .._solver.taylor import Taylor


class TaylorController(AbstractAdaptiveStepSizeController):
    r"""Step sizes from the radius of convergence of the Taylor series, as dedicated
    Taylor integrators choose them (Jorba & Zou 2005; heyoka).

    Use it with [`taylorode.Taylor`][]. The solver's error estimate $e$ is, per
    component, the larger of the last two terms $|\hat c_{p-1}|, |\hat c_p|$ of the
    series at the *end* of the step just taken, for a step of the same length $h$
    ($\hat c_j = y^{[j]} h^j$). The controller measures it against the tolerance,
    $r = \|e / (\text{atol} + \text{rtol}\max(|y_0|, |y_1|))\|_\infty$, and:

    - sizes the next step by Jorba & Zou's rule from the coefficients where it starts:
      $\rho = h\, r^{-1/p}$ estimates the radius of convergence measured against the
      tolerance, and $h_\text{next} = \rho\, e^{-2/p}\, e^{-0.7/(p-1)}$;
    - accepts a step that is no longer than the one so sized from its own start
      without further test, as Jorba & Zou and heyoka do (they never reject); any
      other step (a user's `dt0`, one forced to `dtmin`) must pass $r \le 1$. A
      non-finite estimate is always rejected.

    With `atol = rtol = ε` and $\max|y| = N$ this is Jorba & Zou's rule
    $h = \rho_{JZ}\, e^{-2} e^{-0.7/(p-1)}$ with $\rho_{JZ} = (N/\|y^{[p]}\|_\infty)^{1/p}$
    at their order $p = \lceil -\tfrac12 \ln ε + 1\rceil$ (for other orders it keeps
    the same distance $(ε/e^2)^{1/p}$ from the radius), so `rtol` and `atol` play the
    parts of heyoka's relative and absolute tolerance.

    **First step.** With `Taylor()` (order from the tolerance), and with
    `Taylor(order=p)` and `dt0=None`, the first step is of zero length: it gives the
    controller the coefficients at $y_0$ from the solver's own step, and the step after
    it is sized from them (no longer than `dt0` where one is given). It counts in
    diffrax's `num_accepted_steps`. With `Taylor(order=p)` and a `dt0`, the step of
    length `dt0` is tested like any other. With other solvers and `dt0=None`, the first
    step is sized from one coefficient set computed here.

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

    def __init__(
        self,
        rtol: float,
        atol: float,
        norm: Callable[[PyTree], jax.Array] = optx.max_norm,
        dtmin: float | None = None,
        dtmax: float | None = None,
        force_dtmin: bool = True,
        factormin: float = 0.2,
        factormax: float = 10.0,
    ):
        self.rtol = rtol
        self.atol = atol
        self.norm = norm if isinstance(norm, TaylorControllerNorm) else TaylorControllerNorm(norm)
        self.dtmin = dtmin
        self.dtmax = dtmax
        self.force_dtmin = force_dtmin
        self.factormin = factormin
        self.factormax = factormax

    def wrap(self, direction):
        return self

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        at_dtmin = jnp.array(False)
        dtype = jnp.result_type(t0, jnp.asarray(t0) * 1.0)
        no_cap = jnp.array(jnp.inf, dtype)
        solver = getattr(func, "__self__", None)
        handshake = getattr(solver, "starts_with_zero_step", False)
        if handshake or (dt0 is None and isinstance(solver, Taylor)):
            # A zero-length first step gives the solver the coefficients at y0 from its
            # own step, and the step after it is sized from them (no longer than `dt0`
            # where one is given). `Taylor()` handed our norm (see
            # `taylorode._handshake`) computes them only there; `Taylor(order=p)` has
            # them from its `init` already, and the step's error estimate carries them
            # here: either way no extra coefficient kernel is compiled for this.
            cap = no_cap if dt0 is None else jnp.asarray(dt0, dtype)
            return t0, (at_dtmin, jnp.zeros((), dtype), cap)
        if dt0 is not None:
            # A step of the user's length is checked, not taken on trust.
            return t0 + dt0, (at_dtmin, jnp.zeros((), dtype), no_cap)
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
            r = self.norm(jtu.tree_map(lambda y, c: c / tolerance_scale(self.rtol, self.atol, y, y), y0, coeffs[j]))
            radius = jnp.minimum(radius, jnp.where(r > 0, r ** (-1.0 / j), jnp.inf))
        dt = lax.stop_gradient(radius * jorba_zou_factor(p))
        dt = jnp.where(jnp.isfinite(dt), dt, jnp.abs(t1 - t0))
        approved = dt
        dt = self._clip(dt)
        return t0 + dt.astype(jnp.result_type(t0)), (at_dtmin, approved.astype(dtype), no_cap)

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
        at_dtmin, approved, cap = controller_state
        p = int(error_order)
        h = t1 - t0
        # The solver's error estimate is for a step of length h, or of length 1 after
        # the zero-length first step (see `taylorode._handshake`).
        zero_step = h == 0
        h_ref = jnp.where(zero_step, jnp.ones_like(h), h)
        r = self.norm(jtu.tree_map(_scale_fn(self.rtol, self.atol), y0, y1_candidate, y_error))
        r = lax.stop_gradient(jnp.asarray(r))
        # A step no longer than the one sized from the coefficients at its start is
        # accepted as it is (Jorba & Zou; heyoka never rejects); any other step must
        # pass the test r <= 1 on its error estimate. Non-finite estimates never pass.
        pre_approved = (h <= approved * (1 + 1e-6)) & jnp.isfinite(r)
        keep = pre_approved | (r <= 1)
        if self.dtmin is not None:
            keep = keep | at_dtmin
        factor = jnp.where(r > 0, r ** (-1.0 / p), jnp.inf) * jorba_zou_factor(p)
        # The solver's estimate comes from the coefficients at the end of the step,
        # where the next step starts: a step up to `h * factor` from there is sized
        # by Jorba & Zou's rule, so it is approved in advance.
        approved = jnp.where(keep, h_ref * factor.astype(jnp.result_type(h)), 0)
        approved = lax.stop_gradient(approved)
        factormax = jnp.where(keep, self.factormax, 1.0)
        clipped = jnp.clip(factor, self.factormin, factormax)
        factor = jnp.where(zero_step, factor, clipped)
        factor = eqxi.nondifferentiable(lax.stop_gradient(factor))
        dt = h_ref * factor.astype(jnp.result_type(h))
        dt = jnp.where(jnp.isfinite(dt), dt, cap)
        dt = jnp.minimum(dt, cap.astype(dt.dtype))
        cap = jnp.where(keep & ~zero_step, jnp.inf, cap)
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
        return keep, next_t0, next_t1, False, (at_dtmin, approved, cap), result


def _scale_fn(rtol, atol):
    def scale(y0, y1, e):
        nan = jnp.isnan(y1).any()
        y1 = jnp.where(nan, y0, y1)
        return e / tolerance_scale(rtol, atol, y0, y1)

    return scale


TaylorController.__init__.__doc__ = """**Arguments:**

- `rtol`, `atol`: relative and absolute tolerance, per component:
    `atol + rtol * max(|y0|, |y1|)`.
- `norm`: how the scaled error estimate is reduced to a number; default the
    infinity norm (as in Jorba & Zou and heyoka).
- `dtmin`, `dtmax`: smallest and largest step allowed.
- (`dt0` of `diffeqsolve`): with `Taylor()`, an upper bound on the first step.
- `force_dtmin`: at `dtmin`, accept the step anyway (`True`) or stop the solve with
    `RESULTS.dt_min_reached` (`False`).
- `factormin`, `factormax`: bounds on the ratio of successive steps.
"""
