"""What taylorode relies on in diffrax beyond its documented interfaces (all of it in
`taylorode/_interop.py`). Each test fails loudly when diffrax changes under it."""

import ast
import dataclasses
import pathlib

import diffrax
import jax
import jax.numpy as jnp
import pytest

import taylorode
from taylorode import _interop


PACKAGE = pathlib.Path(taylorode.__file__).parent


def test_term_and_solver_incompatible_is_diffrax_s():
    import diffrax._integrate

    assert _interop.TermAndSolverIncompatible is diffrax._integrate.TermAndSolverIncompatible
    assert issubclass(_interop.TermAndSolverIncompatible, ValueError)


def test_wrapped_terms_expose_the_term_they_wrap():
    # diffrax wraps every term before a step (time reversal) and for BacksolveAdjoint;
    # the term check looks through wrappers by their `term` attribute.
    from diffrax._term import AdjointTerm, WrapTerm

    term = diffrax.ODETerm(lambda t, y, a: -y)
    assert WrapTerm(term, -1).term is term
    assert "term" in {f.name for f in dataclasses.fields(AdjointTerm)}
    _interop.check_ode_term(WrapTerm(term, 1), "taylorode.Taylor")
    path = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(), key=jax.random.PRNGKey(0))
    with pytest.raises(_interop.TermAndSolverIncompatible, match="ODETerm"):
        _interop.check_ode_term(WrapTerm(diffrax.ControlTerm(lambda t, y, a: y, path), 1), "taylorode.Taylor")


def test_tolerance_channel_fills_the_slot():
    # diffeqsolve fills an implicit solver's root-finder slots marked "from the
    # controller" with the adaptive controller's rtol/atol/norm.
    slot = _interop.tolerance_slot()
    assert _interop.filled_tolerances(slot) is None
    assert _interop.filled_tolerances(_interop.no_tolerances()) is None
    # Observed through Taylor(), whose order comes from the filled rtol.
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: -y), taylorode.Taylor(), 0.0, 1.0, None, jnp.array(1.0),
        stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-9),
        saveat=diffrax.SaveAt(t1=True, solver_state=True),
    )
    # ceil(-ln(1e-7)/2 + 1), after a first step at the start order 4.
    assert set(taylorode.order_counts(sol)) == {4, 10}


def test_controller_gets_the_solver_s_func_and_error():
    # diffeqsolve hands the controller `solver.func` (the protocol's TaylorFunc) and the
    # solver's `y_error` (NaN replaced by inf, nothing else).
    seen = {}

    class Spy(diffrax.PIDController):
        def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
            seen["func"] = func
            return super().init(terms, t0, t1, y0, dt0, args, func, error_order)

    solver = taylorode.Taylor(order=6)
    diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: -y), solver, 0.0, 1.0, None, jnp.array(1.0),
        stepsize_controller=Spy(rtol=1e-6, atol=1e-6),
    )
    func = seen["func"]
    assert isinstance(func, taylorode._protocol.TaylorFunc) and func.jorba_zou_estimate
    assert float(func(diffrax.ODETerm(lambda t, y, a: -y), 0.0, jnp.array(2.0), None)) == -2.0


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0


def test_private_diffrax_names_only_in_interop():
    users = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        for module, _ in _imports(p)
        if module.startswith("diffrax._")
    }
    assert users == {"_interop.py"}


def test_no_frame_inspection():
    for p in PACKAGE.rglob("*.py"):
        text = p.read_text()
        for needle in ("currentframe", "f_back", "_getframe", "f_locals", "__self__"):
            assert needle not in text, (p, needle)


def test_controllers_import_no_solver():
    for p in (PACKAGE / "_step_size_controller").rglob("*.py"):
        for module, level in _imports(p):
            assert "_solver" not in module and "taylor" != module.split(".")[-1], (p, module)
