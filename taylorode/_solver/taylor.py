import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
from diffrax import (
    AbstractAdaptiveSolver,
    AbstractImplicitSolver,
    AbstractTerm,
    RESULTS,
    with_stepsize_controller_tols,
)
from jaxtyping import Array, PyTree

from .._handshake import TaylorControllerNorm
from .._coefficients import AbstractTaylorMethod, check_order, resolve_method
from .._interpolation import TaylorInterpolation
from .._order import (
    concrete_tolerance,
    jorba_zou_factor,
    order_from_tolerance,
    select_order_index,
    tolerance_scale,
)
from .._polynomial import stack, sum_series
from .._precision import check_controller_precision
from .._terms import check_ode_term


class TaylorState(eqx.Module):
    """What `Taylor` carries between steps.

    - `coeffs`: the coefficients at the current point, scaled by `h_ref`, zero-padded
        to the largest order: a tuple of `max(orders) + 1` PyTrees shaped like the state
        (a tuple rather than a stacked array: stacking costs time in every step).
    - `h_ref`: the step length the coefficients are scaled by (the last step's).
    - `index`: which of the candidate orders `coeffs` has.
    - `counts`: accepted steps taken at each candidate order so far.
    - `orders`: the candidate orders (static), ascending; `counts[i]` is for `orders[i]`.
    """

    coeffs: PyTree[Array]
    h_ref: Array
    index: Array
    counts: Array
    orders: tuple[int, ...] = eqx.field(static=True)


class ControllerTolerances(eqx.Module):
    """The slot through which `diffeqsolve` hands the adaptive step-size controller's
    `rtol`, `atol` and `norm` to a solver (diffrax's root-finder tolerance mechanism,
    see `diffrax.with_stepsize_controller_tols`)."""

    rtol: Any
    atol: Any
    norm: Any


# diffrax's marker for "filled in from the controller" (public route to the object).
_FROM_CONTROLLER = with_stepsize_controller_tols(ControllerTolerances)().rtol


_NONFINITE_MESSAGE = (
    "taylorode.Taylor: the Taylor coefficients of the solution where a step starts are "
    "not finite (NaN or inf). The vector field is singular there, e.g. jnp.sqrt or "
    "jnp.linalg.norm at 0, or a division by zero; their derivatives are infinite even "
    "where their values are not. Use the functions in taylorode.stable (sqrt, norm, pow, "
    "log, safe_div, normalize), or give your function a jax.custom_jvp (or "
    "taylorode.custom_taylor) rule that is finite there."
)


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jtu.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


class Taylor(AbstractAdaptiveSolver, AbstractImplicitSolver):
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
      is formally a `diffrax.AbstractImplicitSolver` (it solves no equations); it
      needs concrete (not traced) tolerances, and with `ConstantStepSize` diffrax asks
      for an adaptive controller: give `Taylor(order=p)` there.
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
    at no extra cost. The coefficients at $y_0$ come from `init`, or, under
    [`taylorode.TaylorController`][] with `Taylor()`, from a zero-length first step that
    the controller makes, so that the compiled program holds one coefficient kernel.

    **Error estimate.** Per component, the larger of the last two terms
    $|c_{q-1}|, |c_q|$ of the series at the step's *end* for a step of the same
    length, $c_j = y^{[j]}(t_1) h^j$: the error of a step of length $h$ there, and the
    quantity Jorba & Zou's rule sizes the next step from. It works with
    [`taylorode.TaylorController`][] (which accepts steps sized from the coefficients
    at their start without a test, as heyoka does) and with
    `diffrax.PIDController`. With `orders=...` the estimate of an order-$q$ step
    is re-expressed at the reference order $p = \max(\text{orders})$ (raised to
    $p/q$ in the tolerance-scaled norm, which leaves $r \le 1$ unchanged), because
    controllers size steps with the static exponent `1/error_order`.

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

    # Any term at the diffrax level (adjoint and time-reversed wrappers included);
    # `init` checks that it is an ODE term underneath.
    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar[Callable[..., TaylorInterpolation]] = (
        TaylorInterpolation
    )

    def __init__(
        self,
        order: int | None = None,
        method: str | AbstractTaylorMethod = "recurrence",
        *,
        orders: Sequence[int] | None = None,
    ):
        self.method = resolve_method(method)
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
            self.root_finder = with_stepsize_controller_tols(ControllerTolerances)()
        else:
            self.root_finder = ControllerTolerances(None, None, None)

    @property
    def root_find_max_steps(self) -> int:
        return 0

    # -- orders -----------------------------------------------------------------------

    def candidate_orders(self) -> tuple[int, ...]:
        """The orders this solver steps with, ascending (one unless `orders` was given)."""
        if self.orders is not None:
            return self.orders
        if self.taylor_order is not None:
            return (self.taylor_order,)
        rtol, atol, _ = self._tolerances()
        return (order_from_tolerance(concrete_tolerance(rtol, atol), self.method.max_order),)

    def _tolerances(self):
        rf = self.root_finder
        if any(x is _FROM_CONTROLLER for x in (rf.rtol, rf.atol, rf.norm)):
            raise ValueError(
                "`taylorode.Taylor()` without an order takes its order from the "
                "tolerances of an adaptive step-size controller passed to "
                "`diffrax.diffeqsolve` (`taylorode.TaylorController` or "
                "`diffrax.PIDController`), and there is none here. Give the order, "
                "`Taylor(order=p)`, to use it with a constant step or on its own."
            )
        return rf.rtol, rf.atol, rf.norm

    def order(self, terms):
        return max(self.candidate_orders())

    def error_order(self, terms):
        return max(self.candidate_orders())

    # -- coefficients -----------------------------------------------------------------

    def _expand_at(self, terms, t, y, args, h, index):
        """Coefficients at `(t, y)` scaled by the reference step `h`, of the order
        `candidate_orders()[index]`, zero-padded to the largest order; and the error
        estimate of a step of length `h` from there."""
        orders = self.candidate_orders()
        width = max(orders) + 1

        def branch(q):
            def expand(t, y, args, h):
                control = terms.contr(t, t + h)

                def rhs(s, y, args):
                    return terms.vf_prod(t + s * h, y, args, control)

                coeffs = self.method.expand(rhs, jnp.zeros_like(t), y, args, q)
                pad = [jtu.tree_map(jnp.zeros_like, coeffs[0])] * (width - q - 1)
                return tuple(coeffs + pad), _last_two_terms(coeffs)

            return expand

        if len(orders) == 1:
            return branch(orders[0])(t, y, args, h)
        return lax.switch(index, [branch(q) for q in orders], t, y, args, h)

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
        prev, last = last_two
        if self.taylor_order is not None:
            # No tolerances here: per component, the larger of the two.
            return jtu.tree_map(jnp.maximum, prev, last)
        rtol, atol, _ = self._tolerances()
        orders = self.candidate_orders()
        p = max(orders)
        log_fs = [math.log(jorba_zou_factor(o)) for o in orders]
        log_fp = math.log(jorba_zou_factor(p))

        def leaf(a, b, u, v):
            scale = tolerance_scale(rtol, atol, a, b).astype(u.dtype)
            u, v = u / scale, v / scale
            qq = jnp.asarray(orders, u.dtype)[index]
            lf = jnp.asarray(log_fs, u.dtype)[index]
            # Each term measured with its own exponent, as Jorba & Zou's radius
            # min_j (tol/|y^[j]|)^(1/j), and written in the exponent-1/q form ...
            w = jnp.maximum(v, u ** (qq / (qq - 1)))
            # ... then at the reference order p, for controllers' static exponent 1/p.
            w = w ** (p / qq) * jnp.exp(p * (log_fp - lf))
            return w * scale

        return jtu.tree_map(leaf, y0, y1, prev, last)

    # -- diffrax interface ------------------------------------------------------------

    @property
    def starts_with_zero_step(self) -> bool:
        """Whether this solver was handed a `TaylorController`'s tolerances, in which
        case that controller makes the first step of zero length and the solver gets
        the coefficients at `y0` from its own step (see `taylorode._handshake`)."""
        return isinstance(self.root_finder.norm, TaylorControllerNorm)

    def init(self, terms, t0, t1, y0, args):
        check_ode_term(terms, "taylorode.Taylor")
        if self.taylor_order is None:
            check_controller_precision(y0, self._tolerances()[:2])
        else:
            check_controller_precision(y0)
        index = self._next_order_index(y0)
        counts = jnp.zeros(len(self.candidate_orders()), jnp.int32)
        if self.starts_with_zero_step:
            # Only `y0` itself: a zero-length step sums to it, and computes the rest.
            width = max(self.candidate_orders()) + 1
            zeros = jtu.tree_map(jnp.zeros_like, y0)
            coeffs = (y0,) + (zeros,) * (width - 1)
            h = jnp.ones_like(jnp.asarray(t1 - t0))
        else:
            h = _reference_step(t0, t1)
            coeffs, _ = self._expand_at(terms, t0, y0, args, h, index)
        return TaylorState(coeffs=coeffs, h_ref=h, index=index, counts=counts, orders=self.candidate_orders())

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        state = solver_state
        h = t1 - t0
        if made_jump is not False:
            state = self._after_jump(terms, t0, y0, args, h, state, made_jump)
        # This step's coefficients: the ones carried from the end of the last step,
        # rescaled from that step's length to this one's.
        ratio = (h / state.h_ref).astype(state.h_ref.dtype)
        width = max(self.candidate_orders()) + 1
        powers = [jnp.ones_like(ratio)]
        for _ in range(width - 1):
            powers.append(powers[-1] * ratio)
        # (Order 0 is the step's own y0, which the carried one equals in a solve.)
        coeffs = [y0] + [
            jtu.tree_map(lambda c: c * pk.astype(c.dtype), ck)
            for ck, pk in zip(state.coeffs[1:], powers[1:])
        ]
        y1 = jtu.tree_map(lambda *cs: sum_series(list(cs)), *coeffs)
        # First same as last: the coefficients at the end, for the next step (or for
        # the controller, through the error estimate, if this step is rejected).
        h_next_ref = _reference_step(t0, t1)
        index = self._next_order_index(y1)
        next_coeffs, last_two = self._expand_at(terms, t1, y1, args, h_next_ref, index)
        y_error = self._error(last_two, y0, y1, index)
        # Non-finite coefficients where the solution is known to be (this step's start,
        # or the end of the controller's zero-length first step, which is y0, seen
        # through its error estimate) cannot be cured by a smaller step: say why,
        # instead of rejecting until max_steps.
        bad = ~_all_finite(state.coeffs) | ((h == 0) & ~_all_finite(y_error))
        y1 = eqx.error_if(y1, bad, _NONFINITE_MESSAGE)
        taken = jax.nn.one_hot(state.index, state.counts.shape[0], dtype=jnp.int32)
        counts = state.counts + jnp.where(h == 0, 0, taken)
        new_state = TaylorState(
            coeffs=next_coeffs, h_ref=h_next_ref, index=index, counts=counts, orders=state.orders
        )
        dense_info = dict(coeffs=stack(coeffs))
        return y1, y_error, dense_info, new_state, RESULTS.successful

    def _after_jump(self, terms, t0, y0, args, h, state, made_jump):
        index = eqxi.unvmap_max(state.index)
        return refresh_after_jump(
            state, t0, h, made_jump, lambda h_ref: self._expand_at(terms, t0, y0, args, h_ref, index)[0]
        )

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def refresh_after_jump(state, t0, h, made_jump, expand):
    """After a jump in the vector field the coefficients carried in `state` (fields
    `coeffs` and `h_ref`) are stale: recompute them at the step's start with
    `expand(h_ref)`, in a real conditional (taken rarely; batch-uniform under vmap)."""
    h = _reference_step(t0, t0 + h)

    def fresh(_):
        return tuple(expand(h)), h

    def carried(_):
        return state.coeffs, state.h_ref

    coeffs, h_ref = lax.cond(eqxi.unvmap_any(made_jump), fresh, carried, None)
    coeffs = jtu.tree_map(lambda a, b: jnp.where(made_jump, a, b), coeffs, state.coeffs)
    h_ref = jnp.where(made_jump, h_ref, state.h_ref)
    return eqx.tree_at(lambda s: (s.coeffs, s.h_ref), state, (coeffs, h_ref))


def _reference_step(t0, t1):
    """`t1 - t0`, or 1 for an empty step (coefficients scaled by 0 would lose them)."""
    h = jnp.asarray(t1 - t0)
    return jnp.where(h == 0, jnp.ones_like(h), h)


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


def _last_two_terms(coeffs: list):
    """`(|c_{q-1}|, |c_q|)`, the last two terms of an order-q series (for q = 1, the
    last term twice)."""
    last = jtu.tree_map(jnp.abs, coeffs[-1])
    if len(coeffs) < 3:
        return last, last
    return jtu.tree_map(jnp.abs, coeffs[-2]), last


def order_counts(solution) -> dict[int, Any]:
    """Accepted steps per Taylor order in a solve by [`taylorode.Taylor`][].

    diffrax's `solution.stats` has a fixed set of keys (accepted and rejected steps);
    the orders a `Taylor` solve used are kept in its solver state, which diffrax returns
    when asked for it.

    **Arguments:**

    - `solution`: a `diffrax.Solution` from `diffeqsolve(..., solver=taylorode.Taylor(...),
        saveat=diffrax.SaveAt(..., solver_state=True))`.

    **Returns:**

    A dict from order to the number of accepted steps taken at it (arrays, with any
    batch axes of the solve). The zero-length first step that
    [`taylorode.TaylorController`][] makes with `Taylor()` or `Taylor(orders=...)` is not
    counted, so there the counts sum to `solution.stats["num_accepted_steps"] - 1`;
    otherwise (a fixed `Taylor(order=p)`, or another controller) to
    `solution.stats["num_accepted_steps"]`.
    """
    state = getattr(solution, "solver_state", None)
    if not isinstance(state, TaylorState):
        raise ValueError(
            "`order_counts` reads the solver state of a `taylorode.Taylor` solve; pass "
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
"""
