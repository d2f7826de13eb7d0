"""Sensitivities through Taylor solves: gradients, Jacobians, Hessians and
Hessian-vector products with each of diffrax's adjoints, against finite differences and
diffrax's Dopri8; `lax.switch`-over-orders seed patterns under `vmap`; the
parameter-fitting example.

(`test_transforms.py` has RecursiveCheckpoint/Backsolve gradients and a ForwardMode
Jacobian for a pendulum with `PIDController`; here: `TaylorController`, all adjoints,
DirectAdjoint with `PIDController`, argument PyTrees, second derivatives,
`HermiteObreschkoff`.)

Which transformation works with which adjoint (diffrax 0.7.2, jax 0.10.2), through
taylorode's solvers; the "no"s are checked by `test_unsupported_transform_raises`, the
"yes"es by the other tests:

| adjoint                    | grad, jacrev | jacfwd, jvp | hessian = jacfwd(jacrev), jvp(grad) | jacfwd(jacfwd) | jacrev(jacrev) |
|----------------------------|:---:|:---:|:---:|:---:|:---:|
| RecursiveCheckpointAdjoint | yes | no (1) | yes (*) | no (1) | no (2) |
| DirectAdjoint              | yes | yes | yes | yes | yes |
| BacksolveAdjoint           | yes | no (1) | no (1) | no (1) | no (3) |
| ForwardMode                | no (2) | yes | no (2) | yes | no (2) |

(1) TypeError: can't apply forward-mode autodiff (jvp) to a custom_vjp function.
(2) ValueError: Reverse-mode differentiation does not work for lax.while_loop or
    lax.fori_loop with dynamic start/stop values.
(3) RuntimeError: Unexpected tangent. `*args` and `**kwargs` to `filter_custom_vjp`
    cannot be autodifferentiated.
(*) Forward-over-reverse through RecursiveCheckpointAdjoint works with taylorode's
    `Taylor` and `HermiteObreschkoff`, but not with diffrax's Runge-Kutta solvers
    (Dopri5, Dopri8, Kvaerno5 raise (1)): their `step` runs its stages in a checkpointed
    `eqxi.while_loop` (diffrax/_solver/runge_kutta.py), a custom_vjp that the outer jvp
    meets; the adjoint's own checkpointed loop is differentiated forward-over-reverse
    fine. All the "no"s are the same with diffrax's solvers.

So Hessians and Hessian-vector products: with `DirectAdjoint` (any composition),
`ForwardMode` (jacfwd of jacfwd), or with `RecursiveCheckpointAdjoint` forward over
reverse (`jax.hessian`, `jax.jvp(jax.grad(f), ...)`).
"""

import functools
import importlib.util
import pathlib

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import taylorode


# --- the problem -------------------------------------------------------------------
# A forced, damped Duffing oscillator; z = (x0, v0, k, c) holds the initial values and
# the parameters, the loss depends nonlinearly on the final state.

T1 = 2.0
Z = jnp.array([1.0, 0.2, 1.5, 0.2])
V = jnp.array([0.3, -0.7, 0.5, 1.1])  # direction of the Hessian-vector product


def duffing(t, y, args):
    x, v = y[0], y[1]
    return jnp.stack([v, -args["k"] * x - args["c"] * v - 0.3 * x**3 + 0.1 * jnp.sin(t)])


def split(z):
    return z[:2], {"k": z[2], "c": z[3]}


def final_state(z, adjoint=diffrax.RecursiveCheckpointAdjoint(), *, solver=None, tol=1e-10):
    """The state at T1: Taylor(5) with TaylorController at rtol = atol = tol, or the
    `solver` given (Dopri8 for a reference) with diffrax's PIDController."""
    y0, args = split(z)
    if solver is None:
        solver, controller = taylorode.Taylor(5), taylorode.TaylorController(rtol=tol, atol=tol)
    else:
        controller = diffrax.PIDController(rtol=tol, atol=tol)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(duffing), solver, 0.0, T1, None, y0, args=args,
        stepsize_controller=controller, adjoint=adjoint, max_steps=4096,
    )
    return sol.ys[-1]


def loss_of_final(yT):
    return yT[0] ** 2 + 0.5 * yT[1] + jnp.sin(yT[0] * yT[1])


def loss(z, adjoint=diffrax.RecursiveCheckpointAdjoint(), **kwargs):
    return loss_of_final(final_state(z, adjoint, **kwargs))


RC = diffrax.RecursiveCheckpointAdjoint()
DIRECT = diffrax.DirectAdjoint()
BACKSOLVE = diffrax.BacksolveAdjoint()
FORWARD = diffrax.ForwardMode()
ADJOINTS = {"recursive-checkpoint": RC, "direct": DIRECT, "backsolve": BACKSOLVE, "forward": FORWARD}


# --- references: central differences of a tight Taylor solve, and Dopri8 ---------------

FD_EPS = 1e-6  # first derivatives: truncation ~ eps^2, round-off ~ 1e-14 / eps
FD_EPS2 = 1e-4  # second derivatives: truncation ~ eps^2, round-off ~ 1e-14 / eps^2


@pytest.fixture(scope="module")
def reference():
    """Finite-difference Jacobian (of the final state), gradient and Hessian (of the
    loss) from Taylor(8) at tol 1e-14, all points in one vmapped solve; and the
    Jacobian and gradient from Dopri8 (ForwardMode) at tol 1e-13."""
    n = Z.size
    eye = np.eye(n)
    e1, e2 = FD_EPS * eye, FD_EPS2 * eye
    points = [Z + e1[i] for i in range(n)] + [Z - e1[i] for i in range(n)]
    signs = [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    points += [Z + a * e2[i] + b * e2[j] for i in range(n) for j in range(n) for a, b in signs]
    tight = jax.jit(jax.vmap(_tight_final_state))
    ys = np.asarray(tight(jnp.stack(points)))
    losses = np.asarray(jax.vmap(loss_of_final)(jnp.asarray(ys)))
    jac = (ys[:n] - ys[n : 2 * n]).T / (2 * FD_EPS)
    grad = (losses[:n] - losses[n : 2 * n]) / (2 * FD_EPS)
    quad = losses[2 * n :].reshape(n, n, 4)
    hess = (quad[..., 0] - quad[..., 1] - quad[..., 2] + quad[..., 3]) / (4 * FD_EPS2**2)

    dopri = jax.jit(
        lambda z: (
            final_state(z, FORWARD, solver=diffrax.Dopri8(), tol=1e-13),
            jax.jacfwd(lambda z: final_state(z, FORWARD, solver=diffrax.Dopri8(), tol=1e-13))(z),
        )
    )
    yT, dopri_jac = dopri(Z)
    dopri_grad = jax.grad(loss_of_final)(yT) @ dopri_jac
    return dict(
        jac=jac, grad=grad, hess=hess, dopri_jac=np.asarray(dopri_jac), dopri_grad=np.asarray(dopri_grad)
    )


def _tight_final_state(z):
    """Taylor(8) with TaylorController at tol 1e-14."""
    y0, args = split(z)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(duffing), taylorode.Taylor(8), 0.0, T1, None, y0, args=args,
        stepsize_controller=taylorode.TaylorController(rtol=1e-14, atol=1e-14), max_steps=4096,
    )
    return sol.ys[-1]


def test_references_agree(reference):
    # Two independent references (Taylor FD, Dopri8 forward mode) agree: they can judge.
    np.testing.assert_allclose(reference["jac"], reference["dopri_jac"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(reference["grad"], reference["dopri_grad"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(reference["hess"], reference["hess"].T, atol=1e-6)


# --- first derivatives -----------------------------------------------------------------


@functools.cache
def plain_loss_fn():
    return jax.jit(loss)


def tree_loss(params, adjoint):
    """The loss with the arguments as a PyTree: (y0, {"k": k, "c": c})."""
    y0, args = params
    return loss(jnp.concatenate([y0, jnp.stack([args["k"], args["c"]])]), adjoint)


@pytest.mark.parametrize("adjoint_name", ["recursive-checkpoint", "direct", "backsolve"])
def test_value_and_grad_each_adjoint(adjoint_name, reference):
    # Also seed pattern (b): `jax.value_and_grad` of a loss through a solve, value and
    # gradient from one pass, with a PyTree of arguments: the value is the plain loss,
    # the gradient the central differences and Dopri8's, leaf by leaf.
    params = split(Z)
    value, grads = jax.jit(
        jax.value_and_grad(functools.partial(tree_loss, adjoint=ADJOINTS[adjoint_name]))
    )(params)
    np.testing.assert_allclose(float(value), float(plain_loss_fn()(Z)), rtol=1e-12)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    grad = np.concatenate([np.asarray(grads[0]), [float(grads[1]["k"]), float(grads[1]["c"])]])
    np.testing.assert_allclose(grad, reference["grad"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad, reference["dopri_grad"], rtol=1e-6, atol=1e-8)


def test_gradient_pid_controller_direct_adjoint(reference):
    # diffrax's own controller with Taylor (error_order = order).
    grad = jax.jit(jax.grad(lambda z: loss(z, DIRECT, solver=taylorode.Taylor(7), tol=1e-11)))(Z)
    np.testing.assert_allclose(np.asarray(grad), reference["grad"], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "transform,adjoint_name",
    [(jax.jacrev, "recursive-checkpoint"), (jax.jacfwd, "forward")],
    ids=["jacrev-recursive-checkpoint", "jacfwd-forward-mode"],
)
def test_jacobian_of_final_state(transform, adjoint_name, reference):
    jac = jax.jit(transform(functools.partial(final_state, adjoint=ADJOINTS[adjoint_name])))(Z)
    assert jac.shape == (2, 4)
    np.testing.assert_allclose(np.asarray(jac), reference["jac"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.asarray(jac), reference["dopri_jac"], rtol=1e-6, atol=1e-8)


# --- second derivatives ----------------------------------------------------------------


@functools.cache
def hessian_fn(kind):
    if kind == "hessian-direct":  # jacfwd(jacrev) over DirectAdjoint
        return jax.jit(jax.hessian(functools.partial(loss, adjoint=DIRECT)))
    if kind == "hessian-recursive-checkpoint":  # forward-over-reverse works with RC too
        return jax.jit(jax.hessian(functools.partial(loss, adjoint=RC)))
    if kind == "jacfwd-jacfwd-forward-mode":
        return jax.jit(jax.jacfwd(jax.jacfwd(functools.partial(loss, adjoint=FORWARD))))
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind", ["hessian-direct", "hessian-recursive-checkpoint", "jacfwd-jacfwd-forward-mode"]
)
def test_hessian(kind, reference):
    hess = np.asarray(hessian_fn(kind)(Z))
    assert hess.shape == (4, 4)
    np.testing.assert_allclose(hess, hess.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(hess, reference["hess"], rtol=1e-5, atol=1e-6)
    if kind != "hessian-direct":
        np.testing.assert_allclose(hess, np.asarray(hessian_fn("hessian-direct")(Z)), rtol=1e-8, atol=1e-10)


def test_hessian_vector_product_direct_adjoint(reference):
    grad = jax.grad(functools.partial(loss, adjoint=DIRECT))
    hvp = jax.jit(lambda z, v: jax.jvp(grad, (z,), (v,)))
    g, hv = hvp(Z, V)
    np.testing.assert_allclose(np.asarray(g), reference["grad"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.asarray(hv), reference["hess"] @ np.asarray(V), rtol=1e-5, atol=1e-6)
    hess = np.asarray(hessian_fn("hessian-direct")(Z))
    np.testing.assert_allclose(np.asarray(hv), hess @ np.asarray(V), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "adjoint_name,transform,error,match",
    [
        ("recursive-checkpoint", jax.jacfwd, TypeError, "forward-mode autodiff"),
        ("recursive-checkpoint", lambda f: jax.jacrev(jax.jacrev(f)), ValueError, "Reverse-mode differentiation"),
        ("backsolve", jax.jacfwd, TypeError, "forward-mode autodiff"),
        ("backsolve", jax.hessian, TypeError, "forward-mode autodiff"),
        ("forward", jax.grad, ValueError, "Reverse-mode differentiation"),
    ],
    ids=["rc-jacfwd", "rc-jacrev-jacrev", "backsolve-jacfwd", "backsolve-hessian", "forward-grad"],
)
def test_unsupported_transform_raises(adjoint_name, transform, error, match):
    # Raised while tracing (no compilation): the module docstring's table, its "no"s.
    f = transform(functools.partial(loss, adjoint=ADJOINTS[adjoint_name]))
    with pytest.raises(error, match=match):
        jax.eval_shape(f, Z)


# --- Hermite–Obreschkoff (implicit, stiff) ----------------------------------------------
# A damped linear oscillator x'' = -k x - c x' with c = 50 (eigenvalues -0.08, -49.9):
# exact solution expm(T A) y0, so exact derivatives by finite differences of expm.

HO_T1 = 2.0
HO_Z = np.array([1.0, 0.5, 4.0, 50.0])  # x0, v0, k, c


def ho_loss(z, tol=1e-8):
    y0, args = split(z)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: jnp.stack([y[1], -a["k"] * y[0] - a["c"] * y[1]])),
        taylorode.HermiteObreschkoff(2, 3), 0.0, HO_T1, 0.05, y0, args=args,
        stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol), max_steps=4096,
    )
    yT = sol.ys[-1]
    return yT[0] + 0.5 * yT[1] ** 2


def ho_exact_loss(z):
    A = np.array([[0.0, 1.0], [-z[2], -z[3]]])
    yT = scipy.linalg.expm(HO_T1 * A) @ z[:2]
    return yT[0] + 0.5 * yT[1] ** 2


def test_hermite_obreschkoff_gradient():
    grad = np.asarray(jax.jit(jax.grad(ho_loss))(jnp.asarray(HO_Z)))
    tight = jax.jit(jax.vmap(functools.partial(ho_loss, tol=1e-12)))
    eps = 1e-6
    e = eps * np.eye(4)
    values = np.asarray(tight(jnp.asarray(np.concatenate([HO_Z + e, HO_Z - e]))))
    fd = (values[:4] - values[4:]) / (2 * eps)
    exact = np.array([(ho_exact_loss(HO_Z + e[i]) - ho_exact_loss(HO_Z - e[i])) / (2 * eps) for i in range(4)])
    np.testing.assert_allclose(fd, exact, rtol=1e-6, atol=1e-8)  # the reference is sound
    # The solve at tol 1e-8 differentiates its own discretisation; agreement to ~tol.
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, exact, rtol=1e-5, atol=1e-7)


# --- seed patterns: lax.switch over precompiled orders under vmap -----------------------


def test_vmap_nth_derivative_by_switch():
    # f^(n)(x) with n a traced integer: the derivatives 0..N are built (and compiled)
    # once, `lax.switch` picks one per element of the batch.
    # f(x) = exp(-x) sin(x): f^(n)(x) = 2^(n/2) exp(-x) sin(x + 3 n pi / 4).
    f = lambda x: jnp.exp(-x) * jnp.sin(x)
    derivatives = [f]
    for _ in range(5):
        derivatives.append(jax.grad(derivatives[-1]))

    @jax.jit
    @jax.vmap
    def nth_derivative(n, x):
        return jax.lax.switch(n, derivatives, x)

    ns = jnp.array([0, 3, 1, 5, 2, 4, 0, 5])
    xs = jnp.linspace(-1.0, 2.0, ns.size)
    got = np.asarray(nth_derivative(ns, xs))
    n, x = np.asarray(ns), np.asarray(xs)
    np.testing.assert_allclose(got, 2 ** (n / 2) * np.exp(-x) * np.sin(x + 3 * n * np.pi / 4), rtol=1e-13, atol=1e-14)
    # Derivative-of-the-switch: d/dx f^(n)(x) = f^(n+1)(x), batched.
    dgot = np.asarray(jax.jit(jax.vmap(jax.grad(lambda n, x: jax.lax.switch(n, derivatives, x), argnums=1)))(ns, xs))
    m = n + 1
    np.testing.assert_allclose(dgot, 2 ** (m / 2) * np.exp(-x) * np.sin(x + 3 * m * np.pi / 4), rtol=1e-13, atol=1e-14)


COEFF_ORDERS = (2, 4, 6)


def test_vmap_taylor_coefficients_by_switch():
    # Taylor coefficients of a traced order: one branch per order in a small static
    # set, zero-padded to the largest, chosen by `lax.switch` under `vmap` (over the
    # order index, the expansion time and the state).
    top = max(COEFF_ORDERS)
    args = {"k": jnp.asarray(1.5), "c": jnp.asarray(0.2)}

    def branch(order):
        def coefficients(t0, y0):
            c = taylorode.taylor_coefficients(duffing, t0, y0, args, order)
            return jnp.concatenate([c, jnp.zeros((top - order, *y0.shape), c.dtype)])

        return coefficients

    branches = [branch(q) for q in COEFF_ORDERS]

    @jax.jit
    @jax.vmap
    def coefficients_of_order(index, t0, y0):
        return jax.lax.switch(index, branches, t0, y0)

    index = jnp.array([2, 0, 1, 2, 1, 0])
    t0 = jnp.linspace(0.0, 1.0, index.size)
    y0 = jnp.stack([jnp.linspace(-1.0, 1.0, index.size), jnp.linspace(0.5, -0.3, index.size)], axis=1)
    got = np.asarray(coefficients_of_order(index, t0, y0))
    assert got.shape == (index.size, top + 1, 2)
    for b in range(index.size):
        q = COEFF_ORDERS[int(index[b])]
        fixed = np.asarray(taylorode.taylor_coefficients(duffing, t0[b], y0[b], args, q))
        np.testing.assert_allclose(got[b, : q + 1], fixed, rtol=1e-14, atol=1e-15)
        assert not got[b, q + 1 :].any()
        # and they are the solution's Taylor coefficients: y^[1] = f, x^[k+1] = v^[k]/(k+1)
        np.testing.assert_allclose(got[b, 1], np.asarray(duffing(t0[b], y0[b], args)), rtol=1e-14)
        np.testing.assert_allclose(
            got[b, 2 : q + 1, 0], got[b, 1:q, 1] / np.arange(2, q + 1), rtol=1e-13, atol=1e-15
        )


# --- the parameter-fitting example ------------------------------------------------------

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "parameter_fitting.py"


def test_parameter_fitting_example(tmp_path):
    spec = importlib.util.spec_from_file_location("parameter_fitting", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "fit.png"
    result = example.main(quick=True, out=out)
    losses = result["losses"]
    # The loss falls by at least 100x (from ~0.16 to about the noise variance, 4e-4),
    # and every parameter ends at least 5x closer to the truth than it started.
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] / 100
    assert losses[-1] < 3 * example.NOISE**2
    for name, true in result["true"].items():
        assert abs(result["fitted"][name] - true) < 0.2 * abs(result["initial"][name] - true), name
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
