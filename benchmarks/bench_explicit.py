"""Benchmark: explicit Taylor methods against Runge-Kutta methods and heyoka.

`taylorode.Taylor` at several orders, diffrax's `Tsit5` and `Dopri8`, and (if it is
installed) heyoka's adaptive Taylor integrator, on the Kepler problem (e = 0.5) and the
Lorenz system (t1 = 10) of `_problems.py`, at rtol = atol = tol. For each solve:
accepted and rejected steps, compile time, best run time over a few repeats, and the
error at the final time.

    python benchmarks/bench_explicit.py            # full run
    python benchmarks/bench_explicit.py --quick    # smoke run

The results go to stdout and, as Markdown, to `--out`.
"""

import dataclasses
import importlib.util
import time

import _harness as h
import _problems as P
import diffrax
import numpy as np

import taylorode


HAVE_HEYOKA = importlib.util.find_spec("heyoka") is not None


@dataclasses.dataclass(frozen=True)
class Result:
    solver: str
    tol: float
    accepted: int
    rejected: int
    compile_s: float
    run_us: float
    error: float


def error(y1, problem):
    """The 2-norm of the final state minus the reference."""
    return float(np.linalg.norm(np.asarray(y1, dtype=np.float64) - problem.reference))


def bench_diffrax(name, solver, problem, tol, repeats):
    """diffrax's `PIDController(tol, tol)`, `max_steps=1_000_000`: the best of
    `repeats` calls of the compiled solve (no separate warm-up call)."""
    settings = h.Settings(max_steps=1_000_000, diffrax_repeats=repeats, warmup=False)
    r = h.run_diffrax(problem, solver, h.pid(tol), settings=settings, order=None)
    return Result(
        name, tol, r["accepted"], r["rejected"], r["compile_s"], 1e3 * r["run_ms_best"],
        error(r["y1"], problem),
    )


def bench_heyoka(problem, tol, repeats):
    """heyoka's construction (its LLVM compilation; its caches left as they are), then
    the best of `repeats` `propagate_until(t1)` from a reset state."""
    import heyoka

    ta, compile_s = h.heyoka_build(
        heyoka.taylor_adaptive, problem.heyoka_system, problem.y0, tol=tol,
        clear_cache=False,
    )
    run_s = np.inf
    for _ in range(repeats):
        ta.time = 0.0
        ta.state[:] = problem.y0
        start = time.perf_counter()
        outcome, _, _, steps, _, _ = ta.propagate_until(problem.t1)
        run_s = min(run_s, time.perf_counter() - start)
        if outcome != heyoka.taylor_outcome.time_limit:
            raise RuntimeError(f"heyoka stopped early: {outcome}")
    # heyoka picks each step size before taking it, so it never rejects a step.
    return Result(
        f"heyoka (order {ta.order})", tol, steps, 0, compile_s, 1e6 * run_s,
        error(ta.state, problem),
    )


def header(cli, repeats):
    return [
        "# Explicit solvers: taylorode.Taylor vs diffrax Runge-Kutta vs heyoka",
        "",
        *h.environment_lines(cli.quick),
        "- Settings: float64; rtol = atol = tol; diffrax `PIDController` defaults, "
        "`dt0=None`, `max_steps=1_000_000`, whole solve under `jax.jit`.",
        "- Compile: `jax.jit(...).lower(...).compile()` time; for heyoka, the "
        "construction of `taylor_adaptive` (its LLVM compilation), order chosen by "
        "heyoka from tol.",
        f"- Run: best of {repeats} calls, per solve, after `jax.block_until_ready`; "
        "heyoka: `propagate_until(t1)` from a reset state. heyoka never rejects a "
        "step.",
        "- Error: 2-norm of the final state minus the reference.",
    ]


def table(problem, results):
    return [
        *h.problem_heading(problem),
        *h.md_table(
            ["solver", "tol", "accepted", "rejected", "compile (s)", "run (µs)", "error"],
            "lrrrrrr",
            [
                [r.solver, f"{r.tol:.0e}", r.accepted, r.rejected, f"{r.compile_s:.3f}",
                 f"{r.run_us:.0f}", f"{r.error:.2e}"]
                for r in results
            ],
        ),
    ]


def main():
    parser = h.parser(
        __doc__,
        "results_explicit.md",
        quick_help="Taylor orders 8 and 16, tol 1e-8 only, 2 Kepler periods",
    )
    cli = h.parse_args(parser)
    orders = (8, 16) if cli.quick else (8, 12, 16, 20)
    tols = (1e-8,) if cli.quick else (1e-8, 1e-12)
    repeats = 3 if cli.quick else 10
    periods = 2 if cli.quick else 10
    problems = [
        P.kepler_newton_problem(e=0.5, periods=periods),
        P.lorenz_long_double_problem(t1=10.0),
    ]
    solvers = [(f"Taylor(order={p})", taylorode.Taylor(order=p)) for p in orders]
    solvers += [("Tsit5", diffrax.Tsit5()), ("Dopri8", diffrax.Dopri8())]

    for problem in problems:
        problem.reference  # noqa: B018  (the references first, before any solve)

    lines = []
    h.emit(lines, header(cli, repeats))
    for problem in problems:
        results = []
        for tol in tols:
            for name, solver in solvers:
                results.append(bench_diffrax(name, solver, problem, tol, repeats))
            if HAVE_HEYOKA:
                results.append(bench_heyoka(problem, tol, repeats))
        h.emit(lines, table(problem, results))

    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
