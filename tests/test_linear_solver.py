"""`taylorode.BandedLU`: banded LU with partial pivoting, as a lineax solver and as the
linear algebra of the implicit Taylor solvers."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

import taylorode
from taylorode._linear_solver import band_from_matvec, band_matvec, BandedFactors


def banded(rng, n, lower, upper, complex_=False, diagonal=0.0):
    """A random n x n matrix with bandwidths (lower, upper) (every entry in the band
    nonzero), plus `diagonal` on the diagonal."""
    A = rng.standard_normal((n, n))
    if complex_:
        A = A + 1j * rng.standard_normal((n, n))
    i, j = np.indices((n, n))
    A[(j - i > upper) | (i - j > lower)] = 0
    return A + diagonal * np.eye(n)


# (n, lower, upper, complex): every shape once, (2, 2) both real and complex.
CASES = [
    (40, 2, 2, False), (40, 2, 2, True), (40, 1, 3, False), (40, 3, 1, True), (25, 0, 0, True),
    (25, 0, 2, False), (25, 2, 0, True), (3, 2, 2, False), (1, 0, 0, False), (2, 3, 3, True),
]


@pytest.mark.parametrize("n,lower,upper,complex_", CASES)
def test_factor_and_solve_against_numpy(n, lower, upper, complex_):
    # Random bands (no diagonal dominance, so the pivoting matters), several right-hand
    # sides at once, against numpy's dense solve.
    rng = np.random.default_rng(n + 10 * lower + 100 * upper)
    A = banded(rng, n, lower, upper, complex_, diagonal=2.0)
    solver = taylorode.BandedLU(lower, upper)
    band = solver.band_of(lambda v: jnp.asarray(A) @ v, n, A.dtype)
    i = np.arange(n)[:, None]
    d = np.arange(-lower, upper + 1)[None, :]
    inside = (i + d >= 0) & (i + d < n)
    expected = np.where(inside, A[i, np.clip(i + d, 0, n - 1)], 0)
    np.testing.assert_array_equal(np.asarray(band), expected)
    factors = solver.factor(band)
    B = rng.standard_normal((n, 3))
    x = np.asarray(factors.solve(jnp.asarray(B)))
    np.testing.assert_allclose(x, np.linalg.solve(A, B), rtol=1e-9, atol=1e-9 * np.abs(x).max())
    x1 = np.asarray(factors.solve(jnp.asarray(B[:, 0])))
    np.testing.assert_allclose(x1, x[:, 0], rtol=1e-12, atol=1e-13)


def test_pivoting_handles_a_zero_leading_entry():
    # A[0, 0] = 0: without row swaps elimination divides by zero.
    A = np.array([[0.0, 1.0, 0.0], [2.0, 3.0, 1.0], [0.0, 4.0, 5.0]])
    solver = taylorode.BandedLU(1, 1)
    factors = solver.factor(solver.band_of(lambda v: jnp.asarray(A) @ v, 3, jnp.float64))
    b = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.asarray(factors.solve(jnp.asarray(b))), np.linalg.solve(A, b), rtol=1e-13)


def test_band_matvec_and_extraction_from_products():
    rng = np.random.default_rng(0)
    A = banded(rng, 30, 2, 1)
    band = band_from_matvec(lambda v: jnp.asarray(A) @ v, 30, 2, 1, jnp.float64)
    x = rng.standard_normal(30)
    np.testing.assert_allclose(np.asarray(band_matvec(band, 2, 1, jnp.asarray(x))), A @ x, rtol=1e-13, atol=1e-14)


def test_lineax_solve_transpose_and_gradient():
    # As a lineax solver on a Jacobian operator: the solve, and reverse mode through it
    # (which solves with the transpose), against the dense solve.
    rng = np.random.default_rng(1)
    n = 12
    A = banded(rng, n, 1, 2, diagonal=3.0)

    def f(y):
        return jnp.asarray(A) @ y + 0.1 * jnp.sin(y)

    y = jnp.asarray(rng.standard_normal(n))
    op = lx.JacobianLinearOperator(lambda y, _: f(y), y)
    J = np.asarray(jax.jacfwd(f)(y))
    b = jnp.asarray(rng.standard_normal(n))
    sol = lx.linear_solve(op, b, taylorode.BandedLU(1, 2))
    np.testing.assert_allclose(np.asarray(sol.value), np.linalg.solve(J, b), rtol=1e-12)

    def loss(b, solver):
        return jnp.sum(jnp.sin(lx.linear_solve(op, b, solver).value))

    g = jax.grad(loss)(b, taylorode.BandedLU(1, 2))
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(loss)(b, lx.LU())), rtol=1e-11)


def test_pytree_vector_under_vmap():
    # A PyTree state (two leaves) and a batch of matrices under vmap.
    rng = np.random.default_rng(2)
    mats = jnp.asarray(np.stack([banded(rng, 6, 1, 1, diagonal=4.0) for _ in range(3)]))

    def solve(A, b):
        op = lx.FunctionLinearOperator(
            lambda t: {"a": (A @ jnp.concatenate([t["a"], t["b"]]))[:2], "b": (A @ jnp.concatenate([t["a"], t["b"]]))[2:]},
            {"a": jax.ShapeDtypeStruct((2,), jnp.float64), "b": jax.ShapeDtypeStruct((4,), jnp.float64)},
        )
        out = lx.linear_solve(op, {"a": b[:2], "b": b[2:]}, taylorode.BandedLU(1, 1)).value
        return jnp.concatenate([out["a"], out["b"]])

    bs = jnp.asarray(rng.standard_normal((3, 6)))
    x = jax.vmap(solve)(mats, bs)
    for A, b, xi in zip(np.asarray(mats), np.asarray(bs), np.asarray(x)):
        np.testing.assert_allclose(xi, np.linalg.solve(A, b), rtol=1e-12)


def test_entries_outside_the_band_raise():
    A = 3 * np.eye(10)
    A[0, 5] = 1.0
    solver = taylorode.BandedLU(1, 1)
    with pytest.raises(Exception, match=r"outside that band"):
        jax.block_until_ready(
            eqx.filter_jit(lambda A: solver.band_of(lambda v: A @ v, 10, jnp.float64))(jnp.asarray(A))
        )
    # Within the band up to round-off: accepted.
    A[0, 5] = 1e-14
    band = solver.band_of(lambda v: jnp.asarray(A) @ v, 10, jnp.float64)
    assert np.isfinite(np.asarray(band)).all()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_bandwidths_are_refused(bad):
    with pytest.raises(ValueError, match="BandedLU"):
        taylorode.BandedLU(bad, 1)


def test_implicit_solvers_refuse_other_linear_solvers():
    with pytest.raises(ValueError, match="BandedLU"):
        taylorode.HermiteObreschkoff(1, 2, linear_solver=lx.GMRES(rtol=1e-6, atol=1e-6))
    with pytest.raises(ValueError, match="BandedLU"):
        taylorode.VariableOrderHermiteObreschkoff(linear_solver=lx.QR())


def test_float32_factors():
    rng = np.random.default_rng(3)
    A = banded(rng, 20, 2, 2, diagonal=6.0).astype(np.float32)
    factors = BandedFactors.factor(
        band_from_matvec(lambda v: jnp.asarray(A) @ v, 20, 2, 2, jnp.float32), 2, 2
    )
    b = rng.standard_normal(20).astype(np.float32)
    x = factors.solve(jnp.asarray(b))
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A.astype(np.float64), b), rtol=1e-4, atol=1e-5)


def _reaction_diffusion(y, n):
    """A small two-species reaction-diffusion field on n points, stored point by point
    (bandwidths (2, 2)); the Brusselator with alpha = 1/50."""
    u, v = y[:, 0], y[:, 1]
    k = (n + 1) ** 2 / 50

    def lap(w, edge):
        padded = jnp.concatenate([jnp.full((1,), edge), w, jnp.full((1,), edge)])
        return k * (padded[:-2] - 2 * w + padded[2:])

    du = 1 + u * u * v - 4 * u + lap(u, 1.0)
    dv = 3 * u - u * u * v + lap(v, 3.0)
    return jnp.stack([du, dv], axis=-1)


# (ExtrapolatedHermiteObreschkoff hands `linear_solver` to the same HermiteObreschkoff
# steps as VOHO's pairs.)
@pytest.mark.parametrize("make", ["VOHO", "Kvaerno5"])
def test_implicit_solvers_with_banded_newton_matrices(make):
    # The same solve with dense and banded Newton matrices: the banded one is exact
    # for this (2, 2)-banded Jacobian, so the two agree to round-off in the Newton
    # iterations (tolerance-level), and both match a tight scipy Radau reference.
    from scipy.integrate import solve_ivp

    n, t1, tol = 40, 0.5, 1e-6
    x = np.arange(1, n + 1) / (n + 1)
    y0 = np.stack([1 + np.sin(2 * np.pi * x), np.full(n, 3.0)], axis=-1)
    field = lambda t, y, args: _reaction_diffusion(y, n)  # noqa: E731
    ref = solve_ivp(
        lambda t, y: np.asarray(_reaction_diffusion(jnp.asarray(y.reshape(n, 2)), n)).reshape(-1),
        (0, t1), y0.reshape(-1), method="Radau", rtol=1e-12, atol=1e-12,
    ).y[:, -1].reshape(n, 2)

    def solver(linear_solver):
        if make == "VOHO":
            return taylorode.VariableOrderHermiteObreschkoff(linear_solver=linear_solver)
        return diffrax.Kvaerno5(root_finder=diffrax.VeryChord(rtol=tol, atol=tol, linear_solver=linear_solver))

    def solve(linear_solver):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver(linear_solver), 0.0, t1, None, jnp.asarray(y0),
            stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol), max_steps=1000,
        )
        assert sol.result == diffrax.RESULTS.successful
        return np.asarray(sol.ys[-1]), int(sol.stats["num_accepted_steps"])

    dense, steps_dense = solve(lx.LU())
    band, steps_band = solve(taylorode.BandedLU(2, 2))
    assert steps_band == steps_dense
    np.testing.assert_allclose(band, dense, rtol=1e-8, atol=1e-8)
    assert np.max(np.abs(band - ref) / (1 + np.abs(ref))) <= 10 * tol


def test_banded_voho_under_vmap_in_float32():
    # Two initial states of the reaction-diffusion field, vmapped, in float32 with banded
    # Newton matrices, against scipy Radau in float64 at a tight tolerance (no second
    # compiled solve for the reference).
    from scipy.integrate import solve_ivp

    n, t1, tol = 20, 0.5, 1e-4
    x = np.arange(1, n + 1) / (n + 1)
    y0s = np.stack([np.stack([1 + a * np.sin(2 * np.pi * x), np.full(n, 3.0)], axis=-1) for a in (1.0, 0.5)])
    field = lambda t, y, args: _reaction_diffusion(y, n)  # noqa: E731

    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), taylorode.VariableOrderHermiteObreschkoff(linear_solver=taylorode.BandedLU(2, 2)),
            jnp.asarray(0.0, jnp.float32), jnp.asarray(t1, jnp.float32), None, y0.astype(jnp.float32),
            stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol), max_steps=500,
        )
        return sol.ys[-1], sol.result

    y32, res = jax.jit(jax.vmap(solve))(jnp.asarray(y0s))
    assert y32.dtype == jnp.float32
    assert bool(jnp.all(res == diffrax.RESULTS.successful))
    rhs = jax.jit(lambda y: _reaction_diffusion(y.reshape(n, 2), n).reshape(-1))
    y64 = np.stack([
        solve_ivp(
            lambda t, y: np.asarray(rhs(y)), (0, t1), y0.reshape(-1), method="Radau", rtol=1e-10, atol=1e-10,
        ).y[:, -1].reshape(n, 2)
        for y0 in y0s
    ])
    assert not np.allclose(y64[0], y64[1], rtol=1e-2)
    np.testing.assert_allclose(np.asarray(y32), y64, rtol=2e-3, atol=2e-3)


def test_transpose_twice_and_unequal_bandwidths():
    # lineax's transpose of a state whose bandwidths differ (1, 3): solving with the
    # transposed state solves A^T x = b, and transposing it back solves A x = b again.
    rng = np.random.default_rng(4)
    n = 15
    A = banded(rng, n, 1, 3, diagonal=4.0)
    solver = taylorode.BandedLU(1, 3)
    state = solver.init(lx.MatrixLinearOperator(jnp.asarray(A)), {})
    b = jnp.asarray(rng.standard_normal(n))
    t_state, _ = solver.transpose(state, {})
    x_t = solver.compute(t_state, b, {})[0]
    np.testing.assert_allclose(np.asarray(x_t), np.linalg.solve(A.T, b), rtol=1e-12)
    tt_state, _ = solver.transpose(t_state, {})
    x = solver.compute(tt_state, b, {})[0]
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A, b), rtol=1e-12)


def test_extrapolated_solver_hands_the_linear_solver_on():
    solver = taylorode.ExtrapolatedHermiteObreschkoff(linear_solver=taylorode.BandedLU(2, 2))
    assert solver.solver.linear_solver == taylorode.BandedLU(2, 2)
    with pytest.raises(ValueError, match="BandedLU"):
        taylorode.ExtrapolatedHermiteObreschkoff(linear_solver=lx.QR())
