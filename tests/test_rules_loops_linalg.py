"""Loops and linear algebra in the recurrence engine: `lax.scan` (so `lax.fori_loop` with
static bounds, `jnp.polyval`, `bessel_jn`), `custom_linear_solve` (`jnp.linalg.solve`,
`jnp.linalg.inv`), `lu`, `triangular_solve`, `cholesky`, `eigh` and `expm`, each against
the jvp tower (an independent reference that follows JAX's own derivative rules), and
whole solves against scipy's DOP853 at 1e-13 on a NumPy version of the field, or the
exact solution. Also: a Newton `while_loop` wrapped so that its series comes from the
implicit function theorem (the recipe of docs/api/custom-rules.md), the error for a bare
`while_loop`, and where that error points when scalar batching has rewritten the field.
"""

import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax import lax
from scipy.integrate import solve_ivp

import taylorode
from taylorode._coefficients import _batching, recurrence
from taylorode._coefficients.jvp import JvpMethod
from taylorode._coefficients.recurrence import RecurrenceMethod

from .test_rules_crosscheck import _compiler_options


ORDER = 5
REC = RecurrenceMethod(batch_scalars=False)
JVP = JvpMethod()
TOL = 1e-8
Y3 = np.array([0.3, -0.5, 0.7])
M3 = np.array([[2.0, 0.3, -0.1], [0.2, 1.5, 0.4], [-0.3, 0.1, 1.8]])


def _recording_rules(monkeypatch) -> set:
    """Names of the primitives the engine looks up a rule for (those applied to a series)."""
    used = set()
    lookup = recurrence._rule

    def recording(eqn, site=None):
        used.add(eqn.primitive.name)
        return lookup(eqn, site)

    monkeypatch.setattr(recurrence, "_rule", recording)
    return used


def _against_tower(field, y0, ref_field=None, t0=0.1, order=ORDER, rtol=1e-10):
    """The engine's coefficients of y' = field(t, y) against the jvp tower's (of
    `ref_field` if given), relative to each order's largest coefficient."""

    @jax.jit(compiler_options=_compiler_options())
    def both(t0, y0):
        rec = jnp.stack(REC.expand(lambda t, y, a: field(t, y), t0, y0, None, order))
        ref = jnp.stack(JVP.expand(lambda t, y, a: (ref_field or field)(t, y), t0, y0, None, order))
        return rec, ref

    rec, ref = (np.asarray(x) for x in both(jnp.asarray(t0), jnp.asarray(y0)))
    assert np.all(np.isfinite(ref))
    assert np.max(np.abs(ref[order])) > 1e-12 * np.max(np.abs(ref)), "(nearly) a polynomial"
    for k in range(order + 1):
        scale = np.max(np.abs(ref[k]))
        err = np.max(np.abs(rec[k] - ref[k]))
        assert err <= rtol * scale, f"order {k} off by {err:.2e} (relative {err / scale:.2e})"
    return rec


# --- loops ------------------------------------------------------------------------------


def _fori(t, y):
    return lax.fori_loop(0, 4, lambda i, c: jnp.sin(c) * y + 0.1 * i * t, y)


def _polyval(t, y):
    # Constant coefficients at a state-dependent point, and state-dependent coefficients.
    return jnp.polyval(jnp.array([0.3, -1.0, 0.5, 2.0]), y) + jnp.polyval(y, y[0] + t)


def _scan_xs_ys(t, y):
    # Per-iteration inputs that depend on y, outputs collected, run backwards.
    def body(c, x):
        return jnp.tanh(c) * x[0] + x[1], c * x[1]

    xs = (jnp.array([1.0, 0.5, 2.0]), jnp.stack([jnp.sin(y), y * t, jnp.cos(y)]))
    c, ys = lax.scan(body, y, xs, reverse=True)
    return c + jnp.sum(ys, axis=0)


def _nested(t, y):
    # A loop in a loop, with a custom_jvp function (softplus), a switch and a square
    # root in the body.
    def inner(c):
        return lax.fori_loop(0, 3, lambda j, d: 0.5 * d + jax.nn.softplus(y * d), c)

    def body(i, c):
        c = inner(c)
        return jnp.where(c > 0.6, jnp.sin(c), c * c) + jnp.sqrt(1 + y * y) * t

    return lax.fori_loop(0, 3, body, y)


@pytest.mark.parametrize("field", [_fori, _polyval, _scan_xs_ys, _nested], ids=lambda f: f.__name__[1:])
def test_scan_matches_jvp_tower(field, monkeypatch):
    used = _recording_rules(monkeypatch)
    _against_tower(field, Y3)
    assert "scan" in used


def _j1(x):
    """J_1 by its power series (|x| < 2)."""
    terms = [(-1.0) ** m * (x / 2) ** (2 * m + 1) / float(math.factorial(m) * math.factorial(m + 1)) for m in range(18)]
    return sum(terms)


def test_bessel_jn_matches_its_power_series():
    # bessel_jn is Miller's backward recurrence in a lax.scan: J_1 as a ratio of sums of
    # terms that grow by orders of magnitude, whose cancellation costs digits at each
    # order (about one here: relative 3e-9 at order 5). JAX's own jvp tower of it loses
    # every digit at order 4, so the reference is the power series of J_1.
    y0 = np.array([0.3, -0.5, 0.7])
    _against_tower(lambda t, y: jax.scipy.special.bessel_jn(y, v=2)[1], y0, ref_field=lambda t, y: _j1(y), rtol=1e-8)


def _count_equations(jaxpr) -> int:
    """Equations of a jaxpr, with those of every sub-jaxpr (loop bodies, branches)."""
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else [value]:
                if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    n += _count_equations(sub.jaxpr)
                elif hasattr(sub, "eqns"):
                    n += _count_equations(sub)
    return n


def _loop_field(length):
    def f(t, y, args):
        return lax.fori_loop(0, length, lambda i, c: jnp.sin(c) * y + c * c * 0.1, y)

    return f


def _linalg_field(t, y, args):
    m = _matrix(y)
    w, v = jnp.linalg.eigh(M3 + M3.T + jnp.outer(y, y))
    chol = jnp.linalg.cholesky(M3 @ M3.T + jnp.outer(y, y))
    return jnp.linalg.solve(m, y) + jnp.sum(lax.linalg.lu(m)[0] + chol, axis=0) + w * v[0]


@pytest.mark.parametrize("field", [_loop_field(10), _linalg_field], ids=["loop", "linalg"])
def test_program_grows_linearly_in_the_order(field, monkeypatch):
    # Counted with the equations inside every sub-jaxpr (loop bodies included), the
    # program grows by the same amount per order: a loop's body is expanded once per
    # order inside a scan over the iterations, and every rule adds O(1) operations.
    # (Sums over arrays of a few elements, and sums of up to `WRITTEN_OUT_TERMS` terms,
    # are written out term by term, by design, so those are disabled here.)
    from taylorode._coefficients import _series

    monkeypatch.setattr(_series, "UNSTACKED_SIZE", 0)
    monkeypatch.setattr(_series, "WRITTEN_OUT_TERMS", _series.UNSTACKED_TERMS)

    def size(order, f=field):
        fn = lambda y: taylorode.taylor_coefficients(f, 0.0, y, None, order)
        return _count_equations(jax.make_jaxpr(fn)(jnp.asarray(Y3)).jaxpr)

    s8, s16, s24 = size(8), size(16), size(24)
    assert s24 - s16 == s16 - s8
    if field is not _linalg_field:
        assert size(16, _loop_field(50)) == s16  # whatever the number of iterations


def test_switches_and_checks_inside_a_loop():
    # A switch inside the body gives one switching function per iteration; a square
    # root of a series that starts at zero inside the body marks the expansion invalid.
    def switching(t, y, args):
        return lax.fori_loop(0, 3, lambda i, c: jnp.where(c > 0.4, jnp.sin(c), c) * y, y)

    coeffs, switches = REC.expand_with_switches(switching, 0.0, jnp.asarray(Y3), None, 4)
    assert switches.coeffs.shape == (4, 3 * 3)
    assert np.all(np.isfinite(np.asarray(switches.coeffs)))

    def singular(t, y, args):
        return lax.fori_loop(0, 2, lambda i, c: c + jnp.sqrt(y - y[0] + t), y)

    coeffs = REC.expand(singular, 0.0, jnp.asarray(Y3), None, 3)
    assert not np.all(np.isfinite(np.asarray(coeffs[-1])))


def test_unseen_switches_inside_a_loop_are_evaluated():
    grid = jnp.linspace(-1.0, 1.0, 9)

    def field(t, y, args):
        return lax.fori_loop(0, 2, lambda i, c: 0.5 * c + 0.1 * jnp.searchsorted(grid, c + t).astype(c.dtype), y)

    y0 = jnp.array([0.3, -0.5])
    a = RecurrenceMethod().discrete_signature(field, 0.0, y0, None)
    b = RecurrenceMethod().discrete_signature(field, 0.2, y0, None)
    assert a.shape == (4,) and not np.array_equal(a, b)


# --- linear algebra ---------------------------------------------------------------------


def _matrix(y):
    return M3 + jnp.diag(jnp.sin(y)) + 0.1 * jnp.outer(y, y)


LINALG = {
    "solve": lambda t, y: jnp.linalg.solve(_matrix(y), jnp.cos(y) + t),
    "solve_matrix_rhs": lambda t, y: jnp.linalg.solve(_matrix(y), jnp.outer(y, y) + M3)[:, 0],
    "solve_constant_matrix": lambda t, y: jnp.linalg.solve(M3, jnp.sin(y)),
    "inv": lambda t, y: jnp.linalg.inv(_matrix(y)) @ y,
    "lu": lambda t, y: jnp.sum(lax.linalg.lu(_matrix(y))[0], axis=0),
    "cholesky": lambda t, y: jnp.sum(jnp.linalg.cholesky(M3 @ M3.T + jnp.outer(y, y)), axis=0),
    "triangular_left": lambda t, y: lax.linalg.triangular_solve(_matrix(y), jnp.outer(y, y) + 1, left_side=True, lower=True)[:, 0],
    "triangular_right_transposed_unit": lambda t, y: lax.linalg.triangular_solve(
        _matrix(y), jnp.outer(y, y) + 1, left_side=False, lower=False, transpose_a=True, unit_diagonal=True
    )[:, 1],
    "eigh": lambda t, y: (lambda w, v: w * v[0] ** 2)(*jnp.linalg.eigh(M3 + M3.T + jnp.outer(y, y))),
}
LINALG_PRIMITIVE = {
    "solve": "custom_linear_solve", "solve_matrix_rhs": "custom_linear_solve",
    "solve_constant_matrix": "custom_linear_solve", "inv": "custom_linear_solve", "lu": "lu",
    "cholesky": "cholesky", "triangular_left": "triangular_solve",
    "triangular_right_transposed_unit": "triangular_solve", "eigh": "eigh",
}


@pytest.mark.parametrize("name", list(LINALG))
def test_linalg_matches_jvp_tower(name, monkeypatch):
    used = _recording_rules(monkeypatch)
    _against_tower(LINALG[name], Y3)
    assert LINALG_PRIMITIVE[name] in used


def test_eigh_of_complex_hermitian_matches_jvp_tower():
    h = M3 + 1j * (M3 - M3.T)

    def field(t, y):
        w, v = jnp.linalg.eigh(h + h.conj().T + jnp.outer(y, y.conj()))
        return w + jnp.abs(v[0]) ** 2  # the eigenvectors' phases are a convention

    _against_tower(lambda t, y: field(t, y).astype(y.dtype), Y3 + 0.2j * Y3[::-1])


def test_eigh_at_a_repeated_eigenvalue_is_invalid():
    def field(t, y, args):
        return jnp.linalg.eigh(jnp.diag(jnp.array([y[0], y[0], 2.0])) + 0.1 * t)[0]

    coeffs = REC.expand(field, 0.0, jnp.array([1.0, 0.5, 0.2]), None, 3)
    assert not np.all(np.isfinite(np.asarray(coeffs[-1])))


def test_gradients_through_loops_and_linear_algebra():
    # Reverse mode through the coefficients, against the jvp tower's. (jnp.linalg.solve
    # factorises behind a stop_gradient: each order's solve must be the primitive itself,
    # whose own rules carry the derivative through the matvec.)
    def field(t, y, a):
        m = M3 + jnp.diag(jnp.sin(y)) * a
        z = lax.fori_loop(0, 2, lambda i, c: jnp.sin(c) * y * a, y)
        out = jnp.linalg.solve(m, z) + jnp.sum(lax.linalg.lu(m)[0], axis=0)
        out = out + lax.linalg.triangular_solve(m, jnp.outer(y, z) + 1, left_side=True, lower=True)[:, 0]
        out = out + jnp.sum(jnp.linalg.cholesky(M3 @ M3.T + a * jnp.outer(y, y)), axis=0)
        w, v = jnp.linalg.eigh(M3 + M3.T + a * jnp.outer(y, y))
        return out + w * v[0] ** 2

    def loss(method):
        return lambda y, a: jnp.sum(taylorode.taylor_coefficients(field, 0.0, y, a, 3, method=method) ** 2)

    y0, a = jnp.array([0.3, -0.6, 0.4]), jnp.array(1.2)
    grad = jax.jit(jax.grad(loss("recurrence"), argnums=(0, 1)), compiler_options=_compiler_options())(y0, a)
    ref = jax.jit(jax.grad(loss("jvp"), argnums=(0, 1)), compiler_options=_compiler_options())(y0, a)
    for g, r in zip(grad, ref):
        np.testing.assert_allclose(g, r, rtol=1e-11)


# --- Newton loops through the implicit function theorem -------------------------------


def _newton(M, e):
    def newton(state):
        E, _, n = state
        step = (E - e * jnp.sin(E) - M) / (1 - e * jnp.cos(E))
        return E - step, step, n + 1

    def not_converged(state):
        E, step, n = state
        return (n < 50) & jnp.any(jnp.abs(step) > 1e-15 * (1 + jnp.abs(E)))

    E, _, _ = lax.while_loop(not_converged, newton, (M, jnp.ones_like(M), 0))
    return E


# The recipe of docs/api/custom-rules.md, both ways: a JVP from the implicit function
# theorem (the engine derives every order from it), and a Taylor rule of order k.
anomaly_jvp = taylorode.custom_taylor(_newton)


@anomaly_jvp.defjvp
def _(primals, tangents):
    (M, e), (dM, de) = primals, tangents
    E = anomaly_jvp(M, e)
    return E, (dM + jnp.sin(E) * de) / (1 - e * jnp.cos(E))


anomaly_rule = taylorode.custom_taylor(_newton)


@anomaly_rule.def_taylor
def _(k, inputs, E):
    M, e = inputs
    s, c = [jnp.sin(E[0])], [jnp.cos(E[0])]
    for j in range(1, k):
        s.append(taylorode.series.derivative_conv(E, c, j))
        c.append(-taylorode.series.derivative_conv(E, s, j))
    s_k = taylorode.series.derivative_conv(E + [jnp.zeros_like(E[0])], c, k)
    es_k = taylorode.series.cauchy(e, s + [s_k], k)
    return (M[k] + es_k) / (1 - e[0] * c[0])


ECC = 0.6


@pytest.mark.parametrize("anomaly", [anomaly_jvp, anomaly_rule], ids=["jvp", "def_taylor"])
def test_newton_loop_via_implicit_function_theorem(anomaly):
    _against_tower(lambda t, y: jnp.stack([anomaly(y[0], ECC), anomaly(y[0] + 0.1 * y[1], ECC + 0.1 * y[1])]),
                   np.array([0.8, 0.4]), order=4)
    E0, x0, t1 = 0.4, 0.2, 2.5
    y0 = jnp.array([E0 - ECC * np.sin(E0), x0])
    sol = _taylor(lambda t, y, a: jnp.stack([1 - ECC * jnp.cos(anomaly(y[0], ECC)), jnp.sin(anomaly(y[0], ECC))]), t1, y0)
    exact = np.array([E0 + t1 - ECC * np.sin(E0 + t1), x0 + np.cos(E0) - np.cos(E0 + t1)])
    assert np.max(np.abs(np.asarray(sol.ys[-1]) - exact)) < TOL


def test_recipe_in_the_docs():
    # The code of docs/api/custom-rules.md as written: its def_taylor rule (used by the
    # engine) against its JVP (used by the jvp tower).
    import pathlib
    import re

    page = pathlib.Path(__file__).parents[1] / "docs" / "api" / "custom-rules.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(block, namespace)
    anomaly = namespace["eccentric_anomaly"]
    _against_tower(lambda t, y: jnp.stack([anomaly(y[0] + t, 0.5 + 0.1 * y[1]), anomaly(y[1], 0.5)]), np.array([0.8, 0.4]), order=4)


def test_while_loop_error_points_to_the_recipe():
    def field(t, y, args):
        return _newton(y, 0.5)

    with pytest.raises(taylorode.TaylorRuleError, match=r"'while', used at .*test_rules_loops_linalg.py:\d+.*custom_taylor.*custom-rules.md"):
        taylorode.taylor_coefficients(field, 0.0, jnp.array([0.3, 0.2]), None, 3)


def test_error_names_the_users_line_after_scalar_batching():
    # Written one scalar at a time, so that scalar batching rewrites the field: the error
    # still names the line of the field, as without batching.
    def field(t, y, args):
        a, b, c = y[0], y[1], y[2]
        m = jnp.array([[1 + a * a, b * c], [b * c, 2 + jnp.sin(b)]])
        rhs = jnp.array([jnp.cos(a) * b, jnp.sin(c) * a])
        z = lax.while_loop(lambda z: z[0] < 0, lambda z: z + 1.0, rhs)  # the line named
        v = jnp.linalg.solve(m, z)
        return jnp.stack([v[0] * a, v[1] * b, a * b - c * jnp.cos(c)])

    y0 = jnp.array([0.3, 0.2, 0.1])
    closed = jax.make_jaxpr(lambda y: field(0.0, y, None))(y0)
    assert _batching.worth_batching(closed.jaxpr)  # the rewrite happens
    line = field.__code__.co_firstlineno + 4
    for method in (RecurrenceMethod(), RecurrenceMethod(batch_scalars=False)):
        with pytest.raises(taylorode.TaylorRuleError, match=rf"'while', used at .*test_rules_loops_linalg.py:{line} \(.*field\)"):
            taylorode.taylor_coefficients(field, 0.0, y0, None, 3, method=method)


# --- whole solves -----------------------------------------------------------------------


# The whole solves check the rules inside a solve, not the order `Taylor()` would pick at
# 1e-10 (13): a fixed order 8 at the same tolerance compiles a smaller program (expm's
# switch among its Pade degrees is expanded once per order) and takes a few more steps.
SOLVE_ORDER = 8


def _taylor(field, t1, y0):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field), taylorode.Taylor(order=SOLVE_ORDER), 0.0, t1, None, jnp.asarray(y0),
        stepsize_controller=taylorode.TaylorController(rtol=1e-10, atol=1e-10),
    )


def _scipy(field, t1, y0):
    return solve_ivp(field, (0.0, t1), np.asarray(y0), method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]


def _assert_solves(field, np_field, t1, y0):
    err = np.max(np.abs(np.asarray(_taylor(field, t1, y0).ys[-1]) - _scipy(np_field, t1, y0)))
    assert err < TOL, err


def test_solve_fori_loop_field():
    # y' = g(g(g(y))) - y with g(c) = 0.5 sin(c) + 0.3 y c, a loop of three iterations.
    def field(t, y, args):
        return lax.fori_loop(0, 3, lambda i, c: 0.5 * jnp.sin(c) + 0.3 * y * c, y) - y

    def np_field(t, y):
        c = y
        for _ in range(3):
            c = 0.5 * np.sin(c) + 0.3 * y * c
        return c - y

    _assert_solves(field, np_field, 2.0, np.array([0.5, -0.8]))


def test_solve_polyval_field():
    p = np.array([0.1, -0.3, 0.2, -1.0, 0.4])

    def field(t, y, args):
        return jnp.polyval(jnp.asarray(p), y) * jnp.cos(t)

    _assert_solves(field, lambda t, y: np.polyval(p, y) * np.cos(t), 2.0, np.array([0.3, -0.4]))


def _mass(y, xp):
    return xp.array([[2.0 + xp.sin(y[0]), 0.3 * y[1]], [0.3 * y[1], 1.5 + y[0] ** 2]])


def test_solve_mass_matrix_field():
    # M(y) y' = f(t, y), with jnp.linalg.solve in the field.
    def rhs(t, y, xp):
        return xp.stack([y[1], -xp.sin(y[0]) + 0.2 * xp.cos(t)])

    def field(t, y, args):
        return jnp.linalg.solve(_mass(y, jnp), rhs(t, y, jnp))

    def np_field(t, y):
        return np.linalg.solve(_mass(y, np), rhs(t, y, np))

    _assert_solves(field, np_field, 3.0, np.array([0.8, 0.1]))


def _pendulum_system(y, xp):
    """The double pendulum (unit lengths and masses, g = 9.81) as a 2x2 linear system
    for the angular accelerations."""
    th1, th2, w1, w2 = y
    d, g = th1 - th2, 9.81
    m = xp.array([[2.0, xp.cos(d)], [xp.cos(d), 1.0]])
    b = xp.stack([-(w2**2) * xp.sin(d) - 2 * g * xp.sin(th1), w1**2 * xp.sin(d) - g * xp.sin(th2)])
    return m, b


def test_solve_double_pendulum():
    def field(t, y, args):
        m, b = _pendulum_system(y, jnp)
        return jnp.concatenate([y[2:], jnp.linalg.solve(m, b)])

    def np_field(t, y):
        m, b = _pendulum_system(y, np)
        return np.concatenate([y[2:], np.linalg.solve(m, b)])

    _assert_solves(field, np_field, 2.0, np.array([1.0, -0.5, 0.0, 0.3]))


def test_solve_inverse_field():
    a = np.array([[0.0, 1.0], [-1.0, -0.1]])

    def matrix(y, xp):
        return np.eye(2) * 2 + a * xp.cos(y[0]) + 0.2 * xp.outer(y, y)

    def field(t, y, args):
        return jnp.linalg.inv(matrix(y, jnp)) @ jnp.stack([y[1], -y[0]])

    def np_field(t, y):
        return np.linalg.inv(matrix(y, np)) @ np.array([y[1], -y[0]])

    _assert_solves(field, np_field, 3.0, np.array([0.6, -0.2]))


@pytest.mark.slow
def test_solve_expm_field():
    # expm is a scaling-and-squaring Pade approximant: a norm, a searchsorted, a switch
    # among the Pade degrees, an LU solve and a fori_loop of squarings.
    a = np.array([[0.0, 1.0], [-1.0, 0.0]])

    def field(t, y, args):
        return jax.scipy.linalg.expm(0.5 * a * jnp.sin(y[0])) @ jnp.stack([y[1], -0.5 * y[0]])

    def np_field(t, y):
        return scipy.linalg.expm(0.5 * a * np.sin(y[0])) @ np.array([y[1], -0.5 * y[0]])

    _assert_solves(field, np_field, 2.0, np.array([0.7, 0.1]))
