"""Static mistakes raise at trace time with a message that says what to do."""

import warnings

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import taylorode


def _solve(term, solver, y0=jnp.array(1.0), **kwargs):
    return diffrax.diffeqsolve(term, solver, 0.0, 1.0, 0.1, y0, **kwargs)


def test_control_term_is_rejected():
    path = diffrax.LinearInterpolation(ts=jnp.array([0.0, 1.0]), ys=jnp.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="needs a diffrax.ODETerm, but got ControlTerm"):
        _solve(diffrax.ControlTerm(lambda t, y, a: y, path), taylorode.Taylor(4))


def test_sde_terms_are_rejected():
    bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(), key=jax.random.PRNGKey(0))
    terms = diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, y, a: -y), diffrax.ControlTerm(lambda t, y, a: 0.1 * y, bm)
    )
    with pytest.raises(ValueError, match="SDE solver"), pytest.warns(UserWarning, match="Itô"):
        _solve(terms, taylorode.Taylor(4))


@pytest.mark.parametrize("order", [0, -3, 61, 2.0, True], ids=str)
def test_invalid_order(order):
    with pytest.raises(ValueError, match=r"\[1, 60\]"):
        taylorode.Taylor(order)


def test_jvp_order_limit_explains_why():
    with pytest.raises(ValueError, match=r"\[1, 12\].*exponentially.*method='jet'"):
        taylorode.Taylor(13, method="jvp")
    with pytest.raises(ValueError, match=r"\[1, 12\]"):
        taylorode.taylor_coefficients(lambda t, y, a: y, 0.0, jnp.array(1.0), None, 20, method="jvp")


def test_unknown_method():
    with pytest.raises(ValueError, match=r"Unknown Taylor coefficient method 'taylor'.*'jet', 'jvp', 'recurrence'"):
        taylorode.Taylor(4, method="taylor")


def test_wrong_output_structure():
    with pytest.raises(ValueError, match="same structure as the state"):
        taylorode.taylor_coefficients(
            lambda t, y, a: (y, y), 0.0, jnp.array(1.0), None, 3
        )


# Vector fields using an operation jet cannot expand, each paired with an equivalent
# field written in supported operations (to check method="jvp" gives the right answer).
UNSUPPORTED = {
    "tan": (lambda t, y, a: jnp.tan(y), lambda t, y, a: jnp.sin(y) / jnp.cos(y)),
    "atan": (lambda t, y, a: jnp.arctan(y), None),
    "asin": (lambda t, y, a: jnp.arcsin(0.5 * y), None),
    "cbrt": (lambda t, y, a: jnp.cbrt(y), lambda t, y, a: y ** (1 / 3)),
    "cond": (lambda t, y, a: jax.lax.cond(y > 0, jnp.sin, jnp.cos, y), lambda t, y, a: jnp.sin(y)),
    "while": (lambda t, y, a: jax.lax.fori_loop(0, jnp.int32(2), lambda i, x: x * y, y), None),
    "custom_jvp_call": (lambda t, y, a: jax.nn.softplus(y), lambda t, y, a: jnp.log1p(jnp.exp(y))),
}


@pytest.mark.parametrize("primitive", list(UNSUPPORTED), ids=list(UNSUPPORTED))
def test_missing_jet_rule_names_primitive(primitive):
    field, equivalent = UNSUPPORTED[primitive]
    y0 = jnp.array(0.4)
    with pytest.raises(taylorode.TaylorRuleError, match=rf"no Taylor rule for {primitive}.*method='recurrence'"):
        taylorode.taylor_coefficients(field, 0.0, y0, None, 4, method="jet")
    # Inside diffeqsolve the error is the same, at trace time.
    with pytest.raises(taylorode.TaylorRuleError, match=primitive):
        _solve(diffrax.ODETerm(field), taylorode.Taylor(4, method="jet"), y0=y0)
    # The suggested fixes work (the recurrence engine has no `while` rule either).
    c_jvp = taylorode.taylor_coefficients(field, 0.0, y0, None, 4, method="jvp")
    if primitive != "while":
        c_rec = taylorode.taylor_coefficients(field, 0.0, y0, None, 4, method="recurrence")
        np.testing.assert_allclose(c_rec, c_jvp, rtol=1e-12)
    if equivalent is not None:
        c_ref = taylorode.taylor_coefficients(equivalent, 0.0, y0, None, 4, method="jet")
        np.testing.assert_allclose(c_jvp, c_ref, rtol=1e-12)


def test_operations_on_args_alone_are_not_flagged():
    # jet evaluates functions of args alone as constants, so tan(args) is fine.
    c = taylorode.taylor_coefficients(lambda t, y, k: jnp.tan(k) * y, 0.0, jnp.array(1.0), jnp.array(0.3), 5, method="jet")
    np.testing.assert_allclose(c[5], np.tan(0.3) ** 5 / 120, rtol=1e-13)


def _f32_solve(rtol, solver, controller):
    f32 = jnp.float32
    return diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: -y),
        solver,
        f32(0.0),
        f32(1.0),
        None,
        f32(1.0),
        stepsize_controller=controller(rtol=rtol, atol=rtol),
        max_steps=64,
        throw=False,
    )


# Where the tolerance meets the state: the controller (TaylorController), or the solver
# that diffeqsolve hands the controller's tolerances (Taylor(), HermiteObreschkoff).
_PRECISION_CASES = [
    (taylorode.Taylor(4), taylorode.TaylorController),
    (taylorode.Taylor(), taylorode.TaylorController),
    (taylorode.Taylor(), diffrax.PIDController),
    (taylorode.HermiteObreschkoff(1, 2), diffrax.PIDController),
]
_PRECISION_IDS = ["Taylor(4)+TC", "Taylor()+TC", "Taylor()+PID", "HO+PID"]


@pytest.mark.parametrize("solver, controller", _PRECISION_CASES, ids=_PRECISION_IDS)
def test_float32_tolerance_below_precision_warns(solver, controller):
    with pytest.warns(taylorode.PrecisionWarning, match="jax_enable_x64"):
        _f32_solve(1e-12, solver, controller)


@pytest.mark.parametrize("solver, controller", _PRECISION_CASES, ids=_PRECISION_IDS)
def test_float32_reachable_tolerance_does_not_warn(solver, controller):
    with warnings.catch_warnings():
        warnings.simplefilter("error", taylorode.PrecisionWarning)
        sol = _f32_solve(1e-5, solver, controller)
    assert abs(float(sol.ys[-1]) - np.exp(-1.0)) < 1e-4


def test_wrong_output_shape():
    with pytest.raises(ValueError, match=r"shape \(2,\) for state leaf 0"):
        taylorode.taylor_coefficients(lambda t, y, a: jnp.stack([y, y]), 0.0, jnp.array(1.0), None, 3)


@pytest.mark.parametrize(
    "controller, dt0",
    [
        (taylorode.TaylorController(rtol=1e-8, atol=1e-8), None),
        (diffrax.PIDController(rtol=1e-8, atol=1e-8), 0.1),
    ],
    ids=["TaylorController", "PIDController"],
)
def test_singular_vector_field_says_why(controller, dt0):
    # jnp.sqrt at 0 of a series leaving 0 (y' = 1 - sqrt(y) from 0): finite value,
    # infinite derivative, no Taylor series. No step size helps, so the solve stops at
    # once with RESULTS.nonfinite (instead of rejecting steps until max_steps): raised
    # by default, returned with throw=False. Where the series stays at 0 (y' = -sqrt(y)
    # from 0, whose solution is y = 0), sqrt of the zero series is the zero series.
    def solve(field, throw=True):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(field), taylorode.Taylor(order=4), 0.0, 1.0, dt0,
            jnp.array(0.0), stepsize_controller=controller, throw=throw,
        )

    with pytest.raises(Exception, match="Nonfinite"):
        solve(lambda t, y, a: 1 - jnp.sqrt(y))
    sol = solve(lambda t, y, a: 1 - jnp.sqrt(y), throw=False)
    assert sol.result == diffrax.RESULTS.nonfinite
    assert int(sol.stats["num_steps"]) == 1
    assert float(solve(lambda t, y, a: -taylorode.stable.sqrt(y)).ys[-1]) == 0.0
    assert float(solve(lambda t, y, a: -jnp.sqrt(y)).ys[-1]) == 0.0


def test_nonfinite_state_is_a_per_trajectory_result():
    # One trajectory of a vmapped batch starts from NaN: it ends with
    # RESULTS.nonfinite, the others are solved as if alone.
    def solve(y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, a: -y), taylorode.Taylor(), 0.0, 1.0, None, y0,
            stepsize_controller=taylorode.TaylorController(rtol=1e-8, atol=1e-8), throw=False,
        )

    y0 = jnp.array([1.0, jnp.nan, 2.0])
    sol = jax.jit(jax.vmap(solve))(y0)
    ok = np.asarray(sol.result == diffrax.RESULTS.successful)
    assert ok.tolist() == [True, False, True]
    assert bool((sol.result == diffrax.RESULTS.nonfinite)[1])
    assert np.allclose(np.asarray(sol.ys[[0, 2], -1]), np.exp(-1.0) * np.array([1.0, 2.0]), rtol=1e-7)


def test_diffeqsolve_names_the_cause_per_trajectory():
    # diffrax reports a NaN y0 and a singular field alike (RESULTS.nonfinite);
    # taylorode.diffeqsolve names each, per trajectory under vmap with throw=False, and
    # raises with that message with throw=True. Its result compares with
    # taylorode.RESULTS, which has every diffrax member.
    R = taylorode.RESULTS

    def solve(y0, throw=False):
        field = lambda t, y, a: 1 - jnp.sqrt(y)  # noqa: E731  singular at y = 0
        return taylorode.diffeqsolve(
            diffrax.ODETerm(field), taylorode.Taylor(order=4), 0.0, 1.0, None, y0,
            stepsize_controller=taylorode.TaylorController(rtol=1e-8, atol=1e-8), throw=throw,
        )

    sol = jax.jit(jax.vmap(solve))(jnp.array([1.0, jnp.nan, 0.0, jnp.inf]))
    expected = [R.successful, R.nonfinite_initial_state, R.singular_vector_field, R.nonfinite_initial_state]
    for i, member in enumerate(expected):
        assert bool((sol.result == member)[i]), i
    assert issubclass(R, diffrax.RESULTS)
    assert bool(R.promote(diffrax.RESULTS.max_steps_reached) == R.max_steps_reached)
    with pytest.raises(Exception, match="taylorode.stable"):
        solve(jnp.array(0.0), throw=True)
    with pytest.raises(Exception, match="initial state"):
        solve(jnp.array(jnp.nan), throw=True)
    # A successful solve is unchanged (y' = 1 - sqrt(y) from 1 stays at 1), and
    # differentiable: the gradient agrees with central differences.
    assert float(solve(jnp.array(1.0), throw=True).ys[-1]) == 1.0
    end = lambda y0: solve(y0, throw=True).ys[-1]  # noqa: E731
    grad = jax.grad(end)(jnp.array(2.0))
    fd = (end(jnp.array(2.0 + 1e-5)) - end(jnp.array(2.0 - 1e-5))) / 2e-5
    assert abs(float(grad - fd)) < 1e-6


def test_an_implicit_step_that_cannot_succeed_ends_the_solve():
    # The field is NaN for t > 0.5 and the solve starts at 0.5: every step fails, at
    # any length. Once a step fails at a millionth of the last accepted one, the solve
    # ends (10 steps) and says why, instead of rejecting until max_steps.
    def field(t, y, args):
        return -y + jnp.where(t > 0.5, jnp.nan, 0.0)

    sol = taylorode.diffeqsolve(
        diffrax.ODETerm(field), taylorode.HermiteObreschkoff(1, 2), 0.5, 1.0, None,
        jnp.array([1.0, 2.0]), stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
        max_steps=4096, throw=False,
    )
    assert bool(sol.result == taylorode.RESULTS.singular_vector_field)
    assert int(sol.stats["num_steps"]) < 20
    assert np.asarray(sol.ys[-1]).tolist() == [1.0, 2.0]
