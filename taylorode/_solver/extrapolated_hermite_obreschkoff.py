from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from diffrax import RESULTS

from .._coefficients import AbstractTaylorMethod
from .._custom_types import Args, BoolScalarLike, DenseInfo, RealScalarLike, Y
from .._polynomial import stack
from .base import AbstractTaylorSolver, all_finite, reference_step
from .hermite_obreschkoff import end_if_stalled, HermiteObreschkoff, HermiteObreschkoffState


class ExtrapolatedHermiteObreschkoff(AbstractTaylorSolver):
    r"""Hermite–Obreschkoff steps with Richardson extrapolation: order $p + q + 1$,
    A- and L-stable, from Taylor coefficients of order at most $\max(p + 1, q)$.

    Each step of length $h$ takes one HO(p, q) step of length $h$ (giving $y_h$) and
    two of length $h/2$ (giving $y_{h/2}$), and returns

    $$y_1 = y_{h/2} + \frac{y_{h/2} - y_h}{2^{p+q} - 1},$$

    which cancels the leading term of the local error of HO(p, q) (order $p + q$):
    the result has order $p + q + 1$. Its stability function is
    $R_E(z) = R(z/2)^2 + (R(z/2)^2 - R(z))/(2^{p+q} - 1)$, with $R$ the $(p, q)$ Padé
    approximant of $e^z$. For $q = p + 1$ (the pairs accepted) $R_E$ is A-stable and
    L-stable ($R_E(z) = O(1/z)$ as $z \to -\infty$); checked on a grid of the
    imaginary axis in the tests. For $q = p + 2$ or $q = p$ it is not A-stable.

    **Why.** An L-stable HO(p, q) of order 4 or more needs coefficients of order
    $q \ge 3$ at the step's end, and where $|h\lambda|$ reaches $10^9$ and beyond
    (Robertson's kinetics at late times) their Newton iteration stops converging
    (see [`taylorode.HermiteObreschkoff`][]'s "Limitation"). Extrapolating HO(1, 2)
    gives order 4 from coefficients of order at most 2, which converge there; HO(2, 3)
    gives order 6 on problems where HO(2, 3) itself works.

    **Error estimate.** $(y_{h/2} - y_h)/(2^{p+q} - 1)$: the local error of
    $y_{h/2}$, of order $h^{p+q+1}$ (`error_order = p + q + 1`). The step continues
    from the extrapolated $y_1$ (local extrapolation, as extrapolation codes do), so the
    achieved error is usually well below the tolerance. A sub-step whose Newton
    iteration fails makes the estimate infinite and the controller retries with a
    smaller step. Works with `diffrax.PIDController`.

    **Cost.** Three HO(p, q) solves per step (each with its Jacobian and Newton
    iterations) and one expansion at $y_1$, whose coefficients are carried to the
    next step. [`taylorode.implicit_stats`][] counts the Newton iterations and
    Jacobians of all three.

    **Structure.** A wrapper around the [`taylorode.HermiteObreschkoff`][] of its
    sub-steps (held as `solver`, as `diffrax.HalfSolver` holds the solver it wraps),
    whose steps it composes; its `root_finder` is that solver's, so `diffeqsolve`
    fills in the controller's tolerances there.

    **Dense output.** As [`taylorode.HermiteObreschkoff`][]'s: the Hermite interpolant
    of degree $p + q + 1$ through the coefficients at both ends (at the extrapolated
    $y_1$), filtered through the full step's Newton matrix.

    ??? cite "References"

        ```bibtex
        @book{hairer1993solving,
            author={Hairer, Ernst and N{\o}rsett, Syvert P. and Wanner, Gerhard},
            title={Solving Ordinary Differential Equations {I}: Nonstiff Problems},
            edition={2},
            publisher={Springer},
            year={1993},
            note={Section II.4, Richardson extrapolation}
        }

        @book{hairer1996solving,
            author={Hairer, Ernst and Wanner, Gerhard},
            title={Solving Ordinary Differential Equations {II}: Stiff and
                   Differential-Algebraic Problems},
            edition={2},
            publisher={Springer},
            year={1996},
            note={Section IV.9, extrapolation of stiff methods}
        }
        ```
    """

    solver: HermiteObreschkoff

    solver_name: ClassVar[str] = "ExtrapolatedHermiteObreschkoff"
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
        linear_solver: lx.AbstractLinearSolver = lx.LU(),
    ):
        # Validates p, q, the method, the order and the linear solver.
        solver = HermiteObreschkoff(
            p, q, method, root_finder, root_find_max_steps, event=event, linear_solver=linear_solver
        )
        if q != p + 1:
            raise ValueError(
                f"ExtrapolatedHermiteObreschkoff(p, q) needs q = p + 1 (then the "
                f"extrapolated step is A- and L-stable); got ({p}, {q}). For q = p + 2 or "
                "q = p the extrapolated stability function exceeds 1 on the imaginary "
                "axis; use HermiteObreschkoff(p, q) for those pairs."
            )
        self.solver = solver

    # The wrapped solver's, so that `diffeqsolve` fills in the controller's tolerances
    # where the sub-steps read them.
    @property
    def root_finder(self) -> optx.AbstractRootFinder:
        return self.solver.root_finder

    @property
    def root_find_max_steps(self) -> int:
        return self.solver.root_find_max_steps

    @property
    def method(self) -> AbstractTaylorMethod:
        return self.solver.method

    @property
    def event(self):
        return self.solver.event

    def with_event(self, event) -> "ExtrapolatedHermiteObreschkoff":
        return eqx.tree_at(lambda s: s.solver.event, self, event, is_leaf=lambda x: x is None)

    @property
    def p(self) -> int:
        return self.solver.p

    @property
    def q(self) -> int:
        return self.solver.q

    @property
    def is_a_stable(self) -> bool:
        return True

    @property
    def is_l_stable(self) -> bool:
        return True

    def stability_function(self, z):
        """$R_E(z) = R(z/2)^2 + (R(z/2)^2 - R(z))/(2^{p+q} - 1)$: the value of $y_1/y_0$
        on $y' = \\lambda y$, $z = h\\lambda$."""
        R = self.solver.stability_function
        half = R(jnp.asarray(z) / 2) ** 2
        return half + (half - R(z)) / (2 ** (self.p + self.q) - 1)

    def order(self, terms) -> int:
        return self.p + self.q + 1

    def error_order(self, terms) -> int:
        # The estimate is the local error of the two half steps, O(h^(p+q+1)).
        return self.p + self.q + 1

    def init(self, terms, t0: RealScalarLike, t1: RealScalarLike, y0: Y, args: Args) -> HermiteObreschkoffState:
        self._check_init(terms, y0)
        return self.solver.init(terms, t0, t1, y0, args)

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
        ho = self.solver
        state = solver_state
        h = t1 - t0
        tm = t0 + h / 2
        # The sub-steps' own error estimates are not needed (only whether they failed):
        # `estimate=False` skips them, and XLA drops the end coefficients nobody uses.
        full = ho._solve(terms, t0, t1, y0, args, state, made_jump, estimate=False)
        mid = ho._solve(terms, t0, tm, y0, args, state, made_jump, estimate=False)
        half = ho._solve(terms, tm, t1, mid.y1, args, mid.state, False, estimate=False)

        weight = 1 / (2 ** (self.p + self.q) - 1)
        diff = jtu.tree_map(lambda a, b: (a - b) * jnp.asarray(weight, a.dtype), half.y1, full.y1)
        y1 = jtu.tree_map(lambda a, d: a + d, half.y1, diff)
        # A sub-step whose Newton iteration failed makes the error estimate infinite:
        # the controller must reject the step.
        failed = full.failed | mid.failed | half.failed | ~all_finite(y1)
        y_error = jtu.tree_map(lambda d: jnp.where(failed, jnp.inf, d), diff)
        result = full.result
        for r in (mid.result, half.result):
            result = RESULTS.where(result == RESULTS.successful, r, result)

        # Coefficients at the extrapolated y1: dense output, and the next step's start.
        ds, switches = ho._expand_switching(terms, t1, h, y1, args, max(self.q, ho._start_order))
        own = lambda s, field: getattr(s, field) - getattr(state, field)  # noqa: E731
        new_state = HermiteObreschkoffState(
            coeffs=tuple(ds[: ho._start_order + 1]),
            h_ref=reference_step(t0, t1),
            increment=jtu.tree_map(lambda a, b: a - b, y1, y0),
            newton_iterations=half.state.newton_iterations + own(full.state, "newton_iterations"),
            jacobian_evaluations=half.state.jacobian_evaluations + own(full.state, "jacobian_evaluations"),
        )
        # As HermiteObreschkoff's steps: along the dense output, a step that crosses
        # switches or event conditions twice is rejected, and one across a switch of
        # the field must have ends that agree to the tolerance.
        data, dense = ho._dense(full.inverse, full.cs, ds)
        y_error = ho._across_switches(terms, t0, t1, args, data, dense, switches, y_error)
        y1, y_error, result = end_if_stalled(failed, h, state.h_ref, y0, y1, y_error, result)
        return y1, y_error, dict(coeffs=stack(dense)), new_state, result


ExtrapolatedHermiteObreschkoff.__init__.__doc__ = """**Arguments:**

- `p`, `q`: the HO(p, q) pair of the sub-steps, with `q = p + 1` (default (1, 2):
    order 4). The order is `p + q + 1`.
- `method`: how Taylor coefficients are computed: `"recurrence"` (the default, our
    engine), `"jet"`, `"jvp"`, or an `AbstractTaylorMethod` instance.
- `root_finder`: the `optimistix` root finder of each sub-step; by default
    `taylorode.PadeChord` with the step-size controller's `rtol`/`atol`, as for
    [`taylorode.HermiteObreschkoff`][].
- `root_find_max_steps`: the most iterations per sub-step before the step is rejected.
- `event`: the `diffrax.Event` also passed to `diffeqsolve` (see
    [`taylorode.HermiteObreschkoff`][]).
- `linear_solver`: `lineax.LU()` (the default, dense) or
    [`taylorode.BandedLU`][]`(lower, upper)` for banded Jacobians (see
    [`taylorode.HermiteObreschkoff`][]).
"""
