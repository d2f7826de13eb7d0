"""Order and step control: `Taylor()` takes its order from the tolerance, steps come
from the radius of convergence with (almost) no rejections, orders can change per step
through a batch-uniform `lax.switch`."""

import functools
import math

import diffrax
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import taylorode

from .problems import kepler, kepler_exact, kepler_y0


def jz_order(tol):
    """Jorba & Zou's order rule (heyoka's)."""
    return max(2, math.ceil(-0.5 * math.log(tol) + 1))


def lorenz(t, y, args):
    x, yy, z = y[0], y[1], y[2]
    return jnp.stack([10.0 * (yy - x), x * (28.0 - z) - yy, x * yy - (8.0 / 3.0) * z])


MU = 0.012277471
ARENSTORF_Y0 = (0.994, 0.0, 0.0, -2.00158510637908252240537862224)


def arenstorf(t, y, args):
    x, yy, vx, vy = y[0], y[1], y[2], y[3]
    nu = 1.0 - MU
    d1 = ((x + MU) ** 2 + yy**2) ** 1.5
    d2 = ((x - nu) ** 2 + yy**2) ** 1.5
    ax = x + 2 * vy - nu * (x + MU) / d1 - MU * (x - nu) / d2
    ay = yy - 2 * vx - nu * yy / d1 - MU * yy / d2
    return jnp.stack([vx, vy, ax, ay])


@functools.cache
def mpmath_reference(name, t1):
    """30-digit solution at t1 of the float64 problem (its float64 data, exactly)."""
    mp = mpmath.mp.clone() if hasattr(mpmath.mp, "clone") else mpmath.mp
    mp.dps = 30
    if name == "lorenz":
        eight_thirds = mpmath.mpf(8.0 / 3.0)

        def f(t, y):
            return [10 * (y[1] - y[0]), y[0] * (28 - y[2]) - y[1], y[0] * y[1] - eight_thirds * y[2]]

        y0 = [1.0, 1.0, 1.0]
    else:
        mu = mpmath.mpf(MU)
        nu = 1 - mpmath.mpf(MU)

        def f(t, y):
            x, yy, vx, vy = y
            d1 = ((x + mu) ** 2 + yy**2) ** 1.5
            d2 = ((x - nu) ** 2 + yy**2) ** 1.5
            return [vx, vy, x + 2 * vy - nu * (x + mu) / d1 - mu * (x - nu) / d2,
                    yy - 2 * vx - nu * yy / d1 - mu * yy / d2]

        y0 = [mpmath.mpf(v) for v in ARENSTORF_Y0]
    sol = mpmath.odefun(f, 0, y0)
    out = np.array([float(v) for v in sol(mpmath.mpf(t1))])
    mpmath.mp.dps = 15
    return out


PROBLEMS = {
    # name: (vector field, y0, t1, reference at t1)
    "kepler-0.5": (kepler, kepler_y0(0.5), 2 * np.pi, lambda: kepler_exact(2 * np.pi, 0.5)),
    "kepler-0.9": (kepler, kepler_y0(0.9), 2 * np.pi, lambda: kepler_exact(2 * np.pi, 0.9)),
    "lorenz": (lorenz, (1.0, 1.0, 1.0), 2.0, lambda: mpmath_reference("lorenz", 2.0)),
    "arenstorf": (arenstorf, ARENSTORF_Y0, 3.0, lambda: mpmath_reference("arenstorf", 3.0)),
}


def _solve(name, tol, solver=None, controller=None):
    fn, y0, t1, _ = PROBLEMS[name]
    solver = taylorode.Taylor() if solver is None else solver
    if controller is None:
        controller = taylorode.TaylorController(rtol=tol, atol=tol)

    @jax.jit
    def run(y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(fn), solver, 0.0, t1, None, y0,
            stepsize_controller=controller, max_steps=50_000,
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
        )

    return run(jnp.asarray(y0, dtype=jnp.float64))


def _mixed_error(sol, name):
    ref = PROBLEMS[name][3]()
    y1 = np.asarray(sol.ys[-1])
    return float(np.max(np.abs(y1 - ref) / (1 + np.abs(ref))))


ROUNDOFF = 1e-12


@pytest.mark.parametrize(
    "name,tols,factor",
    [
        ("kepler-0.5", (1e-8, 1e-11, 1e-14), 10),
        # Kepler e = 0.9 ends at pericentre, where |dv/dt| = 100: a phase error of 1e-13
        # is a velocity error of 1e-11. heyoka's error/tol here is 22, 141 and 6.8 at
        # 1e-8, 1e-10 and 1e-12; float64 round-off puts a floor of ~5e-12 under ours,
        # and where the steps fall moves ours by 2-3x (37 and 13 with the first step at
        # full order, 66 and 41 with it at the start order, its own error 6e-16).
        ("kepler-0.9", (1e-8, 1e-12), 100),
        ("lorenz", (1e-8, 1e-14), 10),
        ("arenstorf", (1e-8, 1e-14), 10),
    ],
)
def test_accuracy_rejections_and_order(name, tols, factor):
    errors = []
    for tol in tols:
        sol = _solve(name, tol)
        err = _mixed_error(sol, name)
        errors.append(err)
        accepted = int(sol.stats["num_accepted_steps"])
        rejected = int(sol.stats["num_rejected_steps"])
        counts = {q: int(c) for q, c in taylorode.order_counts(sol).items()}
        # The order is Jorba & Zou's for the tolerance, used for every step but the
        # first (taken at the start order 4, from the series init expands).
        assert counts == {4: 1, jz_order(tol): accepted - 1}, (tol, counts, accepted)
        assert rejected <= 0.02 * accepted, (tol, accepted, rejected)
        # Achieved error tracks the tolerance (global error over the whole solve),
        # down to float64 round-off accumulated over the solve.
        assert err <= factor * tol + ROUNDOFF, (tol, err)
    assert errors[-1] < 1e-3 * errors[0]


def test_order_from_rtol_else_atol_and_with_pid():
    # With PIDController the order comes from its rtol as well.
    sol = _solve("kepler-0.5", 1e-10, controller=diffrax.PIDController(rtol=1e-10, atol=1e-6))
    assert set(taylorode.order_counts(sol)) == {4, jz_order(1e-10)}  # the first step at 4
    # rtol = 0: the absolute tolerance sets the order.
    sol = _solve("kepler-0.5", 0.0, controller=taylorode.TaylorController(rtol=0.0, atol=1e-6))
    assert set(taylorode.order_counts(sol)) == {4, jz_order(1e-6)}
    assert _mixed_error(sol, "kepler-0.5") < 1e-5


def test_pid_error_estimate_is_consistent():
    """diffrax's PIDController with `Taylor()`: accurate, and it accepts most steps."""
    tol = 1e-10
    sol = _solve("kepler-0.5", tol, controller=diffrax.PIDController(rtol=tol, atol=tol))
    accepted = int(sol.stats["num_accepted_steps"])
    rejected = int(sol.stats["num_rejected_steps"])
    assert _mixed_error(sol, "kepler-0.5") <= 10 * tol
    assert rejected <= 0.5 * accepted, (accepted, rejected)


@pytest.mark.parametrize(
    "name,fn,y0,exact",
    [
        ("y'=1", lambda t, y, a: jnp.ones_like(y), jnp.array([0.5]), lambda t, y0: y0 + t),
        ("y''=0", lambda t, y, a: jnp.stack([y[1], jnp.zeros_like(y[1])]),
         jnp.array([1.0, -2.0]), lambda t, y0: jnp.array([y0[0] + y0[1] * t, y0[1]])),
        ("zero", lambda t, y, a: jnp.zeros_like(y), jnp.array([3.0, -1.0]), lambda t, y0: y0),
    ],
)
def test_polynomial_and_zero_fields(name, fn, y0, exact):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(fn), taylorode.Taylor(), 0.0, 5.0, None, y0,
        stepsize_controller=taylorode.TaylorController(rtol=1e-10, atol=1e-10),
        saveat=diffrax.SaveAt(ts=jnp.linspace(0.0, 5.0, 6)), max_steps=100,
    )
    assert np.all(np.isfinite(np.asarray(sol.ys)))
    expected = jax.vmap(lambda t: exact(t, y0))(sol.ts)
    np.testing.assert_allclose(sol.ys, expected, rtol=1e-14, atol=1e-14)
    assert int(sol.stats["num_accepted_steps"]) <= 3
    assert int(sol.stats["num_rejected_steps"]) == 0


def test_backward_in_time():
    tol = 1e-12
    y_mid = jnp.asarray(kepler_exact(np.pi, 0.5))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(kepler), taylorode.Taylor(), np.pi, 0.0, None, y_mid,
        stepsize_controller=taylorode.TaylorController(rtol=tol, atol=tol), max_steps=10_000,
    )
    np.testing.assert_allclose(sol.ys[-1], kepler_y0(0.5), atol=10 * tol)
    assert int(sol.stats["num_rejected_steps"]) == 0


# -- per-step order selection ---------------------------------------------------------


ORDERS = (6, 10, 14)
DECAY_RTOL, DECAY_ATOL = 1e-12, 1e-16


def _decay(t, y, args):
    return -y * (1.0 + 0.5 * jnp.sin(t))


def _decay_exact(t, y0):
    # y' = -(1 + sin(t)/2) y  =>  y = y0 exp(-(t + (1 - cos t)/2))
    return y0 * np.exp(-(t + 0.5 * (1 - np.cos(t))))


def _decay_solve(y0):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(_decay), taylorode.Taylor(orders=ORDERS), 0.0, 25.0, None, y0,
        stepsize_controller=taylorode.TaylorController(rtol=DECAY_RTOL, atol=DECAY_ATOL),
        saveat=diffrax.SaveAt(t1=True, solver_state=True), max_steps=10_000,
    )


def _conds(jaxpr):
    """All `cond` equations in a closed jaxpr, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cond":
            found.append(eqn)
        for v in eqn.params.values():
            subs = v if isinstance(v, (tuple, list)) else (v,)
            for sub in subs:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    found.extend(_conds(inner))
                elif hasattr(sub, "eqns"):
                    found.extend(_conds(sub))
    return found


def test_per_step_order_selection_vmap_matches_unbatched():
    # As y decays, the absolute tolerance takes over and lower orders do the work
    # more cheaply: the solve uses several orders.
    y0s = jnp.array([[1.0, 2.0], [0.3, 1e-3], [5.0, 0.1]])
    solve = jax.jit(_decay_solve)
    singles = [solve(y0) for y0 in y0s]
    counts = {q: int(c) for q, c in taylorode.order_counts(singles[0]).items()}
    assert sum(c > 0 for c in counts.values()) >= 2, counts
    assert counts[14] > 0 and counts[6] + counts[10] > 0, counts
    for y0, sol in zip(y0s, singles):
        exact = _decay_exact(25.0, np.asarray(y0))
        scale = DECAY_ATOL + DECAY_RTOL * np.abs(exact)
        assert np.all(np.abs(np.asarray(sol.ys[-1]) - exact) <= 100 * scale + 1e-14)
        assert int(sol.stats["num_rejected_steps"]) <= 0.02 * int(sol.stats["num_accepted_steps"])

    batched = jax.jit(jax.vmap(_decay_solve))(y0s)
    # Under vmap each step takes the highest order any trajectory asks for, so the
    # step sequences may differ, but the solutions agree to the tolerance.
    for i, sol in enumerate(singles):
        diff = np.abs(np.asarray(batched.ys[i, -1]) - np.asarray(sol.ys[-1]))
        assert np.all(diff <= 10 * (DECAY_ATOL + DECAY_RTOL * np.abs(np.asarray(sol.ys[-1])))), diff

    # The switch over the three coefficient kernels stays a real conditional under
    # vmap: its index is made batch-uniform, so it is not turned into a select that
    # runs every branch.
    jaxpr = jax.make_jaxpr(jax.vmap(_decay_solve))(y0s).jaxpr
    switches = [e for e in _conds(jaxpr) if len(e.params["branches"]) == len(ORDERS)]
    assert switches, "no 3-branch conditional left in the vmapped program"
    for eqn in switches:
        assert eqn.invars[0].aval.shape == (), eqn.invars[0].aval


# -- bad input --------------------------------------------------------------------------


def test_taylor_without_order_needs_an_adaptive_controller():
    with pytest.raises(ValueError, match="adaptive step size controller"):
        diffrax.diffeqsolve(
            diffrax.ODETerm(kepler), taylorode.Taylor(), 0.0, 1.0, 0.1,
            jnp.asarray(kepler_y0(0.5)), stepsize_controller=diffrax.ConstantStepSize(),
        )
    with pytest.raises(ValueError, match=r"Taylor\(order=p\)"):
        taylorode.Taylor().order(None)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(order=8, orders=(8, 10)), "not both"),
        (dict(orders=(8,)), "at least two"),
        (dict(orders=(8, 8)), "at least two"),
        (dict(orders=(1, 4)), "at least 2"),
        (dict(orders=(4, 99)), r"\[1, 60\]"),
        (dict(orders=8), "sequence"),
    ],
)
def test_invalid_orders(kwargs, match):
    with pytest.raises(ValueError, match=match):
        taylorode.Taylor(**kwargs)


def test_order_counts_needs_solver_state():
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(kepler), taylorode.Taylor(4), 0.0, 0.1, 0.05, jnp.asarray(kepler_y0(0.5)),
    )
    with pytest.raises(ValueError, match="solver_state=True"):
        taylorode.order_counts(sol)


def test_jump_times_refresh_the_carried_coefficients():
    """At a jump the vector field changes; the coefficients carried from before it
    must be recomputed. y' = cos(y) up to t = 1 and y' = -cos(y) after retraces the
    path, so y(2) = y(0) exactly."""

    def field(t, y, args):
        return jnp.where(t < 1.0, 1.0, -1.0) * jnp.cos(y)

    controller = diffrax.ClipStepSizeController(
        diffrax.PIDController(rtol=1e-10, atol=1e-10), jump_ts=[1.0]
    )
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), taylorode.Taylor(), 0.0, 2.0, None, jnp.array(0.3),
        stepsize_controller=controller, max_steps=1000,
    )
    assert abs(float(sol.ys[-1]) - 0.3) < 1e-10


def test_events_dense_output_and_adjoints_with_taylor():
    """`Taylor()` + `TaylorController` (carried coefficients)
    with diffrax's events, `SaveAt(ts=...)` and both reverse-mode adjoints."""
    import optimistix as optx

    tol = 1e-9  # order 12: compile time is this test's cost
    y0 = jnp.asarray(kepler_y0(0.5))
    controller = taylorode.TaylorController(rtol=tol, atol=tol)
    term = diffrax.ODETerm(kepler)
    # Dense output at interior times, against the exact orbit.
    ts = jnp.linspace(0.0, 6.0, 7)
    sol = diffrax.diffeqsolve(
        term, taylorode.Taylor(), 0.0, 6.0, None, y0, stepsize_controller=controller,
        saveat=diffrax.SaveAt(ts=ts),
    )
    exact = np.stack([kepler_exact(float(t), 0.5) for t in ts])
    np.testing.assert_allclose(sol.ys, exact, atol=100 * tol)
    # First crossing of x = 0: the time where the exact orbit has x = 0.
    event = diffrax.Event(lambda t, y, args, **kw: y[0], root_finder=optx.Newton(1e-13, 1e-13))
    sol = diffrax.diffeqsolve(
        term, taylorode.Taylor(), 0.0, 6.0, None, y0, stepsize_controller=controller, event=event
    )
    t_cross = float(sol.ts[-1])
    assert abs(kepler_exact(t_cross, 0.5)[0]) < 100 * tol and 0.5 < t_cross < 1.0

    # Gradients: recursive checkpointing and backsolve agree with each other and with
    # finite differences.
    def final_x(y0, adjoint):
        return diffrax.diffeqsolve(
            term, taylorode.Taylor(), 0.0, 2.0, None, y0, stepsize_controller=controller,
            adjoint=adjoint,
        ).ys[-1, 0]

    g_rc = jax.grad(final_x)(y0, diffrax.RecursiveCheckpointAdjoint())
    g_bs = jax.grad(final_x)(y0, diffrax.BacksolveAdjoint())
    eps = 1e-6
    plain = jax.jit(lambda y: final_x(y, diffrax.RecursiveCheckpointAdjoint()))
    fd = np.array([(plain(y0 + eps * e) - plain(y0 - eps * e)) / (2 * eps) for e in jnp.eye(4)])
    np.testing.assert_allclose(g_rc, g_bs, atol=100 * tol)
    np.testing.assert_allclose(g_rc, fd, atol=1e-6)
