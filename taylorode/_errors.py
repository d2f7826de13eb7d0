"""Exceptions raised at trace time.

Runtime failures (a step that cannot be taken, a non-finite value) never raise: they go
through `diffrax.RESULTS` or `equinox.error_if`, like everything else in diffrax.
"""


class TaylorRuleError(NotImplementedError):
    """A vector field uses an operation for which the chosen coefficient method has no
    Taylor-mode rule.

    Raised at trace time, before anything runs. The message names the operation(s) and
    says which `method=` to use instead.
    """


class PrecisionWarning(UserWarning):
    """The requested tolerance is below what the state's floating-point type can
    represent (e.g. `rtol=1e-12` with a float32 state). Enable 64-bit floats (JAX's
    `jax_enable_x64` option) and pass float64 arrays.
    """


class SwitchWarning(UserWarning):
    """A vector field switches (`jnp.where`, `abs`, `clip`, ...) and the chosen
    coefficient method cannot see where: steps may run over its switches. Use
    `method="recurrence"` (the default), which ends steps at them.
    """
