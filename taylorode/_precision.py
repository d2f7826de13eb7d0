"""The float32-vs-tolerance check.

A step-size controller knows the tolerances and a solver knows the state, but diffrax
hands neither to the other. `diffeqsolve` calls `solver.init` from its own body, where
the (wrapped) controller is a local variable named `stepsize_controller`; we read it
from there at trace time. If it cannot be found (another caller, a future diffrax), no
warning is given: the check is advisory and never changes the result.
"""

import inspect
import warnings

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._errors import PrecisionWarning


def _tolerances(controller):
    """(rtol, atol) of a diffrax-style adaptive controller, unwrapping wrappers."""
    for _ in range(4):
        if controller is None:
            return None
        if hasattr(controller, "rtol") and hasattr(controller, "atol"):
            return controller.rtol, controller.atol
        controller = getattr(controller, "controller", None)
    return None


def _calling_controller(max_depth: int = 8):
    frame = inspect.currentframe()
    try:
        for _ in range(max_depth):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return None
            if "stepsize_controller" in frame.f_locals:
                return frame.f_locals["stepsize_controller"]
    finally:
        del frame
    return None


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
    for dtype in dtypes:
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
            warnings.warn(
                f"The tolerance {tol:g} is below what {jnp.dtype(dtype).name} can "
                f"resolve (machine epsilon {eps:.3g}): the solve will take many tiny "
                f"steps and still not reach it. {fix}",
                PrecisionWarning,
                stacklevel=4,
            )
            return


def check_controller_precision(y0, tols=None) -> None:
    """Called from `solver.init` with the controller's `(rtol, atol)` where the solver
    was handed them; otherwise finds the controller of the enclosing diffeqsolve."""
    if tols is None:
        tols = _tolerances(_calling_controller())
    if tols is not None:
        warn_if_tolerance_below_precision(y0, *tols)
