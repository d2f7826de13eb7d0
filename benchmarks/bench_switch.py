"""Benchmark: the per-step cost of choosing the order with `lax.switch`, against a fixed order.

Kepler e = 0.9, 10 periods, rtol = atol = 1e-12 with `taylorode.TaylorController`.
`Taylor()` steps at order 15 (Jorba & Zou's order for 1e-12). `Taylor(orders=...)`
with 15 among the candidates picks 15 at every step on this problem (the per-step rule
agrees with the tolerance rule where |y| ~ 1), so the step sequences are the same and
the difference in run time is what the switch costs: a conditional over the candidate
kernels in every step. Under `vmap` (a batch of 64 initial conditions) the index is made
batch-uniform, so the switch stays a conditional.

    python benchmarks/bench_switch.py            # full run
    python benchmarks/bench_switch.py --quick    # smoke run
"""

import _harness as h
import _problems as P
import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


TOL = 1e-12
E = 0.9
PERIODS = 10
BATCH = 64
REPEATS = 15

CONFIGS = [
    ("Taylor() (order 15)", lambda: taylorode.Taylor()),
    ("Taylor(orders=(13, 15))", lambda: taylorode.Taylor(orders=(13, 15))),
    ("Taylor(orders=(13, 15, 17))", lambda: taylorode.Taylor(orders=(13, 15, 17))),
    ("Taylor(orders=(9, 11, 13, 15, 17))", lambda: taylorode.Taylor(orders=(9, 11, 13, 15, 17))),
]


def solve_fn(solver, t1):
    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(P.kepler), solver, 0.0, t1, None, y0,
            stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL),
            saveat=diffrax.SaveAt(t1=True, solver_state=True), max_steps=100_000,
        )
        return sol.ys[-1], sol.stats["num_accepted_steps"], taylorode.order_counts(sol)

    return solve


def timed(fn, x, repeats):
    compiled, compile_s = h.compile_timed(fn, x)
    times, out = h.time_calls(compiled, x, repeats=repeats)
    return compile_s, min(times), out


def main():
    parser = h.parser(
        __doc__,
        "results_switch.md",
        quick_help="2 periods, the first two configurations, a batch of 8, 2 repeats",
    )
    cli = h.parse_args(parser)
    periods, configs, batch_size, repeats = (
        (2, CONFIGS[:2], 8, 2) if cli.quick else (PERIODS, CONFIGS, BATCH, REPEATS)
    )
    t1 = 2 * periods * np.pi
    lines = []
    h.emit(lines, [
        "# Per-step order selection: the cost of `lax.switch`",
        "",
        *h.environment_lines(cli.quick),
        f"- Problem: Kepler e = {E}, t in [0, {t1:.4g}], rtol = atol = {TOL:g}, "
        "`TaylorController`, float64, whole solve under `jax.jit`; run = best of "
        f"{repeats} after a warm-up; batch = `jax.vmap` over {batch_size} eccentricities "
        "in [0.85, 0.9].",
        "",
        *h.md_table(
            ["solver", "orders used", "steps", "compile s", "run ms", "µs / step",
             "batch compile s", "batch run ms"],
            "llrrrrrr",
        ),
    ])
    batch = jax.vmap(lambda e: P.kepler_pericentre_state(e, jnp))(
        jnp.linspace(0.85, 0.9, batch_size)
    )
    for name, make in configs:
        fn = solve_fn(make(), t1)
        compile_s, run_s, (_, steps, counts) = timed(
            fn, P.kepler_pericentre_state(jnp.float64(E), jnp), repeats
        )
        used = {q: int(c) for q, c in counts.items() if int(c) > 0}
        bcompile_s, brun_s, _ = timed(jax.vmap(fn), batch, repeats)
        h.emit(lines, [h.md_row([
            name, used, int(steps), f"{compile_s:.2f}", f"{1e3 * run_s:.2f}",
            f"{1e6 * run_s / int(steps):.2f}", f"{bcompile_s:.2f}", f"{1e3 * brun_s:.1f}",
        ])])
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
