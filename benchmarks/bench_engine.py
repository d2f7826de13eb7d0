"""Benchmark: taylorode's recurrence engine against `jax.experimental.jet`.

Part 1: one coefficient set of order p, for several vector fields
(`_problems.coefficient_fields`) and p in {8, 12, 16, 20, 24}: compile time, and run time
per coefficient set measured inside a compiled `fori_loop` (a separately jitted call
would mostly time dispatch).
Part 2: the same `diffeqsolve` (Kepler e = 0.5, 10 periods, tol 1e-12, Taylor(order=16))
with each backend: compile time, run time, and compile time of `jax.grad` through it.

Results go to stdout and, as Markdown, to `--out`. jet cases whose compile is expected to
exceed `--max-jet-compile` seconds (extrapolated from the previous order) are skipped and
marked as such.

    python benchmarks/bench_engine.py            # full run
    python benchmarks/bench_engine.py --quick    # smoke run: orders 8 and 16, two fields
"""

import _harness as h
import _problems as P
import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


LOOP = 100  # coefficient sets per timed call


def time_coefficients(field, y0, order, method, repeats):
    def body(i, carry):
        y, acc = carry
        c = taylorode.taylor_coefficients(field, 0.0, y, None, order, method=method)
        return y + 1e-14 * c[-1], acc + c[-1]

    compiled, compile_s = h.compile_timed(
        lambda y: jax.lax.fori_loop(0, LOOP, body, (y, jnp.zeros_like(y))), y0
    )
    times, _ = h.time_calls(compiled, y0, repeats=repeats)
    return compile_s, 1e6 * min(times) / LOOP


def kepler_solve(method):
    y0 = jnp.asarray(P.kepler_pericentre_state(0.5))

    def final(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(P.kepler), taylorode.Taylor(16, method=method), 0.0, 20 * np.pi,
            None, y0, stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
            max_steps=10_000,
        )
        return sol.ys[-1]

    return final, y0


def fmt(x, spec, missing):
    return missing if x is None else format(x, spec)


def main():
    parser = h.parser(__doc__, "results_engine.md", quick_help="orders 8 and 16, two fields, no grad")
    parser.add_argument("--max-jet-compile", type=float, default=60.0)
    cli = h.parse_args(parser)
    orders = [8, 16] if cli.quick else [8, 12, 16, 20, 24]
    fields = P.coefficient_fields()[:2] if cli.quick else P.coefficient_fields()
    repeats = 3 if cli.quick else 10

    lines = []
    h.emit(lines, [
        "# Recurrence engine vs jet",
        "",
        *h.environment_lines(cli.quick),
        f"- Run: per coefficient set, inside a compiled fori_loop of {LOOP}, best of "
        f"{repeats}; compile: `lower().compile()` of that loop.",
        "",
        "## One coefficient set",
        "",
        *h.md_table(
            ["field", "order", "engine compile (s)", "jet compile (s)", "engine run (µs)",
             "jet run (µs)"],
            "lrrrrr",
        ),
    ])
    for name, field, y0 in fields:
        last_jet = None
        for p in orders:
            rc, rr = time_coefficients(field, y0, p, "recurrence", repeats)
            # jet compile grows ~ p^3: skip when the extrapolation exceeds the budget.
            if last_jet is not None and last_jet[1] * (p / last_jet[0]) ** 3 > cli.max_jet_compile:
                jc = jr = None
            else:
                jc, jr = time_coefficients(field, y0, p, "jet", repeats)
                last_jet = (p, jc)
            h.emit(lines, [h.md_row([
                name, p, f"{rc:.2f}", fmt(jc, ".2f", "skipped"), f"{rr:.2f}",
                fmt(jr, ".2f", "skipped"),
            ])])

    h.emit(lines, [
        "",
        "## Kepler e = 0.5, 10 periods, tol 1e-12, `Taylor(order=16)`",
        "",
        *h.md_table(
            ["method", "solve compile (s)", "solve run (ms)", "error",
             "`jax.grad` compile (s)", "`jax.grad` run (ms)"],
            "lrrrrr",
        ),
    ])
    for method in ["recurrence", "jet"]:
        final, y0 = kepler_solve(method)
        solve, sc = h.compile_timed(final, y0)
        times, yT = h.time_calls(solve, y0, repeats=repeats)
        sr = min(times)
        err = float(jnp.max(jnp.abs(yT - y0)))
        if cli.quick:
            gc = gr = None
        else:
            grad, gc = h.compile_timed(jax.grad(lambda y: jnp.sum(final(y) ** 2)), y0)
            gr = 1e3 * min(h.time_calls(grad, y0, repeats=3)[0])
        h.emit(lines, [h.md_row([
            method, f"{sc:.2f}", f"{1e3 * sr:.2f}", f"{err:.1e}", fmt(gc, ".1f", "not run"),
            fmt(gr, ".1f", "not run"),
        ])])
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
