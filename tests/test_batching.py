"""The scalar-batching pass run before the recurrence engine: it must change the program
shape only, never the values, and must leave vectorised fields alone."""

import re

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import taylorode
from scipy.integrate import solve_ivp
from taylorode._coefficients import _batching
from taylorode._coefficients.recurrence import RecurrenceMethod

from .problems import cube, kepler


def pleiades(t, y, args):
    """Seven bodies in the plane, written body by body with Python loops."""
    x, yy, vx, vy = y[0:7], y[7:14], y[14:21], y[21:28]
    ax, ay = [], []
    for i in range(7):
        axi = ayi = 0.0
        for j in range(7):
            if i != j:
                dx, dy = x[j] - x[i], yy[j] - yy[i]
                r3 = (dx * dx + dy * dy) ** 1.5
                axi = axi + (j + 1) * dx / r3
                ayi = ayi + (j + 1) * dy / r3
        ax.append(axi)
        ay.append(ayi)
    return jnp.concatenate([vx, vy, jnp.stack(ax), jnp.stack(ay)])


PLEIADES_Y0 = jnp.array(
    [3, 3, -1, -3, 2, -2, 2, 3, -3, 2, 0, 0, -4, 4, 0, 0, 0, 0, 0, 1.75, -1.5, 0, 0, 0, -1.25, 1, 0, 0],
    dtype=float,
)


@jax.jit
def _bump(a, b):
    return jnp.exp(-a * a) * b


def mixed(t, y, args, switch=0.0):
    """Per-component scalar code touching many kinds of equations: literals that differ
    between otherwise identical operations, custom_jvp (softplus) and custom_taylor
    functions, where/maximum, integer powers, a jitted helper, time and args.
    `switch` moves the thresholds of the piecewise parts."""
    out = []
    for i in range(4):
        a, b = y[i], y[(i + 1) % 4]
        term = (i + 1.5) * a * b - jax.nn.softplus(b) + cube(a) * args[i]
        term = term + jnp.where(a > 0.1 * i - switch, jnp.sin(a), jnp.maximum(b, 0.3 - switch)) + a**2 * t
        out.append(term + _bump(a, jnp.cos(t + i)))
    return jnp.stack(out)


MIXED_Y0 = jnp.array([0.3, -0.2, 0.5, 0.1])
MIXED_ARGS = jnp.array([1.0, -0.5, 0.25, 2.0])


def _close(a, b, rtol):
    for x, y in zip(a, b):
        scale = float(jnp.max(jnp.abs(y))) + 1e-300
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=rtol * scale)


@pytest.fixture
def always_batch(monkeypatch):
    monkeypatch.setattr(_batching, "MIN_BATCHED", 0)
    monkeypatch.setattr(_batching, "MIN_GROUP", 0)


def test_pairs_alone_are_not_batched():
    # A field written with scalars that pairs its operations (x and y), four pairs: the
    # concatenations that would assemble them cost more than the pairs save, so the
    # field is left as it is; the same operations in a group of four are batched.
    def pairs(t, y, args):
        r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
        return jnp.stack([jnp.sin(y[2]), jnp.sin(y[3]), -y[0] / r3, -y[1] / r3])

    def quads(t, y, args):
        r3 = (y[0] ** 2 + y[1] ** 2 + y[2] ** 2 + y[3] ** 2) ** 1.5
        return jnp.stack([-y[0] / r3, -y[1] / r3, -y[2] / r3, -y[3] / r3])

    y = jnp.array([0.1, 0.2, 0.3, 0.4])
    for field, batched in ((pairs, False), (quads, True)):
        jaxpr = jax.make_jaxpr(field)(0.5, y, None).jaxpr
        sizes = [len(e) for kind, e in _batching._waves(jaxpr) if kind == "group" and len(e) > 1]
        assert sum(sizes) >= _batching.MIN_BATCHED
        assert _batching.worth_batching(jaxpr) == batched, (field.__name__, sizes)


def test_rewrite_batches_a_scalar_loop_field_and_keeps_its_values():
    closed = jax.make_jaxpr(pleiades)(0.0, PLEIADES_Y0, None)
    batched = _batching.batch_scalars(closed, 0.0, PLEIADES_Y0, None)
    arithmetic = {"mul", "sub", "div", "pow"}
    n_scalar = sum(e.primitive.name in arithmetic for e in closed.jaxpr.eqns)
    n_batched = sum(e.primitive.name in arithmetic for e in batched.jaxpr.eqns)
    # 378 scalar products, differences, quotients and powers become one vector
    # operation per wave and kind.
    assert n_scalar == 378 and n_batched <= 6
    y = PLEIADES_Y0 + 0.01 * jnp.arange(28.0)
    ref = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, 0.0, y)
    out = jax.core.eval_jaxpr(batched.jaxpr, batched.consts, 0.0, y)
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(ref[0]), rtol=1e-15)


def _kernels(compiled) -> int:
    """XLA kernels of an optimised program: the kernel-forming instructions outside the
    bodies of fusions (each fusion is one kernel)."""
    text = compiled.as_text()
    fused = set(re.findall(r"\bfusion\(.*?calls=(%[\w.-]+)", text))
    kernel = re.compile(r"^\s*(?:ROOT )?%\S+ = \S+ (fusion|copy|gather|concatenate|slice|dot|reduce)\(", re.M)
    count = 0
    for computation in re.split(r"\n(?=\S)", text):
        name = computation.split(" ", 2)[1] if computation.startswith("ENTRY") else computation.split(" ", 1)[0]
        if name not in fused:
            count += len(kernel.findall(computation))
    return count


def test_scattered_operands_cost_one_kernel_not_one_per_element():
    # Pleiades written with loops reads its operands in scattered orders (x_j - x_i over
    # all pairs). Assembled from a slice per run of consecutive elements, concatenated,
    # such an operand is one XLA:CPU kernel per slice at every order (a concatenation
    # of more than 8 operands is not fused): 495 kernels for three orders, 62 times the
    # vectorised field's. With one gather it is a few times the vectorised field's.
    closed = jax.make_jaxpr(pleiades)(0.0, PLEIADES_Y0, None)
    batched = _batching.batch_scalars(closed, 0.0, PLEIADES_Y0, None)
    widest = max(
        (len(e.invars) for e in batched.jaxpr.eqns if e.primitive.name == "concatenate"), default=0
    )
    assert widest <= _batching.MAX_FUSED_CONCATENATION

    def coefficients(field):
        expand = jax.jit(lambda y: taylorode.taylor_coefficients(field, 0.0, y, None, 3))
        return expand.lower(PLEIADES_Y0).compile()

    vectorised = _kernels(coefficients(vector_pleiades))
    loops = _kernels(coefficients(pleiades))
    assert loops <= 4 * vectorised, (loops, vectorised)


def vector_pleiades(t, y, args):
    """`pleiades`, vectorised: pairwise differences by broadcasting."""
    q = y[:14].reshape(2, 7)
    d = q[:, None, :] - q[:, :, None]
    r2 = jnp.sum(d**2, axis=0) + jnp.eye(7)
    w = jnp.arange(1.0, 8.0)[None, :] * (1 - jnp.eye(7)) * r2**-1.5
    return jnp.concatenate([y[14:], jnp.sum(w[None] * d, axis=2).reshape(-1)])


def test_vectorised_field_passes_through_unchanged():
    y0 = jnp.array([0.5, 0.0, 0.0, 1.7])
    closed = jax.make_jaxpr(kepler)(0.0, y0, None)
    assert _batching.batch_scalars(closed, 0.0, y0, None) is closed


def test_scalar_loop_field_coefficients_match_jvp_tower():
    order = 5
    ref = taylorode.taylor_coefficients(pleiades, 0.0, PLEIADES_Y0, None, order, method="jvp")
    got = taylorode.taylor_coefficients(pleiades, 0.0, PLEIADES_Y0, None, order)
    unbatched = taylorode.taylor_coefficients(
        pleiades, 0.0, PLEIADES_Y0, None, order, method=RecurrenceMethod(batch_scalars=False)
    )
    _close(got, ref, 1e-12)
    _close(got, unbatched, 1e-13)


def test_mixed_scalar_field_matches_jvp_tower(always_batch):
    order = 5
    closed = jax.make_jaxpr(mixed)(0.2, MIXED_Y0, MIXED_ARGS)
    assert _batching.worth_batching(closed.jaxpr)
    ref = taylorode.taylor_coefficients(mixed, 0.2, MIXED_Y0, MIXED_ARGS, order, method="jvp")
    got = taylorode.taylor_coefficients(mixed, 0.2, MIXED_Y0, MIXED_ARGS, order)
    _close(got, ref, 1e-11)


def test_batched_solve_matches_scipy(always_batch):
    # The mixed field solved with Taylor, against scipy DOP853. The thresholds are moved
    # out of the way: no Taylor step sees a branch switch inside it (that needs an
    # event), which is not what this test is about.
    field = lambda t, y, args: mixed(t, y, args, switch=5.0)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), taylorode.Taylor(8), 0.0, 0.5, None, MIXED_Y0, MIXED_ARGS,
        stepsize_controller=diffrax.PIDController(rtol=1e-11, atol=1e-11),
    )
    jit_field = jax.jit(field)
    ref = solve_ivp(
        lambda t, y: np.asarray(jit_field(t, jnp.asarray(y), MIXED_ARGS)), (0.0, 0.5),
        np.asarray(MIXED_Y0), method="DOP853", rtol=1e-13, atol=1e-13,
    )
    np.testing.assert_allclose(np.asarray(sol.ys[-1]), ref.y[:, -1], atol=1e-9)


def test_batched_coefficients_differentiate(always_batch):
    # Gradient of a high coefficient with respect to the args, against central
    # differences: the rewritten program is differentiable like the original.
    def top(args):
        return jnp.sum(taylorode.taylor_coefficients(mixed, 0.2, MIXED_Y0, args, 4)[-1])

    grad = jax.jit(jax.grad(top))(MIXED_ARGS)
    top = jax.jit(top)
    eps = 1e-6
    fd = [
        (float(top(MIXED_ARGS.at[i].add(eps))) - float(top(MIXED_ARGS.at[i].add(-eps)))) / (2 * eps)
        for i in range(4)
    ]
    np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-8)
