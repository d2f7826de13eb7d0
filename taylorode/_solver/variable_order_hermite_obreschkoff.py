from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from diffrax import RESULTS, with_stepsize_controller_tols
from jaxtyping import Array

from .._coefficients import AbstractTaylorMethod
from .._custom_types import Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._interop import filled_tolerances
from .._jorba_zou import tolerance_scale
from .._polynomial import stack
from .._root_finder import PadeChord
from .base import AbstractTaylorSolver
from .hermite_obreschkoff import end_if_stalled, HermiteObreschkoff, HermiteObreschkoffState


# After a fall-back, the number of accepted steps at the lower pair before the higher
# one is tried again: starts at _FIRST_WAIT, doubles with each fall-back that follows
# a retry, at most _MAX_WAIT; halves again once the top pair has taken as many steps in
# a row.
_FIRST_WAIT = 4
_MAX_WAIT = 256


class VariableOrderHermiteObreschkoffState(eqx.Module):
    """What [`taylorode.VariableOrderHermiteObreschkoff`][] carries between steps.

    - `inner`: the [`taylorode.HermiteObreschkoffState`][] shared by the pairs (the
        coefficients at the current point, as many as the highest pair needs).
    - `index`: the pair the next step starts with (an index into `pairs`).
    - `wait`: accepted steps left at this pair before the next higher one is tried.
    - `backoff`: the `wait` given after the next fall-back.
    - `streak`: accepted steps in a row at the top pair (since the last halving of
        `backoff`).
    - `counts`: accepted steps per pair.
    - `pairs`: the pairs (static).
    """

    inner: HermiteObreschkoffState
    index: Array
    wait: Array
    backoff: Array
    streak: Array
    counts: Array
    pairs: tuple[tuple[int, int], ...] = eqx.field(static=True)

    @property
    def newton_iterations(self) -> Array:
        return self.inner.newton_iterations

    @property
    def jacobian_evaluations(self) -> Array:
        return self.inner.jacobian_evaluations


class VariableOrderHermiteObreschkoff(AbstractTaylorSolver):
    r"""Hermite–Obreschkoff steps whose order adapts to what the problem allows: the
    highest of a few L-stable pairs HO(p, q) whose Newton iteration converges, with a
    fall-back to a lower pair inside the step.

    Higher orders take longer steps where they work, but their Newton iteration fails
    where the stiffness is extreme: along the stiff directions the Taylor
    coefficients of order $i$ are the state's small deviation from the slow solution
    times $\sim|h\lambda|^i$, so the higher the order, the more nonlinear the step's
    equation (see [`taylorode.HermiteObreschkoff`][]'s "Limitation"). A fixed HO(2, 3)
    then needs hundreds of thousands of steps where HO(1, 2) needs tens (atmospheric
    chemistry, Robertson's kinetics). This solver needs no such choice:

    - each step first tries the current pair; where its Newton iteration fails (or
      gives a non-finite state), the same step is solved again at the next lower pair,
      so that the step is not lost;
    - after a fall-back, the lower pair takes the next few accepted steps (4, then
      twice as many after each fall-back that follows, up to 256), then the higher pair
      is tried again; the wait halves once the higher pair has worked for as many
      steps in a row as the last wait.

    The pairs are compiled and dispatched with `lax.switch`; the fall-backs, which run
    only where a step fails, have a switch of their own over the lower pairs (compile
    time: about the top pair's plus twice the lower ones'). Under `jax.vmap` a step starts at the highest
    pair any trajectory is at, and the fall-back runs only where a trajectory needs it.

    **Error estimate.** Each pair's own (see [`taylorode.HermiteObreschkoff`][]), by
    default the embedded one (`error_estimate="embedded"`: the local error of the
    companion one order lower, while the step keeps its own order), so that the
    achieved error follows the tolerance rather than adding up over the steps: at
    most 1.7 times the tolerance at the end (mixed measure) on HIRES, POLLU, the
    Oregonator, Robertson's kinetics and Van der Pol, where the step's own local error
    ("local") gave up to 95 times. It is
    re-expressed at the highest pair's error order $k$: a component's error
    $e$ at tolerance scale $\tau$, from a pair of error order $k_i$, becomes
    $\tau (|e|/\tau)^{k/k_i}$, so that a controller that sizes steps with the static
    exponent $1/k$ (`error_order`) sizes them for the pair that took the step, and
    $|e| \le \tau$ is unchanged. Works with `diffrax.PIDController`.

    **Dense output, events, switches.** As [`taylorode.HermiteObreschkoff`][]'s, from
    the pair that took the step.

    [`taylorode.implicit_stats`][] counts the Newton iterations and Jacobians of the
    attempt that took each accepted step (a failed attempt before a fall-back is not
    counted); [`taylorode.order_counts`][] the accepted steps per order $p + q$.
    """

    pairs: tuple[HermiteObreschkoff, ...]
    root_finder: optx.AbstractRootFinder
    event: Any

    solver_name: ClassVar[str] = "VariableOrderHermiteObreschkoff"
    jorba_zou_estimate: ClassVar[bool] = False

    def __init__(
        self,
        pairs: Sequence[tuple[int, int]] = ((1, 2), (2, 3)),
        method: str | AbstractTaylorMethod = "recurrence",
        root_finder: optx.AbstractRootFinder | None = None,
        root_find_max_steps: int = 10,
        *,
        event: Any = None,
        error_estimate: str = "embedded",
        linear_solver: lx.AbstractLinearSolver = lx.LU(),
    ):
        try:
            pairs = tuple((int(p), int(q)) for p, q in pairs)
        except (TypeError, ValueError):
            raise ValueError(
                f"`pairs` must be a sequence of (p, q) pairs of ints; got {pairs!r}."
            ) from None
        orders = [p + q for p, q in pairs]
        if len(pairs) < 2 or orders != sorted(set(orders)):
            raise ValueError(
                "`pairs` must hold at least two (p, q) pairs of increasing order p + q; "
                f"got {pairs}. For one pair use `taylorode.HermiteObreschkoff(p, q)`."
            )
        built = [
            HermiteObreschkoff(
                p, q, method, None, root_find_max_steps, error_estimate=error_estimate, linear_solver=linear_solver
            )
            for p, q in pairs
        ]
        for ho in built:
            if not ho.is_a_stable:
                raise ValueError(
                    f"HO{(ho.p, ho.q)} is not A-stable; a stiff solver's pairs need "
                    "p <= q <= p + 2 (L-stable for q = p + 1 or p + 2)."
                )
        carry = max(ho._start_order for ho in built)
        self.pairs = tuple(
            HermiteObreschkoff(
                p,
                q,
                ho.method,
                None,
                root_find_max_steps,
                carry_order=carry,
                error_estimate=error_estimate,
                linear_solver=linear_solver,
            )
            for (p, q), ho in zip(pairs, built)
        )
        if root_finder is None:
            root_finder = with_stepsize_controller_tols(PadeChord)()
        self.root_finder = root_finder
        self.event = event

    @property
    def method(self) -> AbstractTaylorMethod:
        return self.pairs[0].method

    @property
    def root_find_max_steps(self) -> int:
        return self.pairs[0].root_find_max_steps

    def _pair(self, i: int) -> HermiteObreschkoff:
        """Pair `i`, with this solver's root finder (its tolerances filled in by
        `diffeqsolve`) and event."""
        ho = eqx.tree_at(lambda s: s.root_finder, self.pairs[i], self.root_finder, is_leaf=lambda x: x is None)
        return eqx.tree_at(lambda s: s.event, ho, self.event, is_leaf=lambda x: x is None)

    @property
    def _orders(self) -> tuple[int, ...]:
        return tuple(ho.p + ho.q for ho in self.pairs)

    def order(self, terms) -> int:
        return max(self._orders)

    def error_order(self, terms) -> int:
        return self.pairs[-1].error_order(terms)

    def init(
        self, terms, t0: RealScalarLike, t1: RealScalarLike, y0: Y, args: Args
    ) -> VariableOrderHermiteObreschkoffState:
        self._check_init(terms, y0)
        top = len(self.pairs) - 1
        return VariableOrderHermiteObreschkoffState(
            inner=self._pair(top).init(terms, t0, t1, y0, args),
            index=jnp.array(top, jnp.int32),
            wait=jnp.array(0, jnp.int32),
            backoff=jnp.array(_FIRST_WAIT, jnp.int32),
            streak=jnp.array(0, jnp.int32),
            counts=jnp.zeros(len(self.pairs), jnp.int32),
            pairs=tuple((ho.p, ho.q) for ho in self.pairs),
        )

    def step(
        self,
        terms,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: VariableOrderHermiteObreschkoffState,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, VariableOrderHermiteObreschkoffState, RESULTS]:
        state = solver_state
        width = max(self._orders) + 2  # dense output coefficients of the highest pair
        tols = filled_tolerances(self.root_finder)
        top_error_order = self.error_order(terms)

        def branch(i):
            ho = self._pair(i)

            def finish(newton):
                out = ho._finish(terms, t1, y0, args, newton)
                data, dense = ho._dense(out.inverse, out.cs, out.ds)
                y_error = ho._across_switches(terms, t0, t1, args, data, dense, out.switches, out.y_error)
                if tols is not None:
                    # At the highest pair's error order (see the class doc).
                    power = top_error_order / ho.error_order(terms)
                    rtol, atol, _ = tols

                    def rescaled(e, a, b):
                        scale = tolerance_scale(rtol, atol, a, b).astype(e.dtype)
                        return scale * (jnp.abs(e) / scale) ** power

                    y_error = jtu.tree_map(rescaled, y_error, y0, out.y1)
                dense = dense + [jtu.tree_map(jnp.zeros_like, dense[0])] * (width - len(dense))
                return out.y1, y_error, stack(dense), out.state, out.result, out.failed

            def give_up(newton):
                # Every trajectory's iteration failed: the step falls back (or is
                # rejected) whatever its end would be, so its end is not computed.
                inf = jtu.tree_map(lambda y: jnp.full_like(y, jnp.inf), y0)
                dense = stack([jtu.tree_map(jnp.zeros_like, y0)] * width)
                return newton.y1, inf, dense, state.inner, newton.result, newton.failed

            def run(_):
                newton = ho._newton(terms, t0, t1, y0, args, state.inner, made_jump)
                return lax.cond(eqxi.unvmap_any(~newton.failed), finish, give_up, newton)

            return run

        branches = [branch(i) for i in range(len(self.pairs))]
        # Every trajectory first tries the highest pair any of them is at (`lax.switch`
        # needs one index for the batch); where that fails, one pair lower each time,
        # until an attempt succeeds. The fall-backs run only when some trajectory
        # needs them, over their own switch (of the lower pairs only).
        own = state.index
        first = eqxi.unvmap_max(own)
        outcome = lax.switch(first, branches, None)
        used = jnp.full_like(own, first)
        done = ~outcome[-1]

        def attempt(carry, a):
            outcome, used, done = carry
            index = first - a
            active = ~done & (index >= 0)
            new = lax.cond(
                eqxi.unvmap_any(active),
                lambda _: lax.switch(jnp.maximum(index, 0), branches[:-1], None),
                lambda _: outcome,
                None,
            )
            outcome = jtu.tree_map(lambda n, o: jnp.where(active, n, o), new, outcome)
            used = jnp.where(active, index, used)
            done = done | (active & ~new[-1])
            return (outcome, used, done), None

        def fall_back(carry):
            return lax.scan(attempt, carry, jnp.arange(1, len(self.pairs), dtype=jnp.int32))[0]

        outcome, used, _ = lax.cond(
            eqxi.unvmap_any(~done & (first > 0)), fall_back, lambda carry: carry, (outcome, used, done)
        )
        y1, y_error, dense, inner, result, failed = outcome
        y1, y_error, result = end_if_stalled(failed, t1 - t0, state.inner.h_ref, y0, y1, y_error, result)

        index, wait, backoff, streak = next_pair(
            state.index, used, state.wait, state.backoff, state.streak, len(self.pairs) - 1
        )
        new_state = VariableOrderHermiteObreschkoffState(
            inner=inner,
            index=index,
            wait=wait,
            backoff=backoff,
            streak=streak,
            counts=state.counts + jax.nn.one_hot(used, len(self.pairs), dtype=jnp.int32),
            pairs=state.pairs,
        )
        return y1, y_error, dict(coeffs=dense), new_state, result


def next_pair(own, used, wait, backoff, streak, top):
    """`(index, wait, backoff, streak)` after an accepted step that started at pair `own`
    and was taken at pair `used` (lower after a fall-back), from `wait`, `backoff` and
    `streak` before it (see `VariableOrderHermiteObreschkoffState`), `top` the highest
    pair's index."""
    own, used, wait, backoff, streak = (
        jnp.asarray(x, jnp.int32) for x in (own, used, wait, backoff, streak)
    )
    fell_back = used < own
    waiting = wait > 0
    index = jnp.where(fell_back | waiting, used, jnp.minimum(used + 1, top))
    new_wait = jnp.where(fell_back, backoff, jnp.maximum(wait - 1, 0))
    # The wait halves once the top pair has worked for as many steps in a row as the
    # lower pair last waited: a retry that succeeds for a step or two and then fails
    # again (on POLLU, most retries) keeps it long.
    at_top = ~fell_back & (used == top)
    new_streak = jnp.where(at_top, streak + 1, 0)
    relax = at_top & (new_streak >= backoff // 2)
    new_backoff = jnp.where(
        fell_back,
        jnp.minimum(2 * backoff, _MAX_WAIT),
        jnp.where(relax, jnp.maximum(backoff // 2, _FIRST_WAIT), backoff),
    )
    new_streak = jnp.where(relax, 0, new_streak)
    return (
        index.astype(jnp.int32),
        new_wait.astype(jnp.int32),
        new_backoff.astype(jnp.int32),
        new_streak.astype(jnp.int32),
    )


VariableOrderHermiteObreschkoff.__init__.__doc__ = """**Arguments:**

- `pairs`: the (p, q) pairs to choose from, of increasing order p + q, each A-stable
    (`p <= q <= p + 2`); default HO(1, 2) (order 3) and HO(2, 3) (order 5), both
    L-stable. Each pair adds its compile time.
- `method`: how Taylor coefficients are computed: `"recurrence"` (the default, our
    engine), `"jet"`, `"jvp"`, or an `AbstractTaylorMethod` instance.
- `root_finder`: the `optimistix` root finder of every pair; by default
    [`taylorode.PadeChord`][] with the step-size controller's `rtol`/`atol`, as for
    [`taylorode.HermiteObreschkoff`][].
- `root_find_max_steps`: the most Newton iterations per attempt.
- `event`: the `diffrax.Event` also passed to `diffeqsolve` (see
    [`taylorode.HermiteObreschkoff`][]); [`taylorode.diffeqsolve`][] hands it over by
    itself.
- `error_estimate`: every pair's (see [`taylorode.HermiteObreschkoff`][]):
    `"embedded"` (the default) or `"local"`.
- `linear_solver`: every pair's (see [`taylorode.HermiteObreschkoff`][]): `lineax.LU()`
    (the default, dense) or [`taylorode.BandedLU`][]`(lower, upper)` for banded
    Jacobians.
"""
