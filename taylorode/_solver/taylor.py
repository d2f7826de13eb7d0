import math
from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
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
from .._polynomial import horner, horner_derivative, stack, sum_series, unstack
from ._switching import all_clear, first_change, first_switch, root_derivative, tail, tail_ratio
from .base import (
    AbstractTaylorSolver,
    all_finite,
    reference_step,
    refresh_after_jump,
    rescale,
)


class TaylorState(eqx.Module):
    """What `Taylor` carries between steps.

    - `coeffs`: the coefficients at the current point, scaled by `h_ref`, zero-padded
        to the largest order `max(orders)`, stacked in groups of consecutive orders: a
        tuple of PyTrees shaped like the state whose leaves have a leading order axis
        (see `_carried`). Stacked rather than one PyTree per order, so that what is
        done to the solver state every step (diffrax's selection of the new or the old
        state, the rescaling) is one XLA kernel per group and leaf, not one per order
        and leaf (20 fewer kernels in a step of order 13); in groups small enough for
        XLA:CPU to run a small field's step on its sequential path.
    - `switches`: the series of the vector field's switching functions (then of the
        event's conditions) at the same point and scaled alike, shape
        `(max(orders), n)`; `None` for a smooth field without an event.
    - `h_ref`: the step length the coefficients are scaled by (the last step's).
    - `index`: which of the candidate orders the next expansion is made at (and
        `coeffs` has, after the first step).
    - `counts`: accepted steps taken at each order so far (none yet: `coeffs` is still
        the series `init` expanded at the initial point, of the start order,
        `Taylor.start_order`).
    - `orders`: the orders steps are taken at (static), ascending: the candidate orders
        and the start order; `counts[i]` is for `orders[i]`.
    - `unseen`: the switching operations the engine cannot see into (static; they are
        evaluated along each step), as `(primitive, where)` pairs.
    - `event_columns`: how many of the last columns of `switches` are the event's
        (static).
    """

    coeffs: PyTree[Array]
    switches: Array | None
    h_ref: Array
    index: Array
    counts: Array
    orders: tuple[int, ...] = eqx.field(static=True)
    unseen: tuple = eqx.field(static=True, default=())
    event_columns: int = eqx.field(static=True, default=0)


# The order of the series expanded at the initial point where the order comes from the
# tolerance: the first step is taken at it, so that the compiled program holds the
# full-order expansion only where the steps make it (compile time, measured in
# docs/benchmarks.md).
START_ORDER = 4

# Most pieces one step is cut into at switches (see `Taylor._through_switches`); a step
# that needs more is rejected, and the controller retries a shorter one (with a constant
# step size, the solve ends).
MAX_PIECES = 4
# A piece after a switch runs as far as its own error estimate is this fraction of the
# tolerance, and the next piece starts there.
CAP_ERROR = 0.5


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
    at no extra cost. After a jump in the vector field (`made_jump`) they are
    recomputed at the step's start.

    **The first step.** Where the order comes from the tolerance, `init` expands the
    series at $y_0$ to the low *start order* $\min(4, p)$ (`start_order()`), so that the
    compiled program holds the full-order expansion only where the steps make it (up to a
    third less compile time than expanding $y_0$ to full order too, and more with the
    tolerance traced; measured in `docs/benchmarks.md`). The controller sizes the first step from that series by
    the same rule as every step, and the step checks itself: Jorba & Zou's estimate
    from the series' last two terms for the step's length, and, since two terms of a
    low-order series can both vanish where later ones do not ($y' = t^4$ from 0), the
    defect of the series' derivative at the step's end against the vector field there;
    a step that fails either is rejected. Being of low order, the first step is short
    (about $ε^{1/4}$ of the radius of convergence), and the steps after it grow by the
    controller's `factormax` until they reach full length: about three more steps per
    solve. `Taylor(order=p)` expands $y_0$ to its order $p$.

    **Error estimate**, for a step of length $h$ with the series
    $c_j = y^{[j]}(t_1) h^j$ at its *end* (the error of a step of the same length taken
    from there, which is the quantity Jorba & Zou's rule sizes the next step from):

    - `Taylor(order=p)`: per component, the larger of the last two terms,
      $\max(|c_{p-1}|, |c_p|)$ (the solver has no tolerances to weigh them with).
    - `Taylor()`: the last two terms measured against the tolerance
      $\tau = \text{atol} + \text{rtol}\max(|y_0|, |y_1|)$, each with its own exponent,
      $\tau \max(|c_p|/\tau, (|c_{p-1}|/\tau)^{p/(p-1)})$: then $r^{-1/p}$ is exactly
      Jorba & Zou's radius $\min_j (\tau/|c_j|)^{1/j}$ in units of $h$. Where the
      controller's norm is the max norm (`TaylorController`'s default), each component
      carries the largest value, $\tau$ times that of the largest terms: the norm, which
      is all a controller reads, is unchanged, and the powers are computed once per step
      rather than per component (a quarter of a batched Kepler solve's time).
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
    side. A piece after a switch runs only as far as its own error estimate allows (to
    half the tolerance), and the first piece only as far as the switching functions'
    series are accurate to the tolerance where one may come near zero (they may vary
    faster than the state, whose series sized the step); the next piece starts where
    one ends. At most four pieces per step: a step needing more is rejected (with a
    constant step size, the solve ends with `diffrax.RESULTS.dt_min_reached`,
    `taylorode.RESULTS.too_many_switches`). The later pieces' own error estimates count
    towards the step's. See the guide "Non-smooth fields and events". A step that
    starts where the coefficients are not finite (a singular point of the field, a
    non-finite state) ends the solve with `diffrax.RESULTS.nonfinite`.

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

    def start_order(self) -> int:
        """The order of the series `init` expands at the initial point, which the first
        step sums: `min(4, min(candidate_orders()))` where the order comes from the
        controller's tolerance (the first step is then sized by the controller from that
        series, and checked, see the class doc), the order itself for `Taylor(order=p)`."""
        orders = self.candidate_orders()
        if self.taylor_order is not None:
            return orders[0]
        return min(START_ORDER, orders[0])

    def step_orders(self) -> tuple[int, ...]:
        """The orders steps are taken at, ascending: the candidate orders and the start
        order (`TaylorState.counts` counts accepted steps per entry)."""
        return tuple(sorted(set(self.candidate_orders()) | {self.start_order()}))

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

    def _expand_order(self, terms, t, y, args, h, q):
        """Coefficients at `(t, y)` scaled by the step `h`, of the (static) order `q`,
        zero-padded to the largest candidate order; the last two terms
        `(|c_{q-1}|, |c_q|)` (for q = 1, the last term twice) with the switching
        functions' `tail` (`None` for a smooth field); the series of the switching
        functions, scaled alike and zero-padded to `max(orders)` rows (`None` for a
        smooth field; no columns where the only switches are ones the engine cannot
        see into; the event conditions' series last); and, static, the switching
        operations the engine cannot see into (`SwitchSeries.unseen`) with the number
        of event columns."""
        width = max(self.candidate_orders()) + 1
        coeffs, switches = self._expand_switching(terms, t, h, y, args, q)
        own = 0 if switches.coeffs is None else switches.coeffs.shape[1]
        switches = self._with_events(switches, terms, t, h, coeffs, args, q)
        total = 0 if switches.coeffs is None else switches.coeffs.shape[1]
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
        return tuple(coeffs + pad), (prev, last, tails), sw, (switches.unseen, total - own)

    def _expand_at(self, terms, t, y, args, h, index):
        """`_expand_order` at the order `candidate_orders()[index]` (a runtime index,
        dispatched with `lax.switch` where there are several candidates)."""
        orders = self.candidate_orders()
        if len(orders) == 1:
            return self._expand_order(terms, t, y, args, h, orders[0])
        found = {}

        def branch(q):
            def expand(t, y, args, h):
                *out, found["static"] = self._expand_order(terms, t, y, args, h, q)
                return tuple(out)

            return expand

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

    def _through_switches(self, terms, t0, h, y0, args, coeffs, switches, index, unseen, n_events, cap0):
        """The step from `t0` to `t0 + h` cut into pieces at the switches of the vector
        field: each piece ends just past the first switch ahead of it
        (`first_switch`), and the next piece is expanded there, on the other side.
        The first piece uses the carried coefficients `coeffs` and runs at most to
        `cap0` (`_switch_cap`); a later one ends sooner where its own error estimate
        for the rest of the step exceeds the tolerance (where it reaches `CAP_ERROR`
        of it); the next piece is expanded where a piece ends; at most `MAX_PIECES`.
        Switches the engine cannot see into (`unseen`) are found by evaluating them
        along each piece (`first_change`).

        **Returns:** `(y1, dense, error, worst, done)`: the state at the step's end; the
        pieces' coefficients (leading axis `MAX_PIECES`) and start fractions (`inf`
        for pieces not used); the largest of the later pieces' own error estimates;
        their largest error measured against the tolerance (0 without tolerances);
        and whether the pieces reached the step's end.
        """
        dtype = jnp.result_type(h, 1.0)

        def advance(cs, q, a, cap):
            end, crossed, which = first_switch(q)
            # A piece after a switch goes no further than its own error allows (`cap`,
            # in its own fraction of what is left of the step): it then ends short of
            # the next switch, and the next piece is expanded there.
            capped = cap < end
            crossed = crossed & ~capped
            end = jnp.where(capped, cap.astype(end.dtype), end)
            event = crossed & (which >= q.shape[1] - n_events) & (end < 1)
            end = root_derivative(q, end, crossed, which)
            if unseen:
                t_a, rest = t0 + a * h, (1 - a) * h

                def signature(u):
                    y_u = jtu.tree_map(lambda c: horner(list(c), u.astype(c.dtype)), cs)
                    return self._signature(terms, t_a, rest, u, y_u, args)

                end = jnp.minimum(end, first_change(signature, lax.stop_gradient(end)))
            y_end = jtu.tree_map(lambda c: horner(list(c), end.astype(c.dtype)), cs)
            a_next = jnp.where(end >= 1, jnp.ones_like(a), a + end.astype(a.dtype) * (1 - a))
            return y_end, a_next, event.astype(jnp.int32)

        pieces, starts = _one_piece(coeffs, dtype)
        error = jtu.tree_map(jnp.zeros_like, y0)
        zero, none = jnp.zeros((), dtype), jnp.zeros((), jnp.int32)
        p = max(self.candidate_orders())

        def capped(e, r):
            # The fraction of its length a later piece may run, and its error estimate
            # and measured error for that length. The estimate grows like the length^p
            # (at the reference order p; p - 1 is used, which errs towards shorter
            # pieces).
            exponent = max(p - 1, 1)
            cap = _cap(r, exponent).astype(dtype)
            shrink = cap**exponent
            return cap, jtu.tree_map(lambda x: x * shrink.astype(x.dtype), e), r * shrink

        def piece(k, carry):
            # Piece k runs from `a` with the coefficients `cs` (the carried ones for the
            # first) to just past its first switch; then the next piece's coefficients
            # are expanded there. One `first_switch` and one expansion in the program.
            a, y_a, cs, q, cap, pieces, starts, error, worst, events = carry
            need = a < 1

            def run(_):
                y_n, a_n, ev = advance(cs, q, a, cap)

                def expand(_):
                    rest = (1 - a_n) * h
                    rest = jnp.where(rest == 0, jnp.ones_like(rest), rest)
                    cs_n, last_two, q_n, _ = self._expand_at(terms, t0 + a_n * h, y_n, args, rest, index)
                    e = self._error(last_two, y_n, y_n, index)
                    cap_n, e, r = capped(e, self._measure(e, y_n, y_n))
                    return stack(list(cs_n)), q_n, cap_n, e, r

                def stop(_):
                    return cs, q, cap, error, zero

                cs_n, q_n, cap_n, e, r = lax.cond(eqxi.unvmap_any(need & (a_n < 1)), expand, stop, None)
                return y_n, a_n, ev, cs_n, q_n, cap_n, e, r

            def skip(_):
                return y_a, a, none, cs, q, cap, error, zero

            y_n, a_n, ev, cs_n, q_n, cap_n, e, r = lax.cond(eqxi.unvmap_any(need), run, skip, None)
            more = need & (a_n < 1)
            keep = lambda cond, new, old: jnp.where(cond, new, old)  # noqa: E731
            pieces = jtu.tree_map(lambda p, c: keep(need, p.at[k].set(c), p), pieces, cs)
            starts = starts.at[k].set(jnp.where(need, a, jnp.inf).astype(dtype))
            error = jtu.tree_map(lambda old, new: keep(more, jnp.maximum(old, new), old), error, e)
            worst = keep(more, jnp.maximum(worst, r), worst)
            events = events + jnp.where(need, ev, 0)
            return (
                keep(need, a_n, a),
                jtu.tree_map(lambda n, o: keep(need, n, o), y_n, y_a),
                jtu.tree_map(lambda n, o: keep(more, n, o), cs_n, cs),
                keep(more, q_n, q),
                keep(more, cap_n, cap),
                pieces, starts, error, worst, events,
            )

        # The coefficients travel stacked (one array per leaf of the state, leading axis
        # the order), so that each selection between pieces is one kernel, not one per
        # order.
        start = (jnp.zeros((), dtype), y0, stack(list(coeffs)), switches, cap0.astype(dtype))
        carry = start + (pieces, starts, error, zero, none)
        a, y1, _, _, _, pieces, starts, error, worst, events = lax.fori_loop(0, MAX_PIECES, piece, carry)
        # Two crossings of an event's condition inside one step would be invisible at
        # its ends, where diffrax looks: such a step is rejected (shorter ones follow).
        return y1, dict(coeffs=pieces, starts=starts), error, worst, (a >= 1) & (events < 2)

    def _check_first_step(self, state, switches, one_piece, next_coeffs, y0, y1, h, y_error):
        """`y_error`, or, where this is the first step and it is not accurate to the
        tolerance, its own estimate (above 1 against the tolerance) or an infinite one
        (the defect; no controller accepts it).

        The first step sums the start series (of a low order), so its own estimate is
        checked here: Jorba & Zou's, from that series' last two terms (and its switching
        functions' tails) for this step's length, and, because two terms of a
        low-order series can both vanish where later ones do not (`y' = t^4` from 0),
        the defect of its derivative at the step's end against the vector field there
        (the end series' first term), divided by `q + 1` as the truncation's is
        (where the step was not cut at a switch, `one_piece`). The
        estimate returned is the end series' as for every step, so that the next step
        is sized from the series it will sum. Computed in a real conditional, taken
        while a trajectory is at its first step (batch-uniform under vmap), which
        rescales the carried start series itself: the step's own rescaled terms are
        then read only by the series sum, and XLA fuses them into it (four kernels
        fewer in the loop body of a small field's solve)."""
        first = _at_first_step(state)
        q0 = self.start_order()

        def check(_):
            coeffs = rescale(_uncarried(state.coeffs)[: q0 + 1], state.h_ref, y0, h)
            own_tails = None if switches is None else tail(switches[:q0])
            last_two = (jtu.tree_map(jnp.abs, coeffs[max(q0 - 1, 1)]), jtu.tree_map(jnp.abs, coeffs[q0]), own_tails)
            own = self._error(last_two, y0, y1, state.index, q0)
            gap = jtu.tree_map(
                lambda c1, *cs: jnp.where(h == 0, 0, jnp.abs(horner_derivative(list(cs), 1) - c1) / (q0 + 1)),
                next_coeffs[1], *coeffs[: q0 + 1],
            )
            own_bad = first & ~(self._measure(own, y0, y1) <= 1)
            gap_bad = first & one_piece & ~(self._measure(gap, y0, y1) <= 1)
            return jtu.tree_map(lambda e, o: jnp.where(gap_bad, jnp.inf, jnp.where(own_bad, o, e)), y_error, own)

        return lax.cond(eqxi.unvmap_any(first), check, lambda _: y_error, None)

    def _switch_cap(self, switches):
        """How far into this step (a fraction, at most 1) the series of the switching
        functions `switches` (rescaled to the step) are accurate to the tolerance where
        a function may come near zero (`tail_ratio`; 1 without tolerances).

        The step's length was chosen from the series at its start, whose switching
        functions were judged over the last step's length: one that kept well away from
        zero there may reach it over a longer step, where its truncated series no longer
        tells where it does (`sign(sin(10 t))` in a field whose state varies slowly took
        steps across its switches with their roots misplaced, 1e-4 off at tol 1e-10).
        The first piece of the step ends where its series are accurate again."""
        one = jnp.ones((), switches.dtype)
        if self.taylor_order is not None or switches.shape[1] == 0:
            return one
        rtol, atol, _ = self._tolerances()
        # The tail (the last two terms) grows like the length^(m - 2) or faster.
        return _cap(tail_ratio(tail(switches), rtol, atol), max(switches.shape[0] - 2, 1))

    def _measure(self, error, y0, y1):
        """An error estimate measured against the tolerance (the controller's norm of
        `error / (atol + rtol max(|y0|, |y1|))`); 0 where the solver has no tolerances."""
        if self.taylor_order is not None:
            return jnp.zeros((), jnp.result_type(*jtu.tree_leaves(y0), 1.0))
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

    def _error(self, last_two, y0, y1, index, order=None):
        """The step's error estimate from the last two terms `|c_{q-1}|, |c_q|` of the
        series at its end (see the class doc), of the order `candidate_orders()[index]`,
        or of the static `order` where one is given (the start order)."""
        prev, last, tails = last_two
        if self.taylor_order is not None:
            # No tolerances here: per component, the larger of the two (and at least
            # the switching functions' own last terms).
            error = jtu.tree_map(jnp.maximum, prev, last)
            if tails is not None and tails[0].shape[-1]:
                floor = jnp.max(tails[0])
                error = jtu.tree_map(lambda e: jnp.maximum(e, floor.astype(e.dtype)), error)
            return error
        rtol, atol, norm = self._tolerances()
        orders = self.candidate_orders() if order is None else (order,)
        p = max(self.candidate_orders())
        log_fs = [math.log(jorba_zou_factor(o)) for o in orders]
        log_fp = math.log(jorba_zou_factor(p))

        def at_reference(u, v):
            # The two terms (measured against the tolerance) each with its own exponent
            # (Jorba & Zou's radius), in the exponent-1/q form, then at the reference
            # order p, for controllers' static exponent 1/p.
            if len(orders) == 1:
                q = orders[0]
                w = term_error(u, v, q)
                if q != p:
                    w = w ** (p / q) * math.exp(p * (log_fp - log_fs[0]))
            else:
                q = jnp.asarray(orders, u.dtype)[index]
                lf = jnp.asarray(log_fs, u.dtype)[index]
                w = term_error(u, v, q) ** (p / q) * jnp.exp(p * (log_fp - lf))
            if tails is not None:
                # The switching functions' series must be accurate to the tolerance
                # too (`tail`): their last terms, against it, at the same reference
                # order (they are one order below the state's).
                ratio = tail_ratio(tails, rtol, atol).astype(u.dtype)
                w = jnp.maximum(w, ratio ** (p / jnp.maximum(q - 1, 1)))
            return w

        scales = jtu.tree_map(
            lambda a, b, u: tolerance_scale(rtol, atol, a, b).astype(u.dtype), y0, y1, prev
        )
        leaves = jtu.tree_leaves(prev)
        if norm is optx.max_norm and leaves and all(jnp.size(x) for x in leaves):
            # The controller's norm is the largest component, and the estimate grows with
            # each term: its largest component is that of the largest terms, computed
            # once (the powers are most of the estimate's cost on wide or batched states).
            dtype = jnp.result_type(*leaves)

            def largest(tree):
                pairs = zip(jtu.tree_leaves(tree), jtu.tree_leaves(scales))
                return jnp.max(jnp.stack([jnp.max(x / s).astype(dtype) for x, s in pairs]))

            w = at_reference(largest(prev), largest(last))
            return jtu.tree_map(lambda s: w.astype(s.dtype) * s, scales)
        return jtu.tree_map(lambda u, v, s: at_reference(u / s, v / s) * s, prev, last, scales)

    # -- diffrax interface ------------------------------------------------------------

    def _start_expansion(self, terms, t0, y0, args):
        """`(coeffs, switches, index, h0, y_error)`: the coefficients at `(t0, y0)` of
        the start order and the series of the switching functions, scaled to a
        reference length `h0`; the order index the first expansion in the steps will
        use; `h0`; and the error estimate of a step of length `h0` from there.
        `h0 = min(1, (1 + |y0|) / |f(t0, y0)|)`, a time scale of the field at `y0`, so
        that the scaled coefficients neither overflow nor underflow where the field is
        fast."""
        h0 = _time_scale(terms, t0, y0, args)
        index = self._next_order_index(y0)
        q0 = self.start_order()
        coeffs, last_two, switches, (unseen, events) = self._expand_order(terms, t0, y0, args, h0, q0)
        return coeffs, (switches, unseen, events), index, h0, self._error(last_two, y0, y0, index, q0)

    def _start_error(self):
        return jtu.Partial(_start_error, self)

    def init(self, terms, t0: RealScalarLike, t1: RealScalarLike, y0: Y, args: Args) -> TaylorState:
        self._check_init(terms, y0)
        # The same expansion as the protocol's `start_error` (which the controller calls
        # to size the first step), so XLA computes it once.
        coeffs, (switches, unseen, events), index, h0, _ = self._start_expansion(terms, t0, y0, args)
        return TaylorState(
            coeffs=_carried(coeffs),
            switches=switches,
            unseen=unseen,
            event_columns=events,
            h_ref=h0,
            index=index,
            counts=jnp.zeros(len(self.step_orders()), jnp.int32),
            orders=self.step_orders(),
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
        h_ref = reference_step(t0, t1)  # what the end coefficients are scaled by
        if made_jump is not False:
            index = eqxi.unvmap_max(state.index)

            def fresh(h_ref):
                coeffs, _, switches, _ = self._expand_at(terms, t0, y0, args, h_ref, index)
                coeffs = _carried(coeffs)
                return (coeffs,) if switches is None else (coeffs, switches)

            carried = (lambda s: (s.coeffs,)) if state.switches is None else (lambda s: (s.coeffs, s.switches))
            state = refresh_after_jump(state, t0, h, made_jump, fresh, carried=carried)
        # This step's coefficients: the ones carried from the end of the last step
        # (or computed by `init`, or after a jump), rescaled from that step's length
        # to this one's. Rescaled where they are read, inside the conditionals below,
        # so that XLA fuses the rescaling into the series sum instead of writing out
        # every order for the conditionals' operands (one kernel per order, each step).
        def scaled():
            return rescale(_uncarried(state.coeffs), state.h_ref, y0, h)

        if state.switches is None:
            coeffs = scaled()
            y1 = jtu.tree_map(lambda *cs: sum_series(list(cs)), *coeffs)
            dense = dict(coeffs=stack(coeffs))
        else:
            # A field that switches: the step goes through its switches in pieces,
            # where its switching functions may change sign in it (a cheap bound
            # first, so that most steps take the plain path).
            switches = _rescale_rows(state.switches, state.h_ref, h)
            cap0 = self._switch_cap(switches)

            def cut(_):
                return self._through_switches(
                    terms, t0, h, y0, args, scaled(), switches, state.index, state.unseen, state.event_columns,
                    cap0,
                )

            def plain(_):
                coeffs = scaled()
                y1 = jtu.tree_map(lambda *cs: sum_series(list(cs)), *coeffs)
                dtype = jnp.result_type(h, 1.0)
                pieces, starts = _one_piece(coeffs, dtype)
                error = jtu.tree_map(jnp.zeros_like, y0)
                return y1, dict(coeffs=pieces, starts=starts), error, jnp.zeros((), dtype), jnp.array(True)

            if state.unseen:
                y1, dense, piece_error, worst, done = cut(None)
            else:
                doubt = ~all_clear(switches) | (cap0 < 1)
                y1, dense, piece_error, worst, done = lax.cond(eqxi.unvmap_any(doubt), cut, plain, None)
        # First same as last: the coefficients at the end, for the next step (or for
        # the controller, through the error estimate, if this step is rejected).
        index = self._next_order_index(y1)
        next_coeffs, last_two, next_switches, _ = self._expand_at(terms, t1, y1, args, h_ref, index)
        y_error = self._error(last_two, y0, y1, index)
        if self.taylor_order is None:
            if state.switches is None:
                own_switches, one_piece = None, True
            else:  # the defect is the start series' only where it ran to the end
                own_switches, one_piece = switches, ~jnp.isfinite(dense["starts"][1])
            y_error = self._check_first_step(state, own_switches, one_piece, next_coeffs, y0, y1, h, y_error)
        incomplete = None
        if state.switches is not None:
            # The pieces after a switch were expanded on the other side; their own
            # estimates (for the lengths they ran) count, and a step whose pieces ran
            # out before its end, or whose pieces' estimates are not finite, is
            # rejected (an infinite estimate, which no controller accepts).
            fail = ~done | ~(worst <= 1)
            y_error = jtu.tree_map(
                lambda e, p: jnp.where(fail, jnp.inf, jnp.maximum(e, p)), y_error, piece_error
            )
            if filled_tolerances(self.root_finder) is None:
                # No adaptive controller (a constant step size) will reject it: a step
                # whose pieces ran out before its end, whose state is not at its end,
                # ends the solve instead (`dt_min_reached`, which
                # `taylorode.diffeqsolve` reports as `too_many_switches`).
                incomplete = ~done
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
        if incomplete is not None:
            y1 = jtu.tree_map(lambda a, b: jnp.where(incomplete, b, a), y1, y0)
            result = RESULTS.where(incomplete, RESULTS.dt_min_reached, result)
        step_orders = self.step_orders()
        positions = jnp.asarray([step_orders.index(q) for q in self.candidate_orders()], jnp.int32)
        at = jnp.where(_at_first_step(state), step_orders.index(self.start_order()), positions[state.index])
        taken = jax.nn.one_hot(at, state.counts.shape[0], dtype=jnp.int32)
        new_state = TaylorState(
            coeffs=_carried(next_coeffs),
            switches=next_switches,
            h_ref=h_ref,
            index=index,
            counts=state.counts + taken,
            orders=state.orders,
            unseen=state.unseen,
            event_columns=state.event_columns,
        )
        return y1, y_error, dense, new_state, result


# XLA:CPU runs the kernels of a computation (such as the solve's loop body) one after
# another in the calling thread when every buffer they use is at most this many bytes,
# and as a task graph on its thread pool otherwise, whose overhead per kernel dominates
# the small kernels of a small field's step (`ThunkExecutor`'s
# `execute_sequential_buffer_threshold`, 512 bytes in jaxlib 0.10, not configurable).
SEQUENTIAL_BYTES = 512


def _carried(coeffs: list) -> tuple:
    """The coefficients as `TaylorState` carries them: a tuple of PyTrees, each the
    coefficients of consecutive orders stacked along a leading axis, as many orders to a
    group as keep its largest leaf within `SEQUENTIAL_BYTES` (one order at least).

    One stacked array per leaf costs one kernel where diffrax selects between the new
    and the old state, instead of one per order; groups keep small fields' loop bodies
    on XLA:CPU's sequential path. Kepler at order 18 (19 orders of 4 float64, 608
    bytes in one stack) ran 1.38x slower on the pool than sequentially (3.77-3.89
    against 2.74-2.79 ms for the solve at tol 1e-14; Arenstorf 1.53 against 1.10 ms;
    Pleiades, whose other buffers are small too, 3.09 against 2.64-2.67 ms at 1e-10;
    measured by hand, alternating processes)."""
    per_order = max(jnp.size(x) * jnp.result_type(x).itemsize for x in jtu.tree_leaves(coeffs[0]))
    group = max(1, SEQUENTIAL_BYTES // max(per_order, 1))
    return tuple(stack(coeffs[i : i + group]) for i in range(0, len(coeffs), group))


def _uncarried(groups: tuple) -> list:
    """The inverse of `_carried`: one PyTree per order."""
    return [c for g in groups for c in unstack(g)]


def _at_first_step(state: TaylorState) -> Array:
    """Whether no step has been accepted yet (the carried series is `init`'s, of the
    start order). A jump is made at the end of an accepted step, so a refresh after one
    never meets the start series."""
    return jnp.sum(state.counts, axis=-1) == 0


def _cap(r: Array, exponent: int) -> Array:
    """The fraction of its length a piece may run, given `r`, its error measured
    against the tolerance over its whole length, which grows like the length^`exponent`:
    1 where `r <= 1`, else where the error is `CAP_ERROR` of the tolerance. Not
    differentiable (a choice of where to cut, like a step size)."""
    over = r > 1
    return lax.stop_gradient(jnp.where(over, (CAP_ERROR / jnp.where(over, r, 1)) ** (1 / exponent), 1))


def _one_piece(coeffs, dtype) -> tuple:
    """Dense output of a step in pieces that has one: `coeffs` as the first of
    `MAX_PIECES` coefficient sets, the rest zero and not started (`inf`)."""
    pieces = jtu.tree_map(
        lambda c: jnp.zeros((MAX_PIECES,) + c.shape, c.dtype).at[0].set(c), stack(list(coeffs))
    )
    starts = jnp.full((MAX_PIECES,), jnp.inf, dtype).at[0].set(0)
    return pieces, starts


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
