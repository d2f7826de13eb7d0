"""How `Taylor` and `TaylorController` recognise each other at trace time.

diffrax hands an adaptive controller's `rtol`, `atol` and `norm` to a solver whose
`root_finder` asks for them (`diffrax.with_stepsize_controller_tols`); that is the only
static channel from controller to solver. `TaylorController` keeps its norm wrapped in
`TaylorControllerNorm`, so a `Taylor()` that receives it knows that the first step will
be of zero length (made by the controller to obtain the coefficients at y0 from the
solver's own step, so that the compiled program holds one coefficient kernel, not two).
"""

from collections.abc import Callable

import equinox as eqx


class TaylorControllerNorm(eqx.Module):
    """A norm, marked as belonging to a `taylorode.TaylorController`. Calls `fn`."""

    fn: Callable

    def __call__(self, x):
        return self.fn(x)
