"""Extrapolated Hermite–Obreschkoff steps: A- and L-stability of the extrapolated
stability function, order p + q + 1 (and the error estimate's order p + q + 1),
Robertson's kinetics to 1e11 against scipy Radau, float32 PyTrees. (jit/vmap/grad:
with HermiteObreschkoff's, in test_hermite_obreschkoff.py.)"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import taylorode

from .problems import (
    robertson as _robertson,
    robertson_jac as _robertson_jac,
    robertson_np as _robertson_np,
)


def tight(p, q):
    """The extrapolated HO(p, q) with its own Newton tolerances, for constant steps."""
    return taylorode.ExtrapolatedHermiteObreschkoff(
        p, q, root_finder=taylorode.PadeChord(rtol=1e-13, atol=1e-13), root_find_max_steps=20
    )


# --- stability -------------------------------------------------------------------------


@pytest.mark.parametrize("p,q", [(0, 1), (1, 2), (2, 3)])
def test_a_and_l_stable(p, q):
    solver = taylorode.ExtrapolatedHermiteObreschkoff(p, q)
    assert solver.is_a_stable and solver.is_l_stable
    y = np.logspace(-3, 8, 4001)
    on_axis = np.abs(np.asarray(solver.stability_function(jnp.asarray(1j * y))))
    assert on_axis.max() <= 1 + 1e-12
    x = -np.logspace(-3, 12, 4001)
    assert np.abs(np.asarray(solver.stability_function(jnp.asarray(x)))).max() <= 1
    # L-stable: R_E(z) = O(1/z) as z -> -inf.
    assert abs(complex(solver.stability_function(jnp.asarray(-1e12)))) < 1e-10
    # The poles (those of R(z) and R(z/2)) lie in the right half-plane, so the
    # maximum principle extends |R_E| <= 1 from the axis to the left half-plane.
    from taylorode._solver import _hermite

    _, Q = _hermite.pade_polynomials(p, q)
    assert np.all(np.roots([float(c) for c in Q][::-1]).real > 0)


@pytest.mark.parametrize("p,q", [(1, 3), (1, 1), (2, 2)])
def test_other_pairs_are_refused_as_not_a_stable(p, q):
    """For q = p + 2 or q = p the extrapolated stability function exceeds 1 on the
    imaginary axis, so those pairs are refused with a message saying so."""
    R = taylorode.HermiteObreschkoff(p, q).stability_function
    z = jnp.asarray(1j * np.logspace(-2, 4, 4001))
    half = R(z / 2) ** 2
    extrapolated = half + (half - R(z)) / (2 ** (p + q) - 1)
    assert np.abs(np.asarray(extrapolated)).max() > 1.001
    with pytest.raises(ValueError, match="q = p \\+ 1"):
        taylorode.ExtrapolatedHermiteObreschkoff(p, q)


@pytest.mark.parametrize("p,q", [(0, 1), (1, 2), (2, 3)])
def test_step_is_the_stability_function(p, q):
    solver = tight(p, q)
    for lam in (-0.7, -50.0, -1e6 if p <= 1 else -1e4):
        term = diffrax.ODETerm(lambda t, y, a, lam=lam: lam * y)
        y0 = jnp.array([1.0])
        state = solver.init(term, 0.0, 0.1, y0, None)
        y1, _, _, _, result = solver.step(term, 0.0, 0.1, y0, None, state, False)
        assert result == diffrax.RESULTS.successful
        expected = float(np.real(solver.stability_function(jnp.asarray(0.1 * lam))))
        assert float(y1[0]) == pytest.approx(expected, rel=1e-9, abs=1e-15)


# --- order ------------------------------------------------------------------------------


@pytest.mark.parametrize("p,q", [(0, 1), (1, 2)])
def test_convergence_order(p, q):
    """Order p + q + 1 at the end and between steps. Steps are cut by 3 (12, 36, 108
    steps), so that t = 0.75 is the midpoint of a step each time and the dense
    output's interpolation error is compared at the same place in the step."""
    f = lambda t, y, a: jnp.cos(t) * y  # noqa: E731  y = exp(sin t)
    ts = jnp.array([0.75, 2.0])

    @jax.jit
    def solve(dt):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(f), tight(p, q), 0.0, 2.0, dt, jnp.array([1.0]),
            stepsize_controller=diffrax.ConstantStepSize(), max_steps=128,
            saveat=diffrax.SaveAt(ts=ts),
        )
        return sol.ys[:, 0]

    exact = np.exp(np.sin(np.asarray(ts)))
    errs = np.array([np.abs(np.asarray(solve(2.0 / n)) - exact) for n in (12, 36, 108)])
    orders = np.log(errs[:-1] / errs[1:]) / np.log(3)
    n = p + q + 1
    assert n - 0.3 < orders[-1, 1] < n + 0.8, orders
    if (p, q) == (1, 2):
        # (For (0, 1) the midpoint error changes sign near 36 steps, which makes the
        # observed order meaningless there.)
        assert n - 0.3 < orders[-1, 0], orders


def test_error_estimate_and_local_extrapolation():
    """Single steps from the same point with h halved: the estimate (the local error of
    the two half steps) shrinks like h^(p+q+1) and the extrapolated step's own error
    like h^(p+q+2), well below the estimate."""
    p, q = 1, 2
    solver = tight(p, q)
    term = diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], -y[0]]))
    y0 = jnp.array([1.0, 0.0])

    @jax.jit
    def one(h):
        state = solver.init(term, 0.0, h, y0, None)
        y1, err, _, _, _ = solver.step(term, 0.0, h, y0, None, state, False)
        return y1, err

    ests, trues = [], []
    for h in (0.4, 0.2, 0.1):
        y1, err = one(jnp.asarray(h))
        exact = np.array([np.cos(h), -np.sin(h)])
        ests.append(np.max(np.abs(np.asarray(err))))
        trues.append(np.max(np.abs(np.asarray(y1) - exact)))
    est_orders = np.log2(np.array(ests[:-1]) / np.array(ests[1:]))
    true_orders = np.log2(np.array(trues[:-1]) / np.array(trues[1:]))
    assert np.all(np.abs(est_orders - (p + q + 1)) < 0.3), est_orders
    assert np.all(true_orders > p + q + 1.6), true_orders
    assert np.all(np.array(trues) < 0.1 * np.array(ests))


# --- stiff: Robertson -----------------------------------------------------------------------


def test_robertson():
    """To t = 1e11 at rtol 1e-8 (|h lambda| up to ~1e13, where HO(2, 3) itself cannot
    step): every component's relative error against scipy Radau, at t1 and between
    steps, mass conserved, and the Newton counts of all three sub-steps reported."""
    ts = np.array([1e-3, 1.0, 1e3, 1e5, 1e7, 1e9, 1e11])
    refs = solve_ivp(
        _robertson_np, (0, 1e11), [1.0, 0.0, 0.0], method="Radau", rtol=1e-12, atol=1e-20,
        jac=_robertson_jac, t_eval=ts,
    ).y.T
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_robertson), taylorode.ExtrapolatedHermiteObreschkoff(1, 2), 0.0, 1e11,
        1e-6, jnp.array([1.0, 0.0, 0.0]),
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-14), max_steps=3000,
        saveat=diffrax.SaveAt(ts=jnp.asarray(ts), solver_state=True),
    )
    y, ref = np.asarray(sol.ys[-1]), refs[-1]
    assert np.max(np.abs(y - ref) / (1 + np.abs(ref))) < 1e-8
    assert np.max(np.abs(y - ref) / np.abs(ref)) < 1e-5
    assert np.max(np.abs(np.asarray(sol.ys) - refs) / np.abs(refs)) < 1e-5
    assert abs(y.sum() - 1) < 1e-10
    accepted = int(sol.stats["num_accepted_steps"])
    assert int(sol.stats["num_rejected_steps"]) < 0.1 * accepted
    stats = taylorode.implicit_stats(sol)
    # Three Newton solves, each of at least one iteration and one Jacobian, per step.
    assert int(stats["jacobian_evaluations"]) >= 3 * accepted
    assert int(stats["newton_iterations"]) >= int(stats["jacobian_evaluations"])


# --- PyTrees, float32, bad input ----------------------------------------------------------


def test_float32_pytree():
    def f(t, y, a):
        return {"x": y["v"], "v": -y["x"] - 100.0 * (y["v"] + y["x"])}

    y0 = {"x": jnp.array(1.0, jnp.float32), "v": jnp.array(0.0, jnp.float32)}
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f), taylorode.ExtrapolatedHermiteObreschkoff(1, 2), jnp.float32(0.0),
        jnp.float32(1.0), jnp.float32(1e-3), y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5),
    )
    assert sol.ys["x"].dtype == jnp.float32
    r1, r2 = np.roots([1.0, 100.0, 101.0])
    c2 = -r1 / (r2 - r1)
    exact = (1 - c2) * np.exp(r1) + c2 * np.exp(r2)
    assert abs(float(sol.ys["x"][-1]) - exact) < 1e-4


def test_bad_input():
    with pytest.raises(ValueError, match="q >= 1"):
        taylorode.ExtrapolatedHermiteObreschkoff(1, 0)
    term = diffrax.ODETerm(lambda t, y, a: -y)
    with pytest.raises(ValueError, match="adaptive step size controller"):
        diffrax.diffeqsolve(term, taylorode.ExtrapolatedHermiteObreschkoff(), 0.0, 1.0, 0.1, jnp.array([1.0]))
    path = diffrax.LinearInterpolation(ts=jnp.array([0.0, 1.0]), ys=jnp.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="ExtrapolatedHermiteObreschkoff solves ordinary"):
        diffrax.diffeqsolve(
            diffrax.ControlTerm(lambda t, y, a: y, path), taylorode.ExtrapolatedHermiteObreschkoff(),
            0.0, 1.0, 0.1, jnp.array(1.0), stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
        )
