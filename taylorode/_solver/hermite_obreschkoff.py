import functools
import math
from typing import Any, ClassVar

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.flatten_util as jfu
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from diffrax import RESULTS, with_stepsize_controller_tols
from jaxtyping import Array

from .._coefficients import AbstractTaylorMethod, check_order, resolve_method
from .._coefficients._base import SwitchSeries
from .._custom_types import Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._polynomial import horner, stack
from .._root_finder import (
    FactoredPadeInverse,
    check_linear_solver,
    PadeChord,
    RationalFilters,
    pade_partial_fractions,
)
from .._interop import filled_tolerances
from .._jorba_zou import tolerance_scale
from . import _hermite
from ._switching import CELLS, crossings, tail, tail_ratio
from .base import (
    AbstractTaylorSolver,
    all_finite,
    reference_step,
    refresh_after_jump,
    rescale,
)


class HermiteObreschkoffState(eqx.Module):
    """What [`taylorode.HermiteObreschkoff`][] carries between steps.

    - `coeffs`: the scaled Taylor coefficients $c_0, \\ldots, c_{p'}$ at the current
        point, scaled by `h_ref` (a tuple of PyTrees shaped like the state); $p' = p + 1$
        for $q > p$ (the error estimate's companion HO(p+1, q) uses one more), else $p$.
    - `h_ref`: the step length they are scaled by (the last step's).
    - `increment`: $y_1 - y_0$ of the last step (zero at the start and after a jump),
        for the Newton iteration's starting guess.
    - `newton_iterations`, `jacobian_evaluations`: totals over the accepted steps.
    """

    coeffs: tuple
    h_ref: Array
    increment: Any
    newton_iterations: Array
    jacobian_evaluations: Array


def weighted_sum(weights, series: list[Y], like: Y) -> Y:
    """sum_i w_i x_i over PyTrees `series[i]` (Python-number weights, zero ones skipped)."""
    terms = [
        jtu.tree_map(lambda x, w=w: x * jnp.asarray(w, x.dtype), s)
        for w, s in zip(weights, series)
        if w != 0
    ]
    if not terms:
        return jtu.tree_map(jnp.zeros_like, like)
    return jtu.tree_map(lambda *xs: sum(xs[1:], xs[0]), *terms)


class HONewton(eqx.Module):
    """The first half of an HO(p, q) step, as `HermiteObreschkoff._newton` returns it:
    its Newton iteration, before the coefficients at the step's end.

    - `t0`: the step's start.
    - `y1`: the iteration's solution.
    - `failed`: whether the iteration failed or `y1` is not finite.
    - `cs`: the scaled coefficients at the start.
    - `inverse`: the Newton matrix's latest factored inverse.
    - `state`: the solver state at the step's start (after a jump's refresh), with the
        iteration's Newton iterations and Jacobians counted.
    - `result`: the iteration's `RESULTS` (successful where only `y1` is not finite).
    """

    t0: Any
    y1: Any
    failed: Array
    cs: list
    inverse: FactoredPadeInverse
    state: HermiteObreschkoffState
    result: RESULTS


class HOStep(eqx.Module):
    """One HO(p, q) step, as `HermiteObreschkoff._solve` returns it (the protected
    interface through which `ExtrapolatedHermiteObreschkoff` composes HO steps).

    - `y1`: the solution at the step's end.
    - `y_error`: the error estimate (see `HermiteObreschkoff`), or `None` where it was
        not asked for.
    - `failed`: whether the Newton iteration failed or `y1` is not finite (then the
        step must be rejected).
    - `cs`, `ds`: the scaled coefficients at the start (up to the companion's `p'`) and
        at `y1` (up to `_end_order`).
    - `switches`: the series of the vector field's switching functions at `y1`, from
        the same expansion as `ds` (for what it says statically: whether the field
        switches).
    - `inverse`: the Newton matrix's latest factored inverse.
    - `state`: the solver state after the step.
    - `result`: the Newton iteration's `RESULTS`.
    """

    y1: Any
    y_error: Any
    failed: Array
    cs: list
    ds: list
    switches: SwitchSeries
    inverse: FactoredPadeInverse
    state: HermiteObreschkoffState
    result: RESULTS


class HermiteObreschkoff(AbstractTaylorSolver):
    r"""Implicit Taylor method of Hermite–Obreschkoff type, HO(p, q): A- and L-stable
    high-order steps for stiff problems.

    With the scaled Taylor coefficients $c_i = h^i y^{[i]}(t_0)$ and
    $d_i = h^i y^{[i]}(t_1)$ ($y^{[i]} = y^{(i)}/i!$) of the solution at both ends of a
    step of length $h$, a step solves

    $$\sum_{i=0}^{q} (-1)^i a_i\, d_i(y_1) = \sum_{i=0}^{p} b_i\, c_i,\qquad
    a_i = \frac{q!\,(p+q-i)!}{(p+q)!\,(q-i)!},\quad
    b_i = \frac{p!\,(p+q-i)!}{(p+q)!\,(p-i)!}$$

    for $y_1$, whose Taylor coefficients $d_i(y_1)$ come from the coefficient engine.
    The method has order $p + q$ and its stability function is the $(p, q)$ Padé
    approximant of $e^z$. It is **A-stable** for $p \le q \le p + 2$ and **L-stable**
    for $q \in \{p + 1, p + 2\}$ (Ehle): HO(0, 1) is implicit Euler, HO(1, 1) the
    trapezoidal rule, HO(1, 2) of order 3, HO(2, 3) of order 5, HO(3, 4) of order 7
    and HO(4, 5) of order 9 are L-stable. Other $(p, q)$ are accepted (they suit
    non-stiff problems) and `is_a_stable` / `is_l_stable` say which they are.

    **Nonlinear solve.** By `root_finder`, by default [`taylorode.PadeChord`][]
    (simplified Newton, with the Jacobian rebuilt when the iteration stalls) with the
    step-size controller's tolerances, as diffrax's own implicit solvers take theirs.
    The iteration starts from the last step's increment rescaled to this step (a
    secant predictor). The Newton matrix is $Q(hJ)$, the Padé denominator at $hJ$ with
    $J$ the vector field's Jacobian at $t_1$ and that starting guess (exact for linear
    problems), applied through its partial fractions, one LU factorisation of
    $hJ - r_k I$ per root $r_k$ (complex pairs once), never formed as a matrix: its
    entries grow like $|h\lambda|^q$. The factorisations are dense by default; for
    large banded systems (method of lines) pass
    `linear_solver=`[`taylorode.BandedLU`][]. The iteration goes on while it contracts
    (up to `root_find_max_steps`); a solve that diverges makes the error estimate
    infinite, so the controller rejects the step and retries with a smaller one (as
    `diffrax.Kvaerno5` does). Where it fails even at a millionth of the last accepted
    step's length, no smaller step helps: the solve then ends with the iteration's
    `RESULTS` (`RESULTS.nonfinite` for non-finite values) instead of rejecting steps
    until `max_steps`; [`taylorode.diffeqsolve`][] names the cause.

    **Error estimate.** The residual at $y_1$ of a companion relation of order
    $p + q + 1$, multiplied by the inverse Newton matrix: to leading order $y_1$ minus
    the order-$(p+q+1)$ solution, i.e. the step's own local error $O(h^{p+q+1})$
    (`error_order = p + q + 1`). For $q > p$ (the L-stable pairs) the companion is
    HO(p+1, q), which needs one more coefficient at the step's start (carried from the
    last step, so free) and none beyond order $q$ at its end; for $q \le p$ it is
    HO(p, q+1). The multiplication (by the latest Newton matrix, rebuilt at an
    iterate if the iteration stalled) filters stiff components, as in Radau5's
    estimate (Hairer & Wanner II, IV.8). Works with `diffrax.PIDController`.

    With `error_estimate="embedded"` the companion is one order lower instead, HO(p, q-1)
    for $q > p$ (else HO(p-1, q)): the estimate is then the local error of an
    order-$(p+q-1)$ step, $O(h^{p+q})$ (`error_order = p + q`), while the step keeps
    the order-$(p+q)$ solution, as diffrax's embedded Runge–Kutta pairs do. Its true
    local error is then a factor $O(h)$ below the tolerance, so the global error
    follows the tolerance: with the default ("local"), every step's own error is held
    at the tolerance and they add up over the steps (HO(2, 3) on the Oregonator, tol
    1e-4 to 1e-10: 4–190 times the tolerance at the end with "local", 0.9–1.7 times
    with "embedded"), at the price of shorter steps, most for low orders at tight
    tolerances.

    **Limitation.** Along the stiff directions the coefficients $h^i y^{[i]}$ grow like
    $|h\lambda|^i$ times the state's deviation there, and the residual's Jacobian
    carries terms (derivatives of $J$ times these coefficients) that $Q(hJ)$ leaves
    out: the larger $|h\lambda|$ and the highest order used, $m = \max(p + 1, q)$ for
    $q > p$, the worse the Newton matrix fits and the sooner the iteration diverges.
    (Measured on Robertson's problem with HO(2, 3): the filtered residual at the exact
    solution is still accurate to 0.07 tolerances at $t = 10^7$, $h = 0.1\,t$, but
    $Q(hJ)^{-1}$ times the residual's exact Jacobian has condition numbers of
    $10^{14}$–$10^{22}$ from $t = 10^5$ on: chord, refreshed, damped and
    preconditioned exact Newton iterations all failed there for $h \ge 0.05\,t$.)
    HO(0, 1) and HO(1, 2) ($m \le 2$) solve Robertson's problem to $t = 10^{11}$
    ($|h\lambda|$ up to ~$10^{14}$: steps of ~$0.07\,t$ at $t \approx 10^{11}$,
    $|\lambda| \approx 10^4$);
    HO(2, 3) and higher do not (their steps collapse after $t \approx 10$); they are
    fine for Van der Pol or a linear system with eigenvalues to $-10^6$. For a higher
    order on such problems, [`taylorode.ExtrapolatedHermiteObreschkoff`][]`(1, 2)`
    extrapolates HO(1, 2) to order 4 with the same coefficients.

    **First same as last.** The coefficients at $y_1$ are computed once, for the
    error estimate and dense output, and carried to the next step, rescaled to its
    length, as its $c_i$: each step costs the Newton iterations (one order-$q$
    expansion each), one Jacobian of the vector field (more when the iteration
    stalls), and one expansion of order $m$.

    **Dense output.** The Hermite interpolating polynomial of degree $p + q + 1$
    through the data at both ends of the step ([`taylorode.TaylorInterpolation`][]
    holds its power coefficients), with the data of order $i \ge 1$ filtered as
    $F_i(hJ)\,c_i$, $F_i(hJ)\,d_i$ through the Newton matrix's factorisations.
    Along a stiff direction the coefficients $h^i y^{[i]}$ are the state's small
    deviation from the slow solution times $\sim|h\lambda|^i$, and an interpolant
    through them is far off between the step's ends (on Robertson's problem at late
    times, relative errors of $10^3$–$10^8$). $F_i = N_i/Q^k$ is $O((h\lambda)^{-i})$
    there and $1 + O((h\lambda)^{p+q+2-i})$ on non-stiff components, so the output
    stays at the accuracy of the step ends on stiff steps and keeps its order on
    smooth ones. It costs $kq$ multi-right-hand-side solves per step with the
    factorisations already made ($k = \lceil (p+q+1)/q \rceil$), and only when
    dense output is used (`SaveAt(ts=...)`, `dense=True`, events).

    [`taylorode.implicit_stats`][] reports the Newton iterations and Jacobian
    evaluations of a solve. Only `diffrax.ODETerm`s are accepted.

    ??? cite "References"

        ```bibtex
        @book{hairer1996solving,
            author={Hairer, Ernst and Wanner, Gerhard},
            title={Solving Ordinary Differential Equations {II}: Stiff and
                   Differential-Algebraic Problems},
            edition={2},
            publisher={Springer},
            year={1996}
        }

        @article{ehle1973,
            author={Ehle, Byron L.},
            title={A-Stable Methods and {P}ad{\'e} Approximations to the Exponential},
            journal={SIAM Journal on Mathematical Analysis},
            volume={4},
            number={4},
            pages={671--680},
            year={1973}
        }

        @article{nedialkov2002,
            author={Nedialkov, Nedialko S. and Jackson, Kenneth R.},
            title={An Interval {H}ermite-{O}breschkoff Method for Computing Rigorous
                   Bounds on the Solution of an Initial Value Problem for an Ordinary
                   Differential Equation},
            journal={Reliable Computing},
            volume={5},
            pages={289--310},
            year={1999}
        }
        ```
    """

    p: int = eqx.field(static=True)
    q: int = eqx.field(static=True)
    method: AbstractTaylorMethod
    root_finder: optx.AbstractRootFinder
    root_find_max_steps: int = eqx.field(static=True)
    event: Any
    # At least this many coefficients (orders 0..carry_order) are carried from a step's
    # end to the next one's start: the pairs of `VariableOrderHermiteObreschkoff` carry
    # as many as the highest of them needs, so that any of them can take the next step.
    carry_order: int = eqx.field(static=True, default=0)
    error_estimate: str = eqx.field(static=True, default="local")
    linear_solver: lx.AbstractLinearSolver = lx.LU()

    solver_name: ClassVar[str] = "HermiteObreschkoff"
    jorba_zou_estimate: ClassVar[bool] = False

    def __init__(
        self,
        p: int = 1,
        q: int = 2,
        method: str | AbstractTaylorMethod = "recurrence",
        root_finder: optx.AbstractRootFinder | None = None,
        root_find_max_steps: int = 10,
        *,
        event: Any = None,
        carry_order: int = 0,
        error_estimate: str = "local",
        linear_solver: lx.AbstractLinearSolver = lx.LU(),
    ):
        self.method = resolve_method(method)
        self.event = event
        self.carry_order = int(carry_order)
        if error_estimate not in ("local", "embedded"):
            raise ValueError(
                f'`error_estimate` must be "local" or "embedded"; got {error_estimate!r}.'
            )
        self.error_estimate = error_estimate
        check_linear_solver(linear_solver)
        self.linear_solver = linear_solver
        for name, value in (("p", p), ("q", q)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"`{name}` must be a Python int; got {value!r}.")
        if p < 0 or q < 1:
            raise ValueError(
                f"HermiteObreschkoff(p, q) needs p >= 0 and q >= 1 (q = 0 is the explicit "
                f"Taylor method: use `taylorode.Taylor(order=p)`); got ({p}, {q})."
            )
        check_order(max(p, q), self.method)
        if p + q > 16:
            raise ValueError(
                f"HermiteObreschkoff(p, q) supports p + q <= 16; got ({p}, {q}). Orders "
                "beyond ~10 rarely pay off in an implicit method."
            )
        _hermite.validate(p, q)
        self.p = p
        self.q = q
        if root_finder is None:
            root_finder = with_stepsize_controller_tols(PadeChord)()
        self.root_finder = root_finder
        self.root_find_max_steps = root_find_max_steps

    @property
    def is_a_stable(self) -> bool:
        return _hermite.is_a_stable(self.p, self.q)

    @property
    def is_l_stable(self) -> bool:
        return _hermite.is_l_stable(self.p, self.q)

    def stability_function(self, z):
        """$R(z) = P(z)/Q(z)$, the value of $y_1/y_0$ on $y' = \\lambda y$, $z = h\\lambda$."""
        P, Q = _hermite.pade_polynomials(self.p, self.q)
        z = jnp.asarray(z)
        num = sum(float(c) * z**i for i, c in enumerate(P))
        den = sum(float(c) * z**i for i, c in enumerate(Q))
        return num / den

    def order(self, terms):
        return self.p + self.q

    def error_order(self, terms):
        # "local": this step's own local error, O(h^(p+q+1)); "embedded": that of the
        # lower-order companion, O(h^(p+q)).
        return min(self.p + self.q, sum(self._companion)) + 1

    # -- pieces ---------------------------------------------------------------------

    @property
    def _companion(self) -> tuple[int, int]:
        """The (p', q') of the companion relation of the error estimate: one order
        higher ("local") or lower ("embedded")."""
        if self.error_estimate == "embedded":
            return (self.p, self.q - 1) if self.q > self.p else (self.p - 1, self.q)
        if self.q <= self.p:
            return self.p, self.q + 1
        return self.p + 1, self.q

    @property
    def _start_order(self) -> int:
        """The highest coefficient carried at a step's start."""
        return max(self._companion[0], self.carry_order)

    @property
    def _end_order(self) -> int:
        """The highest coefficient computed at a step's end."""
        pc, qc = self._companion
        return max(pc, qc, self.q, self._start_order)

    def _newton_inverse(self, terms, t0, t1, y0, args) -> FactoredPadeInverse:
        """Q(hJ)^{-1}, factored, with J the vector field's Jacobian at (t1, y0) (`y0`:
        the point given, in practice the Newton guess or iterate), where the relation
        is implicit (`hJ` from `vf_prod` with the step's control, so time reversal is
        included)."""
        flat, unravel = jfu.ravel_pytree(y0)
        control = terms.contr(t0, t1)

        def f(x):
            out = terms.vf_prod(t1, unravel(x), args, control)
            return jfu.ravel_pytree(out)[0]

        _, Q = _hermite.pade_polynomials(self.p, self.q)
        inverse = FactoredPadeInverse.build(
            f, lax.stop_gradient(flat), pade_partial_fractions(Q), self.linear_solver
        )
        return eqxi.nondifferentiable(lax.stop_gradient(inverse), name="Newton matrix")

    def _residual(self, y1, fargs):
        """sum_i (-1)^i a_i d_i(y1) - rhs: zero at the HO(p, q) step's solution."""
        terms, rhs, t1, h, args = fargs
        a, _ = _hermite.relation_weights(self.p, self.q)
        ds = self._expand(terms, t1, h, y1, args, self.q)
        lhs = weighted_sum([(-1) ** i * w for i, w in enumerate(a)], ds, y1)
        return jtu.tree_map(lambda x, r: x - r, lhs, rhs)

    # -- diffrax interface ----------------------------------------------------------

    def init(self, terms, t0: RealScalarLike, t1: RealScalarLike, y0: Y, args: Args) -> HermiteObreschkoffState:
        self._check_init(terms, y0)
        h = reference_step(t0, t1)
        coeffs = tuple(self._expand(terms, t0, h, y0, args, self._start_order))
        zero = jnp.array(0, jnp.int32)
        increment = jtu.tree_map(jnp.zeros_like, y0)
        return HermiteObreschkoffState(coeffs, h, increment, zero, zero)

    def step(
        self,
        terms,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: Y,
        args: Args,
        solver_state: HermiteObreschkoffState,
        made_jump: BoolScalarLike,
    ) -> tuple[Y, Y, DenseInfo, HermiteObreschkoffState, RESULTS]:
        out = self._solve(terms, t0, t1, y0, args, solver_state, made_jump)
        data, dense = self._dense(out.inverse, out.cs, out.ds)
        y_error = self._across_switches(terms, t0, t1, args, data, dense, out.switches, out.y_error)
        y1, y_error, result = end_if_stalled(
            out.failed, t1 - t0, solver_state.h_ref, y0, out.y1, y_error, out.result
        )
        return y1, y_error, dict(coeffs=stack(dense)), out.state, result

    def _dense(self, inverse, cs, ds) -> tuple[list, list]:
        """`(data, dense)`: the data at both ends filtered to stay bounded along stiff
        directions (`_dense_data`), and the Hermite interpolant's power coefficients in
        s through them (the dense output; a list of PyTrees shaped like the state)."""
        p, q = self.p, self.q
        W = _hermite.hermite_matrix(p, q)
        data = _dense_data(p, q, inverse, cs[: p + 1], ds[: q + 1])
        return data, [weighted_sum(W[j], data, cs[0]) for j in range(p + q + 2)]

    def _across_switches(self, terms, t0, t1, args, data, dense, switches: SwitchSeries, y_error):
        """The error estimate of a step of a vector field that switches (or with an
        event), which cannot end at a switch: a step whose switching functions and
        event conditions change sign twice or more between its ends (together), or may
        (one touches zero), is rejected (an infinite estimate), since its ends would
        not show it; a step across one switch of the field is accepted only if the
        data at its ends agree to the tolerance (`_crossing_error`). Both are read
        along the dense output: the series of the switching functions along it
        (`push_forward`), and the switching operations the engine cannot see into
        evaluated at `CELLS + 1` points of it. Unchanged for a smooth field without
        an event (decided at trace time)."""
        conditions = self._event_conditions(terms)
        seen = switches.coeffs is not None
        if not seen and not switches.unseen and conditions is None:
            return y_error
        h = jnp.asarray(t1 - t0)
        dtype = jnp.result_type(h, 1.0)
        n_state = len(jfu.ravel_pytree(data[0])[0]) if seen else 0
        n_events = 0 if conditions is None else len(jtu.tree_leaves(self.event.cond_fn))
        one = more = field_switch = jnp.array(False)
        end = jnp.ones((), dtype)
        if seen or conditions is not None:
            control = terms.contr(t0, t1)

            def along(t, y, args):
                # The field (whose own switching functions the engine collects; its
                # values, the first n_state columns, are dropped), then the conditions.
                parts = [jnp.zeros((0,), dtype)]
                if seen:
                    parts.append(jfu.ravel_pytree(terms.vf_prod(t, y, args, control))[0].astype(dtype))
                if conditions is not None:
                    parts.append(conditions(t, y, args))
                return jnp.concatenate(parts)

            rows = self.method.push_forward(along, t0, h, dense, args, len(dense))
            q = rows[:, n_state:].astype(dtype)
            one, more, which, end = crossings(q)
            field_switch = one & (which >= n_events)
            tols = filled_tolerances(self.root_finder)
            if tols is not None:
                # The switching functions' series along the step must be accurate to
                # the tolerance, as the state is (see `tail`).
                ratio = tail_ratio(tail(q), tols[0], tols[1])
                y0, y1 = data[0], data[self.p + 1]
                floor = jtu.tree_map(lambda a, b: ratio * tolerance_scale(tols[0], tols[1], a, b), y0, y1)
                y_error = jtu.tree_map(lambda e, f: jnp.maximum(jnp.abs(e), f.astype(e.dtype)), y_error, floor)
        if switches.unseen:
            us = jnp.linspace(0, 1, CELLS + 1, dtype=dtype)

            def signature(u):
                y_u = jtu.tree_map(lambda *c: horner(list(c), u.astype(c[0].dtype)), *dense)
                return self._signature(terms, t0, h, u, y_u, args)

            sig = jax.vmap(signature)(us)
            changed = jnp.any(sig[1:] != sig[:-1], axis=1)
            changes = jnp.sum(changed)
            # A seen switch in the interval where the unseen operations change is the
            # same one (`jnp.interp` compares with the table's ends as well as
            # searching it); elsewhere it is a second.
            k = jnp.argmax(changed)
            same = (end >= us[k]) & (end <= us[k + 1] + 1 / CELLS)
            more = more | (changes >= 2) | (one & (changes >= 1) & ~same)
            field_switch = field_switch | (changes >= 1)
        crossing = _crossing_error(self.p, self.q, data)
        return jtu.tree_map(
            lambda e, c: jnp.where(more, jnp.inf, jnp.where(field_switch, jnp.maximum(jnp.abs(e), c), e)),
            y_error,
            crossing,
        )

    def _solve(self, terms, t0, t1, y0, args, solver_state, made_jump, estimate: bool = True) -> HOStep:
        """One HO(p, q) step (see `HOStep`). With `estimate=False` the error estimate is
        skipped (`y_error` is `None`), for callers that only need to know whether the
        step failed; XLA then drops the end coefficients nobody uses."""
        newton = self._newton(terms, t0, t1, y0, args, solver_state, made_jump)
        return self._finish(terms, t1, y0, args, newton, estimate)

    def _newton(self, terms, t0, t1, y0, args, solver_state, made_jump) -> HONewton:
        """The first half of a step (see `HONewton`): its Newton iteration for `y1`."""
        state = solver_state
        p, q = self.p, self.q
        h = jnp.asarray(t1 - t0)
        if made_jump is not False:
            state = self._after_jump(terms, t0, y0, args, h, state, made_jump)
        # This step's coefficients at t0: carried from the last step's end, rescaled.
        cs = rescale(state.coeffs, state.h_ref, y0, h)
        ratio = (h / state.h_ref).astype(state.h_ref.dtype)
        a, b = _hermite.relation_weights(p, q)
        rhs = weighted_sum(b, cs[: p + 1], y0)
        fargs = (terms, rhs, t1, h, args)

        # Starting guess: the last step's increment, rescaled to this step (a secant
        # predictor; y0 itself at the start and after a jump). Simplified Newton: the
        # Jacobian hJ of the step's vector field at the guess, and the Newton matrix
        # Q(hJ) applied through its factored inverse.
        guess = jtu.tree_map(
            lambda y, d: y + (ratio * d).astype(y.dtype), y0, state.increment
        )
        inverse = self._newton_inverse(terms, t0, t1, guess, args)
        fn = lambda y, fa: (self._residual(y, fa), None)  # noqa: E731
        if isinstance(self.root_finder, PadeChord):
            options = dict(init_state=inverse)
            if self.root_finder.refresh_rate is not None:
                # A Partial, not a closure: its arrays must be PyTree leaves to pass
                # through optimistix's implicit differentiation.
                options["rebuild"] = jtu.Partial(_rebuild_inverse, self, terms, t0, t1, args)
        else:
            options = {}
        sol = optx.root_find(
            fn,
            self.root_finder,
            guess,
            fargs,
            options=options,
            has_aux=True,
            throw=False,
            max_steps=self.root_find_max_steps,
        )
        y1 = sol.value
        result = RESULTS.promote(sol.result)
        # Through the latest Newton matrix: PadeChord's, rebuilt at an iterate when the
        # iteration stalled, fits better than the one built at the guess.
        if isinstance(self.root_finder, PadeChord):
            inverse = sol.state.inverse
        finite = all_finite(y1)
        failed = (result != RESULTS.successful) | ~finite
        result = RESULTS.where(finite, result, RESULTS.successful)
        refreshes = sol.stats.get("num_jacobian_refreshes", jnp.array(0, jnp.int32))
        state = eqx.tree_at(
            lambda s: (s.newton_iterations, s.jacobian_evaluations),
            state,
            (
                state.newton_iterations + sol.stats["num_steps"].astype(jnp.int32),
                state.jacobian_evaluations + 1 + refreshes,
            ),
        )
        return HONewton(t0, y1, failed, cs, inverse, state, result)

    def _finish(self, terms, t1, y0, args, newton: HONewton, estimate: bool = True) -> HOStep:
        """The second half of a step (see `HOStep`): the coefficients at `y1` and, with
        `estimate`, the error estimate."""
        y1, cs, inverse = newton.y1, newton.cs, newton.inverse
        h = jnp.asarray(t1 - newton.t0)
        # Coefficients at the end: error estimate, dense output, and the next step.
        ds, switches = self._expand_switching(terms, t1, h, y1, args, self._end_order)
        new_state = HermiteObreschkoffState(
            coeffs=tuple(ds[: self._start_order + 1]),
            h_ref=reference_step(newton.t0, t1),
            increment=jtu.tree_map(lambda a, b: a - b, y1, y0),
            newton_iterations=newton.state.newton_iterations,
            jacobian_evaluations=newton.state.jacobian_evaluations,
        )
        if not estimate:
            return HOStep(y1, None, newton.failed, cs, ds, switches, inverse, new_state, newton.result)
        # Error estimate: the residual of the companion relation HO(p', q') at y1,
        # through the Newton matrix: to leading order, y1 minus the companion's
        # solution, i.e. this step's own local error (companion one order higher,
        # "local") or the lower-order companion's ("embedded").
        pc, qc = self._companion
        a_hi, b_hi = _hermite.relation_weights(pc, qc)
        companion = jtu.tree_map(
            lambda x, r: x - r,
            weighted_sum([(-1) ** i * w for i, w in enumerate(a_hi)], ds[: qc + 1], y0),
            weighted_sum(b_hi, cs[: pc + 1], y0),
        )
        filtered = inverse.apply_tree(lax.stop_gradient(companion))
        finite = all_finite(filtered)
        failed = newton.failed | ~finite
        y_error = jtu.tree_map(lambda e: jnp.where(failed, jnp.inf, e), filtered)
        return HOStep(y1, y_error, failed, cs, ds, switches, inverse, new_state, newton.result)

    def _after_jump(self, terms, t0, y0, args, h, state, made_jump):
        state = refresh_after_jump(
            state, t0, h, made_jump, lambda h_ref: (tuple(self._expand(terms, t0, h_ref, y0, args, self._start_order)),)
        )
        increment = jtu.tree_map(lambda d: jnp.where(made_jump, jnp.zeros_like(d), d), state.increment)
        return eqx.tree_at(lambda s: s.increment, state, increment)



# An implicit step that fails even at this fraction of the last accepted step's length
# has stalled: no smaller step will help.
STALL_RATIO = 1e-6


def end_if_stalled(failed, h, h_ref, y0, y1, y_error, result):
    """`(y1, y_error, result)` of an implicit step, ending the solve where it stalled.

    A failed step (its Newton iteration did not converge, or its state is not finite)
    is rejected, and the controller retries with a shorter one. Where it fails even at
    `STALL_RATIO` times the last accepted step's length, no shorter step will help, and
    rejecting until `max_steps` would hide why: the step is then accepted as it is (the
    state kept, a zero estimate) with the iteration's own `RESULTS` (non-finite values:
    `RESULTS.nonfinite`), which ends the solve, per trajectory and honouring
    `throw=False`. [`taylorode.diffeqsolve`][] names the cause."""
    stalled = failed & (jnp.abs(h) < STALL_RATIO * jnp.abs(h_ref))
    y1 = jtu.tree_map(lambda a, b: jnp.where(stalled, a, b), y0, y1)
    y_error = jtu.tree_map(lambda e: jnp.where(stalled, jnp.zeros_like(e), e), y_error)
    cause = RESULTS.where(result == RESULTS.successful, RESULTS.nonfinite, result)
    return y1, y_error, RESULTS.where(stalled, cause, result)


def _dense_data(p, q, inverse, cs, ds):
    """The data of the dense-output interpolant: `c_0`, `d_0` as they are, and for
    i >= 1 `F_i(hJ) c_i`, `F_i(hJ) d_i` with the filters of `_hermite.dense_filters`,
    applied through the Newton matrix's factorisations.

    Along a stiff direction (|hλ| >> 1) the coefficients `h^i y^[i]` are the state's
    small deviation from the slow solution times ~|hλ|^i, which an interpolant through
    them would carry into the middle of the step; F_i(hλ) = O((hλ)^-i) brings them
    back to that deviation's size. On non-stiff components F_i = 1 + O((hλ)^(p+q+2-i)),
    so the interpolant keeps its order there."""
    filters = _dense_filters(p, q)
    _, unravel = jfu.ravel_pytree(cs[0])
    rows = jnp.stack([jfu.ravel_pytree(x)[0] for x in cs[1:] + ds[1:]])
    out = inverse.apply_filters(rows, filters)
    filtered = [unravel(row) for row in out]
    return [cs[0], *filtered[:p], ds[0], *filtered[p:]]


def _crossing_error(p, q, data):
    """What a step across one switch of the field may be off by: per component,
    `sum_k 2 |δ_k|`, k = 0..q, with `δ_k` the mismatch between the (filtered)
    coefficient of order k at the step's end and that of the start's polynomial
    shifted to the end, `sum_{i>=k} C(i, k) c_i`.

    On a smooth stretch the mismatches are the start polynomial's truncation,
    O(h^(p+1)). Across a switch they also hold the change of branch: for a jump J in
    the field, `δ_1 ≈ hJ`, while the step is off by `|s - b_1| hJ <= hJ` (switch at
    `s h`); for a kink (a jump K in its slope), `δ_1 ≈ (1 - s) h^2 K` and
    `δ_2 ≈ h^2 K / 2`. The HO estimate alone can vanish for a kink at one place in the
    step (for HO(2, 3), mid-step); this bound does not (tested for a jump and a kink at
    ten places in a step). A crossing step is so accepted once it is short enough for
    the start's polynomial to reach its end to the tolerance: the switch is crossed by
    step rejection, as Runge–Kutta codes cross it.
    """
    start, end = data[: p + 1], data[p + 1 :]
    out = None
    for k, d_k in enumerate(end):
        shifted = weighted_sum([math.comb(i, k) if i >= k else 0 for i in range(p + 1)], start, d_k)
        delta = jtu.tree_map(lambda a, b: 2 * jnp.abs(a - b), d_k, shifted)
        out = delta if out is None else jtu.tree_map(jnp.add, out, delta)
    return out


@functools.cache
def _dense_filters(p, q) -> RationalFilters:
    """F_i for the rows of `_dense_data`: i = 1..p (the c_i), then i = 1..q (the d_i)."""
    k, N = _hermite.dense_filters(p, q)
    _, Q = _hermite.pade_polynomials(p, q)
    orders = list(range(1, p + 1)) + list(range(1, q + 1))
    return RationalFilters.make([N[i] for i in orders], Q, k)


def _rebuild_inverse(solver, terms, t0, t1, args, y):
    return solver._newton_inverse(terms, t0, t1, y, args)


def implicit_stats(solution) -> dict[str, Any]:
    """Newton iterations and Jacobian evaluations of a
    [`taylorode.HermiteObreschkoff`][], [`taylorode.ExtrapolatedHermiteObreschkoff`][] or
    [`taylorode.VariableOrderHermiteObreschkoff`][] solve (for the second, of all three
    sub-steps of each step).

    diffrax's `solution.stats` has a fixed set of keys; these totals are kept in the
    solver state, which diffrax returns when asked for it.

    **Arguments:**

    - `solution`: a `diffrax.Solution` from `diffeqsolve(...,
        solver=taylorode.HermiteObreschkoff(p, q),  # or ExtrapolatedHermiteObreschkoff
        saveat=diffrax.SaveAt(..., solver_state=True))`.

    **Returns:**

    A dict with `"newton_iterations"` and `"jacobian_evaluations"`, totals over the
    accepted steps (the work of rejected steps is not included), as arrays with any
    batch axes of the solve.
    """
    state = getattr(solution, "solver_state", None)
    state = getattr(state, "inner", state)  # VariableOrderHermiteObreschkoff's
    if not isinstance(state, HermiteObreschkoffState):
        raise ValueError(
            "`implicit_stats` reads the solver state of a `taylorode.HermiteObreschkoff` "
            "solve; pass `saveat=diffrax.SaveAt(..., solver_state=True)` to `diffeqsolve`."
        )
    return dict(
        newton_iterations=state.newton_iterations,
        jacobian_evaluations=state.jacobian_evaluations,
    )


HermiteObreschkoff.__init__.__doc__ = """**Arguments:**

- `p`: the number of Taylor coefficients used at the step's start (`p >= 0`).
- `q`: the number used at its end (`q >= 1`). The order is `p + q`; A-stable for
    `p <= q <= p + 2`, L-stable for `q = p + 1` or `p + 2`. The default, HO(1, 2)
    (order 3, L-stable), solved every stiff problem measured (Robertson's kinetics to
    t = 1e11, the Oregonator, HIRES, POLLU) where higher orders can need far more
    steps; higher orders pay off on moderately stiff problems (Van der Pol).
- `method`: how Taylor coefficients are computed: `"recurrence"` (the default, our
    engine), `"jet"`, `"jvp"`, or an `AbstractTaylorMethod` instance.
- `root_finder`: an `optimistix` root finder for the implicit relation. The default,
    `taylorode.PadeChord` with the step-size controller's `rtol`/`atol`, uses one
    Jacobian of the vector field per step, factored as above. Any other optimistix
    root finder (e.g. `optimistix.Newton`) also works, with its own Jacobian.
- `root_find_max_steps`: the most iterations per step before the step is rejected.
- `event`: the `diffrax.Event` also passed to `diffeqsolve`, so that a step in which
    its conditions cross zero more than once is rejected (diffrax looks only at the
    ends of steps). [`taylorode.diffeqsolve`][] hands it over by itself.
- `carry_order`: carry the coefficients of orders up to at least this one from a step's
    end to the next step's start (the pairs of
    [`taylorode.VariableOrderHermiteObreschkoff`][] carry what the highest of them
    needs, so that any of them can take the next step); leave it at 0 otherwise.
- `error_estimate`: `"local"` (the default: the step's own local error) or
    `"embedded"` (that of the order-(p+q-1) companion, so that the global error follows
    the tolerance); see "Error estimate" above.
- `linear_solver`: how the matrices `hJ - r_k I` are formed and factored: `lineax.LU()`
    (the default: `J` by `jax.jacfwd`, one Jacobian-vector product per unknown, and
    dense LU) or [`taylorode.BandedLU`][]`(lower, upper)` for banded Jacobians
    (method-of-lines grids with the unknowns ordered point by point: `J`'s band from
    `lower + upper + 1` products, banded LU), which is what makes systems with
    thousands of unknowns affordable.
"""
