"""taylorode.stable: exact away from the singular points, finite and as documented at them."""

import functools
import math

import diffrax
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import taylorode
from scipy.integrate import solve_ivp
from taylorode import stable
from taylorode._custom_taylor import CUSTOM_RULES

from .problems import kepler_exact, kepler_y0


ORDER = 8
V, W, U = (1.0, 0.5, -0.2), (0.3, -1.0, 0.4), (0.2, 0.1, 1.0)
LOG_TINY = math.log(np.finfo(np.float64).tiny)


def _x(t, x0):
    """A scalar input series, x0 + t + t^2/2 (jax or mpmath)."""
    return x0 + t + 0.5 * t * t


def _vec(t, x0):
    """A vector input series, x0 V + t W + t^2/2 U, as a jax array."""
    return x0 * jnp.array(V) + t * jnp.array(W) + 0.5 * t * t * jnp.array(U)


def _vec_mp(t, x0):
    return [x0 * v + t * w + 0.5 * t * t * u for v, w, u in zip(V, W, U)]


def _mp_norm(xs):
    return mpmath.sqrt(sum(x * x for x in xs))


def _mp_cbrt(x):
    return mpmath.sign(x) * mpmath.cbrt(abs(x))


# name: (field f(t, x0) with stable functions, the same with plain jax.numpy,
#        its components in mpmath, extra points). Each is the vector field y' = f of a
# solution y(t) = int_0^t f, so y^[k] = f^[k-1] / k.
CASES = {
    "sqrt": (
        lambda t, x0: stable.sqrt(_x(t, x0)),
        lambda t, x0: jnp.sqrt(_x(t, x0)),
        lambda t, x0: [mpmath.sqrt(_x(t, x0))], (),
    ),
    "cbrt": (
        lambda t, x0: stable.cbrt(_x(t, x0)),
        lambda t, x0: jnp.cbrt(_x(t, x0)),
        lambda t, x0: [_mp_cbrt(_x(t, x0))], (-2.0,),
    ),
    "pow0.7": (
        lambda t, x0: stable.pow(_x(t, x0), 0.7),
        lambda t, x0: _x(t, x0) ** 0.7,
        lambda t, x0: [_x(t, x0) ** mpmath.mpf(0.7)], (),
    ),
    "pow2.5": (
        lambda t, x0: stable.pow(_x(t, x0), 2.5),
        lambda t, x0: _x(t, x0) ** 2.5,
        lambda t, x0: [_x(t, x0) ** mpmath.mpf(2.5)], (),
    ),
    "pow-1.5": (
        lambda t, x0: stable.pow(_x(t, x0), -1.5),
        lambda t, x0: _x(t, x0) ** -1.5,
        lambda t, x0: [_x(t, x0) ** mpmath.mpf(-1.5)], (),
    ),
    "pow-2": (
        lambda t, x0: stable.pow(_x(t, x0), -2),
        lambda t, x0: _x(t, x0) ** -2,
        lambda t, x0: [_x(t, x0) ** -2], (-0.5,),
    ),
    "log": (
        lambda t, x0: stable.log(_x(t, x0)),
        lambda t, x0: jnp.log(_x(t, x0)),
        lambda t, x0: [mpmath.log(_x(t, x0))], (),
    ),
    "softabs": (
        lambda t, x0: stable.softabs(_x(t, x0) - 0.3, 0.1),
        lambda t, x0: jnp.sqrt((_x(t, x0) - 0.3) ** 2 + 0.01),
        lambda t, x0: [mpmath.sqrt((_x(t, x0) - 0.3) ** 2 + mpmath.mpf(0.1) ** 2)], (),
    ),
    "softabs_eps0": (  # |x| for x > 0: the series of x itself (a polynomial)
        lambda t, x0: stable.softabs(_x(t, x0), 0.0),
        lambda t, x0: jnp.abs(_x(t, x0)),
        lambda t, x0: [_x(t, x0)], (),
    ),
    "softabs_eps_series": (  # eps depending on t: its series enters the rule
        lambda t, x0: stable.softabs(_x(t, x0), 0.05 + t),
        lambda t, x0: jnp.hypot(_x(t, x0), 0.05 + t),
        lambda t, x0: [mpmath.sqrt(_x(t, x0) ** 2 + (mpmath.mpf(0.05) + t) ** 2)], (),
    ),
    "safe_div": (
        lambda t, x0: stable.safe_div(jnp.cos(t), _x(t, x0)),
        lambda t, x0: jnp.cos(t) / _x(t, x0),
        lambda t, x0: [mpmath.cos(t) / _x(t, x0)], (),
    ),
    "norm": (
        lambda t, x0: stable.norm(_vec(t, x0)),
        lambda t, x0: jnp.linalg.norm(_vec(t, x0)),
        lambda t, x0: [_mp_norm(_vec_mp(t, x0))], (),
    ),
    "normalize": (
        lambda t, x0: stable.normalize(_vec(t, x0)),
        lambda t, x0: _vec(t, x0) / jnp.linalg.norm(_vec(t, x0)),
        lambda t, x0: [x / _mp_norm(_vec_mp(t, x0)) for x in _vec_mp(t, x0)], (),
    ),
}
POINTS = (1e-3, 0.3, 2.0)  # near the singular point, and away from it


@functools.cache
def _coeff_fn(name, plain=False, method="recurrence", order=ORDER):
    """Jitted Taylor coefficients of y' = f(t, x0), y(0) = 0, as a function of x0."""
    f = CASES[name][1 if plain else 0]
    shape = (3,) if name == "normalize" else ()
    vf = lambda t, y, x0: f(t, x0)
    return jax.jit(
        lambda x0: taylorode.taylor_coefficients(vf, 0.0, jnp.zeros(shape), x0, order, method=method)
    )


def _reference(name, x0, order=ORDER):
    """mpmath's Taylor coefficients of y = int_0^t f: y^[0] = 0, y^[k] = f^[k-1] / k."""
    with mpmath.workdps(max(40, mpmath.mp.dps)):
        x0 = mpmath.mpf(x0)
        comps = CASES[name][2](mpmath.mpf(0), x0)
        series = []
        for i in range(len(comps)):
            fi = mpmath.taylor(lambda t: CASES[name][2](t, x0)[i], 0, order - 1)
            series.append([0.0] + [float(fi[k - 1] / k) for k in range(1, order + 1)])
    out = np.array(series).T  # (order + 1, components)
    return out if name == "normalize" else out[:, 0]


def _assert_series(c, ref, rho, tol=1e-12):
    """Coefficients scaled to a step rho (about the radius of convergence),
    c_k rho^k, agree to `tol` relative to the largest such term, and coefficients that
    matter at that step (above 1e-3 of it) agree to `tol * 1e3` relative to themselves."""
    c, ref = np.asarray(c, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert np.all(np.isfinite(c))
    w = rho ** np.arange(len(ref)).reshape((-1,) + (1,) * (ref.ndim - 1))
    big = np.max(np.abs(ref * w))
    err = np.abs(c - ref) * w
    assert err.max() <= tol * big, f"scaled error {err.max() / big:.2e} at order {err.argmax()}"
    mask = np.abs(ref * w) > 1e-3 * big
    rel = np.abs(c - ref)[mask] / np.abs(ref)[mask]
    assert rel.max() <= 1e3 * tol, f"relative error {rel.max():.2e}"


@pytest.mark.parametrize(
    "name, x0",
    [(name, x0) for name, case in CASES.items() for x0 in POINTS + case[3]],
)
def test_coefficients_match_mpmath(name, x0):
    c = _coeff_fn(name)(jnp.asarray(x0))
    _assert_series(c, _reference(name, x0), rho=min(abs(x0), 1.0))


HIGH = ("sqrt", "log", "safe_div", "norm")  # the power, log, quotient and c^2 = s rules


@functools.cache
def _high_order_fn(order=20):
    vf = lambda t, y, x0: jnp.stack([CASES[name][0](t, x0) for name in HIGH])
    return jax.jit(lambda x0: taylorode.taylor_coefficients(vf, 0.0, jnp.zeros(len(HIGH)), x0, order))


@pytest.mark.parametrize("x0", [1e-3, 0.3])
def test_coefficients_to_order_20(x0):
    c = _high_order_fn()(jnp.asarray(x0))
    for i, name in enumerate(HIGH):
        with mpmath.workdps(60):
            ref = _reference(name, x0, order=20)
        _assert_series(c[:, i], ref, rho=x0)


@pytest.mark.parametrize("name", list(CASES))
def test_jvp_tower_matches_rule_and_plain_jax(name):
    # Away from the singular point: the Taylor rule (recurrence), the explicit JVP
    # differentiated 5 times (method="jvp") and plain jax.numpy under the jvp tower agree.
    x0 = jnp.asarray(0.3)
    rule = _coeff_fn(name)(x0)[:6]  # compiled for the mpmath test already
    tower = _coeff_fn(name, method="jvp", order=5)(x0)
    plain = _coeff_fn(name, plain=True, method="jvp", order=5)(x0)
    _assert_series(tower, rule, rho=0.3, tol=1e-12)
    _assert_series(plain, rule, rho=0.3, tol=1e-12)


# --- at the singular point ----------------------------------------------------------------

# name: (stable function, plain jax.numpy function, singular point, documented value)
SINGULAR = {
    "sqrt": (stable.sqrt, jnp.sqrt, 0.0, 0.0),
    "cbrt": (stable.cbrt, jnp.cbrt, 0.0, 0.0),
    "pow0.7": (lambda x: stable.pow(x, 0.7), lambda x: x**0.7, 0.0, 0.0),
    "pow2.5": (lambda x: stable.pow(x, 2.5), lambda x: x**2.5, 0.0, 0.0),
    "pow-1.5": (lambda x: stable.pow(x, -1.5), lambda x: x**-1.5, 0.0, 0.0),
    "log": (stable.log, jnp.log, 0.0, LOG_TINY),
    "softabs_eps0": (lambda x: stable.softabs(x, 0.0), lambda x: jnp.sqrt(x * x), 0.0, 0.0),
    "safe_div": (
        lambda x: stable.safe_div(1.0 + x, x),
        lambda x: jnp.where(x == 0, 0.0, (1.0 + x) / x),  # a single where is not enough
        0.0,
        0.0,
    ),
    "norm": (stable.norm, jnp.linalg.norm, np.zeros(3), 0.0),
    "normalize": (stable.normalize, lambda x: x / jnp.linalg.norm(x), np.zeros(3), np.zeros(3)),
}
SING_ORDER = 6


def _singular_coefficients(f, y0, order=SING_ORDER, method="recurrence"):
    """Coefficients of y' = f(y) + f(t w) at t = 0: both arguments start at the
    singular point, y with zero and t w with nonzero first-order coefficients."""
    w = jnp.ones_like(y0) if y0.ndim == 0 else jnp.array(W)
    vf = lambda t, y, a: jnp.broadcast_to(f(y) + f(t * w), y.shape)
    return taylorode.taylor_coefficients(vf, 0.0, y0, None, order, method=method)


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


def _at_singular_point(fn, xs, near):
    """Everything the singular-point test checks, in one compiled program."""
    total = lambda x: jnp.sum(fn(x))
    # (order 4 for the gradient: the rules are the same at every order >= 2, and
    # reverse mode through the engine is what costs compile time here)
    summed_coefficients = lambda y0: jnp.sum(_singular_coefficients(fn, y0, 4))
    batch = jnp.stack([xs, near, xs + 2.0])
    return dict(
        value=fn(xs),
        jvp=jax.jvp(fn, (xs,), (jnp.ones_like(xs),)),
        grad=jax.grad(total)(xs),
        hessian=jax.jacfwd(jax.grad(total))(xs),
        grad_near=jax.grad(total)(near),
        vmap=(jax.vmap(fn)(batch), jax.vmap(jax.grad(total))(batch)),
        unbatched=(jnp.stack([fn(x) for x in batch]), jnp.stack([jax.grad(total)(x) for x in batch])),
        coefficients=_singular_coefficients(fn, xs),
        grad_coefficients=jax.grad(summed_coefficients)(xs),
        vmap_coefficients=jax.vmap(lambda y0: _singular_coefficients(fn, y0, 4))(batch),
        near_coefficients=_singular_coefficients(fn, near, 4),
        jvp_tower_coefficients=_singular_coefficients(fn, xs, 4, method="jvp"),
    )


_at_singular_point_jit = jax.jit(_at_singular_point, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _plain_at_singular_point(fn, xs):
    return jax.grad(lambda x: jnp.sum(fn(x)))(xs), _singular_coefficients(fn, xs, 4)


@pytest.mark.parametrize("name", list(SINGULAR))
def test_singular_point(name):
    f, plain, xs, value = SINGULAR[name]
    xs = jnp.asarray(xs)
    near = xs + 1e-3 * (1.0 if xs.ndim == 0 else jnp.array(V))
    r = _at_singular_point_jit(f, xs, near)
    zero = np.zeros_like(value)

    # value, jvp, grad and a second derivative: the documented choice, finite
    np.testing.assert_array_equal(f(xs), value)  # eagerly too
    np.testing.assert_array_equal(r["value"], value)
    np.testing.assert_array_equal(r["jvp"][0], value)
    np.testing.assert_array_equal(r["jvp"][1], zero)
    np.testing.assert_array_equal(r["grad"], np.zeros_like(xs))
    assert _finite(r["hessian"])
    # vmap over a batch with the singular point, a point near it and a regular one
    for batched, single in zip(r["vmap"], r["unbatched"]):
        np.testing.assert_allclose(batched, single, rtol=1e-15)
    np.testing.assert_array_equal(r["vmap"][0][0], value)
    # near the singular point: the exact derivative
    np.testing.assert_allclose(r["grad_near"], jax.grad(lambda x: jnp.sum(plain(x)))(near), rtol=1e-13)

    # Taylor coefficients: y^[1] = f(0) + f(0), all higher ones 0; grad through the rule
    expected = np.zeros((SING_ORDER + 1,) + xs.shape)
    expected[1] = 2 * np.asarray(value)
    np.testing.assert_array_equal(r["coefficients"], expected)
    np.testing.assert_array_equal(r["grad_coefficients"], np.ones_like(xs))  # only y^[0] = y0 depends on y0
    # ... the same as the explicit JVP differentiated repeatedly (method="jvp")
    np.testing.assert_array_equal(r["jvp_tower_coefficients"], expected[:5])
    # ... and under vmap, with the singular point in the batch
    batched = r["vmap_coefficients"]
    assert _finite(batched)
    np.testing.assert_array_equal(batched[0], expected[:5])
    np.testing.assert_allclose(batched[1], r["near_coefficients"], rtol=1e-14)

    # plain jax.numpy: NaN or inf in the gradient or the Taylor coefficients
    assert not _finite(_plain_at_singular_point(plain, xs))


def test_integer_powers_are_exact_at_zero():
    # pow with an integer exponent >= 0 is a polynomial: its series at 0 exists and is exact.
    vf = lambda t, y, a: stable.pow(t, 3.0) + stable.pow(y, 2)
    c = taylorode.taylor_coefficients(vf, 0.0, jnp.array(0.0), None, 5)
    np.testing.assert_array_equal(c, [0, 0, 0, 0, 0.25, 0])
    assert float(jax.grad(lambda x: stable.pow(x, 3.0))(0.0)) == 0.0
    assert float(jax.grad(lambda x: stable.pow(x, 1.0))(0.0)) == 1.0


def test_safe_div_gradients_away_from_zero():
    a, b = jnp.array([1.5, 2.0]), jnp.array([0.0, 4.0])
    ga, gb = jax.grad(lambda a, b: jnp.sum(stable.safe_div(a, b)), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(ga, [0.0, 0.25], rtol=1e-15)
    np.testing.assert_allclose(gb, [0.0, -2.0 / 16], rtol=1e-15)
    # broadcasting as jnp.true_divide
    np.testing.assert_allclose(stable.safe_div(a, 2.0), a / 2.0)


def test_norm_axes():
    x = np.arange(12.0).reshape(3, 4) - 4.0
    x[:, 0] = 0.0  # a zero column
    for axis in (0, 1, -1, (0, 1), None):
        for keepdims in (False, True):
            np.testing.assert_allclose(
                jax.jit(lambda x: stable.norm(x, axis=axis, keepdims=keepdims))(x),
                np.linalg.norm(x, axis=axis, keepdims=keepdims) if axis is not None
                else np.sqrt(np.sum(x * x, keepdims=keepdims)),
                rtol=1e-15,
            )
    n, g = jax.jit(lambda x: (stable.normalize(x, axis=0), jax.grad(lambda x: jnp.sum(stable.norm(x, axis=0)))(x)))(x)
    np.testing.assert_array_equal(n[:, 0], 0.0)
    np.testing.assert_allclose(np.sum(n[:, 1:] ** 2, axis=0), 1.0, rtol=1e-15)
    np.testing.assert_array_equal(g[:, 0], 0.0)
    np.testing.assert_allclose(g[:, 1:], x[:, 1:] / np.linalg.norm(x[:, 1:], axis=0, keepdims=True), rtol=1e-15)
    # Taylor coefficients along axis 0 of a matrix state, against the plain jvp tower
    vf = lambda t, y, a: -stable.norm(y, axis=0, keepdims=True) * y
    vf_plain = lambda t, y, a: -jnp.linalg.norm(y, axis=0, keepdims=True) * y
    y0 = jnp.asarray(x).at[:, 0].set(1e-3)
    c = jax.jit(lambda y0: taylorode.taylor_coefficients(vf, 0.0, y0, None, 4))(y0)
    ref = jax.jit(lambda y0: taylorode.taylor_coefficients(vf_plain, 0.0, y0, None, 4, method="jvp"))(y0)
    np.testing.assert_allclose(c, ref, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(ref))))


def test_softabs_eps_is_differentiable():
    g = jax.grad(stable.softabs, argnums=(0, 1))(jnp.array(0.3), jnp.array(0.4))
    np.testing.assert_allclose(g, (0.6, 0.8), rtol=1e-15)
    g = jax.grad(stable.softabs, argnums=(0, 1))(jnp.array(0.0), jnp.array(0.4))
    np.testing.assert_allclose(g, (0.0, 1.0), rtol=1e-15)


# --- static parameters ------------------------------------------------------------------


def test_static_parameters_are_cached():
    x = jnp.array([0.5, 1.0])

    def calls():
        stable.pow(x, 0.3)
        stable.pow(x, np.float64(0.3))
        stable.norm(x, axis=0)
        stable.normalize(x, axis=(0,))
        jax.jit(lambda x: stable.norm(x) + stable.pow(x[0], 0.3))(x)

    # The first round may make rules (unless earlier tests did: `norm(x)`'s axis=-1 is
    # its own function); repeating the same calls must not make more.
    calls()
    before = len(CUSTOM_RULES)
    for _ in range(3):
        calls()
    assert len(CUSTOM_RULES) == before
    # the same function, hence the same jaxpr, every time (what caches key on)
    jaxpr = lambda: str(jax.make_jaxpr(lambda x: stable.norm(x, axis=0) + stable.pow(x, 0.3))(x))
    assert jaxpr() == jaxpr()


def test_traced_exponent_is_rejected():
    with pytest.raises(TypeError, match="static number"):
        jax.jit(lambda x, a: stable.pow(x, a))(1.0, 0.5)
    with pytest.raises(ValueError, match="finite"):
        stable.pow(1.0, float("nan"))


# --- float32 -----------------------------------------------------------------------------


def _all_functions(t, y, a):
    s = y[0]
    scalars = (
        stable.sqrt(s) + stable.cbrt(s) + stable.pow(s, 0.7) + stable.pow(s, -1.5)
        + stable.log(s) + stable.softabs(s, 0.1) + stable.safe_div(1.0, s) + stable.norm(y)
    )
    return stable.normalize(y) - 0.1 * scalars


def test_float32():
    for x in (jnp.array(0.0, jnp.float32), jnp.array([0.0, 0.5], jnp.float32)):
        vector_only = (stable.norm, stable.normalize) if x.ndim else ()
        for f in (
            stable.sqrt, stable.cbrt, stable.log, *vector_only,
            lambda x: stable.pow(x, 0.7), lambda x: stable.pow(x, -1.5), lambda x: stable.pow(x, 3.0),
            lambda x: stable.softabs(x, 0.1), lambda x: stable.safe_div(x, x),
            lambda x: stable.safe_div(1.0, x),
        ):
            out, tangent, grad = jax.eval_shape(
                lambda x: (*jax.jvp(f, (x,), (jnp.ones_like(x),)), jax.grad(lambda x: jnp.sum(f(x)))(x)), x
            )
            assert out.dtype == tangent.dtype == grad.dtype == jnp.float32
    coeffs = jax.jit(lambda t0, y0: taylorode.taylor_coefficients(_all_functions, t0, y0, None, 4))
    y32 = jnp.array([0.4, 0.2, -0.3], jnp.float32)
    c32 = coeffs(jnp.float32(0.0), y32)
    c64 = coeffs(0.0, y32.astype(jnp.float64))
    assert c32.dtype == jnp.float32
    np.testing.assert_allclose(c32, c64, rtol=2e-4, atol=2e-4 * float(jnp.max(jnp.abs(c64))))
    c0 = coeffs(jnp.float32(0.0), jnp.zeros(3, jnp.float32))
    assert c0.dtype == jnp.float32 and _finite(c0)
    # at y = 0 only log (log(tiny)) and softabs (eps) are nonzero
    np.testing.assert_allclose(c0[1], -0.1 * (math.log(np.finfo(np.float32).tiny) + 0.1), rtol=1e-6)


# --- solves -------------------------------------------------------------------------------


def _solve(vf, y0, t1, dt0=None):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(vf), taylorode.Taylor(order=8), 0.0, t1, dt0, y0,
        stepsize_controller=taylorode.TaylorController(rtol=1e-10, atol=1e-10),
        saveat=diffrax.SaveAt(t1=True), max_steps=256,
    ).ys[-1]


T_TANK = 1.2


@jax.jit
@jax.value_and_grad
def _tank(y0):
    # A leaking Torricelli tank y' = -(sqrt(y) + y): with u = sqrt(y), u' = -(1 + u)/2,
    # so y = ((1 + sqrt(y0)) e^(-t/2) - 1)^2 until it empties at t = 2 log(1 + sqrt(y0)).
    return _solve(lambda t, y, a: -(stable.sqrt(y) + y), y0, T_TANK)


def _tank_exact(y0, t):
    return ((1 + math.sqrt(y0)) * math.exp(-t / 2) - 1) ** 2


def test_torricelli_tank_solve_and_gradient():
    y0 = 1.0  # empties at 2 log 2 = 1.386 > T_TANK
    y1, g = map(float, _tank(jnp.array(y0)))
    np.testing.assert_allclose(y1, _tank_exact(y0, T_TANK), rtol=1e-9)
    u = math.sqrt(_tank_exact(y0, T_TANK))
    np.testing.assert_allclose(g, u * math.exp(-T_TANK / 2) / math.sqrt(y0), rtol=1e-8)
    h = 1e-5
    fd = (float(_tank(jnp.array(y0 + h))[0]) - float(_tank(jnp.array(y0 - h))[0])) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    # An empty tank stays empty, and the gradient is finite: that of y' = -y, since
    # sqrt has derivative 0 at 0. (With plain jnp.sqrt the Taylor coefficients at y = 0
    # are NaN, every step is rejected and the solve fails at max_steps.) The step is sized for
    # y = 0, whose coefficients vanish, so it spans the whole interval: the gradient is
    # exp(-T) to the step's order-8 truncation.
    y1, g = _tank(jnp.array(0.0))
    assert float(y1) == 0.0
    np.testing.assert_allclose(g, math.exp(-T_TANK), rtol=1e-4)


def test_kepler_and_vertical_throw_solve():
    # One state, two problems (one compilation): Kepler written with norm and pow, and
    # a vertical throw with quadratic drag made analytic by softabs,
    # v' = -g - c softabs(v) v, through its apex v = 0.
    g, c, eps = 9.81, 0.3, 0.05

    def field(t, y, args):
        q, p, v = y[:2], y[2:4], y[5]
        accel = -q * stable.pow(stable.norm(q, keepdims=True), -3.0)
        drag = jnp.stack([v, -g - c * stable.softabs(v, eps) * v])
        return jnp.concatenate([p, accel, drag])

    e, t1 = 0.5, 2.0
    y0 = jnp.concatenate([jnp.asarray(kepler_y0(e)), jnp.array([0.0, 5.0])])
    # (a first step dt0 spares the controller's own coefficient set at y0: less to compile)
    y1 = jax.jit(lambda y0: _solve(field, y0, t1, dt0=0.05))(y0)
    np.testing.assert_allclose(y1[:4], kepler_exact(t1, e), atol=1e-8)
    ref = solve_ivp(
        lambda t, y: [y[1], -g - c * np.hypot(y[1], eps) * y[1]], (0.0, t1), [0.0, 5.0],
        method="DOP853", rtol=1e-13, atol=1e-13,
    ).y[:, -1]
    np.testing.assert_allclose(y1[4:], ref, rtol=1e-8, atol=1e-8)
