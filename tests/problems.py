"""Test problems with exact solutions, shared by the test files."""

import jax.numpy as jnp
import numpy as np
import taylorode


def kepler(t, y, args):
    q, p = y[:2], y[2:]
    r3 = jnp.sum(q**2) ** 1.5
    return jnp.concatenate([p, -q / r3])


def kepler_y0(e):
    """Pericentre start of a unit-semi-major-axis orbit (period 2*pi)."""
    return np.array([1 - e, 0.0, 0.0, np.sqrt((1 + e) / (1 - e))])


def kepler_exact(t, e):
    """The exact Kepler orbit from `kepler_y0(e)`, by Newton on Kepler's equation."""
    t = np.asarray(t, dtype=np.float64)
    M = np.mod(t, 2 * np.pi)
    E = M + e * np.sin(M)
    for _ in range(50):
        E = E - (E - e * np.sin(E) - M) / (1 - e * np.cos(E))
    b = np.sqrt(1 - e**2)
    r = 1 - e * np.cos(E)
    Edot = 1 / r
    return np.stack(
        [np.cos(E) - e, b * np.sin(E), -np.sin(E) * Edot, b * np.cos(E) * Edot], axis=-1
    )


def oscillator(t, y, args):
    """y'' = -w^2 y as a dict state, w = args."""
    return {"x": y["v"], "v": -(args**2) * y["x"]}


@taylorode.custom_taylor
def cube(x):
    """x^3 with its own Taylor rule (two Cauchy products), for custom-rule tests."""
    return x * x * x


@cube.def_taylor
def _(k, inputs, output):
    (x,) = inputs
    x2 = [taylorode.series.cauchy(x, x, j) for j in range(k + 1)]
    return taylorode.series.cauchy(x2, x, k)


def robertson(t, y, args):
    """Robertson's chemical kinetics (ROBER), k = (0.04, 1e4, 3e7)."""
    return jnp.stack([
        -0.04 * y[0] + 1e4 * y[1] * y[2],
        0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
        3e7 * y[1] ** 2,
    ])


def robertson_np(t, y):
    """`robertson` in NumPy, with its Jacobian, for fast scipy references."""
    return np.array([
        -0.04 * y[0] + 1e4 * y[1] * y[2],
        0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
        3e7 * y[1] ** 2,
    ])


def robertson_jac(t, y):
    return np.array([
        [-0.04, 1e4 * y[2], 1e4 * y[1]],
        [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
        [0.0, 6e7 * y[1], 0.0],
    ])
