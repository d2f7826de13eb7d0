"""The solver–controller protocol: what a diffrax user sees of a Taylor solve's steps
(no hidden steps), and clear errors for combinations that do not fit."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optimistix as optx

import taylorode
from taylorode._interop import ControllerTolerances


RATES = jnp.array([1.0, 2.0])


def _field(t, y, args):
    return -RATES * y


def _exact(t):
    return np.exp(-np.asarray(RATES) * t)


SOLVERS = {
    "Taylor()": taylorode.Taylor(),
    "Taylor(order=8)": taylorode.Taylor(order=8),
    "Taylor(orders=(6,10))": taylorode.Taylor(orders=(6, 10)),
}
CONTROLLERS = {
    "TaylorController": taylorode.TaylorController(rtol=1e-8, atol=1e-8),
    "PIDController": diffrax.PIDController(rtol=1e-8, atol=1e-8),
}


@pytest.mark.parametrize("direction", [1.0, -1.0], ids=["forward", "backward"])
@pytest.mark.parametrize("controller", CONTROLLERS.values(), ids=CONTROLLERS.keys())
@pytest.mark.parametrize("solver", SOLVERS.values(), ids=SOLVERS.keys())
def test_steps_dense_output_and_counts_are_diffrax_s(solver, controller, direction):
    t0, t1 = 0.0, 1.5 * direction
    y0 = jnp.array([1.0, 1.0])
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_field), solver, t0, t1, None, y0, stepsize_controller=controller,
        saveat=diffrax.SaveAt(steps=True, dense=True, solver_state=True), max_steps=256,
    )
    accepted = int(sol.stats["num_accepted_steps"])
    ts = np.asarray(sol.ts)
    ts = ts[np.isfinite(ts)]
    # One saved point per accepted step, each strictly after the last: no step of
    # length zero, t0 not saved as a step.
    assert len(ts) == accepted
    assert np.all(np.diff(ts) * direction > 0) and (ts[0] - t0) * direction > 0
    assert ts[-1] == t1
    np.testing.assert_allclose(np.asarray(sol.ys)[: len(ts)], np.exp(-np.outer(ts, RATES)), rtol=1e-6)
    # Every accepted step was taken at one of the orders.
    assert sum(int(c) for c in taylorode.order_counts(sol).values()) == accepted
    # Dense output at t0: value and derivative of the first step's polynomial.
    f0 = np.asarray(_field(t0, y0, None))
    np.testing.assert_allclose(sol.evaluate(t0), y0, rtol=1e-12)
    np.testing.assert_allclose(sol.derivative(t0), f0, rtol=1e-6)
    np.testing.assert_allclose(jax.jacfwd(sol.evaluate)(jnp.asarray(t0)), f0, rtol=1e-6)
    tm = 0.7 * direction
    np.testing.assert_allclose(sol.derivative(tm), -np.asarray(RATES) * _exact(tm), rtol=1e-6)


def test_first_step_is_sized_by_the_rule_and_accepted():
    # TaylorController sizes the first step from the coefficients at y0, as every
    # later one: no rejection, and the first step is as long as Jorba & Zou's rule
    # allows for the start order (the series init expands, of order min(4, p)).
    tol = 1e-10
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_field), taylorode.Taylor(), 0.0, 50.0, None, jnp.array([1.0, 1.0]),
        stepsize_controller=taylorode.TaylorController(rtol=tol, atol=tol),
        saveat=diffrax.SaveAt(steps=True),
    )
    assert int(sol.stats["num_rejected_steps"]) == 0
    ts = np.asarray(sol.ts)
    ts = ts[np.isfinite(ts)]
    # y' = -y: the radius of convergence is infinite, and y^[j] = (-r)^j / j! y, so
    # the first step h solves max_j (|y^[j]| h^j / tau)^(p/j) = 1 for j = p-1, p with
    # tau = tol (1 + |y|) and p the start order ... checked here against the step the
    # rule gives for the second component (rate 2, the binding one).
    p = 4
    F = np.exp(-2 / p - 0.7 / (p - 1))
    tau = tol * (1 + 1.0)
    radius = min((tau / (2.0**j / np.prod(np.arange(1, j + 1)))) ** (1 / j) for j in (p - 1, p))
    np.testing.assert_allclose(ts[0], radius * F, rtol=1e-9)


def test_taylor_controller_refuses_other_solvers():
    def solve(solver):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(_field), solver, 0.0, 1.0, None, jnp.array([1.0, 1.0]),
            stepsize_controller=taylorode.TaylorController(rtol=1e-8, atol=1e-8),
        )

    with pytest.raises(ValueError, match="not a taylorode.Taylor.*PIDController"):
        solve(diffrax.Tsit5())
    with pytest.raises(ValueError, match="HermiteObreschkoff, whose error estimate is a local"):
        solve(taylorode.HermiteObreschkoff(1, 2))


def test_taylor_controller_refuses_bad_tolerances():
    with pytest.raises(ValueError, match="rtol.*non-negative"):
        taylorode.TaylorController(rtol=-1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="atol.*non-negative"):
        taylorode.TaylorController(rtol=1e-8, atol=float("nan"))


@pytest.mark.parametrize(
    "solver",
    [taylorode.Taylor(), taylorode.HermiteObreschkoff(1, 2), taylorode.ExtrapolatedHermiteObreschkoff()],
    ids=["Taylor()", "HO", "XHO"],
)
@pytest.mark.parametrize("rtol, atol", [(-1e-6, 1e-6), (1e-6, float("inf")), (0.0, 0.0)])
def test_solvers_refuse_bad_controller_tolerances(solver, rtol, atol):
    with pytest.raises(ValueError, match="rtol"):
        diffrax.diffeqsolve(
            diffrax.ODETerm(_field), solver, 0.0, 1.0, None, jnp.array([1.0, 1.0]),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        )


def test_taylor_without_order_needs_an_adaptive_controller():
    # diffrax refuses a solver that asks for the controller's tolerances under a fixed
    # step before any solver code runs; its message asks for an adaptive controller.
    with pytest.raises(ValueError, match="adaptive step size controller"):
        diffrax.diffeqsolve(
            diffrax.ODETerm(_field), taylorode.Taylor(), 0.0, 1.0, 0.1, jnp.array([1.0, 1.0]),
        )
    # Outside diffeqsolve (no tolerances handed over) taylorode's own message says
    # what to do.
    with pytest.raises(ValueError, match=r"Taylor\(order=p\)"):
        taylorode.Taylor().order(None)
    # With a fixed order a constant step works.
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_field), taylorode.Taylor(order=8), 0.0, 1.0, 0.1, jnp.array([1.0, 1.0]),
    )
    np.testing.assert_allclose(sol.ys[-1], _exact(1.0), rtol=1e-10)


@pytest.mark.parametrize("controller", CONTROLLERS.values(), ids=CONTROLLERS.keys())
def test_fast_float32_field_starts_without_overflow(controller):
    # The coefficients at y0 are scaled to a time scale of the field: unscaled, y^[8]
    # of y' = -1e6 y would be 1e48 / 8!, beyond float32's range.
    f32 = jnp.float32
    controller = eqx_tree_replace(controller, rtol=1e-5, atol=1e-5)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: -f32(1e6) * y), taylorode.Taylor(order=8),
        f32(0.0), f32(2e-6), None, jnp.array([1.0], f32), stepsize_controller=controller,
    )
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), np.exp(-2.0), rtol=1e-4)


def eqx_tree_replace(module, **fields):
    return eqx.tree_at(lambda m: tuple(getattr(m, k) for k in fields), module, tuple(fields.values()))


def test_init_expands_the_start_order_only():
    # Where the order comes from the tolerance (13 at 1e-10), init expands y0 to the
    # start order 4 only (zero-padded to 13), so that the program holds the full-order
    # expansion once, in the steps; Taylor(order=p) expands y0 to p.
    def field(t, y, args):
        return jnp.stack([y[1], -jnp.sin(y[0]) + 0.1 * t])

    y0 = jnp.array([1.0, 0.5])
    term = diffrax.ODETerm(field)
    # The tolerances diffeqsolve hands over from the controller.
    tolerant = eqx.tree_at(
        lambda s: s.root_finder, taylorode.Taylor(), ControllerTolerances(1e-10, 1e-10, optx.max_norm)
    )
    assert tolerant.candidate_orders() == (13,) and tolerant.start_order() == 4
    state = tolerant.init(term, 0.0, 1.0, y0, None)
    sizes = [float(jnp.max(jnp.abs(c))) for c in jnp.concatenate(state.coeffs)]
    assert len(sizes) == 14 and all(s > 0 for s in sizes[:5]) and all(s == 0 for s in sizes[5:])
    fixed = taylorode.Taylor(order=13).init(term, 0.0, 1.0, y0, None)
    assert all(float(jnp.max(jnp.abs(c))) > 0 for c in jnp.concatenate(fixed.coeffs))


@pytest.mark.parametrize("controller", CONTROLLERS.values(), ids=CONTROLLERS.keys())
@pytest.mark.parametrize("power", [4, 5, 7])
def test_first_step_checks_itself(controller, power):
    # y' = t^m from t = 0: the start series (order 4) of y = t^(m+1) / (m+1) is zero
    # beyond y0 for m >= 4, so its last two terms say nothing of the step's error. The
    # first step's derivative defect at its end catches it; without that check the
    # TaylorController solves end far from 1 / (m + 1) (checked when it was written:
    # the first step, sized from a zero estimate, runs to the end of the interval).
    tol = 1e-10
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: t**power * jnp.ones_like(y)), taylorode.Taylor(),
        0.0, 1.0, None, jnp.zeros(2), stepsize_controller=controller,
        saveat=diffrax.SaveAt(t1=True, solver_state=True), max_steps=200,
    )
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), 1 / (power + 1), rtol=10 * tol, atol=10 * tol)
    counts = taylorode.order_counts(sol)
    assert int(counts[4]) == 1 and sum(int(c) for c in counts.values()) == int(sol.stats["num_accepted_steps"])
