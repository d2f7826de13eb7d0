"""Stable functions for vector fields: see `taylorode/stable.py` for the overview.

Every function here is a [`taylorode.custom_taylor`][] function (a `jax.custom_jvp`
with a Taylor rule), or a composition of them, with

- a primal that is finite at the singular point (the documented value there);
- an explicit JVP, equal to the exact derivative away from the singular point and to
  the documented (finite) choice at it;
- a Taylor rule that is the exact recurrence away from the singular point and returns
  zero coefficients at it, consistent with the JVP (the rule at order 1 is the JVP).

The recurrence engine emits a rule's operations into the program it builds, so
`jax.grad` through a solve differentiates them: every division or power whose
argument vanishes at the singular point is written with the double-`jnp.where` trick
(the argument is replaced by 1 there, and the result by the documented choice), so
that reverse mode multiplies only finite numbers by its zero cotangents.

Static parameters (`axis`, `keepdims`, `alpha`) are closed over by one
`custom_taylor` function per distinct value, cached, so the registry of Taylor rules
holds one entry per value used rather than one per call, and repeated calls produce
the same `custom_jvp` function (the same jaxpr, hence `jax.jit` cache hits).
"""

import functools
import math
import operator

import jax
import jax.numpy as jnp
from jax import lax

from . import series as S
from ._custom_taylor import custom_taylor


# Integer exponents up to this size are computed as `lax.integer_pow` (exact at 0 in
# every engine); larger ones take the general path.
_MAX_INTEGER_POW = 64


def _inexact(x):
    """`x` as a floating-point array (integers become the default float dtype)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = jnp.asarray(x, dtype=float)
    return x


def _broadcast_like(fn, *xs):
    """The operands broadcast to the shape and cast to the dtype that `fn(*xs)` (a
    jax.numpy function) would give, with jax.numpy's own promotion checks (strict dtype
    promotion, rank promotion); `fn` is only evaluated abstractly."""
    out = jax.eval_shape(fn, *xs)
    return [jnp.broadcast_to(jnp.asarray(x).astype(out.dtype), out.shape) for x in xs]


def _safe(mask, x):
    """`x` with the masked entries replaced by 1: the inner `where` of the double-where
    trick, so that divisions and fractional powers of it are finite everywhere."""
    return jnp.where(mask, jnp.ones_like(x), x)


def _masked(mask, x):
    """`x` with the masked entries replaced by 0: the outer `where`."""
    return jnp.where(mask, jnp.zeros_like(x), x)


def _inner(c, k):
    """`sum_{j=1..k-1} c_j c_{k-j}` from orders `0..k-1` of `c`: the part of order `k`
    of `c^2` that does not involve `c_0` or `c_k`."""
    if k < 2:
        return jnp.zeros_like(c[0])
    tail = c[1:k]
    return S.cauchy(tail, tail, k - 2)


def _power_rule(alpha):
    """Taylor rule of `c = x**alpha`: the power recurrence where `x_0 != 0`, 0 where
    `x_0 == 0`."""

    def rule(k, inputs, output):
        (x,) = inputs
        mask = x[0] == 0
        xs = [_safe(mask, x[0])] + list(x[1 : k + 1])
        cs = [_safe(mask, output[0])] + list(output[1:k])
        return _masked(mask, S.power(xs, cs, alpha, k))

    return rule


def _power_jvp(fn, alpha, raise_to):
    """JVP of `fn(x) = x**alpha`: `alpha x**(alpha - 1) dx`, 0 where `x == 0`
    (`raise_to(x, a)` computes `x**a`)."""

    def jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        mask = x == 0
        slope = _masked(mask, alpha * raise_to(_safe(mask, x), alpha - 1))
        return fn(x), slope * dx

    return jvp


# --- sqrt and cbrt ---------------------------------------------------------------------


def stable_sqrt(x):
    return jnp.sqrt(x)


_sqrt = custom_taylor(stable_sqrt)
_sqrt.defjvp(_power_jvp(_sqrt, 0.5, lambda x, a: lax.rsqrt(x)))
_sqrt.def_taylor(_power_rule(0.5))


def sqrt(x):
    """Square root, with zero derivative and zero Taylor coefficients at 0.

    Away from 0 this is `jnp.sqrt(x)`, with its exact derivative and Taylor series. At
    `x = 0` the value is 0 and the derivative, and every Taylor coefficient of order
    `>= 1`, is 0 (the true derivative is infinite, and `sqrt(x(t))` with `x(0) = 0` is
    not a Taylor series but grows like `t**(1/2)`). This is the choice that keeps
    equilibria: `y' = -sqrt(y)` (Torricelli's tank) at `y = 0` has the expansion
    `y(t) = 0` and stays empty, and `jax.grad` through it is finite, where `jnp.sqrt`
    gives an infinite derivative and NaN gradients. Negative inputs give NaN, as for
    `jnp.sqrt`.

    (No Taylor step sees the moment such a tank runs dry: from `y0 > 0` the series of
    `y' = -sqrt(y)` is the parabola `(sqrt(y0) - t/2)**2`, exactly, and a step that
    spans the emptying time follows it back up. Stop there with a `diffrax.Event`.)

    **Arguments:**

    - `x`: an array (integers are converted to the default float dtype).

    **Returns:**

    `sqrt(x)`, an array of the shape and floating dtype of `x`.
    """
    return _sqrt(_inexact(x))


def stable_cbrt(x):
    return jnp.cbrt(x)


_cbrt = custom_taylor(stable_cbrt)
_cbrt.defjvp(_power_jvp(_cbrt, 1 / 3, lambda x, a: jnp.cbrt(x) / x))
_cbrt.def_taylor(_power_rule(1 / 3))


def cbrt(x):
    """Real cube root, with zero derivative and zero Taylor coefficients at 0.

    Away from 0 this is `jnp.cbrt(x)` (negative for negative `x`), with its exact
    derivative and Taylor series. At `x = 0` the value is 0 and the derivative and all
    Taylor coefficients of order `>= 1` are 0, for the reasons given in
    [`taylorode.stable.sqrt`][] (the true derivative is infinite; `y = 0` stays an
    equilibrium of `y' = -cbrt(y)`).

    **Arguments:**

    - `x`: an array (integers are converted to the default float dtype).

    **Returns:**

    `cbrt(x)`, an array of the shape and floating dtype of `x`.
    """
    return _cbrt(_inexact(x))


# --- pow -------------------------------------------------------------------------------


def _static_float(value, name):
    try:
        value = float(value)
    except Exception:
        raise TypeError(
            f"taylorode.stable.pow: `{name}` must be a static number (a Python float or "
            f"int, or a concrete array), not {value!r}: it selects the function's Taylor "
            "rule when the function is traced."
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"taylorode.stable.pow: `{name}` must be finite, not {value}.")
    return value


def _raise_to(x, a):
    """x**a, as `lax.integer_pow` for integer `a` (exact for negative `x`)."""
    if float(a).is_integer() and abs(a) <= _MAX_INTEGER_POW:
        return lax.integer_pow(x, int(a))
    return jnp.power(x, a)


@functools.lru_cache(maxsize=None)
def _pow_fn(alpha: float) -> custom_taylor:
    def stable_pow(x):
        mask = x == 0
        return _masked(mask, _raise_to(_safe(mask, x), alpha))

    fn = custom_taylor(stable_pow)
    fn.defjvp(_power_jvp(fn, alpha, _raise_to))
    fn.def_taylor(_power_rule(alpha))
    return fn


def pow(x, alpha):
    """`x**alpha` for a constant exponent, finite (0) at `x = 0`.

    - Integer `alpha >= 0`: `lax.integer_pow(x, alpha)`, a polynomial, exact
      everywhere including 0 (its Taylor series exists there and is computed exactly).
    - Other `alpha > 0` (Hill kinetics `x**n / (K**n + x**n)` with fractional `n`,
      fractional-order friction): `jnp.power(x, alpha)` away from 0. At `x = 0` the
      value is 0, the derivative is 0 (exact for `alpha > 1`; for `alpha < 1` the true
      derivative is infinite), and all Taylor coefficients of order `>= 1` are 0:
      `x(t)**alpha` with `x(0) = 0` is not a Taylor series, and 0 keeps `x = 0` an
      equilibrium of `x' = -x**alpha`. (For `alpha > 1` the coefficients below order
      `alpha` are truly 0.)
    - `alpha < 0`: `jnp.power(x, alpha)` away from 0, and 0 at `x = 0` with zero
      derivative and coefficients: the convention of [`taylorode.stable.safe_div`][],
      `x**alpha = safe_div(1, x**-alpha)`, a force law switched off at its pole.

    Negative `x` with non-integer `alpha` gives NaN, as `jnp.power` does.

    **Arguments:**

    - `x`: an array (integers are converted to the default float dtype).
    - `alpha`: the exponent, a static number (Python float or int). Each distinct value
        makes one function with its own Taylor rule (cached), so use a few fixed
        exponents rather than a traced or continuously varying one.

    **Returns:**

    `x**alpha`, an array of the shape and floating dtype of `x`.
    """
    alpha = _static_float(alpha, "alpha")
    x = _inexact(x)
    if alpha.is_integer() and 0 <= alpha <= _MAX_INTEGER_POW:
        return lax.integer_pow(x, int(alpha))
    return _pow_fn(alpha)(x)


# --- log -------------------------------------------------------------------------------


def _tiny(x):
    return jnp.asarray(jnp.finfo(x.dtype).tiny, dtype=x.dtype)


def _log_clamped(x):
    """0 <= x < tiny: where the logarithm is clamped."""
    return (x >= 0) & (x < _tiny(x))


def stable_log(x):
    return jnp.log(jnp.where(_log_clamped(x), _tiny(x), x))


_log = custom_taylor(stable_log)


@_log.defjvp
def _log_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    mask = _log_clamped(x)
    return _log(x), _masked(mask, 1 / _safe(mask, x)) * dx


@_log.def_taylor
def _log_rule(k, inputs, output):
    (x,) = inputs
    mask = _log_clamped(x[0])
    xs = [_safe(mask, x[0])] + list(x[1 : k + 1])
    return _masked(mask, S.logarithm(xs, output, k))


def log(x):
    """Natural logarithm, clamped below at the smallest normal number.

    For `x >= tiny` (`tiny = jnp.finfo(x.dtype).tiny`, the smallest normal number:
    about `2.2e-308` in float64, `1.2e-38` in float32) this is `jnp.log(x)`, with its
    exact derivative and Taylor series. For `0 <= x < tiny` it is `log(tiny)` (about
    `-708.4` in float64, `-87.3` in float32), with zero derivative and zero Taylor
    coefficients: `log(max(x, tiny))`, flat below `tiny`. Negative `x` gives NaN, as
    `jnp.log` does.

    Why not `-inf`: it is honest but poisons a vector field. Terms such as
    `x log x` (entropy production, Gompertz growth `y' = -y log y`) are 0 at `x = 0`
    with this clamp, where `jnp.log` gives `0 * -inf = NaN`. The clamp changes only
    values below the normal range, where `1/x` (the derivative) would overflow.

    **Arguments:**

    - `x`: an array (integers are converted to the default float dtype).

    **Returns:**

    `log(x)` (clamped as above), an array of the shape and floating dtype of `x`.
    """
    return _log(_inexact(x))


# --- safe_div --------------------------------------------------------------------------


def stable_safe_div(a, b):
    mask = b == 0
    return _masked(mask, a / _safe(mask, b))


_safe_div = custom_taylor(stable_safe_div)


@_safe_div.defjvp
def _safe_div_jvp(primals, tangents):
    (a, b), (da, db) = primals, tangents
    mask = b == 0
    out = _safe_div(a, b)
    inv = _masked(mask, 1 / _safe(mask, b))
    return out, (da - out * db) * inv


@_safe_div.def_taylor
def _safe_div_rule(k, inputs, output):
    a, b = inputs
    mask = b[0] == 0
    bs = [_safe(mask, b[0])] + list(b[1 : k + 1])
    return _masked(mask, S.quotient(a[k], bs, output, k))


def safe_div(a, b):
    """`a / b`, and 0 where `b == 0`.

    Away from `b = 0` this is `a / b`, with its exact derivatives and Taylor series.
    Where `b == 0` the value, the derivatives with respect to `a` and `b`, and all
    Taylor coefficients of order `>= 1` are 0: `jnp.where(b == 0, 0, a / b)`, with
    finite derivatives (plain `jnp.where` would still give NaN gradients). In a vector
    field this switches a term off at its singular point: the force of a potential at
    its centre (`safe_div(q, r**3)`), a rate whose total vanishes, a direction
    `v / |v|` of a body at rest (see [`taylorode.stable.normalize`][]).

    **Arguments:**

    - `a`: the numerator, an array.
    - `b`: the denominator, an array. `a` and `b` are broadcast and promoted as by
        `jnp.true_divide` (so the usual dtype and rank promotion rules apply).

    **Returns:**

    `a / b` (0 where `b == 0`), of the broadcast shape and the promoted floating dtype.
    """
    a, b = _broadcast_like(jnp.true_divide, a, b)
    return _safe_div(a, b)


# --- norm and normalize ----------------------------------------------------------------


def _axis_key(axis):
    if axis is None:
        return None
    if isinstance(axis, (tuple, list)):
        axes = tuple(operator.index(a) for a in axis)
        return axes[0] if len(axes) == 1 else axes
    return operator.index(axis)


@functools.lru_cache(maxsize=None)
def _norm_fn(axis, keepdims: bool) -> custom_taylor:
    def reduce(x):
        return jnp.sum(x, axis=axis, keepdims=keepdims)

    def stable_norm(x):
        return jnp.sqrt(reduce(x * x))

    fn = custom_taylor(stable_norm)

    def jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        out = fn(x)
        mask = out == 0
        return out, reduce(x * dx) * _masked(mask, 1 / _safe(mask, out))

    def rule(k, inputs, output):
        # c^2 = sum x^2: 2 c_0 c_k = (sum x^2)_k - sum_{j=1..k-1} c_j c_{k-j}.
        (x,) = inputs
        mask = output[0] == 0
        sq = reduce(S.cauchy(x, x, k))
        return _masked(mask, (sq - _inner(output, k)) / (2 * _safe(mask, output[0])))

    fn.defjvp(jvp)
    fn.def_taylor(rule)
    return fn


def norm(x, axis=-1, keepdims=False):
    """Euclidean norm `sqrt(sum(x**2, axis))`, with zero gradient and zero Taylor
    coefficients at the origin.

    Away from the origin this is the norm with its exact derivative `x / |x|` and
    Taylor series (from `|x|^2 = sum x^2`, one Cauchy product per order). At `x = 0`
    the value is 0, the gradient is 0 (a subgradient: the norm is not differentiable
    there, and 0 is the smallest element of its subdifferential, the unit ball) and all
    Taylor coefficients of order `>= 1` are 0 (`|x(t)|` with `x(0) = 0` behaves like
    `|t|`, which has no Taylor series). So a distance or speed that vanishes (a body
    at rest in a drag law `-|v| v`, a particle at the centre of a potential) has a
    finite Jacobian and finite `jax.grad`, where `jnp.linalg.norm` gives NaN.

    **Arguments:**

    - `x`: an array (integers are converted to the default float dtype).
    - `axis`: the axis, or tuple of axes, to reduce over; `None` for all axes. Defaults
        to the last axis. A static value: each distinct `(axis, keepdims)` makes one
        function with its own Taylor rule (cached).
    - `keepdims`: whether to keep the reduced axes with length 1.

    **Returns:**

    The norm, an array of `x`'s floating dtype and `x`'s shape reduced over `axis`.
    """
    return _norm_fn(_axis_key(axis), bool(keepdims))(_inexact(x))


def normalize(x, axis=-1):
    """The unit vector `x / |x|` along `axis`, and 0 at the origin.

    Away from the origin this is `x / norm(x)` with its exact derivative and Taylor
    series. At `x = 0` the value, the derivative and all Taylor coefficients of order
    `>= 1` are 0: the direction of a zero vector is undefined, and 0 is the value that
    switches the term off, e.g. Coulomb friction `-mu * normalize(v)` for a body at
    rest, or a constant-magnitude central force at its centre. It is
    `safe_div(x, norm(x, axis, keepdims=True))`, two functions with Taylor rules, so
    it needs no series of its own: the engine expands the two one after the other.

    **Arguments:**

    - `x`: an array (integers are converted to the default float dtype).
    - `axis`: the axis, or tuple of axes, along which to normalise (static); defaults
        to the last axis.

    **Returns:**

    `x / |x|` (0 where `|x| = 0`), an array of the shape and floating dtype of `x`.
    """
    x = _inexact(x)
    return _safe_div(x, jnp.broadcast_to(norm(x, axis=axis, keepdims=True), x.shape))


# --- softabs ---------------------------------------------------------------------------


def stable_softabs(x, eps):
    return jnp.hypot(x, eps)


_softabs = custom_taylor(stable_softabs)


@_softabs.defjvp
def _softabs_jvp(primals, tangents):
    (x, eps), (dx, deps) = primals, tangents
    out = _softabs(x, eps)
    mask = out == 0
    return out, (x * dx + eps * deps) * _masked(mask, 1 / _safe(mask, out))


@_softabs.def_taylor
def _softabs_rule(k, inputs, output):
    # c^2 = x^2 + eps^2 (eps may itself be a series).
    x, eps = inputs
    mask = output[0] == 0
    sq = S.cauchy(x, x, k) + S.cauchy(eps, eps, k)
    return _masked(mask, (sq - _inner(output, k)) / (2 * _safe(mask, output[0])))


def softabs(x, eps):
    """Smooth absolute value `sqrt(x**2 + eps**2)`.

    Analytic for `eps != 0`, with exact derivatives and Taylor series everywhere:
    `|x| <= softabs(x, eps) <= |x| + |eps|`, equal to `|eps|` at `x = 0` and to `|x|`
    within `eps**2 / (2|x|)` far from it. It is bounded below by `|eps| > 0`, so
    `x / softabs(x, eps)` is a smooth sign (regularised Coulomb friction
    `-mu * v / softabs(v, eps)`) and `1 / softabs` is finite; use `softabs(x, eps) - eps`
    for a smooth `|x|` that is 0 at 0. Unlike `jnp.abs`, whose kink at 0 the Taylor
    series of a step cannot see (a step that crosses it continues on the wrong
    branch), it keeps the vector field analytic, so Taylor steps are accurate across
    `x = 0`. `eps = 0` gives `|x|`,
    with zero derivative and coefficients at `x = 0` (as [`taylorode.stable.norm`][]).

    **Arguments:**

    - `x`: an array.
    - `eps`: the smoothing scale, an array or number broadcastable with `x`, promoted
        with it as by `jnp.hypot`. It is an ordinary (traced) argument: it may vary
        without recompiling, and `jax.grad` with respect to it works.

    **Returns:**

    `sqrt(x**2 + eps**2)`, of the broadcast shape and promoted floating dtype.
    """
    x, eps = _broadcast_like(jnp.hypot, _inexact(x), eps)
    return _softabs(x, eps)
