"""`VariableOrderHermiteObreschkoff`: the highest pair that works, with a fall-back
inside the step where a higher pair's Newton iteration fails.

Checked against scipy Radau at tight tolerance: on Robertson's kinetics, where a fixed
HO(2, 3) stalls (its steps collapse after t ~ 10), the solver falls back to HO(1, 2) and
reaches the end in as few steps as HO(1, 2) alone; on Van der Pol, where HO(2, 3)
works, it takes HO(2, 3)'s steps; under vmap each trajectory keeps its own pair.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import taylorode

from .problems import robertson, robertson_jac, robertson_np


def _solve(field, y0, t1, tol, atol, solver, args=None, max_steps=4096):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field), solver, 0.0, t1, None, y0, args,
        stepsize_controller=diffrax.PIDController(rtol=tol, atol=atol), max_steps=max_steps,
        saveat=diffrax.SaveAt(t1=True, solver_state=True), throw=False,
    )


@pytest.fixture(scope="module")
def solver():
    return taylorode.VariableOrderHermiteObreschkoff()


def test_robertson_falls_back_where_the_higher_pair_fails(solver):
    t1 = 1e5
    y0 = jnp.array([1.0, 0.0, 0.0])
    ref = solve_ivp(robertson_np, (0, t1), np.asarray(y0), method="Radau", rtol=1e-13, atol=1e-22, jac=robertson_jac).y[:, -1]
    sol = _solve(robertson, y0, t1, 1e-6, 1e-12, solver)
    assert sol.result == diffrax.RESULTS.successful
    err = np.max(np.abs(np.asarray(sol.ys[-1]) - ref) / np.abs(ref))
    assert err < 1e-3, err
    counts = {k: int(v) for k, v in taylorode.order_counts(sol).items()}
    assert sum(counts.values()) == int(sol.stats["num_accepted_steps"])
    assert counts[3] > 0  # fell back to HO(1, 2) where HO(2, 3) fails
    # A fixed HO(2, 3) needs several times as many steps (measured: 3711 against 545
    # with the default embedded estimate, 211 with the local one), most of them
    # rejected.
    fixed = _solve(robertson, y0, t1, 1e-6, 1e-12, taylorode.HermiteObreschkoff(2, 3))
    assert int(fixed.stats["num_steps"]) > 5 * int(sol.stats["num_steps"])
    assert int(sol.stats["num_steps"]) < 800


def _vdp(t, y, mu):
    return jnp.stack([y[1], mu * ((1 - y[0] ** 2) * y[1] - y[0])])


def _vdp_reference(mu, t1):
    return solve_ivp(
        lambda t, y: [y[1], mu * ((1 - y[0] ** 2) * y[1] - y[0])], (0, t1), [2.0, 0.0],
        method="Radau", rtol=1e-13, atol=1e-13,
    ).y[:, -1]


def test_van_der_pol_keeps_the_higher_pair_and_vmap(solver):
    # Van der Pol (mu = 1e3, one relaxation jump in [0, 1]): HO(2, 3) works here, so
    # it takes (almost) every step; batched solves equal the single ones.
    t1 = 1.0
    mus = jnp.array([100.0, 1000.0])
    batched = jax.jit(jax.vmap(lambda mu: _solve(_vdp, jnp.array([2.0, 0.0]), t1, 1e-7, 1e-7, solver, mu)))(mus)
    for i, mu in enumerate(mus):
        single = _solve(_vdp, jnp.array([2.0, 0.0]), t1, 1e-7, 1e-7, solver, mu)
        err = np.max(np.abs(np.asarray(single.ys[-1]) - _vdp_reference(float(mu), t1)))
        assert err < 1e-4, (float(mu), err)
        counts = taylorode.order_counts(single)
        assert int(counts[5]) >= 0.9 * int(single.stats["num_accepted_steps"])
        np.testing.assert_allclose(np.asarray(batched.ys[i, -1]), np.asarray(single.ys[-1]), rtol=1e-6, atol=1e-9)


def test_gradient_matches_the_exact_solution(solver):
    # y' = -lam (y - cos t): y(t) is affine in y0 with slope exp(-lam t), stiff for
    # lam = 1e4.
    lam, t1 = 1e4, 1.0

    def end(y0):
        return _solve(lambda t, y, a: -lam * (y - jnp.cos(t)), y0, t1, 1e-8, 1e-8, solver).ys[-1]

    # Value and gradient from one compiled program (the value is the forward solve's).
    value, grad = jax.jit(jax.value_and_grad(end))(jnp.array(0.5))
    assert abs(float(grad)) < 1e-8  # exp(-1e4)
    exact = (lam**2 * np.cos(t1) + lam * np.sin(t1)) / (lam**2 + 1)  # the slow solution
    assert abs(float(value) - exact) < 1e-7


def test_invalid_pairs_are_refused():
    with pytest.raises(ValueError, match="increasing order"):
        taylorode.VariableOrderHermiteObreschkoff(((2, 3), (1, 2)))
    with pytest.raises(ValueError, match="A-stable"):
        taylorode.VariableOrderHermiteObreschkoff(((1, 2), (3, 2)))
    with pytest.raises(ValueError, match="pairs"):
        taylorode.VariableOrderHermiteObreschkoff(((1, 2),))


def test_the_wait_doubles_while_retries_fail():
    """Two pairs: a fall-back makes the lower pair take the next `wait` steps, and each
    retry that falls back again doubles the wait (4, 8, 16, ...). It halves again only
    once the top pair has worked for as many steps in a row as the last wait: on POLLU
    most retries succeed for a step or two and then fail, and halving at each success
    kept the wait at 4-8 (a third of the run time went to failed attempts)."""
    from taylorode._solver.variable_order_hermite_obreschkoff import next_pair

    def advance(own, used, state):
        return tuple(int(x) for x in next_pair(own, used, *state, 1))

    index, state = 1, (0, 4, 0)  # (wait, backoff, streak)
    waits = []
    for _ in range(4):
        # A retry at the top pair that falls back...
        index, *state = advance(index, 0, state)
        assert index == 0
        waits.append(state[0])
        # ...then the wait at the lower pair, after which the top pair is retried.
        steps = 0
        while index == 0:
            index, *state = advance(index, 0, state)
            steps += 1
        assert steps == waits[-1] + 1
    assert waits == [4, 8, 16, 32]
    # One or two successes at the top pair do not shorten the wait...
    for _ in range(2):
        index, *state = advance(index, 1, state)
        assert (index, state[1]) == (1, 64)
    # ...32 in a row (the last wait) halve it, and so on down to 4.
    backoffs = []
    for _ in range(200):
        index, *state = advance(index, 1, state)
        backoffs.append(state[1])
    assert backoffs[29] == 32 and backoffs[28] == 64
    assert backoffs[-1] == 4


def test_pytree_float32_state():
    """A PyTree state in float32 (x'' + 100 x' + 101 x = 0, stiff ratio 99) with the
    default solver: float32 out, the exact solution to the tolerance at the save times,
    and the embedded estimate's error following the tolerance there too. The tolerances
    are float32 arrays, so both solves share one compiled program."""
    def f(t, y, a):
        return {"x": y["v"], "v": -y["x"] - 100.0 * (y["v"] + y["x"])}

    y0 = {"x": jnp.array(1.0, jnp.float32), "v": jnp.array(0.0, jnp.float32)}
    ts = jnp.linspace(0.0, 2.0, 9, dtype=jnp.float32)
    r1, r2 = np.roots([1.0, 100.0, 101.0])
    c2 = -r1 / (r2 - r1)
    exact = (1 - c2) * np.exp(r1 * np.asarray(ts, np.float64)) + c2 * np.exp(r2 * np.asarray(ts, np.float64))
    for tol in (1e-3, 1e-5):
        rtol = atol = jnp.asarray(tol, jnp.float32)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(f), taylorode.VariableOrderHermiteObreschkoff(), jnp.float32(0.0),
            jnp.float32(2.0), None, y0, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            saveat=diffrax.SaveAt(ts=ts),
        )
        assert sol.ys["x"].dtype == jnp.float32
        err = np.max(np.abs(np.asarray(sol.ys["x"], np.float64) - exact))
        assert err < 3 * tol, (tol, err)


def test_vmap_where_trajectories_fall_back_at_different_steps(solver):
    """Robertson's kinetics to t = 1e5 with the fast rate scaled by 1, 10 and 0.1 under
    `jax.vmap`: the trajectories fall back to HO(1, 2) at different steps (a step of the
    batch starts at the highest pair any of them is at, and only those whose attempt
    failed fall back), and each ends within the tolerance of its own Radau reference."""
    t1, scales = 1e5, (1.0, 10.0, 0.1)

    def field(t, y, s):
        return jnp.stack([
            -0.04 * y[0] + 1e4 * y[1] * y[2],
            0.04 * y[0] - 1e4 * y[1] * y[2] - s * 3e7 * y[1] ** 2,
            s * 3e7 * y[1] ** 2,
        ])

    y0 = jnp.array([1.0, 0.0, 0.0])
    sols = jax.jit(jax.vmap(lambda s: _solve(field, y0, t1, 1e-6, 1e-12, solver, s)))(jnp.array(scales))
    assert bool(jnp.all(sols.result == diffrax.RESULTS.successful))
    counts = taylorode.order_counts(sols)
    assert bool(jnp.all(counts[3] > 0))  # every trajectory fell back
    for i, s in enumerate(scales):
        def rhs(t, y, s=s):
            return [
                -0.04 * y[0] + 1e4 * y[1] * y[2],
                0.04 * y[0] - 1e4 * y[1] * y[2] - s * 3e7 * y[1] ** 2,
                s * 3e7 * y[1] ** 2,
            ]

        def jac(t, y, s=s):
            return [
                [-0.04, 1e4 * y[2], 1e4 * y[1]],
                [0.04, -1e4 * y[2] - 2 * s * 3e7 * y[1], -1e4 * y[1]],
                [0.0, 2 * s * 3e7 * y[1], 0.0],
            ]

        ref = solve_ivp(rhs, (0, t1), np.asarray(y0), method="Radau", rtol=1e-12, atol=1e-20, jac=jac).y[:, -1]
        err = np.max(np.abs(np.asarray(sols.ys[i, -1]) - ref) / np.abs(ref))
        assert err < 1e-3, (s, err)
