"""The solver–controller protocol of taylorode's solvers (see `TaylorFunc`)."""

from collections.abc import Callable

import equinox as eqx

from ._custom_types import VF, Args, RealScalarLike, Y


class TaylorFunc(eqx.Module):
    """`solver.func` of taylorode's solvers: the vector field, and the solver–controller
    protocol.

    diffrax connects a solver to its step-size controller through three things only:
    the controller's `init` receives `solver.func`, its `adapt_step_size` receives the
    `y_error` returned by `solver.step`, and both receive `solver.error_order(terms)`.
    taylorode's protocol uses exactly those, and nothing else passes between them (the
    controller imports no solver; the solver does not need to know which controller
    drives it):

    - **`solver.func` is a `TaylorFunc`.** Called as `func(terms, t0, y0, args)` it
      evaluates the vector field, as every diffrax solver's `func` does (diffrax's
      `PIDController` calls it to size a first step). Its fields say which solver it
      is and what its `y_error` is; [`taylorode.TaylorController`][] checks them at
      trace time and refuses other solvers with a message that says what to use.
    - **`y_error` of [`taylorode.Taylor`][] is the Jorba–Zou estimate at the step's
      end:** per component, the error of a step of the *same length* taken from the
      step's end, computed from the coefficients there (see `Taylor` for its form in
      each mode), which the solver carries to the next step. It is a PyTree shaped like
      the state, so diffrax's own controllers read it as an ordinary error estimate; a
      controller that knows the protocol may also size the next step from it and
      accept that step without a further test, since the series it comes from is the
      one the next step sums.
    - **`error_order(terms)` is the order `p`** that the estimate's exponent refers to.
    - **The first step.** `func.start_error(terms, t0, y0, args)` returns `(h0, e)`:
      a reference length `h0` of the solver's choosing and the same estimate `e` for a
      step of length `h0` from the initial point, so that the first step is sized by
      the same rule as every later one. The solver's `init` expands the same series to
      start from (for `Taylor()`, of its low start order), so XLA computes the two once.

    **Fields:**

    - `solver_name`: the solver's name, for messages.
    - `jorba_zou_estimate`: whether `y_error` is the Jorba–Zou estimate above (`Taylor`)
        rather than an ordinary local-error estimate (the implicit solvers).
    - `start_error`: the callable above where `jorba_zou_estimate` is true, else
        `None`.
    """

    solver_name: str = eqx.field(static=True)
    jorba_zou_estimate: bool = eqx.field(static=True)
    start_error: Callable | None = None

    def __call__(self, terms, t0: RealScalarLike, y0: Y, args: Args) -> VF:
        return terms.vf(t0, y0, args)
