"""Benchmark: where the compile time of a `Taylor()` solve goes, against Dopri8.

The target is a compile time of at most twice Dopri8's. This script splits the
first-call cost of a whole `diffeqsolve` under `jax.jit` into its phases and counts what
XLA:CPU has to build, for `taylorode.Taylor()` + `TaylorController(tol, tol)` and
`diffrax.Dopri8()` + `PIDController(tol, tol)` on the problems of `bench_control.py`
(Kepler e = 0.9, Arenstorf, Pleiades; `_problems.py`), and `Taylor()` with the
tolerance an argument of the jitted solve ("tol traced": the order is then chosen per
step among 6, 10, 14 and 18, so four coefficient kernels are compiled):

- **trace**: `jax.jit(solve).trace(y0)` (Python: diffrax's loop and, for Taylor, the
  jaxpr interpreter of the coefficient engine);
- **lower**: `.lower()` to StableHLO;
- **compile**: `.compile()` (XLA's HLO passes, then per-kernel LLVM code generation);
- **kernels**: fusion kernels in the optimised HLO (each one an LLVM module on XLA:CPU);
- **HLO ops**: instructions in the optimised HLO, fused ones included.

- **run**: the compiled solve, best of 5 calls after a warm-up call (ms).

Each phase is the best of `--repeats` runs, with `jax.clear_caches()` before each.
`--xla-flags` sets `XLA_FLAGS` for the run (before JAX starts its backend), e.g.
`--xla-flags=--xla_cpu_use_fusion_emitters=false` to measure XLA:CPU without its MLIR
fusion emitters.

    python benchmarks/bench_compile.py                 # tol 1e-10 and 1e-14
    python benchmarks/bench_compile.py --tols 1e-12 --problems kepler
    python benchmarks/bench_compile.py --xla-flags=--xla_cpu_use_fusion_emitters=false \\
        --out benchmarks/results_compile_no_emitters.md
"""

import re
import time

import _harness as h  # first: it sets XLA_FLAGS from --xla-flags before JAX starts
import _problems as P
import diffrax
import jax
import jax.numpy as jnp

import taylorode


PROBLEMS = {key: P.NONSTIFF[key] for key in ("kepler", "arenstorf", "pleiades")}
TOLS = (1e-10, 1e-14)
MAX_STEPS = 200_000
RUN_REPEATS = 5


def _tc(tol):
    return taylorode.TaylorController(rtol=tol, atol=tol)


# name -> (solver, controller from the tolerance, whether the tolerance is an argument of
# the jitted solve: a traced value, known at run time only).
SOLVERS = {
    "Taylor()+TC": (taylorode.Taylor(), _tc, False),
    "Taylor()+TC, tol traced": (taylorode.Taylor(), _tc, True),
    "Dopri8+PID": (diffrax.Dopri8(), lambda tol: diffrax.PIDController(rtol=tol, atol=tol), False),
}


def measure(problem, tol, solver, controller, traced, repeats, run_repeats):
    def solve(y0, tol_arg):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field), solver, 0.0, problem.t1, None, y0,
            stepsize_controller=controller(tol_arg if traced else tol), max_steps=MAX_STEPS,
        )
        return sol.ys[-1], sol.stats

    inputs = (jnp.asarray(problem.y0), jnp.asarray(tol))
    best = dict(trace=float("inf"), lower=float("inf"), compile=float("inf"))
    for _ in range(repeats):
        jax.clear_caches()
        start = time.perf_counter()
        traced_solve = jax.jit(solve).trace(*inputs)
        t_trace = time.perf_counter()
        lowered = traced_solve.lower()
        t_lower = time.perf_counter()
        compiled = lowered.compile()
        t_compile = time.perf_counter()
        for key, value in (
            ("trace", t_trace - start), ("lower", t_lower - t_trace), ("compile", t_compile - t_lower)
        ):
            best[key] = min(best[key], value)
    runs, _ = h.time_calls(compiled, *inputs, repeats=run_repeats)
    hlo = compiled.as_text()
    kernels = sum(1 for line in hlo.splitlines() if re.search(r"= \S+ fusion\(", line))
    ops = len(re.findall(r"^\s+%\S+ = ", hlo, flags=re.M))
    return dict(best, total=sum(best.values()), kernels=kernels, ops=ops, run=1e3 * min(runs))


def main():
    parser = h.parser(
        __doc__,
        "results_compile.md",
        quick_help="tol 1e-10, Kepler only, one repeat of each phase, 2 timed runs "
        "(--tols/--problems/--repeats still override)",
    )
    parser.add_argument("--tols", type=float, nargs="+", help=f"default {list(TOLS)}")
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), help="default: all")
    parser.add_argument("--repeats", type=int, help="runs of each phase (default 3)")
    cli = h.parse_args(parser)
    tols = cli.tols or ([1e-10] if cli.quick else list(TOLS))
    problem_keys = cli.problems or (["kepler"] if cli.quick else list(PROBLEMS))
    repeats = cli.repeats or (1 if cli.quick else 3)
    run_repeats = 2 if cli.quick else RUN_REPEATS

    lines = []
    h.emit(lines, [
        "# Compile-time breakdown: Taylor() + TaylorController vs Dopri8 + PID",
        "",
        *h.environment_lines(cli.quick),
        "- Phases in seconds, each the best of "
        f"{repeats} (`jax.clear_caches()` before each); kernels and HLO ops counted "
        f"in the optimised HLO; run: the compiled solve, best of {run_repeats} after a "
        "warm-up.",
        "",
        *h.md_table(
            ["problem", "tol", "solver", "trace s", "lower s", "compile s", "total s",
             "total / Dopri8", "kernels", "HLO ops", "run ms"],
            "lllllllllll",
        ),
    ])
    for key in problem_keys:
        problem = PROBLEMS[key]()
        for tol in tols:
            rows = {
                name: measure(problem, tol, s, c, traced, repeats, run_repeats)
                for name, (s, c, traced) in SOLVERS.items()
            }
            base = rows["Dopri8+PID"]["total"]
            for name, r in rows.items():
                h.emit(lines, [h.md_row([
                    key, f"{tol:g}", name, f"{r['trace']:.3f}", f"{r['lower']:.3f}",
                    f"{r['compile']:.3f}", f"{r['total']:.3f}", f"{r['total'] / base:.2f}",
                    r["kernels"], r["ops"], f"{r['run']:.3f}",
                ])])
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
