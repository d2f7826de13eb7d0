"""A stiff reaction-diffusion PDE by the method of lines, with banded Newton matrices.

The Brusselator in one space dimension (Hairer & Wanner II, IV.1),

    u_t = 1 + u^2 v - 4u + alpha u_xx,    v_t = 3u - u^2 v + alpha v_xx,    alpha = 1/50,

on x in [0, 1] with u = 1, v = 3 at both ends and u(x, 0) = 1 + sin(2 pi x), v(x, 0) = 3,
discretised on N interior points by central differences. The Laplacian makes the system
stiff (eigenvalues down to about -4 alpha (N + 1)^2: -2e5 for N = 2500), so an explicit
method would need ~1e5 steps, whatever the accuracy asked for.

The state is an array of shape (N, 2), one row per grid point: flattened, the unknowns
are (u_1, v_1, u_2, v_2, ...), and the Jacobian is banded with 2 diagonals below and 2
above the main one (u_i is coupled to u_{i +- 1}, two places away, and to v_i, one place
away). `taylorode.BandedLU(2, 2)` then builds each Newton matrix from 5 Jacobian-vector
products and factors it in O(N) work, where the dense default would take 2N products and
an O(N^3) factorisation. The same linear solver serves diffrax's Kvaerno5, through its
root finder.

Solved by `taylorode.VariableOrderHermiteObreschkoff(linear_solver=taylorode.BandedLU(2, 2))`
and by `diffrax.Kvaerno5` with `diffrax.VeryChord(linear_solver=taylorode.BandedLU(2, 2))`,
both with `diffrax.PIDController(rtol=atol=1e-6)`, against scipy's Radau at rtol 1e-10
with the Jacobian's band as its sparsity pattern. The figure
(`docs/img/reaction_diffusion.png`) shows u(x, t) and both solvers' step sizes.

Run with `python examples/reaction_diffusion.py` (N = 2500, t in [0, 10]; `--quick`:
N = 250, t in [0, 2]; `--out` for the figure's path).
"""

import argparse
import pathlib
import time

import diffrax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import scipy.sparse
from scipy.integrate import solve_ivp


matplotlib.use("Agg")
import matplotlib.pyplot as plt

import taylorode


jax.config.update("jax_enable_x64", True)

ALPHA = 1 / 50
U_EDGE, V_EDGE = 1.0, 3.0
TOL = 1e-6
REF_TOL = 1e-10
OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "img" / "reaction_diffusion.png"


def brusselator(t, y, args):
    """The method-of-lines field on a state of shape (N, 2): columns u and v."""
    u, v = y[:, 0], y[:, 1]
    k = ALPHA * (y.shape[0] + 1) ** 2

    def laplacian(w, edge):
        padded = jnp.concatenate([jnp.full((1,), edge), w, jnp.full((1,), edge)])
        return k * (padded[:-2] - 2 * w + padded[2:])

    reaction = u * u * v
    du = 1 + reaction - 4 * u + laplacian(u, U_EDGE)
    dv = 3 * u - reaction + laplacian(v, V_EDGE)
    return jnp.stack([du, dv], axis=-1)


def initial_state(n):
    x = np.arange(1, n + 1) / (n + 1)
    return x, np.stack([1 + np.sin(2 * np.pi * x), np.full(n, V_EDGE)], axis=-1)


def solve(solver, y0, t1, ts):
    """One jitted solve, saving the state at `ts` and the time of every step, timed
    after its compile: (solution, compile s, run s)."""
    run = jax.jit(
        lambda y0: diffrax.diffeqsolve(
            diffrax.ODETerm(brusselator), solver, 0.0, t1, None, y0,
            stepsize_controller=diffrax.PIDController(rtol=TOL, atol=TOL),
            # At every step only its time: a (max_steps, N, 2) buffer of states would
            # cost more than the solve.
            saveat=diffrax.SaveAt(
                subs=[diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(steps=True, fn=lambda t, y, args: t)]
            ),
            max_steps=20_000,
        )
    )
    start = time.perf_counter()
    compiled = run.lower(y0).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(y0))
    start = time.perf_counter()
    sol = jax.block_until_ready(compiled(y0))
    return sol, compile_s, time.perf_counter() - start


def reference(y0, t1, ts):
    """scipy's Radau at REF_TOL, with the band as the Jacobian's sparsity pattern."""
    n = y0.shape[0]
    shape = y0.shape
    band = scipy.sparse.diags([np.ones(2 * n - abs(d)) for d in range(-2, 3)], list(range(-2, 3)))
    field = jax.jit(lambda y: brusselator(0.0, y.reshape(shape), None).reshape(-1))
    sol = solve_ivp(
        lambda t, y: np.asarray(field(jnp.asarray(y))), (0.0, t1), y0.reshape(-1),
        method="Radau", rtol=REF_TOL, atol=REF_TOL, jac_sparsity=band, t_eval=ts,
    )
    return sol.y.T.reshape((len(ts),) + shape)


def main(quick=False, out=OUT):
    n, t1 = (250, 2.0) if quick else (2500, 10.0)
    x, y0 = initial_state(n)
    ts = jnp.linspace(0.0, t1, 41)
    band = taylorode.BandedLU(2, 2)
    solvers = {
        "VOHO": taylorode.VariableOrderHermiteObreschkoff(linear_solver=band),
        "Kvaerno5": diffrax.Kvaerno5(root_finder=diffrax.VeryChord(rtol=TOL, atol=TOL, linear_solver=band)),
    }
    ref = reference(y0, t1, np.asarray(ts))
    result = dict(n=n, unknowns=2 * n)
    steps = {}
    print(f"Brusselator, {2 * n} unknowns, t in [0, {t1:g}], rtol = atol = {TOL:g}")
    for name, solver in solvers.items():
        sol, compile_s, run_s = solve(solver, jnp.asarray(y0), t1, ts)
        assert sol.result == diffrax.RESULTS.successful, name
        ys = np.asarray(sol.ys[0])
        error = float(np.max(np.abs(ys - ref) / (1 + np.abs(ref))))
        accepted = int(sol.stats["num_accepted_steps"])
        rejected = int(sol.stats["num_rejected_steps"])
        key = name.lower()
        result.update({
            f"{key}_error": error, f"{key}_accepted": accepted, f"{key}_rejected": rejected,
            f"{key}_run_s": run_s, f"{key}_compile_s": compile_s,
        })
        # The end of every accepted step (diffrax pads the rest with inf).
        t_steps = np.concatenate([[0.0], np.asarray(sol.ts[1])[:accepted]])
        steps[name] = t_steps
        print(
            f"  {name:9s} {accepted:5d} accepted / {rejected:4d} rejected steps, error "
            f"{error:.1e} (max over {len(ts)} times), run {run_s * 1e3:.0f} ms, "
            f"compile {compile_s:.1f} s"
        )

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    image = ax0.imshow(
        ref[:, :, 0].T, origin="lower", aspect="auto", extent=(0, t1, x[0], x[-1]), cmap="viridis"
    )
    fig.colorbar(image, ax=ax0, label="u")
    ax0.set(xlabel="t", ylabel="x", title=f"u(x, t), {2 * n} unknowns")
    for name, t_steps in steps.items():
        ax1.semilogy(t_steps[1:], np.diff(t_steps), ".-", label=name, markersize=3)
    ax1.set(xlabel="t", ylabel="step size", title=f"Accepted steps, tol {TOL:g} (banded Newton matrices)")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(OUT))
    cli = parser.parse_args()
    main(quick=cli.quick, out=cli.out)
