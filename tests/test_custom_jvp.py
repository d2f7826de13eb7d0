"""`jax.custom_jvp` and `eqx.filter_custom_jvp` functions in Taylor mode: the engine
derives their Taylor rule from their custom JVP, so a rule that is stable at a singular
point stays stable at every order; and the equinox patterns (Modules, `None` tangents,
callables as keyword arguments, PyTree parameters, `lax.scan` under `jit`)."""

import gc

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import taylorode


ORDER = 6


@jax.custom_jvp
def guarded_sqrt(x):
    return jnp.sqrt(x)


@guarded_sqrt.defjvp
def _guarded_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = guarded_sqrt(x)
    safe = jnp.where(x == 0, 1.0, y)
    return y, jnp.where(x == 0, 0.0, dx / (2 * safe))


def _coeffs(vf, y0, args=None, order=ORDER, method="recurrence"):
    return taylorode.taylor_coefficients(vf, 0.0, y0, args, order, method=method)


def test_rule_from_custom_jvp_is_exact_away_from_the_singular_point():
    # y' = -sqrt(y), y(0) = 4: y = (2 - t/2)^2 = 4 - 2t + t^2/4.
    c = _coeffs(lambda t, y, a: -guarded_sqrt(y), jnp.array(4.0))
    expected = np.zeros(ORDER + 1)
    expected[:3] = [4.0, -2.0, 0.25]
    np.testing.assert_allclose(c, expected, rtol=0, atol=1e-14)


def test_rule_from_custom_jvp_is_stable_at_the_singular_point():
    # Plain jnp.sqrt of a series leaving 0: no Taylor series (the recurrence divides
    # by sqrt(0)); of the series that stays at 0 (y' = -sqrt(y)), the zero series.
    plain = _coeffs(lambda t, y, a: 1 - jnp.sqrt(y), jnp.array(0.0))
    assert not np.all(np.isfinite(plain))
    np.testing.assert_array_equal(_coeffs(lambda t, y, a: -jnp.sqrt(y), jnp.array(0.0)), np.zeros(ORDER + 1))
    # The custom JVP says d sqrt = 0 at 0: the equilibrium y = 0 is kept at every order.
    c = _coeffs(lambda t, y, a: -guarded_sqrt(y), jnp.array(0.0))
    np.testing.assert_array_equal(c, np.zeros(ORDER + 1))
    # ... and jvp / grad of the coefficients are finite there.
    grad = jax.grad(lambda y: jnp.sum(_coeffs(lambda t, y, a: -guarded_sqrt(y), y)))(0.0)
    assert np.isfinite(grad)
    _, tangent = jax.jvp(guarded_sqrt, (0.0,), (1.0,))
    assert tangent == 0.0


def test_jax_sinc_at_zero_follows_its_custom_jvp():
    # jnp.sinc is exact at 0 only through its custom JVP (the primal code's Maclaurin
    # branch is flat). y' = sinc(t): y = y0 + Si-like series; compare with mpmath.
    c = _coeffs(lambda t, y, a: jnp.sinc(t) * jnp.ones_like(y), jnp.array(0.0), order=8)
    series = mpmath.taylor(lambda s: mpmath.sinc(mpmath.pi * s), 0, 7)
    expected = [0.0] + [float(series[j]) / (j + 1) for j in range(8)]
    np.testing.assert_allclose(c, expected, rtol=1e-12, atol=1e-14)
    # A state-dependent sinc at y = 0, against the exact jvp tower.
    vf = lambda t, y, a: jnp.sinc(y)
    np.testing.assert_allclose(
        _coeffs(vf, jnp.array(0.0)), _coeffs(vf, jnp.array(0.0), method="jvp"), atol=1e-12
    )


def test_library_custom_jvp_functions_match_the_jvp_tower():
    y0 = jnp.array([0.3, -1.2, 2.0])
    for fn in (jax.nn.relu, jax.nn.softmax, jax.nn.silu, jax.scipy.special.xlogy):
        if fn is jax.scipy.special.xlogy:
            vf = lambda t, y, a: jax.scipy.special.xlogy(y, y**2 + 1)
        else:
            vf = lambda t, y, a, fn=fn: fn(y)
        np.testing.assert_allclose(
            _coeffs(vf, y0, order=6), _coeffs(vf, y0, order=6, method="jvp"), rtol=1e-10, atol=1e-12
        )


# --- equinox ----------------------------------------------------------------------------


@eqx.filter_custom_jvp
def damped_norm(x, scale, *, fun):
    """fun(|x|) * scale with |x| guarded at 0; `fun` is a callable keyword argument."""
    return fun(jnp.sqrt(jnp.sum(x**2))) * scale


@damped_norm.def_jvp
def _damped_norm_jvp(primals, tangents, *, fun):
    x, scale = primals
    tx, tscale = tangents
    out = damped_norm(x, scale, fun=fun)
    r2 = jnp.sum(x**2)
    safe_r = jnp.sqrt(jnp.where(r2 == 0, 1.0, r2))
    dfun = jax.grad(fun)(jnp.where(r2 == 0, 0.0, safe_r))
    tangent = jnp.zeros_like(out)
    if tx is not None:
        tangent = tangent + jnp.where(r2 == 0, 0.0, dfun * jnp.sum(x * tx) / safe_r) * scale
    if tscale is not None:
        tangent = tangent + fun(jnp.sqrt(r2)) * tscale
    return out, tangent


class Drag(eqx.Module):
    """A velocity-dependent drag written as an equinox Module: parameters in a dict,
    the drag profile as a non-differentiated callable."""

    params: dict
    profile: callable = eqx.field(static=True)

    def __call__(self, t, y, args):
        q, v = y
        drag = damped_norm(v, self.params["c"], fun=self.profile)
        return v, -self.params["k"] * q - drag * v


def _drag_solve(params, y0, t1=1.0):
    field = Drag(params, jnp.tanh)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        taylorode.Taylor(order=6),
        0.0,
        t1,
        None,
        y0,
        stepsize_controller=taylorode.TaylorController(rtol=1e-11, atol=1e-11),
    )
    return jax.tree_util.tree_map(lambda leaf: leaf[-1], sol.ys)


PARAMS = {"k": jnp.array(2.0), "c": jnp.array(0.7)}


def _drag_reference(params, y0, t1=1.0):
    from scipy.integrate import solve_ivp

    k, c = float(params["k"]), float(params["c"])

    def rhs(t, s):
        q, v = s[:2], s[2:]
        return np.concatenate([v, -k * q - c * np.tanh(np.linalg.norm(v)) * v])

    s0 = np.concatenate([np.asarray(y0[0]), np.asarray(y0[1])])
    out = solve_ivp(rhs, (0.0, t1), s0, method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
    return out[:2], out[2:]


def test_equinox_module_with_filter_custom_jvp():
    # At rest, |v| = 0 is exactly at the expansion point: plain code gives NaN there,
    # the guarded rule finite coefficients (those of the branch its JVP takes at 0).
    at_rest = (jnp.array([1.0, -0.5]), jnp.zeros(2))
    field = Drag(PARAMS, jnp.tanh)
    coeffs = taylorode.taylor_coefficients(field, 0.0, at_rest, None, ORDER)
    assert all(np.all(np.isfinite(c)) for c in jax.tree_util.tree_leaves(coeffs))
    grads = jax.grad(
        lambda y: sum(jnp.sum(c) for c in jax.tree_util.tree_leaves(
            taylorode.taylor_coefficients(field, 0.0, y, None, ORDER)))
    )(at_rest)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    # Near rest, the solve is accurate.
    y0 = (jnp.array([1.0, -0.5]), jnp.array([1e-3, 0.0]))
    q, v = jax.jit(_drag_solve)(PARAMS, y0)
    q_ref, v_ref = _drag_reference(PARAMS, y0)
    np.testing.assert_allclose(q, q_ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-9)


def test_gradient_wrt_a_pytree_of_parameters_through_the_solve():
    y0 = (jnp.array([1.0, -0.5]), jnp.array([0.2, 0.1]))

    def loss(params):
        q, v = _drag_solve(params, y0)
        return jnp.sum(q**2) + jnp.sum(v)

    grads = jax.jit(jax.grad(loss))(PARAMS)
    eps = 1e-6
    for name in PARAMS:
        up = dict(PARAMS, **{name: PARAMS[name] + eps})
        down = dict(PARAMS, **{name: PARAMS[name] - eps})
        fd = (loss(up) - loss(down)) / (2 * eps)
        np.testing.assert_allclose(grads[name], fd, rtol=1e-6)


def test_symbolic_zero_tangents_arrive_as_none():
    # Only `x` depends on the state: `scale` comes from args and is not expanded, so the
    # JVP rule must see its tangent as None (the assertion fails otherwise).
    seen = []

    @eqx.filter_custom_jvp
    def f(x, scale):
        return jnp.sin(x) * scale

    @f.def_jvp
    def _f_jvp(primals, tangents):
        x, scale = primals
        tx, tscale = tangents
        seen.append(tscale is None)
        return f(x, scale), jnp.cos(x) * tx * scale

    vf = lambda t, y, scale: f(y, scale)
    y0, scale = jnp.array(0.4), jnp.array(1.5)
    c = taylorode.taylor_coefficients(vf, 0.0, y0, scale, 6)
    ref = taylorode.taylor_coefficients(lambda t, y, s: jnp.sin(y) * s, 0.0, y0, scale, 6)
    np.testing.assert_allclose(c, ref, rtol=1e-13)
    assert seen and all(seen)


def test_module_in_scan_under_jit_leaks_no_tracers():
    # A Module vector field called from lax.scan: each scan step takes one Taylor step
    # of fixed size (the coefficients evaluated as a polynomial), under jit.
    field = Drag(PARAMS, jnp.tanh)
    h = 0.05

    def step(y, _):
        c = taylorode.taylor_coefficients(field, 0.0, y, None, ORDER)
        powers = h ** jnp.arange(ORDER + 1, dtype=jnp.float64)
        y1 = jax.tree_util.tree_map(lambda leaf: jnp.tensordot(powers, leaf, axes=1), c)
        return y1, None

    @jax.jit
    def run(y0):
        y1, _ = jax.lax.scan(step, y0, None, length=20)
        return y1

    y0 = (jnp.array([1.0, -0.5]), jnp.array([0.3, 0.2]))
    # The leak check collects garbage and scans every object for referrers of each
    # trace it ends: in a test process that already holds many compiled programs that
    # took 39 s instead of 5. Objects older than this test are frozen out of both; a
    # tracer leaked now is a new object, and is still found.
    gc.collect()
    gc.freeze()
    try:
        with jax.checking_leaks():
            q, v = run(y0)
    finally:
        gc.unfreeze()
    q_ref, v_ref = _drag_reference(PARAMS, y0, t1=20 * h)
    np.testing.assert_allclose(q, q_ref, atol=1e-8)
    np.testing.assert_allclose(v, v_ref, atol=1e-8)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_vmapped_derivative_order_through_switch(n):
    # The seed pattern: the n-th derivative, n a traced integer, dispatched by lax.switch
    # over precompiled orders, under vmap over the argument.
    def nth_derivative(order, fn):
        for _ in range(order):
            fn = jax.grad(fn)
        return fn

    branches = [nth_derivative(k, guarded_sqrt) for k in range(4)]
    apply = jax.jit(jax.vmap(lambda i, x: jax.lax.switch(i, branches, x), in_axes=(None, 0)))
    xs = jnp.array([0.5, 1.0, 4.0])
    got = apply(jnp.asarray(n), xs)
    exact = [lambda x: x**0.5, lambda x: 0.5 * x**-0.5, lambda x: -0.25 * x**-1.5, lambda x: 0.375 * x**-2.5][n]
    np.testing.assert_allclose(got, exact(np.asarray(xs)), rtol=1e-13)
