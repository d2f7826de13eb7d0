"""Benchmark: large ensembles of Kepler orbits on one GPU against heyoka on the same
machine's CPU cores.

The problem of `bench_batch.py` at larger N: N Kepler orbits (mu = 1) from pericentre,
semi-major axis 1, eccentricities evenly over [0.1, 0.7], one period each (t1 = 2 pi,
where the exact state is the initial one), float64, tol 1e-10 (rtol = atol; `--tol`).
For each N:

- `Taylor()+TC vmap` and `Dopri8+PID vmap`: `jax.jit(jax.vmap(solve))` on JAX's
  default device (the GPU where one is present), compiled for that N, a warm-up call,
  then the best of `--repeats` calls;
- `heyoka batch, 1 core`: `taylor_adaptive_batch` of heyoka's recommended SIMD width,
  looping over the chunks in one thread;
- `heyoka batch, all cores`: the same chunks split evenly over one process per CPU core,
  each with its own integrator (built once per process, before timing); the time from
  sending the work to having every state back.
- `heyoka ensemble` (`ensemble_propagate_until_batch`, threads): heyoka's own parallel
  ensemble, at the smallest N only (it copies an integrator per chunk; 100 µs per
  trajectory on 2 cores at N = 10,000 in `results_batch_10000.md`).

heyoka's times are the median of `--repeats` passes. **error**: the largest over the
orbits of max_i |y_i(2 pi) - y0_i| / (1 + |y0_i|).

    python benchmarks/bench_gpu.py                      # N = 1e4, 1e5, 1e6
    python benchmarks/bench_gpu.py --tol 1e-14 --out benchmarks/results_gpu_1e-14.md
    python benchmarks/bench_gpu.py --quick              # N = 256, 1024
"""

import multiprocessing
import os
import time

import _harness as h
import _problems as P
import bench_batch as B
import heyoka as hy
import jax
import numpy as np


TOL = 1e-10
_WORKER = {}


def _worker_init(bs, tol):
    _WORKER["ta"] = hy.taylor_adaptive_batch(P.kepler_heyoka(), np.ones((4, bs)), tol=tol)


def _worker_run(chunks):
    return B.propagate_chunks(_WORKER["ta"], chunks)


def heyoka_all_cores(batch, tol, repeats, pool, workers):
    """heyoka batch mode on every core: the chunks split evenly over `workers`
    processes (integrators already built), median of `repeats` passes."""
    n = len(batch.y0s)
    bs, _, chunks = B._chunked(batch.y0s)
    parts = np.array_split(chunks, workers)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = pool.map(_worker_run, parts)
        times.append(time.perf_counter() - start)
    ys = np.concatenate([o[0] for o in out])[:n]
    steps = np.concatenate([o[1] for o in out])[:n]
    return B.result(
        ys=ys, refs=batch.refs, accepted=steps.sum(), rejected=None, compile_s=float("nan"),
        times=times, stat="median", order=h.heyoka_order(tol), notes=f"{workers} processes",
    )


def main():
    parser = h.parser(__doc__, "results_gpu.md", quick_help="N = 256, 1024")
    parser.add_argument("--n", type=int, nargs="+", help="trajectory counts (default 1e4 1e5 1e6)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (default 3)")
    parser.add_argument("--tol", type=float, default=TOL, help=f"rtol = atol (default {TOL:g})")
    cli = h.parse_args(parser)
    tol = cli.tol
    ns = cli.n or ([256, 1024] if cli.quick else [10_000, 100_000, 1_000_000])
    settings = h.Settings(max_steps=B.MAX_STEPS, diffrax_repeats=cli.repeats, heyoka_repeats=cli.repeats)
    workers = os.cpu_count()
    device = jax.devices()[0]
    lines = []
    h.emit(lines, [
        "# Large ensembles: Kepler orbits vmapped on one GPU against heyoka on the CPU cores",
        "",
        *h.environment_lines(cli.quick),
        f"- JAX device: {device.device_kind} ({device.platform}); heyoka SIMD batch size "
        f"{hy.recommended_simd_size()}; {workers} CPU cores",
        f"- Problem: `bench_batch.py`'s Kepler orbits (e evenly in [{B.ECC_RANGE[0]}, "
        f"{B.ECC_RANGE[1]}], one period), float64, tol {tol:g} (rtol = atol); error: the "
        "largest over the orbits of max_i |y_i(2 pi) - y0_i| / (1 + |y0_i|) (the exact "
        "state after one period is the initial one).",
        f"- diffrax: `jax.jit(jax.vmap(solve))`, compile = `lower(...).compile()` per N, "
        f"best of {cli.repeats} calls after a warm-up; heyoka: median of {cli.repeats} "
        "passes; `all cores`: the chunks split evenly over one process per core, each "
        "with its integrator built before timing.",
        "",
    ])
    rows = []
    ctx = multiprocessing.get_context("spawn")
    bs = hy.recommended_simd_size()
    with ctx.Pool(workers, initializer=_worker_init, initargs=(bs, tol)) as pool:
        warm = B._chunked(B.initial_conditions(bs)[0])[2]
        pool.map(_worker_run, [warm] * workers)  # every process has run once
        for n in ns:
            y0s, _ = B.initial_conditions(n)
            batch = B.Batch(y0s=y0s, refs=y0s)
            runs = [
                ("Taylor()+TC vmap", lambda: B.taylor_vmap(batch, tol, settings)),
                ("Dopri8+PID vmap", lambda: B.dopri8_vmap(batch, tol, settings)),
                ("heyoka batch, 1 core", lambda: B.heyoka_batch(batch, tol, settings)),
                ("heyoka batch, all cores", lambda: heyoka_all_cores(batch, tol, cli.repeats, pool, workers)),
            ]
            if n == ns[0]:
                runs.append(("heyoka ensemble", lambda: B.heyoka_batch_ensemble(batch, tol, settings)))
            results = {}
            for name, fn in runs:
                try:
                    r = fn()
                except Exception as exc:  # a failure is a result: record it and go on
                    r = dict(failed=h.short_error(exc))
                results[name] = r
                print(f"  N = {n}, {name}: {r}", flush=True)
            ref = results["Taylor()+TC vmap"]
            for name, r in results.items():
                if "failed" in r:
                    rows.append([n, name, "failed: " + r["failed"], "", "", "", "", ""])
                    continue
                ratio = r["total_s"] / ref["total_s"] if "total_s" in ref else float("nan")
                rows.append([
                    n, name, f"{r['accepted']}", f"{r['max_error']:.1e}",
                    "" if np.isnan(r["compile_s"]) else f"{r['compile_s']:.2f}",
                    f"{1e3 * r['total_s']:.1f}", f"{n / r['total_s']:.3g}", f"{ratio:.2f}",
                ])
    h.emit(lines, h.md_table(
        ["N", "solver", "accepted steps", "max error", "compile s", "total ms",
         "trajectories / s", "time / Taylor()"],
        "rlrrrrrr", rows,
    ))
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
