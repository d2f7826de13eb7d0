"""Benchmark: an ensemble of trajectories spread over several devices with `jax.sharding`.

N Kepler orbits (mu = 1, semi-major axis 1, from pericentre, eccentricities spread evenly
over [0.1, 0.7]), each over one period (t1 = 2 pi, where the exact state is the initial
one), float64, `taylorode.Taylor()` + `taylorode.TaylorController` at tol 1e-10: one
`jax.jit(jax.vmap(solve))` whose input batch is placed with a
`NamedSharding(Mesh(devices, ("batch",)), PartitionSpec("batch"))` (mesh axis type
`Auto`), so that XLA splits the vmapped solve over the devices. Each device count runs
in its own process, with `XLA_FLAGS=--xla_force_host_platform_device_count=D` on the CPU:
the D devices share this machine's cores, so this measures how the split behaves, not
more hardware. Reported per D: compile time, best of `--repeats` run times, throughput,
the largest error against the exact state, and the largest difference from the
one-device run.

    python benchmarks/bench_ensemble.py                 # N = 1000, D = 1, 2, 8
    python benchmarks/bench_ensemble.py --quick         # N = 64, D = 1, 2
"""

import json
import os
import subprocess
import sys

import _harness as h
import _problems as P
import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


TOL = 1e-10


def child(n, repeats):
    """Run in a process with the device count set; prints one JSON line."""
    from jax.sharding import NamedSharding, PartitionSpec

    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))

    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(P.kepler), taylorode.Taylor(), 0.0, 2 * np.pi, None, y0,
            stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL),
            max_steps=10_000,
        )
        return sol.ys[-1], sol.stats["num_accepted_steps"]

    exact = P.kepler_pericentre_state(np.linspace(0.1, 0.7, n))  # also the initial states
    y0s = jax.device_put(jnp.asarray(exact), NamedSharding(mesh, PartitionSpec("batch")))
    compiled, compile_s = h.compile_timed(jax.vmap(solve), y0s)
    times, (ys, steps) = h.time_calls(compiled, y0s, repeats=repeats)
    ys = np.asarray(ys)
    print(json.dumps(dict(
        devices=len(devices),
        sharding=str(compiled.output_shardings[0].spec),
        compile_s=compile_s,
        run_s=min(times),
        error=float(np.max(np.abs(ys - exact))),
        steps=int(np.sum(steps)),
        ys=ys.tolist(),
    )))


def run(devices, n, repeats):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(n), str(repeats)],
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = h.parser(__doc__, "results_ensemble.md", quick_help="N = 64, D = 1, 2")
    parser.add_argument("--n", type=int, help="trajectories (default 1000; 64 with --quick)")
    parser.add_argument("--devices", type=int, nargs="+", help="device counts (default 1 2 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (default 5)")
    cli = h.parse_args(parser)
    n = cli.n or (64 if cli.quick else 1000)
    counts = cli.devices or ([1, 2] if cli.quick else [1, 2, 8])
    lines = [f"# Ensembles across devices: {n} Kepler orbits, `jax.jit(jax.vmap(solve))` with a sharded batch", ""]
    lines += h.environment_lines(cli.quick)
    lines += [
        f"- Setting: `Taylor()` + `TaylorController(rtol={TOL:g}, atol={TOL:g})`, one period each, "
        "eccentricities evenly over [0.1, 0.7]; the batch placed with "
        "`NamedSharding(mesh, PartitionSpec('batch'))` on a one-axis mesh of D devices "
        "(axis type Auto); D virtual CPU devices "
        "(`--xla_force_host_platform_device_count=D`) in a process of their own, sharing "
        f"the machine's {os.cpu_count()} cores. Compile: `lower(...).compile()`; run: best of "
        f"{cli.repeats} calls after a warm-up call.",
        "- **error**: largest |y(2 pi) - y0| over the orbits (the exact state after one "
        "period is the initial one); **vs 1 device**: largest difference from the "
        "one-device run.",
        "",
    ]
    rows, first = [], None
    for d in counts:
        r = run(d, n, cli.repeats)
        print(f"D = {d}: compile {r['compile_s']:.2f} s, run {r['run_s'] * 1e3:.2f} ms", flush=True)
        ys = np.asarray(r["ys"])
        first = ys if first is None else first
        rows.append([
            d, f"`{r['sharding']}`", f"{r['compile_s']:.2f}", f"{r['run_s'] * 1e3:.2f}",
            f"{n / r['run_s']:.0f}", f"{r['error']:.1e}", f"{np.max(np.abs(ys - first)):.1e}",
            r["steps"],
        ])
    lines += ["## Sharded batch", ""]
    lines += h.md_table(
        ["devices", "output spec", "compile s", "run ms", "trajectories / s", "error",
         "vs 1 device", "steps (all)"],
        ["r", "l", "r", "r", "r", "r", "r", "r"],
        rows,
    )
    h.write_results(cli, lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
