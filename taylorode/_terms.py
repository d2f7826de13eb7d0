"""Which diffrax terms a Taylor step can expand.

A Taylor step expands dy/ds = vf_prod(t0 + s h, y, args, contr(t0, t1)): exact when the
control is linear in time, i.e. for an ODE. diffrax wraps the user's term before any
step (`WrapTerm`, to reverse time) and builds `AdjointTerm`s for `BacksolveAdjoint`, so
`term_structure` has to admit any `AbstractTerm`; the ODE requirement is checked here.
"""

from diffrax import AbstractTerm, ODETerm


try:  # diffrax's own error type, so that users catch one exception for both checks
    from diffrax._integrate import TermAndSolverIncompatible
except ImportError:  # pragma: no cover - a future diffrax that moves it

    class TermAndSolverIncompatible(ValueError):
        pass


try:
    from diffrax._term import AdjointTerm, WrapTerm

    _WRAPPERS: tuple[type, ...] = (AdjointTerm, WrapTerm)
except ImportError:  # pragma: no cover
    _WRAPPERS = ()


def check_ode_term(terms: AbstractTerm, solver_name: str) -> None:
    """Raise `TermAndSolverIncompatible` unless `terms` is (a wrapped) `ODETerm`."""
    term = terms
    while isinstance(term, _WRAPPERS):
        term = term.term
    if not isinstance(term, ODETerm):
        raise TermAndSolverIncompatible(
            f"{solver_name} solves ordinary differential equations and needs a "
            f"diffrax.ODETerm, but got {type(term).__name__}. Control and SDE terms "
            "(ControlTerm, MultiTerm with a Brownian motion) need a diffrax SDE solver "
            "such as diffrax.Heun or diffrax.SPaRK; a sum of vector fields can be "
            "written as one ODETerm."
        )
