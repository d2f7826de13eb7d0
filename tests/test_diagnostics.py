"""`stiffness_diagnostics`: the Taylor radius and explicit step against exact series
coefficients, and the Jacobian's spectrum against systems with known eigenvalues."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from taylorode import stiffness_diagnostics, StiffnessDiagnostics


def exact_radius(norms_by_order, scale, order):
    """Jorba & Zou's `min_j (N / ||y^[j]||)^(1/j)` over j in {order-1, order}, in
    Python floats from exact coefficient norms."""
    return min((scale / norms_by_order[j]) ** (1.0 / j) for j in (order - 1, order))


def linear_radius(A, y, order):
    """The radius for y' = A y at state y: there y^[j] = A^j y / j! exactly."""
    norms = {
        j: np.max(np.abs(np.linalg.matrix_power(A, j) @ y)) / math.factorial(j)
        for j in (order - 1, order)
    }
    return exact_radius(norms, max(1.0, np.max(np.abs(y))), order)


def rotation(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_linear_system_spectrum_and_radius():
    # A = Q diag(-1, -1000) Q^T with Q orthogonal: eigenvalues -1 and -1000, not on
    # the diagonal of A.
    Q = rotation(0.3)
    A = Q @ np.diag([-1.0, -1000.0]) @ Q.T
    y0 = np.array([1.0, 2.0])
    # Times inside the fast transient (e^{-1000 t} >= e^{-5}): once it has decayed to
    # rounding level, A^j y is dominated by the rounding error in y along the fast
    # eigenvector, and the radius is no longer a well-conditioned function of y.
    ts = np.array([0.0, 1e-3, 5e-3])
    ys = np.stack([scipy.linalg.expm(A * t) @ y0 for t in ts])
    order = 6
    A_jax = jnp.asarray(A)
    d = stiffness_diagnostics(lambda t, y, args: A_jax @ y, jnp.asarray(ts), jnp.asarray(ys), order=order)

    assert isinstance(d, StiffnessDiagnostics)
    assert d.eigenvalues.shape == (3, 2)
    for lam in np.asarray(d.eigenvalues):
        np.testing.assert_allclose(np.sort_complex(lam), [-1000.0, -1.0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(d.max_abs_eigenvalue, 1000.0, rtol=1e-12)
    np.testing.assert_allclose(d.stiffness_ratio, 1000.0, rtol=1e-10)
    np.testing.assert_allclose(d.stability_step, 1e-3, rtol=1e-12)
    # The radius from the exact coefficients A^j y / j! at each saved state.
    expected = [linear_radius(A, y, order) for y in ys]
    np.testing.assert_allclose(d.taylor_radius, expected, rtol=1e-10)
    np.testing.assert_allclose(d.ts, ts)


@pytest.mark.parametrize("y0", [1.0, 3.0, 0.01], ids=["y=1", "y=3", "y=0.01"])
def test_scalar_decay_radius_and_step(y0):
    # y' = -a y: y^[j] = y (-a)^j / j!, so rho = min_j (N / (|y| a^j / j!))^(1/j) with
    # N = max(1, |y|). For |y| >= 1 the |y| cancels; for |y| < 1 it does not.
    a, order, tol = 50.0, 8, 1e-8
    d = stiffness_diagnostics(
        lambda t, y, args: -a * y, jnp.array([0.0]), jnp.array([[y0]]), order=order, tol=tol
    )
    norms = {j: abs(y0) * a**j / math.factorial(j) for j in (order - 1, order)}
    rho = exact_radius(norms, max(1.0, abs(y0)), order)
    if abs(y0) >= 1:
        assert rho == pytest.approx(min((math.factorial(j) / a**j) ** (1 / j) for j in (order - 1, order)))
    np.testing.assert_allclose(d.taylor_radius, [rho], rtol=1e-12)
    # Jorba & Zou's step at tolerance tol, written out.
    p = order
    h = rho * tol ** (1 / p) * math.exp(-2 / p) * math.exp(-0.7 / (p - 1))
    np.testing.assert_allclose(d.explicit_step, [h], rtol=1e-12)
    np.testing.assert_allclose(d.eigenvalues, [[-a + 0j]], rtol=1e-12)
    # A single decaying mode: ratio 1 by definition.
    np.testing.assert_allclose(d.stiffness_ratio, [1.0])
    np.testing.assert_allclose(d.stability_step, [1 / a], rtol=1e-12)


def test_explicit_step_is_heyokas_rule_at_its_tolerance():
    # At tol = e^{-2(p-1)}, p is Jorba & Zou's optimal order, and the step is heyoka's
    # h = rho e^{-2} e^{-0.7/(p-1)}.
    p = 6
    tol = math.exp(-2 * (p - 1))
    assert max(2, math.ceil(-0.5 * math.log(tol) + 1)) == p
    d = stiffness_diagnostics(lambda t, y, args: -3.0 * y, jnp.array([0.0]), jnp.array([[1.0]]), order=p, tol=tol)
    np.testing.assert_allclose(
        d.explicit_step, d.taylor_radius * math.exp(-2) * math.exp(-0.7 / (p - 1)), rtol=1e-12
    )


def test_pole_radius():
    # y' = y^2, y(0) = 1: y = 1/(1 - t), a pole at t = 1. At t0 the coefficients are
    # y^[j] = y0^(j+1) with y0 = 1/(1 - t0), so rho = min_j (y0 / y0^(j+1))^(1/j)
    # = 1/y0 = 1 - t0 exactly: the distance to the pole.
    ts = jnp.array([0.0, 0.5, 0.75])
    ys = 1.0 / (1.0 - ts)
    d = stiffness_diagnostics(lambda t, y, args: y**2, ts, ys, order=20)
    np.testing.assert_allclose(d.taylor_radius, [1.0, 0.5, 0.25], rtol=1e-12)
    np.testing.assert_allclose(d.eigenvalues[:, 0], 2 * ys, rtol=1e-12)
    # A growing mode only: no decaying eigenvalue, ratio 1.
    np.testing.assert_allclose(d.stiffness_ratio, 1.0)


def test_pytree_state():
    # Two uncoupled oscillators with frequencies 1 and 3 in a dict state, against the
    # same system as one flat array: eigenvalues +-i, +-3i.
    omega = jnp.array([1.0, 3.0])

    def field(t, y, args):
        return {"q": y["p"], "p": -(args**2) * y["q"]}

    ts = jnp.array([0.0, 0.4])
    q = jnp.stack([jnp.cos(omega * t) for t in ts])
    p = jnp.stack([-omega * jnp.sin(omega * t) for t in ts])
    order = 5
    d = stiffness_diagnostics(field, ts, {"q": q, "p": p}, omega, order=order)

    assert d.eigenvalues.shape == (2, 4)
    for lam in np.asarray(d.eigenvalues):
        np.testing.assert_allclose(np.sort(lam.imag), [-3.0, -1.0, 1.0, 3.0], atol=1e-12)
        np.testing.assert_allclose(lam.real, 0.0, atol=1e-12)
    np.testing.assert_allclose(d.max_abs_eigenvalue, 3.0, rtol=1e-12)
    np.testing.assert_allclose(d.stability_step, 1 / 3, rtol=1e-12)
    # No eigenvalue with negative real part (up to rounding, which must not show up as
    # a huge ratio here: the real parts are exactly zero for this block structure).
    np.testing.assert_allclose(d.stiffness_ratio, 1.0)
    # Flattened as ravel_pytree does (dict keys sorted: "p" before "q").
    A = np.zeros((4, 4))
    A[0:2, 2:4] = -np.diag(np.asarray(omega) ** 2)
    A[2:4, 0:2] = np.eye(2)
    expected = [linear_radius(A, np.concatenate([p[i], q[i]]), order) for i in range(2)]
    np.testing.assert_allclose(d.taylor_radius, expected, rtol=1e-10)


def test_zero_and_polynomial_fields_give_infinite_radius():
    ts = jnp.array([0.0, 1.0])
    ys = {"a": jnp.array([[1.0, -2.0], [3.0, 0.0]]), "b": jnp.array([0.5, 0.0])}

    zero = stiffness_diagnostics(lambda t, y, args: {"a": 0.0 * y["a"], "b": 0.0 * y["b"]}, ts, ys, order=3)
    for leaf in (zero.taylor_radius, zero.explicit_step, zero.stability_step):
        assert np.all(np.isposinf(leaf))
    np.testing.assert_array_equal(zero.max_abs_eigenvalue, 0.0)
    np.testing.assert_array_equal(zero.stiffness_ratio, 1.0)
    np.testing.assert_array_equal(zero.eigenvalues, 0.0)

    # y' = (1, t): y is a polynomial of degree 2, so y^[3] = y^[4] = 0.
    def poly(t, y, args):
        return {"a": jnp.ones_like(y["a"]), "b": t * jnp.ones_like(y["b"])}

    d = stiffness_diagnostics(poly, ts, ys, order=4)
    assert np.all(np.isposinf(d.taylor_radius))
    assert not np.any(np.isnan(np.asarray(d.stiffness_ratio)))


def test_float32_state():
    ys = jnp.array([[1.0], [0.5]], dtype=jnp.float32)
    d = stiffness_diagnostics(lambda t, y, args: -4.0 * y, jnp.array([0.0, 1.0], jnp.float32), ys, order=4)
    assert d.taylor_radius.dtype == jnp.float32
    assert d.eigenvalues.dtype == jnp.complex64
    expected = [exact_radius({j: y * 4.0**j / math.factorial(j) for j in (3, 4)}, 1.0, 4) for y in (1.0, 0.5)]
    np.testing.assert_allclose(d.taylor_radius, expected, rtol=1e-5)


def test_invalid_arguments():
    field = lambda t, y, args: -y
    with pytest.raises(ValueError, match="at least 2"):
        stiffness_diagnostics(field, jnp.array([0.0]), jnp.array([[1.0]]), order=1)
    with pytest.raises(ValueError, match="leading axis"):
        stiffness_diagnostics(field, jnp.array([0.0, 1.0]), jnp.array([[1.0]]), order=3)
    with pytest.raises(ValueError, match="shape \\(N,\\)"):
        stiffness_diagnostics(field, jnp.array(0.0), jnp.array([[1.0]]), order=3)
    with pytest.raises(ValueError, match="positive"):
        stiffness_diagnostics(field, jnp.array([0.0]), jnp.array([[1.0]]), order=3, tol=0.0)
