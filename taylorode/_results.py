"""taylorode's `RESULTS`: diffrax's, with the causes a Taylor solver can name.

diffrax extends optimistix's `RESULTS` with its own members; taylorode extends
diffrax's the same way. A solver step can only return `diffrax.RESULTS` (diffrax's loop
combines them with its own), so a failure inside the loop is reported as
`diffrax.RESULTS.nonfinite`; [`taylorode.diffeqsolve`][] then names its cause.
"""

import diffrax

from ._jorba_zou import is_traced, valid_tolerance
from ._solver.base import all_finite


class RESULTS(diffrax.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """The outcome of a solve: every member of `diffrax.RESULTS` (`successful`,
    `max_steps_reached`, `event_occurred`, `nonfinite`, ...), plus

    - `nonfinite_initial_state`: `y0` holds a NaN or an infinity;
    - `singular_vector_field`: the Taylor coefficients of the vector field are not
        finite at a finite state, i.e. the field is singular there;
    - `implicit_step_stalled`: an implicit solver's Newton iteration kept failing as
        its steps shrank (diffrax reports `nonlinear_divergence` or
        `nonlinear_max_steps_reached`);
    - `invalid_tolerance`: the step-size controller's `rtol` or `atol` is negative or
        not finite, or both are zero (tolerances given as traced values, checked at run
        time; concrete ones raise at trace time);
    - `too_many_switches`: with a constant step size, a step crossed more switches of
        the vector field than it can be cut at (`diffrax.diffeqsolve` reports
        `dt_min_reached`).

    [`taylorode.diffeqsolve`][] returns its `result` as a member of this enumeration;
    compare it with members of this class (`taylorode.RESULTS.successful`), not of
    `diffrax.RESULTS` (equinox compares members of one enumeration only).
    `taylorode.RESULTS.promote(diffrax_result)` converts a result of
    `diffrax.diffeqsolve`.
    """

    nonfinite_initial_state = (
        "The initial state `y0` holds a non-finite value (NaN or inf); check how it is "
        "computed."
    )
    singular_vector_field = (
        "Non-finite values in a Taylor step that started from a finite state: the "
        "vector field has no Taylor series there, and no step size helps. Typical "
        "causes are `jnp.sqrt`, `jnp.linalg.norm`, a power below 1, `log` or a "
        "division at a quantity that leaves 0; the functions of `taylorode.stable` "
        "(`stable.sqrt`, `stable.norm`, ...) are finite with finite derivatives of "
        "every order there. (A solution that blows up in finite time ends the same "
        "way.)"
    )
    implicit_step_stalled = (
        "The implicit step's Newton iteration kept failing, down to steps a millionth of "
        "the last accepted one, so no smaller step would help. Higher "
        "Hermite-Obreschkoff pairs fail where a problem is very stiff: use "
        "`taylorode.VariableOrderHermiteObreschkoff()`, which falls back to a lower "
        "pair, or `taylorode.HermiteObreschkoff(1, 2)`. (A vector field that is not "
        "differentiable where the step ends, or a wrong Taylor rule of yours, ends the "
        "same way.)"
    )
    invalid_tolerance = (
        "The step-size controller's tolerances are invalid: `rtol` and `atol` must be "
        "finite and non-negative, and not both zero."
    )
    too_many_switches = (
        "A step of the constant step size crossed more switches of the vector field "
        "(sign changes of a `where`, `abs`, `clip`, ...) than a Taylor step is cut at "
        "(four), so its state is not at its end. Take smaller steps, or use an adaptive "
        "step-size controller, which retries such steps shorter."
    )


def is_okay(result: RESULTS):
    """`result` is `successful` or `event_occurred` (diffrax's `is_okay`)."""
    return (result == RESULTS.successful) | (result == RESULTS.event_occurred)


def name_cause(result: diffrax.RESULTS, y0, taylor_solver: bool, controller=None) -> RESULTS:
    """`result` of a `diffrax.diffeqsolve`, as a `RESULTS` member that names the cause of
    a failure: an invalid traced tolerance of `controller` (whatever the outcome), a
    non-finite `y0` (whatever the solver reported), a singular vector field
    (`nonfinite` from a taylorode solver started from a finite state), or too many
    switches in a step of a constant step size (`dt_min_reached` from a taylorode solver
    without an adaptive controller)."""
    result = RESULTS.promote(result)
    finite = all_finite(y0)
    rtol, atol = getattr(controller, "rtol", None), getattr(controller, "atol", None)
    if taylor_solver:
        singular = finite & (result == RESULTS.nonfinite)
        result = RESULTS.where(singular, RESULTS.singular_vector_field, result)
        stalled = (result == RESULTS.nonlinear_divergence) | (result == RESULTS.nonlinear_max_steps_reached)
        result = RESULTS.where(stalled, RESULTS.implicit_step_stalled, result)
        if rtol is None:  # a constant step size
            result = RESULTS.where(result == RESULTS.dt_min_reached, RESULTS.too_many_switches, result)
    result = RESULTS.where(finite | is_okay(result), result, RESULTS.nonfinite_initial_state)
    if rtol is not None and atol is not None and is_traced(rtol, atol):
        result = RESULTS.where(valid_tolerance(rtol, atol), result, RESULTS.invalid_tolerance)
    return result
