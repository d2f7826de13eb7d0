"""Whole solves of small vector fields built from the operations that the recurrence
engine's later rules cover (convolutions, FFTs, windowed maxima, complex conjugates,
the gamma function family, erfinv, the scaled Bessel functions), each against an
independent reference: scipy's DOP853 at tolerance 1e-13 on the same field written with
NumPy/SciPy (split at switches where their time is known), or the exact solution.
"""

import diffrax
import jax
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np
import pytest
import scipy.special as sps
from jax import lax
from scipy.integrate import solve_ivp

import taylorode


TOL = 1e-8


def _taylor(field, t1, y0, order=8):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field), taylorode.Taylor(order=order), 0.0, t1, None, y0,
        stepsize_controller=taylorode.TaylorController(rtol=1e-10, atol=1e-10),
    )


def _scipy(field, t1, y0, breaks=()):
    """DOP853 at 1e-13, restarted at each of `breaks` (the field's known switches)."""
    y = np.asarray(y0)
    edges = [0.0, *breaks, t1]
    for a, b in zip(edges[:-1], edges[1:]):
        y = solve_ivp(field, (a, b), y, method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
    return y


def _error(sol, ref):
    return np.max(np.abs(np.asarray(sol.ys[-1]) - ref))


def test_reaction_diffusion_with_convolve():
    # Method of lines: u' = u_xx + u (1 - u), the Laplacian as a convolution with the
    # stencil [1, -2, 1] / dx^2 ('same' pads with zeros: Dirichlet boundaries).
    n, dx = 6, 1 / 7
    stencil = np.array([1.0, -2.0, 1.0]) / dx**2
    x = dx * np.arange(1, n + 1)
    u0 = np.sin(np.pi * x)

    def field(t, u, args):
        return 0.1 * jnp.convolve(u, stencil, mode="same") + u * (1 - u)

    def ref_field(t, u):
        return 0.1 * np.convolve(u, stencil, mode="same") + u * (1 - u)

    err = _error(_taylor(field, 0.5, jnp.asarray(u0)), _scipy(ref_field, 0.5, u0))
    assert err < TOL, err


def test_spectral_burgers_with_rfft():
    # Viscous Burgers on the circle, derivatives in Fourier space:
    # u' = -u u_x + nu u_xx, u_x = irfft(i k rfft(u)).
    n, nu = 8, 0.2
    k = np.arange(n // 2 + 1)
    x = 2 * np.pi * np.arange(n) / n
    u0 = 0.5 * np.sin(x) + 0.2 * np.cos(2 * x)

    def field(t, u, args):
        uh = jnp.fft.rfft(u)
        ux = jnp.fft.irfft(1j * k * uh, n=n)
        uxx = jnp.fft.irfft(-(k**2) * uh, n=n)
        return -u * ux + nu * uxx

    def ref_field(t, u):
        uh = np.fft.rfft(u)
        return -u * np.fft.irfft(1j * k * uh, n=n) + nu * np.fft.irfft(-(k**2) * uh, n=n)

    with jax.numpy_dtype_promotion("standard"):  # i k and -k^2 times complex arrays
        sol = _taylor(field, 1.0, jnp.asarray(u0))
    assert _error(sol, _scipy(ref_field, 1.0, u0)) < TOL


def test_special_functions_and_a_bessel_kink():
    # gammaln, digamma, polygamma, erfinv, i0e and i1e. y2 = 0.4 - t crosses 0 at
    # t = 0.4, where i0e and i1e have a kink (from exp(-|x|)): the solve must end a step
    # there.
    def field(t, y, args):
        y0, y1, y2, y3 = y
        return jnp.stack([
            jss.gammaln(1 + y1**2) - 0.5 * y0,
            jss.erfinv(0.5 * jnp.tanh(y0)) - 0.2 * y1 + 0.1 * jss.polygamma(1, 2 + y1**2),
            -jnp.ones_like(y2),
            jss.i0e(y2) + jss.i1e(y2) * y1 + 0.1 * jss.digamma(1.5 + y0**2),
        ])

    def ref_field(t, y):
        y0, y1, y2, y3 = y
        return np.array([
            sps.gammaln(1 + y1**2) - 0.5 * y0,
            sps.erfinv(0.5 * np.tanh(y0)) - 0.2 * y1 + 0.1 * sps.polygamma(1, 2 + y1**2),
            -1.0,
            sps.i0e(y2) + sps.i1e(y2) * y1 + 0.1 * sps.digamma(1.5 + y0**2),
        ])

    y0 = np.array([0.3, -0.5, 0.4, 0.0])
    sol = _taylor(field, 1.0, jnp.asarray(y0))
    assert _error(sol, _scipy(ref_field, 1.0, y0, breaks=(0.4,))) < TOL


def test_nonlinear_schroedinger_with_conj():
    # A discrete nonlinear Schrödinger chain, |psi|^2 written as psi conj(psi):
    # psi' = i (psi_{n+1} + psi_{n-1} + psi conj(psi) psi).
    def field(t, psi, args):
        return 1j * (jnp.roll(psi, 1) + jnp.roll(psi, -1) + psi * jnp.conj(psi) * psi)

    def ref_field(t, psi):
        return 1j * (np.roll(psi, 1) + np.roll(psi, -1) + psi * np.conj(psi) * psi)

    psi0 = np.array([0.6 + 0.1j, -0.2 + 0.4j, 0.1 - 0.3j, 0.5j])
    # Under the suite's strict promotion (the solver keeps the complex state and the
    # real time and tolerances apart); diffrax warns about complex states.
    with pytest.warns(UserWarning, match="Complex dtype"):
        sol = _taylor(field, 1.0, jnp.asarray(psi0))
    assert _error(sol, _scipy(ref_field, 1.0, psi0)) < TOL


def test_windowed_max_and_min_switch():
    # a = t and b = 0.5 - t cross at t = 1/4; c' = max(a, b) by a max-pool
    # (reduce_window_max), d' = min(a, b, 0.3) by a windowed min with initial value 0.3
    # (a generic reduce_window). Exact: c(1) = 9/16, d(1) = -1/16, if the steps end
    # where the windows' extremum changes hands.
    def field(t, y, args):
        pair = y[:2]
        top = lax.reduce_window(pair, -jnp.inf, lax.max, (2,), (1,), "VALID")
        low = lax.reduce_window(pair, 0.3, lax.min, (2,), (1,), "VALID")
        return jnp.concatenate([jnp.array([1.0, -1.0]), top, low])

    sol = _taylor(field, 1.0, jnp.array([0.0, 0.5, 0.0, 0.0]))
    exact = np.array([1.0, -0.5, 9 / 16, -1 / 16])
    assert _error(sol, exact) < TOL


def test_a_windowed_sum_is_not_a_switch():
    # The engines that cannot see switches warn of them; a generic reduce_window with
    # `add` (an initial value that is not the identity) is smooth, one with `max` is not.
    import warnings

    for reducer, switches in ((lax.add, False), (lax.max, True)):
        def field(t, y, args, reducer=reducer):
            return jnp.pad(lax.reduce_window(y, 0.5, reducer, (2,), (1,), "VALID"), (0, 1))

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            diffrax.diffeqsolve(
                diffrax.ODETerm(field), taylorode.Taylor(order=3, method="jvp"), 0.0, 0.1, 0.1, jnp.ones(3)
            )
        warned = any(issubclass(w.category, taylorode.SwitchWarning) for w in caught)
        assert warned == switches, reducer
