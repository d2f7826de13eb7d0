"""Benchmark: work-precision of taylorode's automatic order against heyoka, Tsit5, Dopri8.

For four float64 problems with accurate references,

- `kepler`: Kepler problem, e = 0.9, 10 periods from pericentre (from bench_control);
- `lorenz`: Lorenz system, sigma = 10, rho = 28, beta = 8/3, y0 = (1, 1, 1), t in [0, 5]
  (chaotic: the horizon is kept short so that float64 solutions can still be checked);
- `arenstorf`: restricted three-body Arenstorf orbit, one period (from bench_control);
- `pleiades`: the 7-body Pleiades problem, t in [0, 3] (from bench_control),

and tolerances 1e-6 ... 1e-14 (rtol = atol = tol), five solvers:

- `heyoka`: `heyoka.taylor_adaptive(sys, y0, tol=tol)` (its own order and step rules);
- `Tsit5+PID`, `Dopri8+PID`: diffrax with `PIDController(rtol=tol, atol=tol)`;
- `Taylor()+TC`: `taylorode.Taylor()` (order p from the tolerance, Jorba-Zou's rule
  p = max(2, ceil(-ln(tol)/2 + 1))) with `taylorode.TaylorController(rtol=tol, atol=tol)`;
- `Taylor(orders)+TC`: `taylorode.Taylor(orders=(p-2, p, p+2))`, the order chosen per step
  among the three, with the same controller.

Per run: the orders used (`taylorode.order_counts`), accepted/rejected steps, the error at
t1, compile and run time; then a "done-when" summary per problem at equal achieved error
1e-10 against the targets of issue 4, and a work-precision plot per problem
(`docs/img/workprecision_<problem>.png`). Problems, references, timing and the heyoka and
Dopri8 entries are those of `bench_control.py`.

    python benchmarks/bench_workprecision.py              # full run (~4 min)
    python benchmarks/bench_workprecision.py --quick      # smoke run
    python benchmarks/bench_workprecision.py --problems lorenz --tols 1e-8 1e-12 \\
        --solvers heyoka "Taylor()+TC"
"""

import argparse
import math
import sys
from pathlib import Path

import diffrax
import heyoka as hy
import jax.numpy as jnp
import mpmath
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_control as bc  # noqa: E402  (also enables float64 in JAX)

import taylorode  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent
ALL_TOLS = (1e-6, 1e-8, 1e-10, 1e-12, 1e-14)
QUICK_TOLS = (1e-8, 1e-12)
QUICK_PROBLEMS = ("kepler", "lorenz")
TARGET_ERROR = 1e-10
MAX_STEPS = 1_000_000  # Tsit5 at 1e-14 takes tens of thousands of steps

# Issue 4's targets for Taylor() + TaylorController.
TARGET_SPEEDUP = 3.0  # run time of Dopri8 / Taylor()+TC at equal error, at least
TARGET_STEPS = 1.2  # steps of Taylor()+TC / heyoka at the same tol, at most
TARGET_REJECTED = 0.02  # rejected / all steps of Taylor()+TC, at most
TARGET_COMPILE = 2.0  # compile time of Taylor()+TC / Dopri8, at most


# --- Lorenz -----------------------------------------------------------------------


LORENZ_SIGMA, LORENZ_RHO, LORENZ_BETA = 10.0, 28.0, 8.0 / 3.0  # float64, in both fields
LORENZ_T1 = 5.0


def lorenz(t, y, args):
    x, y_, z = y[0], y[1], y[2]
    return jnp.stack(
        [
            LORENZ_SIGMA * (y_ - x),
            x * (LORENZ_RHO - z) - y_,
            x * y_ - LORENZ_BETA * z,
        ]
    )


def lorenz_heyoka():
    x, y, z = hy.make_vars("x", "y", "z")
    return [
        (x, LORENZ_SIGMA * (y - x)),
        (y, x * (LORENZ_RHO - z) - y),
        (z, x * y - LORENZ_BETA * z),
    ]


def lorenz_mpmath_taylor(y0, t1, *, steps=500, order=30, dps=40):
    """Fixed-step Taylor method in mpmath (the Lorenz recurrences written out), from the
    float64 y0 with the float64 parameters: an independent check of heyoka's real128
    reference. 500 steps of h = 0.01 at order 30: truncation ~ (h/rho)^30, far below
    float64 at this radius of convergence (rho ~ 0.1)."""
    with mpmath.workdps(dps):
        s, r, b = (mpmath.mpf(v) for v in (LORENZ_SIGMA, LORENZ_RHO, LORENZ_BETA))
        x, y, z = (mpmath.mpf(float(v)) for v in y0)
        h = mpmath.mpf(t1) / steps
        for _ in range(steps):
            X, Y, Z = [x], [y], [z]
            for k in range(order):
                xz = mpmath.fsum(X[i] * Z[k - i] for i in range(k + 1))
                xy = mpmath.fsum(X[i] * Y[k - i] for i in range(k + 1))
                X.append(s * (Y[k] - X[k]) / (k + 1))
                Y.append((r * X[k] - xz - Y[k]) / (k + 1))
                Z.append((xy - b * Z[k]) / (k + 1))
            x, y, z = (mpmath.polyval(c[::-1], h) for c in (X, Y, Z))
        return np.array([float(x), float(y), float(z)])


def lorenz_problem():
    y0, t1 = np.ones(3), LORENZ_T1
    reference, order, _ = bc.heyoka_reference(lorenz_heyoka, y0, t1, hy.real128)
    mp = lorenz_mpmath_taylor(y0, t1)
    ld, _, _ = bc.heyoka_reference(lorenz_heyoka, y0, t1, np.longdouble)
    note = (
        f"heyoka in real128 (tol 1e-33, order {order}) from the float64 y0 to t1 = 5; "
        "an independent fixed-step Taylor method in mpmath (Lorenz recurrences, order "
        f"30, 500 steps, 40 digits) agrees to {bc.mixed_error(mp, reference):.1e} and "
        f"heyoka in long double (tol 1e-19) to {bc.mixed_error(ld, reference):.1e} "
        "(after rounding to float64). Lorenz is chaotic (largest Lyapunov exponent "
        "~0.9): an error made early grows ~e^4.5 ~ 90-fold by t = 5"
    )
    return bc.Problem(
        key="lorenz",
        title="Lorenz, sigma = 10, rho = 28, beta = 8/3, y0 = (1, 1, 1), t in [0, 5]",
        vector_field=lorenz,
        heyoka_system=lorenz_heyoka,
        y0=y0,
        t1=t1,
        reference=reference,
        reference_note=note,
    )


PROBLEMS = {
    "kepler": bc.kepler_problem,
    "lorenz": lorenz_problem,
    "arenstorf": bc.arenstorf_problem,
    "pleiades": bc.pleiades_problem,
}


# --- Solvers ----------------------------------------------------------------------


SOLVERS: list[bc.SolverConfig] = []


def solver_config(name):
    def register(fn):
        SOLVERS.append(bc.SolverConfig(name, fn))
        return fn

    return register


solver_config("heyoka")(bc.heyoka_entry)


@solver_config("Tsit5+PID")
def tsit5_pid(problem, tol):
    return bc.run_diffrax(
        problem,
        tol,
        diffrax.Tsit5(),
        diffrax.PIDController(rtol=tol, atol=tol),
        order=5,
    )


solver_config("Dopri8+PID")(bc.dopri8_pid)


def run_taylor(problem, tol, solver):
    """A `taylorode.Taylor` solve with `TaylorController`, recording the orders used."""
    r = bc.run_diffrax(
        problem,
        tol,
        solver,
        taylorode.TaylorController(rtol=tol, atol=tol),
        order=None,
        saveat=diffrax.SaveAt(t1=True, solver_state=True),
        outputs=taylorode.order_counts,
    )
    counts = {int(q): int(n) for q, n in r["outputs"].items()}
    r["order"] = counts
    # The controller's zero-length first step counts in num_accepted_steps but not in
    # order_counts.
    if sum(counts.values()) != r["accepted"] - 1:
        r["notes"] = (
            f"order_counts sum to {sum(counts.values())}, but num_accepted_steps - 1 "
            f"= {r['accepted'] - 1}"
        )
    return r


@solver_config("Taylor()+TC")
def taylor_auto_tc(problem, tol):
    return run_taylor(problem, tol, taylorode.Taylor())


@solver_config("Taylor(orders)+TC")
def taylor_orders_tc(problem, tol):
    p = bc.heyoka_order(tol)
    return run_taylor(problem, tol, taylorode.Taylor(orders=(p - 2, p, p + 2)))


def is_taylorode(name):
    return name.startswith("Taylor")


def steps_taken(name, r):
    """Accepted steps, less TaylorController's zero-length first step."""
    return r["accepted"] - (1 if is_taylorode(name) else 0)


def rejected_fraction(name, r):
    rej = r["rejected"] or 0
    total = steps_taken(name, r) + rej
    return rej / total if total else 0.0


def run_ms(r):
    return r["run_ms_best"] if r["run_stat"] == "best" else r["run_ms_median"]


# --- Report -----------------------------------------------------------------------


def header(cli, problems, tols, solvers):
    return [
        "# Work-precision: taylorode's automatic order vs heyoka, Tsit5 and Dopri8",
        "",
        *bc.environment_lines(cli.quick),
        f"- Problems: {', '.join(problems)}; tols: "
        f"{', '.join(f'{t:.0e}' for t in tols)}; solvers: "
        f"{', '.join(s.name for s in solvers)}",
        "- Settings: float64; t0 = 0; diffrax: rtol = atol = tol, `dt0=None`, "
        f"`max_steps={MAX_STEPS}`, whole solve under `jax.jit`; heyoka: "
        "`taylor_adaptive(sys, y0, tol=tol)` (default mode). `Taylor()+TC`: "
        "`taylorode.Taylor()` + `taylorode.TaylorController(rtol=tol, atol=tol)`, order "
        "p = max(2, ceil(-ln(tol)/2 + 1)) chosen by the solver from the controller's "
        "tolerance (heyoka's rule); `Taylor(orders)+TC`: `Taylor(orders=(p-2, p, p+2))`, "
        "order chosen per step.",
        "- **orders used**: heyoka's order; for taylorode, `taylorode.order_counts(sol)` "
        "as order:steps.",
        "- **steps (acc/rej)**: as diffrax counts them. `TaylorController` makes a "
        "zero-length first step that diffrax counts as accepted: the taylorode rows "
        "show one step more than they take, and every comparison below subtracts it. "
        "heyoka never rejects a step. **rej %** = rejected / (taken + rejected).",
        "- **error** = max_i |y_i(t1) - ref_i| / (1 + |ref_i|) (mixed abs/rel, max "
        "norm), as in bench_control.",
        "- **compile s**: diffrax: `jax.jit(...).lower(y0).compile()`; heyoka: "
        "construction of `taylor_adaptive` with its in-memory cache cleared and its "
        "disk cache off.",
        f"- **run ms**: diffrax: best of {bc.TIMING.diffrax_repeats} calls after a "
        f"warm-up call; heyoka: median of {bc.TIMING.heyoka_repeats} "
        "`propagate_until(t1)` from a reset time and state. Wall time, single process.",
        f"- **Done when** (issue 4), for `Taylor()+TC` at equal achieved error "
        f"{TARGET_ERROR:.0e}: run time >= {TARGET_SPEEDUP:g}x faster than Dopri8; steps "
        f"<= {TARGET_STEPS:g}x heyoka's at the same tol; rejections <= "
        f"{100 * TARGET_REJECTED:g} %; compile <= {TARGET_COMPILE:g}x Dopri8's.",
    ]


fmt_order = bc.fmt_order


def table(problem, rows):
    lines = [
        "",
        f"## {problem.title}",
        "",
        f"Reference: {problem.reference_note}.",
        "",
        "| solver | tol | orders used | steps (acc/rej) | rej % | error | error/tol "
        "| compile s | run ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for name, tol, r in rows:
        if "failed" in r:
            lines.append(f"| {name} | {tol:.0e} | | failed | | | | | |")
            notes.append(f"- {name}, tol {tol:.0e}: failed: {r['failed']}")
            continue
        rej = r["rejected"] or 0
        lines.append(
            f"| {name} | {tol:.0e} | {fmt_order(r['order'])} | {r['accepted']}/{rej} "
            f"| {100 * rejected_fraction(name, r):.1f} | {r['error']:.2e} "
            f"| {r['error'] / tol:.3g} | {r['compile_s']:.2f} | {run_ms(r):.3f} |"
        )
        if r["notes"] and name != "heyoka":
            notes.append(f"- {name}, tol {tol:.0e}: {r['notes']}")
    if notes:
        lines += ["", *notes]
    return lines


# --- Done-when summary ------------------------------------------------------------


def time_at_error(runs, target=TARGET_ERROR):
    """Run time at achieved error `target` from one solver's runs [(tol, r)]:

    - `fastest`: (ms, tol) of the fastest run with error <= target, or None;
    - `interp`: (ms, (tol_a, tol_b)) by log-log interpolation of run time against error
      between the first two consecutive tols (loosest first) whose errors bracket the
      target, or None where none do (the loosest run already meets it, or none does).
    """
    runs = sorted([(t, r) for t, r in runs if "failed" not in r], key=lambda x: -x[0])
    ok = [(run_ms(r), t) for t, r in runs if r["error"] <= target]
    fastest = min(ok) if ok else None
    interp = None
    for (ta, ra), (tb, rb) in zip(runs, runs[1:]):
        ea, eb = ra["error"], rb["error"]
        if ea > target >= eb and ea > 0 and eb > 0:
            w = (math.log(target) - math.log(ea)) / (math.log(eb) - math.log(ea))
            ms = math.exp(
                math.log(run_ms(ra)) + w * (math.log(run_ms(rb)) - math.log(run_ms(ra)))
            )
            interp = (ms, (ta, tb))
            break
    return dict(fastest=fastest, interp=interp)


def speedup_at_error(slow_runs, fast_runs, target=TARGET_ERROR):
    """Run-time ratio slow/fast at achieved error `target`: by interpolation where both
    solvers' runs [(tol, r)] bracket it, else from the fastest runs under it; and how
    it was got. Where one of them never reaches `target`: (None, how, fallback), the
    fallback being the same ratio at the smallest error both reach."""
    slow, fast = time_at_error(slow_runs, target), time_at_error(fast_runs, target)
    if slow["interp"] and fast["interp"]:
        return slow["interp"][0] / fast["interp"][0], "interpolated", None
    if slow["fastest"] and fast["fastest"]:
        return slow["fastest"][0] / fast["fastest"][0], "fastest runs <= target", None
    best = [
        min((r["error"] for _, r in runs if "failed" not in r), default=None)
        for runs in (slow_runs, fast_runs)
    ]
    if None in best or max(best) <= target:
        return None, "not reached", None
    common = max(best)
    ratio, how, _ = speedup_at_error(slow_runs, fast_runs, common)
    return None, "not reached", (ratio, how, common)


def fmt_speedup(ratio, how, fallback):
    if ratio is not None:
        return f"{ratio:.2f} ({how})"
    if fallback is None or fallback[0] is None:
        return f"{TARGET_ERROR:.0e} not reached"
    r, h, e = fallback
    return f"{TARGET_ERROR:.0e} not reached; at error {e:.1e}: {r:.2f} ({h})"


def describe(at):
    parts = []
    if at["interp"]:
        ms, (ta, tb) = at["interp"]
        parts.append(f"{ms:.3g} ms interpolated between tols {ta:.0e} and {tb:.0e}")
    if at["fastest"]:
        ms, t = at["fastest"]
        parts.append(f"fastest run <= {TARGET_ERROR:.0e}: {ms:.3g} ms at tol {t:.0e}")
    return "; ".join(parts) or f"error {TARGET_ERROR:.0e} not reached at any tol"


def verdict(value, target, at_most):
    if value is None:
        return "n/a"
    ok = value <= target if at_most else value >= target
    return "met" if ok else "**missed**"


def summary(problem, rows):
    by = {}
    for name, tol, r in rows:
        by.setdefault(name, {})[tol] = r
    lines = [
        "",
        f"### Done when: {problem.key}",
        "",
    ]
    tc, d8, hk = by.get("Taylor()+TC"), by.get("Dopri8+PID"), by.get("heyoka")
    if tc is None:
        return lines + ["(Taylor()+TC not run: no summary.)"]
    ok = lambda d: {t: r for t, r in (d or {}).items() if "failed" not in r}  # noqa: E731
    tc, d8, hk = ok(tc), ok(d8), ok(hk)
    at = {name: time_at_error(list(runs.items())) for name, runs in by.items()}

    # The tol at which Taylor()+TC first (loosest tol) reaches the target error: the
    # point at which steps, rejections and compile time are compared.
    reached = sorted((t for t, r in tc.items() if r["error"] <= TARGET_ERROR), reverse=True)
    t_star = reached[0] if reached else min(tc)
    t_note = (
        f"tol {t_star:.0e} (loosest tol at which Taylor()+TC's error <= "
        f"{TARGET_ERROR:.0e})"
        if reached
        else f"tol {t_star:.0e} (tightest tol; Taylor()+TC never reaches "
        f"{TARGET_ERROR:.0e})"
    )

    lines += [
        f"At achieved error {TARGET_ERROR:.0e}. Run times: "
        + "; ".join(f"{name}: {describe(a)}" for name, a in at.items())
        + ".",
        "",
        f"Steps, rejections and compile time at {t_note}, and the worst over all tols.",
        "",
        "| metric | target | value | worst over tols | verdict |",
        "|---|---:|---:|---:|---|",
    ]

    # Run time vs Dopri8 at equal error.
    runs = {name: list(rs.items()) for name, rs in by.items()}
    if d8:
        ratio, how, fallback = speedup_at_error(runs["Dopri8+PID"], runs["Taylor()+TC"])
        lines.append(
            f"| run time Dopri8 / Taylor()+TC at error {TARGET_ERROR:.0e} "
            f"| >= {TARGET_SPEEDUP:g} | {fmt_speedup(ratio, how, fallback)} "
            f"| | {verdict(ratio, TARGET_SPEEDUP, at_most=False)} |"
        )
    # Steps vs heyoka at the same tol.
    if hk:
        ratios = {
            t: steps_taken("Taylor()+TC", tc[t]) / steps_taken("heyoka", hk[t])
            for t in tc
            if t in hk
        }
        if ratios:
            worst = max(ratios, key=ratios.get)
            v = ratios.get(t_star)
            lines.append(
                f"| steps Taylor()+TC / heyoka (same tol; first step excluded) "
                f"| <= {TARGET_STEPS:g} | "
                + (f"{v:.3f} ({steps_taken('Taylor()+TC', tc[t_star])}/"
                   f"{steps_taken('heyoka', hk[t_star])})" if v else "n/a")
                + f" | {ratios[worst]:.3f} at {worst:.0e} "
                f"| {verdict(v, TARGET_STEPS, at_most=True)} |"
            )
    # Rejections.
    fr = {t: rejected_fraction("Taylor()+TC", r) for t, r in tc.items()}
    worst = max(fr, key=fr.get)
    lines.append(
        f"| rejected steps of Taylor()+TC | <= {100 * TARGET_REJECTED:g} % "
        f"| {100 * fr[t_star]:.1f} % ({tc[t_star]['rejected']}) "
        f"| {100 * fr[worst]:.1f} % at {worst:.0e} "
        f"| {verdict(fr[t_star], TARGET_REJECTED, at_most=True)} |"
    )
    # Compile time vs Dopri8 at the same tol.
    if d8:
        cr = {t: tc[t]["compile_s"] / d8[t]["compile_s"] for t in tc if t in d8}
        if cr:
            worst = max(cr, key=cr.get)
            v = cr.get(t_star)
            lines.append(
                f"| compile Taylor()+TC / Dopri8 (same tol) | <= {TARGET_COMPILE:g} | "
                + (f"{v:.2f} ({tc[t_star]['compile_s']:.2f} s / "
                   f"{d8[t_star]['compile_s']:.2f} s)" if v else "n/a")
                + f" | {cr[worst]:.2f} at {worst:.0e} "
                f"| {verdict(v, TARGET_COMPILE, at_most=True)} |"
            )
    # For information: the other solvers against Taylor()+TC at equal error.
    info = []
    for name in by:
        if name in ("Taylor()+TC", "Dopri8+PID"):
            continue
        info.append(
            f"{name} / Taylor()+TC: "
            + fmt_speedup(*speedup_at_error(runs[name], runs["Taylor()+TC"]))
        )
    if info:
        lines += ["", "Run-time ratios at equal error, for information: "
                  + "; ".join(info) + "."]
    return lines


# --- Plots ------------------------------------------------------------------------


STYLES = {
    "heyoka": dict(color="black", marker="o"),
    "Tsit5+PID": dict(color="tab:gray", marker="v"),
    "Dopri8+PID": dict(color="tab:blue", marker="s"),
    "Taylor()+TC": dict(color="tab:red", marker="D"),
    "Taylor(orders)+TC": dict(color="tab:orange", marker="^", linestyle="--"),
}


def plot(problem, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {}
    for name, tol, r in rows:
        if "failed" not in r:
            by.setdefault(name, []).append((tol, r))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    for name, runs in by.items():
        runs.sort(key=lambda x: -x[0])
        style = STYLES.get(name, {})
        ax1.loglog(
            [run_ms(r) for _, r in runs],
            [max(r["error"], 1e-17) for _, r in runs],
            label=name,
            **style,
        )
        ax2.loglog(
            [t for t, _ in runs], [steps_taken(name, r) for _, r in runs],
            label=name, **style,
        )
    ax1.axhline(TARGET_ERROR, color="0.6", linewidth=0.8, linestyle=":")
    ax1.set_xlabel("run time (ms)")
    ax1.set_ylabel("error at t1 (mixed, max norm)")
    ax1.set_title("error vs run time")
    ax2.set_xlabel("tol (rtol = atol)")
    ax2.set_ylabel("steps taken (accepted)")
    ax2.set_title("steps vs tol")
    ax2.invert_xaxis()
    for ax in (ax1, ax2):
        ax.grid(True, which="major", alpha=0.3)
    ax1.legend(fontsize=8)
    fig.suptitle(problem.title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- Main -------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: tols {QUICK_TOLS}, problems {QUICK_PROBLEMS}, fewer repeats "
        "(--tols/--problems still override)",
    )
    parser.add_argument("--tols", type=float, nargs="+", help=f"default {ALL_TOLS}")
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS),
                        help="default: all")
    parser.add_argument(
        "--solvers",
        nargs="+",
        choices=[s.name for s in SOLVERS],
        metavar="NAME",
        help=f"default: all of {[s.name for s in SOLVERS]}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results_workprecision.md",
        help="Markdown file for the results (default: %(default)s)",
    )
    parser.add_argument(
        "--img-dir",
        type=Path,
        help="where the plots go, as workprecision_<problem>.png (default: docs/img; "
        "with --quick, no plots unless --img-dir is given, so that a smoke run leaves "
        "the documented plots alone)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the plots")
    cli = parser.parse_args()
    if cli.img_dir is None:
        cli.img_dir = ROOT / "docs" / "img"
        cli.no_plots = cli.no_plots or cli.quick

    tols = sorted(cli.tols or (QUICK_TOLS if cli.quick else ALL_TOLS), reverse=True)
    problem_keys = cli.problems or (QUICK_PROBLEMS if cli.quick else list(PROBLEMS))
    solvers = [s for s in SOLVERS if cli.solvers is None or s.name in cli.solvers]
    bc.MAX_STEPS = MAX_STEPS
    if cli.quick:
        bc.TIMING.diffrax_repeats, bc.TIMING.heyoka_repeats = 2, 3

    lines = header(cli, problem_keys, tols, solvers)
    print("\n".join(lines), flush=True)
    for key in problem_keys:
        problem = PROBLEMS[key]()
        rows = bc.run_grid(
            problem, tols, solvers,
            lambda r: f"orders {fmt_order(r['order'])}, "
            f"steps {r['accepted']}/{r['rejected'] or 0}, "
            f"error {r['error']:.2e}, compile {r['compile_s']:.2f} s, "
            f"run {run_ms(r):.3f} ms",
        )
        problem_lines = table(problem, rows) + summary(problem, rows)
        if not cli.no_plots:
            path = cli.img_dir / f"workprecision_{key}.png"
            plot(problem, rows, path)
            try:
                shown = path.resolve().relative_to(ROOT)
            except ValueError:
                shown = path
            problem_lines += ["", f"Plot: `{shown}`."]
        print("\n".join(problem_lines), flush=True)
        lines += problem_lines

    cli.out.write_text("\n".join(lines) + "\n")
    print(f"\nWritten to {cli.out}")


if __name__ == "__main__":
    main()
