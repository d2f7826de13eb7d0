"""Benchmark: work-precision on stiff problems, Hermite-Obreschkoff against Kvaerno5 and scipy.

For the stiff float64 problems of `stiff_problems.py` (references from scipy Radau at
rtol 1e-13, cross-checked there),

- `robertson`: Robertson's kinetics, t in [0, 1e11] (atol = 1e-6 tol throughout);
- `vdp1e3`, `vdp1e6`: Van der Pol, mu = 1e3 and 1e6, Hairer's time-scaled form,
  t in [0, 2];
- `brusselator`: 1-D Brusselator by the method of lines, 128 unknowns, t in [0, 10],

and tolerances 1e-4 ... 1e-10 (rtol = tol, atol = tol except Robertson), the solvers:

- `Kvaerno5+PID`: `diffrax.Kvaerno5()` with `diffrax.PIDController(rtol, atol)`;
- `scipy Radau`, `scipy BDF`: `scipy.integrate.solve_ivp` with the analytic Jacobian;
- `HO(p,q)+PID`: `taylorode.HermiteObreschkoff(p, q)` with `diffrax.PIDController`,
  for each pair given by `--ho` (default 2,3 and 3,4). Skipped, with a note, where
  this checkout of taylorode has no `HermiteObreschkoff`.
- `XHO(p,q)+PID`: `taylorode.ExtrapolatedHermiteObreschkoff(p, q)` (HO(p, q) with
  Richardson extrapolation, order p + q + 1) with `diffrax.PIDController`, for each
  pair given by `--xho` (default 1,2 and 2,3); skipped where absent.

Per run: accepted/rejected steps, Newton iterations and Jacobian evaluations
(`taylorode.implicit_stats` for HO; scipy's nfev/njev/nlu), the error at t1 against
the reference (Robertson: also the largest componentwise relative error, which its
comparisons use, y2's relative error and the conservation defect),
compile and run time; then a "done-when" summary per problem for issue 5 (run time and
steps of Kvaerno5 / the best HO at equal achieved error) and a work-precision plot per
problem (`docs/img/stiff_<problem>.png`). Timing and result conventions are
bench_control's; `run_diffrax` is bench_control's with a per-problem dt0 (see
`DIFFRAX_DT0`: diffrax 0.7.2's dt0=None always starts at 0.01).

    python benchmarks/bench_stiff.py                      # full run
    python benchmarks/bench_stiff.py --quick              # smoke run
    python benchmarks/bench_stiff.py --problems robertson --tols 1e-6 1e-8 \\
        --solvers Kvaerno5+PID HO XHO --ho 2,3 4,5 --xho 1,2
    python benchmarks/bench_stiff.py --check-references   # references and Jacobians
"""

import argparse
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_control as bc  # noqa: E402  (also enables float64 in JAX)
import stiff_problems as sp  # noqa: E402

import taylorode  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent
ALL_TOLS = (1e-4, 1e-6, 1e-8, 1e-10)
QUICK_TOLS = (1e-4, 1e-8)
QUICK_PROBLEMS = ("robertson", "vdp1e3")
DEFAULT_HO = ((2, 3), (3, 4))
DEFAULT_XHO = ((1, 2), (2, 3))
MAX_STEPS = 200_000
# Issue 5: "At equal achieved error, HO solvers beat diffrax Kvaerno5's run time on
# Robertson and Van der Pol mu = 1000 and take fewer steps."
ISSUE_PROBLEMS = ("robertson", "vdp1e3")
TARGET_ERRORS = (1e-4, 1e-6, 1e-8)

# dt0 for the diffrax solves: None (diffrax picks it), except where that fails. In
# diffrax 0.7.2, dt0=None gives a first step of 0.01 for every ODE: diffeqsolve wraps
# the terms in a WrapTerm before PIDController.init, and the initial-step heuristic
# (`_select_initial_step`) returns 0.01 for anything that is not an ODETerm. On
# vdp1e6, Kvaerno5 then rejects every step (0 accepted in 2e6 steps at tol 1e-4
# and 1e-6; dt0 = 0.01 does the same, dt0 = 1e-3 ... 1e-9 all work).
DIFFRAX_DT0 = {"vdp1e6": 1e-6}

HAVE_HO = hasattr(taylorode, "HermiteObreschkoff")
HAVE_XHO = hasattr(taylorode, "ExtrapolatedHermiteObreschkoff")
HAVE_IMPLICIT_STATS = hasattr(taylorode, "implicit_stats")


@dataclasses.dataclass
class Timing:
    scipy_repeats: int = 5  # timed solves; median reported (no compilation to warm)


TIMING = Timing()
PROBLEMS = sp.PROBLEMS


# --- Solvers ----------------------------------------------------------------------


SOLVERS: list[bc.SolverConfig] = []


def solver_config(name):
    def register(fn):
        SOLVERS.append(bc.SolverConfig(name, fn))
        return fn

    return register


def atol(problem, tol):
    return problem.atol_factor * tol


def finish(problem, r, y1, **counters):
    """Add the counters (Newton iterations, Jacobian evaluations, f evaluations, LU
    decompositions; None where the solver does not report them) and the problem's
    extra error measures to a result dict."""
    r.update(
        newton=counters.get("newton"),
        jac_evals=counters.get("jac_evals"),
        nfev=counters.get("nfev"),
        nlu=counters.get("nlu"),
        extra_errors=problem.extra_errors(np.asarray(y1), problem.reference),
    )
    return r


def short_error(exc):
    """The line of an exception's message that says what went wrong: for an error
    raised inside a jitted solve (`eqx.error_if`, such as "The maximum number of
    solver steps was reached"), equinox's message, not the callback traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "EquinoxRuntimeError: " in line:
            return line.split("EquinoxRuntimeError: ", 1)[1]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def run_diffrax(problem, tol, solver, stepsize_controller, *, order, outputs, **kwargs):
    """`bench_control.run_diffrax` (compile once, a warm-up call, the best of
    `bc.TIMING.diffrax_repeats` calls), but with the problem's `DIFFRAX_DT0` for dt0,
    and raising a one-line error where the solve fails. `outputs(sol)` is computed
    inside the jit; its value comes back under "outputs"."""
    dt0 = DIFFRAX_DT0.get(problem.key)

    @jax.jit
    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field),
            solver,
            t0=0.0,
            t1=problem.t1,
            dt0=dt0,
            y0=y0,
            stepsize_controller=stepsize_controller,
            max_steps=MAX_STEPS,
            **kwargs,
        )
        return sol.stats, outputs(sol)

    try:
        y0 = jnp.asarray(problem.y0)
        start = time.perf_counter()
        compiled = solve.lower(y0).compile()
        compile_s = time.perf_counter() - start
        stats, out = jax.block_until_ready(compiled(y0))  # warm-up
        times = []
        for _ in range(bc.TIMING.diffrax_repeats):
            start = time.perf_counter()
            stats, out = jax.block_until_ready(compiled(y0))
            times.append(time.perf_counter() - start)
    except Exception as exc:
        raise RuntimeError(short_error(exc)) from None

    stats = {k: np.asarray(v).tolist() for k, v in stats.items()}
    out = jax.tree_util.tree_map(lambda x: np.asarray(x).tolist(), out)
    return dict(
        outputs=out,
        **bc.result(
            order=order,
            accepted=stats["num_accepted_steps"],
            rejected=stats["num_rejected_steps"],
            error=sp.mixed_error(out["y1"], problem.reference),
            compile_s=compile_s,
            run_times_s=times,
            run_stat="best",
            stats=stats,
        ),
    )


@solver_config("Kvaerno5+PID")
def kvaerno5_pid(problem, tol):
    """diffrax's Kvaerno5 (ESDIRK, order 5, VeryChord Newton with the controller's
    tolerances; diffrax reports no Newton or Jacobian counts)."""
    r = run_diffrax(
        problem,
        tol,
        diffrax.Kvaerno5(),
        diffrax.PIDController(rtol=tol, atol=atol(problem, tol)),
        order=5,
        outputs=lambda sol: {"y1": sol.ys[-1]},
    )
    return finish(problem, r, r["outputs"]["y1"])


def run_scipy(problem, tol, method, order):
    """`solve_ivp` with the analytic Jacobian: the median of `TIMING.scipy_repeats`
    solves; steps = len(sol.t) - 1 (scipy counts no rejections)."""
    run = sp.ScipyRun(method, tol, atol(problem, tol))
    times = []
    for _ in range(TIMING.scipy_repeats):
        start = time.perf_counter()
        sol = problem.solve(run)
        times.append(time.perf_counter() - start)
    y1 = sol.y[:, -1]
    r = bc.result(
        order=order,
        accepted=len(sol.t) - 1,
        rejected=None,
        error=sp.mixed_error(y1, problem.reference),
        compile_s=float("nan"),
        run_times_s=times,
        run_stat="median",
        stats=dict(nfev=sol.nfev, njev=sol.njev, nlu=sol.nlu),
    )
    return finish(problem, r, y1, nfev=sol.nfev, jac_evals=sol.njev, nlu=sol.nlu)


@solver_config("scipy Radau")
def scipy_radau(problem, tol):
    return run_scipy(problem, tol, "Radau", 5)


@solver_config("scipy BDF")
def scipy_bdf(problem, tol):
    return run_scipy(problem, tol, "BDF", "1-5")


def ho_name(p, q, extrapolated=False):
    return f"{'X' if extrapolated else ''}HO({p},{q})+PID"


def ho_config(p, q, extrapolated=False):
    """`taylorode.HermiteObreschkoff(p, q)` (order p + q), or with `extrapolated`
    `taylorode.ExtrapolatedHermiteObreschkoff(p, q)` (order p + q + 1), with diffrax's
    PIDController, recording `taylorode.implicit_stats` where it exists."""
    if extrapolated:
        solver, order = taylorode.ExtrapolatedHermiteObreschkoff(p, q), p + q + 1
    else:
        solver, order = taylorode.HermiteObreschkoff(p, q), p + q

    def run(problem, tol):
        def outputs(sol):
            out = {"y1": sol.ys[-1]}
            if HAVE_IMPLICIT_STATS:
                out["implicit"] = taylorode.implicit_stats(sol)
            return out

        r = run_diffrax(
            problem,
            tol,
            solver,
            diffrax.PIDController(rtol=tol, atol=atol(problem, tol)),
            order=order,
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
            outputs=outputs,
        )
        implicit = r["outputs"].get("implicit", {})
        return finish(
            problem,
            r,
            r["outputs"]["y1"],
            newton=implicit.get("newton_iterations"),
            jac_evals=implicit.get("jacobian_evaluations"),
        )

    return bc.SolverConfig(ho_name(p, q, extrapolated), run)


def is_ho(name):
    return name.startswith(("HO(", "XHO("))


def run_ms(r):
    return r["run_ms_best"] if r["run_stat"] == "best" else r["run_ms_median"]


def error_name(problem):
    return problem.comparison_error or "error"


def comparison_error(problem):
    """r -> the error that the summary and the plots compare: the mixed error, or
    the problem's `comparison_error` (Robertson: the max componentwise relative
    error)."""
    if problem.comparison_error is None:
        return lambda r: r["error"]
    return lambda r: r["extra_errors"][problem.comparison_error]


# --- Report -----------------------------------------------------------------------


def header(cli, problems, tols, solvers, skipped):
    lines = [
        "# Stiff work-precision: Hermite-Obreschkoff vs Kvaerno5 and scipy Radau/BDF",
        "",
        *bc.environment_lines(cli.quick),
        f"- Problems: {', '.join(problems)}; tols: "
        f"{', '.join(f'{t:.0e}' for t in tols)}; solvers: "
        f"{', '.join(s.name for s in solvers)}",
    ]
    if skipped:
        lines.append(f"- Skipped: {skipped}")
    lines += [
        "- Settings: float64; t0 = 0; rtol = tol and atol = tol for every solver, "
        "except Robertson: atol = 1e-6 tol (y2 is at most 3.7e-5). diffrax: "
        "`PIDController(rtol, atol)` with its default coefficients, `dt0=None` "
        "(except "
        + ", ".join(f"{k}: dt0 = {v:g}" for k, v in DIFFRAX_DT0.items())
        + ": diffrax 0.7.2's dt0=None always starts with a step of 0.01, as its "
        "initial-step heuristic skips the WrapTerm that diffeqsolve wraps terms in, "
        "and with that first step Kvaerno5 never accepts a step on vdp1e6), "
        f"`max_steps={MAX_STEPS}`, whole solve under `jax.jit`; Kvaerno5 with its "
        "default root finder (VeryChord, the controller's tolerances, at most 10 "
        "iterations). `HO(p,q)+PID`: `taylorode.HermiteObreschkoff(p, q)` (order "
        "p + q), `XHO(p,q)+PID`: `taylorode.ExtrapolatedHermiteObreschkoff(p, q)` "
        "(HO(p, q) steps of h and twice h/2, Richardson-extrapolated: order "
        "p + q + 1; each step is three HO solves), both with "
        "`SaveAt(t1=True, solver_state=True)`. scipy: `solve_ivp(method=...)` "
        "with the analytic Jacobian (sparse for the Brusselator).",
        "- **steps (acc/rej)**: diffrax's counts; scipy: len(sol.t) - 1 accepted, "
        "rejections not reported. **Newton**: Newton iterations (HO: "
        "`taylorode.implicit_stats(sol)`; diffrax's Kvaerno5 and scipy report none). "
        "**Jac**: Jacobian evaluations (HO: `implicit_stats`; scipy: njev). **f**, "
        "**LU**: scipy's nfev and nlu.",
        "- **error** = max_i |y_i(t1) - ref_i| / (1 + |ref_i|) (mixed abs/rel, max "
        "norm), as in bench_control; references in each section. Robertson's "
        "comparisons use **max rel err** = max_i |y_i(t1) - ref_i| / |ref_i| instead "
        "(its mixed error sees only y3 ~ 1).",
        "- **compile s**: diffrax: `jax.jit(...).lower(y0).compile()`; scipy: none.",
        f"- **run ms**: diffrax: best of {bc.TIMING.diffrax_repeats} calls after a "
        f"warm-up call; scipy: median of {TIMING.scipy_repeats} solves. Wall time, "
        "single process.",
        "- **Done when** (issue 5): at equal achieved error, HO solvers beat diffrax "
        "Kvaerno5's run time on Robertson and Van der Pol mu = 1000 and take fewer "
        f"steps; checked at errors {', '.join(f'{e:.0e}' for e in cli.target_errors)} "
        "against the best HO or XHO (least run time) by run time and accepted steps, each "
        "interpolated log-log in the error between the two tols that bracket it. "
        "The verdict uses accepted steps; **steps tried** (accepted + rejected, "
        "diffrax's `num_steps`) is shown beside it, since every rejected step costs "
        "a full step's work.",
    ]
    return lines


def fmt_count(x):
    return "" if x is None else str(int(x))


def table(problem, rows):
    extra_keys = list(problem.extra_errors(problem.reference, problem.reference))
    lines = [
        "",
        f"## {problem.title}",
        "",
        f"Reference: {problem.reference_note}.",
        "",
        "| solver | tol | order | steps (acc/rej) | Newton | Jac | f | LU | error "
        "| error/tol | " + "".join(f"{k} | " for k in extra_keys)
        + "compile s | run ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        + "---:|" * len(extra_keys) + "---:|---:|",
    ]
    notes = []
    blank = "| " * (8 + len(extra_keys))
    for name, tol, r in rows:
        if "failed" in r:
            lines.append(f"| {name} | {tol:.0e} | | failed {blank}")
            notes.append(f"- {name}, tol {tol:.0e}: failed: {r['failed']}")
            continue
        rej = "-" if r["rejected"] is None else r["rejected"]
        compile_s = "" if math.isnan(r["compile_s"]) else f"{r['compile_s']:.2f}"
        lines.append(
            f"| {name} | {tol:.0e} | {r['order']} | {r['accepted']}/{rej} "
            f"| {fmt_count(r['newton'])} | {fmt_count(r['jac_evals'])} "
            f"| {fmt_count(r['nfev'])} | {fmt_count(r['nlu'])} "
            f"| {r['error']:.2e} | {r['error'] / tol:.3g} | "
            + "".join(f"{r['extra_errors'][k]:.2e} | " for k in extra_keys)
            + f"{compile_s} | {run_ms(r):.3f} |"
        )
        if r["notes"]:
            notes.append(f"- {name}, tol {tol:.0e}: {r['notes']}")
    if notes:
        lines += ["", *notes]
    return lines


# --- Done-when summary ------------------------------------------------------------


def at_error(runs, target, metric, error):
    """`metric(r)` at achieved error `error(r) == target` from one solver's runs
    [(tol, r)]: log-log interpolation in the error between the first two consecutive
    tols (loosest first) whose errors bracket the target; else the least value among
    the runs with error <= target; else None. Returns (value, how)."""
    runs = sorted([(t, r) for t, r in runs if "failed" not in r], key=lambda x: -x[0])
    for (ta, ra), (tb, rb) in zip(runs, runs[1:]):
        ea, eb = error(ra), error(rb)
        if ea > target >= eb and eb > 0:
            w = (math.log(target) - math.log(ea)) / (math.log(eb) - math.log(ea))
            va, vb = math.log(metric(ra)), math.log(metric(rb))
            return math.exp(va + w * (vb - va)), f"tols {ta:.0e}-{tb:.0e}"
    ok = [(metric(r), t) for t, r in runs if error(r) <= target]
    if ok:
        v, t = min(ok)
        return v, f"tol {t:.0e}"
    return None, "not reached"


def fmt_at(value, how, fmt, unit=""):
    """A value from `at_error` and how it was got ("not reached" / "not run")."""
    return how if value is None else f"{value:{fmt}}{unit} ({how})"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def summary(problem, rows, targets):
    by = {}
    for name, tol, r in rows:
        by.setdefault(name, []).append((tol, r))
    lines = ["", f"### Done when: {problem.key}", ""]
    if problem.key in ISSUE_PROBLEMS:
        lines.append(
            "Issue 5 target: HO beats Kvaerno5's run time at equal error and takes "
            "fewer steps (both ratios Kvaerno5 / best HO > 1)."
        )
    else:
        lines.append("For information (issue 5 names Robertson and Van der Pol "
                     "mu = 1000 only).")
    steps = lambda r: r["accepted"]  # noqa: E731
    # diffrax's `num_steps`: accepted + rejected, every step tried.
    tried = lambda r: r["accepted"] + r["rejected"]  # noqa: E731
    error = comparison_error(problem)
    hos = [name for name in by if is_ho(name)]
    k5 = by.get("Kvaerno5+PID")
    lines += [
        "",
        f"| {error_name(problem)} | Kvaerno5 ms | best HO | HO ms | time K5/HO "
        "| Kvaerno5 steps | HO steps | steps K5/HO | K5/HO steps tried | verdict |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    info = []
    for target in targets:
        k5_ms = at_error(k5, target, run_ms, error) if k5 else (None, "not run")
        k5_steps = at_error(k5, target, steps, error) if k5 else (None, "not run")
        best = None
        for name in hos:
            ms = at_error(by[name], target, run_ms, error)
            if ms[0] is not None and (best is None or ms[0] < best[1][0]):
                best = (name, ms, at_error(by[name], target, steps, error),
                        at_error(by[name], target, tried, error))
        if best is None:
            name = "none reached" if hos else "not run"
            ho_ms = ho_steps = ho_tried = (None, "not reached" if hos else "not run")
        else:
            name, ho_ms, ho_steps, ho_tried = best
        k5_tried = at_error(k5, target, tried, error) if k5 else (None, "not run")
        tr, sr = ratio(k5_ms[0], ho_ms[0]), ratio(k5_steps[0], ho_steps[0])
        trr = ratio(k5_tried[0], ho_tried[0])
        if tr is None or sr is None:
            verdict = "n/a"
        else:
            ok = tr > 1 and sr > 1
            verdict = ("met" if ok else "**missed**") if problem.key in ISSUE_PROBLEMS \
                else ("would be met" if ok else "would be missed")
        lines.append(
            f"| {target:.0e} | {fmt_at(*k5_ms, '.3g')} | {name} "
            f"| {fmt_at(*ho_ms, '.3g')} | {'' if tr is None else f'{tr:.2f}'} "
            f"| {fmt_at(*k5_steps, '.0f')} | {fmt_at(*ho_steps, '.0f')} "
            f"| {'' if sr is None else f'{sr:.2f}'} | {'' if trr is None else f'{trr:.2f}'} "
            f"| {verdict} |"
        )
        others = []
        for other in by:
            if other == "Kvaerno5+PID" or is_ho(other):
                continue
            ms = at_error(by[other], target, run_ms, error)
            others.append(f"{other} {fmt_at(*ms, '.3g', ' ms')}")
            if best is not None and ms[0] is not None:
                others[-1] += f" ({ms[0] / ho_ms[0]:.2f}x {name})"
        if others:
            info.append(f"at {error_name(problem)} {target:.0e}: " + "; ".join(others))
    if not hos:
        lines += ["", "No HO solver ran: no verdict."]
    if info:
        lines += ["", "Other solvers at equal error, for information: "
                  + "; ".join(info) + "."]
    return lines


# --- Plots ------------------------------------------------------------------------


STYLES = {
    "Kvaerno5+PID": dict(color="tab:blue", marker="s"),
    "scipy Radau": dict(color="black", marker="o"),
    "scipy BDF": dict(color="tab:gray", marker="v"),
}
HO_COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink")
HO_MARKERS = ("D", "^", "P", "X", "*")


def style(name, index):
    if name in STYLES:
        return STYLES[name]
    return dict(color=HO_COLORS[index % len(HO_COLORS)],
                marker=HO_MARKERS[index % len(HO_MARKERS)])


def plot(problem, rows, targets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {}
    for name, tol, r in rows:
        if "failed" not in r:
            by.setdefault(name, []).append((tol, r))
    error = comparison_error(problem)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    n_ho = 0
    for name, runs in by.items():
        runs.sort(key=lambda x: -x[0])
        s = style(name, n_ho)
        n_ho += is_ho(name)
        errors = [max(error(r), 1e-17) for _, r in runs]
        ax1.loglog([run_ms(r) for _, r in runs], errors, label=name, **s)
        ax2.loglog([r["accepted"] for _, r in runs], errors, label=name, **s)
    for ax in (ax1, ax2):
        for target in targets:
            ax.axhline(target, color="0.6", linewidth=0.8, linestyle=":")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_ylabel(
            "error at t1 (mixed, max norm)" if problem.comparison_error is None
            else f"{problem.comparison_error} at t1"
        )
    ax1.set_xlabel("run time (ms)")
    ax1.set_title("error vs run time")
    ax2.set_xlabel("accepted steps")
    ax2.set_title("error vs steps")
    ax1.legend(fontsize=8)
    fig.suptitle(problem.title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- Main -------------------------------------------------------------------------


def parse_pair(text):
    try:
        p, q = (int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected p,q (two integers, e.g. 2,3), got {text!r}"
        ) from None
    return p, q


def check_references(problem):
    print(f"\n{problem.key}: {problem.title}")
    print(f"  reference: {problem.reference_note}")
    print(f"  analytic Jacobian vs jax.jacfwd: {sp.check_jacobian(problem):.1e} at y0, "
          f"{sp.check_jacobian(problem, problem.reference):.1e} at the reference")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: tols {QUICK_TOLS}, problems {QUICK_PROBLEMS}, 2 repeats "
        "(--tols/--problems still override)",
    )
    parser.add_argument("--tols", type=float, nargs="+", help=f"default {ALL_TOLS}")
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS),
                        help="default: all")
    base_names = [s.name for s in SOLVERS]
    parser.add_argument(
        "--solvers",
        nargs="+",
        choices=base_names + ["HO", "XHO"],
        metavar="NAME",
        help=f"default: all of {base_names + ['HO', 'XHO']} ('HO', 'XHO': the --ho, "
        "--xho pairs)",
    )
    parser.add_argument(
        "--ho",
        type=parse_pair,
        nargs="*",
        default=list(DEFAULT_HO),
        metavar="P,Q",
        help="the HermiteObreschkoff(p, q) pairs to run (default: "
        + " ".join(f"{p},{q}" for p, q in DEFAULT_HO) + "; none if given empty)",
    )
    parser.add_argument(
        "--xho",
        type=parse_pair,
        nargs="*",
        default=list(DEFAULT_XHO),
        metavar="P,Q",
        help="the ExtrapolatedHermiteObreschkoff(p, q) pairs to run (default: "
        + " ".join(f"{p},{q}" for p, q in DEFAULT_XHO) + "; none if given empty)",
    )
    parser.add_argument(
        "--target-errors",
        type=float,
        nargs="+",
        default=list(TARGET_ERRORS),
        help="achieved errors at which the done-when summary compares solvers "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--check-references",
        action="store_true",
        help="print each reference's cross-checks and the Jacobian check, then exit",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results_stiff.md",
        help="Markdown file for the results (default: %(default)s)",
    )
    parser.add_argument(
        "--img-dir",
        type=Path,
        help="where the plots go, as stiff_<problem>.png (default: docs/img; with "
        "--quick, no plots unless --img-dir is given, so that a smoke run leaves the "
        "documented plots alone)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the plots")
    cli = parser.parse_args()
    if cli.img_dir is None:
        cli.img_dir = ROOT / "docs" / "img"
        cli.no_plots = cli.no_plots or cli.quick

    tols = sorted(cli.tols or (QUICK_TOLS if cli.quick else ALL_TOLS), reverse=True)
    problem_keys = cli.problems or (QUICK_PROBLEMS if cli.quick else list(PROBLEMS))
    bc.MAX_STEPS = MAX_STEPS
    if cli.quick:
        bc.TIMING.diffrax_repeats, TIMING.scipy_repeats = 2, 2

    # A solve that fails inside jit (eqx.error_if) logs the callback's traceback;
    # `short_error` keeps the message for the table.
    logging.getLogger("jax._src.callback").setLevel(logging.CRITICAL)

    if cli.check_references:
        for key in problem_keys:
            check_references(PROBLEMS[key]())
        return

    wanted = lambda name: cli.solvers is None or name in cli.solvers  # noqa: E731
    solvers = [s for s in SOLVERS if wanted(s.name)]
    skipped = ""
    if wanted("HO") and cli.ho:
        if HAVE_HO:
            solvers += [ho_config(p, q) for p, q in cli.ho]
            if not HAVE_IMPLICIT_STATS:
                skipped = ("Newton/Jacobian counts of the HO rows: "
                           "`taylorode.implicit_stats` absent in this checkout")
        else:
            skipped = (
                ", ".join(ho_name(p, q) for p, q in cli.ho)
                + ": `taylorode.HermiteObreschkoff` absent in this checkout"
            )
            print(f"Skipping {skipped}", file=sys.stderr)

    if wanted("XHO") and cli.xho:
        if HAVE_XHO:
            solvers += [ho_config(p, q, extrapolated=True) for p, q in cli.xho]
        else:
            note = (", ".join(ho_name(p, q, True) for p, q in cli.xho)
                    + ": `taylorode.ExtrapolatedHermiteObreschkoff` absent in this checkout")
            skipped = f"{skipped}; {note}" if skipped else note
            print(f"Skipping {note}", file=sys.stderr)

    lines = header(cli, problem_keys, tols, solvers, skipped)
    print("\n".join(lines), flush=True)
    for key in problem_keys:
        problem = PROBLEMS[key]()
        print(f"[{key}] reference ...", file=sys.stderr, flush=True)
        problem.reference_note  # noqa: B018  (solve for the reference now)
        rows = bc.run_grid(
            problem, tols, solvers,
            lambda r: f"steps {r['accepted']}/{r['rejected'] or 0}, "
            f"error {r['error']:.2e}, "
            + ("" if math.isnan(r["compile_s"])
               else f"compile {r['compile_s']:.2f} s, ")
            + f"run {run_ms(r):.3f} ms",
        )
        problem_lines = table(problem, rows) + summary(problem, rows, cli.target_errors)
        if not cli.no_plots:
            path = cli.img_dir / f"stiff_{key}.png"
            plot(problem, rows, cli.target_errors, path)
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
