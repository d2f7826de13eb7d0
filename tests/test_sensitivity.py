"""`forward_sensitivity`: first and second variational equations against exact
derivatives (matrix exponential, closed-form logistic and oscillator solutions), against
`jax.jacfwd` through a Dopri8 solve, the `jax.jacfwd` layout for PyTree states and
partly selected PyTree args, error control over the sensitivities, vmap/jit/float32,
bad input, and the example script."""

import functools
import importlib.util
import pathlib

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
import scipy.linalg
import taylorode
from taylorode import forward_sensitivity, SensitivitySolution


ROOT = pathlib.Path(__file__).resolve().parent.parent


def assert_trees_close(actual, expected, rtol, atol):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.shape == e.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


# --- linear ODE: dy/dy0 = expm(A t) --------------------------------------------------

A = np.array([[-0.5, 1.0], [-2.0, -0.3]])
B = np.array([0.0, 1.0])


def linear(t, y, theta):
    return jnp.asarray(A) @ y + theta * jnp.asarray(B)


def energy(t, y, theta):
    return jnp.sum(y**2)


def test_linear_matches_matrix_exponential():
    # y' = A y + theta b:  y(t) = e^{At} y0 + theta A^{-1} (e^{At} - I) b.
    y0 = jnp.array([1.0, -0.5])
    theta = jnp.array(0.7)
    ts = np.array([0.0, 0.5, 1.25, 2.0])
    saveat = diffrax.SaveAt(
        subs=[diffrax.SubSaveAt(ts=jnp.asarray(ts)), diffrax.SubSaveAt(t1=True, fn=energy)]
    )
    r = forward_sensitivity(
        diffrax.ODETerm(linear),
        taylorode.Taylor(order=10),
        0.0,
        2.0,
        0.1,
        y0,
        theta,
        saveat=saveat,
        stepsize_controller=taylorode.TaylorController(rtol=1e-12, atol=1e-12),
    )
    assert isinstance(r, SensitivitySolution)
    (ys, e1), (jac_y0, de_dy0), (jac_theta, de_dtheta) = r.ys, r.dy_dy0, r.dy_dargs
    assert jac_y0.shape == (4, 2, 2) and jac_theta.shape == (4, 2)
    assert r.d2y_dy0dy0 is None and r.d2y_dargsdargs is None
    Ainv = np.linalg.inv(A)
    for i, t in enumerate(ts):
        expm = scipy.linalg.expm(A * t)
        np.testing.assert_allclose(jac_y0[i], expm, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(
            jac_theta[i], Ainv @ (expm - np.eye(2)) @ B, rtol=1e-11, atol=1e-12
        )
        np.testing.assert_allclose(
            ys[i], expm @ np.asarray(y0) + 0.7 * Ainv @ (expm - np.eye(2)) @ B, rtol=1e-11
        )
    # The sensitivities of a saved observable fn(t, y) = |y|^2 at t1: 2 y^T dy/dz.
    y1 = np.asarray(ys[-1])
    assert e1.shape == (1,) and de_dy0.shape == (1, 2) and de_dtheta.shape == (1,)
    np.testing.assert_allclose(e1[0], y1 @ y1, rtol=1e-12)
    np.testing.assert_allclose(de_dy0[0], 2 * y1 @ np.asarray(jac_y0[-1]), rtol=1e-11)
    np.testing.assert_allclose(de_dtheta[0], 2 * y1 @ np.asarray(jac_theta[-1]), rtol=1e-11)


# --- logistic growth: closed form, first and second order -----------------------------


def logistic(t, y, args):
    return args["r"] * y * (1 - y / args["K"])


def logistic_exact(ts, y0, args):
    e = jnp.exp(args["r"] * ts)
    return args["K"] * y0 * e / (args["K"] + y0 * (e - 1))


def test_logistic_first_and_second_order_against_closed_form():
    y0 = jnp.array(0.2)
    args = {"K": jnp.array(2.0), "r": jnp.array(1.3)}
    ts = jnp.array([0.5, 1.0, 2.0, 3.0])
    r = forward_sensitivity(
        diffrax.ODETerm(logistic),
        taylorode.Taylor(order=6),
        0.0,
        3.0,
        0.05,
        y0,
        args,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=taylorode.TaylorController(rtol=1e-12, atol=1e-12),
        second_order=True,
    )
    exact = functools.partial(logistic_exact, ts)
    tol = dict(rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(r.ys, exact(y0, args), **tol)
    assert_trees_close(r.dy_dy0, jax.jit(jax.jacfwd(exact, 0))(y0, args), **tol)
    assert_trees_close(r.dy_dargs, jax.jit(jax.jacfwd(exact, 1))(y0, args), **tol)
    assert_trees_close(r.d2y_dy0dy0, jax.jit(jax.hessian(exact, 0))(y0, args), **tol)
    assert_trees_close(
        r.d2y_dy0dargs, jax.jit(jax.jacfwd(jax.jacfwd(exact, 0), 1))(y0, args), **tol
    )
    # d^2 y / dr^2 and friends, in the layout of jax.hessian over the args dict.
    assert_trees_close(r.d2y_dargsdargs, jax.jit(jax.hessian(exact, 1))(y0, args), **tol)
    assert float(jnp.max(jnp.abs(r.d2y_dargsdargs["r"]["r"]))) > 0.1  # not trivially 0


# --- agreement with jax.jacfwd through a Dopri8 solve ----------------------------------


def lotka_volterra(t, y, args):
    a, b, c, d = args
    u, v = y[0], y[1]
    return jnp.stack([a * u - b * u * v, -c * v + d * u * v])


LV_Y0 = jnp.array([1.0, 0.5])
LV_ARGS = (jnp.array(1.5), jnp.array(1.0), jnp.array(3.0), jnp.array(1.0))
LV_TS = jnp.array([1.0, 2.0, 3.0])


@functools.cache
def dopri8_jacobian():
    """`jax.jacfwd` of a Dopri8 solve at tolerance 1e-13 (forward mode through the
    solver), with respect to y0 and args."""

    def solve(y0, args):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lotka_volterra),
            diffrax.Dopri8(),
            0.0,
            3.0,
            None,
            y0,
            args,
            saveat=diffrax.SaveAt(ts=LV_TS),
            stepsize_controller=diffrax.PIDController(rtol=1e-13, atol=1e-13),
            adjoint=diffrax.ForwardMode(),
        ).ys

    return solve(LV_Y0, LV_ARGS), jax.jacfwd(solve, argnums=(0, 1))(LV_Y0, LV_ARGS)


@pytest.mark.parametrize(
    "solver, controller, rtol",
    [
        (taylorode.Taylor(order=6), taylorode.TaylorController(1e-12, 1e-12), 1e-8),
        (diffrax.Dopri8(), diffrax.PIDController(rtol=1e-12, atol=1e-12), 1e-8),
        (diffrax.Tsit5(), diffrax.PIDController(rtol=1e-10, atol=1e-10), 1e-7),
    ],
    ids=["Taylor", "Dopri8", "Tsit5"],
)
def test_agrees_with_jacfwd_through_dopri8(solver, controller, rtol):
    # (Dopri8's interpolant at `ts` is good to ~1e-10 here, hence the tolerance.)
    ys, (jac_y0, jac_args) = dopri8_jacobian()
    r = forward_sensitivity(
        diffrax.ODETerm(lotka_volterra),
        solver,
        0.0,
        3.0,
        0.05,
        LV_Y0,
        LV_ARGS,
        saveat=diffrax.SaveAt(ts=LV_TS),
        stepsize_controller=controller,
    )
    assert r.result == diffrax.RESULTS.successful
    np.testing.assert_allclose(r.ys, ys, rtol=rtol)
    assert_trees_close(r.dy_dy0, jac_y0, rtol=rtol, atol=rtol)
    assert_trees_close(r.dy_dargs, jac_args, rtol=rtol, atol=rtol)


# --- PyTree state and partly selected PyTree args ------------------------------------


def oscillators(t, y, args):
    q, p = y
    return p, -args["omega"] ** 2 * q - args["gamma"] * p


def oscillators_exact(ts, y0, theta):
    q0, p0 = y0
    w = theta["omega"]
    wt = jnp.outer(ts, w)
    q0, p0, w = q0[None, :], p0[None, :], w[None, :]
    return (
        q0 * jnp.cos(wt) + p0 / w * jnp.sin(wt),
        -q0 * w * jnp.sin(wt) + p0 * jnp.cos(wt),
    )


@pytest.mark.parametrize(
    "solver, second_order",
    [(taylorode.Taylor(order=6), False), (diffrax.Tsit5(), True)],
    ids=["Taylor-first", "Tsit5-second"],
)
def test_pytree_state_and_selected_args(solver, second_order):
    # Two independent oscillators q'' = -omega^2 q, state (q, p) of two arrays; only
    # `omega` is a parameter (`gamma = 0` and a string ride along).
    y0 = (jnp.array([1.0, 0.2]), jnp.array([0.0, 0.5]))
    args = {"omega": jnp.array([1.0, 2.5]), "gamma": 0.0, "tag": "two oscillators"}
    wrt = {"omega": True, "gamma": False, "tag": False}
    ts = jnp.array([0.3, 1.0, 2.0])
    r = forward_sensitivity(
        diffrax.ODETerm(oscillators),
        solver,
        0.0,
        2.0,
        0.05,
        y0,
        args,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11),
        wrt_args=wrt,
        second_order=second_order,
    )
    theta, _ = eqx.partition(args, wrt)  # {"omega": array, "gamma": None, "tag": None}
    exact = functools.partial(oscillators_exact, ts)
    tol = dict(rtol=1e-7, atol=1e-8)
    assert_trees_close(r.ys, exact(y0, theta), **tol)
    # Exactly jax.jacfwd's layout: output (q, p) -> y0 (q0, p0) -> (T, 2, 2) arrays,
    # and output -> {"omega": (T, 2, 2), "gamma": None, "tag": None}.
    assert_trees_close(r.dy_dy0, jax.jit(jax.jacfwd(exact, 0))(y0, theta), **tol)
    assert_trees_close(r.dy_dargs, jax.jit(jax.jacfwd(exact, 1))(y0, theta), **tol)
    assert r.dy_dargs[0]["gamma"] is None
    if second_order:
        assert_trees_close(r.d2y_dy0dy0, jax.jit(jax.hessian(exact, 0))(y0, theta), **tol)
        assert_trees_close(
            r.d2y_dy0dargs, jax.jit(jax.jacfwd(jax.jacfwd(exact, 0), 1))(y0, theta), **tol
        )
        assert_trees_close(r.d2y_dargsdargs, jax.jit(jax.hessian(exact, 1))(y0, theta), **tol)
        assert r.d2y_dargsdargs[0]["omega"]["omega"].shape == (3, 2, 2, 2)
    else:
        assert r.d2y_dy0dy0 is None


# --- error control covers the sensitivities ------------------------------------------


def decay(t, y, k):
    return -k * y


@pytest.mark.parametrize(
    "solver, controller",
    [
        (diffrax.Tsit5(), diffrax.PIDController(rtol=1e-8, atol=1e-8)),
        (taylorode.Taylor(), taylorode.TaylorController(rtol=1e-5, atol=1e-5)),
    ],
    ids=["Tsit5-PID", "Taylor-JorbaZou"],
)
def test_error_control_sees_sensitivities(solver, controller):
    # From y0 = 0 the solution is y = 0 for all t: an error estimate of y alone would
    # be zero and allow any step. dy/dy0 = exp(-k t) is only right if the controller
    # sizes steps for it too.
    ts = jnp.array([1.0, 4.0])
    r = forward_sensitivity(
        diffrax.ODETerm(decay),
        solver,
        0.0,
        4.0,
        0.1,
        jnp.array(0.0),
        jnp.array(1.5),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller,
    )
    np.testing.assert_array_equal(r.ys, 0.0)
    np.testing.assert_allclose(r.dy_dy0, np.exp(-1.5 * np.asarray(ts)), rtol=1e-4)
    np.testing.assert_array_equal(r.dy_dargs, 0.0)  # dy/dk = -t y = 0
    assert int(r.stats["num_accepted_steps"]) > 5
    if isinstance(controller, diffrax.PIDController):
        # The documented way to control y alone (a norm on the augmented error): the
        # controller then sees no error at all and the sensitivity is wrong.
        loose = forward_sensitivity(
            diffrax.ODETerm(decay),
            solver,
            0.0,
            4.0,
            0.1,
            jnp.array(0.0),
            jnp.array(1.5),
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(
                rtol=1e-8, atol=1e-8, norm=lambda e: optx.rms_norm(e[0])
            ),
        )
        assert np.max(np.abs(loose.dy_dy0 - np.exp(-1.5 * np.asarray(ts)))) > 1e-4


def test_parameters_only_second_order():
    # y' = -k y: y = y0 exp(-k t), dy/dk = -t y, d2y/dk2 = t^2 y; no y0 columns.
    ts = jnp.array([0.5, 2.0])
    r = forward_sensitivity(
        diffrax.ODETerm(lambda t, y, args: decay(t, y, args["k"])),
        diffrax.Tsit5(),
        0.0,
        2.0,
        0.05,
        jnp.array([2.0]),
        {"k": 0.8},  # a Python float parameter
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
        wrt_y0=False,
        second_order=True,
    )
    assert r.dy_dy0 is None and r.d2y_dy0dy0 is None and r.d2y_dy0dargs is None
    y = 2.0 * np.exp(-0.8 * np.asarray(ts))[:, None]
    t = np.asarray(ts)[:, None]
    assert r.dy_dargs["k"].shape == (2, 1) and r.d2y_dargsdargs["k"]["k"].shape == (2, 1)
    np.testing.assert_allclose(r.dy_dargs["k"], -t * y, rtol=1e-8)
    np.testing.assert_allclose(r.d2y_dargsdargs["k"]["k"], t**2 * y, rtol=1e-8)


# --- transformations and dtypes -------------------------------------------------------

LOGISTIC_ARGS = {"K": jnp.array(2.0), "r": jnp.array(1.3)}


def logistic_sens(y0, args, dtype=jnp.float64):
    return forward_sensitivity(
        diffrax.ODETerm(logistic),
        taylorode.Taylor(order=6),
        jnp.array(0.0, dtype),
        jnp.array(1.0, dtype),
        jnp.array(0.05, dtype),
        y0,
        args,
        saveat=diffrax.SaveAt(ts=jnp.array([0.5, 1.0], dtype)),
    )


def test_vmap_and_jit_over_y0():
    y0s = jnp.array([0.1, 0.5, 1.7])
    batched = jax.jit(jax.vmap(logistic_sens, in_axes=(0, None)))(y0s, LOGISTIC_ARGS)
    assert batched.ys.shape == (3, 2) and batched.dy_dargs["r"].shape == (3, 2)
    for i, y0 in enumerate(y0s):
        single = logistic_sens(y0, LOGISTIC_ARGS)
        assert_trees_close(
            (batched.ys[i], batched.dy_dy0[i], jax.tree.map(lambda x: x[i], batched.dy_dargs)),
            (single.ys, single.dy_dy0, single.dy_dargs),
            rtol=1e-13,
            atol=1e-15,
        )
    # Right, too (constant step, order 6).
    exact = functools.partial(logistic_exact, jnp.array([0.5, 1.0]))
    np.testing.assert_allclose(
        batched.dy_dy0[1], jax.jit(jax.jacfwd(exact))(y0s[1], LOGISTIC_ARGS), rtol=1e-8
    )


def test_float32():
    f32 = jnp.float32
    args = {"K": jnp.array(2.0, f32), "r": jnp.array(1.3, f32)}
    r = logistic_sens(jnp.array(0.2, f32), args, f32)
    for leaf in jax.tree.leaves((r.ys, r.dy_dy0, r.dy_dargs)):
        assert leaf.dtype == f32
    exact = functools.partial(logistic_exact, jnp.array([0.5, 1.0]))
    args64 = jax.tree.map(lambda x: x.astype(jnp.float64), args)
    np.testing.assert_allclose(r.dy_dy0, jax.jit(jax.jacfwd(exact))(jnp.array(0.2), args64), rtol=1e-5)
    np.testing.assert_allclose(
        r.dy_dargs["K"], jax.jit(jax.jacfwd(exact, 1))(jnp.array(0.2), args64)["K"], rtol=1e-5
    )


# --- bad input ------------------------------------------------------------------------


def test_bad_input():
    kw = dict(saveat=diffrax.SaveAt(t1=True))
    y0 = jnp.array([1.0])
    control = diffrax.ControlTerm(
        lambda t, y, args: y, diffrax.UnsafeBrownianPath(shape=(), key=jax.random.key(0))
    )
    for terms in [
        diffrax.MultiTerm(diffrax.ODETerm(decay), diffrax.ODETerm(decay)),
        control,
    ]:
        with pytest.raises(ValueError, match="needs `terms` to be a `diffrax.ODETerm"):
            forward_sensitivity(terms, diffrax.Tsit5(), 0.0, 1.0, 0.1, y0, 1.0, **kw)
    term = diffrax.ODETerm(decay)
    with pytest.raises(ValueError, match="dense=True"):
        forward_sensitivity(
            term, diffrax.Tsit5(), 0.0, 1.0, 0.1, y0, 1.0, saveat=diffrax.SaveAt(dense=True)
        )
    with pytest.raises(ValueError, match="floating-point"):
        forward_sensitivity(term, diffrax.Tsit5(), 0.0, 1.0, 0.1, jnp.array([1]), 1.0, **kw)
    with pytest.raises(ValueError, match="Nothing to differentiate"):
        forward_sensitivity(
            term, diffrax.Tsit5(), 0.0, 1.0, 0.1, y0, 1.0, wrt_y0=False, wrt_args=False, **kw
        )
    with pytest.raises(ValueError, match=r"not real floating point \(dtype int"):
        forward_sensitivity(
            term, diffrax.Tsit5(), 0.0, 1.0, 0.1, y0, jnp.array(2), wrt_args=lambda x: True, **kw
        )


# --- the example ----------------------------------------------------------------------


def test_example_runs_quick(tmp_path):
    path = ROOT / "examples" / "sensitivity_analysis.py"
    spec = importlib.util.spec_from_file_location("sensitivity_analysis_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "coefficients.png"
    table = module.main(quick=True, out=out)
    assert out.exists() and out.stat().st_size > 1000
    assert table  # the printed rows
