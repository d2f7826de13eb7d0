"""Benchmark: wide fields, vectorised and written with loops: run time per step.

Two N-body problems with accurate references (`_problems.py`):

- `pleiades`: Pleiades, 7 bodies in the plane (28 coordinates), t in [0, 3];
- `outer`: the outer solar system of Hairer, Lubich & Wanner (the Sun and five outer
  planets in 3D, 36 coordinates), t in [0, 200000] days;

each with its field written two ways: vectorised (pairwise differences by broadcasting,
`pleiades`, `outer`) and body by body with Python loops, hundreds of scalar operations
(`pleiades-loops`, `outer-loops`). Solvers: heyoka (`taylor_adaptive`, its own order and
steps), `Dopri8+PID` and `Taylor()+TC` (`taylorode.Taylor()` with
`taylorode.TaylorController`), at rtol = atol = tol.

The diffrax solves are written as users write them: the initial state is an argument of
the jitted function, `max_steps=1_000_000` and `throw=False` (`--max-steps` changes the
first; diffrax's loop costs more per step with a larger `max_steps`).

Per run: steps, error, compile and run time, and run time per step (run time / (accepted
+ rejected steps); heyoka never rejects). The summary gives, per problem and form, the
run-time ratios at equal achieved error 1e-10 (Dopri8 / Taylor() and Taylor() / heyoka,
log-log interpolated as in `bench_workprecision.py`) and the cost per step at the tol
where Taylor() first reaches that error.

    python benchmarks/bench_wide.py               # all problems, tols 1e-8 ... 1e-14
    python benchmarks/bench_wide.py --quick       # smoke run
"""

import _harness as h
import _problems as P
import bench_workprecision as W
import diffrax

import taylorode


PROBLEMS = {
    "pleiades": P.pleiades_problem,
    "pleiades-loops": P.pleiades_loops_problem,
    "outer": P.outer_solar_system_problem,
    "outer-loops": lambda: P.outer_solar_system_problem(loops=True),
}
GRID = h.Grid(
    problems=PROBLEMS,
    tols=(1e-8, 1e-10, 1e-12, 1e-14),
    quick_problems=("pleiades", "outer-loops"),
    quick_tols=(1e-10,),
)
TARGET_ERROR = W.TARGET_ERROR
MAX_STEPS = 1_000_000

SOLVERS = h.Registry()
SOLVERS.add("heyoka")(h.run_heyoka)
SOLVERS.add("Dopri8+PID")(h.diffrax_entry(lambda tol: diffrax.Dopri8(), h.pid, 8, throw=False))


@SOLVERS.add("Taylor()+TC")
def taylor_tc(problem, tol, settings):
    return W.run_taylor(problem, tol, taylorode.Taylor(), settings, throw=False)


def per_step_us(r):
    """Run time per step attempted (accepted + rejected), in microseconds."""
    steps = r["accepted"] + (r["rejected"] or 0)
    return 1e3 * h.run_ms(r) / steps if steps else float("nan")


def table(rows):
    out = []
    for name, tol, r in rows:
        if "failed" in r:
            out.append([name, f"{tol:.0e}", "failed: " + r["failed"], "", "", "", "", "", ""])
            continue
        rej = "-" if r["rejected"] is None else str(r["rejected"])
        out.append([
            name, f"{tol:.0e}", h.fmt_order(r["order"]), f"{r['accepted']}/{rej}",
            f"{r['error']:.2e}", f"{r['error'] / tol:.2g}", f"{r['compile_s']:.2f}",
            f"{h.run_ms(r):.3f}", f"{per_step_us(r):.2f}",
        ])
    return h.md_table(
        ["solver", "tol", "orders used", "steps (acc/rej)", "error", "error/tol", "compile s",
         "run ms", "µs / step"],
        "llllrrrrr", out,
    )


def per_step_at_error(runs):
    """(µs per step, tol) of the loosest run with error <= TARGET_ERROR, else of the
    most accurate run, with that tol."""
    ok = [(t, r) for t, r in runs if "failed" not in r]
    if not ok:
        return None
    good = [(t, r) for t, r in ok if r["error"] <= TARGET_ERROR]
    tol, r = max(good, key=lambda x: x[0]) if good else min(ok, key=lambda x: x[1]["error"])
    return per_step_us(r), tol


def summary(records):
    """One line per problem: ratios at equal error and per-step costs."""
    out = []
    for key, rows in records:
        runs = h.group_runs(rows)
        taylor, dopri, heyoka = (runs.get(n, []) for n in ("Taylor()+TC", "Dopri8+PID", "heyoka"))
        cells = [key]
        for slow, fast in ((dopri, taylor), (taylor, heyoka)):
            if slow and fast:
                cells.append(W.fmt_speedup(*W.speedup_at_error(slow, fast, TARGET_ERROR)))
            else:
                cells.append("-")
        for runs_ in (taylor, dopri, heyoka):
            at = per_step_at_error(runs_)
            cells.append("-" if at is None else f"{at[0]:.2f} ({at[1]:.0e})")
        out.append(cells)
    return h.md_table(
        ["problem", f"Dopri8 / Taylor() run time at error {TARGET_ERROR:.0e}",
         f"Taylor() / heyoka run time at error {TARGET_ERROR:.0e}", "Taylor() µs / step (tol)",
         "Dopri8 µs / step (tol)", "heyoka µs / step (tol)"],
        "lllrrr", out,
    )


def main():
    parser = h.parser(__doc__, "results_wide.md", quick_help=GRID.quick_help)
    GRID.add_options(parser, SOLVERS.names())
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS,
                        help=f"diffrax's max_steps (default {MAX_STEPS})")
    cli = h.parse_args(parser)
    tols, keys = GRID.select(cli)
    solvers = SOLVERS.select(cli.solvers)
    settings = h.Settings.for_run(cli.max_steps, cli.quick)
    lines = []
    h.emit(lines, [
        "# Wide fields, vectorised and written with loops: run time per step",
        "",
        *h.environment_lines(cli.quick),
        h.grid_line(keys, tols, solvers),
        "- Settings: float64; t0 = 0; rtol = atol = tol. diffrax solves as users write "
        "them: y0 an argument of the jitted solve, "
        f"`max_steps={settings.max_steps}`, `throw=False`, `dt0=None`. `Taylor()+TC`: "
        "`taylorode.Taylor()` + `taylorode.TaylorController(rtol=tol, atol=tol)`; "
        "`Dopri8+PID`: `diffrax.Dopri8()` + `diffrax.PIDController(rtol=tol, atol=tol)`; "
        "heyoka: `taylor_adaptive(sys, y0, tol=tol)` (default mode).",
        "- **error** = max_i |y_i(t1) - ref_i| / (1 + |ref_i|). **compile s**: diffrax: "
        "`jax.jit(...).lower(y0).compile()`; heyoka: construction of `taylor_adaptive` "
        "(its LLVM compilation, caches off). **run ms**: diffrax: best of "
        f"{settings.diffrax_repeats} calls after a warm-up; heyoka: median of "
        f"{settings.heyoka_repeats} `propagate_until(t1)`. **µs / step**: run time / "
        "(accepted + rejected steps).",
        "",
    ])
    records = []
    for key in keys:
        problem = PROBLEMS[key]()
        h.emit(lines, [*h.problem_heading(problem), ""])
        rows = h.run_grid(
            problem, tols, solvers, settings,
            lambda r: f"error {r['error']:.2e}, {h.run_ms(r):.3f} ms, {per_step_us(r):.2f} us/step",
        )
        records.append((key, rows))
        h.emit(lines, table(rows) + [""])
    h.emit(lines, [
        "## Summary",
        "",
        f"Run-time ratios at equal achieved error {TARGET_ERROR:.0e} (interpolated log-log "
        "between the two tols whose errors bracket it, else from the fastest runs below it); "
        f"cost per step at the loosest tol whose error is <= {TARGET_ERROR:.0e} (else the "
        "most accurate run).",
        "",
        *summary(records),
    ])
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
