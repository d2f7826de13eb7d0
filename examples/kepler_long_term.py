"""Long-term Kepler orbit: energy and angular momentum over many periods, Taylor vs Dopri8.

The Kepler problem (eccentricity 0.5, unit semi-major axis, period 2 pi, starting at
pericentre),

    q'' = -q / |q|^3,

conserves the energy H = |p|^2 / 2 - 1 / |q| and the angular momentum L = q x p. A
general-purpose integrator conserves neither exactly, so their drift measures how the
error accumulates. It is solved over 1000 periods (`--quick`: 20) at
rtol = atol = 1e-14 by

- `taylorode.Taylor()` (order 18, from the tolerance) with `taylorode.TaylorController`;
- `diffrax.Dopri8()` with `diffrax.PIDController`.

Brouwer's law: when the truncation error per step is below round-off, the energy error
is a sum of independent round-off errors, a random walk, and grows like sqrt(t); a
systematic truncation error per step adds up coherently and grows like t. The figure
(`docs/img/kepler_long_term.png`) shows both relative errors against time, log-log,
with sqrt(t) and t reference lines; a table gives steps, compile and run times and the
largest errors.

The errors are taken at the solver's own steps (`SaveAt(steps=True, fn=...)` saves only
the two invariants, at every step) and the figure shows them at the last step before each
of 200 log-spaced times. They are also measured at those 200 times themselves
(`SaveAt(ts=...)`, i.e. dense output), in the same solve, and printed (column "at ts"):
Taylor's dense output is its step's own Taylor polynomial and as accurate as the steps,
while Dopri8's 7th-order interpolant adds an error of its own (~1e-12 here) that would
hide the growth of its step error.

Run with `python examples/kepler_long_term.py` (`--quick`: 20 periods, a few seconds
after compiling; `--out` for the figure's path).
"""

import argparse
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

ECC = 0.5
TOL = 1e-14
PERIOD = 2 * np.pi
NUM_SAVED = 200
OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "img" / "kepler_long_term.png"


def kepler(t, y, args):
    q, p = y[:2], y[2:]
    return jnp.concatenate([p, -q / jnp.sum(q**2) ** 1.5])


def invariants(t, y, args):
    """Energy and angular momentum; saved instead of the state."""
    q, p = y[:2], y[2:]
    energy = 0.5 * jnp.sum(p**2) - 1 / jnp.sqrt(jnp.sum(q**2))
    angular_momentum = q[0] * p[1] - q[1] * p[0]
    return jnp.stack([energy, angular_momentum])


def y0_at_pericentre(e):
    return jnp.array([1 - e, 0.0, 0.0, np.sqrt((1 + e) / (1 - e))])


def run(solver, controller, t1, ts, max_steps):
    """Compile and run one solve from 0 to `t1`. Returns the times of the steps, the
    invariants there and at `ts`, the step counts, orders (Taylor only) and timings."""

    @jax.jit
    def solve(y0):
        saveat = diffrax.SaveAt(
            subs=[
                diffrax.SubSaveAt(steps=True, fn=invariants),
                diffrax.SubSaveAt(ts=ts, fn=invariants),
            ],
            solver_state=isinstance(solver, taylorode.Taylor),
        )
        return diffrax.diffeqsolve(
            diffrax.ODETerm(kepler),
            solver,
            t0=0.0,
            t1=t1,
            dt0=None,
            y0=y0,
            saveat=saveat,
            stepsize_controller=controller,
            max_steps=max_steps,
        )

    y0 = y0_at_pericentre(ECC)
    start = time.perf_counter()
    compiled = solve.lower(y0).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    sol = jax.block_until_ready(compiled(y0))
    run_s = time.perf_counter() - start

    (t_steps, _), (inv_steps, inv_saved) = sol.ts, sol.ys
    keep = np.isfinite(np.asarray(t_steps))  # the buffer is padded with inf
    orders = None
    if isinstance(solver, taylorode.Taylor):
        orders = {q: int(n) for q, n in taylorode.order_counts(sol).items() if int(n) > 0}
    return dict(
        t_steps=np.asarray(t_steps)[keep],
        inv_steps=np.asarray(inv_steps)[keep],
        inv_saved=np.asarray(inv_saved),
        accepted=int(sol.stats["num_accepted_steps"]),
        rejected=int(sol.stats["num_rejected_steps"]),
        orders=orders,
        compile_s=compile_s,
        run_s=run_s,
    )


def relative_errors(inv, inv0):
    """|dH/H| and |dL/L| for invariants `inv` of shape (n, 2)."""
    return np.abs((inv - inv0) / inv0).T


def growth_exponent(t, err):
    """Least-squares slope of log(err) against log(t), over t >= 1 period, err > 0."""
    mask = (t >= PERIOD) & (err > 0)
    return float(np.polyfit(np.log(t[mask]), np.log(err[mask]), 1)[0])


def main(quick: bool = False, out: str | pathlib.Path | None = None) -> dict:
    """Solve, plot to `out`, print a table. Returns the largest relative energy and
    angular-momentum errors (at the steps, and at the saved times), growth exponents and
    step counts of both solvers, keyed `taylor_...` and `dopri8_...`."""
    out = pathlib.Path(OUT if out is None else out)
    periods = 20 if quick else 1000
    t1 = periods * PERIOD
    # Saved times from a tenth of a period to the end, log-spaced for the log-log plot.
    ts = jnp.asarray(np.geomspace(PERIOD / 10, t1, NUM_SAVED))
    # Dopri8 takes ~130 steps per period (accepted + rejected) at 1e-14, Taylor ~40.
    max_steps = 200 * periods + 1000
    solvers = {
        "taylor": ("Taylor()", taylorode.Taylor(), taylorode.TaylorController(rtol=TOL, atol=TOL)),
        "dopri8": ("Dopri8", diffrax.Dopri8(), diffrax.PIDController(rtol=TOL, atol=TOL)),
    }
    inv0 = np.asarray(invariants(0.0, y0_at_pericentre(ECC), None))

    results = {}
    for key, (_, solver, controller) in solvers.items():
        r = run(solver, controller, t1, ts, max_steps)
        r["dE_steps"], r["dL_steps"] = relative_errors(r["inv_steps"], inv0)
        r["dE_saved"], r["dL_saved"] = relative_errors(r["inv_saved"], inv0)
        # For the figure: the last step at or before each saved time.
        idx = np.searchsorted(r["t_steps"], np.asarray(ts), side="right") - 1
        r["t_plot"] = r["t_steps"][idx]
        r["dE_plot"], r["dL_plot"] = r["dE_steps"][idx], r["dL_steps"][idx]
        r["exponent"] = growth_exponent(r["t_steps"], r["dE_steps"])
        results[key] = r

    # --- figure -------------------------------------------------------------------
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharex=True)
    styles = {"taylor": dict(color="C0"), "dopri8": dict(color="C3")}
    for ax, q, name in [(axes[0], "dE", "energy $|\\Delta H / H|$"),
                        (axes[1], "dL", "angular momentum $|\\Delta L / L|$")]:
        for key, (label, _, _) in solvers.items():
            r = results[key]
            err = np.where(r[q + "_plot"] > 0, r[q + "_plot"], np.nan)  # exact zeros: gaps
            ax.loglog(r["t_plot"] / PERIOD, err, ".-", lw=0.8, markersize=3,
                      label=f"{label}, at its steps", **styles[key])
        # Reference lines through the data: sqrt(t) through Taylor's, t through Dopri8's.
        tt = np.geomspace(PERIOD / 10, t1, 50)
        for key, power, ls, text in [
            ("taylor", 0.5, "--", r"$\propto \sqrt{t}$ (Brouwer: round-off random walk)"),
            ("dopri8", 1.0, ":", r"$\propto t$ (systematic truncation error)"),
        ]:
            r = results[key]
            mask = (r["t_plot"] >= PERIOD) & (r[q + "_plot"] > 0)
            c = np.exp(np.median(np.log(r[q + "_plot"][mask]) - power * np.log(r["t_plot"][mask])))
            ax.loglog(tt / PERIOD, c * tt**power, ls, color="k", lw=1, label=text)
        ax.set_xlabel("time [periods]")
        ax.set_ylabel(f"relative error in {name}")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(loc="upper left", fontsize="small")
    fig.suptitle(f"Kepler, e = {ECC}, {periods} periods, rtol = atol = {TOL:g}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)

    # --- summary ------------------------------------------------------------------
    print(f"Kepler e={ECC}, {periods} periods (t = {t1:.1f}), rtol=atol={TOL:g}, float64, jit")
    header = (f"{'solver':<9}{'order':>6}{'accepted':>10}{'rejected':>10}{'compile [s]':>13}"
              f"{'run [s]':>9}{'max|dH/H| steps':>17}{'at ts':>10}{'max|dL/L|':>11}{'dH ~ t^a':>10}")
    print(header)
    print("-" * len(header))
    for key, (label, _, _) in solvers.items():
        r = results[key]
        order = "/".join(str(q) for q in r["orders"]) if r["orders"] else "8"
        print(f"{label:<9}{order:>6}{r['accepted']:>10}{r['rejected']:>10}{r['compile_s']:>13.2f}"
              f"{r['run_s']:>9.2f}{r['dE_steps'].max():>17.2e}{r['dE_saved'].max():>10.2e}"
              f"{r['dL_steps'].max():>11.2e}{r['exponent']:>10.2f}")
    print(f"(errors at every step and at {NUM_SAVED} saved times; a = fitted log-log slope "
          "of |dH/H| at the steps over t >= 1 period)")
    print(f"saved {out}")

    summary = dict(periods=periods)
    for key, r in results.items():
        summary.update({
            f"{key}_max_energy_error": float(r["dE_steps"].max()),
            f"{key}_max_energy_error_saved": float(r["dE_saved"].max()),
            f"{key}_max_angular_momentum_error": float(r["dL_steps"].max()),
            f"{key}_energy_growth_exponent": r["exponent"],
            f"{key}_accepted_steps": r["accepted"],
            f"{key}_rejected_steps": r["rejected"],
            f"{key}_run_s": r["run_s"],
        })
    summary["taylor_orders"] = results["taylor"]["orders"]
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 periods instead of 1000")
    parser.add_argument("--out", default=str(OUT), help="figure path (default: %(default)s)")
    cli = parser.parse_args()
    main(quick=cli.quick, out=cli.out)
