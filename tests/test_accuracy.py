"""Convergence order and accuracy of `taylorode.Taylor` against exact solutions."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import taylorode
from scipy.stats import linregress

from .problems import kepler, kepler_exact, kepler_y0


def _circular_solve(order):
    """Fixed-step solve of the circular Kepler orbit to t = 2; dt is traced."""

    @jax.jit
    def solve(dt):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(kepler),
            taylorode.Taylor(order),
            0.0,
            2.0,
            dt,
            jnp.array([1.0, 0.0, 0.0, 1.0]),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=4096,
        )
        return sol.ys[-1]

    return solve


@pytest.mark.parametrize("order", [1, 2, 4, 6, 8], ids=lambda p: f"order{p}")
def test_convergence_order(order):
    solve = _circular_solve(order)
    exact = np.array([np.cos(2.0), np.sin(2.0), -np.sin(2.0), np.cos(2.0)])
    steps = np.unique(np.round(np.geomspace(2, 4000, 20)).astype(int))
    dts, errs = [], []
    for n in steps:
        err = np.max(np.abs(np.asarray(solve(jnp.asarray(2.0 / n))) - exact))
        # Keep the asymptotic range: above round-off, below the pre-asymptotic regime.
        if 1e-12 < err < 1e-2:
            dts.append(2.0 / n)
            errs.append(err)
    assert len(dts) >= 4, f"only {len(dts)} step sizes in the asymptotic window"
    slope = linregress(np.log(dts), np.log(errs)).slope
    assert abs(slope - order) < 0.5, f"observed order {slope:.2f}, expected {order}"


E = 0.5
PERIOD = 2 * np.pi


@pytest.fixture(scope="module")
def kepler_solution():
    """Kepler e = 0.5 over 10 periods, order 16, rtol = atol = 1e-12, dense output."""
    ts = jnp.linspace(0.0, 10 * PERIOD, 1000)

    @jax.jit
    def solve(y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(kepler),
            taylorode.Taylor(16),
            0.0,
            10 * PERIOD,
            None,
            y0,
            stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
            saveat=diffrax.SaveAt(ts=ts, dense=True),
            max_steps=10_000,
        )

    return ts, solve(jnp.asarray(kepler_y0(E)))


def test_kepler_ten_periods(kepler_solution):
    ts, sol = kepler_solution
    exact = kepler_exact(np.asarray(ts), E)
    err = np.max(np.abs(np.asarray(sol.ys) - exact))
    assert err <= 1e-9, f"max error over the 1000 saved points: {err:.2e}"
    final = np.max(np.abs(np.asarray(sol.ys[-1]) - kepler_y0(E)))
    assert final <= 1e-9
    assert int(sol.stats["num_accepted_steps"]) < 1000


def test_kepler_dense_output(kepler_solution):
    _, sol = kepler_solution
    # Points between the saved ones, including near step ends.
    t = jnp.asarray(np.sort(np.random.default_rng(0).uniform(0, 10 * PERIOD, 1000)))
    ys = jax.vmap(sol.evaluate)(t)
    exact = kepler_exact(np.asarray(t), E)
    assert np.max(np.abs(np.asarray(ys) - exact)) <= 1e-9
    # The derivative of the interpolant is the velocity field at full order:
    # dq/dt = p and dp/dt = -q/r^3.
    dys = jax.vmap(sol.derivative)(t)
    assert np.max(np.abs(np.asarray(dys) - np.asarray(jax.vmap(lambda y: kepler(0, y, None))(exact)))) <= 1e-8


def test_dense_interpolation_is_the_step_polynomial():
    """One step: the interpolant at s equals the exact solution to the step's order."""
    y0 = jnp.array([1.0, 0.0, 0.0, 1.0])  # circular: exact solution known everywhere
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(kepler),
        taylorode.Taylor(12),
        0.0,
        0.5,
        0.5,
        y0,
        saveat=diffrax.SaveAt(dense=True, t1=True),
        stepsize_controller=diffrax.ConstantStepSize(),
    )
    for t in [0.0, 0.1, 0.25, 0.4, 0.5]:
        exact = np.array([np.cos(t), np.sin(t), -np.sin(t), np.cos(t)])
        # Local error of order 13: (0.5)^13 / 13! ~ 2e-14.
        np.testing.assert_allclose(sol.evaluate(t), exact, atol=1e-13)
        np.testing.assert_allclose(sol.derivative(t), kepler(t, exact, None), atol=1e-12)
    # The difference form evaluate(t0, t1) is consistent.
    np.testing.assert_allclose(sol.evaluate(0.1, 0.4), sol.evaluate(0.4) - sol.evaluate(0.1), atol=1e-15)
