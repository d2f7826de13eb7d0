"""TaylorController: accuracy, rejections, step counts against heyoka, edge cases and
transforms."""

import functools
import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import taylorode

from .problems import kepler, kepler_exact, kepler_y0


E = 0.5
ORDER = 12


def heyoka_order(tol):
    """Jorba & Zou's order for a tolerance, as heyoka chooses it."""
    return max(2, math.ceil(-0.5 * math.log(tol) + 1))


@functools.partial(jax.jit, static_argnums=3)
def _kepler_solve(y0, t1, tol, order=ORDER):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(kepler), taylorode.Taylor(order), 0.0, t1, None, y0,
        stepsize_controller=taylorode.TaylorController(rtol=tol, atol=tol), max_steps=20_000,
    )


def test_kepler_accuracy_tracks_tolerance_with_few_rejections():
    y0 = jnp.asarray(kepler_y0(E))
    t1 = 4 * np.pi
    exact = kepler_exact(t1, E)
    errors = []
    for tol in (1e-8, 1e-12):
        sol = _kepler_solve(y0, t1, tol, heyoka_order(tol))
        err = float(np.max(np.abs(np.asarray(sol.ys[-1]) - exact)))
        errors.append(err)
        accepted, rejected = int(sol.stats["num_accepted_steps"]), int(sol.stats["num_rejected_steps"])
        # Global error over two periods within 10x the tolerance, at the order that
        # Jorba & Zou's rule gives for the tolerance.
        assert err <= 10 * tol, (tol, err)
        # Steps set from the radius of convergence are almost never rejected.
        assert rejected <= 0.05 * accepted, (tol, accepted, rejected)
    # Tighter tolerance, smaller error: the error tracks the tolerance.
    assert errors[1] < 1e-3 * errors[0]


def test_step_counts_match_heyoka():
    hy = pytest.importorskip("heyoka")
    tol = 1e-10
    x, y, vx, vy = hy.make_vars("x", "y", "vx", "vy")
    r3 = (x**2 + y**2) ** 1.5
    y0 = kepler_y0(E)
    ta = hy.taylor_adaptive([(x, vx), (y, vy), (vx, -x / r3), (vy, -y / r3)], list(y0), tol=tol)
    heyoka_steps = ta.propagate_until(4 * np.pi)[3]
    # heyoka's order for this tolerance; our controller with the same order and tolerance.
    p = heyoka_order(tol)
    assert ta.order == p
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(kepler), taylorode.Taylor(p), 0.0, 4 * np.pi, None, jnp.asarray(y0),
        stepsize_controller=taylorode.TaylorController(rtol=tol, atol=tol),
    )
    steps = int(sol.stats["num_accepted_steps"])
    assert abs(steps - heyoka_steps) <= 0.15 * heyoka_steps, (steps, heyoka_steps)


def test_polynomial_solution_takes_large_steps_and_is_exact():
    # y' = (1, 2t): y = (t, t^2) exactly; every coefficient beyond order 2 is zero, so
    # the radius of convergence is infinite and the step grows by `factormax`.
    field = lambda t, y, args: jnp.stack([jnp.ones_like(t), 2 * t])
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), taylorode.Taylor(4), 0.0, 100.0, None, jnp.zeros(2),
        stepsize_controller=taylorode.TaylorController(rtol=1e-10, atol=1e-10),
    )
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), [100.0, 1e4], rtol=1e-14)
    assert int(sol.stats["num_steps"]) <= 3


def test_backward_in_time_and_dtmax():
    y0 = jnp.asarray(kepler_y0(E))
    t1 = -2 * np.pi
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(kepler), taylorode.Taylor(ORDER), 0.0, t1, None, y0,
        stepsize_controller=taylorode.TaylorController(rtol=1e-10, atol=1e-10, dtmax=0.05),
        max_steps=1000,
    )
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), kepler_exact(-t1, E) * [1, -1, -1, 1], atol=1e-8)
    assert int(sol.stats["num_accepted_steps"]) >= 2 * np.pi / 0.05


def test_dtmin_without_force_stops_with_a_result():
    y0 = jnp.asarray(kepler_y0(E))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(kepler), taylorode.Taylor(4), 0.0, 1.0, None, y0,
        stepsize_controller=taylorode.TaylorController(rtol=1e-14, atol=1e-14, dtmin=0.1, force_dtmin=False),
        throw=False,
    )
    assert sol.result == diffrax.RESULTS.dt_min_reached


def test_vmap_and_grad_through_controlled_solve():
    y0 = jnp.asarray(kepler_y0(E))

    def final_x(y0):
        return _kepler_solve(y0, 1.0, 1e-10).ys[-1, 0]

    batch = jnp.stack([y0, y0 * 1.01])
    xs = jax.vmap(final_x)(batch)
    np.testing.assert_allclose(np.asarray(xs[0]), kepler_exact(1.0, E)[0], atol=1e-9)
    assert float(xs[1]) != float(xs[0])
    grad = jax.grad(final_x)(y0)
    eps = 1e-6
    fd = [
        (float(final_x(y0.at[i].add(eps))) - float(final_x(y0.at[i].add(-eps)))) / (2 * eps)
        for i in range(4)
    ]
    np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-5, atol=1e-7)
