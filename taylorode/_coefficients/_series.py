"""Recurrences for normalised Taylor coefficients.

A series is a Python list `[a_0, a_1, ..., a_k]` of arrays with the shape of the value it
expands, `a_j = a^(j)(t0) / j!`. Every function here returns the coefficient of order `k`
of a result from the coefficients of its operands, using only orders that are already
known (`< k` for the result itself). Sums over `j` are written out term by term up to
`WRITTEN_OUT_TERMS` terms and done on stacked arrays beyond, so that at high orders each
call adds O(1) operations to the traced program, whatever `k`.

The formulas are the classical ones of automatic differentiation (Griewank & Walther,
"Evaluating Derivatives", ch. 13; Jorba & Zou 2005). For `c' = u a'` (a function whose
derivative is known in terms of other series) we use
`c_k = (1/k) sum_{j=1..k} j a_j u_{k-j}`.
"""

import weakref

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array


Series = list[Array]


def _stack(xs: list[Array], ndim: int) -> Array:
    """Stack along a new leading axis, right-aligning ranks for broadcasting."""
    s = jnp.stack([jnp.asarray(x) for x in xs])
    missing = ndim - (s.ndim - 1)
    if missing > 0:
        s = s.reshape(s.shape[:1] + (1,) * missing + s.shape[1:])
    return s


# Sums of at most this many terms are always written out term by term: order 1 (a JVP)
# then stays transposable, since primal and tangent values never share one array. The
# matrix-product and convolution sums of other rules follow this too.
UNSTACKED_TERMS = 3
# Elementwise sums (`_dot_sum`) of at most this many terms are written out as well,
# whatever the size of their values: plain elementwise arithmetic that XLA fuses without
# first copying the operands into a stack. One coefficient set at order 13
# (benchmarks/bench_kernels.py's setup, measured by hand on 2026-12-04, with `kept`
# below): Pleiades 16.4 -> 8.8 µs, the 100-oscillator chain 16.4 -> 9.6 µs, the tanh MLP
# unchanged (9.0 µs); 64 states vmapped 1.9-3.5x faster. Longer sums (orders above it)
# are one stacked multiply-and-reduce, which keeps the traced program linear in the
# order where it is long.
WRITTEN_OUT_TERMS = 24
# Sums over values of at most this many elements are always written out: for a few
# scalars, plain arithmetic compiles and runs faster than stacking (Lorenz at order 16:
# 0.6 µs and 0.7 s to compile, against 3.1 µs and 1.2 s stacked; benchmarks/bench_engine.py).
UNSTACKED_SIZE = 4


def _same(x, y) -> bool:
    return (
        isinstance(x, jax.Array)
        and isinstance(y, jax.Array)
        and x.shape == y.shape
        and x.dtype == y.dtype
    )


def _mul(x, y):
    """`x * y`, as a bare `lax.mul` where no broadcasting or promotion is needed:
    `jnp`'s operators are jitted functions, and their per-call tracing overhead is a
    large part of the time it takes to trace a high-order expansion."""
    return lax.mul(x, y) if _same(x, y) else x * y


def _add(x, y):
    """`x + y`, as `lax.add` where it can be (see `_mul`)."""
    return lax.add(x, y) if _same(x, y) else x + y


def _dot_sum(xs: list[Array], ys: list[Array], weights=None) -> Array:
    """sum_i w_i x_i y_i."""
    size = max(max(jnp.size(x) for x in xs), max(jnp.size(y) for y in ys))
    if len(xs) <= WRITTEN_OUT_TERMS or size <= UNSTACKED_SIZE:
        ws = [1] * len(xs) if weights is None else weights
        terms = []
        for x, y, w in zip(xs, ys, ws):
            term = _mul(x, y)
            if w != 1:
                plain = isinstance(w, (int, float)) and isinstance(term, jax.Array)
                if plain and jnp.issubdtype(term.dtype, jnp.floating):
                    term = lax.mul(term, np.asarray(w, term.dtype))
                else:
                    term = w * term
            terms.append(term)
        out = terms[0]
        for term in terms[1:]:
            out = _add(out, term)
        return out
    ndim = max(max(jnp.ndim(x) for x in xs), max(jnp.ndim(y) for y in ys))
    prod = _stack(xs, ndim) * _stack(ys, ndim)
    if weights is not None:
        w = jnp.asarray(weights, dtype=prod.dtype)
        prod = prod * w.reshape(w.shape + (1,) * ndim)
    return jnp.sum(prod, axis=0)


def kept(c):
    """An order's coefficient `c` of an array value (more than `UNSTACKED_SIZE` elements),
    as the output of a reduction, so that XLA keeps it in memory instead of recomputing
    it in every later order that reads it.

    XLA:CPU fuses a cheap elementwise producer into each of its consumers, duplicating
    it; it declines only for producers it counts as expensive (divisions, reductions,
    gathers: "expensive producer would be duplicated"). The recurrence sums written out
    term by term (`WRITTEN_OUT_TERMS`) are cheap elementwise code, and a nonlinear
    operation's order-k coefficient (or a rule's auxiliary series, such as the cosine
    that the sine's recurrence reads) is read by every later order, so without a
    boundary XLA recomputes each of them many times over: the 100-oscillator chain's
    sin/cos recurrences at order 20 compiled to 5 times the multiplications of the traced
    program and took 52 µs per coefficient set, against 23 µs with the boundary. A sum
    over a stacked axis of length 2 (the value and zeros) is such a reduction, one add
    per element; the gather that `recurrence.py` puts on the state would do too, but
    costs more (Pleiades at order 20: 33 against 17 µs). Scalars are left as they are:
    fields of a few scalars gain nothing from it. The value is unchanged (`c + 0`).
    A value that is already the output of `kept` is returned as it is, so a rule may
    keep the series it carries between orders and return one of them as its result."""
    if not isinstance(c, jax.Array) or jnp.size(c) <= UNSTACKED_SIZE:
        return c
    if not jnp.issubdtype(c.dtype, jnp.inexact) or _KEPT.get(id(c)) is c:
        return c
    out = jnp.sum(jnp.stack([c, jnp.zeros_like(c)]), axis=0)
    _KEPT[id(out)] = out
    return out


# The outputs of `kept` that are still alive (tracers are weakly referenceable; an entry
# goes when its value does, so a reused id never matches a stale one).
_KEPT: "weakref.WeakValueDictionary[int, Array]" = weakref.WeakValueDictionary()


def cauchy(a: Series, b: Series, k: int) -> Array:
    """`sum_{j=0..k} a_j b_{k-j}`: order k of a product. For a square (`a is b`) the
    symmetric terms are paired, `2 sum_{j<k/2} a_j a_{k-j} (+ a_{k/2}^2)`: half the
    operations, which is what XLA's compile time follows."""
    if a is b and k >= 1:
        js = range((k + 1) // 2)
        out = 2 * _dot_sum([a[j] for j in js], [a[k - j] for j in js])
        if k % 2 == 0:
            out = out + a[k // 2] * a[k // 2]
        return out
    js = range(k + 1)
    return _dot_sum([a[j] for j in js], [b[k - j] for j in js])


def derivative_conv(a: Series, u: Series, k: int) -> Array:
    """Order k >= 1 of c where c' = u a': `(1/k) sum_{j=1..k} j a_j u_{k-j}`."""
    js = range(1, k + 1)
    return _dot_sum([a[j] for j in js], [u[k - j] for j in js], [j / k for j in js])


def quotient(a_k: Array, b: Series, c: Series, k: int) -> Array:
    """Order k of c = a / b, given a_k: `(a_k - sum_{j=1..k} b_j c_{k-j}) / b_0`."""
    js = range(1, k + 1)
    return (a_k - _dot_sum([b[j] for j in js], [c[k - j] for j in js])) / b[0]


def power(a: Series, c: Series, alpha, k: int, a0=None) -> Array:
    """Order k of c = a^alpha (alpha constant, possibly an array):
    `c_k = (alpha S_1 - S_2) / (k a_0)` with `S_1 = sum_{j<k} (k-j) a_{k-j} c_j` and
    `S_2 = sum_{j<k} j a_{k-j} c_j`. Singular where a_0 = 0; `a0` replaces `a_0` as the
    divisor where given."""
    js = range(0, k)
    if a0 is None:
        a0 = a[0]
    xs, ys = [a[k - j] for j in js], [c[j] for j in js]
    if np.ndim(alpha) == 0 and not isinstance(alpha, jax.core.Tracer):
        # A known constant: one weighted sum, `sum_j (alpha (k-j) - j) a_{k-j} c_j`.
        alpha = float(alpha)
        return _dot_sum(xs, ys, [alpha * (k - j) - j for j in js]) / (k * a0)
    s1 = _dot_sum(xs, ys, [k - j for j in js])
    s2 = _dot_sum(xs, ys, [j for j in js])
    return (alpha * s1 - s2) / (k * a0)


def logarithm(a: Series, c: Series, k: int) -> Array:
    """Order k of c = log(a): `(a_k - (1/k) sum_{j=1..k-1} j c_j a_{k-j}) / a_0`."""
    if k == 1:
        return a[1] / a[0]
    js = range(1, k)
    s = _dot_sum([c[j] for j in js], [a[k - j] for j in js], [j / k for j in js])
    return (a[k] - s) / a[0]


def derivative_series(a: Series, m: int) -> Array:
    """Order m of a': `(m + 1) a_{m+1}`."""
    return (m + 1) * a[m + 1]
