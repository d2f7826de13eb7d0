"""Benchmark: step-size and order control, against heyoka and diffrax's Dopri8.

heyoka's adaptive Taylor integrator (Jorba-Zou order and step-size rules, LLVM
compiled), diffrax's `Dopri8` with a `PIDController`, and `taylorode.Taylor` with a
`PIDController` or `taylorode.TaylorController` at heyoka's order for the tolerance, on
three float64 problems with accurate references (`_problems.py`):

- `kepler`: Kepler problem, e = 0.9, 10 periods from pericentre;
- `arenstorf`: restricted three-body Arenstorf orbit, one period;
- `pleiades`: the 7-body Pleiades problem of Hairer-Norsett-Wanner, t in [0, 3].

For each (problem, solver, tol): the order, accepted/rejected steps, the error at t1
against the reference, compile time and run time. One Markdown table per problem goes
to stdout and to `--out`.

The solvers form a registry: each entry is a function `(problem, tol, settings) ->
result dict` registered with `@SOLVERS.add("name")`; `_harness.run_diffrax` does the
work for any diffrax solver + step-size controller.

    python benchmarks/bench_control.py                # full run
    python benchmarks/bench_control.py --quick        # smoke run
    python benchmarks/bench_control.py --problems kepler --tols 1e-9 1e-14 \\
        --solvers heyoka "Taylor(p)+PID"
    python benchmarks/bench_control.py --check-references   # cross-check references
"""

import _harness as h
import _problems as P
import diffrax
import numpy as np

import taylorode


PROBLEMS = {key: P.NONSTIFF[key] for key in ("kepler", "arenstorf", "pleiades")}
GRID = h.Grid(
    problems=PROBLEMS,
    tols=(1e-6, 1e-9, 1e-12, 1e-14),
    quick_problems=("kepler", "arenstorf"),
    quick_tols=(1e-6, 1e-12),
)
MAX_STEPS = 200_000


# --- Solver configurations --------------------------------------------------------


SOLVERS = h.Registry()
SOLVERS.add("heyoka")(h.run_heyoka)


SOLVERS.add("Dopri8+PID")(h.diffrax_entry(lambda tol: diffrax.Dopri8(), h.pid, 8))
# taylorode.Taylor at heyoka's order for tol, with diffrax's PIDController or with
# taylorode.TaylorController.
SOLVERS.add("Taylor(p)+PID")(h.diffrax_entry(
    lambda tol: taylorode.Taylor(order=h.heyoka_order(tol)), h.pid, h.heyoka_order
))
SOLVERS.add("Taylor(p)+TaylorController")(h.diffrax_entry(
    lambda tol: taylorode.Taylor(order=h.heyoka_order(tol)),
    lambda tol: taylorode.TaylorController(rtol=tol, atol=tol),
    h.heyoka_order,
))


# --- Report -----------------------------------------------------------------------


STANDARD_STATS = {"max_steps", "num_accepted_steps", "num_rejected_steps", "num_steps"}


def header(cli, problems, tols, solvers, settings):
    return [
        "# Step-size and order control: taylorode vs heyoka vs Dopri8",
        "",
        *h.environment_lines(cli.quick),
        h.grid_line(problems, tols, solvers),
        "- Settings: float64; t0 = 0; diffrax: rtol = atol = tol, `dt0=None`, "
        f"`max_steps={settings.max_steps}`, whole solve under `jax.jit`; heyoka: "
        "`taylor_adaptive(sys, y0, tol=tol)` (order and step size by heyoka's own "
        "rules; its tol is absolute and relative at once). Taylor(p): "
        "p = max(2, ceil(-ln(tol)/2 + 1)), heyoka's order rule.",
        "- **error** = max_i |y_i(t1) - ref_i| / (1 + |ref_i|) (mixed abs/rel, "
        "max norm) for every problem; references in each section.",
        "- **steps**: accepted/rejected (heyoka never rejects a step).",
        "- **compile s**: diffrax: `jax.jit(...).lower(y0).compile()`; heyoka: "
        "construction of `taylor_adaptive` (its LLVM compilation), with heyoka's "
        "in-memory cache cleared and its disk cache off.",
        f"- **run ms**: diffrax: best of {settings.diffrax_repeats} calls after a "
        f"warm-up call; heyoka: median of {settings.heyoka_repeats} "
        "`propagate_until(t1)` from a reset time and state. Wall time, single process.",
    ]


def table(problem, rows):
    rows_md, notes, stats_keys = [], [], {}
    for name, tol, r in rows:
        if "failed" in r:
            rows_md.append([name, f"{tol:.0e}", "", "failed", "", "", "", ""])
            notes.append(f"- {name}, tol {tol:.0e}: failed: {r['failed']}")
            continue
        rej = 0 if r["rejected"] is None else r["rejected"]
        rows_md.append([
            name, f"{tol:.0e}", h.fmt_order(r["order"]), f"{r['accepted']}/{rej}",
            f"{r['error']:.2e}", f"{r['error'] / tol:.3g}", f"{r['compile_s']:.2f}",
            f"{h.run_ms(r):.3f}",
        ])
        if name != "heyoka":
            stats_keys.setdefault(name, sorted(r["stats"]))
            extra = {k: v for k, v in r["stats"].items() if k not in STANDARD_STATS}
            if extra:
                notes.append(f"- {name}, tol {tol:.0e}: stats {extra}")
        if r["notes"]:
            notes.append(f"- {name}, tol {tol:.0e}: {r['notes']}")
    notes += [
        f"- `sol.stats` keys, {name}: {', '.join(keys)}"
        for name, keys in stats_keys.items()
    ]
    lines = [
        *h.problem_heading(problem),
        *h.md_table(
            ["solver", "tol", "order", "steps (acc/rej)", "error", "error/tol",
             "compile s", "run ms"],
            "lrrrrrrr",
            rows_md,
        ),
    ]
    if notes:
        lines += ["", *notes]
    return lines


def check_references(problem):
    """Print the candidate references against the one used."""
    import heyoka as hy

    print(f"\n{problem.key}: candidates vs the reference used")
    print(f"  y0 (as if periodic)       {h.mixed_error(problem.y0, problem.reference):.2e}")
    for fp in (np.longdouble, hy.real128):
        y, order, tol = P.heyoka_reference(
            problem.heyoka_system, problem.y0, problem.t1, fp
        )
        print(f"  heyoka {fp.__name__:10s} tol {tol:.0e} (order {order}) "
              f"{h.mixed_error(y, problem.reference):.2e}")
    for tol in (1e-16, 1e-18):
        ta = hy.taylor_adaptive(problem.heyoka_system(), problem.y0, tol=tol,
                                compact_mode=True)
        ta.propagate_until(problem.t1)
        print(f"  heyoka float64 tol {tol:.0e} (order {ta.order}) "
              f"{h.mixed_error(ta.state, problem.reference):.2e}")
    print(f"  scipy DOP853 1e-14        "
          f"{h.mixed_error(P.dop853_solution(problem), problem.reference):.2e}")


def main():
    parser = h.parser(__doc__, "results_control.md", quick_help=GRID.quick_help)
    GRID.add_options(parser, SOLVERS.names())
    parser.add_argument(
        "--check-references",
        action="store_true",
        help="compare candidate references (periodicity, heyoka long double / real128 "
        "/ float64, scipy DOP853) with the one used, then exit",
    )
    cli = h.parse_args(parser)
    tols, problem_keys = GRID.select(cli)
    solvers = SOLVERS.select(cli.solvers)
    settings = h.Settings.for_run(MAX_STEPS, cli.quick)

    if cli.check_references:
        for key in problem_keys:
            check_references(PROBLEMS[key]())
        return

    lines = []
    h.emit(lines, header(cli, problem_keys, tols, solvers, settings))
    for key in problem_keys:
        problem = PROBLEMS[key]()
        problem.reference  # noqa: B018  (compute the reference before any solve)
        rows = h.run_grid(
            problem, tols, solvers, settings,
            lambda r: f"steps {r['accepted']}/{r['rejected'] or 0}, "
            f"error {r['error']:.2e}, compile {r['compile_s']:.2f} s",
        )
        h.emit(lines, table(problem, rows))

    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
