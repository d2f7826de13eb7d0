"""Taylor coefficients against analytic series, and each method against the jvp tower."""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import taylorode

from .problems import kepler


@pytest.fixture(params=["jet", "recurrence"])
def method(request):
    return request.param


def _coeffs(vf, t0, y0, args, order, method="jet"):
    fn = jax.jit(
        lambda t0, y0, args: taylorode.taylor_coefficients(
            vf, t0, y0, args, order, method=method
        )
    )
    return fn(jnp.asarray(t0), y0, args)


def _assert_series(c, exact, scale, tol=1e-12):
    """|c_k - exact_k| <= tol * scale_k, with scale_k the natural size of term k."""
    c, exact, scale = map(np.asarray, (c, exact, scale))
    err = np.abs(c - exact) / scale
    assert err.max() <= tol, f"worst term {err.argmax()}: relative error {err.max():.2e}"


ORDER = 24


def test_exponential(method):
    # y' = y, y(0.3) = 2  =>  y^[k] = 2 / k!
    c = _coeffs(lambda t, y, a: y, 0.3, jnp.array(2.0), None, ORDER, method)
    exact = [2 / math.factorial(k) for k in range(ORDER + 1)]
    _assert_series(c, exact, exact)


def test_riccati(method):
    # y' = y^2, y(0) = 1/2  =>  y = 1/(2 - t), y^[k] = 2^-(k+1)
    c = _coeffs(lambda t, y, a: y**2, 0.0, jnp.array(0.5), None, ORDER, method)
    exact = [0.5 ** (k + 1) for k in range(ORDER + 1)]
    _assert_series(c, exact, exact)


def test_harmonic_oscillator_pytree(method):
    # x'' = -w^2 x, x(0) = 1, v(0) = 0  =>  x = cos(wt), v = -w sin(wt)
    w = 1.7
    f = lambda t, y, w: {"x": y["v"], "v": -(w**2) * y["x"]}
    c = _coeffs(f, 0.0, {"x": jnp.array(1.0), "v": jnp.array(0.0)}, w, ORDER, method)
    k = np.arange(ORDER + 1)
    fact = np.array([math.factorial(i) for i in k], dtype=float)
    cos_c = np.where(k % 2 == 0, (-1.0) ** (k // 2) * w**k / fact, 0.0)
    # v = -w sin(wt): odd terms -w * (-1)^((k-1)/2) w^k / k!
    sin_c = np.where(k % 2 == 1, -w * (-1.0) ** ((k - 1) // 2) * w**k / fact, 0.0)
    scale = w ** (k + 1) / fact
    assert c["x"].shape == (ORDER + 1,)
    _assert_series(c["x"], cos_c, scale)
    _assert_series(c["v"], sin_c, scale)


def test_circular_kepler(method):
    # q = (cos t, sin t), p = (-sin t, cos t) expanded at t0 = 0.4.
    order, t0 = 20, 0.4
    y0 = jnp.array([np.cos(t0), np.sin(t0), -np.sin(t0), np.cos(t0)])
    c = _coeffs(kepler, t0, y0, None, order, method)
    exact = []
    for k in range(order + 1):
        # d^k/dt^k of (cos, sin, -sin, cos) at t0: phase shifts by k*pi/2.
        d = [np.cos(t0 + k * np.pi / 2), np.sin(t0 + k * np.pi / 2)]
        exact.append([d[0], d[1], np.cos(t0 + (k + 1) * np.pi / 2), np.sin(t0 + (k + 1) * np.pi / 2)])
    fact = np.array([math.factorial(k) for k in range(order + 1)], dtype=float)[:, None]
    exact = np.array(exact) / fact
    # Rounding grows about 3x per order here, for jet and jvp alike: r^2 is constant
    # on a circular orbit, so each of its Cauchy products cancels O(2^k / k!) terms
    # to zero. Allow eps * 3.5^k on the derivative scale (observed 3e-8 at k = 20).
    scale = 3.5 ** np.arange(order + 1)[:, None] / fact
    assert c.shape == (order + 1, 4)
    _assert_series(c, exact, scale, tol=1e-15)


def test_non_autonomous_against_mpmath(method):
    # y' = -2 t y  =>  y = exp(-t^2) * exp(t0^2) * y0; expanded at t0 = 0.5.
    order, t0 = 20, 0.5
    c = _coeffs(lambda t, y, a: -2 * t * y, t0, jnp.array(np.exp(-(t0**2))), None, order, method)
    mpmath.mp.dps = 40
    exact = [float(x) for x in mpmath.taylor(lambda t: mpmath.exp(-(t**2)), t0, order)]
    scale = np.maximum(np.abs(exact), 1.0 / np.array([math.factorial(k // 2) for k in range(order + 1)]))
    _assert_series(c, exact, scale)


def test_order_one_edge_case(method):
    f = lambda t, y, a: jnp.sin(y) + t
    y0 = jnp.array([0.3, -1.2])
    c = _coeffs(f, 0.7, y0, None, 1, method)
    np.testing.assert_allclose(c[0], y0, rtol=0, atol=0)
    np.testing.assert_allclose(c[1], f(0.7, y0, None), rtol=1e-15)


def _tuple_field(t, y, args):
    a, m = y
    return (jnp.cos(t) * a - m @ a, jnp.tanh(m) * a[None, :] + args)


FIELDS = {
    "nonautonomous-scalar": (lambda t, y, a: jnp.exp(-y) * jnp.sin(t) + y**3 / (1 + t**2), 0.2, jnp.array(0.8), None),
    "kepler": (kepler, 0.0, jnp.array([0.5, 0.0, 0.0, 1.7]), None),
    "tuple-of-arrays": (_tuple_field, 0.1, (jnp.array([0.5, -0.3]), jnp.array([[0.2, 0.1], [-0.4, 0.3]])), jnp.array(0.25)),
}


@pytest.mark.parametrize("name", list(FIELDS), ids=list(FIELDS))
def test_agrees_with_jvp(name, method):
    f, t0, y0, args = FIELDS[name]
    c = _coeffs(f, t0, y0, args, 6, method=method)
    cjvp = _coeffs(f, t0, y0, args, 6, method="jvp")
    for a, b in zip(jax.tree_util.tree_leaves(c), jax.tree_util.tree_leaves(cjvp)):
        assert a.shape == b.shape == (7,) + a.shape[1:]
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
