"""Stiffness diagnostics along the Van der Pol oscillator at mu = 1000.

    y1' = y2,    y2' = mu (1 - y1^2) y2 - y1,    y(0) = (2, 0),    t in [0, 3000]

(MATLAB's `vdp1000` problem: about 1.9 periods of length ~ (3 - 2 ln 2) mu; in the
scaled form y2' = mu ((1 - y1^2) y2 - y1) the period would be ~ 1.6 instead). The problem is solved with diffrax's
implicit `Kvaerno5` and a `PIDController` at rtol = atol = 1e-6, saving 400 points and
every step. `taylorode.stiffness_diagnostics` then gives, at each saved point:

- the Taylor radius of convergence (Jorba & Zou's estimate from the last two
  coefficients) and the step an explicit Taylor method of Jorba & Zou's order for
  the tolerance would take from it;
- the Jacobian's eigenvalues, max|lambda|, the stiffness ratio and the
  stability-limited step scale 1/max|lambda| of an explicit method (and, from it,
  the stability limit of the explicit Taylor method of that order).

The figure (docs/img/stiffness_vdp.png) shows y1, the spectrum, and the three step
sizes side by side; a summary table is printed.

Run with `python examples/stiffness_diagnostics.py`.
"""

import argparse
import functools
import math
import pathlib
import time

import diffrax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np


matplotlib.use("Agg")
import matplotlib.pyplot as plt

import taylorode


jax.config.update("jax_enable_x64", True)

MU = 1000.0
T1 = 3000.0
TOL = 1e-6
NUM_SAVED = 400
OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "img" / "stiffness_vdp.png"


def van_der_pol(t, y, args):
    y1, y2 = y[0], y[1]
    return jnp.stack([y2, args * (1 - y1**2) * y2 - y1])


@functools.partial(jax.jit, static_argnums=1)
def solve(ts, t1):
    # One solve: the requested points, and every accepted step.
    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(steps=True)])
    return diffrax.diffeqsolve(
        diffrax.ODETerm(van_der_pol),
        diffrax.Kvaerno5(),
        t0=0.0,
        t1=t1,
        dt0=None,
        y0=jnp.array([2.0, 0.0]),
        args=MU,
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=TOL, atol=TOL),
        max_steps=20_000,
    )


def main(quick: bool = False, out: str | pathlib.Path | None = None) -> dict:
    """Solve, compute the diagnostics, save the figure to `out` (default
    `docs/img/stiffness_vdp.png`), print a summary and return its key numbers. `quick`:
    the first 300 time units (half a relaxation cycle) at 60 points, for CI."""
    out = pathlib.Path(out) if out is not None else OUT
    t1, num_saved = (300.0, 60) if quick else (T1, NUM_SAVED)
    start = time.perf_counter()
    ts = jnp.linspace(0.0, t1, num_saved)
    sol = solve(ts, t1)
    (ts_saved, ts_steps), (ys_saved, _) = sol.ts, sol.ys
    steps = np.asarray(ts_steps)
    steps = np.concatenate([[0.0], steps[np.isfinite(steps)]])
    h_implicit = np.diff(steps)
    t_implicit = steps[1:]

    # Jorba & Zou's order for the tolerance, as `taylorode.Taylor()` would choose it.
    order = max(2, math.ceil(-0.5 * math.log(TOL) + 1))
    diag = taylorode.stiffness_diagnostics(van_der_pol, ts_saved, ys_saved, MU, order=order, tol=TOL)
    elapsed = time.perf_counter() - start

    t = np.asarray(ts_saved)
    y1 = np.asarray(ys_saved[:, 0])
    radius = np.asarray(diag.taylor_radius)
    h_taylor = np.asarray(diag.explicit_step)
    h_stab = np.asarray(diag.stability_step)
    lam = np.asarray(diag.max_abs_eigenvalue)
    ratio = np.asarray(diag.stiffness_ratio)
    # On the slow branches the slow eigenvalue is small and *positive*, so the
    # stiffness ratio (decaying modes only) is 1 there; the time-scale separation of
    # all modes, max|Re lambda| / min|Re lambda|, shows the stiffness.
    re = np.abs(np.asarray(diag.eigenvalues).real)
    separation = re.max(axis=1) / re.min(axis=1)
    # The order-p Taylor method (an explicit one-step method with stability function
    # sum_{k<=p} z^k/k!) is stable on the negative real axis down to -r_p; the fast
    # eigenvalue here is real and negative, so its largest stable step is r_p/max|lambda|.
    x = np.linspace(0.0, 4.0 * order, 400_001)[1:]
    stability_fn = sum((-x) ** k / math.factorial(k) for k in range(order + 1))
    r_p = x[np.argmax(np.abs(stability_fn) > 1)]

    # --- figure -------------------------------------------------------------------
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    axes[0].plot(t, y1, color="k")
    axes[0].set_ylabel("$y_1$")
    axes[0].set_title(f"Van der Pol, $\\mu = {MU:g}$: Kvaerno5, rtol = atol = {TOL:g}")

    axes[1].semilogy(t, lam, label=r"$\max|\lambda|$")
    axes[1].semilogy(t, ratio, label="stiffness ratio (decaying modes)")
    axes[1].semilogy(t, separation, ":", label=r"$\max|\mathrm{Re}\,\lambda| / \min|\mathrm{Re}\,\lambda|$ (all modes)")
    axes[1].set_ylabel("Jacobian spectrum")
    axes[1].legend(loc="best")

    axes[2].semilogy(t, h_taylor, label=f"explicit Taylor step (order {order}, tol {TOL:g})")
    axes[2].semilogy(t, r_p * h_stab, "--", label=rf"Taylor order {order} stability limit ${r_p:.2f}/\max|\lambda|$")
    axes[2].semilogy(t, h_stab, ":", label=r"$1/\max|\lambda|$")
    axes[2].semilogy(t_implicit, h_implicit, ".", markersize=2, label="Kvaerno5 steps taken")
    axes[2].set_ylabel("step size")
    axes[2].set_xlabel("$t$")
    axes[2].legend(loc="best", fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)

    # --- summary ------------------------------------------------------------------
    def row(name, x):
        q = np.quantile(x, [0.0, 0.5, 1.0])
        return f"{name:<34}{q[0]:>11.3g}{q[1]:>11.3g}{q[2]:>11.3g}"

    print(f"Van der Pol mu={MU:g} on [0, {t1:g}], Kvaerno5 rtol=atol={TOL:g}: "
          f"{int(sol.stats['num_accepted_steps'])} accepted, "
          f"{int(sol.stats['num_rejected_steps'])} rejected steps")
    print(f"{'over ' + str(num_saved) + ' saved points':<34}{'min':>11}{'median':>11}{'max':>11}")
    print(row("max|lambda|", lam))
    print(row("stiffness ratio (decaying modes)", ratio))
    print(row("max|Re l| / min|Re l| (all modes)", separation))
    print(row(f"Taylor radius (order {order})", radius))
    print(row("explicit Taylor step", h_taylor))
    print(row("1/max|lambda|", h_stab))
    print(row(f"stability limit {r_p:.2f}/max|lambda|", r_p * h_stab))
    print(row("Kvaerno5 accepted steps", h_implicit))
    # Steps an explicit method would need at the sampled rates, int dt / h (the fast
    # jumps are short and only coarsely sampled, so this is an estimate).
    taylor_steps = np.trapezoid(1 / h_taylor, t)
    stab_steps = np.trapezoid(1 / (r_p * h_stab), t)
    print(f"explicit order-{order} Taylor steps on [0, {t1:g}], estimated: {taylor_steps:.3g} "
          f"from accuracy, {stab_steps:.3g} from stability; Kvaerno5 took {len(h_implicit)}")
    print(f"saved {out}; {elapsed:.1f} s for solve + diagnostics")
    return dict(
        order=order,
        max_abs_eigenvalue=float(lam.max()),
        explicit_step_min=float(h_taylor.min()),
        stability_step_min=float((r_p * h_stab).min()),
        implicit_steps=len(h_implicit),
        explicit_steps_accuracy=float(taylor_steps),
        explicit_steps_stability=float(stab_steps),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="t in [0, 300], 60 points")
    parser.add_argument("--out", default=str(OUT), help="figure path (default: %(default)s)")
    cli = parser.parse_args()
    main(quick=cli.quick, out=cli.out)
