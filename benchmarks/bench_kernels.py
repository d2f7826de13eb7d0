"""Benchmark: XLA kernels, compile time and run time of one coefficient set, single and
vmapped, for this checkout and a baseline checkout.

XLA:CPU pays per fusion kernel, at compile and at run time, so the number of kernels in
the optimised program of one coefficient set (`compiled.as_text()`, not the lowered
StableHLO) is the figure to bring down. For Kepler, Lorenz, Pleiades (vectorised), the
100-oscillator chain, the tanh MLP and the FPUT beta chain of 32 masses (cubic springs:
an integer power's carried series) (`_problems.py`), at orders 13 and 18 (Jorba & Zou's
at tol 1e-10 and 1e-14), and 50-dimensional fields on rules that carry series of their
own between orders (cumulative product, i0e, gammaln, log1p and expm1, atan2) at order
13, with `method="recurrence"`:

- **kernels**: fusions, copies and other kernels in the optimised HLO of a `fori_loop` of
  `LOOP` coefficient sets (the loop body: one set);
- **compile s**: `jax.jit(...).lower(...).compile()` of that loop;
- **run µs**: per coefficient set, the loop's best of `--repeats` calls / `LOOP`;
- single (one state) and vmapped (`BATCH` states at once; µs per batch).

Each measurement is made in `--rounds` fresh processes and the least time kept: vmapped
run times differ by up to 1.7x from one process to the next on this machine, far more
than between calls within one. With `--baseline DIR` the same rounds, alternating with
this checkout's, use the `taylorode` package of another checkout (a git worktree of an
earlier commit), so that before and after come from one run.

    python benchmarks/bench_kernels.py --baseline /tmp/taylorode-base
    python benchmarks/bench_kernels.py --quick
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import _harness as h
import _problems as P
import jax
import jax.numpy as jnp

import taylorode


LOOP = 100
BATCH = 64
ORDERS = (13, 18)
KERNEL = re.compile(r"^\s*(?:ROOT )?%\S+ = \S+ (fusion|copy|gather|dot|reduce|sort|conditional|while|custom-call)\(", re.M)


def fields():
    """[(name, field, y0)]: the coefficient-engine fields, Pleiades and the FPUT chain."""
    chosen = [f for f in P.coefficient_fields() if not f[0].startswith("N-body")]
    fput = ("FPUT (64)", P.fput, jnp.concatenate([jnp.sin(jnp.linspace(0.1, 3.0, 32)), jnp.zeros(32)]))
    return chosen[:2] + [("Pleiades (28)", P.pleiades, jnp.asarray(P.PLEIADES_Y0))] + chosen[2:] + [fput]


def _rule_field(g):
    """A 50-dimensional field x'' = g(x, x') built on one rule."""
    def field(t, y, args):
        x, v = y[:25], y[25:]
        return jnp.concatenate([v, g(x, v)])
    return field


def rule_fields():
    """[(name, field, y0)]: fields on rules that carry series of their own between orders
    (measured at the first order of `ORDERS` only)."""
    special = jax.scipy.special
    y0 = jnp.linspace(-1.0, 1.0, 50)
    return [(name + " (50)", _rule_field(g), y0) for name, g in [
        ("cumprod", lambda x, v: -x + 0.01 * jnp.cumprod(1 + 0.1 * x) * v),
        ("i0e", lambda x, v: -special.i0e(x + 2.0) * x),
        ("gammaln", lambda x, v: -special.gammaln(x + 2.0) * x),
        ("log1p, expm1", lambda x, v: jnp.log1p(0.5 * x * x) - jnp.expm1(0.3 * x)),
        ("atan2", lambda x, v: jnp.arctan2(x, v + 2.0)),
    ]]


def kernels(compiled) -> int:
    """Kernels of the optimised module: the kernel-forming instructions of its
    computations other than the bodies of fusions (which are one kernel each)."""
    text = compiled.as_text()
    fused = set(re.findall(r"\bfusion\(.*?calls=(%[\w.-]+)", text))
    count = 0
    for computation in re.split(r"\n(?=\S)", text):
        name = computation.split(" ", 2)[1] if computation.startswith("ENTRY") else computation.split(" ", 1)[0]
        if name not in fused:
            count += len(KERNEL.findall(computation))
    return count


def measure(field, y0, order, batched, repeats):
    """(kernels, compile s, run µs per coefficient set or batch)."""
    def one(y):
        return taylorode.taylor_coefficients(field, 0.0, y, None, order)[-1]

    step = jax.vmap(one) if batched else one
    y = jnp.broadcast_to(y0, (BATCH,) + y0.shape) * (1 + 1e-3 * jnp.arange(BATCH))[:, None] if batched else y0

    def body(i, carry):
        y, acc = carry
        c = step(y)
        return y + 1e-14 * c, acc + c

    compiled, compile_s = h.compile_timed(lambda y: jax.lax.fori_loop(0, LOOP, body, (y, jnp.zeros_like(y))), y)
    times, _ = h.time_calls(compiled, y, repeats=repeats)
    return kernels(compiled), compile_s, 1e6 * min(times) / LOOP


def run_all(repeats, quick):
    rows = []
    cases = [(f, ORDERS) for f in fields()] + [(f, ORDERS[:1]) for f in rule_fields()]
    for (name, field, y0), orders in (cases[:2] if quick else cases):
        for order in (orders[:1] if quick else orders):
            for batched in (False, True):
                k, c, r = measure(field, y0, order, batched, repeats)
                rows.append(dict(field=name, order=order, batched=batched, kernels=k, compile_s=c, run_us=r))
                print(f"  {name} order {order} {'vmap' if batched else 'single'}: {k} kernels, "
                      f"compile {c:.2f} s, run {r:.2f} us", flush=True, file=sys.stderr)
    return rows


def rows_in_subprocess(directory, repeats, quick):
    """The rows measured in a fresh process, with `directory`'s taylorode (this
    checkout's where `directory` is None)."""
    env = dict(os.environ)
    if directory is not None:
        env["PYTHONPATH"] = str(Path(directory).resolve())
    argv = [sys.executable, __file__, "--json", "--repeats", str(repeats)] + (["--quick"] if quick else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd=h.BENCH_DIR)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_of(rounds):
    """Per row, the least compile and run time over the rounds."""
    return [
        dict(rs[0], compile_s=min(r["compile_s"] for r in rs), run_us=min(r["run_us"] for r in rs))
        for rs in zip(*rounds)
    ]


def revision(directory):
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=directory,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    parser = h.parser(__doc__, "results_kernels.md", quick_help="two fields, order 13")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per checkout")
    parser.add_argument("--baseline", metavar="DIR", help="a checkout whose taylorode to measure as well")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a round's rows
    cli = h.parse_args(parser)
    if cli.json:
        print(json.dumps(run_all(cli.repeats, cli.quick)))
        return
    after_rounds, before_rounds = [], []
    for _ in range(cli.rounds):
        after_rounds.append(rows_in_subprocess(None, cli.repeats, cli.quick))
        if cli.baseline:
            before_rounds.append(rows_in_subprocess(cli.baseline, cli.repeats, cli.quick))
    rows = best_of(after_rounds)
    before = best_of(before_rounds) if cli.baseline else None
    lines = []
    h.emit(lines, [
        "# Kernels, compile and run time of one coefficient set",
        "",
        *h.environment_lines(cli.quick),
        f"- One coefficient set of `taylorode.taylor_coefficients(field, 0, y, None, order)` "
        f"(recurrence engine) inside a `fori_loop` of {LOOP}; **kernels**: kernels (fusions, "
        "copies, gathers, reductions, loops) in the optimised HLO of that loop; **compile s**: "
        "`lower().compile()` of the loop; **run µs**: best of "
        f"{cli.repeats} calls / {LOOP}, per coefficient set (single) or per batch of "
        f"{BATCH} states (vmap); both the least over {cli.rounds} fresh processes.",
        f"- Baseline: taylorode at git {revision(cli.baseline)} ({cli.baseline}), measured in "
        "processes alternating with this checkout's." if before else "- No baseline.",
        "",
    ])
    header = ["field", "order", "mode", "kernels", "compile s", "run µs"]
    align = "lrlrrr"
    if before:
        header = ["field", "order", "mode", "kernels before", "kernels", "compile s before",
                  "compile s", "run µs before", "run µs", "run after / before"]
        align = "lrlrrrrrrr"
    table = []
    for i, r in enumerate(rows):
        mode = "vmap" if r["batched"] else "single"
        if before:
            b = before[i]
            table.append([r["field"], str(r["order"]), mode, str(b["kernels"]), str(r["kernels"]),
                          f"{b['compile_s']:.2f}", f"{r['compile_s']:.2f}", f"{b['run_us']:.2f}",
                          f"{r['run_us']:.2f}", f"{r['run_us'] / b['run_us']:.2f}"])
        else:
            table.append([r["field"], str(r["order"]), mode, str(r["kernels"]),
                          f"{r['compile_s']:.2f}", f"{r['run_us']:.2f}"])
    h.emit(lines, h.md_table(header, align, table))
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
