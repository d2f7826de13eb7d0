"""Taylor under jit/vmap/grad, backward in time, float32, PyTree states and events."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
import taylorode

from .problems import kepler, kepler_exact, kepler_y0, oscillator


def test_backward_in_time():
    # Start from the exact state at t = 2 and integrate back to t = 0.
    e = 0.5
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(kepler),
        taylorode.Taylor(10),
        2.0,
        0.0,
        None,
        jnp.asarray(kepler_exact(2.0, e)),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
        saveat=diffrax.SaveAt(ts=jnp.array([1.5, 0.7, 0.0]), dense=True),
    )
    np.testing.assert_allclose(sol.ys, kepler_exact(np.array([1.5, 0.7, 0.0]), e), atol=1e-9)
    # Dense output in reversed time too.
    np.testing.assert_allclose(sol.evaluate(1.1), kepler_exact(1.1, e), atol=1e-9)


def test_vmap_over_initial_conditions_and_args():
    ws = jnp.array([0.5, 1.0, 2.0])
    x0s = jnp.array([1.0, -0.5, 2.0])

    @jax.jit
    @jax.vmap
    def solve(x0, w):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(oscillator),
            taylorode.Taylor(8),
            0.0,
            3.0,
            None,
            {"x": x0, "v": jnp.zeros_like(x0)},
            args=w,
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
        )
        return sol.ys["x"][-1], sol.ys["v"][-1]

    x, v = solve(x0s, ws)
    np.testing.assert_allclose(x, x0s * np.cos(3 * ws), atol=1e-8)
    np.testing.assert_allclose(v, -x0s * ws * np.sin(3 * ws), atol=1e-8)


def test_chunked_batch_steps_as_vmap_and_single_solves():
    # `jax.lax.map(solve, y0s, batch_size=k)`, the guide's chunks of similar
    # trajectories: with the order fixed by the tolerance, each trajectory takes the
    # steps of its own solve, whichever chunk it is in, and ends at the exact orbit.
    es = np.linspace(0.1, 0.7, 6)
    y0s = jnp.asarray(np.stack([kepler_y0(e) for e in es]))

    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(kepler), taylorode.Taylor(), 0.0, 2.0, None, y0,
            stepsize_controller=taylorode.TaylorController(rtol=1e-9, atol=1e-9),
        )
        return sol.ys[-1], sol.stats["num_accepted_steps"]

    chunked_y, chunked_n = jax.jit(lambda y: jax.lax.map(solve, y, batch_size=3))(y0s)
    all_y, all_n = jax.jit(jax.vmap(solve))(y0s)
    single = [jax.jit(solve)(y0s[i]) for i in (0, 5)]
    assert len(set(np.asarray(chunked_n).tolist())) > 1  # the trajectories differ
    np.testing.assert_array_equal(chunked_n, all_n)
    np.testing.assert_allclose(chunked_y, all_y, rtol=0, atol=1e-13)
    for i, (y, n) in zip([0, 5], single):
        assert int(chunked_n[i]) == int(n)
        np.testing.assert_allclose(chunked_y[i], y, rtol=0, atol=1e-13)
    np.testing.assert_allclose(chunked_y, np.stack([kepler_exact(2.0, e) for e in es]), atol=1e-7)


def test_float32():
    f32 = jnp.float32
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(oscillator),
        taylorode.Taylor(6),
        f32(0.0),  # float32 times: diffrax promotes y0 to the time dtype
        f32(2.0),
        None,
        {"x": f32(1.0), "v": f32(0.0)},
        args=f32(1.5),
        stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5),
        saveat=diffrax.SaveAt(t1=True, dense=True),
    )
    assert sol.ys["x"].dtype == jnp.float32
    assert abs(float(sol.ys["x"][-1]) - np.cos(3.0)) < 1e-4
    assert sol.evaluate(f32(1.0))["x"].dtype == jnp.float32
    assert abs(float(sol.evaluate(f32(1.0))["x"]) - np.cos(1.5)) < 1e-4


def test_tuple_state_with_matrix_leaf():
    # Y' = A Y (matrix) and z' = -z (vector), as a tuple state.
    A = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
    f = lambda t, y, A: (A @ y[0], -y[1])
    y0 = (jnp.eye(2), jnp.array([1.0, 2.0, 3.0]))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f),
        taylorode.Taylor(10),
        0.0,
        1.0,
        None,
        y0,
        args=A,
        stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11),
    )
    rot = np.array([[np.cos(1.0), np.sin(1.0)], [-np.sin(1.0), np.cos(1.0)]])
    np.testing.assert_allclose(sol.ys[0][-1], rot, atol=1e-10)
    np.testing.assert_allclose(sol.ys[1][-1], np.exp(-1.0) * np.arange(1.0, 4.0), atol=1e-10)


def test_event_stops_at_known_crossing():
    # x = cos(t) first crosses zero at pi/2.
    event = diffrax.Event(
        cond_fn=lambda t, y, args, **kwargs: y["x"],
        root_finder=optx.Newton(rtol=1e-12, atol=1e-12),
    )
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(oscillator),
        taylorode.Taylor(8),
        0.0,
        5.0,
        None,
        {"x": jnp.array(1.0), "v": jnp.array(0.0)},
        args=jnp.array(1.0),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
        event=event,
    )
    assert sol.result == diffrax.RESULTS.event_occurred
    assert abs(float(sol.ts[-1]) - np.pi / 2) < 1e-9
    assert abs(float(sol.ys["v"][-1]) + 1.0) < 1e-9


# --- gradients ------------------------------------------------------------------------
# A nonlinear pendulum with a parameter; the loss depends on the final state.


def _pendulum(t, y, k):
    return jnp.stack([y[1], -k * jnp.sin(y[0])])


def _loss(adjoint, order=5, rtol=1e-10):
    def loss(params):
        y0, k = params
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_pendulum),
            taylorode.Taylor(order),
            0.0,
            2.0,
            None,
            y0,
            args=k,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol),
            adjoint=adjoint,
        )
        yT = sol.ys[-1]
        return yT[0] ** 2 + 0.5 * yT[1]

    return loss


PARAMS = (jnp.array([0.8, 0.3]), jnp.array(1.3))


@pytest.fixture(scope="module")
def finite_difference_gradient():
    loss = jax.jit(_loss(diffrax.RecursiveCheckpointAdjoint(), rtol=1e-12))
    flat, unravel = jax.flatten_util.ravel_pytree(PARAMS)
    eps = 1e-5
    grads = []
    for i in range(flat.size):
        d = jnp.zeros_like(flat).at[i].set(eps)
        grads.append((loss(unravel(flat + d)) - loss(unravel(flat - d))) / (2 * eps))
    return np.array(grads)


def _flat(tree):
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0])


@pytest.mark.parametrize(
    "adjoint",
    [diffrax.RecursiveCheckpointAdjoint(), diffrax.BacksolveAdjoint()],
    ids=["recursive-checkpoint", "backsolve"],
)
def test_reverse_mode_gradient(adjoint, finite_difference_gradient):
    grad = jax.jit(jax.grad(_loss(adjoint)))(PARAMS)
    np.testing.assert_allclose(_flat(grad), finite_difference_gradient, rtol=1e-5, atol=1e-7)


def test_forward_mode_jacobian(finite_difference_gradient):
    jac = jax.jit(jax.jacfwd(_loss(diffrax.ForwardMode())))(PARAMS)
    np.testing.assert_allclose(_flat(jac), finite_difference_gradient, rtol=1e-5, atol=1e-7)


def test_gradient_of_backward_solve():
    # d y(0) / d y(T) for the time-reversed linear oscillator is the inverse rotation.
    def final(yT):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], -y[0]])),
            taylorode.Taylor(6),
            1.0,
            0.0,
            None,
            yT,
            stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11),
            adjoint=diffrax.BacksolveAdjoint(),
        )
        return sol.ys[-1]

    jac = jax.jit(jax.jacrev(final))(jnp.array([0.3, 0.4]))
    c, s = np.cos(1.0), np.sin(1.0)
    np.testing.assert_allclose(jac, np.array([[c, -s], [s, c]]), atol=1e-8)
