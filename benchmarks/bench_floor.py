"""Benchmark: the cost of a step with nothing to expand, against heyoka's whole step.

A `Taylor()` step inside `diffrax.diffeqsolve` is the coefficient expansion plus fixed
work: the rescaling and sum of the series, the error estimate, the controller, diffrax's
bookkeeping of the loop. On XLA:CPU each of these is one or more kernels, and each
kernel costs time whatever it computes. This script measures that floor: the time per
step and the XLA kernels of the solve on the harmonic oscillator `y'' = -y` (a linear
field: its expansion is one multiplication per order), next to the same for
Kepler, Lorenz and Arenstorf (`_problems.py`), and heyoka's time per step on each, in
one run, all at rtol = atol = 1e-10, solved as users write it (`max_steps=1_000_000`,
`throw=False`).

The same for a batch: `jax.jit(jax.vmap(solve))` over 1000 oscillators (amplitudes
0.5-2, 20 periods) and over `bench_batch.py`'s 1000 Kepler orbits, against heyoka's batch
mode on those orbits. The vmapped loop runs until its slowest trajectory is done, so the
time is given per loop iteration (the most steps any trajectory took) and per
trajectory and iteration.

    python benchmarks/bench_floor.py
    python benchmarks/bench_floor.py --quick
"""

import _harness as h
import _problems as P
import bench_batch as B
import bench_kernels as K
import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


TOL = 1e-10
MAX_STEPS = 1_000_000
OSCILLATOR_T1 = 1000.0


def oscillator(t, y, args):
    return jnp.stack([y[1], -y[0]])


def oscillator_heyoka():
    hy = P._heyoka()
    x, v = hy.make_vars("x", "v")
    return [(x, v), (v, -x)]


def oscillator_problem():
    y0 = np.array([1.0, 0.0])
    t1 = OSCILLATOR_T1
    return P.Problem(
        key="oscillator",
        title="harmonic oscillator y'' = -y",
        vector_field=oscillator,
        heyoka_system=oscillator_heyoka,
        y0=y0,
        t1=t1,
        make_reference=lambda: (np.array([np.cos(t1), -np.sin(t1)]), "exact"),
    )


PROBLEMS = {
    "oscillator": oscillator_problem,
    "kepler": P.kepler_problem,
    "lorenz": P.lorenz_problem,
    "arenstorf": P.arenstorf_problem,
}

SOLVERS = {
    "Taylor()+TC": lambda: (taylorode.Taylor(), taylorode.TaylorController(rtol=TOL, atol=TOL)),
    "Tsit5+PID": lambda: (diffrax.Tsit5(), h.pid(TOL)),
    "Dopri8+PID": lambda: (diffrax.Dopri8(), h.pid(TOL)),
}


def solve_kernels(problem, solver, controller):
    """XLA kernels of the whole compiled solve (`bench_kernels.kernels`)."""
    def solve(y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field), solver, 0.0, problem.t1, None, y0,
            stepsize_controller=controller, max_steps=MAX_STEPS, throw=False,
        ).ys
    return K.kernels(jax.jit(solve).lower(jnp.asarray(problem.y0)).compile())


def per_step_us(r):
    return 1e3 * h.run_ms(r) / (r["accepted"] + (r["rejected"] or 0))


BATCH = 1000


def batch_row(name, field, y0s, t1, repeats):
    """`Taylor()+TC` vmapped over `y0s`: [name, N, iterations, kernels, µs per
    iteration, ns per trajectory and iteration]."""
    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), taylorode.Taylor(), 0.0, t1, None, y0,
            stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL),
            max_steps=MAX_STEPS, throw=False,
        )
        return sol.stats["num_steps"]

    y0s = jnp.asarray(y0s)
    compiled, _ = h.compile_timed(jax.vmap(solve), y0s)
    times, steps = h.time_calls(compiled, y0s, repeats=repeats)
    iterations = int(np.max(steps))
    per_iteration = 1e6 * min(times) / iterations
    return [name, str(len(y0s)), str(iterations), str(K.kernels(compiled)),
            f"{per_iteration:.1f}", f"{1e3 * per_iteration / len(y0s):.1f}"]


def batch_rows(settings):
    amplitude = np.linspace(0.5, 2.0, BATCH)
    oscillators = np.stack([amplitude, 0 * amplitude], axis=-1)
    orbits = B.initial_conditions(BATCH)[0]
    rows = [
        batch_row("oscillator, Taylor()+TC vmap", oscillator, oscillators, 40 * np.pi, settings.diffrax_repeats),
        batch_row("Kepler, Taylor()+TC vmap", P.kepler, orbits, B.T1, settings.diffrax_repeats),
    ]
    hey = B.heyoka_batch(B.Batch(y0s=orbits, refs=orbits), TOL, settings)
    per_step = 1e9 * hey["total_s"] / hey["accepted"]
    rows.append(["Kepler, heyoka batch", str(BATCH), "", "", "", f"{per_step:.1f}"])
    return rows


def main():
    parser = h.parser(__doc__, "results_floor.md", quick_help="oscillator and Kepler, fewer repeats")
    cli = h.parse_args(parser)
    keys = ["oscillator", "kepler"] if cli.quick else list(PROBLEMS)
    settings = h.Settings.for_run(MAX_STEPS, cli.quick, diffrax_repeats=3 if cli.quick else 10)
    lines = []
    h.emit(lines, [
        "# The floor of a step: a field with nothing to expand, against heyoka",
        "",
        *h.environment_lines(cli.quick),
        f"- tol {TOL:g} (rtol = atol); diffrax solves with `max_steps={MAX_STEPS}`, "
        "`throw=False`, y0 an argument of the jitted solve; heyoka: "
        "`taylor_adaptive(sys, y0, tol=tol)`. **µs / step**: run time (diffrax: best of "
        f"{settings.diffrax_repeats} calls; heyoka: median of {settings.heyoka_repeats}) / "
        "(accepted + rejected steps). **kernels**: XLA kernels of the compiled solve "
        "(`bench_kernels.kernels`: fusions and other kernel-forming instructions outside "
        "fusion bodies).",
        "",
    ])
    rows = []
    for key in keys:
        problem = PROBLEMS[key]()
        hey = h.run_heyoka(problem, TOL, settings)
        for name, make in SOLVERS.items():
            solver, controller = make()
            r = h.run_diffrax(problem, solver, controller, settings=settings, order=None, throw=False)
            kernels = solve_kernels(problem, solver, controller)
            ratio = per_step_us(r) / per_step_us(hey)
            rows.append([problem.key, name, f"{r['accepted']}/{r['rejected']}", f"{r['error']:.1e}",
                         str(kernels), f"{per_step_us(r):.3f}", f"{per_step_us(hey):.3f}", f"{ratio:.1f}"])
            print(f"  {problem.key} {name}: {per_step_us(r):.3f} us/step, {kernels} kernels; "
                  f"heyoka {per_step_us(hey):.3f} us/step", flush=True)
    h.emit(lines, h.md_table(
        ["problem", "solver", "steps (acc/rej)", "error", "kernels", "µs / step",
         "heyoka µs / step", "per step / heyoka's"],
        "lllrrrrr", rows,
    ))
    h.emit(lines, [
        "",
        f"## A batch of {BATCH}",
        "",
        "`jax.jit(jax.vmap(solve))`, best of "
        f"{settings.diffrax_repeats} calls; **iterations**: the most steps any "
        "trajectory took (the loop's length); heyoka batch: `bench_batch.py`'s "
        f"`heyoka batch` (SIMD width {B.hy.recommended_simd_size()}), its median time per "
        "step of one lane.",
        "",
        *h.md_table(
            ["batch", "N", "iterations", "kernels", "µs / iteration",
             "ns / trajectory and iteration"],
            "lrrrrr", batch_rows(settings),
        ),
    ])
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
