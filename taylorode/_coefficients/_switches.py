"""Switching functions: where a vector field stops being smooth.

A primitive whose value, or whose derivative, jumps as a function of its inputs (a
comparison, `abs`, `max`, `floor`, `sort`, ...) makes the vector field non-smooth
where its *switching function* changes sign: the difference compared, the argument
of `abs`, the distance to the next integer, ... The Taylor series of a step is built
from the branch active where the step starts, so it is only valid up to the first
sign change of a switching function; the solvers end their steps there
(`taylorode/_solver/_switching.py`).

The recurrence engine calls `switching_series(name, ins, outs, params)` for every
equation that depends on `t` or `y` and is one of these primitives. It returns a
function `j -> array` (the order-`j` coefficient of the switching functions, any shape)
or `None` where the primitive is smooth at the expansion point (complex `abs`).
"""

from collections.abc import Callable

import jax.numpy as jnp

from ._rules import Const, coeff, window_choice


Series = Callable[[int], object]

# Comparisons and other primitives whose switching function is the difference of their
# two operands (`max`/`min` switch branches where the operands cross).
_DIFFERENCE = {"lt", "le", "gt", "ge", "eq", "ne", "max", "min"}
# Primitives that switch where their (single) argument changes sign (the exponentially
# scaled Bessel functions through their factor exp(-|x|)).
_ARGUMENT = {"sign", "abs", "bessel_i0e", "bessel_i1e"}
# Integer-valued functions of one argument: (lower, upper) boundaries of the interval
# around the value at the expansion point on which they are constant.
_INTEGER_PARTS = {
    "floor": lambda x0: (jnp.floor(x0), jnp.floor(x0) + 1),
    "ceil": lambda x0: (jnp.ceil(x0) - 1, jnp.ceil(x0)),
    "round": lambda x0: (jnp.round(x0) - 0.5, jnp.round(x0) + 0.5),
    # float -> int conversion truncates; switching at the integers either side.
    "convert_element_type": lambda x0: (jnp.floor(x0), jnp.floor(x0) + 1),
}
# Zero-derivative primitives that are not switches (deliberately constant, or only
# switching at infinities).
NOT_SWITCHES = {"stop_gradient", "is_finite", "nextafter", "iota"}


def is_real_series(x) -> bool:
    """Whether `x` is a series (not a `Const`) of real floating values."""
    return not isinstance(x, Const) and jnp.issubdtype(jnp.result_type(x[0]), jnp.floating)


def _safe(fn: Series) -> Series:
    """Orders a series does not (yet) have are zero: a switching function inside a
    derived rule is expanded to one order less than the state."""

    def series(j):
        try:
            return fn(j)
        except IndexError:
            return None

    return series


def _boundaries(x, lo, hi) -> Series:
    def series(j):
        xj = coeff(x, j)
        if j == 0:
            return jnp.stack([xj - lo, xj - hi])
        return jnp.stack([xj, xj])

    return series


def switching_series(name: str, ins: list, outs: list, params: dict) -> Series | None:
    """The switching functions of one equation, as a series (see the module doc)."""
    if name in _DIFFERENCE:
        a, b = ins
        if not (is_real_series(a) or is_real_series(b)):
            return None
        return _safe(lambda j: coeff(a, j) - coeff(b, j))
    if name in _ARGUMENT:
        (a,) = ins
        return _safe(lambda j: coeff(a, j)) if is_real_series(a) else None
    if name in _INTEGER_PARTS:
        (x,) = ins
        if not is_real_series(x):
            return None
        if name == "convert_element_type" and jnp.issubdtype(params["new_dtype"], jnp.inexact):
            return None  # float -> float: smooth
        if name == "convert_element_type" and jnp.issubdtype(params["new_dtype"], jnp.bool_):
            return _safe(lambda j: coeff(x, j))  # float -> bool: x != 0
        lo, hi = _INTEGER_PARTS[name](x[0])
        return _safe(_boundaries(x, lo, hi))
    if name == "clamp":
        lo, x, hi = ins
        return _safe(lambda j: jnp.stack(jnp.broadcast_arrays(coeff(x, j) - coeff(lo, j), coeff(x, j) - coeff(hi, j))))
    if name == "rem":
        # rem(x, y) = x - y trunc(x/y): switches where x/y crosses an integer, i.e.
        # where x - n y changes sign for the integers n either side of x0/y0.
        x, y = ins
        n0 = jnp.floor(coeff(x, 0) / coeff(y, 0))
        return _safe(lambda j: jnp.stack([coeff(x, j) - n0 * coeff(y, j), coeff(x, j) - (n0 + 1) * coeff(y, j)]))
    if name in ("reduce_max", "reduce_min", "argmax", "argmin"):
        (a,) = ins[:1]
        if not is_real_series(a):
            return None
        axes = tuple(params["axes"])
        # Each element minus the extremal one (mask from the expansion point; ties
        # share), so that the selection changes where some element crosses it.
        largest = name in ("reduce_max", "argmax")
        ext = (jnp.max if largest else jnp.min)(a[0], axis=axes, keepdims=True)
        mask = (a[0] == ext).astype(a[0].dtype)
        mask = mask / jnp.sum(mask, axis=axes, keepdims=True)
        return _safe(lambda j: a[j] - jnp.sum(mask * a[j], axis=axes, keepdims=True))
    if name in ("reduce_window_max", "reduce_window_min", "reduce_window"):
        choice = window_choice(name, ins, params)
        if choice is None:
            return None  # a windowed sum
        windows, a, init = choice
        if not (is_real_series(a) or is_real_series(init)):
            return None
        # As reduce_max, per window: each candidate minus the extremal one. Candidates
        # that are infinite at the expansion point (the padding of reduce_window_max/min)
        # never win; their functions are left at 0.
        weights = windows.weights(a, init, coeff(outs[0], 0))
        finite = jnp.isfinite(windows.candidates(a, init, 0))

        def series(j):
            c = windows.candidates(a, init, j)
            return jnp.where(finite, c - jnp.sum(weights * c, axis=1, keepdims=True), 0)

        return _safe(series)
    if name in ("cummax", "cummin"):
        (a,) = ins
        out = outs[0]
        if not is_real_series(a) or isinstance(out, Const):
            return None
        return _safe(lambda j: a[j] - out[j])
    if name == "sort":
        key = ins[0]
        out = outs[0]
        if not is_real_series(key) or isinstance(out, Const):
            return None
        axis = params["dimension"]
        return _safe(lambda j: jnp.diff(out[j], axis=axis))
    return None


# Primitives with a switching function above; other primitives that take a series and
# return integers or booleans are switches taylorode cannot see into.
SWITCHING = _DIFFERENCE | _ARGUMENT | set(_INTEGER_PARTS) | {
    "clamp", "rem", "reduce_max", "reduce_min", "argmax", "argmin", "cummax", "cummin", "sort",
    "reduce_window_max", "reduce_window_min", "reduce_window",
}
