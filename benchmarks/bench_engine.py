"""Benchmark: taylorode's recurrence engine against `jax.experimental.jet`.

Part 1: one coefficient set of order p, for several vector fields and p in
{8, 12, 16, 20, 24}: compile time, and run time per coefficient set measured inside a
compiled `fori_loop` (a separately jitted call would mostly time dispatch).
Part 2: the same `diffeqsolve` (Kepler e = 0.5, 10 periods, tol 1e-12, Taylor(order=16))
with each backend: compile time, run time, and compile time of `jax.grad` through it.

Run with `python benchmarks/bench_engine.py` (`--quick` for a smoke run); results go to
stdout and, as Markdown, to `--out`. jet cases whose compile is expected to exceed
`--max-jet-compile` seconds (extrapolated from the previous order) are skipped and
marked as such.
"""

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


jax.config.update("jax_enable_x64", True)

LOOP = 100  # coefficient sets per timed call


def kepler(t, y, args):
    q, p = y[:2], y[2:]
    return jnp.concatenate([p, -q / jnp.sum(q**2) ** 1.5])


def lorenz(t, y, args):
    x, yy, z = y
    return jnp.stack([10 * (yy - x), x * (28 - z) - yy, x * yy - 8 / 3 * z])


def nbody(t, y, args):
    """7 bodies in 3D would be 42 coordinates; 28 = 7 bodies in 2D, positions+velocities."""
    n = y.shape[0] // 4
    q, p = y[: 2 * n].reshape(n, 2), y[2 * n :]
    d = q[:, None, :] - q[None, :, :]
    r2 = jnp.sum(d**2, -1) + jnp.eye(n)
    inv = (1 - jnp.eye(n)) * r2**-1.5
    return jnp.concatenate([p, -jnp.sum(d * inv[..., None], axis=1).reshape(-1)])


def chain(t, y, args):
    """100 coupled nonlinear oscillators: y = (positions, velocities), 50 each."""
    x, v = y[:50], y[50:]
    xl, xr = jnp.concatenate([x[:1], x[:-1]]), jnp.concatenate([x[1:], x[-1:]])
    return jnp.concatenate([v, (xl - 2 * x + xr) - jnp.sin(x)])


def make_mlp():
    mlp = eqx.nn.MLP(8, 8, 32, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    return lambda t, y, args: mlp(y)


def problems():
    rng = np.random.default_rng(0)
    return [
        ("Kepler (4)", kepler, jnp.array([0.5, 0.0, 0.0, 1.7])),
        ("Lorenz (3)", lorenz, jnp.array([1.0, 1.0, 1.0])),
        ("N-body (28)", nbody, jnp.asarray(np.concatenate([3 * rng.normal(size=14), 0.3 * rng.normal(size=14)]))),
        ("chain (100)", chain, jnp.asarray(0.1 * rng.normal(size=100))),
        ("MLP tanh (8)", make_mlp(), jnp.asarray(0.5 * rng.normal(size=8))),
    ]


def time_coefficients(field, y0, order, method, repeats):
    def body(i, carry):
        y, acc = carry
        c = taylorode.taylor_coefficients(field, 0.0, y, None, order, method=method)
        return y + 1e-14 * c[-1], acc + c[-1]

    fn = jax.jit(lambda y: jax.lax.fori_loop(0, LOOP, body, (y, jnp.zeros_like(y))))
    start = time.perf_counter()
    compiled = fn.lower(y0).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(y0))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(y0))
        best = min(best, time.perf_counter() - start)
    return compile_s, 1e6 * best / LOOP


def kepler_solve(method):
    e = 0.5
    y0 = jnp.array([1 - e, 0.0, 0.0, np.sqrt((1 + e) / (1 - e))])

    def final(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(kepler), taylorode.Taylor(16, method=method), 0.0, 20 * np.pi,
            None, y0, stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
            max_steps=10_000,
        )
        return sol.ys[-1]

    return final, y0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="orders 8 and 16, two fields")
    parser.add_argument("--max-jet-compile", type=float, default=60.0)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_engine.md")))
    cli = parser.parse_args()
    orders = [8, 16] if cli.quick else [8, 12, 16, 20, 24]
    probs = problems()[:2] if cli.quick else problems()
    repeats = 3 if cli.quick else 10

    lines = [
        "# Recurrence engine vs jet",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; JAX backend {jax.default_backend()}",
        f"- Versions: Python {platform.python_version()}, jax {jax.__version__}, diffrax {diffrax.__version__}, taylorode {taylorode.__version__}",
        f"- Run: per coefficient set, inside a compiled fori_loop of {LOOP}, best of {repeats}; compile: `lower().compile()` of that loop.",
        "",
        "## One coefficient set",
        "",
        "| field | order | engine compile (s) | jet compile (s) | engine run (µs) | jet run (µs) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for name, field, y0 in probs:
        last_jet = None
        for p in orders:
            rc, rr = time_coefficients(field, y0, p, "recurrence", repeats)
            # jet compile grows ~ p^3: skip when the extrapolation exceeds the budget.
            if last_jet is not None and last_jet[1] * (p / last_jet[0]) ** 3 > cli.max_jet_compile:
                jc = jr = None
            else:
                jc, jr = time_coefficients(field, y0, p, "jet", repeats)
                last_jet = (p, jc)
            fmt = lambda x, f: "skipped" if x is None else f.format(x)
            row = f"| {name} | {p} | {rc:.2f} | {fmt(jc, '{:.2f}')} | {rr:.2f} | {fmt(jr, '{:.2f}')} |"
            lines.append(row)
            print(row, flush=True)

    part2 = [
        "",
        "## Kepler e = 0.5, 10 periods, tol 1e-12, `Taylor(order=16)`",
        "",
        "| method | solve compile (s) | solve run (ms) | error | `jax.grad` compile (s) | `jax.grad` run (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(part2), flush=True)
    lines += part2
    for method in ["recurrence", "jet"]:
        final, y0 = kepler_solve(method)
        start = time.perf_counter()
        solve = jax.jit(final).lower(y0).compile()
        sc = time.perf_counter() - start
        yT = jax.block_until_ready(solve(y0))
        sr = min(_timed(solve, y0) for _ in range(repeats))
        err = float(jnp.max(jnp.abs(yT - y0)))
        if cli.quick:
            gc = gr = None
        else:
            start = time.perf_counter()
            grad = jax.jit(jax.grad(lambda y: jnp.sum(final(y) ** 2))).lower(y0).compile()
            gc = time.perf_counter() - start
            jax.block_until_ready(grad(y0))
            gr = min(_timed(grad, y0) for _ in range(3))
        fmt = lambda x, f: "not run" if x is None else f.format(x)
        row = f"| {method} | {sc:.2f} | {1e3 * sr:.2f} | {err:.1e} | {fmt(gc, '{:.1f}')} | {fmt(gr if gr is None else 1e3 * gr, '{:.1f}')} |"
        lines.append(row)
        print(row, flush=True)
    Path(cli.out).write_text("\n".join(lines) + "\n")
    print(f"\nWritten to {cli.out}")


def _timed(fn, y0):
    start = time.perf_counter()
    jax.block_until_ready(fn(y0))
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
