"""Step sizes from the Taylor series' radius of convergence (Jorba & Zou 2005)."""

from collections.abc import Callable

import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from diffrax import RESULTS, AbstractAdaptiveStepSizeController
from jaxtyping import PyTree

from .._custom_types import Args, BoolScalarLike, RealScalarLike, Y
from .._jorba_zou import step_factor, tolerance_scale
from .._precision import check_tolerances, warn_if_tolerance_below_precision
from .._protocol import TaylorFunc


# (at_dtmin, approved): whether the last step was forced to dtmin, and the longest next
# step that is sized from the coefficients where it starts (0: none; test it).
_ControllerState = tuple[BoolScalarLike, RealScalarLike]


class TaylorController(AbstractAdaptiveStepSizeController):
    r"""Step sizes from the radius of convergence of the Taylor series, as dedicated
    Taylor integrators choose them (Jorba & Zou 2005; heyoka).

    Use it with [`taylorode.Taylor`][]. The solver's error estimate $e$ is, per
    component, the larger of the last two terms $|\hat c_{p-1}|, |\hat c_p|$ of the
    series at the *end* of the step just taken, for a step of the same length $h$
    ($\hat c_j = y^{[j]} h^j$; each term with its own exponent where the solver takes
    its order from the tolerance, see [`taylorode.Taylor`][]). This is the whole
    solver–controller protocol ([`taylorode.TaylorFunc`][]): `diffeqsolve` hands the
    controller the solver's `func`, whose type says that the solver's `y_error` is this
    estimate, and the estimate itself; a solver whose estimate is something else (diffrax's solvers,
    taylorode's implicit ones) is refused at trace time, with a pointer to
    `diffrax.PIDController`. The controller measures it against the tolerance,
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

    **First step.** Of length `dt0` where one is given, and then tested like any
    other. Otherwise by the same rule as every later step, from the coefficients at
    $y_0$: the solver's `func` gives its error estimate for a step of a reference
    length from there (the protocol, [`taylorode.TaylorFunc`][]), computed from the
    same expansion that the solver's `init` makes, so XLA computes it once.

    A zero error estimate (a polynomial solution, or a zero vector field) grows the
    step by `factormax` (the first step: to the end of the interval).

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

    def __check_init__(self):
        check_tolerances(self.rtol, self.atol, "taylorode.TaylorController")

    def wrap(self, direction) -> "TaylorController":
        return self

    def init(
        self,
        terms,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        dt0: RealScalarLike | None,
        args: Args,
        func: Callable,
        error_order: RealScalarLike | None,
    ) -> tuple[RealScalarLike, _ControllerState]:
        if not (isinstance(func, TaylorFunc) and func.start_error is not None):
            what = (
                f"taylorode.{func.solver_name}, whose error estimate is a local error"
                if isinstance(func, TaylorFunc)
                else "a solver that is not a taylorode.Taylor"
            )
            raise ValueError(
                "taylorode.TaylorController sizes steps from the Taylor coefficients "
                "that taylorode.Taylor reports as its error estimate, and was given "
                f"{what}. Use diffrax.PIDController(rtol=..., atol=...) with this "
                "solver, or use taylorode.Taylor()."
            )
        warn_if_tolerance_below_precision(y0, self.rtol, self.atol)
        dtype = jnp.result_type(t0, jnp.asarray(t0) * 1.0)
        at_dtmin = jnp.array(False)
        if dt0 is not None:
            # A step of the user's length is checked, not taken on trust.
            return t0 + dt0, (at_dtmin, jnp.zeros((), dtype))
        # The first step by the same rule as every later one, from the solver's error
        # estimate for a step of its reference length h0 from y0; approved in advance.
        h0, y_error = func.start_error(terms, t0, y0, args)
        r = self.norm(jtu.tree_map(_scale_fn(self.rtol, self.atol), y0, y0, y_error))
        factor = step_factor(jnp.asarray(r), int(error_order))
        dt = lax.stop_gradient(h0 * factor).astype(dtype)
        dt = jnp.where(jnp.isfinite(dt), dt, jnp.abs(t1 - t0))
        approved = dt
        dt = self._clip(dt)
        return t0 + dt.astype(jnp.result_type(t0)), (at_dtmin, approved)

    def _clip(self, dt):
        if self.dtmax is not None:
            dt = jnp.minimum(dt, self.dtmax)
        if self.dtmin is not None:
            dt = jnp.maximum(dt, self.dtmin)
        return dt

    def adapt_step_size(
        self,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        y1_candidate: Y,
        args: Args,
        y_error: Y | None,
        error_order: RealScalarLike | None,
        controller_state: _ControllerState,
    ) -> tuple[BoolScalarLike, RealScalarLike, RealScalarLike, BoolScalarLike, _ControllerState, RESULTS]:
        del args
        if y_error is None:
            raise RuntimeError("TaylorController needs a solver that provides an error estimate.")
        at_dtmin, approved = controller_state
        p = int(error_order)
        h = t1 - t0
        r = self.norm(jtu.tree_map(_scale_fn(self.rtol, self.atol), y0, y1_candidate, y_error))
        r = lax.stop_gradient(jnp.asarray(r))
        # A step no longer than the one sized from the coefficients at its start is
        # accepted as it is (Jorba & Zou; heyoka never rejects); any other step (the
        # first, a user's `dt0`, one cut by `dtmax` or the end of the interval is
        # shorter, so approved too) must pass the test r <= 1 on its error estimate.
        # Non-finite estimates never pass.
        pre_approved = (h <= approved * (1 + 1e-6)) & jnp.isfinite(r)
        keep = pre_approved | (r <= 1)
        if self.dtmin is not None:
            keep = keep | at_dtmin
        # The solver's estimate comes from the coefficients at the end of the step,
        # where the next step starts: a step up to `h * factor` from there is sized
        # by Jorba & Zou's rule, so it is approved in advance.
        factor = step_factor(r, p)
        approved = jnp.where(keep, h * factor.astype(jnp.result_type(h)), 0)
        approved = lax.stop_gradient(approved)
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
        return keep, next_t0, next_t1, False, (at_dtmin, approved), result


def _scale_fn(rtol, atol):
    def scale(y0, y1, e):
        nan = jnp.isnan(y1).any()
        y1 = jnp.where(nan, y0, y1)
        # A zero estimate is zero whatever the scale (a step that ends the solve on a
        # non-finite state reports zero).
        with jax.numpy_dtype_promotion("standard"):  # a complex state's estimate
            return jnp.where(e == 0, jnp.zeros_like(e), e / tolerance_scale(rtol, atol, y0, y1))

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
