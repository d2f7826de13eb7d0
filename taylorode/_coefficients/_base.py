"""The interface every Taylor-coefficient engine implements."""

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import lax
from jaxtyping import PyTree


# `fn(t, y, args) -> dy/dt`, with `dy/dt` of the same PyTree structure as `y`.
VectorField = Callable[[Any, PyTree, Any], PyTree]


class AbstractTaylorMethod(eqx.Module):
    """How the normalised Taylor coefficients of an ODE solution are computed.

    A method maps `(fn, t0, y0, args, order)` to the list `[y^[0], ..., y^[order]]`,
    with `y^[k] = y^(k)(t0) / k!` and each `y^[k]` a PyTree shaped like `y0`.

    Methods differ in what they cost to compile and to run, and in which JAX operations
    they support; each concrete method documents both.
    """

    name: ClassVar[str]
    # Largest order accepted; beyond it the method is impractical (see its docstring).
    max_order: ClassVar[int]

    def expand_with_switches(
        self, fn: VectorField, t0: Any, y0: PyTree, args: Any, order: int
    ) -> tuple[list[PyTree], "SwitchSeries"]:
        """`expand`, and the Taylor series of the vector field's switching functions
        along the same expansion (see `SwitchSeries`). A method that cannot see
        switches returns `SwitchSeries(None, (), visible=False)`, after warning
        (`taylorode.SwitchWarning`, once) if the field has switching operations."""
        warn_if_switching(f"method={self.name!r}", fn, t0, y0, args)
        return self.expand(fn, t0, y0, args, order), SwitchSeries(None, (), visible=False)

    def discrete_signature(self, fn: VectorField, t: Any, y: PyTree, args: Any):
        """The values (an integer array) that the switching operations listed in
        `SwitchSeries.unseen` take at `(t, y)`. Only methods that report such
        operations implement it."""
        raise NotImplementedError

    def push_forward(self, fn: Callable, t0: Any, dt: Any, coeffs: list[PyTree], args: Any, order: int):
        """The Taylor series, orders `0 .. order - 1`, of `fn(t0 + s dt, y(s), args)` (a
        1-d array) along the polynomial `y(s) = sum_j coeffs[j] s^j`, followed by those
        of the switching functions inside `fn`: shape `(order, n)`. Used for event
        conditions (whose crossings are those of the first columns, or, for a boolean
        condition, of its comparisons); only the recurrence engine has it."""
        raise NotImplementedError(
            f"Event conditions are expanded along the step by method='recurrence'; "
            f"method={self.name!r} cannot. Use taylorode.Taylor(method='recurrence')."
        )

    # `fn` is annotated in full, not as `VectorField`: this signature is on the API page,
    # where a private alias would be a name users cannot look up.
    @abc.abstractmethod
    def expand(
        self, fn: Callable[[Any, PyTree, Any], PyTree], t0: Any, y0: PyTree, args: Any, order: int
    ) -> list[PyTree]:
        """Return `[y^[0], ..., y^[order]]` for `y' = fn(t, y, args)`, `y(t0) = y0`."""


def flatten_state(t0, y0) -> tuple:
    """`(t0, leaves, treedef)`: the expansion time and the state's leaves as arrays."""
    leaves, treedef = jtu.tree_flatten(y0)
    return jnp.asarray(t0), [jnp.asarray(x) for x in leaves], treedef


def output_leaves(fn: VectorField, treedef, t, y_leaves, args) -> list:
    """Evaluate `fn` on flat leaves and return flat leaves, checking the structure.

    The vector field must return a PyTree of the same structure as the state; this
    is checked here (at trace time) so that a mismatch gives a readable error rather
    than a failure deep inside a Taylor-mode transform.
    """
    out = fn(t, jtu.tree_unflatten(treedef, y_leaves), args)
    out_leaves, out_treedef = jtu.tree_flatten(out)
    if out_treedef != treedef:
        raise ValueError(
            "The vector field must return a PyTree with the same structure as the "
            f"state y. The state has structure {treedef}, but the vector field "
            f"returned {out_treedef}."
        )
    out_leaves = [jnp.asarray(o) for o in out_leaves]
    for i, (o, y) in enumerate(zip(out_leaves, y_leaves)):
        if o.shape != jnp.shape(y):
            raise ValueError(
                f"The vector field returned shape {o.shape} for state leaf {i}, which "
                f"has shape {jnp.shape(y)}; dy/dt must have the shape of y."
            )
    return out_leaves


def check_order(order: Any, method: AbstractTaylorMethod) -> int:
    """Validate a Taylor order statically, with a message that says what is allowed."""
    if isinstance(order, bool) or not isinstance(order, int):
        raise ValueError(
            f"The Taylor order must be a Python int in [1, {method.max_order}] for "
            f"method={method.name!r}; got {order!r} of type {type(order).__name__}. "
            "The order is static: it fixes the size of the compiled program."
        )
    if not 1 <= order <= method.max_order:
        hint = ""
        if method.name == "jvp":
            hint = (
                " The jvp tower grows exponentially with the order; use method='jet' "
                "for higher orders."
            )
        raise ValueError(
            f"The Taylor order must lie in [1, {method.max_order}] for "
            f"method={method.name!r}; got order={order}.{hint}"
        )
    return order


class SwitchSeries(eqx.Module):
    """The switching functions of a vector field along one expansion: where they change
    sign, the field stops being smooth (a comparison flips, `abs` or `max` changes
    branch, `floor` jumps), and the Taylor series of the solution is no longer valid.

    - `coeffs`: their normalised Taylor coefficients, shape `(order, n)` (orders
        `0 .. order - 1` of `n` switching functions, flattened), in the dtype of the
        expansion; `None` where the field has none.
    - `unseen`: `(primitive, where)` pairs for switching operations whose switching
        function the engine cannot write down (loops or searches that return
        integers, such as `jnp.searchsorted` inside `jnp.interp`): their switches are
        found by evaluating them along the step (`discrete_signature`).
    - `visible`: whether the method looks for switches at all.
    """

    coeffs: Any
    unseen: tuple = eqx.field(static=True)
    visible: bool = eqx.field(static=True, default=True)


_REGISTRY: dict = {}


def _switching_operations(jaxpr, dependent: list[bool], found: dict) -> None:
    """Collect the switching operations (see `_switches.py`) that depend on the
    expansion variables, through nested jaxprs."""
    import jax.extend.core as jex_core

    from ._switches import NOT_SWITCHES, SWITCHING

    live = {v for v, d in zip(jaxpr.invars, dependent) if d}
    for eqn in jaxpr.eqns:
        inputs = [not isinstance(v, jex_core.Literal) and v in live for v in eqn.invars]
        if not any(inputs):
            continue
        live.update(eqn.outvars)
        name = eqn.primitive.name
        integer_out = not any(jnp.issubdtype(v.aval.dtype, jnp.inexact) for v in eqn.outvars)
        # (float-to-float conversions are smooth; to integers they are caught below)
        switching = name in SWITCHING and name != "convert_element_type"
        if name == "reduce_window":  # a windowed sum is smooth; max and min switch
            from ._rules import _window_reducer

            switching = _window_reducer(eqn.params) is not lax.add_p
        if switching or (integer_out and name not in NOT_SWITCHES):
            found.setdefault(name, None)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if isinstance(sub, jex_core.Jaxpr) and len(sub.invars) == len(eqn.invars):
                    _switching_operations(sub, inputs, found)


def warn_if_switching(who: str, fn, t0, y0, args) -> None:
    """Warn (`taylorode.SwitchWarning`, once per message) that `who` cannot see where the
    vector field `fn(t, y, args)` switches, if it has switching operations."""
    import jax

    try:
        closed = jax.make_jaxpr(lambda t, y: fn(t, y, args))(t0, y0)
    except Exception:  # the expansion itself will report what is wrong
        return
    found: dict = {}
    _switching_operations(closed.jaxpr, [True] * len(closed.jaxpr.invars), found)
    if found:
        warn_switches_unseen(who, f" ({', '.join(found)})")


def warn_switches_unseen(who: str, what: str = "") -> None:
    """Warn (`taylorode.SwitchWarning`, once per message) that `who` cannot see where the
    vector field switches (`what`: which operations, if known)."""
    import warnings

    from .._errors import SwitchWarning

    warnings.warn_explicit(
        f"The vector field switches{what}, and {who} cannot see "
        "where: a step may run over a switch and be wrong. taylorode.Taylor() with "
        "method='recurrence' (the default) ends steps at switches.",
        SwitchWarning,
        filename=__file__,
        lineno=1,
        module="taylorode",
        registry=_REGISTRY,
    )
