"""Rules that were silently wrong, against the jvp tower (an independent reference):
the remainder (d/dx (x mod c) = 1) and the modulus of a complex state."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import taylorode


def _both(f, t0, y0, order=6):
    rec = jax.jit(lambda y: taylorode.taylor_coefficients(f, t0, y, None, order))(y0)
    ref = jax.jit(lambda y: taylorode.taylor_coefficients(f, t0, y, None, order, method="jvp"))(y0)
    return np.asarray(rec), np.asarray(ref)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda x: jnp.mod(x + np.pi, 2 * np.pi) - np.pi,
        lambda x: jnp.fmod(x, 0.7),
        lambda x: jnp.remainder(-x, 0.9),
        lambda x: jnp.mod(x, 0.5 + 0.1 * x**2),  # a divisor that moves too
    ],
    ids=["mod", "fmod", "remainder", "moving_divisor"],
)
def test_remainder_against_jvp_tower(wrap):
    def pendulum(t, y, args):
        theta, omega = y
        return jnp.stack([omega, -jnp.sin(wrap(theta)) + 0.3 * wrap(theta + t)])

    rec, ref = _both(pendulum, 0.1, jnp.array([2.9, 1.3]))
    np.testing.assert_allclose(rec, ref, rtol=1e-11, atol=1e-12)


def test_wrapped_pendulum_solves_like_the_unwrapped_one():
    # The angle wrapped into [-pi, pi) (a switch where it wraps is a separate matter:
    # here the solve stays inside one branch).
    def wrapped(t, y, args):
        return jnp.stack([y[1], -jnp.sin(jnp.mod(y[0] + np.pi, 2 * np.pi) - np.pi)])

    def plain(t, y, args):
        return jnp.stack([y[1], -jnp.sin(y[0])])

    def solve(f):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(f), taylorode.Taylor(), 0.0, 1.0, None, jnp.array([0.5, 0.2]),
            stepsize_controller=taylorode.TaylorController(rtol=1e-10, atol=1e-10),
        ).ys[-1]

    np.testing.assert_allclose(solve(wrapped), solve(plain), rtol=1e-12)


def test_complex_modulus_against_jvp_tower():
    # Discrete nonlinear Schrödinger: i psi' = -(psi_{n+1} + psi_{n-1}) - |psi|^2 psi.
    def dnls(t, psi, args):
        lap = jnp.roll(psi, 1) + jnp.roll(psi, -1)
        return 1j * (lap + (jnp.abs(psi) ** 2).astype(psi.dtype) * psi)

    psi0 = jnp.array([0.3 + 0.1j, -0.2 + 0.5j, 0.7 - 0.4j])
    rec, ref = _both(dnls, 0.0, psi0)
    np.testing.assert_allclose(rec, ref, rtol=1e-11, atol=1e-12)
