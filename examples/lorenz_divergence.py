"""Chaos in the Lorenz system: nearby solutions separate at the largest Lyapunov exponent.

    x' = sigma (y - x),    y' = x (rho - z) - y,    z' = x y - beta z,
    sigma = 10, rho = 28, beta = 8/3.

A batch of initial conditions y0 + delta u_i, with delta = 1e-10 and u_i random unit
vectors, and the unperturbed y0 itself (a point on the attractor), are solved at once:
`jax.vmap` over one `jax.jit`-compiled `diffrax.diffeqsolve` with `taylorode.Taylor()`
(order 16, from the tolerance) and `taylorode.TaylorController(rtol=atol=1e-13)`,
saved with `SaveAt(ts=...)` (dense output from each step's own Taylor polynomial).
Each batch member takes its own steps.

The distance |y_i(t) - y(t)| from the unperturbed solution grows like
delta exp(lambda t), lambda the largest Lyapunov exponent (about 0.906 for these
parameters), until it reaches the size of the attractor and saturates. A straight-line
fit of the mean of ln |y_i(t) - y(t)| over the linear-growth window (after the
perturbations have turned into the unstable direction, before they reach 1e-2)
estimates lambda. Over a window this short the estimate is a finite-time exponent,
which fluctuates with the stretch of the attractor it samples (all members share the
same reference trajectory): expect agreement to ~10 % over t in [0, 30], less over
the quick run's [0, 8]. Tolerance 1e-13 keeps each step's local error three orders
of magnitude below the 1e-10 perturbations, which it would otherwise blur.

The figure (`docs/img/lorenz_divergence.png`) shows log10 of the separations against
time with the fitted line and the slope 0.906 / ln 10, and the x(t) of the unperturbed
solution and of one perturbed one, which part visibly once the separation is O(1).

Run with `python examples/lorenz_divergence.py` (`--quick`: t to 8 and 4 perturbed
solutions; `--out` for the figure's path).
"""

import argparse
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

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
LYAPUNOV = 0.9056  # the largest Lyapunov exponent (Viswanath 1998: 0.9056...)
TOL = 1e-13
DELTA = 1e-10
# A point on the attractor: (1, 1, 1) integrated to t = 50, rounded.
Y0 = np.array([-6.3414, -4.1028, 27.5141])
T_ALIGN = 2.0  # fit from here: the random perturbations have turned into the unstable direction
SATURATE = 1e-2  # ... up to where the largest separation reaches this (attractor size ~ 20)
OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "img" / "lorenz_divergence.png"


def lorenz(t, y, args):
    x, yy, z = y[0], y[1], y[2]
    return jnp.stack([SIGMA * (yy - x), x * (RHO - z) - yy, x * yy - BETA * z])


@jax.jit
def solve_batch(y0s, ts):
    """Solve from every row of `y0s`, saving at `ts`: returns (states, steps taken)."""

    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lorenz),
            taylorode.Taylor(),  # order 16 at 1e-13
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL),
            max_steps=100_000,
        )
        return sol.ys, sol.stats["num_accepted_steps"]

    return jax.vmap(solve)(y0s)


def main(quick: bool = False, out: str | pathlib.Path | None = None) -> dict:
    """Solve, fit, plot to `out`, print a summary. Returns the fitted exponent, the
    window it was fitted over, the largest separation and the steps taken."""
    out = pathlib.Path(OUT if out is None else out)
    t1, num, num_saved = (8.0, 4, 161) if quick else (30.0, 16, 601)
    start = time.perf_counter()

    directions = jax.random.normal(jax.random.PRNGKey(0), (num, 3), dtype=jnp.float64)
    directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    y0 = jnp.asarray(Y0)
    # Row 0 is the unperturbed solution.
    y0s = jnp.concatenate([y0[None], y0[None] + DELTA * directions])
    ts = jnp.linspace(0.0, t1, num_saved)
    ys, steps = jax.block_until_ready(solve_batch(y0s, ts))
    elapsed = time.perf_counter() - start

    t = np.asarray(ts)
    ys = np.asarray(ys)
    sep = np.linalg.norm(ys[1:] - ys[:1], axis=-1)  # (num, num_saved)
    log_sep = np.log(sep)
    mean_log = log_sep.mean(axis=0)
    # The linear-growth window: after the alignment transient, before saturation.
    window = (t >= T_ALIGN) & (np.cumsum(sep.max(axis=0) >= SATURATE) == 0)
    slope, intercept = np.polyfit(t[window], mean_log[window], 1)
    t_fit = (float(t[window][0]), float(t[window][-1]))
    max_sep = float(sep.max())
    steps = np.asarray(steps)

    # --- figure -------------------------------------------------------------------
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(8, 7), sharex=True,
                                   gridspec_kw={"height_ratios": [2, 1]})
    ln10 = math.log(10.0)
    for i in range(num):
        ax0.plot(t, log_sep[i] / ln10, color="C0", lw=0.8, alpha=0.5,
                 label=f"{num} perturbed solutions" if i == 0 else None)
    ax0.plot(t, mean_log / ln10, color="k", lw=1.5, label="mean of log")
    tw = np.linspace(*t_fit, 2)
    ax0.plot(tw, (slope * tw + intercept) / ln10, "--", color="C3", lw=2,
             label=rf"fit on [{t_fit[0]:g}, {t_fit[1]:.3g}]: $\lambda$ = {slope:.3f}")
    ax0.plot(t, (math.log(DELTA) + LYAPUNOV * t) / ln10, ":", color="0.4",
             label=rf"$\delta\, e^{{{LYAPUNOV}\, t}}$ (known $\lambda_{{\max}}$)")
    ax0.axvspan(*t_fit, color="C3", alpha=0.07)
    ax0.set_ylabel(r"$\log_{10} |y_i(t) - y(t)|$")
    ax0.set_title(rf"Lorenz, $\delta = 10^{{{round(math.log10(DELTA))}}}$: Taylor() + "
                  f"TaylorController({TOL:g}), vmap over {num + 1} solutions")
    ax0.legend(loc="lower right", fontsize="small")
    ax1.plot(t, ys[0, :, 0], color="k", lw=1, label="unperturbed")
    ax1.plot(t, ys[1, :, 0], "--", color="C0", lw=1, label="perturbed (first)")
    ax1.set_xlabel("$t$")
    ax1.set_ylabel("$x(t)$")
    ax1.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)

    # --- summary ------------------------------------------------------------------
    print(f"Lorenz (sigma={SIGMA:g}, rho={RHO:g}, beta={BETA:.4g}), t in [0, {t1:g}], "
          f"{num} solutions at distance {DELTA:g} from y0, Taylor() tol {TOL:g}")
    print(f"{'accepted steps per solution':<34}{int(steps.min()):>8} to {int(steps.max())}")
    print(f"{'fit window':<34}{t_fit[0]:>8.3g} to {t_fit[1]:.3g}")
    print(f"{'fitted exponent':<34}{slope:>8.3f}")
    print(f"{'known largest Lyapunov exponent':<34}{LYAPUNOV:>8.3f}")
    print(f"{'relative difference':<34}{abs(slope - LYAPUNOV) / LYAPUNOV:>8.1%}")
    print(f"{'largest separation':<34}{max_sep:>8.3g}")
    print(f"saved {out}; {elapsed:.1f} s for compile + solve")
    return dict(exponent=float(slope), window=t_fit, max_separation=max_sep,
                steps=int(steps.max()), seconds=elapsed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="t to 8, 4 perturbed solutions")
    parser.add_argument("--out", default=str(OUT), help="figure path (default: %(default)s)")
    cli = parser.parse_args()
    main(quick=cli.quick, out=cli.out)
