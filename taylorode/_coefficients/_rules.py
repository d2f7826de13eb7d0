"""Per-primitive Taylor rules for the recurrence engine.

A rule computes the order-`k` coefficient of each output of one jaxpr equation:

    rule(k, ins, outs, ctx, **params) -> list of arrays (one per output)

- `ins`: one entry per input, a `Const` (a value that does not depend on t or y) or a
  series (list of coefficients, orders `0..k` available);
- `outs`: the outputs' series so far (orders `0..k-1`);
- `ctx`: a dict private to this equation that persists across orders, for the
  auxiliary series some recurrences need (e.g. `cos` for `sin`);
- `params`: the equation's parameters.

Rules are called for `k >= 1` only: the engine computes order 0 by applying the
primitive itself. Every rule adds O(1) recurrence sums per order (see `_series.py`:
sums of up to `WRITTEN_OUT_TERMS` terms are written out, longer ones stacked), so
beyond that order the expanded program grows linearly with the order.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._errors import TaylorRuleError
from . import _series as S
from ._collect import current


class Const:
    """A value that does not depend on the expansion variables: all its coefficients
    beyond order 0 are zero."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def coeff(x, k):
    """Order-k coefficient of a `Const` or series, as an array (zeros for a Const)."""
    if isinstance(x, Const):
        return x.value if k == 0 else jnp.zeros_like(x.value)
    return x[k]


def series_of(x, k):
    """A series view of orders 0..k of a Const or series."""
    if isinstance(x, Const):
        return [x.value] + [jnp.zeros_like(x.value)] * k
    return x


Rule = Callable[..., list]
RULES: dict[str, Rule] = {}

# Primitives whose outputs have zero derivative (piecewise constant, or cut off from
# differentiation): their series is the order-0 value alone.
ZERO_DERIVATIVE = {
    "sign", "floor", "ceil", "round", "stop_gradient", "is_finite", "nextafter",
    "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor",
    "argmax", "argmin", "iota", "random_bits", "random_seed", "random_wrap",
    "random_unwrap", "rng_bit_generator", "population_count", "shift_left",
    "shift_right_logical", "shift_right_arithmetic", "eq_to", "le_to", "lt_to",
    "reduce_and", "reduce_or", "reduce_xor", "clz", "mulhi",
}


def _register(*names):
    def wrap(fn):
        for name in names:
            RULES[name] = fn
        return fn

    return wrap


# --- linear operations ----------------------------------------------------------------
# Linear in their floating-point inputs jointly (integer/boolean inputs such as indices
# and predicates are taken at the expansion point): order k is the operation applied to
# the order-k coefficients, with constant floating inputs replaced by zeros.

LINEAR = [
    "add", "sub", "neg", "reshape", "broadcast_in_dim", "slice", "dynamic_slice",
    "gather", "concatenate", "transpose", "squeeze", "expand_dims",
    "convert_element_type", "pad", "reduce_sum", "rev", "copy", "copy_p", "select_n",
    "dynamic_update_slice", "scatter-add", "scatter_add", "scatter", "cumsum", "real",
    "imag", "reduce_precision", "split", "add_any", "squeeze_p", "sharding_constraint",
    "reshard", "mesh_cast", "optimization_barrier", "stack", "unstack", "tile",
    "scatter-sub", "scatter_sub",
    # Linear over the reals, which is all a series in real t needs: conj (not linear
    # over the complex numbers), complex(re, im), and the FFTs, including RFFT (real in,
    # complex out) and IRFFT (complex in, real out, which drops the imaginary parts a
    # non-Hermitian input would need).
    "conj", "complex", "fft",
    # Sums over windows (with the identity, 0, as padding).
    "reduce_window_sum",
]


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(coeff(x, 0)), jnp.inexact)


def linear_rule(prim):
    def rule(k, ins, outs, ctx, **params):
        args = [coeff(x, k) if _is_float(x) else coeff(x, 0) for x in ins]
        out = prim.bind(*args, **params)
        return list(out) if prim.multiple_results else [out]

    return rule


# --- products and quotients -----------------------------------------------------------


def _bilinear(prim, k, ins, params):
    a, b = ins
    if isinstance(a, Const) or isinstance(b, Const):
        # Linear in the other operand.
        args = [x.value if isinstance(x, Const) else x[k] for x in (a, b)]
        return [prim.bind(*args, **params)]
    return None


@_register("mul")
def _mul(k, ins, outs, ctx, **params):
    out = _bilinear(lax.mul_p, k, ins, params)
    return out if out is not None else [S.cauchy(ins[0], ins[1], k)]


@_register("dot_general")
def _dot_general(k, ins, outs, ctx, **params):
    out = _bilinear(lax.dot_general_p, k, ins, params)
    if out is not None:
        return out
    a, b = ins
    # sum_j dot(a_j, b_{k-j}) as one batched dot_general over a new leading axis.
    A = jnp.stack([a[j] for j in range(k + 1)])
    B = jnp.stack([b[k - j] for j in range(k + 1)])
    (ca, cb), (ba, bb) = params["dimension_numbers"]
    shift = lambda dims: tuple(d + 1 for d in dims)
    dims = ((shift(ca), shift(cb)), ((0,) + shift(ba), (0,) + shift(bb)))
    new_params = dict(params, dimension_numbers=dims)
    return [jnp.sum(lax.dot_general_p.bind(A, B, **new_params), axis=0)]


@_register("conv_general_dilated")
def _conv_general_dilated(k, ins, outs, ctx, **params):
    # Bilinear, like dot_general: with a constant operand (a stencil, as `jnp.convolve`
    # with a fixed kernel gives) linear in the other, else
    # sum_j conv(lhs_j, rhs_{k-j}).
    conv = lax.conv_general_dilated_p
    out = _bilinear(conv, k, ins, params)
    if out is not None:
        return out
    lhs, rhs = ins
    pairs = [(lhs[j], rhs[k - j]) for j in range(k + 1)]
    if k + 1 <= S.UNSTACKED_TERMS or params["batch_group_count"] != 1:
        # Written out: few terms (order 1 stays transposable, see `_series.py`), or
        # batch groups, which XLA does not combine with feature groups.
        terms = [conv.bind(a, b, **params) for a, b in pairs]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return [total]
    # One convolution for all k + 1 terms: pair j's lhs features and rhs output
    # features side by side, in k + 1 times as many feature groups (group g of pair j
    # is group j G + g), so that each pair is convolved only with itself; then the sum
    # over pairs of the output features.
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    n = k + 1
    big_lhs = jnp.concatenate([a for a, _ in pairs], axis=lhs_spec[1])
    big_rhs = jnp.concatenate([b for _, b in pairs], axis=rhs_spec[0])
    new_params = dict(params, feature_group_count=n * params["feature_group_count"])
    big = jnp.moveaxis(conv.bind(big_lhs, big_rhs, **new_params), out_spec[1], 0)
    total = jnp.sum(jnp.reshape(big, (n, big.shape[0] // n) + big.shape[1:]), axis=0)
    return [jnp.moveaxis(total, 0, out_spec[1])]


@_register("div")
def _div(k, ins, outs, ctx, **params):
    a, b = ins
    if isinstance(b, Const):
        return [a[k] / b.value]
    return [S.quotient(coeff(a, k), b, outs[0], k)]


@_register("square")
def _square(k, ins, outs, ctx, **params):
    return [S.cauchy(ins[0], ins[0], k)]


def _shift_in(x, shift, axis, fill):
    """`x` shifted by `shift` places along `axis` (towards higher indices if `shift > 0`,
    lower if `< 0`), the vacated places filled with `fill`: one `pad`."""
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (shift, -shift, 0)
    return lax.pad(x, jnp.asarray(fill, dtype=x.dtype), config)


@_register("reduce_prod")
def _reduce_prod(k, ins, outs, ctx, axes, **params):
    # A balanced tree of Cauchy products over the reduced elements: ceil(log2 m) levels,
    # each one batched product of the even-indexed rows by the odd-indexed rows. Exact
    # where elements vanish (no logarithms); each level's series persists in ctx, so
    # each order adds O(log m) operations.
    (a,) = ins
    shape = a[0].shape
    m = math.prod(shape[d] for d in axes)
    if m == 0:
        return [jnp.zeros_like(outs[0][0])]
    rest = tuple(d for d in range(len(shape)) if d not in axes)
    flat_shape = (m,) + tuple(shape[d] for d in rest)

    def flatten(x):
        return jnp.reshape(jnp.transpose(x, tuple(axes) + rest), flat_shape)

    cur = _aux(ctx, "flat", k, lambda j, s: flatten(a[j]), keep=False)
    levels = ctx.setdefault("levels", [])
    n, depth = m, 0
    while n > 1:
        if len(levels) <= depth:
            levels.append(([], [], []))
        lo, hi, prod = levels[depth]
        while len(prod) <= k:
            j = len(prod)
            x = cur[j]
            if n % 2:  # pad with the identity: 1 at order 0, 0 above
                fill = jnp.asarray(1 if j == 0 else 0, dtype=x.dtype)
                x = lax.pad(x, fill, [(0, 1, 0)] + [(0, 0, 0)] * (x.ndim - 1))
            lo.append(lax.slice_in_dim(x, 0, n + n % 2, stride=2, axis=0))
            hi.append(lax.slice_in_dim(x, 1, n + n % 2, stride=2, axis=0))
            prod.append(S.kept(lo[0] * hi[0] if j == 0 else S.cauchy(lo, hi, j)))
        cur, n, depth = prod, (n + 1) // 2, depth + 1
    return [jnp.reshape(cur[k], outs[0][0].shape)]


@_register("cumprod")
def _cumprod(k, ins, outs, ctx, axis, reverse, **params):
    # Hillis-Steele prefix products: level L multiplies each running product by the one
    # 2^L places before it (after it if reversed), ceil(log2 m) levels of Cauchy products.
    (a,) = ins
    m = a[0].shape[axis]
    cur, step, depth = a, 1, 0
    levels = ctx.setdefault("levels", [])
    while step < m:
        if len(levels) <= depth:
            levels.append(([], []))
        shifted, prod = levels[depth]
        while len(prod) <= k:
            j = len(prod)
            shifted.append(_shift_in(cur[j], -step if reverse else step, axis, 1 if j == 0 else 0))
            prod.append(S.kept(cur[0] * shifted[0] if j == 0 else S.cauchy(cur, shifted, j)))
        cur, step, depth = prod, 2 * step, depth + 1
    return [cur[k]]


# --- powers ---------------------------------------------------------------------------


def _integer_power_series(a, n, k, ctx):
    """a^n for integer n >= 1 by repeated multiplication (exact at a_0 = 0)."""
    pows = ctx.setdefault("pows", {})
    # a^n = a^(n - n//2) * a^(n//2); memoise intermediate powers' series in ctx.
    def series(m):
        if m == 1:
            return a
        if m not in pows:
            pows[m] = []
        s = pows[m]
        while len(s) <= k:
            j = len(s)
            lo, hi = series(m // 2), series(m - m // 2)
            s.append(lo[0] * hi[0] if j == 0 else S.cauchy(lo, hi, j))
        return s

    return series(n)[k]


@_register("integer_pow")
def _integer_pow(k, ins, outs, ctx, y):
    (a,) = ins
    if y == 0:
        return [jnp.zeros_like(a[0])]
    if y > 0:
        return [_integer_power_series(a, y, k, ctx)]
    # a^-n = 1 / a^n
    denom = ctx.setdefault("denom", [])
    while len(denom) <= k:
        denom.append(_integer_power_series(a, -y, len(denom), ctx))
    return [S.quotient(jnp.zeros_like(a[0]), denom, outs[0], k)]


def _positive_power(k, a, c, alpha, ctx):
    """Order k of c = a^alpha for alpha > 0. Where a starts at 0 the recurrence divides
    by zero: the divisor is taken as 1 there instead, which gives the zero series for a
    series that is zero (the diagonal of `norm(r_i - r_j)`), and the expansion
    registers a check, made once at its end, that marks it invalid where a starts at 0
    and is not zero (no Taylor series exists there: the solver then stops with a
    non-finite result). "Zero" allows rounding: every coefficient within
    `eps^max(2, 1/alpha)` of 0 (XLA may compute one value in two ways, so r_i - r_i
    need not be exactly 0), where a^alpha is itself below rounding."""
    if "a0" not in ctx:
        a0 = a[0]
        ctx["a0"] = jnp.where(a0 == 0, jnp.ones_like(a0), a0)
        collector = current()
        if collector is not None:
            eps = float(jnp.finfo(jnp.result_type(a0)).eps)
            small = eps ** max(2.0, 1 / float(alpha))
            collector.checks.append(lambda: (a0 == 0) & _beyond(a, small))
    return S.power(a, c, alpha, k, a0=ctx["a0"])


def _beyond(a, small):
    """Where some coefficient of order >= 1 of the series `a` (as far as it goes)
    exceeds `small` in absolute value."""
    if len(a) < 2:
        return jnp.zeros(jnp.shape(a[0]), bool)
    return jnp.any(jnp.stack([jnp.abs(x) > small for x in a[1:]]), axis=0)


@_register("sqrt")
def _sqrt(k, ins, outs, ctx, **params):
    return [_positive_power(k, ins[0], outs[0], 0.5, ctx)]


@_register("rsqrt")
def _rsqrt(k, ins, outs, ctx, **params):
    return [S.power(ins[0], outs[0], -0.5, k)]


@_register("cbrt")
def _cbrt(k, ins, outs, ctx, **params):
    return [_positive_power(k, ins[0], outs[0], 1 / 3, ctx)]


@_register("pow")
def _pow(k, ins, outs, ctx, **params):
    a, b = ins
    if isinstance(b, Const) and not jnp.iscomplexobj(b.value):
        alpha = b.value
        if np.ndim(alpha) or isinstance(alpha, jax.core.Tracer):
            # `power` multiplies the series by an exponent array: in the result's dtype,
            # since strict dtype promotion refuses integer exponents (`lax.pow(x, ints)`).
            if "alpha" not in ctx:
                ctx["alpha"] = lax.convert_element_type(alpha, outs[0][0].dtype)
            alpha = ctx["alpha"]
        elif float(alpha) > 0:
            return [_positive_power(k, series_of(a, k), outs[0], alpha, ctx)]
        return [S.power(series_of(a, k), outs[0], alpha, k)]
    # a^b = exp(b log a), all three as series; also for a constant complex b, which
    # `power` would take as a Python float.
    la = _aux(ctx, "log_a", k, lambda j, s: jnp.log(coeff(a, 0)) if j == 0 else S.logarithm(series_of(a, j), s, j))
    prod = _aux(ctx, "b_log_a", k, lambda j, s: S.cauchy(series_of(b, j), la, j))
    return [S.derivative_conv(prod, outs[0], k)]


# --- auxiliary series -----------------------------------------------------------------


def _aux(ctx, name, k, step, keep=True):
    """Extend the auxiliary series `ctx[name]` to orders 0..k with `step(j, series)`,
    each coefficient through `_series.kept` unless `keep` is false (a linear function
    of other series, such as a constant multiple, cheap to recompute where it is read).

    Series that rules carry in structures of their own (the partial products of
    `cumprod` and `reduce_prod`, the Bessel and polygamma series) go through `kept` the
    same way where their recomputation would compound: 50 states, order 13, one
    coefficient set 1.8x faster for a cumulative product (2.2x vmapped) and for `i0e`
    (one state; 1.2x slower vmapped) (benchmarks/results_kernels_carried.md). An integer
    power's intermediate powers are not kept: each is one Cauchy product of the operand,
    and keeping them made the FPUT chain's `d**3` 1.1x (single) to 1.8x (vmapped) slower
    (bench_kernels.py, 2026-12-04)."""
    s = ctx.setdefault(name, [])
    while len(s) <= k:
        c = step(len(s), s)
        s.append(S.kept(c) if keep else c)
    return s


def _along(du):
    """A rule for c = g(a) with c' = u a', where `du(m, a, c, ctx)` returns the
    series u up to order m = k - 1."""

    def rule(k, ins, outs, ctx, **params):
        (a,) = ins
        return [S.derivative_conv(a, du(k - 1, a, outs[0], ctx), k)]

    return rule


# exp: c' = c a'
RULES["exp"] = _along(lambda m, a, c, ctx: c)
# exp2: c' = ln2 c a'
RULES["exp2"] = _along(lambda m, a, c, ctx: _aux(ctx, "u", m, lambda j, s: math.log(2) * c[j], keep=False))
# expm1: c' = (c + 1) a'
RULES["expm1"] = _along(
    lambda m, a, c, ctx: _aux(ctx, "u", m, lambda j, s: c[0] + 1 if j == 0 else c[j], keep=False)
)
# tanh: c' = (1 - c^2) a'
RULES["tanh"] = _along(
    lambda m, a, c, ctx: _aux(
        ctx, "u", m, lambda j, s: 1 - c[0] ** 2 if j == 0 else -S.cauchy(c, c, j)
    )
)
# logistic: c' = (c - c^2) a'
RULES["logistic"] = _along(
    lambda m, a, c, ctx: _aux(ctx, "u", m, lambda j, s: c[j] - S.cauchy(c, c, j))
)
# --- JAX's own custom_jvp functions, by name -------------------------------------------
# Their primal code may have kinks that cancel (logaddexp: max(a, b) + log1p(exp(-|a-b|)),
# smooth though both pieces have a kink at a = b); expanding that code would be wrong at
# the kink, as jax.jvp would be without the custom rule. The engine looks these up by
# the name JAX records for the custom_jvp_call.
CUSTOM_JVP_RULES: dict[str, Rule] = {}


def _logaddexp(scale):
    """c = logaddexp(a, b) (`scale` = 1) or logaddexp2 (`scale` = ln 2): with
    w = a - b, c = b + softplus(scale w) / scale, so c' = b' + sigma(scale w) w', and
    sigma(scale w)' = scale (sigma - sigma^2) w'."""

    def rule(k, ins, outs, ctx, **params):
        a, b = (series_of(x, k) for x in ins)
        w = _aux(ctx, "w", k, lambda j, s: a[j] - b[j], keep=False)
        sig, u = ctx.setdefault("sig", []), ctx.setdefault("u", [])
        while len(sig) < k:
            j = len(sig)
            sig.append(S.kept(1 / (1 + jnp.exp(-scale * w[0])) if j == 0 else S.derivative_conv(w, u, j)))
            u.append(S.kept(scale * (sig[j] - (sig[0] ** 2 if j == 0 else S.cauchy(sig, sig, j)))))
        return [b[k] + S.derivative_conv(w, sig, k)]

    return rule


CUSTOM_JVP_RULES["logaddexp"] = _logaddexp(1.0)
CUSTOM_JVP_RULES["logaddexp2"] = _logaddexp(math.log(2))


# tan: c' = (1 + c^2) a'
RULES["tan"] = _along(
    lambda m, a, c, ctx: _aux(
        ctx, "u", m, lambda j, s: 1 + c[0] ** 2 if j == 0 else S.cauchy(c, c, j)
    )
)


def _reciprocal_of(ctx, name, m, w):
    """Series of 1/w up to order m, w a series function j -> w_j (memoised in ctx)."""
    ws = _aux(ctx, name + "_w", m, lambda j, s: w(j))
    return _aux(
        ctx, name, m, lambda j, s: 1 / ws[0] if j == 0 else S.quotient(jnp.zeros_like(ws[0]), ws, s, j)
    )


def _power_of(ctx, name, m, w, alpha):
    """Series of w^alpha up to order m."""
    ws = _aux(ctx, name + "_w", m, lambda j, s: w(j))
    return _aux(ctx, name, m, lambda j, s: ws[0] ** alpha if j == 0 else S.power(ws, s, alpha, j))


def _one_plus_sq(a, sign):
    # j -> order j of 1 + sign a^2
    return lambda j: (1 + sign * a[0] ** 2) if j == 0 else sign * S.cauchy(a, a, j)


# atan: c' = a' / (1 + a^2)
RULES["atan"] = _along(lambda m, a, c, ctx: _reciprocal_of(ctx, "u", m, _one_plus_sq(a, 1)))
# atanh: c' = a' / (1 - a^2)
RULES["atanh"] = _along(lambda m, a, c, ctx: _reciprocal_of(ctx, "u", m, _one_plus_sq(a, -1)))
# asin: c' = a' (1 - a^2)^(-1/2)
RULES["asin"] = _along(lambda m, a, c, ctx: _power_of(ctx, "u", m, _one_plus_sq(a, -1), -0.5))
# acos: c' = -a' (1 - a^2)^(-1/2)
def _acos_u(m, a, c, ctx):
    w = _power_of(ctx, "w", m, _one_plus_sq(a, -1), -0.5)
    return _aux(ctx, "u", m, lambda j, s: -w[j], keep=False)


RULES["acos"] = _along(_acos_u)
# asinh: c' = a' (1 + a^2)^(-1/2)
RULES["asinh"] = _along(lambda m, a, c, ctx: _power_of(ctx, "u", m, _one_plus_sq(a, 1), -0.5))
# acosh: c' = a' (a^2 - 1)^(-1/2), the root being 1 / (sqrt(a - 1) sqrt(a + 1)): for
# real a > 1 the same, for complex a the one of the principal acosh. (The principal root
# of a^2 - 1, which JAX's own JVP of acosh takes, has the wrong sign where Re a < 0.)
def _acosh_u(m, a, c, ctx):
    w = _aux(ctx, "w", m, lambda j, s: (a[0] ** 2 - 1) if j == 0 else S.cauchy(a, a, j))
    return _aux(
        ctx, "u", m,
        lambda j, s: lax.rsqrt(a[0] - 1) * lax.rsqrt(a[0] + 1) if j == 0 else S.power(w, s, -0.5, j),
    )


RULES["acosh"] = _along(_acosh_u)
# erf: c' = (2/sqrt(pi)) exp(-a^2) a'


def _erf_u(m, a, c, ctx):
    w = _aux(ctx, "w", m, lambda j, s: -(a[0] ** 2) if j == 0 else -S.cauchy(a, a, j))
    e = _aux(ctx, "e", m, lambda j, s: jnp.exp(w[0]) if j == 0 else S.derivative_conv(w, s, j))
    return _aux(ctx, "u", m, lambda j, s: (2 / math.sqrt(math.pi)) * e[j], keep=False)


RULES["erf"] = _along(_erf_u)


# erfc = 1 - erf: c' = -(2/sqrt(pi)) exp(-a^2) a'
def _erfc_u(m, a, c, ctx):
    u = _erf_u(m, a, c, ctx)
    return _aux(ctx, "neg_u", m, lambda j, s: -u[j], keep=False)


RULES["erfc"] = _along(_erfc_u)


# erf_inv: c = erfinv(a), c' = (sqrt(pi)/2) exp(c^2) a'
def _erf_inv_u(m, a, c, ctx):
    w = _aux(ctx, "w", m, lambda j, s: c[0] ** 2 if j == 0 else S.cauchy(c, c, j))
    e = _aux(ctx, "e", m, lambda j, s: jnp.exp(w[0]) if j == 0 else S.derivative_conv(w, s, j))
    return _aux(ctx, "u", m, lambda j, s: (math.sqrt(math.pi) / 2) * e[j], keep=False)


RULES["erf_inv"] = _along(_erf_inv_u)


# --- chains of functions -------------------------------------------------------------------


class _Ladder:
    """Series of a chain of functions u_L(a(t)), L = 0, 1, 2, ..., each of whose
    derivatives needs the next one: u_L' = rate_L a', where the rate of level L involves
    levels L and L + 1 (for the polygamma functions, u_L = polygamma(n + L, a) and
    rate_L = u_{L+1}). No finite set of levels closes, so u_0 to order m needs u_1 to
    order m - 1, ..., u_m at order 0: by induction, order i of level L depends on level
    L + i at order 0 only.

    The first `size` levels are expanded together as one stacked series, with level
    `size` (which the top level's rate needs) at its order-0 value and zeros above it:
    orders i <= size - L of level L are then exact. Each order adds a few stacked
    operations, whatever the number of levels, so the program stays O(order); where an
    order beyond `size` is asked for, the ladder is rebuilt with twice as many levels
    (from its order-0 values; the orders so far recomputed once), which at most doubles
    that. The work per order grows with the levels: O(order^2) per order, O(order^3)
    in all, on arrays `size` times the value's size.

    - `a`: the argument's series (`.a`: with the leading axis);
    - `values(count)`: the order-0 values of levels 0..count-1, stacked on a new axis 0;
    - `rate(u, v, i)`: order i of the stacked rates, from the stacked series `u` of
        levels 0..size-1 and `v` of levels 1..size (orders 0..i).
    """

    def __init__(self, a, values, rate, size=8):
        self.a, self.values, self.rate = _Broadcast(a), values, rate
        self.levels = {}
        self._build(size)

    def _build(self, size):
        self.size = size
        first = self.values(size + 1)
        self.top = first[size]
        self.u, self.v, self.rates = [first[:size]], [first[1:]], []

    def series(self, level, m):
        """Level `level`'s series to order m (a list, memoised: the orders read before
        a rebuild are kept)."""
        out = self.levels.setdefault(level, [])
        if len(out) > m:
            return out
        if level + m > self.size:
            self._build(max(2 * self.size, level + m))
        u, v, rates = self.u, self.v, self.rates
        while len(u) <= m:
            j = len(u)
            while len(rates) < j:
                rates.append(S.kept(self.rate(u, v, len(rates))))
            u.append(S.kept(S.derivative_conv(self.a, rates, j)))
            v.append(jnp.concatenate([u[j][1:], jnp.zeros_like(self.top)[None]]))
        while len(out) <= m:
            out.append(u[len(out)][level])
        return out


class _Broadcast:
    """A series with a new leading axis of size 1 on each coefficient, for products with
    stacked series (made as it is read, once per coefficient: the series grows)."""

    def __init__(self, a):
        self.a, self.cache = a, []

    def __getitem__(self, j):
        while len(self.cache) <= j:
            self.cache.append(self.a[len(self.cache)][None])
        return self.cache[j]


# --- gamma function family ---------------------------------------------------------------
# lgamma' = digamma, digamma' = polygamma(1, .), polygamma(n, .)' = polygamma(n + 1, .):
# the gamma function satisfies no algebraic differential equation (Hölder 1887), so no
# fixed set of these series closes under differentiation; they form a `_Ladder`.


def _polygamma_ladder(ctx, a, n):
    """The ladder u_L = polygamma(n + L, a), for a constant order n (an array, or 0)."""
    if "ladder" not in ctx:

        def values(count):
            a0 = a[0]
            levels = jnp.arange(count, dtype=a0.dtype).reshape((count,) + (1,) * a0.ndim)
            orders = levels + jnp.broadcast_to(jnp.asarray(n, a0.dtype), a0.shape)[None]
            return lax.polygamma(*jnp.broadcast_arrays(orders, a0[None]))

        ctx["ladder"] = _Ladder(a, values, lambda u, v, i: v[i])
    return ctx["ladder"]


# lgamma: c' = digamma(a) a'
RULES["lgamma"] = _along(lambda m, a, c, ctx: _polygamma_ladder(ctx, a, 0).series(0, m))
# digamma: c' = polygamma(1, a) a'
RULES["digamma"] = _along(lambda m, a, c, ctx: _polygamma_ladder(ctx, a, 1).series(0, m))


@_register("polygamma")
def _polygamma(k, ins, outs, ctx, **params):
    # polygamma(n, a): c' = polygamma(n + 1, a) a', for a constant order n.
    n, a = ins
    if not isinstance(n, Const):
        raise TaylorRuleError(
            "polygamma(n, x) is differentiable in x only (as in JAX), but its order n "
            f"depends on t or y, at {ctx.get('site') or '<unknown location>'}. Make n a constant."
        )
    u = _polygamma_ladder(ctx, a, jnp.asarray(n.value) + 1).series(0, k - 1)
    return [S.derivative_conv(a, u, k)]


# --- exponentially scaled modified Bessel functions ---------------------------------------
# i0e(x) = exp(-|x|) I0(x) and i1e(x) = exp(-|x|) I1(x) have a kink at x = 0, from |x|
# (a switch, see `_switches.py`): the series follows the branch of s = sign(x_0), s = 0
# at x_0 = 0 as in JAX's derivatives (the series of I0 and I1 themselves there). With s
# fixed, p = i0e(a) and q = i1e(a) are analytic, and expanded together (like sin and
# cos):
#     p' = (q - s p) a',    q' = (p - s q - r) a',    r = q / a  (-> 1/2 at a = 0).
# The series of r as a quotient, (q_j - sum_{i>=1} a_i r_{j-i}) / a_0, multiplies
# rounding errors by about |a_1 / a_0| per order: harmless for |a_0| >= `_BESSEL_NEAR`,
# where a step that would let it grow is cut short anyway (by the switch at a = 0), but
# useless near 0, where the solvers restart after crossing that switch. There r comes
# from a ladder of series without divisions: R_L = exp(-s x) x^-L I_L(x) is entire
# (R_0 = p, R_1 = r) and
#     R_L' = (a R_{L+1} - s R_L) a',
# with the order-0 values R_L(x) = exp(-|x|) sum_i (x^2/4)^i / (2^L i! (i + L)!), whose
# first `_BESSEL_TERMS` terms give R_L to rounding for |x| < `_BESSEL_NEAR`. Both are
# computed and the one for each element's a_0 selected.
_BESSEL_NEAR = 2.0
_BESSEL_TERMS = 15  # the first term left out is below (x^2/4)^15 / (15!)^2 < 1e-24


def _bessel_ladder(ctx, a):
    """The ladder R_L (see above), for the elements with |a_0| < `_BESSEL_NEAR` (the
    others see a_0 = 0 in the order-0 values)."""
    sign, near = ctx["sign"], ctx["near"]

    def values(count):
        x0 = jnp.where(near, a[0], 0)[None]  # a double `where`: finite everywhere
        z = x0 * x0 / 4
        coeffs = np.array([
            [1 / (2.0**level * math.factorial(i) * math.factorial(i + level)) for level in range(count)]
            for i in range(_BESSEL_TERMS)
        ]).reshape((_BESSEL_TERMS, count) + (1,) * (z.ndim - 1))
        acc = jnp.asarray(coeffs[-1], z.dtype)
        for c in coeffs[-2::-1]:
            acc = acc * z + jnp.asarray(c, z.dtype)
        return jnp.exp(-jnp.abs(x0)) * acc

    ladder = _Ladder(a, values, lambda u, v, i: S.cauchy(ladder.a, v, i) - sign[None] * u[i])
    return ladder


def _bessel_pair(ctx, a, k):
    """The series (p, q) = (i0e(a), i1e(a)) to order k."""
    if "p" not in ctx:
        a0 = a[0]
        ctx["sign"] = jnp.sign(a0)
        ctx["near"] = jnp.abs(a0) < _BESSEL_NEAR
        ctx["divisor"] = jnp.where(ctx["near"], 1, a0)
        ctx["ladder"] = _bessel_ladder(ctx, a)
        ctx["p"], ctx["q"], ctx["r"] = [lax.bessel_i0e(a0)], [lax.bessel_i1e(a0)], []
    sign, near = ctx["sign"], ctx["near"]
    p, q, r = ctx["p"], ctx["q"], ctx["r"]
    while len(p) <= k:
        j = len(p)  # order j of p and q needs r to order j - 1
        i = len(r)
        if i == 0:
            far = q[0] / ctx["divisor"]
        else:
            far = S.quotient(q[i], [ctx["divisor"]] + a[1 : i + 1], r, i)
        r.append(S.kept(jnp.where(near, ctx["ladder"].series(1, i)[i], far)))
        up = _aux(ctx, "up", j - 1, lambda n, _: q[n] - sign * p[n], keep=False)
        uq = _aux(ctx, "uq", j - 1, lambda n, _: p[n] - sign * q[n] - r[n], keep=False)
        p.append(S.kept(S.derivative_conv(a, up, j)))
        q.append(S.kept(S.derivative_conv(a, uq, j)))
    return p, q


@_register("bessel_i0e")
def _bessel_i0e(k, ins, outs, ctx, **params):
    return [_bessel_pair(ctx, ins[0], k)[0][k]]


@_register("bessel_i1e")
def _bessel_i1e(k, ins, outs, ctx, **params):
    return [_bessel_pair(ctx, ins[0], k)[1][k]]


def _log_rule(shift):
    def rule(k, ins, outs, ctx, **params):
        (a,) = ins
        if shift:  # log1p(a) = log(1 + a)
            a = _aux(ctx, "one_plus_a", k, lambda j, s: 1 + a[0] if j == 0 else a[j], keep=False)
        return [S.logarithm(a, outs[0], k)]

    return rule


RULES["log"] = _log_rule(shift=False)
RULES["log1p"] = _log_rule(shift=True)


def _sincos(partner0, sign):
    """c = g(a) with c' = u a', where u is the "partner" function of g with
    u_0 = partner0(a_0) and u_j = sign * (order j of the integral of c a'):
    sin: u = cos, cos_j = -sum(...sin...); cos: u = -sin; sinh: u = cosh; cosh: u = sinh."""
    return _along(
        lambda m, a, c, ctx: _aux(
            ctx, "u", m, lambda j, s: partner0(a[0]) if j == 0 else sign * S.derivative_conv(a, c, j)
        ),
    )


RULES["sin"] = _sincos(lax.cos, -1)
RULES["cos"] = _sincos(lambda x: -lax.sin(x), -1)
RULES["sinh"] = _sincos(lax.cosh, 1)
RULES["cosh"] = _sincos(lax.sinh, 1)


@_register("atan2")
def _atan2(k, ins, outs, ctx, **params):
    # c = atan2(y, x): c' = (x y' - y x') / (x^2 + y^2).
    y, x = (series_of(v, k) for v in ins)
    m = k - 1
    dy = _aux(ctx, "dy", m, lambda j, s: S.derivative_series(y, j), keep=False)
    dx = _aux(ctx, "dx", m, lambda j, s: S.derivative_series(x, j), keep=False)
    num = _aux(ctx, "num", m, lambda j, s: S.cauchy(x, dy, j) - S.cauchy(y, dx, j))
    den = _aux(ctx, "den", m, lambda j, s: S.cauchy(x, x, j) + S.cauchy(y, y, j))
    rate = _aux(ctx, "rate", m, lambda j, s: num[j] / den[0] if j == 0 else S.quotient(num[j], den, s, j))
    return [rate[m] / k]


# --- piecewise: the branch active at the expansion point -------------------------------


# At a kink exactly at the expansion point these follow JAX's own derivative
# conventions (abs: the x >= 0 branch; max/min: half each at a tie), so the engine
# agrees with jax.jvp there too.


@_register("abs")
def _abs(k, ins, outs, ctx, **params):
    (a,) = ins
    if jnp.iscomplexobj(a[0]):
        # |a| = (re^2 + im^2)^(1/2): a real series, smooth wherever a != 0.
        re = _aux(ctx, "re", k, lambda j, s: jnp.real(a[j]), keep=False)
        im = _aux(ctx, "im", k, lambda j, s: jnp.imag(a[j]), keep=False)
        w = _aux(ctx, "w", k, lambda j, s: S.cauchy(re, re, j) + S.cauchy(im, im, j))
        return [S.power(w, outs[0], 0.5, k)]
    return [jnp.where(a[0] >= 0, a[k], -a[k])]


@_register("rem")
def _rem(k, ins, outs, ctx, **params):
    # rem(x, y) = x - y trunc(x/y), with trunc(x/y) piecewise constant: taken at the
    # expansion point, from the primal remainder so that it is an exact integer.
    x, y = ins
    if "n" not in ctx:
        ctx["n"] = jnp.round((coeff(x, 0) - outs[0][0]) / coeff(y, 0))
    return [coeff(x, k) - ctx["n"] * coeff(y, k)]


def _choose(first_wins):
    def rule(k, ins, outs, ctx, **params):
        a, b = ins
        a0, b0, ak, bk = coeff(a, 0), coeff(b, 0), coeff(a, k), coeff(b, k)
        return [jnp.where(first_wins(a0, b0), ak, jnp.where(a0 == b0, 0.5 * (ak + bk), bk))]

    return rule


RULES["max"] = _choose(lambda a, b: a > b)
RULES["min"] = _choose(lambda a, b: a < b)


@_register("clamp")
def _clamp(k, ins, outs, ctx, **params):
    # clamp = min(max(x, lo), hi): the upper bound's coefficients where max(x, lo) > hi
    # (so also for a reversed range lo > hi, where the value is hi whatever x is), the
    # lower bound's where x < lo < hi, x's where lo < x < hi. On a bound (x = lo or
    # x = hi) the derivative is zero, as JAX's JVP of clamp has it. The masks are taken
    # once, at order 1.
    lo, x, hi = ins
    if "masks" not in ctx:
        x0, lo0, hi0 = coeff(x, 0), coeff(lo, 0), coeff(hi, 0)
        ctx["masks"] = ((x0 > hi0) | (lo0 > hi0), (x0 < lo0) & (lo0 < hi0), (lo0 < x0) & (x0 < hi0))
    on_hi, on_lo, on_x = ctx["masks"]
    return [jnp.where(on_hi, coeff(hi, k), jnp.where(on_lo, coeff(lo, k), jnp.where(on_x, coeff(x, k), 0)))]


def _reduce_choose():
    def rule(k, ins, outs, ctx, axes, **params):
        (a,) = ins
        # The coefficient of the extremal element (ties share equally).
        mask = ctx.get("mask")
        if mask is None:
            best = jnp.expand_dims(outs[0][0], axes)
            mask = (a[0] == best).astype(a[0].dtype)
            mask = ctx.setdefault("mask", mask / jnp.sum(mask, axis=axes, keepdims=True))
        return [jnp.sum(mask * a[k], axis=axes)]

    return rule


RULES["reduce_max"] = _reduce_choose()
RULES["reduce_min"] = _reduce_choose()


# --- windowed reductions ------------------------------------------------------------------


class Windows:
    """The candidates of every window of a windowed max or min (`reduce_window_max`,
    `reduce_window_min`, or a generic `reduce_window` whose reducer is `max` or `min`):
    for output element `o` and window position `w`, the flat index of the operand's
    element there, or `size` (one past the end) where the window lies on padding or on a
    hole of the base dilation, which holds the initial value. A generic reduce_window
    also combines the initial value into every window (`extra`): one more candidate,
    at `size` too. The table is static (NumPy), from the shapes and window parameters."""

    def __init__(self, shape, window_dimensions, window_strides, padding, base_dilation,
                 window_dilation, extra: bool):
        ndim = len(shape)
        size = math.prod(shape)
        flat_strides = [math.prod(shape[d + 1:]) for d in range(ndim)]
        index = np.zeros((), np.int64)
        valid = np.ones((), bool)
        out_shape = []
        for d in range(ndim):
            n, (lo, hi) = shape[d], padding[d]
            dilated = (n - 1) * base_dilation[d] + 1 if n else 0
            extent = (window_dimensions[d] - 1) * window_dilation[d] + 1
            count = max(0, (lo + dilated + hi - extent) // window_strides[d] + 1)
            out_shape.append(count)
            # Position, in the dilated operand, of window element w of output o.
            pos = (np.arange(count)[:, None] * window_strides[d]
                   + np.arange(window_dimensions[d])[None, :] * window_dilation[d] - lo)
            ok = (pos >= 0) & (pos % base_dilation[d] == 0) & (pos // base_dilation[d] < n)
            # Output axis d at position d, window axis d at position ndim + d.
            view = [1] * (2 * ndim)
            view[d], view[ndim + d] = count, window_dimensions[d]
            index = index + np.reshape(np.where(ok, pos // base_dilation[d], 0) * flat_strides[d], view)
            valid = valid & np.reshape(ok, view)
        index = np.where(valid, index, size).reshape(math.prod(out_shape), -1)
        if extra:
            index = np.concatenate([index, np.full((index.shape[0], 1), size)], axis=1)
        self.index = index
        self.out_shape = tuple(out_shape)

    def candidates(self, a, init, j):
        """Order j of every candidate, `(outputs, candidates)`, from the operand `a` and
        the initial value `init` (series or Const)."""
        flat = jnp.ravel(coeff(a, j))
        fill = jnp.reshape(jnp.asarray(coeff(init, j), flat.dtype), (1,))
        return jnp.take(jnp.concatenate([flat, fill]), self.index, axis=0)

    def weights(self, a, init, out0):
        """Where each window's extremum (`out0`, the order-0 output) is: each candidate
        equal to it has an equal share (ties share, as in `_reduce_choose`)."""
        mask = (self.candidates(a, init, 0) == jnp.reshape(out0, (-1, 1))).astype(out0.dtype)
        return mask / jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1)


def window_choice(name, ins, params):
    """`(Windows, operand, initial value)` of a windowed max or min, or `None` for a
    `reduce_window` with another reducer."""
    window = {key: params[key] for key in (
        "window_dimensions", "window_strides", "padding", "base_dilation", "window_dilation")}
    if name in ("reduce_window_max", "reduce_window_min"):
        # The identity pads these: it never wins, unless a window is padding only.
        (a,) = ins
        identity = -np.inf if name == "reduce_window_max" else np.inf
        init = Const(np.asarray(identity, jnp.result_type(coeff(a, 0))))
        return Windows(jnp.shape(coeff(a, 0)), **window, extra=False), a, init
    if name == "reduce_window" and _window_reducer(params) in (lax.max_p, lax.min_p):
        a, init = ins
        return Windows(jnp.shape(coeff(a, 0)), **window, extra=True), a, init
    return None


def _window_reducer(params):
    """The primitive of a generic reduce_window's reducer if it is one binary operation
    on one operand (`None` otherwise)."""
    jaxpr = params["jaxpr"]
    if params["consts"] or len(jaxpr.eqns) != 1 or len(jaxpr.invars) != 2:
        return None
    (eqn,) = jaxpr.eqns
    if set(eqn.invars) != set(jaxpr.invars) or list(eqn.outvars) != list(jaxpr.outvars):
        return None
    return eqn.primitive


def _window_choose(name):
    """reduce_window_max/min: the coefficient of each window's extremal candidate at the
    expansion point (ties share equally, as in `_reduce_choose`; JAX's own JVP picks
    one of them)."""

    def rule(k, ins, outs, ctx, **params):
        if "choice" not in ctx:
            windows, a, init = window_choice(name, ins, params)
            ctx["choice"] = (windows, a, init, windows.weights(a, init, outs[0][0]))
        windows, a, init, weights = ctx["choice"]  # (series grow in place)
        out = jnp.sum(weights * windows.candidates(a, init, k), axis=1)
        return [jnp.reshape(out, windows.out_shape)]

    return rule


RULES["reduce_window_max"] = _window_choose("reduce_window_max")
RULES["reduce_window_min"] = _window_choose("reduce_window_min")
_generic_window_choose = _window_choose("reduce_window")


@_register("reduce_window")
def _reduce_window(k, ins, outs, ctx, **params):
    # A generic reduce_window, which JAX emits for a reducer or an initial value it
    # does not recognise (a max with initial value 0, a sum starting at 1): a windowed
    # sum, linear in the operand and the initial value jointly, or a windowed max or min.
    reducer = _window_reducer(params)
    if reducer is lax.add_p:
        operand, init = (coeff(x, k) for x in ins)
        window = [params[key] for key in (
            "window_dimensions", "window_strides", "padding", "base_dilation", "window_dilation")]
        return [lax.reduce_window(operand, init, lax.add, *window)]
    if reducer in (lax.max_p, lax.min_p):
        return _generic_window_choose(k, ins, outs, ctx, **params)
    raise TaylorRuleError(
        "method='recurrence' has Taylor rules for `lax.reduce_window` with one operand and "
        f"the reducer add, max or min only, not {getattr(reducer, 'name', 'this reducer')}, "
        f"used at {ctx.get('site') or '<unknown location>'}. Write the windows out "
        "(as slices) with supported operations."
    )


def _cumulative_choose(combine):
    """cummax/cummin: the coefficient of the running extremum. JAX differentiates these
    as an associative scan of max/min, so the order-k coefficients are the same scan
    over (order-0 value, order-k coefficient) pairs, ties sharing equally as in `_choose`."""

    def pair(x, y):
        (x0, xk), (y0, yk) = x, y
        first = combine(x0, y0)
        ck = jnp.where(first, xk, jnp.where(x0 == y0, 0.5 * (xk + yk), yk))
        return jnp.where(first, x0, y0), ck

    def rule(k, ins, outs, ctx, axis, reverse, **params):
        (a,) = ins
        return [lax.associative_scan(pair, (a[0], a[k]), reverse=reverse, axis=axis)[1]]

    return rule


RULES["cummax"] = _cumulative_choose(lambda a, b: a > b)
RULES["cummin"] = _cumulative_choose(lambda a, b: a < b)


@_register("sort")
def _sort(k, ins, outs, ctx, dimension, is_stable, num_keys, **params):
    # The permutation at the expansion point (as JAX's own sort JVP: the operands'
    # order-0 values sorted together with an iota), applied to every float operand's
    # order-k coefficients. Ties keep the order that sort gives the iota.
    perm = ctx.get("perm")
    if perm is None:
        x0s = [coeff(x, 0) for x in ins]
        shape = x0s[0].shape
        iota = lax.broadcasted_iota(jnp.int32, shape, dimension)
        perm = lax.sort_p.bind(*x0s, iota, dimension=dimension, is_stable=is_stable, num_keys=num_keys)[-1]
        ctx["perm"] = perm
    ndim = perm.ndim
    batch = tuple(d for d in range(ndim) if d != dimension)
    dnums = lax.GatherDimensionNumbers(
        offset_dims=(), collapsed_slice_dims=(dimension,), start_index_map=(dimension,),
        operand_batching_dims=batch, start_indices_batching_dims=batch,
    )
    idx = jnp.expand_dims(perm, ndim)
    new = []
    for x, o in zip(ins, outs):
        if isinstance(o, Const):  # integer operand (e.g. argsort's iota): no series
            new.append(o.value)
        else:
            new.append(lax.gather(coeff(x, k), idx, dnums, (1,) * ndim,
                                  mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS))
    return new
