"""Everything taylorode relies on in diffrax beyond its documented solver and
controller interfaces, in one place (`tests/test_interop.py` checks each item against
the installed diffrax, so that a diffrax change fails loudly there).

- **Term check.** A Taylor step expands dy/ds = vf_prod(t0 + s h, y, args,
  contr(t0, t1)): exact when the control is linear in time, i.e. for an ODE. diffrax
  wraps the user's term before any step (`WrapTerm`, to reverse time) and builds
  `AdjointTerm`s for `BacksolveAdjoint`, so a solver's `term_structure` has to admit
  any `AbstractTerm`; `check_ode_term` looks through those wrappers (by their `term`
  attribute, so a renamed wrapper still works) and raises diffrax's own
  `TermAndSolverIncompatible` (the only private name imported from diffrax).
- **The tolerance channel.** `diffeqsolve` fills the `rtol`, `atol` and `norm` of an
  implicit solver's `root_finder` that are marked "from the controller" with the
  adaptive step-size controller's own (`diffrax.with_stepsize_controller_tols`, a
  public function). `ControllerTolerances` is such a slot for a solver that needs the
  tolerances but solves no equations (`taylorode.Taylor()` takes its order from them);
  `filled_tolerances` reads it back, or says that nothing was filled in.
- **Events.** diffrax does not pass `diffeqsolve`'s `event` to the solver, so a long step
  cannot see a condition that crosses twice inside it; `diffeqsolve` here hands the event
  to a `taylorode.Taylor` solver before calling diffrax's.
- **Results.** A solver step can return only `diffrax.RESULTS`; `diffeqsolve` here
  turns the solve's result into a `taylorode.RESULTS` member that names the cause.
"""

from typing import Any

import equinox as eqx
import jax.tree_util as jtu
from diffrax import AbstractTerm, ODETerm, with_stepsize_controller_tols


try:  # diffrax's own error type, so that users catch one exception for both checks
    from diffrax._integrate import TermAndSolverIncompatible
except ImportError:  # pragma: no cover - a diffrax that moved it (test_interop fails)

    class TermAndSolverIncompatible(ValueError):
        pass


def check_ode_term(terms: AbstractTerm, solver_name: str) -> None:
    """Raise `TermAndSolverIncompatible` unless `terms` is (a wrapped) `ODETerm`."""
    term = terms
    while not isinstance(term, ODETerm) and isinstance(getattr(term, "term", None), AbstractTerm):
        term = term.term
    if not isinstance(term, ODETerm):
        raise TermAndSolverIncompatible(
            f"{solver_name} solves ordinary differential equations and needs a "
            f"diffrax.ODETerm, but got {type(term).__name__}. Control and SDE terms "
            "(ControlTerm, MultiTerm with a Brownian motion) need a diffrax SDE solver "
            "such as diffrax.Heun or diffrax.SPaRK; a sum of vector fields can be "
            "written as one ODETerm."
        )


class ControllerTolerances(eqx.Module):
    """A `root_finder` slot through which `diffeqsolve` hands the adaptive step-size
    controller's `rtol`, `atol` and `norm` to a solver (see the module doc)."""

    rtol: Any
    atol: Any
    norm: Any


# diffrax's marker for "filled in from the controller" (public route to the object).
_FROM_CONTROLLER = with_stepsize_controller_tols(ControllerTolerances)().rtol


def tolerance_slot() -> ControllerTolerances:
    """An empty slot, to be filled by `diffeqsolve` from an adaptive controller."""
    return with_stepsize_controller_tols(ControllerTolerances)()


def no_tolerances() -> ControllerTolerances:
    """A slot that asks for nothing (so that fixed step sizes are allowed)."""
    return ControllerTolerances(None, None, None)


def filled_tolerances(slot) -> tuple[Any, Any, Any] | None:
    """`(rtol, atol, norm)` of a root finder whose tolerances `diffeqsolve` filled in
    from the controller, or `None` where any of them is still the "from the
    controller" marker (no adaptive controller) or was never asked for."""
    values = (getattr(slot, "rtol", None), getattr(slot, "atol", None), getattr(slot, "norm", None))
    if any(v is _FROM_CONTROLLER or v is None for v in values):
        return None
    return values


def diffeqsolve(terms, solver, t0, t1, dt0, y0, args=None, *, event=None, **kwargs):
    """`diffrax.diffeqsolve`, with the `event` also handed to a taylorode solver, and
    the cause of a failure named in the result.

    diffrax checks an event's condition only at the ends of steps, so a condition that
    becomes true and false again inside one long step is never seen. A taylorode
    solver given the event (`Taylor(event=event)`, `HermiteObreschkoff(p, q,
    event=event)`, ...) expands the condition along each step with the solution and
    rejects any step that would hide two crossings between its ends
    ([`taylorode.Taylor`][] also ends a piece of the step at each crossing), so the
    first crossing is always found. This function does that hand-over: it is
    `diffrax.diffeqsolve` with the same arguments, except that when `solver` is a
    taylorode solver without an event of its own, it is given `event` first.

    The crossing is then the only one between the ends of the step where diffrax sees
    the sign change, so it is located by bisection on that step's dense output: for an
    event with one condition, a root finder with `rtol` and `atol` (such as
    `optimistix.Newton(rtol, atol)`) is replaced by `optimistix.Bisection(rtol, atol)`
    (diffrax root-finds several conditions together, which bisection cannot). (diffrax starts the root finder
    at the step's end; a Newton iteration from there leaves the step, or stalls at its
    end, where the condition turns back inside the step, as in a long step over a
    maximum just past the crossing.)

    A failure is reported as a member of [`taylorode.RESULTS`][], which extends
    `diffrax.RESULTS` as diffrax extends optimistix's: a non-finite `y0` is
    `nonfinite_initial_state` whatever the solver, and non-finite values in a taylorode
    solver's step from a finite state are `singular_vector_field` (diffrax reports both
    as `nonfinite`); tolerances given as traced values (the arguments of a jitted
    function) are checked at run time, `invalid_tolerance`. With `throw=True` (the default) the error raised carries that
    message; with `throw=False` it is the solution's `result`, per trajectory under
    `jax.vmap`.

    **Arguments:** as `diffrax.diffeqsolve`.

    **Returns:** the `diffrax.Solution`, whose `result` is a [`taylorode.RESULTS`][]
    member (compare it with `taylorode.RESULTS.successful`, ...).

    Give the event a root finder (e.g. `diffrax.Event(cond_fn,
    root_finder=optimistix.Newton(rtol, atol))`) for the crossing time to the accuracy
    of the solution; without one, diffrax reports the end of the step in which the
    condition changed sign.
    """
    import diffrax
    import optimistix as optx

    from ._results import is_okay, name_cause
    from ._solver.base import AbstractTaylorSolver

    taylor = isinstance(solver, AbstractTaylorSolver)
    if event is not None and taylor:
        finder = event.root_finder
        tols = (getattr(finder, "rtol", None), getattr(finder, "atol", None))
        single = len(jtu.tree_leaves(event.cond_fn)) == 1
        if single and finder is not None and not isinstance(finder, optx.Bisection) and None not in tols:
            event = eqx.tree_at(lambda e: e.root_finder, event, optx.Bisection(*tols))
        if solver.event is None:
            solver = solver.with_event(event)
    throw = kwargs.pop("throw", True)
    sol = diffrax.diffeqsolve(terms, solver, t0, t1, dt0, y0, args, event=event, throw=False, **kwargs)
    result = name_cause(sol.result, y0, taylor, kwargs.get("stepsize_controller"))
    sol = eqx.tree_at(lambda s: s.result, sol, result)
    if throw:
        sol = result.error_if(sol, ~is_okay(result))
    return sol
