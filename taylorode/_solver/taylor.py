import math
from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from diffrax import RESULTS
from jaxtyping import Array, PyTree

from .._coefficients import AbstractTaylorMethod, check_order, resolve_method
from .._coefficients._base import SwitchSeries
from .._custom_types import Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interop import (
    ControllerTolerances,
    filled_tolerances,
    no_tolerances,
    tolerance_slot,
)
from .._jorba_zou import (
    jorba_zou_factor,
    order_from_tolerance,
    runtime_orders,
    select_order_index,
    static_tolerance,
    term_error,
    tolerance_scale,
    valid_tolerance,
)
from .._polynomial import horner, stack, sum_series
from ._loop import bounded_while_loop
from ._switching import (
    all_clear,
    first_change,
    first_switch,
    root_derivative,
    tail,
    tail_ratio,
)
from .base import (
    AbstractTaylorSolver,
    all_finite,
    reference_step,
    rescale,
)


class TaylorState(eqx.Module):
    """What `Taylor` carries between steps.

    - `coeffs`: the coefficients at the current point, scaled by `h_ref`, zero-padded
        to the largest order: a tuple of `max(orders) + 1` PyTrees shaped like the state
        (a tuple rather than a stacked array: stacking costs time in every step).
    - `switches`: the series of the vector field's switching functions (then of the
        event's conditions) at the same point and scaled alike, shape
        `(max(orders), n)`; `None` for a smooth field without an event.
    - `h_ref`: the step length the coefficients are scaled by (the last step's).
    - `index`: which of the candidate orders `coeffs` has.
    - `fresh`: whether `coeffs` are placeholders still (before the first step of a
        solve whose `init` did not expand them), for the next step to expand.
    - `counts`: accepted steps taken at each candidate order so far.
    - `orders`: the candidate orders (static), ascending; `counts[i]` is for `orders[i]`.
    - `unseen`: the switching operations the engine cannot see into (static; they are
        evaluated along each step), as `(primitive, where)` pairs.
    - `event_columns`: how many of the last columns of `switches` are the event's
        (static).
    """

    coeffs: PyTree[Array]
    switches: Array | None
    h_ref: Array
    index: Array
    fresh: Array
    counts: Array
    orders: tuple[int, ...] = eqx.field(static=True)
    unseen: tuple = eqx.field(static=True, default=())
    event_columns: int = eqx.field(static=True, default=0)


# Most pieces one step is cut into at switches (see `Taylor._pieces`); a step
# that needs more is rejected, and the controller retries a shorter one.
MAX_PIECES = 4


class Taylor(AbstractTaylorSolver):
    r"""Explicit Taylor-series method, of an order chosen from the tolerance, fixed, or
    chosen per step.

    Each step sums a truncated Taylor series whose coefficients come from Taylor-mode
    automatic differentiation. Over a step $[t_0, t_1]$ the expansion is of the
    solution of the *term* in the normalised variable $s \in [0, 1]$,
    $\frac{dy}{ds} = \text{vf\_prod}(t_0 + s h, y, \text{args}, \text{contr}(t_0, t_1))$
    with $h = t_1 - t_0$, so the step is right for diffrax's time-reversed and adjoint
    terms as well as forward solves.

    **Order.**

    - `Taylor()` takes its order from the tolerance of the adaptive step-size
      controller given to `diffeqsolve` ([`taylorode.TaylorController`][] or
      `diffrax.PIDController`), by Jorba & Zou's rule
      $p = \max(2, \lceil -\tfrac12 \ln ε + 1 \rceil)$ with $ε$ = `rtol` (`atol` where
      `rtol = 0`): 8 at 1e-6, 13 at 1e-10, 18 at 1e-14. The tolerance reaches the
      solver through diffrax's channel for implicit solvers' tolerances, so `Taylor`
      is formally a `diffrax.AbstractImplicitSolver` (it solves no equations); with
      `ConstantStepSize` diffrax asks for an adaptive controller: give
      `Taylor(order=p)` there. Where the tolerance is a traced value (an argument of
      a jitted function, to sweep tolerances without recompiling), the order cannot
      be fixed at trace time: `Taylor()` then chooses per step among the orders
      6, 10, 14 and 18 as `Taylor(orders=(6, 10, 14, 18))` does (below), which costs
      the compile time of four coefficient kernels; an invalid traced tolerance ends
      the solve with `RESULTS.nonfinite` ([`taylorode.diffeqsolve`][] reports it as
      `taylorode.RESULTS.invalid_tolerance`).
    - `Taylor(order=p)` fixes the order.
    - `Taylor(orders=(p1, p2, ...))` chooses, before each step, the order with the
      least estimated work per unit time, $i^2 / h_i$, under Jorba & Zou's error model
      at the relative tolerance that applies at the current state,
      $ε_\text{eff} = 1/\|y / (\text{atol} + \text{rtol}|y|)\|$ (so orders fall where
      the absolute tolerance takes over). One coefficient kernel per order is compiled
      and dispatched with `lax.switch`; under `vmap` the index is the largest any
      trajectory asks for, so the switch stays a real conditional. Each extra order
      adds its kernel's compile time (measured in `docs/benchmarks.md`).

    **Coefficients are computed once per step, at its end** (first same as last). They
    are carried in the solver state, rescaled to the next step's length, and are the
    next step's series; a rejected step reuses the carried set with its smaller length,
    at no extra cost. Every expansion of a step (at its start where nothing is carried,
    after each switch, at its end) is made by one loop, so the compiled program holds
    the coefficient kernel once. The first step of a solve, and a step after a jump in
    the vector field (`made_jump`), expand at their start too. With an adaptive
    controller the first step sizes itself: an attempt that the series at $y_0$ say is
    too long (its error estimate from there beyond the tolerance) is rejected with that
    estimate, and the controller retries at the length it gives (with
    [`taylorode.TaylorController`][], Jorba & Zou's length; it shows as a rejected
    step in `sol.stats`). `Taylor(order=p)`, which has no tolerances to judge
    a step by, expands at $y_0$ in `init` instead.

    **Error estimate**, for a step of length $h$ with the series
    $c_j = y^{[j]}(t_1) h^j$ at its *end* (the error of a step of the same length taken
    from there, which is the quantity Jorba & Zou's rule sizes the next step from):

    - `Taylor(order=p)`: per component, the larger of the last two terms,
      $\max(|c_{p-1}|, |c_p|)$ (the solver has no tolerances to weigh them with).
    - `Taylor()`: the last two terms measured against the tolerance
      $\tau = \text{atol} + \text{rtol}\max(|y_0|, |y_1|)$, each with its own exponent,
      $\tau \max(|c_p|/\tau, (|c_{p-1}|/\tau)^{p/(p-1)})$: then $r^{-1/p}$ is exactly
      Jorba & Zou's radius $\min_j (\tau/|c_j|)^{1/j}$ in units of $h$.
    - `Taylor(orders=...)`: as `Taylor()` for the order $q$ of the step, re-expressed
      at the reference order $p = \max(\text{orders})$ (raised to $p/q$ in the
      tolerance-scaled norm, with the ratio of Jorba & Zou's safety factors), because
      controllers size steps with the static exponent `1/error_order`; $r \le 1$ is
      unchanged by this.

    It works with [`taylorode.TaylorController`][] (which accepts steps sized from the
    coefficients at their start without a test, as heyoka does) and with
    `diffrax.PIDController`.

    **Switches.** Where the vector field switches inside a step (a `jnp.where` whose
    condition flips, `abs`, `clip`, relu, `floor`, `mod`, `interp`, ...), the step is
    cut into pieces: each ends just past the first sign change of the field's switching
    functions, located from their Taylor series, and the next is expanded on the other
    side (at most four per step; a step needing more is rejected). The later pieces'
    own error estimates count towards the step's. See the guide "Non-smooth fields and
    events". A step that starts where the coefficients are not finite (a singular point
    of the field, a non-finite state) ends the solve with `diffrax.RESULTS.nonfinite`.

    - `order(terms)` and `error_order(terms)` return the (largest) order.
    - Dense output: the step's own Taylor polynomial
      ([`taylorode.TaylorInterpolation`][]), at full order, no extra evaluations.
    - [`taylorode.order_counts`][] reports the accepted steps per order.

    Only `diffrax.ODETerm`s are accepted; control and SDE terms raise diffrax's
    `TermAndSolverIncompatible` (a `ValueError`) at trace time.

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

        @book{griewank2008evaluating,
            author={Griewank, Andreas and Walther, Andrea},
            title={Evaluating Derivatives: Principles and Techniques of Algorithmic
                   Differentiation},
            edition={2},
            publisher={SIAM},
            year={2008}
        }
        ```
    """

    taylor_order: int | None
    orders: tuple[int, ...] | None
    method: AbstractTaylorMethod
    root_finder: ControllerTolerances
    event: Any

    solver_name: ClassVar[str] = "Taylor"
    jorba_zou_estimate: ClassVar[bool] = True

    def __init__(
        self,
        order: int | None = None,
        method: str | AbstractTaylorMethod = "recurrence",
        *,
        orders: Sequence[int] | None = None,
        event: Any = None,
    ):
        self.method = resolve_method(method)
        self.event = event
        if orders is not None:
            if order is not None:
                raise ValueError(
                    "Give either `order` (one fixed order) or `orders` (the orders to "
                    "choose from at each step), not both."
                )
            self.orders = check_orders(orders, self.method)
            self.taylor_order = None
        else:
            self.orders = None
            self.taylor_order = None if order is None else check_order(order, self.method)
        if self.taylor_order is None:
            # Filled by `diffeqsolve` with the adaptive controller's rtol/atol/norm.
            self.root_finder = tolerance_slot()
        else:
            self.root_finder = no_tolerances()

    @property
    def root_find_max_steps(self) -> int:
        return 0

    # -- orders: resolved in one place ------------------------------------------------

    def candidate_orders(self) -> tuple[int, ...]:
        """The orders this solver steps with, ascending: `(order,)` for a fixed order,
        `orders` when given, else Jorba & Zou's order for the controller's tolerance
        (or, where that tolerance is traced, the orders `(6, 10, 14, 18)` to choose
        from per step)."""
        if self.orders is not None:
            return self.orders
        if self.taylor_order is not None:
            return (self.taylor_order,)
        rtol, atol, _ = self._tolerances()
        eps = static_tolerance(rtol, atol)
        if eps is None:  # known at run time only: choose per step among a few orders
            return runtime_orders(self.method.max_order)
        return (order_from_tolerance(eps, self.method.max_order),)

    def _tolerances(self):
        tols = filled_tolerances(self.root_finder)
        if tols is None:
            raise ValueError(
                "`taylorode.Taylor()` without an order takes its order from the "
                "tolerances of an adaptive step-size controller passed to "
                "`diffrax.diffeqsolve` (`taylorode.TaylorController` or "
                "`diffrax.PIDController`), and there is none here. Give the order, "
                "`Taylor(order=p)`, to use it with a constant step or on its own."
            )
        return tols

    def _valid_tolerance(self):
        """Whether a traced tolerance is valid (`None`: no tolerance, or a concrete one,
        checked at trace time)."""
        tols = filled_tolerances(self.root_finder)
        if tols is None:
            return None
        rtol, atol, _ = tols
        if static_tolerance(rtol, atol) is not None:
            return None
        return valid_tolerance(rtol, atol)

    def order(self, terms) -> int:
        return max(self.candidate_orders())

    def error_order(self, terms) -> int:
        return max(self.candidate_orders())

    # -- coefficients -----------------------------------------------------------------

    def _expand_at(self, terms, t, y, args, h, index):
        """Coefficients at `(t, y)` scaled by the step `h`, of the order
        `candidate_orders()[index]`, zero-padded to the largest order; the last two
        terms `(|c_{q-1}|, |c_q|)` (for q = 1, the last term twice) with the switching
        functions' `tail` (`None` for a smooth field); and the series of
        the switching functions, scaled alike and zero-padded to `max(orders)` rows
        (`None` for a smooth field; no columns where the only switches are ones the
        engine cannot see into; the event conditions' series last); and, static, the
        switching operations the engine cannot see into (`SwitchSeries.unseen`) with the
        number of event columns."""
        orders = self.candidate_orders()
        width = max(orders) + 1
        found = {}

        def branch(q):
            def expand(t, y, args, h):
                coeffs, switches = self._expand_switching(terms, t, h, y, args, q)
                own = 0 if switches.coeffs is None else switches.coeffs.shape[1]
                switches = self._with_events(switches, terms, t, h, coeffs, args, q)
                total = 0 if switches.coeffs is None else switches.coeffs.shape[1]
                found["static"] = (switches.unseen, total - own)
                pad = [jtu.tree_map(jnp.zeros_like, coeffs[0])] * (width - q - 1)
                last = jtu.tree_map(jnp.abs, coeffs[-1])
                prev = jtu.tree_map(jnp.abs, coeffs[-2]) if q >= 2 else last
                sw = switches.coeffs
                if sw is None and switches.unseen:
                    sw = jnp.zeros((q, 0), jnp.result_type(t, 1.0))
                tails = None
                if sw is not None:
                    tails = tail(sw)
                    sw = jnp.concatenate([sw, jnp.zeros((width - 1 - q,) + sw.shape[1:], sw.dtype)])
                return tuple(coeffs + pad), (prev, last, tails), sw

            return expand

        if len(orders) == 1:
            out = branch(orders[0])(t, y, args, h)
        else:
            out = lax.switch(index, [branch(q) for q in orders], t, y, args, h)
        return out + (found["static"],)

    def _with_events(self, switches, terms, t, h, coeffs, args, q):
        """`switches` with the series of the event's condition functions along the
        expansion, and of the switching functions inside them (a boolean condition's
        comparisons), appended as further switching functions (the last columns)."""
        conditions = self._event_conditions(terms)
        if conditions is None:
            return switches
        series = self.method.push_forward(conditions, t, h, coeffs, args, q)
        qs = series if switches.coeffs is None else jnp.concatenate([switches.coeffs, series.astype(switches.coeffs.dtype)], axis=1)
        return SwitchSeries(qs, switches.unseen)

    def _advance(self, terms, t0, h, args, cs, q, a, unseen, n_events):
        """One piece of a step through the switches of the vector field: from the
        fraction `a` of the step, with the coefficients `cs` (valid from there, scaled
        to the rest of the step) and the switching functions' series `q` (scaled
        alike; `None` for a smooth field), to just past the first switch ahead
        (`first_switch`), or to the step's end where there is none. Switches the engine
        cannot see into (`unseen`) are found by evaluating them along the piece
        (`first_change`). A cheap whole-piece bound first, so that most steps take the
        plain path.

        **Returns:** `(y, a_next, event)`: the state where the piece ends, the fraction
        of the step reached (1 at its end) and whether the piece ends at a crossing of
        the event's condition (0 or 1).
        """
        dtype = jnp.result_type(h, 1.0)
        plain_end = (jtu.tree_map(lambda *c: sum_series(list(c)), *cs), jnp.ones((), dtype), jnp.zeros((), jnp.int32))
        if q is None:
            return plain_end

        def cut(_):
            end, crossed, which = first_switch(q)
            event = crossed & (which >= q.shape[1] - n_events) & (end < 1)
            end = root_derivative(q, end, crossed, which)
            if unseen:
                t_a, rest = t0 + a * h, (1 - a) * h

                def signature(u):
                    y_u = jtu.tree_map(lambda *c: horner(list(c), u.astype(c[0].dtype)), *cs)
                    return self._signature(terms, t_a, rest, u, y_u, args)

                end = jnp.minimum(end, first_change(signature, lax.stop_gradient(end)))
            y_end = jtu.tree_map(lambda *c: horner(list(c), end.astype(c[0].dtype)), *cs)
            a_next = jnp.where(end >= 1, jnp.ones_like(a), a + end.astype(a.dtype) * (1 - a))
            return y_end, a_next.astype(dtype), event.astype(jnp.int32)

        if unseen:
            return cut(None)
        return lax.cond(eqxi.unvmap_any(~all_clear(q)), cut, lambda _: plain_end, None)

    def _pieces(self, terms, t0, t1, y0, args, coeffs, switches, index, first, fresh, unseen, n_events):
        """The step from `t0` to `t1`: every expansion it needs, made by one loop so
        that the compiled program holds one copy of the coefficient kernel.

        Each iteration expands the series once, at a point chosen by the iteration
        before: at the step's start where the step has no carried series (`fresh`: the
        solve's first step, or after a jump in the vector field); just past a switch of
        the vector field, for the next piece; at the step's end, for the next step
        (first same as last), which ends the loop. A smooth field's step is one
        iteration (two when fresh); a switching one's at most `MAX_PIECES` pieces (a
        step needing more is rejected). On the solve's `first` step, a step that the
        series at its start say is too long (its error estimate beyond the tolerance)
        stops after that expansion, to be rejected and retried at the length that
        estimate gives.

        **Returns:** a dict: `y1`; the step's dense output; its error estimate; the
        series at its end (`next`: coefficients, switching rows, order index); the order
        index of the step itself.
        """
        h = jnp.asarray(t1 - t0)
        dtype = jnp.result_type(h, 1.0)
        h_ref = reference_step(t0, t1)
        h_nz = h_ref.astype(dtype)
        switching = switches is not None
        zero, none = jnp.zeros((), dtype), jnp.zeros((), jnp.int32)
        # Error estimates are real (a complex state's too).
        zeros_y = jtu.tree_map(lambda y: jnp.zeros(jnp.shape(y), jnp.finfo(jnp.result_type(y)).dtype), y0)

        def expand(t, y, scale, idx):
            cs, last_two, q, _ = self._expand_at(terms, t, y, args, scale, idx)
            return tuple(cs), last_two, q

        # The end expansion's outputs, before there are any: zeros of their shapes.
        shapes = jax.eval_shape(expand, t0, y0, h_nz, index)
        blank = jtu.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        carry = dict(
            stage=jnp.where(fresh, 0, 1).astype(jnp.int32),
            a=zero, y=y0, cs=tuple(coeffs), q=switches, count=none, events=none,
            error=zeros_y, worst=zero, start_error=zeros_y, too_long=jnp.array(False),
            done=jnp.array(False), next=blank, next_index=index,
        )
        if switching:
            carry["pieces"] = jtu.tree_map(
                lambda c: jnp.zeros((MAX_PIECES,) + c.shape, c.dtype), stack(list(coeffs))
            )
            carry["starts"] = jnp.full((MAX_PIECES,), jnp.inf, dtype)

        def body(c):
            starting = c["stage"] == 0
            y_n, a_n, event = self._advance(terms, t0, h, args, c["cs"], c["q"], c["a"], unseen, n_events)
            at_end = ~starting & (a_n >= 1)
            rest = (1 - a_n) * h
            rest = jnp.where(rest == 0, jnp.ones_like(rest), rest).astype(dtype)
            t_x = jnp.where(starting, t0, jnp.where(at_end, t1, t0 + a_n * h))
            y_x = jtu.tree_map(lambda a, b: jnp.where(starting, a, b), y0, y_n)
            scale = jnp.where(starting, h_nz, jnp.where(at_end, h_ref.astype(dtype), rest))
            # Batch-uniform under vmap (the order switch stays a real conditional): a
            # lane expanding inside its step takes the highest order any asks for.
            idx = eqxi.unvmap_max(jnp.where(at_end, self._next_order_index(y_n), index))
            cs_x, last_two, q_x = expand(t_x, y_x, scale, idx)
            e_x = self._error(last_two, y_x, y_x, idx)
            # The series at the start, for the step (of length 0 too, which sums to y0).
            cs_start = rescale(cs_x, h_nz, y_x, h)
            q_start = None if q_x is None else _rescale_rows(q_x, h_nz, h)
            r_x = self._measure(e_x, y_x, y_x)
            piece = ~starting & ~at_end  # a piece that ends at a switch
            out = dict(c)
            # At the start: the step's series, and whether it is too long.
            too_long = starting & first & (r_x > 1)
            out["start_error"] = jtu.tree_map(lambda e, o: jnp.where(starting, e, o), e_x, c["start_error"])
            out["too_long"] = c["too_long"] | too_long
            # A piece of the step (the whole step for a smooth field): record it.
            if switching:
                k = jnp.minimum(c["count"], MAX_PIECES - 1)
                out["pieces"] = jtu.tree_map(
                    lambda p, s: jnp.where(starting, p, p.at[k].set(s)), c["pieces"], stack(list(c["cs"]))
                )
                out["starts"] = jnp.where(starting, c["starts"], c["starts"].at[k].set(c["a"]))
            out["count"] = c["count"] + jnp.where(starting, 0, 1).astype(jnp.int32)
            out["events"] = c["events"] + jnp.where(starting, 0, event)
            out["a"] = jnp.where(starting, c["a"], a_n)
            out["y"] = jtu.tree_map(lambda n, o: jnp.where(starting, o, n), y_n, c["y"])
            # Coefficients for what follows: the first piece's (at the start), the next
            # piece's (past a switch), the next step's (at the end).
            new = starting | piece
            cs_new = jtu.tree_map(lambda a, b: jnp.where(starting, a, b), tuple(cs_start), cs_x)
            out["cs"] = jtu.tree_map(lambda n, o: jnp.where(new, n, o), cs_new, c["cs"])
            if switching:
                out["q"] = jnp.where(new, jnp.where(starting, q_start, q_x), c["q"])
            out["error"] = jtu.tree_map(lambda e, o: jnp.where(piece, jnp.maximum(o, e), o), e_x, c["error"])
            out["worst"] = jnp.where(piece, jnp.maximum(c["worst"], r_x), c["worst"])
            out["next"] = jtu.tree_map(
                lambda n, o: jnp.where(at_end, n, o), (cs_x, last_two, q_x), c["next"]
            )
            out["next_index"] = jnp.where(at_end, idx, c["next_index"])
            out["done"] = at_end
            out_of_pieces = piece & (out["count"] >= MAX_PIECES)
            finished = too_long | at_end | out_of_pieces
            out["stage"] = jnp.where(finished, 2, 1).astype(jnp.int32)
            return out

        c = bounded_while_loop(lambda c: c["stage"] < 2, body, carry, MAX_PIECES + 2)
        y1 = c["y"]
        next_cs, last_two, next_q = c["next"]
        y_error = self._error(last_two, y0, y1, c["next_index"])
        if switching:
            # The pieces after a switch were expanded on the other side; their own
            # estimates count, and a piece beyond the tolerance, a step whose pieces
            # ran out before its end, or one that hides two crossings of an event's
            # condition (invisible at its ends, where diffrax looks) is rejected (an
            # infinite estimate, which no controller accepts).
            fail = ~c["done"] | (c["worst"] > 1) | (c["events"] >= 2)
            y_error = jtu.tree_map(
                lambda e, p: jnp.where(fail, jnp.inf, jnp.maximum(e, p)), y_error, c["error"]
            )
            dense = dict(coeffs=c["pieces"], starts=c["starts"])
        else:
            dense = dict(coeffs=stack(list(c["cs"])))
        # A fresh step is measured from both ends; a first step too long by the series
        # at its start is rejected with that estimate, negated (the protocol's veto:
        # its end was never reached, so no controller may accept it).
        y_error = jtu.tree_map(
            lambda e, s: jnp.where(c["too_long"], -s, jnp.where(fresh, jnp.maximum(e, s), e)),
            y_error, c["start_error"],
        )
        y1 = jtu.tree_map(lambda a, b: jnp.where(c["too_long"], b, a), y1, y0)
        return dict(y1=y1, dense=dense, error=y_error, next=(next_cs, next_q), next_index=c["next_index"])

    def _measure(self, error, y0, y1):
        """An error estimate measured against the tolerance (the controller's norm of
        `error / (atol + rtol max(|y0|, |y1|))`); 0 where the solver has no tolerances."""
        if self.taylor_order is not None:
            return jnp.zeros((), jnp.finfo(jnp.result_type(*jtu.tree_leaves(y0), 1.0)).dtype)
        rtol, atol, norm = self._tolerances()
        scaled = jtu.tree_map(lambda e, a, b: e / tolerance_scale(rtol, atol, a, b).astype(e.dtype), error, y0, y1)
        return jnp.asarray(norm(scaled))

    def _next_order_index(self, y):
        """Per-step order choice (least work per unit time at the tolerance that
        applies at `y`), made the same across a vmapped batch so that `lax.switch`
        stays a real conditional."""
        orders = self.candidate_orders()
        if len(orders) == 1:
            return jnp.array(0, jnp.int32)
        rtol, atol, norm = self._tolerances()
        a0 = lax.stop_gradient(norm(jtu.tree_map(lambda y: y / tolerance_scale(rtol, atol, y, y), y)))
        eps_eff = jnp.where(a0 > 0, 1 / jnp.where(a0 > 0, a0, 1), 1)
        return eqxi.unvmap_max(select_order_index(orders, eps_eff))

    def _error(self, last_two, y0, y1, index):
        """The step's error estimate from the last two terms `|c_{q-1}|, |c_q|` of the
        series at its end (see the class doc)."""
        prev, last, tails = last_two
        if self.taylor_order is not None:
            # No tolerances here: per component, the larger of the two (and at least
            # the switching functions' own last terms).
            error = jtu.tree_map(jnp.maximum, prev, last)
            if tails is not None and tails[0].shape[-1]:
                floor = jnp.max(tails[0])
                error = jtu.tree_map(lambda e: jnp.maximum(e, floor.astype(e.dtype)), error)
            return error
        rtol, atol, _ = self._tolerances()
        orders = self.candidate_orders()
        p = max(orders)
        log_fs = [math.log(jorba_zou_factor(o)) for o in orders]
        log_fp = math.log(jorba_zou_factor(p))

        def leaf(a, b, u, v):
            scale = tolerance_scale(rtol, atol, a, b).astype(u.dtype)
            qq = jnp.asarray(orders, u.dtype)[index]
            lf = jnp.asarray(log_fs, u.dtype)[index]
            # Each term measured with its own exponent (Jorba & Zou's radius), in the
            # exponent-1/q form, then at the reference order p, for controllers'
            # static exponent 1/p.
            w = term_error(u / scale, v / scale, qq)
            w = w ** (p / qq) * jnp.exp(p * (log_fp - lf))
            if tails is not None:
                # The switching functions' series must be accurate to the tolerance
                # too (`tail`): their last terms, against it, at the same reference
                # order (they are one order below the state's).
                ratio = tail_ratio(tails, rtol, atol).astype(u.dtype)
                w = jnp.maximum(w, ratio ** (p / jnp.maximum(qq - 1, 1)))
            return w * scale

        return jtu.tree_map(leaf, y0, y1, prev, last)

    # -- diffrax interface ------------------------------------------------------------

    def _expands_in_init(self) -> bool:
        """Whether `init` expands the series at y0. Where the solver has the
        controller's tolerances it does not: the first step expands them (one copy of
        the coefficient kernel in the compiled program) and sizes itself (see `_pieces`).
        A fixed order has no tolerances to judge a first step by, so `init` expands
        them for the controller to size it from (`start_error` of the protocol)."""
        return filled_tolerances(self.root_finder) is None

    def _start_expansion(self, terms, t0, y0, args):
        """`(coeffs, switches, index, h0, y_error)`: the coefficients at `(t0, y0)` and
        the series of the switching functions, scaled to a reference length `h0`,
        their order index, `h0`, and the error estimate of a step of length `h0` from
        there. `h0 = min(1, (1 + |y0|) / |f(t0, y0)|)`, a time scale
        of the field at `y0`, so that the scaled coefficients neither overflow nor
        underflow where the field is fast."""
        h0 = _time_scale(terms, t0, y0, args)
        index = self._next_order_index(y0)
        coeffs, last_two, switches, (unseen, events) = self._expand_at(terms, t0, y0, args, h0, index)
        return coeffs, (switches, unseen, events), index, h0, self._error(last_two, y0, y0, index)

    def _start_error(self):
        if self._expands_in_init():
            return jtu.Partial(_start_error, self)
        return None

    def init(self, terms, t0: RealScalarLike, t1: RealScalarLike, y0: Y, args: Args) -> TaylorState:
        self._check_init(terms, y0)
        if self._expands_in_init():
            # The same expansion as the protocol's `start_error` (which the controller
            # calls to size the first step), so XLA computes it once.
            coeffs, (switches, unseen, events), index, h0, _ = self._start_expansion(terms, t0, y0, args)
            fresh = jnp.array(False)
        else:
            # Placeholders of the series' shapes: the first step expands them.
            shapes = eqx.filter_eval_shape(self._start_expansion, terms, t0, y0, args)
            zeros = jtu.tree_map(
                lambda x: jnp.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x, shapes
            )
            coeffs, (switches, unseen, events), index, h0, _ = zeros
            h0 = jnp.ones_like(h0)
            fresh = jnp.array(True)
        return TaylorState(
            coeffs=coeffs,
            switches=switches,
            unseen=unseen,
            event_columns=events,
            h_ref=h0,
            index=index,
            fresh=fresh,
            counts=jnp.zeros(len(self.candidate_orders()), jnp.int32),
            orders=self.candidate_orders(),
        )

    def step(
        self,
        terms,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: TaylorState,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, TaylorState, RESULTS]:
        state = solver_state
        h = jnp.asarray(t1 - t0)
        # The series to sum: the ones carried from the end of the last step (or from
        # `init`), rescaled from that step's length to this one's; or, where there are
        # none (the first step of a solve that did not expand in `init`, or after a
        # jump in the vector field), the ones the step expands at its start.
        first = state.fresh
        fresh = first if made_jump is False else first | made_jump
        index = eqxi.unvmap_max(jnp.where(fresh, self._next_order_index(y0), state.index))
        coeffs = rescale(state.coeffs, state.h_ref, y0, h)
        switches = None if state.switches is None else _rescale_rows(state.switches, state.h_ref, h)
        out = self._pieces(
            terms, t0, t1, y0, args, coeffs, switches, index, first, fresh, state.unseen, state.event_columns
        )
        y1, y_error = out["y1"], out["error"]
        # Non-finite coefficients where the solution is known (this step's start: a
        # state that is not finite, or a singular point of the vector field) cannot be
        # cured by a smaller step: the step is accepted as it is (zero estimate, the
        # state kept) and ends the solve with RESULTS.nonfinite, per trajectory and
        # honouring `throw=False`, instead of rejecting until max_steps.
        # (NaN or inf in any coefficient reaches their sum, y1: one small reduction.)
        finite = all_finite(y1)
        valid = self._valid_tolerance()
        if valid is not None:
            # A traced tolerance that is negative, zero or not finite ends the solve
            # the same way (checked at trace time where it is concrete).
            finite = finite & valid
        y1 = jtu.tree_map(lambda a, b: jnp.where(finite, a, b), y1, y0)
        y_error = jtu.tree_map(lambda e: jnp.where(finite, e, jnp.zeros_like(e)), y_error)
        result = RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)
        taken = jax.nn.one_hot(index, state.counts.shape[0], dtype=jnp.int32)
        next_coeffs, next_switches = out["next"]
        new_state = TaylorState(
            coeffs=next_coeffs,
            switches=next_switches,
            h_ref=reference_step(t0, t1),
            index=out["next_index"],
            fresh=jnp.zeros_like(state.fresh),
            counts=state.counts + taken,
            orders=state.orders,
            unseen=state.unseen,
            event_columns=state.event_columns,
        )
        return y1, y_error, out["dense"], new_state, result


def _rescale_rows(q: Array, h_ref: Array, h) -> Array:
    """Switching-function coefficients scaled by `h_ref` (row j by `h_ref^j`) rescaled
    to the step length `h`."""
    ratio = (h / h_ref).astype(q.dtype)
    return q * ratio ** jnp.arange(q.shape[0], dtype=q.dtype)[:, None]


def _start_error(solver, terms, t0, y0, args):
    _, _, _, h0, y_error = solver._start_expansion(terms, t0, y0, args)
    return h0, y_error


def _time_scale(terms, t0, y0, args) -> Array:
    """`min(1, (1 + max|y0|) / max|f(t0, y0)|)` (1 where the field is zero or not
    finite), in the dtype of `t0`."""
    t0 = jnp.asarray(t0)
    dtype = jnp.result_type(t0, 1.0)
    f0 = terms.vf(t0, y0, args)

    def largest(tree):
        leaves = [jnp.max(jnp.abs(x)).astype(dtype) for x in jtu.tree_leaves(tree) if jnp.size(x)]
        return jnp.max(jnp.stack(leaves)) if leaves else jnp.zeros((), dtype)

    a, b = largest(y0), largest(f0)
    ok = (b > 0) & jnp.isfinite(b) & jnp.isfinite(a)
    return lax.stop_gradient(jnp.where(ok, jnp.minimum(1, (1 + a) / jnp.where(ok, b, 1)), 1))


def check_orders(orders, method: AbstractTaylorMethod) -> tuple[int, ...]:
    """Validate a set of candidate orders: each a valid order, at least two, distinct."""
    try:
        orders = tuple(orders)
    except TypeError:
        raise ValueError(
            f"`orders` must be a sequence of Python ints; got {orders!r}."
        ) from None
    orders = tuple(sorted(check_order(o, method) for o in orders))
    if len(orders) < 2 or len(set(orders)) != len(orders):
        raise ValueError(
            f"`orders` must hold at least two distinct orders to choose from; got "
            f"{orders}. For one fixed order use `Taylor(order=p)`."
        )
    if orders[0] < 2:
        raise ValueError(
            f"Per-step order selection needs orders of at least 2; got {orders}."
        )
    return orders


def order_counts(solution) -> dict[int, Any]:
    """Accepted steps per order in a solve by [`taylorode.Taylor`][] (its Taylor orders)
    or [`taylorode.VariableOrderHermiteObreschkoff`][] (the orders p + q of its pairs).

    diffrax's `solution.stats` has a fixed set of keys (accepted and rejected steps);
    the orders a `Taylor` solve used are kept in its solver state, which diffrax returns
    when asked for it.

    **Arguments:**

    - `solution`: a `diffrax.Solution` from `diffeqsolve(..., solver=taylorode.Taylor(...),
        saveat=diffrax.SaveAt(..., solver_state=True))`.

    **Returns:**

    A dict from order to the number of accepted steps taken at it (arrays, with any
    batch axes of the solve); the counts sum to `solution.stats["num_accepted_steps"]`.
    """
    state = getattr(solution, "solver_state", None)
    pairs = getattr(state, "pairs", None)  # VariableOrderHermiteObreschkoff's state
    if pairs is not None:
        return {p + q: state.counts[..., i] for i, (p, q) in enumerate(pairs)}
    if not isinstance(state, TaylorState):
        raise ValueError(
            "`order_counts` reads the solver state of a `taylorode.Taylor` or "
            "`taylorode.VariableOrderHermiteObreschkoff` solve; pass "
            "`saveat=diffrax.SaveAt(..., solver_state=True)` to `diffeqsolve`."
        )
    return {q: state.counts[..., i] for i, q in enumerate(state.orders)}


Taylor.__init__.__doc__ = """**Arguments:**

- `order`: a fixed Taylor order (a Python int in `[1, method.max_order]`), or `None`
    (the default) to take it from the adaptive controller's tolerance.
- `method`: how coefficients are computed: `"recurrence"` (the default, our engine),
    `"jet"`, `"jvp"`, or an `AbstractTaylorMethod` instance.
- `orders`: instead of `order`, two or more orders (each at least 2) to choose from
    before every step; needs an adaptive controller.
- `event`: the `diffrax.Event` also passed to `diffeqsolve`, so that its conditions
    are expanded along each step and no crossing inside a step is missed (see
    [`taylorode.diffeqsolve`][], which passes it for you). Needs `method="recurrence"`.
"""
