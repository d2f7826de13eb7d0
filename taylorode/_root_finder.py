"""Simplified Newton for Hermite–Obreschkoff steps, with the Newton matrix factored.

For y' = f(y) the HO(p, q) relation's Jacobian with respect to y1 is Q(hJ), the
denominator of the (p, q) Padé approximant of e^z evaluated at hJ, exactly when f is
linear, and close to it otherwise. Formed as a matrix, Q(hJ) has entries of size
|hλ|^q: for stiff problems (|hλ| ~ 1e10 on Robertson) that is far beyond float64, and
an LU factorisation of it loses every direction but the stiffest. Instead we apply its
inverse by partial fractions over the roots r_k of Q,

    Q(hJ)^{-1} b = sum_k w_k (hJ - r_k I)^{-1} b,   w_k = 1 / Q'(r_k),

one LU factorisation per root (per complex-conjugate pair, one complex one), each as
well conditioned as an implicit Euler step's matrix. This is the idea of Radau5's
transformation of its Newton system (Hairer & Wanner II, IV.8).
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.flatten_util as jfu
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, PyTree

from ._linear_solver import BandedLU


def pade_partial_fractions(Q) -> tuple[tuple[complex, complex], ...]:
    """`((r_k, w_k), ...)` with 1/Q(z) = sum_k w_k / (z - r_k), over the roots of `Q`
    (power-series coefficients, ascending) with Im r_k >= 0 only: a root with
    Im r_k > 0 stands for itself and its conjugate (whose term is the conjugate)."""
    coeffs = np.array([float(c) for c in Q], dtype=np.float64)
    roots = np.roots(coeffs[::-1])
    dQ = np.polynomial.polynomial.polyder(coeffs)
    pairs = []
    for r in roots:
        if r.imag < -1e-12 * abs(r):
            continue
        w = 1 / np.polynomial.polynomial.polyval(r, dQ)
        if abs(r.imag) <= 1e-12 * abs(r):
            r, w = complex(r.real, 0.0), complex(w.real, 0.0)
        pairs.append((complex(r), complex(w)))
    return tuple(pairs)


class RationalFilters(eqx.Module):
    """Rational functions `F_i = N_i / Q^k` (i = 0 .. m-1) of a Newton matrix's `hJ`,
    in a form that applies them all at once, stably, through the factorisations of
    `hJ - r I` over the roots r of `Q`:

        F_i(z) = C_i prod_l (alpha_il + beta_il / (z - rho_l))

    over one sequence of poles `rho_l` (the roots of Q and their conjugates, each k
    times). A factor is `1 / (z - rho)` (alpha = 0, beta = 1) or `(z - n) / (z - rho)
    = 1 + (rho - n) / (z - rho)` for a root n of N_i. Applied to a matrix, each factor
    is well conditioned, and `1 / (z - rho)`'s decay at infinity is kept exactly, where
    partial fractions would lose it to cancellation. Built with `RationalFilters.make`.
    """

    poles: tuple[tuple[int, bool], ...] = eqx.field(static=True)
    alpha: tuple[tuple[complex, ...], ...] = eqx.field(static=True)
    beta: tuple[tuple[complex, ...], ...] = eqx.field(static=True)
    scale: tuple[complex, ...] = eqx.field(static=True)

    @classmethod
    def make(cls, Ns, Q, k: int) -> "RationalFilters":
        """From the numerators `Ns` (power-series coefficients, ascending, each of
        degree at most k deg Q), the denominator's `Q` and its power `k`. A pole is
        `(j, conj)`: the j-th root of `pade_partial_fractions(Q)`, or its conjugate."""
        qc = np.array([float(c) for c in Q], dtype=np.float64)
        roots = [r for r, _ in pade_partial_fractions(Q)]
        poles = []
        for _ in range(k):
            for j, r in enumerate(roots):
                poles.append((j, False))
                if r.imag != 0.0:
                    poles.append((j, True))
        values = [roots[j].conjugate() if conj else roots[j] for j, conj in poles]
        alpha, beta, scale = [], [], []
        for N in Ns:
            n = np.array([float(c) for c in N], dtype=np.float64)
            num_roots = [complex(x) for x in np.roots(n[::-1])] if len(n) > 1 else []
            if len(num_roots) > len(poles):
                raise ValueError("RationalFilters needs deg N <= k deg Q.")
            # Pure poles first (they shrink the stiff components before anything else),
            # then one pole per root of N.
            pure = len(poles) - len(num_roots)
            a = [0j] * pure + [1 + 0j] * len(num_roots)
            b = [1 + 0j] * pure + [values[pure + i] - nr for i, nr in enumerate(num_roots)]
            alpha.append(tuple(a))
            beta.append(tuple(b))
            scale.append(complex(n[-1] / qc[-1] ** k))
        return cls(tuple(poles), tuple(alpha), tuple(beta), tuple(scale))


class DenseFactors(eqx.Module):
    """The LU factorisation of a dense matrix (through `lineax.LU`), with the same
    `solve` as [`taylorode.BandedLU`][]'s factors."""

    operator: lx.MatrixLinearOperator
    state: Any

    @classmethod
    def factor(cls, matrix: Array) -> "DenseFactors":
        operator = lx.MatrixLinearOperator(matrix)
        return cls(operator, lx.LU().init(operator, options={}))

    def solve(self, b: Array) -> Array:
        """`A^{-1} b` for `b` of shape `(n,)` or `(n, k)`, real or complex."""
        if jnp.iscomplexobj(b) and not jnp.iscomplexobj(self.operator.matrix):
            return lax.complex(self.solve(jnp.real(b)), self.solve(jnp.imag(b)))
        b = b.astype(self.operator.matrix.dtype)

        def one(v):
            return lx.linear_solve(self.operator, v, lx.LU(), state=self.state, throw=False).value

        return one(b) if b.ndim == 1 else jax.vmap(one, in_axes=1, out_axes=1)(b)


def check_linear_solver(linear_solver) -> None:
    """Refuse, at construction, linear solvers that `FactoredPadeInverse` cannot use."""
    if not isinstance(linear_solver, lx.LU | BandedLU):
        raise ValueError(
            "The implicit Taylor solvers factor hJ - r I for the complex roots r of a Padé "
            "denominator, so `linear_solver` must be `lineax.LU()` (dense, the default) "
            f"or `taylorode.BandedLU(lower, upper)`; got {linear_solver!r}."
        )


class FactoredPadeInverse(eqx.Module):
    """`b -> Q(hJ)^{-1} b` for a flat vector `b`, from the factorisations of
    `hJ - r_k I` (dense, or banded with [`taylorode.BandedLU`][])."""

    factors: tuple
    weights: tuple
    real: tuple[bool, ...] = eqx.field(static=True)

    @classmethod
    def build(cls, f, x: Array, roots_weights, linear_solver=None) -> "FactoredPadeInverse":
        """From `hJ`, the Jacobian of the flat map `f` at `x`: by `jax.jacfwd` with
        `lineax.LU()` (or `None`), from `lower + upper + 1` Jacobian-vector products
        with `BandedLU(lower, upper)`."""
        n = x.shape[0]
        banded = isinstance(linear_solver, BandedLU)
        if banded:
            _, jvp = jax.linearize(f, x)
            hJ = linear_solver.band_of(jvp, n, x.dtype)
            diagonal = np.zeros((1, hJ.shape[1]), dtype=bool)
            diagonal[0, linear_solver.lower] = True
        else:
            hJ = jax.jacfwd(f)(x)
            diagonal = np.eye(n, dtype=bool)
        ctype = jnp.complex128 if hJ.dtype == jnp.float64 else jnp.complex64
        matrices, weights, real = [], [], []
        for r, w in roots_weights:
            is_real = r.imag == 0.0
            if is_real:
                shift, weight, matrix = r.real, w.real, hJ
            else:
                shift, weight, matrix = r, w, hJ.astype(ctype)
            matrices.append(matrix - jnp.where(diagonal, jnp.asarray(shift, matrix.dtype), 0))
            weights.append(jnp.asarray(weight, matrix.dtype))
            real.append(bool(is_real))
        if banded and len(matrices) > 1:
            # One scan factors every root's band at once (a real one as complex with
            # zero imaginary parts, exactly): the scan's per-row overhead, not its
            # arithmetic, is the cost of a small band.
            stacked = jnp.stack([m.astype(ctype) for m in matrices])
            batched = jax.vmap(linear_solver.factor)(stacked)
            factors = [jtu.tree_map(lambda a, j=j: a[j], batched) for j in range(len(matrices))]
        else:
            factors = [(linear_solver.factor if banded else DenseFactors.factor)(m) for m in matrices]
        return cls(tuple(factors), tuple(weights), tuple(real))

    def __call__(self, b: Array) -> Array:
        # (Neither factorisation reports failures: a singular matrix shows up as
        # non-finite values, which the Newton iteration and the step check.)
        out = jnp.zeros_like(b)
        for factor, w, is_real in zip(self.factors, self.weights, self.real):
            x = factor.solve(b)
            if is_real:
                out = out + (w * (jnp.real(x) if jnp.iscomplexobj(x) else x)).astype(b.dtype)
            else:
                out = out + (2 * jnp.real(w * x)).astype(b.dtype)
        return out

    def apply_tree(self, tree: PyTree) -> PyTree:
        flat, unravel = jfu.ravel_pytree(tree)
        return unravel(self(flat))

    def apply_filters(self, B: Array, filters: RationalFilters) -> Array:
        """`F_i(hJ) B[i]` for every row of the real `B` (shape `(m, n)`), with
        `F_i = filters`' i-th function: one multi-right-hand-side solve per pole."""
        ctype = jnp.complex128 if B.dtype == jnp.float64 else jnp.complex64
        alpha = np.array(filters.alpha).T[:, :, None]  # (poles, m, 1)
        beta = np.array(filters.beta).T[:, :, None]
        w = B.astype(ctype)
        for (j, conj), a, b in zip(filters.poles, alpha, beta):
            solve = lambda v, factor=self.factors[j]: factor.solve(v.T).T  # noqa: E731
            x = jnp.conj(solve(jnp.conj(w))) if conj else solve(w)
            w = jnp.asarray(a, ctype) * w + jnp.asarray(b, ctype) * x
        scale = np.array(filters.scale)[:, None]
        return jnp.real(jnp.asarray(scale, ctype) * w).astype(B.dtype)


class _PadeChordState(eqx.Module):
    inverse: FactoredPadeInverse
    diffsize: Array
    diffsize_prev: Array
    step: Array
    refreshes: Array
    rebuilt: Array
    rebuilt_before: Array


class PadeChord(optx.AbstractRootFinder):
    """Chord (simplified Newton) iterations `y <- y - Q(hJ)^{-1} F(y)` for the implicit
    relation of [`taylorode.HermiteObreschkoff`][], with the Newton matrix `Q(hJ)` (the
    denominator of the (p, q) Padé approximant of `e^z` at `hJ`) never formed: its
    entries grow like `|hλ|^q`, far beyond float64 on stiff problems. Its inverse is
    applied by partial fractions over the roots `r_k` of `Q`,
    `Q(hJ)^{-1} b = sum_k w_k (hJ - r_k I)^{-1} b` with `w_k = 1 / Q'(r_k)`: one LU
    factorisation per root (one complex one per conjugate pair), each as well
    conditioned as an implicit Euler step's matrix, as in Radau5's transformation of its
    Newton system. The solver hands the factorisations in through
    `options["init_state"]` (it computes `J` once per step).

    Convergence is judged as in Radau5 (Hairer & Wanner II, IV.8): from the second
    iteration on, the solve stops once the estimated remaining error `|Δ| θ/(1-θ)`
    (θ the observed contraction rate, `|Δ|` measured in the `atol + rtol |y|` norm)
    is below `kappa`, and reports divergence when θ >= 1 (the step is then rejected
    and retried smaller). Unlike `diffrax.VeryChord`, which gives up when two
    iterations have not converged, it goes on while the iteration contracts, up to
    the solver's `root_find_max_steps`.

    Two guards make the rate a safe guide: the first update carries the starting
    guess's error, so convergence is judged from the third update on (or once an
    update is at round-off, `10 eps / rtol`), and an update still larger than the
    tolerance is never taken as converged. Measured on Robertson's problem, without
    them the iteration stopped after two updates at 5x the tolerance.

    **Jacobian refresh.** The Newton matrix is built from the Jacobian at the step's
    starting guess. On strongly stiff problems whose Jacobian drifts across the step,
    that is not enough: Q(hJ) has entries of size |hλ|^q, so a change of 1-2 % in J
    makes the chord iteration diverge or crawl (measured on Robertson's problem at
    t = 1e4, h|λ| ~ 1e7, with HO(1, 2)). With `refresh_rate` set (the default, 0.5),
    an update that shrinks by less than that factor from the previous one is thrown
    away (unless it is already below `kappa`), the Newton matrix is rebuilt from the
    Jacobian at the current iterate (a real conditional, uniform over a vmapped batch),
    and the update is redone with it. The rate across a rebuild compares updates made
    with two different matrices, so it is used neither for convergence nor for
    divergence. Rebuilds are counted in
    [`taylorode.implicit_stats`][]'s Jacobian evaluations. On Robertson's problem to
    t = 1e11, HO(1, 2) needs it (without it, about 10x the steps, half of them
    rejected); on Van der Pol (mu = 1e3), where it rarely fires, the conditional costs
    up to a third more run time. `refresh_rate=None` turns it off.

    **Arguments:**

    - `rtol`, `atol`: tolerances (by default the step-size controller's).
    - `norm`: the norm of the scaled update.
    - `kappa`: the convergence threshold, relative to the tolerance.
    - `refresh_rate`: a contraction factor in (0, 1) above which the Newton matrix is
        rebuilt at the current iterate (default 0.5), or `None` to keep the step's
        Newton matrix throughout.
    """

    rtol: float
    atol: float
    norm: Callable[[PyTree], Array] = optx.max_norm
    kappa: float = 1e-2
    refresh_rate: float | None = 0.5

    def __check_init__(self):
        if self.refresh_rate is not None and not 0 < self.refresh_rate < 1:
            raise ValueError(
                f"PadeChord(refresh_rate=...) must be None or in (0, 1); got {self.refresh_rate!r}."
            )

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        try:
            inverse = options["init_state"]
        except KeyError:
            raise ValueError(
                "PadeChord is the Newton method of taylorode.HermiteObreschkoff, which "
                "supplies its factored Newton matrix; use optimistix.Newton or "
                "optimistix.Chord to solve other equations."
            ) from None
        dtype = jnp.result_type(*jtu.tree_leaves(y))
        return _PadeChordState(
            inverse=inverse,
            diffsize=jnp.array(jnp.inf, dtype),
            diffsize_prev=jnp.array(1.0, dtype),
            step=jnp.array(0),
            refreshes=jnp.array(0, jnp.int32),
            rebuilt=jnp.array(False),
            rebuilt_before=jnp.array(False),
        )

    def step(self, fn, y, args, options, state, tags):
        fx, aux = fn(y, args)
        diff = state.inverse.apply_tree(fx)
        diffsize = self._size(y, diff)
        inverse, refreshes = state.inverse, state.refreshes
        need = jnp.array(False)
        if self.refresh_rate is not None:
            try:
                rebuild = options["rebuild"]
            except KeyError:
                raise ValueError(
                    "PadeChord(refresh_rate=...) needs the solver to supply "
                    "`options['rebuild']` (taylorode.HermiteObreschkoff does)."
                ) from None
            # Contracting too slowly (or not at all) with the Newton matrix of the
            # step's start: rebuild it at the current iterate and redo this update.
            # (Not for updates already below the convergence threshold: there the
            # rate measures round-off.)
            need = (
                (state.step >= 1)
                & ~(diffsize <= self.refresh_rate * state.diffsize)
                & (diffsize >= self.kappa)
            )

            def fresh(_):
                new_inverse = rebuild(y)
                new_diff = new_inverse.apply_tree(fx)
                pick = lambda a, b: jtu.tree_map(lambda u, v: jnp.where(need, u, v), a, b)  # noqa: E731
                return (
                    pick(new_inverse, inverse),
                    pick(new_diff, diff),
                    jnp.where(need, self._size(y, new_diff), diffsize),
                )

            def keep(_):
                return inverse, diff, diffsize

            inverse, diff, diffsize = lax.cond(
                eqxi.unvmap_any(need), fresh, keep, None
            )
            refreshes = refreshes + need.astype(refreshes.dtype)
        new_y = jtu.tree_map(lambda a, b: a - b, y, diff)
        new_state = _PadeChordState(
            inverse=inverse,
            diffsize=diffsize,
            diffsize_prev=state.diffsize,
            step=state.step + 1,
            refreshes=refreshes,
            rebuilt=need,
            rebuilt_before=state.rebuilt,
        )
        return new_y, new_state, aux

    def _size(self, y, diff):
        """The update's size in the `atol + rtol |y|` norm, at the updated point."""
        scale = jtu.tree_map(lambda v, d: self.atol + self.rtol * jnp.abs(v - d), y, diff)
        return self.norm(jtu.tree_map(lambda d, s: d / s, diff, scale))

    def terminate(self, fn, y, args, options, state, tags):
        at_least_two = state.step >= 2
        rate = state.diffsize / state.diffsize_prev
        factor = state.diffsize * rate / (1 - rate)
        dtype = state.diffsize.dtype
        # Updates this small are round-off: |y| eps in the `atol + rtol |y|` units.
        resolution = jnp.maximum(
            10 ** (2 - jnp.finfo(dtype).precision),
            10 * jnp.finfo(dtype).eps / jnp.maximum(jnp.asarray(self.rtol, dtype), jnp.finfo(dtype).eps),
        )
        small = state.diffsize < resolution
        # A rate across a rebuilt Newton matrix compares updates of two different
        # iterations: it says nothing about convergence. Two rebuilds in a row make
        # a Newton iteration (each update with the Jacobian at its own iterate), and
        # growing updates there mean that it diverges; without this, an iteration
        # that rebuilds at every update runs to `max_steps` however fast it grows.
        same_matrix = jnp.invert(state.rebuilt)
        newton = state.rebuilt & state.rebuilt_before
        diverged = (
            at_least_two
            & (same_matrix | newton)
            & (jnp.invert(jnp.isfinite(rate)) | (rate >= 1))
        )
        # The first update carries the initial guess's error, so the first rate
        # (second update over first) overstates the contraction: trust rates from the
        # third update on. Far from the solution (and after a rebuilt Newton matrix)
        # the rate is no guide either: an update still larger than the tolerance
        # means not converged.
        converged = (at_least_two & small) | (
            (state.step >= 3)
            & same_matrix
            & (factor > 0)
            & (factor < self.kappa)
            & (state.diffsize < 1)
        )
        nonfinite = (state.step >= 1) & jnp.invert(jnp.isfinite(state.diffsize))
        result = optx.RESULTS.where(
            (diverged | nonfinite) & jnp.invert(converged),
            optx.RESULTS.nonlinear_divergence,
            optx.RESULTS.successful,
        )
        return converged | diverged | nonfinite, result

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {"num_jacobian_refreshes": state.refreshes}
