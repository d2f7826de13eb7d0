"""The float32-vs-tolerance check.

Called where a tolerance meets the state: by `taylorode.TaylorController.init` (its own
tolerances), and by a solver's `init` where `diffeqsolve` handed it the adaptive
controller's tolerances (`taylorode._interop`). Where both apply, the warning is given
once: it is issued with one fixed location and registry, so Python's default filter
shows it once.
"""

import warnings

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._errors import PrecisionWarning


_REGISTRY: dict = {}


def check_tolerances(rtol, atol, who: str) -> None:
    """Raise at trace time for tolerances that are negative, not finite, or both zero
    (where they are concrete; traced ones cannot be checked here)."""
    try:
        r = np.asarray(rtol, dtype=float)
        a = np.asarray(atol, dtype=float)
    except Exception:  # traced tolerances
        return
    for name, value in (("rtol", r), ("atol", a)):
        if np.any(value < 0) or not np.all(np.isfinite(value)):
            raise ValueError(
                f"{who}: `{name}` must be finite and non-negative; got rtol={rtol!r}, "
                f"atol={atol!r}."
            )
    if np.all(r == 0) and np.all(a == 0):
        raise ValueError(
            f"{who}: rtol and atol are both zero; give a positive rtol or atol."
        )


def warn_if_tolerance_below_precision(y0, rtol, atol) -> None:
    """Warn when a floating state cannot reach `rtol` (or `atol` where `rtol = 0`)."""
    try:
        rtol = float(np.min(np.asarray(rtol)))
        atol = float(np.min(np.asarray(atol)))
    except Exception:  # traced tolerances: nothing can be said statically
        return
    dtypes = {
        jnp.result_type(x)
        for x in jtu.tree_leaves(y0)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    }
    for dtype in sorted(dtypes, key=lambda d: jnp.finfo(d).bits):
        eps = float(jnp.finfo(dtype).eps)
        tol = rtol if rtol > 0 else atol
        if 0 < tol < 10 * eps:
            if jnp.finfo(dtype).bits < 64:
                fix = (
                    "Enable 64-bit floats (JAX's `jax_enable_x64` option, or "
                    "JAX_ENABLE_X64=1 in the environment) and pass float64 arrays, or "
                    f"loosen the tolerance to at least {10 * eps:.3g}."
                )
            else:
                fix = f"Loosen the tolerance to at least {10 * eps:.3g}."
            warnings.warn_explicit(
                f"The tolerance {tol:g} is below what {jnp.dtype(dtype).name} can "
                f"resolve (machine epsilon {eps:.3g}): the solve will take many tiny "
                f"steps and still not reach it. {fix}",
                PrecisionWarning,
                filename=__file__,
                lineno=1,
                module="taylorode",
                registry=_REGISTRY,
            )
            return
