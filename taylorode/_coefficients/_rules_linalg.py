"""Taylor rules for linear-algebra primitives: `triangular_solve`, `lu`, `cholesky` and
`eigh`, registered into `RULES` (the protocol is in `_rules.py`).

A factorisation's series needs only solves with its order-0 factors: with the lower
orders known, order k of `P A = L U` (or `A = L L^H`) is linear in the unknown order-k
factors, and triangular structure separates them. Each rule adds O(1) operations per
order (sums over orders are one batched matrix product over a stacked axis), so the
program grows linearly with the order. `custom_linear_solve` (what `jnp.linalg.solve`
and `jnp.linalg.inv` emit) expands its matvec, so its rule sits with the engine, in
`recurrence.py`.
"""

import jax.numpy as jnp
from jax import lax

from .._errors import TaylorRuleError
from . import _series as S
from ._collect import current
from ._rules import RULES, Const, _aux, coeff


_HIGHEST = lax.Precision.HIGHEST


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HIGHEST)


def _mT(a):
    return jnp.swapaxes(a, -1, -2)


def _H(a):
    return jnp.conj(_mT(a)) if jnp.iscomplexobj(a) else _mT(a)


def _eye_like(a):
    return jnp.eye(a.shape[-1], dtype=a.dtype)


def _matmul_sum(xs: list, ys: list):
    """`sum_i xs[i] @ ys[i]` (`None` for no terms). A few terms are written out, which
    keeps order 1 (a JVP) transposable (see `_series.py`); more are one batched product
    over a stacked axis."""
    if not xs:
        return None
    if len(xs) <= S.UNSTACKED_TERMS:
        total = _mm(xs[0], ys[0])
        for x, y in zip(xs[1:], ys[1:]):
            total = total + _mm(x, y)
        return total
    return jnp.sum(_mm(jnp.stack(xs), jnp.stack(ys)), axis=0)


def _matmul_cauchy(a: list, b: list, k: int):
    """Order k of the matrix product of two series: `sum_{j=0..k} a_j @ b_{k-j}`."""
    return _matmul_sum([a[j] for j in range(k + 1)], [b[k - j] for j in range(k + 1)])


def _minus(x, y):
    return x if y is None else x - y


def _triangular_solve(k, ins, outs, ctx, left_side, lower, transpose_a, conjugate_a, unit_diagonal):
    # x = op(T)^{-1} b (left side; x op(T)^{-1} on the right), T the triangle of a that
    # the primitive reads. Order k of op(T) x = b:
    #   op(T_0) x_k = b_k - sum_{j=1..k} op(T_j) x_{k-j},
    # one solve with the order-0 matrix.
    a, b = ins
    params = dict(left_side=left_side, lower=lower, transpose_a=transpose_a,
                  conjugate_a=conjugate_a, unit_diagonal=unit_diagonal)
    rhs = coeff(b, k)
    if not isinstance(a, Const):

        def op(j):
            if j == 0:
                return None  # the solve itself handles order 0
            offset = 1 if unit_diagonal else 0  # a unit diagonal is constant
            t = jnp.tril(a[j], -offset) if lower else jnp.triu(a[j], offset)
            t = _mT(t) if transpose_a else t
            return jnp.conj(t) if conjugate_a else t

        ops, x = _aux(ctx, "op", k, lambda j, s: op(j), keep=False), outs[0]
        js = range(1, k + 1)
        if left_side:
            rhs = _minus(rhs, _matmul_sum([ops[j] for j in js], [x[k - j] for j in js]))
        else:
            rhs = _minus(rhs, _matmul_sum([x[k - j] for j in js], [ops[j] for j in js]))
    return [lax.linalg.triangular_solve(coeff(a, 0), rhs, **params)]


def _lu(k, ins, outs, ctx, **params):
    # P A = L U with the permutation P of order 0 (as JAX's own JVP: pivoting is
    # piecewise constant), L unit lower and U upper triangular, packed in one matrix.
    # Order k: L_0 U_k + L_k U_0 = (P A)_k - sum_{j=1..k-1} L_j U_{k-j} = R_k, so
    # X = L_0^{-1} R_k U_0^{-1} = L_0^{-1} L_k + U_k U_0^{-1}: its strictly lower part
    # is L_0^{-1} L_k (L_k has a zero diagonal) and its upper part U_k U_0^{-1}.
    (a,) = ins
    packed, _, perm = outs
    if "L" not in ctx:
        shape = jnp.shape(packed[0])
        if shape[-1] != shape[-2]:
            raise TaylorRuleError(
                f"method='recurrence' has a Taylor rule for `lu` of square matrices only, not of "
                f"shape {shape}, used at {ctx.get('site') or '<unknown location>'}."
            )
    lower = _aux(ctx, "L", k - 1, lambda j, s: jnp.tril(packed[j], -1) + (_eye_like(packed[0]) if j == 0 else 0), keep=False)
    upper = _aux(ctx, "U", k - 1, lambda j, s: jnp.triu(packed[j]), keep=False)
    l0, u0 = lower[0], upper[0]
    pa = jnp.take_along_axis(coeff(a, k), perm.value[..., :, None], axis=-2)
    js = range(1, k)
    r = _minus(pa, _matmul_sum([lower[j] for j in js], [upper[k - j] for j in js]))
    y = lax.linalg.triangular_solve(l0, r, left_side=True, lower=True, unit_diagonal=True)
    x = lax.linalg.triangular_solve(u0, y, left_side=False, lower=False)
    return [_mm(l0, jnp.tril(x, -1)) + _mm(jnp.triu(x), u0), None, None]


def _cholesky(k, ins, outs, ctx, **params):
    # A = L L^H. Order k: L_0 L_k^H + L_k L_0^H = A_k - sum_{j=1..k-1} L_j L_{k-j}^H = R_k,
    # so with X = L_0^{-1} L_k (lower triangular, real diagonal),
    # X + X^H = L_0^{-1} R_k L_0^{-H}: X is its lower triangle with the diagonal halved
    # (JAX's own JVP at order 1, which takes R_k as given, as this does).
    (a,) = ins
    factor = _aux(ctx, "L", k - 1, lambda j, s: jnp.tril(outs[0][j]), keep=False)
    adjoint = _aux(ctx, "LH", k - 1, lambda j, s: _H(factor[j]), keep=False)
    l0 = factor[0]
    js = range(1, k)
    r = _minus(coeff(a, k), _matmul_sum([factor[j] for j in js], [adjoint[k - j] for j in js]))
    tmp = lax.linalg.triangular_solve(l0, r, left_side=False, lower=True, transpose_a=True, conjugate_a=True)
    y = lax.linalg.triangular_solve(l0, tmp, left_side=True, lower=True)
    x = jnp.tril(y) - 0.5 * y * _eye_like(y)
    return [_mm(l0, x)]


def _eigh(k, ins, outs, ctx, lower, sort_eigenvalues, subset_by_index, algorithm):
    # A V = V diag(w), V unitary, for simple eigenvalues. JAX's JVP is
    #   P = V^H A' V,  V' = V (F o P),  w' = Re diag(P),  F_ij = 1 / (w_j - w_i) (i != j), 0,
    # exact along the curve, so its series gives every order: with m = k - 1,
    # V_k = (V')_m / k and w_k = Re diag(P_m) / k, where P, F and F o P are series built
    # with Cauchy products (F = 1/(I + D) off the diagonal, D_ij = w_j - w_i). This is the
    # usual perturbation series for real symmetric A and follows JAX's phase convention
    # (diag(V^H V') = 0) for complex Hermitian A. Where two eigenvalues coincide there is
    # no such series: the expansion is marked invalid (its coefficients become NaN).
    (a,) = ins
    vecs, vals = outs
    n = jnp.shape(vecs[0])[-1]
    if subset_by_index is not None and tuple(subset_by_index) != (0, n):
        raise TaylorRuleError(
            "method='recurrence' has a Taylor rule for `eigh` with all eigenvalues only (not "
            f"subset_by_index={subset_by_index}), used at {ctx.get('site') or '<unknown location>'}."
        )
    m = k - 1
    if "offdiag" not in ctx:
        eye = _eye_like(vecs[0])
        ctx["eye"], ctx["offdiag"] = eye, 1 - eye
        collector = current()
        if collector is not None:
            w0 = vals[0]
            same = (w0[..., None, :] == w0[..., :, None]) & (ctx["offdiag"] != 0)
            collector.checks.append(lambda: jnp.any(same, axis=(-2, -1)))
    eye, offdiag = ctx["eye"], ctx["offdiag"]
    dtype = vecs[0].dtype
    da = _aux(ctx, "da", m, lambda j, s: (j + 1) * a[j + 1], keep=False)  # A'
    vh = _aux(ctx, "vh", m, lambda j, s: _H(vecs[j]), keep=False)
    q = _aux(ctx, "q", m, lambda j, s: _matmul_cauchy(da, vecs, j), keep=False)  # A' V
    p = _aux(ctx, "p", m, lambda j, s: _matmul_cauchy(vh, q, j), keep=False)  # V^H A' V
    w = _aux(ctx, "w", m, lambda j, s: vals[j].astype(dtype), keep=False)
    e = _aux(ctx, "e", m, lambda j, s: w[j][..., None, :] - w[j][..., :, None] + (eye if j == 0 else 0), keep=False)
    # 1 / (I + D)
    f = _aux(ctx, "f", m, lambda j, s: 1 / e[0] if j == 0 else S.quotient(jnp.zeros_like(e[0]), e, s, j))
    fp = _aux(ctx, "fp", m, lambda j, s: offdiag * S.cauchy(f, p, j))  # F o P
    dv = _matmul_cauchy(vecs, fp, m)
    dw = jnp.real(jnp.diagonal(p[m], axis1=-2, axis2=-1))
    return [dv / k, (dw / k).astype(vals[0].dtype)]


RULES["triangular_solve"] = _triangular_solve
RULES["lu"] = _lu
RULES["cholesky"] = _cholesky
RULES["eigh"] = _eigh
