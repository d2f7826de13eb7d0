"""Benchmark: work-precision of taylorode's automatic order against heyoka, Tsit5, Dopri8.

For four float64 problems with accurate references (`_problems.py`),

- `kepler`: Kepler problem, e = 0.9, 10 periods from pericentre;
- `lorenz`: Lorenz system, sigma = 10, rho = 28, beta = 8/3, y0 = (1, 1, 1), t in [0, 5]
  (chaotic: the horizon is kept short so that float64 solutions can still be checked);
- `arenstorf`: restricted three-body Arenstorf orbit, one period;
- `pleiades`: the 7-body Pleiades problem, t in [0, 3],

and tolerances 1e-6 ... 1e-14 (rtol = atol = tol), five solvers:

- `heyoka`: `heyoka.taylor_adaptive(sys, y0, tol=tol)` (its own order and step rules);
- `Tsit5+PID`, `Dopri8+PID`: diffrax with `PIDController(rtol=tol, atol=tol)`;
- `Taylor()+TC`: `taylorode.Taylor()` (order p from the tolerance, Jorba-Zou's rule
  p = max(2, ceil(-ln(tol)/2 + 1))) with `taylorode.TaylorController(rtol=tol, atol=tol)`;
- `Taylor(orders)+TC`: `taylorode.Taylor(orders=(p-2, p, p+2))`, the order chosen per step
  among the three, with the same controller.

Per run: the orders used (`taylorode.order_counts`), accepted/rejected steps, the error at
t1, compile and run time; then a "targets" summary per problem at equal achieved error
1e-10 against the performance targets, a work-precision plot per problem
(`docs/img/workprecision_<problem>.png`), and an overview of the summaries (the table
that docs/benchmarks.md shows). Timing and the heyoka entry are the harness's, as in
`bench_control.py`.

    python benchmarks/bench_workprecision.py              # full run (~4 min)
    python benchmarks/bench_workprecision.py --quick      # smoke run
    python benchmarks/bench_workprecision.py --problems lorenz --tols 1e-8 1e-12 \\
        --solvers heyoka "Taylor()+TC"
"""

import math

import _harness as h
import _problems as P
import diffrax

import taylorode


PROBLEMS = P.NONSTIFF
GRID = h.Grid(
    problems=PROBLEMS,
    tols=(1e-6, 1e-8, 1e-10, 1e-12, 1e-14),
    quick_problems=("kepler", "lorenz"),
    quick_tols=(1e-8, 1e-12),
)
TARGET_ERROR = 1e-10
MAX_STEPS = 1_000_000  # Tsit5 at 1e-14 takes tens of thousands of steps

# The targets for Taylor() + TaylorController, at equal achieved error TARGET_ERROR.
TARGET_SPEEDUP = 3.0  # run time of Dopri8 / Taylor()+TC at equal error, at least
TARGET_STEPS = 1.2  # steps of Taylor()+TC / heyoka at the same tol, at most
TARGET_REJECTED = 0.02  # rejected / all steps of Taylor()+TC, at most
TARGET_COMPILE = 2.0  # compile time of Taylor()+TC / Dopri8, at most


# --- Solvers ----------------------------------------------------------------------


SOLVERS = h.Registry()
SOLVERS.add("heyoka")(h.run_heyoka)


SOLVERS.add("Tsit5+PID")(h.diffrax_entry(lambda tol: diffrax.Tsit5(), h.pid, 5))
SOLVERS.add("Dopri8+PID")(h.diffrax_entry(lambda tol: diffrax.Dopri8(), h.pid, 8))


def run_taylor(problem, tol, solver, settings, **solve_kwargs):
    """A `taylorode.Taylor` solve with `TaylorController`, recording the orders used;
    extra keyword arguments go to `diffeqsolve`."""
    r = h.run_diffrax(
        problem,
        solver,
        taylorode.TaylorController(rtol=tol, atol=tol),
        settings=settings,
        order=None,
        saveat=diffrax.SaveAt(t1=True, solver_state=True),
        outputs=taylorode.order_counts,
        **solve_kwargs,
    )
    counts = {int(q): int(n) for q, n in r["outputs"].items()}
    r["order"] = counts
    if sum(counts.values()) != r["accepted"]:
        r["notes"] = (
            f"order_counts sum to {sum(counts.values())}, but num_accepted_steps "
            f"= {r['accepted']}"
        )
    return r


@SOLVERS.add("Taylor()+TC")
def taylor_auto_tc(problem, tol, settings):
    return run_taylor(problem, tol, taylorode.Taylor(), settings)


@SOLVERS.add("Taylor(orders)+TC")
def taylor_orders_tc(problem, tol, settings):
    p = h.heyoka_order(tol)
    return run_taylor(problem, tol, taylorode.Taylor(orders=(p - 2, p, p + 2)), settings)


def steps_taken(name, r):
    """Accepted steps (every step diffrax counts is one taken)."""
    return r["accepted"]


def rejected_fraction(name, r):
    rej = r["rejected"] or 0
    total = steps_taken(name, r) + rej
    return rej / total if total else 0.0


# --- Report -----------------------------------------------------------------------


def header(cli, problems, tols, solvers, settings):
    return [
        "# Work-precision: taylorode's automatic order vs heyoka, Tsit5 and Dopri8",
        "",
        *h.environment_lines(cli.quick),
        h.grid_line(problems, tols, solvers),
        "- Settings: float64; t0 = 0; diffrax: rtol = atol = tol, `dt0=None`, "
        f"`max_steps={settings.max_steps}`, whole solve under `jax.jit`; heyoka: "
        "`taylor_adaptive(sys, y0, tol=tol)` (default mode). `Taylor()+TC`: "
        "`taylorode.Taylor()` + `taylorode.TaylorController(rtol=tol, atol=tol)`, order "
        "p = max(2, ceil(-ln(tol)/2 + 1)) chosen by the solver from the controller's "
        "tolerance (heyoka's rule); `Taylor(orders)+TC`: `Taylor(orders=(p-2, p, p+2))`, "
        "order chosen per step.",
        "- **orders used**: heyoka's order; for taylorode, `taylorode.order_counts(sol)` "
        "as order:steps.",
        "- **steps (acc/rej)**: as diffrax counts them. "
        "heyoka never rejects a step. **rej %** = rejected / (taken + rejected).",
        "- **error** = max_i |y_i(t1) - ref_i| / (1 + |ref_i|) (mixed abs/rel, max "
        "norm), as in bench_control.",
        "- **compile s**: diffrax: `jax.jit(...).lower(y0).compile()`; heyoka: "
        "construction of `taylor_adaptive` with its in-memory cache cleared and its "
        "disk cache off.",
        f"- **run ms**: diffrax: best of {settings.diffrax_repeats} calls after a "
        f"warm-up call; heyoka: median of {settings.heyoka_repeats} "
        "`propagate_until(t1)` from a reset time and state. Wall time, single process.",
        f"- **Targets**, for `Taylor()+TC` at equal achieved error "
        f"{TARGET_ERROR:.0e}: run time >= {TARGET_SPEEDUP:g}x faster than Dopri8; steps "
        f"<= {TARGET_STEPS:g}x heyoka's at the same tol; rejections <= "
        f"{100 * TARGET_REJECTED:g} %; compile <= {TARGET_COMPILE:g}x Dopri8's.",
    ]


def table(problem, rows):
    rows_md, notes = [], []
    for name, tol, r in rows:
        if "failed" in r:
            rows_md.append([name, f"{tol:.0e}", "", "failed", "", "", "", "", ""])
            notes.append(f"- {name}, tol {tol:.0e}: failed: {r['failed']}")
            continue
        rows_md.append([
            name, f"{tol:.0e}", h.fmt_order(r["order"]),
            f"{r['accepted']}/{r['rejected'] or 0}",
            f"{100 * rejected_fraction(name, r):.1f}", f"{r['error']:.2e}",
            f"{r['error'] / tol:.3g}", f"{r['compile_s']:.2f}", f"{h.run_ms(r):.3f}",
        ])
        if r["notes"] and name != "heyoka":
            notes.append(f"- {name}, tol {tol:.0e}: {r['notes']}")
    lines = [
        *h.problem_heading(problem),
        *h.md_table(
            ["solver", "tol", "orders used", "steps (acc/rej)", "rej %", "error",
             "error/tol", "compile s", "run ms"],
            "lrrrrrrrr",
            rows_md,
        ),
    ]
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
    ok = [(h.run_ms(r), t) for t, r in runs if r["error"] <= target]
    fastest = min(ok) if ok else None
    interp = None
    for (ta, ra), (tb, rb) in zip(runs, runs[1:]):
        ea, eb = ra["error"], rb["error"]
        if ea > target >= eb and ea > 0 and eb > 0:
            w = (math.log(target) - math.log(ea)) / (math.log(eb) - math.log(ea))
            ms = math.exp(
                math.log(h.run_ms(ra))
                + w * (math.log(h.run_ms(rb)) - math.log(h.run_ms(ra)))
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
    r, how_, e = fallback
    return f"{TARGET_ERROR:.0e} not reached; at error {e:.1e}: {r:.2f} ({how_})"


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


# The metrics of the targets tables, in order: (key, label, short label, target).
METRICS = (
    ("speedup", f"run time Dopri8 / Taylor()+TC at error {TARGET_ERROR:.0e}",
     "run time Dopri8 / Taylor()+TC", f">= {TARGET_SPEEDUP:g}"),
    ("steps", "steps Taylor()+TC / heyoka (same tol; first step excluded)",
     "steps Taylor()+TC / heyoka", f"<= {TARGET_STEPS:g}"),
    ("rejected", "rejected steps of Taylor()+TC", "rejected",
     f"<= {100 * TARGET_REJECTED:g} %"),
    ("compile", "compile Taylor()+TC / Dopri8 (same tol)", "compile Taylor()+TC / Dopri8",
     f"<= {TARGET_COMPILE:g}"),
)


def summary(problem, rows):
    """The targets section of one problem: (lines, record), the record holding what
    `overview` shows: the tol compared at, and {metric key: (value, worst, verdict)}."""
    by = {}
    for name, tol, r in rows:
        by.setdefault(name, {})[tol] = r
    lines = [
        "",
        f"### Targets: {problem.key}",
        "",
    ]
    tc, d8, hk = by.get("Taylor()+TC"), by.get("Dopri8+PID"), by.get("heyoka")
    if tc is None:
        return lines + ["(Taylor()+TC not run: no summary.)"], None
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
    ]
    metrics = {}

    # Run time vs Dopri8 at equal error.
    runs = {name: list(rs.items()) for name, rs in by.items()}
    if d8:
        ratio, how, fallback = speedup_at_error(runs["Dopri8+PID"], runs["Taylor()+TC"])
        metrics["speedup"] = (
            fmt_speedup(ratio, how, fallback), "",
            verdict(ratio, TARGET_SPEEDUP, at_most=False),
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
            metrics["steps"] = (
                f"{v:.3f} ({steps_taken('Taylor()+TC', tc[t_star])}/"
                f"{steps_taken('heyoka', hk[t_star])})" if v else "n/a",
                f"{ratios[worst]:.3f} at {worst:.0e}",
                verdict(v, TARGET_STEPS, at_most=True),
            )
    # Rejections.
    fr = {t: rejected_fraction("Taylor()+TC", r) for t, r in tc.items()}
    worst = max(fr, key=fr.get)
    metrics["rejected"] = (
        f"{100 * fr[t_star]:.1f} % ({tc[t_star]['rejected']})",
        f"{100 * fr[worst]:.1f} % at {worst:.0e}",
        verdict(fr[t_star], TARGET_REJECTED, at_most=True),
    )
    # Compile time vs Dopri8 at the same tol.
    if d8:
        cr = {t: tc[t]["compile_s"] / d8[t]["compile_s"] for t in tc if t in d8}
        if cr:
            worst = max(cr, key=cr.get)
            v = cr.get(t_star)
            metrics["compile"] = (
                f"{v:.2f} ({tc[t_star]['compile_s']:.2f} s / "
                f"{d8[t_star]['compile_s']:.2f} s)" if v else "n/a",
                f"{cr[worst]:.2f} at {worst:.0e}",
                verdict(v, TARGET_COMPILE, at_most=True),
            )
    lines += h.md_table(
        ["metric", "target", "value", "worst over tols", "verdict"],
        "lrrrl",
        [[label, target, *metrics[key]] for key, label, _, target in METRICS
         if key in metrics],
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
    return lines, dict(tol=t_star, metrics=metrics)


def overview(records):
    """One table of every problem's targets summary (`records`: {problem key:
    record from `summary`}): the table docs/benchmarks.md shows."""
    rows = []
    for key, record in records.items():
        cells = [f"{key} (tol {record['tol']:.0e})"]
        for metric, *_ in METRICS:
            if metric not in record["metrics"]:
                cells.append("not run")
                continue
            value, worst, verdict_ = record["metrics"][metric]
            cells.append("; ".join(
                [value] + ([f"worst {worst}"] if worst else []) + [verdict_]
            ))
        rows.append(cells)
    return [
        "",
        "## Targets: overview",
        "",
        "The targets tables above, one row per problem: run time at equal achieved "
        f"error {TARGET_ERROR:.0e}; steps, rejections and compile time at the tol in the "
        f"first column (the loosest at which `Taylor()+TC` reaches {TARGET_ERROR:.0e}, "
        "else the tightest); each cell: the value, the worst over all tols, the verdict.",
        "",
        *h.md_table(
            ["problem", *(f"{short} ({target})" for _, _, short, target in METRICS)],
            "lrrrr",
            rows,
        ),
    ]


# --- Plots ------------------------------------------------------------------------


STYLES = {
    "heyoka": dict(color="black", marker="o"),
    "Tsit5+PID": dict(color="tab:gray", marker="v"),
    "Dopri8+PID": dict(color="tab:blue", marker="s"),
    "Taylor()+TC": dict(color="tab:red", marker="D"),
    "Taylor(orders)+TC": dict(color="tab:orange", marker="^", linestyle="--"),
}


def plot(problem, rows, path):
    plt = h.pyplot()
    by = h.group_runs(rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    for name, runs in by.items():
        runs.sort(key=lambda x: -x[0])
        style = STYLES.get(name, {})
        ax1.loglog(
            [h.run_ms(r) for _, r in runs],
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
    return h.save_figure(fig, path)


# --- Main -------------------------------------------------------------------------


def main():
    parser = h.parser(__doc__, "results_workprecision.md", quick_help=GRID.quick_help)
    GRID.add_options(parser, SOLVERS.names())
    h.add_plot_options(parser, "workprecision_<problem>.png")
    cli = h.parse_args(parser)
    tols, problem_keys = GRID.select(cli)
    solvers = SOLVERS.select(cli.solvers)
    settings = h.Settings.for_run(MAX_STEPS, cli.quick)
    img_dir = h.plot_dir(cli)

    lines = []
    h.emit(lines, header(cli, problem_keys, tols, solvers, settings))
    records = {}
    for key in problem_keys:
        problem = PROBLEMS[key]()
        problem.reference  # noqa: B018  (compute the reference before any solve)
        rows = h.run_grid(
            problem, tols, solvers, settings,
            lambda r: f"orders {h.fmt_order(r['order'])}, "
            f"steps {r['accepted']}/{r['rejected'] or 0}, "
            f"error {r['error']:.2e}, compile {r['compile_s']:.2f} s, "
            f"run {h.run_ms(r):.3f} ms",
        )
        summary_lines, record = summary(problem, rows)
        problem_lines = table(problem, rows) + summary_lines
        if record is not None:
            records[key] = record
        if img_dir is not None:
            shown = plot(problem, rows, img_dir / f"workprecision_{key}.png")
            problem_lines += ["", f"Plot: `{shown}`."]
        h.emit(lines, problem_lines)
    if records:
        h.emit(lines, overview(records))

    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
