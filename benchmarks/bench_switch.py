"""Per-step cost of choosing the order with `lax.switch`, against a fixed order.

Kepler e = 0.9, 10 periods, rtol = atol = 1e-12 with `taylorode.TaylorController`.
`Taylor()` steps at order 15 (Jorba & Zou's order for 1e-12). `Taylor(orders=...)`
with 15 among the candidates picks 15 at every step on this problem (the per-step rule
agrees with the tolerance rule where |y| ~ 1), so the step sequences are the same and
the difference in run time is what the switch costs: a conditional over the candidate
kernels in every step. Under `vmap` (a batch of 64 initial conditions) the index is made
batch-uniform, so the switch stays a conditional.

Usage: `python benchmarks/bench_switch.py [--out results_switch.md]`.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import taylorode  # noqa: E402

TOL = 1e-12
E = 0.9
T1 = 20 * np.pi
BATCH = 64
REPEATS = 15

CONFIGS = [
    ("Taylor() (order 15)", lambda: taylorode.Taylor()),
    ("Taylor(orders=(13, 15))", lambda: taylorode.Taylor(orders=(13, 15))),
    ("Taylor(orders=(13, 15, 17))", lambda: taylorode.Taylor(orders=(13, 15, 17))),
    ("Taylor(orders=(9, 11, 13, 15, 17))", lambda: taylorode.Taylor(orders=(9, 11, 13, 15, 17))),
]


def kepler(t, y, args):
    q, v = y[:2], y[2:]
    return jnp.concatenate([v, -q / jnp.sum(q * q) ** 1.5])


def y0_for(e):
    return jnp.stack([1 - e, 0.0 * e, 0.0 * e, jnp.sqrt((1 + e) / (1 - e))])


def solve_fn(solver):
    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(kepler), solver, 0.0, T1, None, y0,
            stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL),
            saveat=diffrax.SaveAt(t1=True, solver_state=True), max_steps=100_000,
        )
        return sol.ys[-1], sol.stats["num_accepted_steps"], taylorode.order_counts(sol)

    return solve


def timed(fn, x):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(x).compile()
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(compiled(x))
    best = np.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(compiled(x))
        best = min(best, time.perf_counter() - start)
    return compile_s, best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results_switch.md")
    cli = parser.parse_args()
    lines = [
        "# Per-step order selection: the cost of `lax.switch`",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Machine: {platform.platform()}, {os.cpu_count()} CPUs "
        f"(load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}); "
        f"JAX {jax.__version__}, diffrax {diffrax.__version__}, backend {jax.default_backend()}",
        f"- Problem: Kepler e = {E}, t in [0, {T1:.4g}], rtol = atol = {TOL:g}, "
        "`TaylorController`, float64, whole solve under `jax.jit`; run = best of "
        f"{REPEATS} after a warm-up; batch = `jax.vmap` over {BATCH} eccentricities in [0.85, 0.9].",
        "",
        "| solver | orders used | steps | compile s | run ms | µs / step | batch compile s | batch run ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    batch = jax.vmap(y0_for)(jnp.linspace(0.85, 0.9, BATCH))
    for name, make in CONFIGS:
        fn = solve_fn(make())
        compile_s, run_s, (_, steps, counts) = timed(fn, y0_for(jnp.float64(E)))
        used = {q: int(c) for q, c in counts.items() if int(c) > 0}
        bcompile_s, brun_s, _ = timed(jax.vmap(fn), batch)
        row = (
            f"| {name} | {used} | {int(steps)} | {compile_s:.2f} | {1e3 * run_s:.2f} | "
            f"{1e6 * run_s / int(steps):.2f} | {bcompile_s:.2f} | {1e3 * brun_s:.1f} |"
        )
        lines.append(row)
        print(row, flush=True)
    cli.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
