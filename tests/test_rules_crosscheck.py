"""Every Taylor rule of the recurrence engine against the jvp tower.

One case (or a few) per primitive name registered in `RULES`, `LINEAR` and
`CUSTOM_JVP_RULES`: a small ODE whose vector field applies that primitive to values
that depend on the state, expanded by the recurrence engine and by the tower of nested
`jax.jvp`s (an independent reference that follows JAX's own derivative rules) at a few
random states, in float64, complex states wherever the primitive takes them. A case
also checks that the engine really called the rule for its primitive on a series (not
on a constant), and `test_every_registered_rule_has_a_case` fails for a rule
registered later without a case here.

Inputs avoid kinks (abs at 0, ties of max/min/clamp); `test_conventions_at_kinks` checks
separately that the engine follows JAX's conventions there. Where JAX's own derivative is
wrong (complex acosh left of the imaginary axis), the reference is the tower of the
function written out (`test_complex_acosh_left_half_plane`).
"""

import contextlib
import dataclasses
import functools
import math
import sys
import zlib
from collections.abc import Callable

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np
import pytest
from jax import lax

from taylorode._coefficients import recurrence
from taylorode._coefficients._rules import (
    CUSTOM_JVP_RULES,
    LINEAR,
    RULES,
    ZERO_DERIVATIVE,
)
from taylorode._coefficients.jvp import JvpMethod
from taylorode._coefficients.recurrence import RecurrenceMethod


ORDER = 5
DRAWS = 3
RTOL = 1e-9
# The field as written: the scalar-batching pass would only rewrite scalar code.
REC = RecurrenceMethod(batch_scalars=False)
JVP = JvpMethod()

# Registered names that no jnp/lax code produces as a primitive of that name, so that no
# vector field can reach their rule. `test_skipped_names_are_not_jax_primitives` checks
# that the installed JAX indeed has no primitive of each name.
SKIP = {
    "copy_p": "JAX's copy primitive is named 'copy' (copy_p is only its Python name); 'copy' has a case",
    "squeeze_p": "JAX's squeeze primitive is named 'squeeze'; 'squeeze' has a case",
    "scatter_add": "JAX names it 'scatter-add' (with a hyphen), which has a case",
    "scatter_sub": "JAX names it 'scatter-sub' (with a hyphen), which has a case",
    "expand_dims": "jnp/lax.expand_dims lower to broadcast_in_dim or reshape; JAX has no such primitive",
    "mesh_cast": "not a primitive of the installed JAX (explicit-sharding casts are 'reshard' here, which has a case)",
}


# --- random states ---------------------------------------------------------------------


def uniform(lo, hi, shape=(3,)):
    return lambda rng: rng.uniform(lo, hi, shape)


def signed(lo, hi, shape=(3,)):
    """Magnitudes in [lo, hi], random signs: away from 0."""
    return lambda rng: rng.choice([-1.0, 1.0], shape) * rng.uniform(lo, hi, shape)


def cplx(re, im, shape=(3,)):
    return lambda rng: rng.uniform(*re, shape) + 1j * rng.uniform(*im, shape)


SMALL = cplx((-0.6, 0.6), (-0.6, 0.6))
RIGHT = cplx((0.5, 1.5), (-0.8, 0.8))  # right half plane: away from the cuts of log/sqrt


def roll(y):
    return jnp.roll(y, 1)


def _mesh():
    return jax.make_mesh((1,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))


@dataclasses.dataclass(frozen=True)
class Case:
    prim: str  # the registered name whose rule this case exercises
    variant: str
    field: Callable  # (t, y) -> dy/dt
    sample: Callable  # rng -> y0
    # The reference under this dtype promotion (JAX's own JVP of `lax.pow` with integer
    # exponents fails under the strict promotion of tests/conftest.py).
    ref_promotion: str | None = None
    # The reference's field, where not `field` itself (JAX's own derivative not usable).
    ref_field: Callable | None = None

    @property
    def id(self):
        return f"{self.prim}-{self.variant}"


C1 = np.array([1.0, -2.0, 0.5])
STENCIL = np.array([1.0, -2.0, 1.0])
M3 = np.array([[0.5, -1.0, 0.2], [0.3, 0.8, -0.6], [-0.4, 0.1, 0.9]])


def _where(y):
    return jnp.where(y > 0, y * y, jnp.sin(y))


def _split(y):
    a, b = jnp.split(jnp.sin(y), 2)
    return jnp.concatenate([b * a, a])


def _unstack(y):
    a, b, c = jnp.unstack(jnp.sin(y))
    return jnp.stack([b * c, a, c])


def _barrier(y):
    a, b = lax.optimization_barrier((jnp.sin(y), y * y))
    return a * b


def _pool_2d(y):
    # A 2x2 max-pool of a (3, 4) image, strides (1, 2), padding, window dilation along
    # the rows, base dilation along the columns (holes): (3, 4) out.
    pooled = lax.reduce_window(jnp.sin(y) * jnp.roll(y, 1, axis=1), -jnp.inf, lax.max, (2, 2), (1, 2),
                               ((1, 1), (1, 1)), base_dilation=(1, 2), window_dilation=(2, 1))
    return pooled * y


def _matrix(y):
    return M3 + jnp.diag(jnp.sin(y)) + 0.1 * jnp.outer(y, y)


def _grouped_conv(y):
    # Both operands depend on the state; 2 feature groups, batch 2, strided and dilated.
    lhs = jnp.reshape(jnp.sin(y[:12]), (2, 2, 3)) + 0.5
    rhs = jnp.reshape(y[12:] * y[12:], (4, 1, 2))
    out = lax.conv_general_dilated(lhs, rhs, (1,), ((1, 1),), rhs_dilation=(2,), feature_group_count=2)
    return jnp.ravel(out)[:20] * y  # (2, 4, 3) out


def _batch_grouped_conv(y):
    # batch_group_count = 2 (as in a convolution's weight gradient): (1, 2, 3) out.
    lhs = jnp.reshape(jnp.sin(y[:12]), (2, 2, 3))
    rhs = jnp.reshape(y[12:] * y[12:], (2, 2, 1))
    out = lax.conv_general_dilated(lhs, rhs, (1,), ((0, 0),), batch_group_count=2)
    return jnp.concatenate([jnp.ravel(out), y[:10]]) * y


def _windows_min_written_out(y):
    x, init = y * y, 0.5 * y[0]
    following = jnp.concatenate([x[1:], init[None]])  # the padding holds the initial value
    return jnp.minimum(jnp.minimum(x, following), init) - y


def _spectral(y):
    # A spectral derivative and product: rfft (real in, complex out) and irfft.
    ik = np.array([0.0, 1j, 2j])
    dy = jnp.fft.irfft(ik * jnp.fft.rfft(jnp.sin(y)), n=4)
    return jnp.fft.irfft(jnp.fft.rfft(y) * jnp.fft.rfft(dy), n=4)


def _sort_two_operands(y):
    keys, vals = lax.sort((jnp.cos(y), y * y), num_keys=1)
    return keys * vals - y


CASES = [
    # --- products and quotients
    Case("mul", "series", lambda t, y: y * roll(y) + t, uniform(-1, 1)),
    Case("mul", "const", lambda t, y: C1 * jnp.sin(y), uniform(-1, 1)),
    Case("mul", "complex", lambda t, y: 1j * y * roll(y), SMALL),
    Case("dot_general", "vector", lambda t, y: y * jnp.dot(y, roll(y)), uniform(-1, 1)),
    Case("dot_general", "batched", lambda t, y: jnp.einsum("bij,bjk->bik", y, jnp.sin(y)),
         uniform(-1, 1, (2, 2, 2))),
    Case("dot_general", "const", lambda t, y: M3 @ jnp.tanh(y), uniform(-1, 1)),
    Case("dot_general", "complex", lambda t, y: -1j * (y @ y.T), cplx((-0.6, 0.6), (-0.6, 0.6), (2, 2))),
    Case("div", "series", lambda t, y: jnp.sin(y) / (1.5 + roll(y) * roll(y)), uniform(-1, 1)),
    Case("div", "const_numerator", lambda t, y: 1.0 / (1.5 + y * roll(y)), uniform(-1, 1)),
    Case("div", "const_denominator", lambda t, y: jnp.sin(y) / C1, uniform(-1, 1)),
    Case("div", "complex", lambda t, y: y / (2.0 + roll(y)), SMALL),
    Case("square", "real", lambda t, y: jnp.square(y) - roll(y), uniform(-1, 1)),
    Case("square", "complex", lambda t, y: 1j * jnp.square(y), SMALL),
    Case("reduce_prod", "axis", lambda t, y: jnp.prod(y, axis=1, keepdims=True) * jnp.sin(y),
         uniform(-1, 1, (2, 3))),
    Case("reduce_prod", "complex", lambda t, y: 1j * jnp.prod(y) * y, SMALL),
    Case("cumprod", "reversed", lambda t, y: lax.cumprod(y, reverse=True) - 0.5 * y, uniform(-1, 1)),
    Case("cumprod", "complex", lambda t, y: 1j * jnp.cumprod(y), SMALL),
    # --- powers
    Case("integer_pow", "positive", lambda t, y: y**3 - roll(y) ** 2, uniform(-1, 1)),
    Case("integer_pow", "negative", lambda t, y: roll(y) ** -3 + 0.1 * y, signed(0.5, 1.5)),
    Case("integer_pow", "complex", lambda t, y: 1j * y**3 + (1.5 + y) ** -2, SMALL),
    Case("sqrt", "real", lambda t, y: jnp.sqrt(1.5 + y * roll(y)), uniform(-1, 1)),
    Case("sqrt", "complex", lambda t, y: 1j * jnp.sqrt(y) * roll(y), RIGHT),
    Case("rsqrt", "real", lambda t, y: lax.rsqrt(1.5 + y * roll(y)), uniform(-1, 1)),
    Case("rsqrt", "complex", lambda t, y: 1j * lax.rsqrt(y), RIGHT),
    Case("cbrt", "real", lambda t, y: jnp.cbrt(y) * roll(y), signed(0.3, 1.5)),
    Case("pow", "const_exponent", lambda t, y: (1.5 + y * y) ** 1.3 - y, uniform(-1, 1)),
    Case("pow", "series_exponent", lambda t, y: (1.5 + y * y) ** roll(y), uniform(-1, 1)),
    Case("pow", "const_base", lambda t, y: jnp.power(2.0, jnp.sin(y)), uniform(-1, 1)),
    Case("pow", "int_exponents", lambda t, y: lax.pow(1.5 + y * y, np.array([1, 2, -3])), uniform(-1, 1),
         ref_promotion="standard"),
    Case("pow", "complex_series", lambda t, y: (2.0 + y) ** roll(y), SMALL),
    Case("pow", "complex_real_exponent", lambda t, y: (2.0 + y) ** 1.3 * roll(y), SMALL),
    Case("pow", "complex_const_exponent", lambda t, y: (2.0 + y) ** (0.5 + 0.3j), SMALL),
    Case("pow", "complex_int_exponents", lambda t, y: lax.pow(2.0 + y, np.array([1, 2, -3])) * roll(y), SMALL,
         ref_promotion="standard"),
    # --- exponentials, logarithms, trigonometric and hyperbolic functions
    Case("exp", "real", lambda t, y: jnp.exp(0.5 * y) * roll(y), uniform(-1, 1)),
    Case("exp", "complex", lambda t, y: 1j * jnp.exp(y), SMALL),
    Case("exp2", "real", lambda t, y: jnp.exp2(y) - roll(y), uniform(-1, 1)),
    Case("exp2", "complex", lambda t, y: 1j * jnp.exp2(y), SMALL),
    Case("expm1", "real", lambda t, y: jnp.expm1(y) * roll(y), uniform(-1, 1)),
    Case("expm1", "complex", lambda t, y: 1j * jnp.expm1(y), SMALL),
    Case("log", "real", lambda t, y: jnp.log(0.5 + y * y) + jnp.log(y), uniform(0.3, 2)),
    Case("log", "complex", lambda t, y: 1j * jnp.log(y), RIGHT),
    Case("log1p", "real", lambda t, y: jnp.log1p(y) * roll(y), uniform(-0.5, 1)),
    Case("log1p", "complex", lambda t, y: 1j * jnp.log1p(y), SMALL),
    Case("sin", "real", lambda t, y: jnp.sin(y) * roll(y), uniform(-2, 2)),
    Case("sin", "complex", lambda t, y: jnp.sin(y), SMALL),
    Case("cos", "real", lambda t, y: jnp.cos(y) * roll(y), uniform(-2, 2)),
    Case("cos", "complex", lambda t, y: 1j * jnp.cos(y), SMALL),
    Case("tan", "real", lambda t, y: jnp.tan(y) - roll(y), uniform(-1, 1)),
    Case("tan", "complex", lambda t, y: 1j * jnp.tan(y), SMALL),
    Case("sinh", "real", lambda t, y: jnp.sinh(y) * roll(y), uniform(-1.5, 1.5)),
    Case("sinh", "complex", lambda t, y: 1j * jnp.sinh(y), SMALL),
    Case("cosh", "real", lambda t, y: jnp.cosh(y) * roll(y), uniform(-1.5, 1.5)),
    Case("cosh", "complex", lambda t, y: 1j * jnp.cosh(y), SMALL),
    Case("tanh", "real", lambda t, y: jnp.tanh(y) * roll(y), uniform(-1.5, 1.5)),
    Case("tanh", "complex", lambda t, y: 1j * jnp.tanh(y), SMALL),
    Case("logistic", "real", lambda t, y: jax.nn.sigmoid(y) * roll(y), uniform(-2, 2)),
    Case("logistic", "complex", lambda t, y: 1j * jax.nn.sigmoid(y), SMALL),
    Case("atan", "real", lambda t, y: jnp.arctan(y) * roll(y), uniform(-2, 2)),
    Case("atan", "complex", lambda t, y: 1j * jnp.arctan(y), SMALL),
    Case("atanh", "real", lambda t, y: jnp.arctanh(y) - roll(y), uniform(-0.8, 0.8)),
    Case("atanh", "complex", lambda t, y: 1j * jnp.arctanh(y), SMALL),
    Case("asin", "real", lambda t, y: jnp.arcsin(y) - roll(y), uniform(-0.8, 0.8)),
    Case("asin", "complex", lambda t, y: 1j * jnp.arcsin(y), SMALL),
    Case("acos", "real", lambda t, y: jnp.arccos(y) * roll(y), uniform(-0.8, 0.8)),
    Case("acos", "complex", lambda t, y: 1j * jnp.arccos(y), SMALL),
    Case("asinh", "real", lambda t, y: jnp.arcsinh(y) * roll(y), uniform(-2, 2)),
    Case("asinh", "complex", lambda t, y: 1j * jnp.arcsinh(y), SMALL),
    Case("acosh", "real", lambda t, y: jnp.arccosh(y) - roll(y), uniform(1.2, 3)),
    Case("acosh", "complex", lambda t, y: 1j * jnp.arccosh(y), cplx((1.2, 3), (-0.5, 0.5))),
    Case("erf", "real", lambda t, y: lax.erf(y) * roll(y), uniform(-1.5, 1.5)),
    Case("erfc", "real", lambda t, y: lax.erfc(y) * roll(y), uniform(-1.5, 1.5)),
    Case("atan2", "series", lambda t, y: jnp.arctan2(y, roll(y)), signed(0.3, 1.5)),
    Case("atan2", "const_x", lambda t, y: jnp.arctan2(y * y, 0.7) - y, uniform(-1, 1)),
    Case("atan2", "const_y", lambda t, y: jnp.arctan2(0.7, y), signed(0.3, 1.5)),
    Case("logaddexp", "series", lambda t, y: jnp.logaddexp(y, roll(y) ** 2), uniform(-1.5, 1.5)),
    Case("logaddexp", "complex", lambda t, y: 1j * jnp.logaddexp(y, 2.0 * roll(y)), SMALL),
    Case("logaddexp2", "const", lambda t, y: jnp.logaddexp2(y, 0.3) * roll(y), uniform(-1.5, 1.5)),
    # --- piecewise (inputs away from the kinks)
    Case("abs", "real", lambda t, y: jnp.abs(y) * roll(y), signed(0.2, 1.5)),
    Case("abs", "complex", lambda t, y: 1j * jnp.abs(y).astype(y.dtype) * y + roll(y), SMALL),
    Case("rem", "const_divisor", lambda t, y: lax.rem(3.0 * y, 0.7) * roll(y), uniform(-2, 2)),
    Case("rem", "moving_divisor", lambda t, y: lax.rem(3.0 * y, 0.5 + 0.1 * roll(y) ** 2), uniform(-2, 2)),
    Case("rem", "const_dividend", lambda t, y: lax.rem(2.3, 0.5 + y * y) * roll(y), uniform(-1, 1)),
    Case("max", "series", lambda t, y: jnp.maximum(y, roll(y) ** 2), uniform(-1, 1)),
    Case("max", "const", lambda t, y: jnp.maximum(jnp.sin(y), 0.1) * roll(y), uniform(-1, 1)),
    Case("min", "series", lambda t, y: jnp.minimum(y, roll(y) ** 2), uniform(-1, 1)),
    Case("min", "const", lambda t, y: jnp.minimum(jnp.sin(y), 0.1) * roll(y), uniform(-1, 1)),
    Case("clamp", "series", lambda t, y: lax.clamp(-0.3 + 0.1 * roll(y), y, 0.4 + 0.3 * jnp.roll(y, 2)),
         uniform(-1, 1, (6,))),
    Case("clamp", "const", lambda t, y: lax.clamp(-0.2, jnp.sin(y), 0.3) * roll(y), uniform(-1, 1, (6,))),
    Case("reduce_max", "vector", lambda t, y: jnp.max(y * roll(y)) * y, uniform(-1, 1)),
    Case("reduce_max", "axis", lambda t, y: jnp.max(jnp.sin(y), axis=0, keepdims=True) * y,
         uniform(-1, 1, (2, 3))),
    Case("reduce_min", "vector", lambda t, y: jnp.min(y * roll(y)) * y, uniform(-1, 1)),
    Case("cummax", "real", lambda t, y: lax.cummax(jnp.sin(y)) * y, uniform(-1, 1)),
    Case("cummin", "reversed", lambda t, y: lax.cummin(y * y, reverse=True) - y, uniform(-1, 1)),
    Case("sort", "values", lambda t, y: jnp.sort(jnp.sin(y)) * C1, uniform(-1, 1)),
    Case("sort", "two_operands", lambda t, y: _sort_two_operands(y), uniform(-1, 1)),
    # --- special functions
    Case("lgamma", "real", lambda t, y: jss.gammaln(1 + y * y) * roll(y), uniform(-1.5, 1.5)),
    Case("lgamma", "negative", lambda t, y: lax.lgamma(y) - roll(y), uniform(-0.9, -0.1)),
    Case("digamma", "real", lambda t, y: jss.digamma(0.5 + y * y) * roll(y), uniform(-1.5, 1.5)),
    Case("polygamma", "scalar_order", lambda t, y: jss.polygamma(2, 0.5 + y * y) - roll(y), uniform(-1.5, 1.5)),
    Case("polygamma", "array_order", lambda t, y: lax.polygamma(np.array([0.0, 1.0, 3.0]), 1 + jnp.sin(y)) * roll(y),
         uniform(-1, 1)),
    Case("erf_inv", "real", lambda t, y: jss.erfinv(0.9 * jnp.sin(y)) * roll(y), uniform(-1.5, 1.5)),
    # Near zero (|x| < 2) the rules build a chain of series, further out a quotient.
    Case("bessel_i0e", "near", lambda t, y: jss.i0e(y) * roll(y), signed(0.1, 1.9)),
    Case("bessel_i0e", "far", lambda t, y: jss.i0e(y * roll(y)) + y, signed(2.1, 3)),
    Case("bessel_i1e", "near", lambda t, y: jss.i1e(y) * roll(y), signed(0.1, 1.9)),
    Case("bessel_i1e", "far", lambda t, y: jss.i1e(y * roll(y)) + y, signed(2.1, 3)),
    # --- windows and convolutions
    Case("reduce_window_max", "1d", lambda t, y: lax.reduce_window(jnp.sin(y), -jnp.inf, lax.max, (2,), (1,), ((0, 1),))
         * y, uniform(-1, 1, (5,))),
    Case("reduce_window_max", "2d", lambda t, y: _pool_2d(y), uniform(-1, 1, (3, 4))),
    Case("reduce_window_min", "strided", lambda t, y: jnp.repeat(
        lax.reduce_window(y * roll(y), jnp.inf, lax.min, (3,), (2,), "SAME"), 2)[:6] - y, uniform(-1, 1, (6,))),
    Case("reduce_window", "max_from_zero", lambda t, y: lax.reduce_window(jnp.sin(y), 0.0, lax.max, (2,), (1,), ((1, 0),))
         * roll(y), uniform(-1, 1, (5,))),
    # (JAX's JVP cannot take an initial value that depends on the state: the windows
    # written out are the reference.)
    Case("reduce_window", "min_series_init", lambda t, y: lax.reduce_window(y * y, 0.5 * y[0], lax.min, (2,), (1,),
         ((0, 1),)) - y, uniform(-1, 1, (5,)), ref_field=lambda t, y: _windows_min_written_out(y)),
    Case("reduce_window", "sum_from_one", lambda t, y: lax.reduce_window(jnp.sin(y), 1.0, lax.add, (2,), (1,), ((1, 0),))
         * y, uniform(-1, 1)),
    Case("reduce_window_sum", "real", lambda t, y: lax.reduce_window(jnp.sin(y), 0.0, lax.add, (2,), (1,), ((1, 0),))
         * y, uniform(-1, 1)),
    Case("reduce_window_sum", "complex", lambda t, y: 1j * lax.reduce_window(y * y, 0j, lax.add, (2,), (1,), ((0, 1),)),
         SMALL),
    Case("conv_general_dilated", "const_stencil", lambda t, y: jnp.convolve(jnp.sin(y), STENCIL, mode="same") * y,
         uniform(-1, 1, (5,))),
    Case("conv_general_dilated", "series", lambda t, y: jnp.convolve(y, jnp.sin(y), mode="full")[2:7],
         uniform(-1, 1, (5,))),
    Case("conv_general_dilated", "complex", lambda t, y: 1j * jnp.convolve(y, y * y, mode="same"), SMALL),
    Case("conv_general_dilated", "feature_groups", lambda t, y: _grouped_conv(y), uniform(-1, 1, (20,))),
    Case("conv_general_dilated", "batch_groups", lambda t, y: _batch_grouped_conv(y), uniform(-1, 1, (16,))),
    # --- linear algebra (the rules of _rules_linalg.py; tests/test_rules_loops_linalg.py
    # has more cases)
    Case("custom_linear_solve", "solve", lambda t, y: jnp.linalg.solve(_matrix(y), jnp.cos(y)), uniform(-1, 1)),
    Case("lu", "factor", lambda t, y: jnp.sum(lax.linalg.lu(_matrix(y))[0], axis=0), uniform(-1, 1)),
    Case("triangular_solve", "lower", lambda t, y: lax.linalg.triangular_solve(
        _matrix(y), jnp.outer(y, y) + 1, left_side=True, lower=True)[:, 0], uniform(-1, 1)),
    Case("cholesky", "real", lambda t, y: jnp.sum(jnp.linalg.cholesky(M3 @ M3.T + jnp.outer(y, y)), axis=0),
         uniform(-1, 1)),
    Case("eigh", "eigenvalues", lambda t, y: jnp.linalg.eigh(M3 + M3.T + jnp.outer(y, jnp.sin(y)) + jnp.outer(jnp.sin(y), y))[0],
         uniform(-1, 1)),
    # --- complex parts and Fourier transforms
    Case("conj", "complex", lambda t, y: 1j * jnp.conj(y) * y * y + roll(y), SMALL),
    Case("conj", "real", lambda t, y: jnp.real(lax.conj(jnp.sin(y)) * lax.complex(y, roll(y))), uniform(-1, 1)),
    Case("complex", "real", lambda t, y: jnp.imag(lax.complex(jnp.sin(y), y * roll(y)) ** 2), uniform(-1, 1)),
    Case("complex", "from_parts", lambda t, y: 1j * lax.complex(jnp.real(y) ** 2, jnp.imag(y) * 0.5) * y, SMALL),
    Case("fft", "rfft_irfft", lambda t, y: _spectral(y), uniform(-1, 1, (4,))),
    Case("fft", "complex", lambda t, y: 1j * jnp.fft.ifft(jnp.fft.fft(y) * jnp.fft.fft(y * y)), SMALL),
    # --- linear operations (applied to a nonlinear function of the state)
    Case("add", "real", lambda t, y: jnp.sin(y) + y * y, uniform(-1, 1)),
    Case("sub", "real", lambda t, y: jnp.sin(y) - roll(y) * y, uniform(-1, 1)),
    Case("neg", "real", lambda t, y: -(y * roll(y)), uniform(-1, 1)),
    Case("reshape", "real", lambda t, y: jnp.reshape(jnp.reshape(jnp.sin(y), (2, 2)) @ M3[:2, :2], (4,)) * y,
         uniform(-1, 1, (4,))),
    Case("broadcast_in_dim", "real", lambda t, y: jnp.broadcast_to(jnp.sin(y[0]), (3,)) * y, uniform(-1, 1)),
    Case("slice", "real", lambda t, y: jnp.concatenate([jnp.sin(y[1:]), y[:1] * y[2:]]), uniform(-1, 1)),
    Case("dynamic_slice", "real",
         lambda t, y: lax.dynamic_slice(jnp.concatenate([y, jnp.sin(y)]), (jnp.argmax(y),), (3,)) * y,
         uniform(-1, 1)),
    Case("gather", "real", lambda t, y: jnp.sin(y)[jnp.array([2, 0, 0])] * y, uniform(-1, 1)),
    Case("gather", "state_index", lambda t, y: -(y * y)[jnp.argsort(jnp.cos(y))] + t, uniform(-1, 1)),
    Case("concatenate", "real", lambda t, y: jnp.concatenate([jnp.sin(y[:1]), y[1:] * y[:2]]), uniform(-1, 1)),
    Case("transpose", "real", lambda t, y: jnp.transpose(jnp.sin(y)) * y, uniform(-1, 1, (2, 2))),
    Case("squeeze", "real", lambda t, y: jnp.squeeze(jnp.sin(y)[None, :], 0) * y, uniform(-1, 1)),
    Case("convert_element_type", "real_to_complex",
         lambda t, y: 1j * jnp.sin(jnp.real(y)).astype(y.dtype) * y, SMALL),
    Case("pad", "series_padding",
         lambda t, y: lax.pad(y[:2] * y[1:], jnp.sin(y[2]), [(0, 1, 0)]), uniform(-1, 1)),
    Case("pad", "interior", lambda t, y: lax.pad(jnp.sin(y[::2]), y[1] ** 2, [(0, 0, 1)]), uniform(-1, 1)),
    Case("reduce_sum", "real", lambda t, y: jnp.sum(jnp.sin(y)) * y, uniform(-1, 1)),
    Case("reduce_sum", "complex", lambda t, y: 1j * jnp.sum(y * y) * y, SMALL),
    Case("rev", "real", lambda t, y: jnp.flip(jnp.sin(y)) * y, uniform(-1, 1)),
    Case("copy", "real", lambda t, y: jnp.array(jnp.sin(y), copy=True) * y, uniform(-1, 1)),
    Case("select_n", "series", lambda t, y: _where(y), signed(0.2, 1)),
    Case("select_n", "three_way",
         lambda t, y: lax.select_n((y > 0).astype(jnp.int32) + (y > 0.5).astype(jnp.int32), y * y, jnp.sin(y), jnp.cos(y) * y),
         signed(0.2, 1)),
    Case("select_n", "const_branch", lambda t, y: jnp.where(y > 0, jnp.sin(y), 0.5) * roll(y), signed(0.2, 1)),
    Case("dynamic_update_slice", "real",
         lambda t, y: lax.dynamic_update_slice(jnp.sin(y), y[:1] * y[1:2], (jnp.argmin(y),)), uniform(-1, 1)),
    Case("scatter-add", "real", lambda t, y: jnp.sin(y).at[jnp.array([0, 0, 2])].add(y * y), uniform(-1, 1)),
    Case("scatter-sub", "real",
         lambda t, y: jnp.sin(y).at[jnp.array([2, 0])].subtract(y[:2] * y[1:]), uniform(-1, 1)),
    Case("scatter", "real", lambda t, y: jnp.sin(y).at[1].set(y[0] * y[2]), uniform(-1, 1)),
    Case("cumsum", "real", lambda t, y: jnp.cumsum(jnp.sin(y)) - lax.cumsum(y * y, reverse=True),
         uniform(-1, 1)),
    Case("real", "complex", lambda t, y: 1j * (jnp.real(y) ** 2).astype(y.dtype) + roll(y), SMALL),
    Case("imag", "complex", lambda t, y: (jnp.imag(y) ** 2).astype(y.dtype) * y + 1j * roll(y), SMALL),
    Case("reduce_precision", "real", lambda t, y: lax.reduce_precision(jnp.sin(y), 11, 52) * y, uniform(-1, 1)),
    Case("split", "real", lambda t, y: _split(y), uniform(-1, 1, (4,))),
    Case("add_any", "grad", lambda t, y: jax.grad(lambda u: jnp.sum(jnp.sin(u) * u**2))(y), uniform(-1, 1)),
    Case("sharding_constraint", "real",
         lambda t, y: jax.lax.with_sharding_constraint(jnp.sin(y), jax.sharding.SingleDeviceSharding(jax.devices()[0])) * y,
         uniform(-1, 1)),
    Case("reshard", "real",
         lambda t, y: jax.sharding.reshard(jnp.sin(y), jax.sharding.NamedSharding(_mesh(), jax.sharding.PartitionSpec())) * y,
         uniform(-1, 1)),
    Case("optimization_barrier", "real", lambda t, y: _barrier(y), uniform(-1, 1)),
    Case("stack", "real", lambda t, y: jnp.stack([jnp.sin(y[0]), y[1] * y[2], y[0]]), uniform(-1, 1)),
    Case("unstack", "real", lambda t, y: _unstack(y), uniform(-1, 1)),
    Case("tile", "real", lambda t, y: jnp.tile(jnp.sin(y[:2]) * y[2:], 2), uniform(-1, 1, (4,))),
]


# --- the check -------------------------------------------------------------------------


def _recording_rules(monkeypatch) -> set:
    """Names (primitive, and custom_jvp function) of every equation the engine looks up
    a rule for: those that depend on t or y."""
    used = set()
    lookup = recurrence._rule

    def recording(eqn, site=None):
        used.add(eqn.primitive.name)
        used.add(recurrence._custom_jvp_name(eqn))
        return lookup(eqn, site)

    monkeypatch.setattr(recurrence, "_rule", recording)
    return used


@functools.cache
def _compiler_options():
    """These programs run three times: on CPU, compiled without LLVM's optimisations and
    without XLA's fusion emitters, they compile about three times as fast. (Left out
    where the backend does not know the options.)"""
    options = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1).lower(1.0).compile(options)
    except Exception:
        return None
    return options


def _compiled(field, ref_promotion=None, ref_field=None):
    """Both expansions, compiled together; the reference of `ref_field` if given."""

    def f(t, y, args):
        return field(t, y)

    def g(t, y, args):
        return (ref_field or field)(t, y)

    @jax.jit(compiler_options=_compiler_options())
    def both(t0, y0):
        rec = jnp.stack(REC.expand(f, t0, y0, None, ORDER))
        with jax.numpy_dtype_promotion(ref_promotion) if ref_promotion else contextlib.nullcontext():
            ref = jnp.stack(JVP.expand(g, t0, y0, None, ORDER))
        return rec, ref

    return both


def _assert_agree(rec, ref, what):
    rec, ref = np.asarray(rec), np.asarray(ref)
    assert rec.shape == ref.shape and rec.dtype == ref.dtype, what
    assert np.all(np.isfinite(ref)), f"{what}: the reference is not finite (input outside the domain?)"
    assert np.max(np.abs(ref[ORDER])) > 1e-12 * np.max(np.abs(ref)), f"{what}: (nearly) a polynomial"
    for k in range(ORDER + 1):
        scale = np.max(np.abs(ref[k]))
        err = np.max(np.abs(rec[k] - ref[k]))
        assert err <= RTOL * scale, f"{what}: order {k} off by {err:.2e} (relative {err / scale:.2e})"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rule_matches_jvp_tower(case, monkeypatch):
    used = _recording_rules(monkeypatch)
    both = _compiled(case.field, case.ref_promotion, case.ref_field)
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    for draw in range(DRAWS):
        y0 = jnp.asarray(case.sample(rng))
        t0 = jnp.asarray(rng.uniform(-0.5, 0.5))
        rec, ref = both(t0, y0)
        _assert_agree(rec, ref, f"{case.id}, y0={np.asarray(y0)}, t0={float(t0)}")
    assert case.prim in used, f"the field never applies '{case.prim}' to a series: {sorted(used - {None})}"


def test_every_registered_rule_has_a_case():
    registered = set(RULES) | set(LINEAR) | set(CUSTOM_JVP_RULES)
    covered = {c.prim for c in CASES}
    missing = registered - covered - set(SKIP)
    assert not missing, f"rules without a cross-check case in this file: {sorted(missing)}"
    assert not set(SKIP) & covered, "a skipped name has a case: remove it from SKIP"
    assert set(SKIP) <= registered, f"stale SKIP entries: {sorted(set(SKIP) - registered)}"
    assert len({c.id for c in CASES}) == len(CASES)


def test_skipped_names_are_not_jax_primitives():
    # If JAX gains a primitive of a skipped name, it needs a case instead.
    import jax.experimental  # noqa: F401  (load the usual modules before the scan)

    names = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("jax") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, jex_core.Primitive):
                names.add(value.name)
    assert {"copy", "squeeze", "scatter-add", "reshard"} <= names  # the scan sees primitives
    assert not set(SKIP) & names


# --- beyond the registered rules --------------------------------------------------------


def test_zero_derivative_primitives():
    # Piecewise-constant primitives (and stop_gradient) are constants of the expansion,
    # as they are to jax.jvp (which cannot differentiate nextafter at all, so it has no
    # reference here).
    assert {"sign", "floor", "ceil", "round", "stop_gradient"} <= ZERO_DERIVATIVE

    def field(t, y):
        pieces = jnp.sign(y) + jnp.floor(3 * y) - jnp.ceil(2 * y) + jnp.round(5 * y)
        return pieces * y + lax.stop_gradient(jnp.sin(y)) * roll(y)

    both = _compiled(field)
    rng = np.random.default_rng(0)
    for _ in range(DRAWS):
        _assert_agree(*both(jnp.asarray(0.1), jnp.asarray(rng.uniform(-1, 1, 3))), "zero derivative")


def test_conventions_at_kinks():
    # Exactly at a kink the engine takes JAX's derivative conventions, as the jvp tower
    # does: abs at 0 takes the x >= 0 branch; max/min and reduce_max/min share equally
    # at a tie; clamp on a bound has zero derivative. With a reversed range (lo > hi) the
    # value of clamp is hi, and so is its slope (JAX's JVP has that too where hi < x < lo,
    # checked here; where x <= hi < lo it has zero, which is wrong and not followed).
    y0 = jnp.array([0.0, 0.5, 0.5, -0.25, 0.25, 0.75])  # exact binary fractions: exact ties

    def field(t, y):
        a = jnp.abs(y[0]) + jnp.maximum(y[1], y[2] * y[2] + 0.25) + jnp.minimum(y[2], y[1] ** 3 + 0.375)
        b = jnp.max(y[1:3] * y[1:3]) + jnp.min(jnp.stack([y[1], y[2]]))
        # (JAX's clamp JVP needs bounds that depend on t or y to have the operand's shape.)
        c = lax.clamp(-0.25, y[3:], jnp.full(3, 0.25 + t)) + lax.clamp(y[3], y[4] - 0.5, 0.25)  # at lo, at hi, above
        d = lax.clamp(0.875, y[5], 0.5 + 0.5 * y[4])  # hi < x < lo: the value is hi, and so is the slope
        return jnp.concatenate([jnp.stack([a, b, d]), c]) * (1 + y)

    rec, ref = _compiled(field)(jnp.asarray(0.0), y0)
    _assert_agree(rec, ref, "kinks")


def test_complex_acosh_left_half_plane():
    # JAX's JVP of acosh, 1 / sqrt(z^2 - 1) with the principal root, has the wrong sign
    # where Re z < 0; the rule takes 1 / (sqrt(z - 1) sqrt(z + 1)). The reference is the
    # tower of the principal acosh written out, log(z + sqrt(z - 1) sqrt(z + 1)).
    def field(t, y):
        return 1j * jnp.arccosh(y) * roll(y)

    def written_out(t, y):
        return 1j * jnp.log(y + jnp.sqrt(y - 1) * jnp.sqrt(y + 1)) * roll(y)

    both = _compiled(field, ref_field=written_out)
    rng = np.random.default_rng(1)
    for _ in range(DRAWS):
        y0 = rng.uniform(-2.5, 2.5, 3) + 1j * signed(0.2, 0.8)(rng)  # off the cut (real x < 1)
        _assert_agree(*both(jnp.asarray(0.1), jnp.asarray(y0)), f"acosh, y0={y0}")


def test_bessel_near_and_at_zero():
    # i0e and i1e have a kink at 0 (from exp(-|x|)); the rules expand the branch of
    # s = sign(x0) (s = 0 at x0 = 0, as JAX's derivatives have it), without dividing by
    # x0 near 0, where JAX's own JVP of i1e is only right to first order. The reference
    # is that branch written out: exp(-s x) times the power series of I0 and I1.
    y0 = np.array([0.0, 1e-13, -1e-9, 0.3, 1.99, -2.01, 40.0, -150.0])
    s = np.sign(y0)

    def field(t, y):
        x = y * (1 + 0.1 * t) + 0.5 * t
        return jss.i0e(x) * (1 + roll(y) ** 2) + jss.i1e(x)

    def written_out(t, y):
        x = y * (1 + 0.1 * t) + 0.5 * t
        z = x * x / 4
        i0 = sum(z**n / float(math.factorial(n) ** 2) for n in range(40))
        i1 = x / 2 * sum(z**n / float(math.factorial(n) * math.factorial(n + 1)) for n in range(40))
        return jnp.exp(-s * x) * (i0 * (1 + roll(y) ** 2) + i1)

    # The power series are accurate for |x| < 3; further out, JAX's own derivatives.
    near = np.abs(y0) < 3
    both = _compiled(field, ref_field=lambda t, y: jnp.where(near, written_out(t, y), field(t, y)))
    _assert_agree(*both(jnp.asarray(0.0), jnp.asarray(y0)), "i0e and i1e near 0")


def test_ladders_at_high_order():
    # lgamma, digamma, polygamma, i0e and i1e expand a ladder of series whose number
    # of levels doubles as the order grows (8, then 16 here). Along a(t) = x0 + t the
    # coefficients are the functions' own Taylor coefficients at x0: for the gamma
    # family polygamma(m, x0) / k! (mpmath's, at 40 digits), for the Bessel functions
    # mpmath's series on the branch of s = sign(x0).
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    order = 12
    gamma_x0 = np.array([0.5, 6.0])
    bessel_x0 = np.array([0.0, 1e-12, -0.8, 1.9, 2.5, -7.0])
    n = gamma_x0.size + bessel_x0.size

    def f(t, y, args):
        a, b = jnp.split(y[:n], [gamma_x0.size])
        funcs = [jss.gammaln(a), jss.digamma(a), jss.polygamma(2, a), jss.i0e(b), jss.i1e(b)]
        return jnp.concatenate([jnp.ones(n)] + funcs)

    # The state: the arguments, then one integral per function value.
    y0 = jnp.asarray(np.concatenate([gamma_x0, bessel_x0, np.zeros(3 * gamma_x0.size + 2 * bessel_x0.size)]))
    coeffs = jax.jit(lambda y: jnp.stack(REC.expand(f, 0.0, y, None, order)), compiler_options=_compiler_options())(y0)
    got = np.asarray(coeffs)[1:, n:] * np.arange(1, order + 1)[:, None]  # the functions' series

    def gamma_family(shift, x0):  # polygamma(shift - 1, x0 + t), shift - 1 = -1 for loggamma
        head = mpmath.loggamma(x0) if shift == 0 else mpmath.polygamma(shift - 1, x0)
        return [head] + [mpmath.polygamma(shift + k - 1, x0) / mpmath.factorial(k) for k in range(1, order)]

    def bessel(nu, x0):
        s = np.sign(x0)
        return mpmath.taylor(lambda x: mpmath.besseli(nu, x) * mpmath.exp(-s * x), mpmath.mpf(x0), order - 1)

    refs = [gamma_family(shift, mpmath.mpf(x0)) for shift in (0, 1, 3) for x0 in gamma_x0]
    refs += [bessel(nu, x0) for nu in (0, 1) for x0 in bessel_x0]
    ref = np.array(refs, dtype=float).T
    err = np.max(np.abs(got - ref), axis=0) / np.max(np.abs(ref), axis=0)
    assert np.all(err < 1e-13), err
