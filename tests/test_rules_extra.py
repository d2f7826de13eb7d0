"""Recurrence rules for reduce_prod, cumprod, sort, cummax and cummin, against the jvp
tower (an independent reference), and a solve against scipy."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import taylorode
from jax import lax
from scipy.integrate import solve_ivp


def _close(f, t0, y0, args=None, order=5, rtol=1e-12):
    rec = jax.jit(lambda y: taylorode.taylor_coefficients(f, t0, y, args, order))(y0)
    ref = jax.jit(lambda y: taylorode.taylor_coefficients(f, t0, y, args, order, method="jvp"))(y0)
    rec, ref = np.asarray(rec), np.asarray(ref)
    assert rec.shape == ref.shape == (order + 1,) + np.shape(y0)
    np.testing.assert_allclose(rec, ref, rtol=rtol, atol=rtol * np.max(np.abs(ref)))
    return rec


Y5 = jnp.array([0.3, -0.7, 1.1, 0.45, 0.5])
Y5_ZERO = jnp.array([0.3, -0.7, 1.1, 0.0, 0.5])
Y23 = jnp.array([[0.3, -0.7, 1.1], [0.2, 0.9, -0.4]])


# --- reduce_prod and cumprod ------------------------------------------------------------


@pytest.mark.parametrize("y0", [Y5, Y5_ZERO, jnp.array([0.0, 0.0, 0.6])], ids=["nonzero", "one_zero", "two_zeros"])
def test_prod_of_state(y0):
    # Elements exactly zero at the expansion point: exact products, no logarithms.
    c = jnp.linspace(-1.0, 1.0, y0.shape[0])
    coeffs = _close(lambda t, y, args: c * jnp.prod(y) + y * jnp.prod(y + t), 0.2, y0)
    assert np.all(np.isfinite(coeffs))


@pytest.mark.parametrize("axis", [0, 1, (0, 1)])
def test_prod_over_axes_of_2d(axis):
    def f(t, y, args):
        return jnp.prod(y + 0.1 * t, axis=axis, keepdims=True) * y

    _close(f, 0.1, Y23)


def test_cumprod_and_reversed():
    def f(t, y, args):
        return jnp.cumprod(y + t) - lax.cumprod(t * y, reverse=True)

    _close(f, 0.3, Y5_ZERO)


# --- sort ------------------------------------------------------------------------------


def test_sorted_values_times_constant():
    c = jnp.arange(1.0, 6.0)
    _close(lambda t, y, args: jnp.sort(y) * c, 0.0, Y5, order=6)


def test_sort_descending_2d_and_tie():
    # A 2-D sort along axis 0 (batched permutation) and a tie at the expansion point
    # (the first row's columns 1 and 2 hold the same value): stable order, as JAX's JVP.
    y0 = jnp.array([[0.3, 0.5, 0.5], [0.2, 0.9, -0.4], [0.7, -0.1, 0.0]])

    def f(t, y, args):
        return jnp.sort(y * y + t, axis=0, descending=True) * y + jnp.sort(y, axis=1)

    _close(f, 0.1, y0)


def test_argsort_as_index():
    # argsort is integer, piecewise constant: only the gathered values have a series.
    def f(t, y, args):
        idx = jnp.argsort(jnp.cos(y))
        return -y[idx] * jnp.arange(1.0, 6.0) + t * y

    _close(f, 0.2, Y5)


def test_lax_sort_two_operands():
    def f(t, y, args):
        keys, vals = lax.sort((-y, y * y + t), num_keys=1)
        return keys * vals - y

    _close(f, 0.3, Y5)


def test_lax_sort_two_keys_with_integer_operand():
    # Two float keys (the first tied at order 0 for the two middle elements), and an
    # integer payload whose sorted copy indexes the state.
    y0 = jnp.array([0.3, -0.7, 0.7, 0.45])

    def f(t, y, args):
        k1, k2, idx = lax.sort((y * y, y + t, jnp.arange(4)), num_keys=2)
        return k1 * k2 + y[idx]

    _close(f, 0.0, y0)


# --- cummax / cummin --------------------------------------------------------------------


def test_cummax_cummin():
    def f(t, y, args):
        return lax.cummax(y * y + t) - lax.cummin(t * y, reverse=True)

    _close(f, 0.3, Y5)


def test_cummax_tie_shares_like_jvp():
    # All elements equal at the expansion point: JAX's JVP (a scan of max) shares
    # coefficients equally at ties; the rule does the same.
    _close(lambda t, y, args: lax.cummax(0.0 * y + y[0] * y[1] + y), 0.0, jnp.zeros(4))


# --- program size, transforms, solve -----------------------------------------------------


def test_program_grows_linearly(monkeypatch):
    # Each rule adds a fixed number of operations per order. (Sums over arrays of a few
    # elements, and sums of up to `WRITTEN_OUT_TERMS` terms, are written out term by
    # term, by design, so those are disabled here.)
    from taylorode._coefficients import _series

    monkeypatch.setattr(_series, "UNSTACKED_SIZE", 0)
    monkeypatch.setattr(_series, "WRITTEN_OUT_TERMS", _series.UNSTACKED_TERMS)

    def f(t, y, args):
        return jnp.prod(y) - jnp.sort(y) * lax.cumprod(y) + lax.cummax(y)

    def size(order):
        fn = lambda y: taylorode.taylor_coefficients(f, 0.0, y, None, order)
        return len(jax.make_jaxpr(fn)(Y5).jaxpr.eqns)

    s8, s16, s24 = size(8), size(16), size(24)
    assert s24 - s16 == s16 - s8


def test_grad_and_vmap_through_new_rules():
    def f(t, y, args):
        return jnp.prod(y) - jnp.sort(y * args)

    def loss(method):
        return lambda y, a: jnp.sum(taylorode.taylor_coefficients(f, 0.0, y, a, 3, method=method) ** 2)

    a = jnp.array(1.5)
    g = jax.jit(jax.grad(loss("recurrence"), argnums=(0, 1)))(Y5_ZERO, a)
    g_ref = jax.jit(jax.grad(loss("jvp"), argnums=(0, 1)))(Y5_ZERO, a)
    for x, y in zip(g, g_ref):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
    batch = jnp.stack([Y5, Y5_ZERO])
    vm = jax.jit(jax.vmap(lambda y: taylorode.taylor_coefficients(f, 0.0, y, a, 3)))(batch)
    for i in range(2):
        ref = taylorode.taylor_coefficients(f, 0.0, batch[i], a, 3, method="jvp")
        np.testing.assert_allclose(vm[i], ref, rtol=1e-12, atol=1e-12)


def test_solve_with_prod_matches_scipy():
    c = np.array([1.0, -0.5, 0.25])

    def f(t, y, args):
        return jnp.asarray(c) * jnp.prod(y) - 0.3 * y + 0.2 * jnp.roll(y, 1)

    y0 = np.array([0.5, 1.0, -0.8])
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f), taylorode.Taylor(order=8), 0.0, 2.0, 0.1, jnp.asarray(y0),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
    )
    ref = solve_ivp(
        lambda t, y: c * np.prod(y) - 0.3 * y + 0.2 * np.roll(y, 1), (0.0, 2.0), y0,
        method="DOP853", rtol=1e-13, atol=1e-13,
    )
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), ref.y[:, -1], rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("fn", [jnp.logaddexp, jnp.logaddexp2], ids=lambda f: f.__name__)
def test_logaddexp_at_a_tie_matches_its_custom_jvp(fn):
    """JAX's logaddexp is a custom_jvp whose primal code (max plus log1p of exp of
    minus abs) has kinks that cancel where its arguments tie; the series must be the
    smooth function's, as the jvp tower (which uses the custom JVP) gives."""

    def field(t, y, args):
        return fn(y, y**2)

    y0 = jnp.array([0.0, 0.5, -1.0])  # a tie at the first entry
    ours = taylorode.taylor_coefficients(field, 0.0, y0, None, 8, method="recurrence")
    tower = taylorode.taylor_coefficients(field, 0.0, y0, None, 8, method="jvp")
    np.testing.assert_allclose(ours, tower, rtol=1e-12, atol=1e-14)
