"""Benchmark: where the compile time of a `Taylor()` solve goes, against Dopri8.

Issue 4 asks for a compile time of at most twice Dopri8's. This script splits the
first-call cost of a whole `diffeqsolve` under `jax.jit` into its phases and counts what
XLA:CPU has to build, for `taylorode.Taylor()` + `TaylorController(tol, tol)` and
`diffrax.Dopri8()` + `PIDController(tol, tol)` on the problems of `bench_control.py`
(Kepler e = 0.9, Arenstorf, Pleiades):

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

import argparse
import os
import re
import sys
import time
from pathlib import Path


def _xla_flags_from_argv():
    """The value of `--xla-flags=...` (given with `=`, as its value starts with `--`)."""
    for arg in sys.argv:
        if arg.startswith("--xla-flags="):
            return arg.split("=", 1)[1]
    return None


# XLA reads XLA_FLAGS when JAX creates its backend: set it before anything runs.
if _xla_flags_from_argv() is not None:
    os.environ["XLA_FLAGS"] = _xla_flags_from_argv()

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_control as bc  # noqa: E402  (also enables float64 in JAX)

import taylorode  # noqa: E402


PROBLEMS = {
    "kepler": bc.kepler_problem,
    "arenstorf": bc.arenstorf_problem,
    "pleiades": bc.pleiades_problem,
}


def solvers(tol):
    return {
        "Taylor()+TC": (taylorode.Taylor(), taylorode.TaylorController(rtol=tol, atol=tol)),
        "Dopri8+PID": (diffrax.Dopri8(), diffrax.PIDController(rtol=tol, atol=tol)),
    }


def measure(problem, solver, controller, repeats):
    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field), solver, 0.0, problem.t1, None, y0,
            stepsize_controller=controller, max_steps=bc.MAX_STEPS,
        )
        return sol.ys[-1], sol.stats

    y0 = jnp.asarray(problem.y0)
    best = dict(trace=float("inf"), lower=float("inf"), compile=float("inf"))
    for _ in range(repeats):
        jax.clear_caches()
        start = time.perf_counter()
        traced = jax.jit(solve).trace(y0)
        t_trace = time.perf_counter()
        lowered = traced.lower()
        t_lower = time.perf_counter()
        compiled = lowered.compile()
        t_compile = time.perf_counter()
        for key, value in (
            ("trace", t_trace - start), ("lower", t_lower - t_trace), ("compile", t_compile - t_lower)
        ):
            best[key] = min(best[key], value)
    jax.block_until_ready(compiled(y0))
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(compiled(y0))
        runs.append(time.perf_counter() - start)
    hlo = compiled.as_text()
    kernels = sum(1 for line in hlo.splitlines() if re.search(r"= \S+ fusion\(", line))
    ops = len(re.findall(r"^\s+%\S+ = ", hlo, flags=re.M))
    return dict(best, total=sum(best.values()), kernels=kernels, ops=ops, run=1e3 * min(runs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-10, 1e-14])
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--xla-flags", default=None, help="XLA_FLAGS for this run (give it as --xla-flags=...)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results_compile.md",
        help="Markdown file for the results (default: %(default)s)",
    )
    cli = parser.parse_args()
    lines = [
        "# Compile-time breakdown: Taylor() + TaylorController vs Dopri8 + PID",
        "",
        *bc.environment_lines(False),
        "- Phases in seconds, each the best of "
        f"{cli.repeats} (`jax.clear_caches()` before each); kernels and HLO ops counted "
        "in the optimised HLO; run: the compiled solve, best of 5 after a warm-up.",
        f"- XLA_FLAGS: `{os.environ.get('XLA_FLAGS', '')}`" if os.environ.get("XLA_FLAGS") else "- XLA_FLAGS: none",
        "",
        "| problem | tol | solver | trace s | lower s | compile s | total s | total / Dopri8 "
        "| kernels | HLO ops | run ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in cli.problems:
        problem = PROBLEMS[key]()
        for tol in cli.tols:
            rows = {name: measure(problem, s, c, cli.repeats) for name, (s, c) in solvers(tol).items()}
            base = rows["Dopri8+PID"]["total"]
            for name, r in rows.items():
                line = (
                    f"| {key} | {tol:g} | {name} | {r['trace']:.3f} | {r['lower']:.3f} | "
                    f"{r['compile']:.3f} | {r['total']:.3f} | {r['total'] / base:.2f} | "
                    f"{r['kernels']} | {r['ops']} | {r['run']:.3f} |"
                )
                print(line, flush=True)
                lines.append(line)
    cli.out.write_text("\n".join(lines) + "\n")
    print(f"Written to {cli.out}")


if __name__ == "__main__":
    main()
