"""Benchmark: first-call cost of `Taylor()` against Dopri8 over a battery of fields.

The fields users write: the non-smooth fields of the test module
`tests/nonsmooth_fields.py` (imported by path; `jnp.sign`, `jnp.clip`, `jnp.interp`, an
`equinox.nn.MLP` with relu, `jnp.where` on t and y, ...), the coefficient-engine fields
of `_problems.coefficient_fields` (Kepler, Lorenz, N-body, a 100-oscillator chain, a
tanh MLP) and a 4-dimensional field of smooth activations (softplus, gelu, sigmoid,
tanh, silu). For each: `jax.jit(solve).lower(y0).compile()` of a whole `diffeqsolve`
from t0 to t0 + 1 (trace, lower and compile together, the best of `--repeats` with
`jax.clear_caches()` before each), for `taylorode.Taylor()` +
`taylorode.TaylorController(tol, tol)` and `diffrax.Dopri8()` +
`diffrax.PIDController(tol, tol)`, and the ratio. The target: no field above 3x Dopri8.
Then the same for the harmonic oscillator (a linear field, nothing to expand): the part
of the ratio that is not the expansion.

The last columns repeat both with XLA:CPU's MLIR fusion emitters off for that one
function, `jax.jit(solve, compiler_options={"xla_cpu_use_fusion_emitters": False})`
(the option a user can set per jitted function, without touching the process's
`XLA_FLAGS`).

    python benchmarks/bench_compile_battery.py             # tol 1e-10, 2 repeats
    python benchmarks/bench_compile_battery.py --quick     # 4 fields, 1 repeat
"""

import importlib.util
import time
from pathlib import Path

import _harness as h  # first: it enables float64 before JAX starts
import _problems as P
import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


TOL = 1e-10
TARGET = 3.0
NO_EMITTERS = {"xla_cpu_use_fusion_emitters": False}


def _nonsmooth_module():
    path = Path(__file__).resolve().parent.parent / "tests" / "nonsmooth_fields.py"
    spec = importlib.util.spec_from_file_location("nonsmooth_fields", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def activations(t, y, args):
    return jnp.stack([
        jax.nn.softplus(y[1]) - y[0],
        jax.nn.gelu(y[2]) - y[1],
        jax.nn.sigmoid(y[3]) - y[2],
        jnp.tanh(y[0]) + jax.nn.silu(y[1]) - y[3],
    ])


def oscillator(t, y, args):
    return jnp.stack([y[1], -y[0]])


def battery():
    """[(name, f(t, y, args), y0, t0)]."""
    fields = [(p.name, p.f, jnp.asarray(p.y0), p.t0) for p in _nonsmooth_module().PROBLEMS]
    for name, fn, y in P.coefficient_fields():
        field = fn if name != "MLP tanh (8)" else (lambda t, y, args, fn=fn: fn(t, y, args))
        fields.append((name, field, y, 0.0))
    fields.append(("activations (4)", activations, jnp.array([0.1, 0.2, 0.3, 0.4]), 0.0))
    return fields


def first_call_s(field, y0, t0, solver, controller, repeats, compiler_options=None):
    def solve(y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(field), solver, t0, t0 + 1.0, None, y0,
            stepsize_controller=controller, max_steps=100_000, throw=False,
        ).ys[-1]

    best = float("inf")
    for _ in range(repeats):
        jax.clear_caches()
        start = time.perf_counter()
        jax.jit(solve, compiler_options=compiler_options).lower(y0).compile()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = h.parser(__doc__, "results_compile_battery.md", quick_help="4 fields, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None, help="default 2 (quick 1)")
    cli = h.parse_args(parser)
    repeats = cli.repeats or (1 if cli.quick else 2)
    fields = battery()
    if cli.quick:
        fields = fields[:2] + fields[-2:]
    lines = []
    h.emit(lines, [
        "# First-call cost over a battery of fields: Taylor() vs Dopri8",
        "",
        *h.environment_lines(cli.quick),
        f"- tol {TOL:g} (rtol = atol); `Taylor()` + `TaylorController`, `Dopri8` + "
        "`PIDController`; trace + lower + compile of a whole `diffeqsolve` over "
        f"[t0, t0 + 1], best of {repeats} with `jax.clear_caches()` before each. "
        "**emitters off**: the same with "
        "`jax.jit(solve, compiler_options={'xla_cpu_use_fusion_emitters': False})`.",
        "",
    ])
    rows, ratios, ratios_off, gains = [], [], [], []
    for name, field, y0, t0 in fields:
        times = []
        for options in (None, NO_EMITTERS):
            taylor = first_call_s(
                field, y0, t0, taylorode.Taylor(), taylorode.TaylorController(rtol=TOL, atol=TOL), repeats,
                options,
            )
            dopri = first_call_s(
                field, y0, t0, diffrax.Dopri8(), diffrax.PIDController(rtol=TOL, atol=TOL), repeats, options
            )
            times.append((taylor, dopri))
        (taylor, dopri), (taylor_off, dopri_off) = times
        ratios.append(taylor / dopri)
        ratios_off.append(taylor_off / dopri_off)
        gains.append(taylor_off / taylor)
        rows.append([name, str(y0.size), f"{taylor:.2f}", f"{dopri:.2f}", f"{taylor / dopri:.2f}",
                     "yes" if taylor / dopri <= TARGET else "**no**",
                     f"{taylor_off:.2f}", f"{dopri_off:.2f}", f"{taylor_off / dopri_off:.2f}"])
        print(f"  {name}: Taylor {taylor:.2f} s, Dopri8 {dopri:.2f} s, ratio {taylor / dopri:.2f}; "
              f"emitters off {taylor_off:.2f} / {dopri_off:.2f} s", flush=True)
    h.emit(lines, h.md_table(
        ["field", "n", "Taylor() s", "Dopri8 s", "Taylor / Dopri8", f"<= {TARGET:g}x",
         "Taylor() s, emitters off", "Dopri8 s, emitters off", "ratio, emitters off"],
        "lrrrrlrrr", rows,
    ))
    r = np.asarray(ratios)
    r_off, g = np.asarray(ratios_off), np.asarray(gains)
    # The floor: a linear field, whose expansion is one multiplication per order, so
    # that what is left is the rest of the solve (series sum, error estimate, first
    # step's check, controller, diffrax's loop).
    floor_y0 = jnp.array([1.0, 0.0])
    floor_taylor = first_call_s(
        oscillator, floor_y0, 0.0, taylorode.Taylor(), taylorode.TaylorController(rtol=TOL, atol=TOL), repeats
    )
    floor_dopri = first_call_s(
        oscillator, floor_y0, 0.0, diffrax.Dopri8(), diffrax.PIDController(rtol=TOL, atol=TOL), repeats
    )
    h.emit(lines, [
        "",
        f"- Ratio over {len(r)} fields: median {np.median(r):.2f}, range {r.min():.2f}-{r.max():.2f}; "
        f"{int(np.sum(r <= TARGET))} of {len(r)} within {TARGET:g}x.",
        f"- Emitters off: `Taylor()` takes {g.min():.2f}-{g.max():.2f} of its default time "
        f"(median {np.median(g):.2f}); ratio to Dopri8 (emitters off too) median "
        f"{np.median(r_off):.2f}, range {r_off.min():.2f}-{r_off.max():.2f}; "
        f"{int(np.sum(r_off <= TARGET))} of {len(r_off)} within {TARGET:g}x.",
        f"- Floor, the harmonic oscillator y'' = -y (nothing to expand): Taylor() {floor_taylor:.2f} s, "
        f"Dopri8 {floor_dopri:.2f} s, ratio {floor_taylor / floor_dopri:.2f}.",
    ])
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
