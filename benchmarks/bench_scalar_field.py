"""Benchmark: a vector field written as hundreds of scalar operations.

The Pleiades problem (Hairer, Nørsett & Wanner: 7 bodies in the plane, masses 1..7,
28 coordinates) written body by body with Python loops, as it is often written
(`_problems.pleiades_scalar_loops`). This is the case the recurrence engine's scalar
batching is for (see docs/benchmarks.md): without it every scalar operation gets its
own recurrence per order. Compile time and run time of one coefficient set (inside a
compiled fori_loop of 50), for the orders given.

Methods: `recurrence` (the default engine, scalar batching on; orders 8 to 24),
`unbatched` (the same engine with `batch_scalars=False`; orders 8 and 12) and `jet`
(order 8): the other two compile for tens of seconds, so they are run at low orders.

    python benchmarks/bench_scalar_field.py [--orders 8 20] [--methods recurrence]
    python benchmarks/bench_scalar_field.py --quick    # smoke run
"""

import _harness as h
import _problems as P
import jax
import jax.numpy as jnp

import taylorode
from taylorode import RecurrenceMethod


LOOP = 50
REPEATS = 5
ORDERS = {"recurrence": (8, 12, 16, 20, 24), "unbatched": (8, 12), "jet": (8,)}


def measure(method, order, repeats):
    """(compile s, run µs per coefficient set) of `LOOP` coefficient sets in a
    compiled fori_loop, the run the best of `repeats` after a warm-up call."""

    def body(i, carry):
        y, acc = carry
        c = taylorode.taylor_coefficients(
            P.pleiades_scalar_loops, 0.0, y, None, order, method=method
        )
        return y + 1e-14 * c[-1], acc + c[-1]

    y0 = jnp.asarray(P.PLEIADES_Y0)
    compiled, compile_s = h.compile_timed(
        lambda y: jax.lax.fori_loop(0, LOOP, body, (y, jnp.zeros_like(y))), y0
    )
    times, _ = h.time_calls(compiled, y0, repeats=repeats)
    return compile_s, 1e6 * min(times) / LOOP


def main():
    parser = h.parser(
        __doc__, "results_scalar_field.md", quick_help="recurrence at order 8 only, 2 repeats"
    )
    parser.add_argument("--orders", type=int, nargs="+", help=f"default, per method: {ORDERS}")
    parser.add_argument(
        "--methods", nargs="+", choices=list(ORDERS), help=f"default: {list(ORDERS)}"
    )
    cli = h.parse_args(parser)
    methods = cli.methods or (["recurrence"] if cli.quick else list(ORDERS))
    repeats = 2 if cli.quick else REPEATS

    lines = []
    h.emit(lines, [
        "# A vector field written as scalar operations: Pleiades with Python loops",
        "",
        *h.environment_lines(cli.quick),
        f"- Run: per coefficient set, inside a compiled fori_loop of {LOOP}, best of "
        f"{repeats} after a warm-up call; compile: `lower().compile()` of that loop.",
        "",
        *h.md_table(["field", "method", "order", "compile (s)", "run (µs)"], "llrrr"),
    ])
    for name in methods:
        method = RecurrenceMethod(batch_scalars=False) if name == "unbatched" else name
        orders = cli.orders or ([8] if cli.quick else ORDERS[name])
        for p in orders:
            compile_s, run_us = measure(method, p, repeats)
            h.emit(lines, [h.md_row([
                "Pleiades, scalar loops (28)", name, p, f"{compile_s:.1f}", f"{run_us:.1f}"
            ])])
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
