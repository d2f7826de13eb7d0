"""The numbers behind Hermite–Obreschkoff steps, as validated data.

Everything here is exact rational arithmetic on Python `Fraction`s, done once per
`(p, q)` at trace time; the solver turns the results into floats of the state's dtype.

- The HO(p, q) relation between the scaled coefficients `c_i = h^i y^[i](t0)` and
  `d_i = h^i y^[i](t1)`:

      sum_{i=0..q} (-1)^i a_i d_i = sum_{i=0..p} b_i c_i,
      a_i = q! (p+q-i)! / ((p+q)! (q-i)!),   b_i = p! (p+q-i)! / ((p+q)! (p-i)!).

  On y' = λy it gives y1 = R(z) y0, z = hλ, with R = P/Q the (p, q) Padé approximant
  of e^z: P(z) = sum b_i z^i / i!, Q(z) = sum a_i (-z)^i / i! (Obreschkoff 1940;
  Hairer, Nørsett & Wanner I, II.13; Hairer & Wanner II, IV.3–4).
- The Hermite interpolant through both ends' data, for dense output: the polynomial
  of degree p + q + 1 in s in [0, 1] whose first p + 1 scaled Taylor coefficients at
  s = 0 are the c_i and first q + 1 at s = 1 are the d_i.
- The filters that keep that interpolant bounded on stiff steps: the data c_i, d_i
  (i >= 1) enter it as F_i(hJ) c_i, F_i(hJ) d_i, with F_i(z) = N_i(z) / Q(z)^k a
  rational function equal to 1 + O(z^(p+q+2-i)) at 0 (so the interpolant keeps its
  order on non-stiff components) and O(z^-i) at infinity (so a stiff component's
  data, of size |hλ|^i times the state's, is brought back to the state's size).
"""

import functools
import math
from fractions import Fraction


def relation_weights(p: int, q: int) -> tuple[tuple[Fraction, ...], tuple[Fraction, ...]]:
    """`(a, b)`: the weights of the HO(p, q) relation, `a` of length q + 1 (for the
    coefficients at t1, without the sign (-1)^i) and `b` of length p + 1 (at t0)."""
    n = p + q
    a = tuple(
        Fraction(math.factorial(q) * math.factorial(n - i), math.factorial(n) * math.factorial(q - i))
        for i in range(q + 1)
    )
    b = tuple(
        Fraction(math.factorial(p) * math.factorial(n - i), math.factorial(n) * math.factorial(p - i))
        for i in range(p + 1)
    )
    return a, b


def pade_polynomials(p: int, q: int) -> tuple[tuple[Fraction, ...], tuple[Fraction, ...]]:
    """`(P, Q)`: power-series coefficients (in z) of the numerator and denominator of
    HO(p, q)'s stability function R = P/Q."""
    a, b = relation_weights(p, q)
    P = tuple(b[i] / math.factorial(i) for i in range(p + 1))
    Q = tuple((-1) ** i * a[i] / math.factorial(i) for i in range(q + 1))
    return P, Q


@functools.cache
def hermite_matrix(p: int, q: int) -> tuple[tuple[Fraction, ...], ...]:
    """`W`, of shape (p + q + 2, p + q + 2): the power coefficients of the Hermite
    interpolant are `e_j = sum_k W[j][k] data_k`, with `data = (c_0..c_p, d_0..d_q)`."""
    m = p + q + 2
    # Rows: conditions. Scaled coefficient i of s^j at s = 0 is [i == j]; at s = 1 it
    # is binomial(j, i).
    rows = [[Fraction(int(i == j)) for j in range(m)] for i in range(p + 1)]
    rows += [[Fraction(math.comb(j, i)) for j in range(m)] for i in range(q + 1)]
    return _inverse(rows)


def _inverse(rows: list[list[Fraction]]) -> tuple[tuple[Fraction, ...], ...]:
    """Exact inverse by Gauss–Jordan elimination."""
    m = len(rows)
    aug = [list(r) + [Fraction(int(i == j)) for j in range(m)] for i, r in enumerate(rows)]
    for col in range(m):
        pivot = next(r for r in range(col, m) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        inv = 1 / aug[col][col]
        aug[col] = [x * inv for x in aug[col]]
        for r in range(m):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [x - f * y for x, y in zip(aug[r], aug[col])]
    return tuple(tuple(r[m:]) for r in aug)


@functools.cache
def dense_filters(p: int, q: int) -> tuple[int, tuple[tuple[Fraction, ...], ...]]:
    """`(k, N)`: the dense-output filters F_i = N[i] / Q^k for the data of order
    i = 0 .. max(p, q) (N[0] = Q^k, so F_0 = 1). k is the least power with
    deg(Q^k) = qk >= p + q + 1, so that N[i], Q^k truncated below degree p + q + 2 - i,
    makes F_i = 1 + O(z^(p+q+2-i)) at 0 and F_i = O(z^-i) at infinity."""
    _, Q = pade_polynomials(p, q)
    k = -(-(p + q + 1) // q)
    Qk = (Fraction(1),)
    for _ in range(k):
        Qk = tuple(
            sum(Qk[a] * Q[j - a] for a in range(len(Qk)) if 0 <= j - a < len(Q))
            for j in range(len(Qk) + len(Q) - 1)
        )
    filters = [Qk]
    for i in range(1, max(p, q) + 1):
        filters.append(Qk[: p + q + 2 - i])
    return k, tuple(filters)


def is_a_stable(p: int, q: int) -> bool:
    """(p, q) Padé approximants of e^z are A-stable iff p <= q <= p + 2 (Ehle 1969)."""
    return p <= q <= p + 2


def is_l_stable(p: int, q: int) -> bool:
    """... and L-stable iff, in addition, q > p (R(z) -> 0 as z -> -inf)."""
    return p + 1 <= q <= p + 2


@functools.cache
def validate(p: int, q: int) -> None:
    """Check the data for (p, q): the relation reproduces e^z to order p + q (R - e^z
    = O(z^{p+q+1})), and the Hermite matrix inverts its conditions."""
    P, Q = pade_polynomials(p, q)
    n = p + q
    exp = [Fraction(1, math.factorial(k)) for k in range(n + 1)]
    # Q(z) e^z - P(z) must vanish through order n.
    for k in range(n + 1):
        qe = sum(Q[i] * exp[k - i] for i in range(min(k, q) + 1))
        pk = P[k] if k <= p else 0
        if qe != pk:
            raise AssertionError(f"HO({p}, {q}) weights are not the Padé approximant at order {k}")
    W = hermite_matrix(p, q)
    m = p + q + 2
    # The interpolant of the data of s^j itself must be s^j.
    for j in range(m):
        data = [Fraction(int(i == j)) for i in range(p + 1)] + [Fraction(math.comb(j, i)) for i in range(q + 1)]
        e = [sum(W[r][k] * data[k] for k in range(m)) for r in range(m)]
        if e != [Fraction(int(r == j)) for r in range(m)]:
            raise AssertionError(f"HO({p}, {q}) Hermite matrix is wrong")
    k, N = dense_filters(p, q)
    Qk = N[0]
    for i, Ni in enumerate(N[1:], start=1):
        # F_i = N_i / Q^k: 1 + O(z^(p+q+2-i)) at 0, O(z^-i) at infinity.
        if any(Ni[j] != Qk[j] for j in range(p + q + 2 - i)) or len(Ni) - 1 > len(Qk) - 1 - i:
            raise AssertionError(f"HO({p}, {q}) dense-output filter {i} is wrong")
