"""Stiffness diagnostics along a computed solution: the Taylor radius of convergence
and the step it allows an explicit Taylor method, next to the Jacobian's spectrum."""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Complex, PyTree, Real

from ._coefficients import AbstractTaylorMethod, check_order, resolve_method
from ._jorba_zou import jorba_zou_factor, radius_from_terms
from ._taylor_coefficients import taylor_coefficients


class StiffnessDiagnostics(eqx.Module):
    """Per-time diagnostics returned by [`taylorode.stiffness_diagnostics`][]; every
    field has a leading axis of length `N`, one entry per time in `ts`.

    - `ts`: the times, as given.
    - `taylor_radius`: Jorba & Zou's estimate $\\rho$ of the radius of convergence of
        the Taylor series of the solution through `(t, y)`.
    - `explicit_step`: the step Jorba & Zou's rule takes from $\\rho$ at the given
        order and tolerance.
    - `eigenvalues`: the eigenvalues of the Jacobian $\\partial f / \\partial y$,
        complex, shape `(N, n)` for a state of `n` scalars (in no particular order).
    - `max_abs_eigenvalue`: $\\max_i |\\lambda_i|$, the spectral radius.
    - `stiffness_ratio`: $\\max |\\mathrm{Re}\\,\\lambda| / \\min |\\mathrm{Re}\\,\\lambda|$
        over the eigenvalues with $\\mathrm{Re}\\,\\lambda < 0$; `1` when there are
        none.
    - `stability_step`: $1 / \\max_i |\\lambda_i|$; `inf` when the Jacobian is zero.
    """

    ts: Real[Array, " N"]
    taylor_radius: Real[Array, " N"]
    explicit_step: Real[Array, " N"]
    eigenvalues: Complex[Array, "N n"]
    max_abs_eigenvalue: Real[Array, " N"]
    stiffness_ratio: Real[Array, " N"]
    stability_step: Real[Array, " N"]


def stiffness_diagnostics(
    vector_field: Callable[[Any, PyTree, Any], PyTree],
    ts: Any,
    ys: PyTree,
    args: Any = None,
    *,
    order: int = 12,
    tol: float = 1e-8,
    method: str | AbstractTaylorMethod = "recurrence",
) -> StiffnessDiagnostics:
    r"""Diagnose stiffness along a computed solution, for studies and plots.

    At every saved point $(t_i, y_i)$ of a solution of $y' = f(t, y, \text{args})$ (as
    `sol.ts`, `sol.ys` from `diffrax.diffeqsolve` with `SaveAt(ts=...)`) this
    computes two independent views of how large a step an explicit method can take:

    **From the Taylor series** (Jorba & Zou 2005, and heyoka). With the normalised
    coefficients $y^{[j]} = y^{(j)}(t_i)/j!$ of order $p$ and
    $N = \max(1, \|y_i\|_\infty)$, the radius of convergence is estimated from the
    last two coefficients,

    $$\rho = \min_{j \in \{p-1,\, p\}} \left(\frac{N}{\|y^{[j]}\|_\infty}\right)^{1/j},$$

    where a zero coefficient contributes $\infty$ (so a zero or polynomial field gives
    $\rho = \infty$, never NaN). The step an explicit Taylor method of order $p$ takes
    at tolerance $\varepsilon$ is Jorba & Zou's

    $$h = \rho\, \varepsilon^{1/p}\, e^{-2/p}\, e^{-0.7/(p-1)},$$

    which at $\varepsilon = e^{-2(p-1)}$ (the tolerance for which $p$ is their
    optimal order $\lceil -\tfrac12\ln\varepsilon + 1\rceil$) is heyoka's
    $h = \rho\, e^{-2} e^{-0.7/(p-1)}$, and which is how [`taylorode.TaylorController`][]
    sizes steps (it measures each of the two coefficients against the tolerance
    separately, so its step can differ from this one by a factor of at most
    $\varepsilon^{1/(p(p-1))}$). This is the *accuracy*-limited step: the rule sees
    stiffness only through the coefficients of the solution through $(t_i, y_i)$, so
    along a smooth solution (such as one computed by an implicit method) it can exceed
    the stability limit below; an explicit Taylor integrator then excites the fast
    modes, and their growth in its own coefficients pulls its steps back to that limit.

    **From the Jacobian** (Hairer & Wanner, vol. II, §IV.2). The eigenvalues
    $\lambda_k$ of $J = \partial f / \partial y$ at $(t_i, y_i)$ (by `jax.jacfwd` on the
    flattened state), the spectral radius $\max_k|\lambda_k|$, the stiffness ratio
    $\max|\mathrm{Re}\,\lambda| / \min|\mathrm{Re}\,\lambda|$ over the eigenvalues with
    $\mathrm{Re}\,\lambda < 0$ (`1` when there is none, and also when there is exactly
    one: a single decaying mode is not stiff by this measure; note that an eigenvalue
    with a tiny negative real part, for example a rounding error, makes the ratio
    huge), and the stability-limited step scale $1 / \max_k|\lambda_k|$, the step at
    which $h\lambda$ reaches the unit circle for the fastest mode. This is a scale,
    not a sharp bound: the stability region $|\sum_{k \le p} z^k/k!| \le 1$ of the
    order-$p$ Taylor method has a size of order one (on the negative real axis it
    reaches $-2$ for $p = 1, 2$, about $-2.79$ for $p = 4$ (as classical RK4), $-4.31$
    for $p = 8$ and $-5.82$ for $p = 12$), so the largest stable step is a
    method-dependent multiple of it, and an eigenvalue with positive real part (a
    growing mode) limits accuracy, not stability. Because the stiffness ratio counts
    only decaying modes, a stiff problem whose slow mode grows (Van der Pol on its slow
    branches, for instance) has a ratio of 1; compare `max_abs_eigenvalue` with the
    solution's time scale there.

    Everything is computed in one `jit`-compiled, `vmap`-ed pass over the `N` points,
    in the dtype of the state. The eigenvalues use `jnp.linalg.eigvals`, which JAX
    implements on CPU only.

    **Arguments:**

    - `vector_field`: a function `f(t, y, args)` returning a PyTree of the same
        structure as `y` (the same signature as `diffrax.ODETerm`).
    - `ts`: the times, shape `(N,)`.
    - `ys`: the states, a PyTree whose leaves have a leading axis of length `N`.
    - `args`: passed through to `vector_field`.
    - `order`: the Taylor order $p$ of the coefficients, a Python int, at least 2.
    - `tol`: the tolerance $\varepsilon$ of the explicit step, a positive float.
    - `method`: how the Taylor coefficients are computed, as in
        [`taylorode.taylor_coefficients`][].

    **Returns:**

    A [`taylorode.StiffnessDiagnostics`][] of per-time arrays.

    **Raises:**

    - `ValueError` for an invalid `order`, `tol` or `method`, or when `ts` and `ys`
        do not have matching leading axes.

    ??? cite "References"

        ```bibtex
        @article{jorba2005software,
            author={Jorba, {\`A}ngel and Zou, Maorong},
            title={A Software Package for the Numerical Integration of {ODE}s by
                   Means of High-Order {T}aylor Methods},
            journal={Experimental Mathematics},
            volume={14},
            number={1},
            pages={99--117},
            year={2005}
        }

        @book{hairer1996solving,
            author={Hairer, Ernst and Wanner, Gerhard},
            title={Solving Ordinary Differential Equations {II}: Stiff and
                   Differential-Algebraic Problems},
            edition={2},
            series={Springer Series in Computational Mathematics},
            volume={14},
            publisher={Springer},
            year={1996}
        }
        ```
    """
    method = resolve_method(method)
    if isinstance(order, bool) or not isinstance(order, int) or order < 2:
        raise ValueError(
            "`stiffness_diagnostics` estimates the radius from the coefficients of "
            f"orders `order - 1` and `order`, so `order` must be a Python int of at "
            f"least 2; got {order!r}."
        )
    order = check_order(order, method)
    try:
        tol = float(tol)
    except Exception as e:
        raise ValueError(f"`tol` must be a positive Python float; got {tol!r}.") from e
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"`tol` must be positive and finite; got {tol!r}.")
    ts = jnp.asarray(ts)
    if ts.ndim != 1:
        raise ValueError(
            f"`ts` must have shape (N,), as `sol.ts` from `SaveAt(ts=...)`; got shape "
            f"{ts.shape}."
        )
    leaves = jtu.tree_leaves(ys)
    if not leaves:
        raise ValueError("`ys` has no leaves; there is no state to diagnose.")
    for leaf in leaves:
        shape = jnp.shape(leaf)
        if len(shape) == 0 or shape[0] != ts.shape[0]:
            raise ValueError(
                "Every leaf of `ys` must have a leading axis of the length of `ts` "
                f"({ts.shape[0]}), as `sol.ys` from `SaveAt(ts=...)`; got a leaf of "
                f"shape {shape}."
            )
    if sum(math.prod(jnp.shape(leaf)[1:]) for leaf in leaves) == 0:
        raise ValueError("The state in `ys` has no entries; there is nothing to diagnose.")
    return _diagnose(vector_field, ts, ys, args, order, tol, method)


@eqx.filter_jit
def _diagnose(vector_field, ts, ys, args, order, tol, method):
    step_factor = tol ** (1.0 / order) * jorba_zou_factor(order)

    def at_point(t, y):
        flat_y, unravel = jfu.ravel_pytree(y)
        coeffs = taylor_coefficients(vector_field, t, y, args, order, method=method)
        # `(order + 1, n)`: row j is the flattened y^[j].
        flat_c = jnp.concatenate(
            [jnp.reshape(c, (order + 1, -1)) for c in jtu.tree_leaves(coeffs)], axis=1
        )
        log_scale = jnp.log(jnp.maximum(jnp.max(jnp.abs(flat_y)), 1.0))
        log_norms = {j: jnp.log(jnp.max(jnp.abs(flat_c[j]))) for j in (order - 1, order)}
        radius = radius_from_terms(log_scale, log_norms).astype(flat_y.dtype)

        def flat_field(v):
            return jfu.ravel_pytree(vector_field(t, unravel(v), args))[0]

        jac = jax.jacfwd(flat_field)(flat_y)
        eigenvalues = jnp.linalg.eigvals(jac)
        max_abs = jnp.max(jnp.abs(eigenvalues))
        re = jnp.real(eigenvalues)
        decaying = re < 0
        fastest = jnp.max(jnp.where(decaying, -re, 0.0))
        slowest = jnp.min(jnp.where(decaying, -re, jnp.inf))
        ratio = jnp.where(
            jnp.any(decaying), fastest / jnp.where(jnp.any(decaying), slowest, 1.0), 1.0
        )
        stability_step = jnp.where(
            max_abs > 0, 1.0 / jnp.where(max_abs > 0, max_abs, 1.0), jnp.inf
        )
        return radius, radius * step_factor, eigenvalues, max_abs, ratio, stability_step

    radius, explicit_step, eigenvalues, max_abs, ratio, stability_step = jax.vmap(at_point)(
        ts, ys
    )
    return StiffnessDiagnostics(
        ts=ts,
        taylor_radius=radius,
        explicit_step=explicit_step,
        eigenvalues=eigenvalues,
        max_abs_eigenvalue=max_abs,
        stiffness_ratio=ratio,
        stability_step=stability_step,
    )
