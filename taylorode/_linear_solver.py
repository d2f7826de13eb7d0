"""Banded LU: a `lineax` linear solver for matrices with a few diagonals.

Method-of-lines discretisations of reaction–diffusion equations in one space dimension
have Jacobians with a handful of nonzero diagonals, once the unknowns are ordered point
by point. A dense LU factorisation costs O(n^3) there and forming the Jacobian n
Jacobian-vector products; a banded one costs O(n l (l + u)) and `l + u + 1` products
(the columns `j, j + w, j + 2w, ...` with `w = l + u + 1` never share a row of the
band, so one product with their sum recovers them all: Curtis, Powell & Reid's
colouring of a banded matrix).
"""

from typing import Any

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import numpy as np
from jaxtyping import Array, PyTree


def _validate(lower, upper):
    for name, value in (("lower", lower), ("upper", upper)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"BandedLU({name}=...) must be an int >= 0; got {value!r}.")


def band_from_matvec(matvec, n: int, lower: int, upper: int, dtype) -> Array:
    """The band of the `n x n` linear map `matvec` (flat vector to flat vector), as an
    array `B` of shape `(n, lower + upper + 1)` with `B[i, d + lower] = A[i, i + d]`
    (zero outside the matrix), from `min(n, lower + upper + 1)` products with sums of
    columns `j, j + w, j + 2w, ...`, `w = lower + upper + 1`."""
    w = min(n, lower + upper + 1)
    rows = np.arange(n)
    basis = jnp.asarray((rows[None, :] % w) == np.arange(w)[:, None], dtype)
    products = jax.vmap(matvec)(basis)  # (w, n): row c = A @ (sum of columns j = c mod w)
    d = np.arange(-lower, upper + 1)
    cols = rows[:, None] + d[None, :]
    inside = (cols >= 0) & (cols < n)
    colour = np.where(inside, cols % w, 0)
    picked = products[colour, np.broadcast_to(rows[:, None], cols.shape)]
    return jnp.where(jnp.asarray(inside), picked, jnp.zeros((), products.dtype))


def band_matvec(band: Array, lower: int, upper: int, x: Array) -> Array:
    """`A @ x` for the band `band` of `A` (as from `band_from_matvec`)."""
    n = band.shape[0]
    d = np.arange(-lower, upper + 1)
    cols = np.arange(n)[:, None] + d[None, :]
    inside = (cols >= 0) & (cols < n)
    gathered = jnp.where(jnp.asarray(inside), x[np.clip(cols, 0, n - 1)], 0)
    return jnp.sum(band * gathered, axis=1)


def check_band(matvec, band: Array, lower: int, upper: int) -> Array:
    """Whether `matvec` agrees with its band on a vector with no structure: `False`
    where the map has entries outside the band larger than about `sqrt(eps)` times its
    largest entry in it."""
    n = band.shape[0]
    dtype = jnp.real(band).dtype
    probe = jnp.asarray(1 + np.mod(np.arange(n) * 0.6180339887498949, 1.0), dtype)
    exact = matvec(probe.astype(band.dtype))
    mismatch = jnp.max(jnp.abs(exact - band_matvec(band, lower, upper, probe.astype(band.dtype))))
    scale = jnp.max(jnp.abs(band)) * (lower + upper + 1) * 2
    return ~(mismatch > jnp.sqrt(jnp.finfo(dtype).eps) * scale)


class BandedFactors(eqx.Module):
    """The LU factorisation, with partial pivoting, of a banded matrix: row `k` of `U`
    holds `U[k, k .. k + lower + upper]`, row `k` of `multipliers` the `lower`
    multipliers of elimination step `k`, and `pivots[k]` the offset (0 .. lower) of the
    row swapped into place `k`."""

    U: Array
    multipliers: Array
    pivots: Array
    lower: int = eqx.field(static=True)
    upper: int = eqx.field(static=True)

    @classmethod
    def factor(cls, band: Array, lower: int, upper: int) -> "BandedFactors":
        """Gaussian elimination with partial pivoting (as LAPACK's `gbtrf`), one column
        per iteration of a scan over a window of `lower + 1` rows and `lower + upper + 1`
        columns: row swaps widen the upper band to `lower + upper`, and nothing else."""
        n = band.shape[0]
        width = lower + upper + 1
        window = np.zeros((lower + 1, width), dtype=np.int64)
        take = np.zeros((lower + 1, width), dtype=bool)
        for m in range(lower + 1):
            for j in range(width):
                if j - m <= upper and m < n:
                    window[m, j], take[m, j] = m * (lower + upper + 1) + j - m + lower, True
        flat = band.reshape(-1)
        W0 = jnp.where(jnp.asarray(take), flat[np.clip(window, 0, flat.shape[0] - 1)], 0)
        # Row k + lower + 1 of the matrix enters the window at step k, at exactly its band.
        incoming = jnp.concatenate([band[lower + 1 :], jnp.zeros((lower + 1, width), band.dtype)])[:n]

        rows = jnp.arange(lower + 1)[:, None]

        def eliminate(W, new_row):
            # The pivot row swapped with row 0 by selects, not dynamic indexing: they
            # fuse (1000 rows, bandwidths (2, 2): 0.23 instead of 0.30 ms on XLA:CPU).
            p = jnp.argmax(jnp.abs(W[:, 0]))
            is_p = rows == p
            top = jnp.sum(jnp.where(is_p, W, 0), axis=0)
            rest = jnp.where(is_p, W[0][None, :], W)[1:]
            m = rest[:, 0] / top[0]
            rest = rest - m[:, None] * top[None, :]
            shifted = jnp.concatenate([rest[:, 1:], jnp.zeros((lower, 1), W.dtype)], axis=1)
            return jnp.concatenate([shifted, new_row[None, :]]), (top, m, p)

        # Unrolled by 4: the loop's per-iteration overhead is most of a small band's
        # cost (0.32 instead of 0.58 ms with dynamic indexing).
        _, (U, multipliers, pivots) = lax.scan(eliminate, W0, incoming, unroll=4)
        return cls(U, multipliers, pivots.astype(jnp.int32), lower, upper)

    def solve(self, b: Array) -> Array:
        """`A^{-1} b` for `b` of shape `(n,)` or `(n, k)`."""
        lower, upper = self.lower, self.upper
        n = b.shape[0]
        trail = (1,) * (b.ndim - 1)
        complex_ = jnp.iscomplexobj(b) or jnp.iscomplexobj(self.U)
        dtype = jnp.promote_types(jnp.real(b).dtype, jnp.real(self.U).dtype)
        if complex_:
            dtype = jnp.complex128 if dtype == jnp.float64 else jnp.complex64
        b = b.astype(dtype)
        U, multipliers = self.U.astype(dtype), self.multipliers.astype(dtype)
        head = b[: lower + 1]
        if head.shape[0] < lower + 1:
            head = jnp.concatenate([head, jnp.zeros((lower + 1 - n,) + b.shape[1:], b.dtype)])
        incoming = jnp.concatenate([b[lower + 1 :], jnp.zeros((lower + 1,) + b.shape[1:], b.dtype)])[:n]

        def forward(window, xs):
            m, p, new = xs
            top = window[p]
            window = window.at[p].set(window[0]).at[0].set(top)
            rest = window[1:] - m.reshape(m.shape + trail) * top[None]
            return jnp.concatenate([rest, new[None]]), top

        _, y = lax.scan(forward, head, (multipliers, self.pivots, incoming))
        k = lower + upper
        if k == 0:
            return y / U[:, 0].reshape((n,) + trail)

        def backward(after, xs):
            # A fused multiply-and-sum, not a dot: XLA:CPU runs a dot as a library call
            # per row (7 right-hand sides, 1000 rows: 0.12 instead of 0.31 ms).
            u, yk = xs
            x = (yk - jnp.sum(u[1:].reshape((k,) + trail) * after, axis=0)) / u[0]
            return jnp.concatenate([x[None], after[:-1]]), x

        _, x = lax.scan(backward, jnp.zeros((k,) + b.shape[1:], dtype), (U, y), reverse=True)
        return x


class _BandedLUState(eqx.Module):
    band: Array
    factors: BandedFactors
    # Flat vector -> the solution's PyTree (the operator's input structure) and the
    # right-hand side's (its output structure); a transpose swaps them.
    unravel: Any = eqx.field(static=True)
    unravel_rhs: Any = eqx.field(static=True)


class BandedLU(lx.AbstractLinearSolver):
    """LU factorisation with partial pivoting for banded matrices: `A[i, j] = 0` unless
    `-lower <= j - i <= upper`. A `lineax` solver, so it serves both
    [`taylorode.HermiteObreschkoff`][]'s family (`linear_solver=BandedLU(l, u)`) and
    diffrax's implicit solvers
    (`diffrax.Kvaerno5(root_finder=diffrax.VeryChord(rtol, atol, linear_solver=BandedLU(l, u)))`),
    with any operator: the band is read from `lower + upper + 1` matrix-vector products
    with sums of every `(lower + upper + 1)`-th column, so a Jacobian operator costs that
    many Jacobian-vector products instead of one per unknown. Factorisation and solve
    are scans over the rows: O(n l (l + u)) work against O(n^3) for dense LU.

    Method-of-lines Jacobians are banded once the unknowns are ordered point by point:
    for two species `u`, `v` on a 1-D grid, interleaved as `(u_1, v_1, u_2, v_2, ...)`,
    diffusion couples `u_i` to `u_{i±1}` and the reaction `u_i` to `v_i`, so
    `lower = upper = 2`; stored species by species, the same Jacobian has bandwidth n/2.

    **Wrong bandwidths are caught.** With `check=True` (the default) each factorisation
    compares one more product, with a vector without structure, against the band:
    entries outside the band (beyond about `sqrt(eps)` times the largest inside it)
    raise an `equinox` runtime error naming the bandwidths, instead of a factorisation
    of the wrong matrix.

    **Arguments:**

    - `lower`: the number of nonzero diagonals below the main diagonal.
    - `upper`: the number above it.
    - `check`: whether to check, at each factorisation, that the operator has no
        entries outside the band (one more matrix-vector product).
    """

    lower: int = eqx.field(static=True)
    upper: int = eqx.field(static=True)
    check: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        _validate(self.lower, self.upper)

    def band_of(self, matvec, n: int, dtype) -> Array:
        """The band of the flat `n x n` linear map `matvec` (see `band_from_matvec`),
        checked (when `check`) against one more product."""
        band = band_from_matvec(matvec, n, self.lower, self.upper, dtype)
        if self.check:
            ok = check_band(matvec, band, self.lower, self.upper)
            band = eqx.error_if(
                band,
                ~ok,
                f"The matrix given to taylorode.BandedLU(lower={self.lower}, upper={self.upper}) "
                "has nonzero entries outside that band: pass the bandwidths of the whole "
                "Jacobian (order the unknowns so that coupled ones are close), or use "
                "lineax.LU().",
            )
        return band

    def factor(self, band: Array) -> BandedFactors:
        return BandedFactors.factor(band, self.lower, self.upper)

    def init(self, operator: lx.AbstractLinearOperator, options: dict[str, Any]):
        del options
        if operator.in_size() != operator.out_size():
            raise ValueError("BandedLU needs a square operator.")
        def unraveller(structure):
            zeros = jtu.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), structure)
            return jfu.ravel_pytree(zeros)

        flat, unravel = unraveller(operator.in_structure())
        _, unravel_rhs = unraveller(operator.out_structure())

        def matvec(v):
            return jfu.ravel_pytree(operator.mv(unravel(v)))[0]

        band = self.band_of(matvec, flat.shape[0], flat.dtype)
        return _BandedLUState(band, self.factor(band), unravel, unravel_rhs)

    def compute(self, state: _BandedLUState, vector: PyTree[Array], options: dict[str, Any]):
        del options
        flat = jfu.ravel_pytree(vector)[0]
        solution = state.factors.solve(flat)
        return state.unravel(solution.astype(flat.dtype)), lx.RESULTS.successful, {}

    def transpose(self, state: _BandedLUState, options: dict[str, Any]):
        # The transposed band: B^T[i, d + upper] = A[i + d, i] = B[i + d, lower - d].
        # (The state's own bandwidths: a transposed state has them swapped.)
        band, lower, upper = state.band, state.factors.lower, state.factors.upper
        n = band.shape[0]
        d = np.arange(-upper, lower + 1)
        rows = np.arange(n)[:, None] + d[None, :]
        inside = (rows >= 0) & (rows < n)
        picked = band[np.clip(rows, 0, n - 1), np.broadcast_to(lower - d, rows.shape)]
        transposed = jnp.where(jnp.asarray(inside), picked, 0)
        factors = BandedFactors.factor(transposed, upper, lower)
        return _BandedLUState(transposed, factors, state.unravel_rhs, state.unravel), options

    def conj(self, state: _BandedLUState, options: dict[str, Any]):
        band = jnp.conj(state.band)
        factors = BandedFactors.factor(band, state.factors.lower, state.factors.upper)
        return _BandedLUState(band, factors, state.unravel, state.unravel_rhs), options

    def assume_full_rank(self) -> bool:
        return True


BandedLU.__init__.__doc__ = """**Arguments:**

- `lower`: the number of nonzero diagonals below the main diagonal.
- `upper`: the number above it.
- `check`: whether to check each factorisation's operator against its band.
"""
