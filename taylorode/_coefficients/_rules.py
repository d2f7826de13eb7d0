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
primitive itself. Every rule adds O(1) operations per order (see `_series.py`), so the
expanded program grows linearly with the order.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

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

    cur = _aux(ctx, "flat", k, lambda j, s: flatten(a[j]))
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
            prod.append(lo[0] * hi[0] if j == 0 else S.cauchy(lo, hi, j))
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
            prod.append(cur[0] * shifted[0] if j == 0 else S.cauchy(cur, shifted, j))
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


def _aux(ctx, name, k, step):
    """Extend the auxiliary series `ctx[name]` to orders 0..k with `step(j, series)`."""
    s = ctx.setdefault(name, [])
    while len(s) <= k:
        s.append(step(len(s), s))
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
RULES["exp2"] = _along(lambda m, a, c, ctx: _aux(ctx, "u", m, lambda j, s: math.log(2) * c[j]))
# expm1: c' = (c + 1) a'
RULES["expm1"] = _along(
    lambda m, a, c, ctx: _aux(ctx, "u", m, lambda j, s: c[0] + 1 if j == 0 else c[j])
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
        w = _aux(ctx, "w", k, lambda j, s: a[j] - b[j])
        sig, u = ctx.setdefault("sig", []), ctx.setdefault("u", [])
        while len(sig) < k:
            j = len(sig)
            sig.append(1 / (1 + jnp.exp(-scale * w[0])) if j == 0 else S.derivative_conv(w, u, j))
            u.append(scale * (sig[j] - (sig[0] ** 2 if j == 0 else S.cauchy(sig, sig, j))))
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
    return _aux(ctx, "u", m, lambda j, s: -w[j])


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
    return _aux(ctx, "u", m, lambda j, s: (2 / math.sqrt(math.pi)) * e[j])


RULES["erf"] = _along(_erf_u)


# erfc = 1 - erf: c' = -(2/sqrt(pi)) exp(-a^2) a'
def _erfc_u(m, a, c, ctx):
    u = _erf_u(m, a, c, ctx)
    return _aux(ctx, "neg_u", m, lambda j, s: -u[j])


RULES["erfc"] = _along(_erfc_u)


def _log_rule(shift):
    def rule(k, ins, outs, ctx, **params):
        (a,) = ins
        if shift:  # log1p(a) = log(1 + a)
            a = _aux(ctx, "one_plus_a", k, lambda j, s: 1 + a[0] if j == 0 else a[j])
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
    dy = _aux(ctx, "dy", m, lambda j, s: S.derivative_series(y, j))
    dx = _aux(ctx, "dx", m, lambda j, s: S.derivative_series(x, j))
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
        re = _aux(ctx, "re", k, lambda j, s: jnp.real(a[j]))
        im = _aux(ctx, "im", k, lambda j, s: jnp.imag(a[j]))
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
