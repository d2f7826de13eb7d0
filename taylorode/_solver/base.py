"""What taylorode's solvers share: coefficients from a Taylor-mode engine, scaled to a
step; carrying them from one step's end to the next step's start; refreshing them after
a jump in the vector field; the term check; `func`.

Concrete solvers (`Taylor`, `HermiteObreschkoff`) subclass `AbstractTaylorSolver` and
set data and their own `init`/`step`; `ExtrapolatedHermiteObreschkoff` wraps a
`HermiteObreschkoff` instead of subclassing it.
"""

from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import equinox.internal as eqxi
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from diffrax import AbstractAdaptiveSolver, AbstractImplicitSolver, AbstractTerm
from equinox import AbstractVar
from jaxtyping import Array, PyTree

from .._coefficients import AbstractTaylorMethod
from .._coefficients._base import SwitchSeries
from .._custom_types import Args, BoolScalarLike, RealScalarLike, Y
from .._interop import check_ode_term, filled_tolerances
from .._interpolation import TaylorInterpolation
from .._precision import check_tolerances, warn_if_tolerance_below_precision
from .._protocol import TaylorFunc


class AbstractTaylorSolver(AbstractAdaptiveSolver, AbstractImplicitSolver):
    """Base of taylorode's solvers: Taylor coefficients from `method`, scaled to the step.

    A concrete solver sets `method`, `root_finder` and `event` (fields; `event` is the
    `diffrax.Event` handed to it, or `None`), the class variables
    `solver_name` (for messages) and `jorba_zou_estimate` (what its `y_error` is, see
    [`taylorode.TaylorFunc`][]), and implements `order`, `error_order`, `init` and `step`.
    """

    method: AbstractVar[AbstractTaylorMethod]
    root_finder: AbstractVar[Any]
    event: AbstractVar[Any]

    solver_name: ClassVar[str]
    jorba_zou_estimate: ClassVar[bool]

    # Any term at the diffrax level (adjoint and time-reversed wrappers included);
    # `init` checks that it is an ODE term underneath.
    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar[Callable[..., TaylorInterpolation]] = TaylorInterpolation

    def _expand(self, terms, t: RealScalarLike, h: RealScalarLike, y: Y, args: Args, order: int) -> list[Y]:
        """Scaled coefficients `h^i y^[i]`, i = 0..order, at `(t, y)` for a step of
        length `h`: the series of the step's term in the normalised time s in [0, 1],
        dy/ds = vf_prod(t + s h, y, args, contr(t, t + h)), which is right for diffrax's
        time-reversed and adjoint terms as well as forward solves."""
        return _scaled_expansion(self.method, terms, t, h, y, args, order)[0]

    def _expand_switching(self, terms, t, h, y, args, order: int) -> tuple[list[Y], SwitchSeries]:
        """`_expand`, and the series of the vector field's switching functions along
        the same expansion, scaled alike (`SwitchSeries`; one trace serves both)."""
        return _scaled_expansion(self.method, terms, t, h, y, args, order)

    def _signature(self, terms, t, h, s, y: Y, args: Args):
        """The values of the switching operations the engine cannot see into, at the
        point `s` of a step of length `h` from `t` with state `y` (an integer array)."""
        return self.method.discrete_signature(_step_field(terms, t, h), s, y, args)

    def _event_conditions(self, terms) -> Callable | None:
        """The conditions of the solver's `event` (a `diffrax.Event` handed to it, see
        [`taylorode.diffeqsolve`][]) as one function `(t, y, args) -> 1-d array`, each
        called as diffrax calls it (with `terms` and `solver` keywords); `None` without
        an event."""
        event = getattr(self, "event", None)
        if event is None:
            return None
        fns = jtu.tree_leaves(event.cond_fn)

        def conditions(t, y, args):
            values = [fn(t, y, args, terms=terms, solver=self) for fn in fns]
            return jnp.stack([jnp.asarray(v, jnp.result_type(t, 1.0)) for v in values])

        return conditions

    def with_event(self, event) -> "AbstractTaylorSolver":
        """This solver with `event` (a `diffrax.Event`) handed to it, so that its steps
        see the event's conditions inside them (what [`taylorode.diffeqsolve`][]
        does)."""
        return eqx.tree_at(lambda s: s.event, self, event, is_leaf=lambda x: x is None)

    def _check_init(self, terms, y0: Y) -> None:
        """Trace-time checks of `init`: an ODE term; valid tolerances that the state's
        dtype can reach, where the controller's tolerances were handed to the solver."""
        check_ode_term(terms, f"taylorode.{self.solver_name}")
        tols = filled_tolerances(self.root_finder)
        if tols is not None:
            check_tolerances(tols[0], tols[1], f"taylorode.{self.solver_name}")
            warn_if_tolerance_below_precision(y0, tols[0], tols[1])

    @property
    def func(self) -> TaylorFunc:
        """The vector field, `func(terms, t0, y0, args)`, as a `TaylorFunc` (the
        solver–controller protocol, [`taylorode.TaylorFunc`][])."""
        return TaylorFunc(self.solver_name, self.jorba_zou_estimate, self._start_error())

    def _start_error(self) -> Callable | None:
        """`start_error` of the protocol ([`taylorode.TaylorFunc`][]): `None` unless the
        solver's error estimate is the Jorba–Zou one."""
        return None


@eqx.filter_jit
def _scaled_expansion(method, terms, t, h, y, args, order: int) -> list:
    # One jitted function, so that the expansion's jaxpr is traced once per solve and
    # reused wherever the same expansion is made again (diffrax traces `step` twice;
    # `init` and `step` expand the same series).
    return method.expand_with_switches(_step_field(terms, t, h), jnp.zeros_like(t), y, args, order)


def _step_field(terms, t, h):
    """The step's term in the normalised time s in [0, 1] of a step of length `h` from
    `t`: dy/ds = vf_prod(t + s h, y, args, contr(t, t + h))."""
    control = terms.contr(t, t + h)

    def rhs(s, y, args):
        return terms.vf_prod(t + s * h, y, args, control)

    return rhs


def reference_step(t0: RealScalarLike, t1: RealScalarLike) -> Array:
    """`t1 - t0`, or 1 for an empty step (coefficients scaled by 0 would lose them)."""
    h = jnp.asarray(t1 - t0)
    return jnp.where(h == 0, jnp.ones_like(h), h)


def rescale(coeffs: tuple, h_ref: Array, y0: Y, h: RealScalarLike) -> list[Y]:
    """Coefficients scaled by `h_ref` rescaled to the step length `h`:
    `[y0, c_1 (h/h_ref), c_2 (h/h_ref)^2, ...]` (order 0 is the step's own `y0`, which
    the carried one equals in a solve)."""
    ratio = (h / h_ref).astype(h_ref.dtype)
    out = [y0]
    power = jnp.ones_like(ratio)
    for ck in coeffs[1:]:
        power = power * ratio
        out.append(jtu.tree_map(lambda c, pk=power: c * pk.astype(c.dtype), ck))
    return out


def refresh_after_jump(
    state, t0, h, made_jump: BoolScalarLike, expand: Callable[[Array], tuple], carried=lambda s: (s.coeffs,)
):
    """After a jump in the vector field the series carried in `state` (the fields
    `carried(state)`, a tuple, by default `(coeffs,)`, scaled by the field `h_ref`) are
    stale: recompute them at the step's start with `expand(h_ref)` (a tuple of the same
    structure), in a real conditional (taken rarely; batch-uniform under vmap)."""
    h = reference_step(t0, t0 + h)
    old = carried(state)

    def fresh(_):
        return expand(h), h

    def keep(_):
        return old, state.h_ref

    new, h_ref = lax.cond(eqxi.unvmap_any(made_jump), fresh, keep, None)
    new = jtu.tree_map(lambda a, b: jnp.where(made_jump, a, b), new, old)
    h_ref = jnp.where(made_jump, h_ref, state.h_ref)
    return eqx.tree_at(lambda s: (*carried(s), s.h_ref), state, (*new, h_ref))


def all_finite(tree: PyTree) -> Array:
    """Whether every entry of every leaf is finite (a boolean scalar)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jtu.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
