from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from diffrax import (
    RESULTS,
    AbstractAdaptiveSolver,
    AbstractImplicitSolver,
    AbstractTerm,
    with_stepsize_controller_tols,
)

from .._coefficients import AbstractTaylorMethod, resolve_method
from .._interpolation import TaylorInterpolation
from .._root_finder import PadeChord
from .._terms import check_ode_term
from .hermite_obreschkoff import HermiteObreschkoff, HermiteObreschkoffState
from .taylor import _reference_step


class ExtrapolatedHermiteObreschkoff(AbstractAdaptiveSolver, AbstractImplicitSolver):
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

    p: int = eqx.field(static=True)
    q: int = eqx.field(static=True)
    method: AbstractTaylorMethod
    root_finder: optx.AbstractRootFinder
    root_find_max_steps: int = eqx.field(static=True)

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar[Callable[..., TaylorInterpolation]] = TaylorInterpolation

    def __init__(
        self,
        p: int = 1,
        q: int = 2,
        method: str | AbstractTaylorMethod = "recurrence",
        root_finder: optx.AbstractRootFinder | None = None,
        root_find_max_steps: int = 10,
    ):
        if root_finder is None:
            root_finder = with_stepsize_controller_tols(PadeChord)()
        # Validates p, q, the method and the order like HermiteObreschkoff does.
        HermiteObreschkoff(p, q, method, root_finder, root_find_max_steps)
        if q != p + 1:
            raise ValueError(
                f"ExtrapolatedHermiteObreschkoff(p, q) needs q = p + 1 (then the "
                f"extrapolated step is A- and L-stable); got ({p}, {q}). For q = p + 2 or "
                "q = p the extrapolated stability function exceeds 1 on the imaginary "
                "axis; use HermiteObreschkoff(p, q) for those pairs."
            )
        self.p = p
        self.q = q
        self.method = resolve_method(method)
        self.root_finder = root_finder
        self.root_find_max_steps = root_find_max_steps

    @property
    def _ho(self) -> HermiteObreschkoff:
        """The HO(p, q) solver of the sub-steps (with this solver's root finder, whose
        tolerances diffrax has filled in from the controller)."""
        return HermiteObreschkoff(self.p, self.q, self.method, self.root_finder, self.root_find_max_steps)

    @property
    def is_a_stable(self) -> bool:
        return True

    @property
    def is_l_stable(self) -> bool:
        return True

    def stability_function(self, z):
        """$R_E(z) = R(z/2)^2 + (R(z/2)^2 - R(z))/(2^{p+q} - 1)$: the value of $y_1/y_0$
        on $y' = \\lambda y$, $z = h\\lambda$."""
        R = self._ho.stability_function
        half = R(jnp.asarray(z) / 2) ** 2
        return half + (half - R(z)) / (2 ** (self.p + self.q) - 1)

    def order(self, terms):
        return self.p + self.q + 1

    def error_order(self, terms):
        # The estimate is the local error of the two half steps, O(h^(p+q+1)).
        return self.p + self.q + 1

    def init(self, terms, t0, t1, y0, args):
        check_ode_term(terms, "taylorode.ExtrapolatedHermiteObreschkoff")
        return self._ho.init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        ho = self._ho
        state = solver_state
        h = t1 - t0
        tm = t0 + h / 2
        # The sub-steps' own error estimates are not needed (only whether they failed):
        # `estimate=False` skips them, and XLA drops the end coefficients nobody uses.
        y_full, e_full, cs, _, inverse, s_full, r_full = ho._solve(
            terms, t0, t1, y0, args, state, made_jump, estimate=False
        )
        y_mid, e_mid, _, _, _, s_mid, r_mid = ho._solve(
            terms, t0, tm, y0, args, state, made_jump, estimate=False
        )
        y_half, e_half, _, _, _, s_half, r_half = ho._solve(
            terms, tm, t1, y_mid, args, s_mid, False, estimate=False
        )

        weight = 1 / (2 ** (self.p + self.q) - 1)
        diff = jtu.tree_map(lambda a, b: (a - b) * jnp.asarray(weight, a.dtype), y_half, y_full)
        y1 = jtu.tree_map(lambda a, d: a + d, y_half, diff)
        # A sub-step whose Newton iteration failed has an infinite error estimate: the
        # controller must reject the step.
        failed = jnp.any(
            jnp.stack([~jnp.all(jnp.isfinite(e)) for e in jtu.tree_leaves((e_full, e_mid, e_half, y1))])
        )
        y_error = jtu.tree_map(lambda d: jnp.where(failed, jnp.inf, d), diff)
        result = r_full
        for r in (r_mid, r_half):
            result = RESULTS.where(result == RESULTS.successful, r, result)

        # Coefficients at the extrapolated y1: dense output, and the next step's start.
        ds = ho._expand(terms, t1, h, y1, args, max(self.q, ho._start_order))
        own = lambda s, field: getattr(s, field) - getattr(state, field)  # noqa: E731
        new_state = HermiteObreschkoffState(
            coeffs=tuple(ds[: ho._start_order + 1]),
            h_ref=_reference_step(t0, t1),
            increment=jtu.tree_map(lambda a, b: a - b, y1, y0),
            newton_iterations=s_half.newton_iterations + own(s_full, "newton_iterations"),
            jacobian_evaluations=s_half.jacobian_evaluations + own(s_full, "jacobian_evaluations"),
        )
        return y1, y_error, dict(coeffs=ho._dense(inverse, cs, ds)), new_state, result

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


ExtrapolatedHermiteObreschkoff.__init__.__doc__ = """**Arguments:**

- `p`, `q`: the HO(p, q) pair of the sub-steps, with `q = p + 1` (default (1, 2):
    order 4). The order is `p + q + 1`.
- `method`: how Taylor coefficients are computed: `"recurrence"` (the default, our
    engine), `"jet"`, `"jvp"`, or an `AbstractTaylorMethod` instance.
- `root_finder`: the `optimistix` root finder of each sub-step; by default
    `taylorode.PadeChord` with the step-size controller's `rtol`/`atol`, as for
    [`taylorode.HermiteObreschkoff`][].
- `root_find_max_steps`: the most iterations per sub-step before the step is rejected.
"""
