"""Tolerances as run-time values: `Taylor()` inside a jitted function of `rtol`/`atol`.

The order cannot come from a traced tolerance at trace time, so the solver compiles a few
orders and chooses among them per step (`lax.switch`); one compiled function then serves
every tolerance, and the achieved error follows it. Invalid traced tolerances end the
solve with a result that says so.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import taylorode


def _oscillator(t, y, args):
    return jnp.stack([y[1], -y[0]])


_CONTROLLERS = {
    "TaylorController": lambda tol: taylorode.TaylorController(rtol=tol, atol=tol),
    "PIDController": lambda tol: diffrax.PIDController(rtol=tol, atol=tol),
}


def _solver(controller):
    @jax.jit
    def solve(tol):
        sol = taylorode.diffeqsolve(
            diffrax.ODETerm(_oscillator), taylorode.Taylor(), 0.0, 10.0, None,
            jnp.array([1.0, 0.0]), stepsize_controller=_CONTROLLERS[controller](tol),
            throw=False,
        )
        return sol.ys[-1], sol.result

    return solve


@pytest.mark.parametrize("controller", list(_CONTROLLERS))
def test_one_compiled_solve_serves_every_tolerance(controller):
    solve = _solver(controller)
    exact = np.array([np.cos(10.0), -np.sin(10.0)])
    errors = []
    for tol in (1e-6, 1e-9, 1e-12):
        y1, result = solve(tol)
        assert bool(result == taylorode.RESULTS.successful)
        errors.append(float(np.max(np.abs(np.asarray(y1) - exact))))
        assert errors[-1] < 100 * tol, (tol, errors[-1])
    assert errors[0] > errors[1] > errors[2], errors
    assert solve._cache_size() == 1
    # A tolerance that is invalid at run time ends the solve and says so.
    for bad in (-1e-8, 0.0, float("nan")):
        _, result = solve(bad)
        assert bool(result == taylorode.RESULTS.invalid_tolerance), bad


def test_per_trajectory_tolerances_under_vmap():
    # Each trajectory its own tolerance: each as accurate as asked.
    @jax.jit
    @jax.vmap
    def solve(y0, tol):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(_oscillator), taylorode.Taylor(), 0.0, 10.0, None, y0,
            stepsize_controller=taylorode.TaylorController(rtol=tol, atol=tol),
        ).ys[-1, 0]

    tols = jnp.array([1e-5, 1e-11])
    a = jnp.array([1.0, 2.0])
    y1 = solve(jnp.stack([a, jnp.zeros(2)], axis=1), tols)
    errors = np.abs(np.asarray(y1) - np.asarray(a) * np.cos(10.0))
    assert np.all(errors < 100 * np.asarray(tols)), errors
    assert errors[1] < 1e-3 * errors[0], errors
