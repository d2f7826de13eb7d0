"""Stable functions for vector fields: finite values, derivatives and Taylor
coefficients at the singular points of `sqrt`, `norm`, `pow`, `log`, division and
`x / |x|`.

Vector fields in mechanics and kinetics meet the singular points of their building
blocks: `|q|` and `sqrt` at 0 (gravitational and Coulomb forces, Torricelli's law,
friction), fractional powers at 0 (Hill kinetics), `log` at 0 (entropy, Gompertz
growth), the direction `v / |v|` of a body at rest. There plain JAX gives infinite
derivatives, and NaN gradients and Taylor coefficients, even where the value is
finite (`jax.grad(jnp.sqrt)(0.0)` is `inf`; `jax.grad(jnp.linalg.norm)` at 0 is NaN),
and `jnp.where(x == 0, 0, ...)` alone does not help, since reverse mode still
differentiates the branch not taken.

Each function here is a [`taylorode.custom_taylor`][] function: a `jax.custom_jvp`
with an explicit JVP and a Taylor rule that the recurrence engine uses at every order.
Away from the singular point, values, derivatives (`jax.jvp`, `jax.grad`, any order)
and Taylor coefficients are exact. At the singular point they take the documented
finite values below, the same in the primal, the JVP and the Taylor rule, and
`jax.grad` through the Taylor rule (that is, through a solve with
[`taylorode.Taylor`][]) is finite too.

| function | away from the singular point | at the singular point: value | derivative | Taylor coefficients of order ≥ 1 |
|---|---|---|---|---|
| `sqrt(x)` | `jnp.sqrt(x)` | `sqrt(0) = 0` | 0 (true: ∞) | 0 |
| `cbrt(x)` | `jnp.cbrt(x)` | `cbrt(0) = 0` | 0 (true: ∞) | 0 |
| `pow(x, alpha)`, integer `alpha ≥ 0` | `x**alpha` (`lax.integer_pow`) | exact | exact | exact |
| `pow(x, alpha)`, other `alpha > 0` | `x**alpha` | `0` | 0 (exact for `alpha > 1`; true: ∞ for `alpha < 1`) | 0 |
| `pow(x, alpha)`, `alpha < 0` | `x**alpha` | `0` (as `safe_div(1, x**-alpha)`) | 0 | 0 |
| `log(x)` | `jnp.log(x)` for `x ≥ tiny` | `log(tiny)` for `0 ≤ x < tiny` (−708.4 in float64, −87.3 in float32) | 0 | 0 |
| `safe_div(a, b)` | `a / b` | `0` where `b == 0` | 0 (in `a` and `b`) | 0 |
| `norm(x, axis=-1, keepdims=False)` | `sqrt(sum(x**2, axis))` | `0` at `x = 0` | 0 (a subgradient) | 0 |
| `normalize(x, axis=-1)` | `x / norm(x)` | `0` at `x = 0` | 0 | 0 |
| `softabs(x, eps)` | `sqrt(x**2 + eps**2)`, analytic for `eps != 0` | no singular point for `eps != 0`; `eps = 0`: `0` at `x = 0` | `eps = 0`: 0 | `eps = 0`: 0 |

(`tiny = jnp.finfo(dtype).tiny`, the smallest normal number.) Negative arguments of
`sqrt`, `log` and fractional `pow` give NaN, as in `jax.numpy`.

Why these choices. At these points the solution of the ODE does not have a Taylor
series (`sqrt(x(t))` with `x(0) = 0` grows like `t**(1/2)`, `|x(t)|` like `|t|`), so
no choice is exact; zero coefficients with a zero derivative are the one that keeps
the equilibria of the vector field: `y' = -sqrt(y)` (an empty tank), `y' = -y**0.7`,
`v' = -mu * normalize(v)` (a body at rest under Coulomb friction) expand to
`y(t) = y(0)` and stay there, and a term `a / b` or a force whose centre is reached
is switched off rather than made infinite. Zero derivatives also make `jax.grad` and
Newton iterations finite there. Near the singular point (`x = 1e-3`, say) nothing is
changed: values, derivatives and coefficients are the exact ones, however large.

!!! Example

    ```python
    import diffrax, jax.numpy as jnp, taylorode
    from taylorode import stable

    def tank(t, y, args):  # Torricelli: the tank empties at t = 2 sqrt(y0)
        return -stable.sqrt(y)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(tank), taylorode.Taylor(order=8), 0.0, 1.0, None, jnp.array(0.0),
        stepsize_controller=taylorode.TaylorController(rtol=1e-10, atol=1e-10),
    )  # an empty tank stays empty; jax.grad through it is finite
    ```

Static parameters (`axis`, `keepdims` of `norm`, `alpha` of `pow`) select one
function per distinct value, created once and cached; `eps` of `softabs` is an
ordinary array argument.
"""

from ._stable import (
    cbrt as cbrt,
    log as log,
    norm as norm,
    normalize as normalize,
    pow as pow,
    safe_div as safe_div,
    softabs as softabs,
    sqrt as sqrt,
)


__all__ = ["cbrt", "log", "norm", "normalize", "pow", "safe_div", "softabs", "sqrt"]
