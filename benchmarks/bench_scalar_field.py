"""Benchmark: a vector field written as hundreds of scalar operations.

The Pleiades problem (Hairer, Nørsett & Wanner: 7 bodies in the plane, masses 1..7,
28 coordinates) written body by body with Python loops, as it is often written. This is
the case the recurrence engine's scalar batching is for (see docs/benchmarks.md): without
it every scalar operation gets its own recurrence per order. Compile time and run time of
one coefficient set (inside a compiled fori_loop of 50), for the orders given.

Run with `python benchmarks/bench_scalar_field.py [--orders 8 20] [--method recurrence]`;
methods: `recurrence` (the default engine, scalar batching on), `unbatched` (the same
engine with `batch_scalars=False`), `jet`.
"""

import argparse
import time

import jax
import jax.numpy as jnp

import taylorode
from taylorode import RecurrenceMethod


jax.config.update("jax_enable_x64", True)
LOOP = 50


def pleiades(t, y, args):
    x, yy, vx, vy = y[0:7], y[7:14], y[14:21], y[21:28]
    ax, ay = [], []
    for i in range(7):
        axi = ayi = 0.0
        for j in range(7):
            if i != j:
                dx, dy = x[j] - x[i], yy[j] - yy[i]
                r3 = (dx * dx + dy * dy) ** 1.5
                axi = axi + (j + 1) * dx / r3
                ayi = ayi + (j + 1) * dy / r3
        ax.append(axi)
        ay.append(ayi)
    return jnp.concatenate([vx, vy, jnp.stack(ax), jnp.stack(ay)])


Y0 = jnp.array(
    [3, 3, -1, -3, 2, -2, 2, 3, -3, 2, 0, 0, -4, 4, 0, 0, 0, 0, 0, 1.75, -1.5, 0, 0, 0, -1.25, 1, 0, 0],
    dtype=float,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[8, 20])
    parser.add_argument("--method", default="recurrence")
    cli = parser.parse_args()
    print("| field | method | order | compile (s) | run (µs) |\n|---|---|---:|---:|---:|")
    method = RecurrenceMethod(batch_scalars=False) if cli.method == "unbatched" else cli.method
    for p in cli.orders:

        def body(i, carry, p=p):
            y, acc = carry
            c = taylorode.taylor_coefficients(pleiades, 0.0, y, None, p, method=method)
            return y + 1e-14 * c[-1], acc + c[-1]

        fn = jax.jit(lambda y: jax.lax.fori_loop(0, LOOP, body, (y, jnp.zeros_like(y))))
        start = time.perf_counter()
        compiled = fn.lower(Y0).compile()
        compile_s = time.perf_counter() - start
        jax.block_until_ready(compiled(Y0))
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(compiled(Y0))
            best = min(best, time.perf_counter() - start)
        print(f"| Pleiades, scalar loops (28) | {cli.method} | {p} | {compile_s:.1f} | {1e6 * best / LOOP:.1f} |", flush=True)


if __name__ == "__main__":
    main()
