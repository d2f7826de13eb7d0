"""The stiff benchmark problems HIRES, POLLU and the Oregonator (benchmarks/_problems.py):
the JAX right-hand side equals the NumPy one, the analytic Jacobian equals
`jax.jacfwd`, and HermiteObreschkoff(1, 2) over a short horizon agrees with scipy
Radau at a tight tolerance."""

import dataclasses
import sys
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import taylorode


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import _problems as P  # noqa: E402


# key -> the short horizon of the HO solve (a few fast transients, some slow drift).
SHORT = {"hires": 5.0, "pollu": 1.0, "oregonator": 10.0}


# key -> (lo, hi): random states have components 10^u, u uniform in [lo, hi] (the
# ranges the components cover along the solution, roughly).
RANGES = {
    "hires": (np.full(8, -6.0), np.full(8, 0.0)),
    "pollu": (np.full(20, -18.0), np.full(20, -0.5)),
    "oregonator": (np.array([0.0, -2.5, 0.0]), np.array([5.0, 3.2, 4.5])),
}


def states(problem, n=5, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = RANGES[problem.key]
    return [10.0 ** rng.uniform(lo, hi) for _ in range(n)]


@pytest.fixture(scope="module", params=sorted(SHORT))
def problem(request):
    return P.STIFF[request.param]()


def test_jax_rhs_equals_numpy_rhs(problem):
    for y in states(problem):
        f_jax = np.asarray(problem.vector_field(0.0, jnp.asarray(y), None))
        f_np = problem.rhs(0.0, y)
        assert f_jax.shape == f_np.shape == y.shape
        np.testing.assert_allclose(f_jax, f_np, rtol=1e-12, atol=1e-300)


def test_jacobian_equals_jacfwd(problem):
    jacfwd = jax.jacfwd(lambda z: problem.vector_field(0.0, z, None))
    for y in [problem.y0, *states(problem)]:
        assert P.check_jacobian(problem, y) < 1e-13
        # Entry by entry too: POLLU's entries span 20 decades.
        np.testing.assert_allclose(
            P._dense(problem.jac)(0.0, y), np.asarray(jacfwd(jnp.asarray(y))),
            rtol=1e-12, atol=1e-300,
        )


def test_ho12_agrees_with_radau_on_a_short_horizon(problem):
    short = dataclasses.replace(problem, t1=SHORT[problem.key])
    factor = problem.atol_factor
    reference = short.solve(P.ScipyRun("Radau", 1e-12, 1e-12 * factor)).y[:, -1]
    sol = jax.jit(
        lambda y0: diffrax.diffeqsolve(
            diffrax.ODETerm(short.vector_field),
            taylorode.HermiteObreschkoff(1, 2),
            t0=0.0,
            t1=short.t1,
            dt0=None,
            y0=y0,
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6 * factor),
            max_steps=20_000,
        )
    )(jnp.asarray(short.y0))
    assert sol.result == diffrax.RESULTS.successful
    y1 = np.asarray(sol.ys[-1])
    # Relative error, floored at atol / rtol (the problems' error convention).
    error = np.max(np.abs(y1 - reference) / (np.abs(reference) + factor))
    assert error < 1e-4, (error, y1, reference)


def test_default_stiff_solver_on_a_10000_unknown_pde():
    # The 1-D Brusselator on a method-of-lines grid of 5000 points (10,000 unknowns,
    # stored point by point, so the Jacobian is banded with bandwidths (2, 2); the
    # Laplacian's stiffness grows with the grid, here |lambda| ~ 2e6) over a short
    # horizon, with the default stiff solver and banded Newton matrices, against scipy
    # Radau with the sparse analytic Jacobian at a tight tolerance. (Dense Newton
    # matrices would be 10,000 x 10,000: 10,000 Jacobian-vector products and an
    # O(n^3) LU per Jacobian.)
    problem = P.STIFF["brusselator10000"]()
    assert problem.y0.shape == (10_000,) and problem.band == (2, 2)
    t1, tol = 1.0, 1e-6
    short = dataclasses.replace(problem, t1=t1)
    ref = short.solve(P.ScipyRun("Radau", 1e-11, 1e-11)).y[:, -1]
    solver = taylorode.VariableOrderHermiteObreschkoff(linear_solver=taylorode.BandedLU(*problem.band))
    sol = jax.jit(
        lambda y0: diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field), solver,
            0.0, t1, None, y0, stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
            max_steps=2_000,
        )
    )(jnp.asarray(problem.y0))
    assert sol.result == diffrax.RESULTS.successful
    err = np.max(np.abs(np.asarray(sol.ys[-1]) - ref) / (1 + np.abs(ref)))
    assert err <= 10 * tol, err
    # The Laplacian's eigenvalues (~ -2e6) would hold an explicit method to ~1e6
    # steps; the implicit steps follow the solution.
    assert int(sol.stats["num_accepted_steps"]) < 200


TOLS = (1e-4, 1e-6, 1e-8)


@pytest.mark.parametrize("key", ["robertson", "vdp1e3", "oregonator", "hires", "pollu"])
def test_default_stiff_solver_follows_the_tolerance(key):
    """The default stiff solver, untuned, on the five standard problems over their full
    horizons (Robertson to t = 1e11), at three tolerances (one compile: the tolerance
    is a jit argument), against the benchmarks' Radau references.

    - In the mixed error max |e| / (1 + |ref|) (rtol = atol = tol), the error is within
      10 tol everywhere (measured: at most 1.7 tol, on the Oregonator).
    - In each problem's own comparison measure (HIRES, POLLU: relative with a floor of
      1e-6; Robertson: the largest relative error, y2's, beyond what the controller's
      norm sees), within 50 tol (measured: 31 tol on Robertson at 1e-6, 13 on HIRES at
      1e-8; with the step's own local error as the estimate it was 687 and 119).
    - The run stops only at t1, with a few thousand steps at most."""
    problem = P.STIFF[key]()
    reference = problem.reference

    @jax.jit
    def solve(y0, tol):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field), taylorode.VariableOrderHermiteObreschkoff(),
            0.0, problem.t1, None, y0,
            stepsize_controller=diffrax.PIDController(rtol=tol, atol=problem.atol_factor * tol),
            max_steps=20_000,
        )
        return sol.ys[-1], sol.stats["num_steps"]

    for tol in TOLS:
        y1, steps = solve(jnp.asarray(problem.y0), tol)
        y1 = np.asarray(y1)
        mixed = np.max(np.abs(y1 - reference) / (1 + np.abs(reference)))
        assert mixed <= 10 * tol, (tol, mixed)
        if problem.comparison_error is not None:
            own = problem.extra_errors(y1, reference)[problem.comparison_error]
            assert own <= 50 * tol, (tol, problem.comparison_error, own)
        assert int(steps) < 10_000
