"""Steps end at switches and events: analytic solutions of fields that switch, their
gradients (the switch time moves with the parameters), vmap with per-trajectory switch
times, backward time, and events that a long step would hide.

The switching fields `_time_switch` and `_state_switch` are piecewise constant, so their
solutions are piecewise linear and any order is exact between switches: most of those
tests use `Taylor(order=SWITCH_ORDER)` (a low fixed order, a smaller program to compile)
rather than the order 13 that `Taylor()` picks at 1e-10; what they check is where the
steps end and what the gradients through the switch times are. The vmapped gradient
with `TaylorController` keeps `Taylor()` (its start order and first-step check).
Values and gradients come from one compiled `value_and_grad`."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

import taylorode


TOL = 1e-10
SWITCH_ORDER = 4  # piecewise-constant fields: exact at any order
CONTROLLERS = {
    "TaylorController": lambda: taylorode.TaylorController(rtol=TOL, atol=TOL),
    "PIDController": lambda: diffrax.PIDController(rtol=TOL, atol=TOL),
}


def _time_switch(t, y, p):
    # y' = 1 before t = p, -1 after: y(1) = 2 p - 1 from y(0) = 0.
    return jnp.where(t < p, 1.0, -1.0) + 0 * y


def _state_switch(t, y, args):
    # y' = 1 below 0.5, 0.1 above: from y0 < 0.5, y(1) = 0.5 + 0.1 (0.5 + y0).
    return jnp.where(y < 0.5, 1.0, 0.1)


@pytest.mark.parametrize("name", CONTROLLERS)
def test_time_switch_value_and_gradient(name):
    def solve(p):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_time_switch), taylorode.Taylor(order=SWITCH_ORDER), 0.0, 1.0, None, jnp.array(0.0), p,
            stepsize_controller=CONTROLLERS[name](),
        )
        return sol.ys[-1]

    p = 0.3
    value, grad = jax.jit(jax.value_and_grad(solve))(p)
    assert abs(float(value) - (2 * p - 1)) < 1e-12
    assert abs(float(grad) - 2.0) < 1e-8


@pytest.mark.parametrize("name", CONTROLLERS)
def test_state_switch_vmap_and_gradient(name):
    solver = taylorode.Taylor() if name == "TaylorController" else taylorode.Taylor(order=SWITCH_ORDER)

    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_state_switch), solver, 0.0, 1.0, None, y0,
            stepsize_controller=CONTROLLERS[name](),
        )
        return sol.ys[-1]

    y0 = jnp.array([-0.4, 0.0, 0.2, 0.45])  # switch times 0.9, 0.5, 0.3, 0.05
    ys, grads = jax.jit(jax.vmap(jax.value_and_grad(solve)))(y0)
    np.testing.assert_allclose(np.asarray(ys), 0.5 + 0.1 * (0.5 + np.asarray(y0)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(grads), 0.1, rtol=0, atol=1e-8)


def test_backward_in_time_switch():
    # From t = 1 back to 0 with y(1) = 2 p - 1: y(0) = 0.
    p = 0.7
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_time_switch), taylorode.Taylor(order=SWITCH_ORDER), 1.0, 0.0, None, jnp.array(2 * p - 1), p,
        stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL),
    )
    assert abs(float(sol.ys[-1])) < 1e-12


def test_dense_output_across_switches():
    # Saved times inside steps that are cut at switches: y = t until 0.5 - y0... here
    # y0 = 0: y = t up to 0.5, then 0.5 + 0.1 (t - 0.5).
    ts = jnp.linspace(0.0, 1.0, 21)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_state_switch), taylorode.Taylor(order=SWITCH_ORDER), 0.0, 1.0, None, jnp.array(0.0),
        stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL), saveat=diffrax.SaveAt(ts=ts),
    )
    exact = np.where(ts < 0.5, ts, 0.5 + 0.1 * (np.asarray(ts) - 0.5))
    np.testing.assert_allclose(np.asarray(sol.ys), exact, rtol=0, atol=1e-12)


def _oscillator(t, y, args):
    # x = sin(20 t), v = cos(20 t)
    return jnp.stack([20 * y[1], -20 * y[0]])


@pytest.mark.parametrize("name", CONTROLLERS)
def test_event_in_a_window_shorter_than_a_step(name):
    # x > 0.99 only for about 0.014 around t = 0.0785, less than one Taylor step: the
    # first crossing, at asin(0.99) / 20, is found.
    event = diffrax.Event(lambda t, y, args, **kw: y[0] - 0.99, optx.Newton(rtol=1e-12, atol=1e-12))
    sol = taylorode.diffeqsolve(
        diffrax.ODETerm(_oscillator), taylorode.Taylor(), 0.0, 2.0, None, jnp.array([0.0, 1.0]),
        stepsize_controller=CONTROLLERS[name](), event=event,
    )
    assert abs(float(sol.ts[-1]) - np.arcsin(0.99) / 20) < 1e-9
    # diffrax alone, the solver not told of the event, steps over the window (and
    # stops at a later one, or fails there in the event's Newton solve, as where its
    # steps fall decides; hence throw=False).
    blind = diffrax.diffeqsolve(
        diffrax.ODETerm(_oscillator), taylorode.Taylor(), 0.0, 2.0, None, jnp.array([0.0, 1.0]),
        stepsize_controller=CONTROLLERS[name](), event=event, throw=False,
    )
    assert float(blind.ts[-1]) > 0.2


def test_two_events_in_one_step_the_earlier_is_reported():
    # x = sin(t) crosses 0.3 at 0.3047 and 0.5 at 0.5236, both inside one step of a
    # Taylor solver told nothing; told of both, the earlier is reported.
    def field(t, y, args):
        return jnp.stack([y[1], -y[0]])

    event = diffrax.Event(
        (lambda t, y, args, **kw: y[0] - 0.5, lambda t, y, args, **kw: y[0] - 0.3),
        optx.Newton(rtol=1e-12, atol=1e-12),
    )
    sol = taylorode.diffeqsolve(
        diffrax.ODETerm(field), taylorode.Taylor(), 0.0, 3.0, None, jnp.array([0.0, 1.0]),
        stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL), event=event,
    )
    assert abs(float(sol.ts[-1]) - np.arcsin(0.3)) < 1e-9
    assert [bool(m) for m in sol.event_mask] == [False, True]


def _saturation(t, y, args):
    return jnp.stack([y[1], -jnp.clip(4 * y[0], -0.5, 0.5)])


@pytest.mark.parametrize(
    "solver",
    [taylorode.Taylor(order=4, method="jet"), taylorode.HermiteObreschkoff(1, 2, method="jet")],
    ids=["jet", "HermiteObreschkoff-jet"],
)
def test_solvers_blind_to_switches_say_so(solver, recwarn):
    y0 = jnp.array([1.0, 0.0])
    diffrax.diffeqsolve(
        diffrax.ODETerm(_saturation), solver, 0.0, 0.5, 0.1, y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
    )
    assert any(issubclass(w.category, taylorode.SwitchWarning) for w in recwarn)


def test_smooth_field_has_no_switch_machinery():
    # Without switching operations the state carries no switch series and the dense
    # output is one polynomial: the program is the one of a smooth field.
    term = diffrax.ODETerm(lambda t, y, args: jnp.stack([y[1], -y[0] / (y[0] ** 2 + 1.0)]))
    solver = taylorode.Taylor(order=6)
    y0 = jnp.array([1.0, 0.0])
    state = solver.init(term, 0.0, 0.1, y0, None)
    assert state.switches is None and state.unseen == ()
    _, _, dense, _, _ = solver.step(term, 0.0, 0.1, y0, None, state, False)
    assert set(dense) == {"coeffs"}
    switching = solver.init(diffrax.ODETerm(_saturation), 0.0, 0.1, y0, None)
    assert switching.switches is not None


def test_norm_of_a_zero_difference_is_the_zero_series():
    # The N-body idiom norm(r_i - r_j) + eye: the diagonal's series is zero (up to
    # XLA's rounding), and its square root is the zero series, not NaN. Against the
    # jvp tower of the same field written without a zero under the root (JAX's own
    # derivative of norm at 0 is NaN), and against Dopri8 (the solve).
    eye = jnp.eye(3)

    def nbody(distance):
        def field(t, y, args):
            r, v = y[:, :2], y[:, 2:]
            d = r[:, None, :] - r[None, :, :]
            dist = distance(d)
            return jnp.concatenate([v, -jnp.sum(d / dist[..., None] ** 3 * (1 - eye)[..., None], axis=1)], axis=1)

        return field

    field = nbody(lambda d: jnp.linalg.norm(d, axis=-1) + eye)
    smooth = nbody(lambda d: jnp.sqrt(jnp.sum(d**2, axis=-1) + eye))
    y0 = jnp.array([[1.0, 0.0, 0.0, 0.5], [-1.0, 0.0, 0.0, -0.5], [0.0, 1.0, 0.3, 0.0]])
    ours = jax.jit(lambda y: taylorode.taylor_coefficients(field, 0.0, y, None, 5))(y0)
    tower = taylorode.taylor_coefficients(smooth, 0.0, y0, None, 5, method="jvp")
    for a, b in zip(ours, tower):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), taylorode.Taylor(), 0.0, 1.0, None, y0,
        stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL),
    )
    ref = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Dopri8(), 0.0, 1.0, None, y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
    )
    assert float(jnp.max(jnp.abs(sol.ys[-1] - ref.ys[-1]))) < 1e-9


def test_boolean_event_is_not_missed():
    # A boolean condition cannot be root-found, but its comparison is a switching
    # function of the solver: the step that reports it ends inside the window where it
    # holds (without the solver told, the window is stepped over).
    event = diffrax.Event(lambda t, y, args, **kw: y[0] > 0.99)
    sol = taylorode.diffeqsolve(
        diffrax.ODETerm(_oscillator), taylorode.Taylor(), 0.0, 2.0, None, jnp.array([0.0, 1.0]),
        stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL), event=event,
    )
    start, end = np.arcsin(0.99) / 20, (np.pi - np.arcsin(0.99)) / 20
    assert start < float(sol.ts[-1]) < end
