"""Benchmark: explicit Taylor methods against Runge-Kutta methods and heyoka.

`taylorode.Taylor` at several orders, diffrax's `Tsit5` and `Dopri8`, and (if it is
installed) heyoka's adaptive Taylor integrator, on the Kepler problem and the Lorenz
system, at rtol = atol = tol. For each solve: accepted and rejected steps, compile
time, best run time over a few repeats, and the error at the final time.

Run with `python benchmarks/bench_explicit.py` (`--quick` for a smoke run). The results
go to stdout and, as Markdown, to `--out`.
"""

import argparse
import dataclasses
import datetime
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


try:
    import heyoka
except ImportError:
    heyoka = None


jax.config.update("jax_enable_x64", True)


# --- Problems ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    vector_field: Callable  # f(t, y, args) for diffrax
    heyoka_system: Callable  # heyoka module -> [(variable, right-hand side), ...]
    y0: np.ndarray
    t1: float
    reference: np.ndarray  # the state at t1
    reference_note: str


def kepler(t, y, args):
    q, p = y[:2], y[2:]
    r3 = jnp.sum(q**2) ** 1.5
    return jnp.concatenate([p, -q / r3])


def kepler_heyoka(hy):
    x, y, vx, vy = hy.make_vars("x", "y", "vx", "vy")
    r3 = (x**2 + y**2) ** 1.5
    return [(x, vx), (y, vy), (vx, -x / r3), (vy, -y / r3)]


def kepler_exact(t, e):
    """The exact orbit from pericentre (unit semi-major axis), by Newton's method on
    Kepler's equation."""
    M = np.mod(t, 2 * np.pi)
    E = M + e * np.sin(M)
    for _ in range(50):
        E = E - (E - e * np.sin(E) - M) / (1 - e * np.cos(E))
    b = np.sqrt(1 - e**2)
    Edot = 1 / (1 - e * np.cos(E))
    return np.array(
        [np.cos(E) - e, b * np.sin(E), -np.sin(E) * Edot, b * np.cos(E) * Edot]
    )


def kepler_problem(e, periods):
    t1 = periods * 2 * np.pi
    return Problem(
        name=f"Kepler, e = {e}, {periods} periods (t1 = {t1:.4g})",
        vector_field=kepler,
        heyoka_system=kepler_heyoka,
        y0=np.array([1 - e, 0.0, 0.0, np.sqrt((1 + e) / (1 - e))]),
        t1=t1,
        reference=kepler_exact(t1, e),
        reference_note="exact solution (Kepler's equation solved by Newton's method)",
    )


SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0


def lorenz(t, y, args):
    x, y_, z = y[0], y[1], y[2]
    return jnp.stack([SIGMA * (y_ - x), x * (RHO - z) - y_, x * y_ - BETA * z])


def lorenz_heyoka(hy):
    x, y, z = hy.make_vars("x", "y", "z")
    return [(x, SIGMA * (y - x)), (y, x * (RHO - z) - y), (z, x * y - BETA * z)]


def lorenz_reference(y0, t1):
    """The state at t1: heyoka in extended precision if installed, else scipy DOP853."""
    if heyoka is not None:
        ld = np.longdouble
        tol = np.finfo(ld).eps
        ta = heyoka.taylor_adaptive(
            lorenz_heyoka(heyoka), y0.astype(ld), tol=tol, fp_type=ld
        )
        ta.propagate_until(ld(t1))
        note = (
            f"heyoka in long double ({np.finfo(ld).nmant + 1}-bit significand) at "
            f"tol = {tol:.1e} (order {ta.order})"
        )
        return ta.state.astype(np.float64), note

    from scipy.integrate import solve_ivp

    f = jax.jit(lorenz)
    sol = solve_ivp(
        lambda t, y: np.asarray(f(t, y, None)),
        (0.0, t1),
        y0,
        method="DOP853",
        rtol=1e-13,
        atol=1e-13,
    )
    note = "scipy solve_ivp DOP853, rtol = atol = 1e-13 (heyoka not installed)"
    return sol.y[:, -1], note


def lorenz_problem(t1):
    y0 = np.array([1.0, 1.0, 1.0])
    reference, note = lorenz_reference(y0, t1)
    return Problem(
        name=f"Lorenz, sigma = 10, rho = 28, beta = 8/3, y0 = (1, 1, 1), t1 = {t1:g}",
        vector_field=lorenz,
        heyoka_system=lorenz_heyoka,
        y0=y0,
        t1=t1,
        reference=reference,
        reference_note=note,
    )


# --- Timing -----------------------------------------------------------------------


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
    return float(np.linalg.norm(np.asarray(y1, dtype=np.float64) - problem.reference))


def bench_diffrax(name, solver, problem, tol, repeats):
    @jax.jit
    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field),
            solver,
            t0=0.0,
            t1=problem.t1,
            dt0=None,
            y0=y0,
            stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol),
            max_steps=1_000_000,
        )
        stats = sol.stats
        return sol.ys[-1], stats["num_accepted_steps"], stats["num_rejected_steps"]

    y0 = jnp.asarray(problem.y0)
    start = time.perf_counter()
    compiled = solve.lower(y0).compile()
    compile_s = time.perf_counter() - start

    run_s = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        y1, accepted, rejected = jax.block_until_ready(compiled(y0))
        run_s = min(run_s, time.perf_counter() - start)
    return Result(
        name,
        tol,
        int(accepted),
        int(rejected),
        compile_s,
        1e6 * run_s,
        error(y1, problem),
    )


def bench_heyoka(problem, tol, repeats):
    # Constructing the integrator is heyoka's (LLVM) compilation.
    start = time.perf_counter()
    ta = heyoka.taylor_adaptive(problem.heyoka_system(heyoka), problem.y0, tol=tol)
    compile_s = time.perf_counter() - start

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
        f"heyoka (order {ta.order})",
        tol,
        steps,
        0,
        compile_s,
        1e6 * run_s,
        error(ta.state, problem),
    )


# --- Report -----------------------------------------------------------------------


def header(cli, repeats):
    versions = (
        f"jax {jax.__version__}, diffrax {diffrax.__version__}, "
        f"taylorode {taylorode.__version__}, "
        + (f"heyoka {heyoka.__version__}" if heyoka else "heyoka not installed")
    )
    return [
        "# Explicit solvers: taylorode.Taylor vs diffrax Runge-Kutta vs heyoka",
        "",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"JAX backend {jax.default_backend()}",
        f"- Versions: Python {platform.python_version()}, {versions}",
        f"- Mode: {'quick (smoke run)' if cli.quick else 'full'}",
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
    lines = [
        "",
        f"## {problem.name}",
        "",
        f"Reference: {problem.reference_note}.",
        "",
        "| solver | tol | accepted | rejected | compile (s) | run (µs) | error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.solver} | {r.tol:.0e} | {r.accepted} | {r.rejected} "
        f"| {r.compile_s:.3f} | {r.run_us:.0f} | {r.error:.2e} |"
        for r in results
    ]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: Taylor orders 8 and 16, tol 1e-8 only, 2 Kepler periods",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results_explicit.md",
        help="Markdown file for the results (default: %(default)s)",
    )
    cli = parser.parse_args()

    orders = (8, 16) if cli.quick else (8, 12, 16, 20)
    tols = (1e-8,) if cli.quick else (1e-8, 1e-12)
    repeats = 3 if cli.quick else 10
    periods = 2 if cli.quick else 10
    problems = [kepler_problem(e=0.5, periods=periods), lorenz_problem(t1=10.0)]
    solvers = [(f"Taylor(order={p})", taylorode.Taylor(order=p)) for p in orders]
    solvers += [("Tsit5", diffrax.Tsit5()), ("Dopri8", diffrax.Dopri8())]

    lines = header(cli, repeats)
    print("\n".join(lines), flush=True)
    for problem in problems:
        results = []
        for tol in tols:
            for name, solver in solvers:
                results.append(bench_diffrax(name, solver, problem, tol, repeats))
            if heyoka is not None:
                results.append(bench_heyoka(problem, tol, repeats))
        problem_lines = table(problem, results)
        print("\n".join(problem_lines), flush=True)
        lines += problem_lines

    cli.out.write_text("\n".join(lines) + "\n")
    print(f"\nWritten to {cli.out}")


if __name__ == "__main__":
    main()
