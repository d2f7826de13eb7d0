"""Benchmark: many Kepler trajectories at once, `jax.vmap` over taylorode vs heyoka's batch mode.

N = 1000 Kepler orbits (mu = 1), all from pericentre with semi-major axis 1 and
eccentricities spread evenly over [0.1, 0.7], each over one period (t1 = 2 pi), in
float64 at tol 1e-10 and 1e-14 (rtol = atol = tol):

- `Taylor()+TC vmap`: `jax.jit(jax.vmap(solve))`, `solve` one `diffeqsolve` with
  `taylorode.Taylor()` (order from the tolerance) + `taylorode.TaylorController`;
- `Taylor(orders)+TC vmap`: the same with `Taylor(orders=(p-2, p, p+2))` (the order is
  chosen per step, the same for the whole batch);
- `Dopri8+PID vmap`: diffrax `Dopri8` + `PIDController`, vmapped the same way;
- `Taylor()+TC map(125)`: `jax.lax.map(solve, y0s, batch_size=125)`, the vmapped solve
  over chunks of 125 trajectories (neighbours in eccentricity) one after another, each
  chunk running until its own slowest trajectory is done rather than the whole batch
  until the slowest of all (125 divides N, so one chunk size is compiled);
- `Taylor()+TC map(125) shuffled`: the same over the trajectories in a random order
  (fixed seed), so that each chunk mixes eccentricities as the whole batch does;
- `heyoka batch`: `heyoka.taylor_adaptive_batch` with batch size
  `heyoka.recommended_simd_size()`, looping over the N trajectories in chunks;
- `heyoka one by one`: one `heyoka.taylor_adaptive`, reset and propagated N times;
- `heyoka ensemble` / `heyoka batch ensemble`: `heyoka.ensemble_propagate_until` (one
  integrator per trajectory) / `ensemble_propagate_until_batch` (the batch-mode chunks),
  in parallel threads on the machine's cores;
- `Taylor()+TC loop`: the jitted single-trajectory solve called N times from Python.

Per (solver, tol): total wall time, time per trajectory, compile time, the largest error
over the trajectories against the exact Kepler solution, and total steps. Problem,
reference and error measure are `_problems.py`'s Kepler, timing the harness's.

    python benchmarks/bench_batch.py            # full run
    python benchmarks/bench_batch.py --quick    # smoke run (fewer trajectories)
    python benchmarks/bench_batch.py --n 256 --tols 1e-12 --solvers "heyoka batch"
"""

import dataclasses
import statistics
import sys
import time

import _harness as h
import _problems as P
import diffrax
import heyoka as hy
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


N_TRAJECTORIES = 1000
QUICK_N = 128
ALL_TOLS = (1e-10, 1e-14)
QUICK_TOLS = (1e-10,)
ECC_RANGE = (0.1, 0.7)
T1 = 2 * np.pi  # one period of every orbit (a = 1, up to the rounding of y0)
MAX_STEPS = 100_000
CHUNK = 125  # trajectories per chunk of `Taylor()+TC map(CHUNK)` (divides N: one compiled chunk)
REPEATS = 5  # timed runs after a warm-up (diffrax: best; heyoka: median)


# --- Problem ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Batch:
    """The trajectories: (n, 4) initial states and their exact states at T1."""

    y0s: np.ndarray
    refs: np.ndarray
    key: str = "batch"


def initial_conditions(n):
    """(n, 4) pericentre states: a = 1, period 2 pi, e evenly spread over ECC_RANGE."""
    e = np.linspace(*ECC_RANGE, n)
    return P.kepler_pericentre_state(e), e


def references(y0s):
    """The exact state at T1 of each float64 problem (each orbit's own a and e from its
    float64 y0, Kepler's equation in mpmath)."""
    return np.stack([P.kepler_exact_from_apsis(y0, T1) for y0 in y0s])


def check_reference(y0s, refs, picks=3):
    """The largest difference between the exact solution and heyoka in real128 on a
    few trajectories (first, middle, last)."""
    idx = np.unique(np.linspace(0, len(y0s) - 1, picks).astype(int))
    return max(
        h.mixed_error(
            P.heyoka_reference(P.kepler_heyoka, y0s[i], T1, hy.real128)[0], refs[i]
        )
        for i in idx
    )


def errors(ys, refs):
    ys, refs = np.asarray(ys, np.float64), np.asarray(refs, np.float64)
    return np.max(np.abs(ys - refs) / (1 + np.abs(refs)), axis=1)


# --- Solvers ----------------------------------------------------------------------


SOLVERS = h.Registry()


def result(*, ys, refs, accepted, rejected, compile_s, times, stat, order, notes=""):
    err = errors(ys, refs)
    total = (min if stat == "best" else statistics.median)(times)
    n = len(refs)
    return dict(
        order=order,
        max_error=float(err.max()),
        median_error=float(np.median(err)),
        worst=int(err.argmax()),
        accepted=int(accepted),
        rejected=None if rejected is None else int(rejected),
        compile_s=compile_s,
        total_s=total,
        per_traj_us=1e6 * total / n,
        stat=stat,
        notes=notes,
    )


def single_solve(diffrax_solver, controller, taylor):
    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(P.kepler),
            diffrax_solver,
            t0=0.0,
            t1=T1,
            dt0=None,
            y0=y0,
            stepsize_controller=controller,
            max_steps=MAX_STEPS,
            saveat=diffrax.SaveAt(t1=True, solver_state=taylor),
        )
        counts = taylorode.order_counts(sol) if taylor else None
        return (
            sol.ys[-1],
            sol.stats["num_accepted_steps"],
            sol.stats["num_rejected_steps"],
            counts,
        )

    return solve


def run_vmap(batch, settings, diffrax_solver, controller, *, taylor, order, chunk=None, shuffle=False):
    """`jax.jit(jax.vmap(solve))` over all trajectories (with `chunk`,
    `jax.lax.map(solve, y0s, batch_size=chunk)`: chunks of that many, one after
    another; with `shuffle`, over the trajectories in a random order): compiled once
    by lower + compile, a warm-up call, then the best of `settings.diffrax_repeats`
    calls."""
    n = len(batch.y0s)
    perm = np.random.default_rng(0).permutation(n) if shuffle else np.arange(n)
    y0 = jnp.asarray(batch.y0s[perm])
    solve = single_solve(diffrax_solver, controller, taylor)
    if chunk is None:
        batched = jax.vmap(solve)
    else:
        batched = lambda y: jax.lax.map(solve, y, batch_size=chunk)  # noqa: E731
    compiled, compile_s = h.compile_timed(batched, y0)
    times, out = h.time_calls(compiled, y0, repeats=settings.diffrax_repeats)
    ys, acc, rej, counts = jax.tree_util.tree_map(np.asarray, out)
    ys = ys[np.argsort(perm)]  # back in the batch's order, for the errors
    notes = ""
    if taylor:
        order = {int(q): int(n.sum()) for q, n in counts.items()}
        if sum(order.values()) != acc.sum():
            notes = (f"order_counts sum to {sum(order.values())}, but "
                     f"num_accepted_steps sums to {acc.sum()}")
    return result(
        ys=ys, refs=batch.refs, accepted=acc.sum(), rejected=rej.sum(),
        compile_s=compile_s, times=times, stat="best", order=order, notes=notes,
    )


@SOLVERS.add("Taylor()+TC vmap")
def taylor_vmap(batch, tol, settings):
    return run_vmap(
        batch, settings, taylorode.Taylor(), taylorode.TaylorController(rtol=tol, atol=tol),
        taylor=True, order=None,
    )


@SOLVERS.add("Taylor(orders)+TC vmap")
def taylor_orders_vmap(batch, tol, settings):
    p = h.heyoka_order(tol)
    return run_vmap(
        batch, settings, taylorode.Taylor(orders=(p - 2, p, p + 2)),
        taylorode.TaylorController(rtol=tol, atol=tol), taylor=True, order=None,
    )


@SOLVERS.add(f"Taylor()+TC map({CHUNK})")
def taylor_map(batch, tol, settings):
    return run_vmap(
        batch, settings, taylorode.Taylor(), taylorode.TaylorController(rtol=tol, atol=tol),
        taylor=True, order=None, chunk=CHUNK,
    )


@SOLVERS.add(f"Taylor()+TC map({CHUNK}) shuffled")
def taylor_map_shuffled(batch, tol, settings):
    return run_vmap(
        batch, settings, taylorode.Taylor(), taylorode.TaylorController(rtol=tol, atol=tol),
        taylor=True, order=None, chunk=CHUNK, shuffle=True,
    )


@SOLVERS.add("Dopri8+PID vmap")
def dopri8_vmap(batch, tol, settings):
    return run_vmap(
        batch, settings, diffrax.Dopri8(), diffrax.PIDController(rtol=tol, atol=tol),
        taylor=False, order=8,
    )


@SOLVERS.add("Taylor()+TC loop")
def taylor_loop(batch, tol, settings):
    """The single-trajectory solve, jitted, called once per trajectory from Python
    (one timed pass over all trajectories after a warm-up pass)."""
    y0 = [jnp.asarray(y) for y in batch.y0s]
    compiled, compile_s = h.compile_timed(single_solve(
        taylorode.Taylor(), taylorode.TaylorController(rtol=tol, atol=tol), True
    ), y0[0])
    one_pass = lambda: [jax.block_until_ready(compiled(y)) for y in y0]  # noqa: E731
    times, outs = h.time_calls(one_pass, repeats=1, block=False)
    ys = np.stack([np.asarray(o[0]) for o in outs])
    acc = sum(int(o[1]) for o in outs)
    rej = sum(int(o[2]) for o in outs)
    order = {}
    for o in outs:
        for q, n in o[3].items():
            order[int(q)] = order.get(int(q), 0) + int(n)
    return result(
        ys=ys, refs=batch.refs, accepted=acc, rejected=rej, compile_s=compile_s,
        times=times, stat="one pass", order=order,
    )


def _chunked(y0s):
    """`(bs, n_chunks, chunks)`: the trajectories in chunks of heyoka's recommended SIMD
    width `bs`, the last padded with copies, each chunk shaped `(4, bs)`."""
    bs = hy.recommended_simd_size()
    n = len(y0s)
    n_chunks = -(-n // bs)
    padded = np.concatenate([y0s, np.repeat(y0s[-1:], n_chunks * bs - n, axis=0)])
    return bs, n_chunks, padded.reshape(n_chunks, bs, 4).transpose(0, 2, 1).copy()


def _lanes(ta):
    """The states `(bs, 4)` and step counts of a propagated `taylor_adaptive_batch`,
    each lane checked to have reached T1."""
    for outcome, *_ in ta.propagate_res:
        if outcome != hy.taylor_outcome.time_limit:
            raise RuntimeError(f"heyoka stopped early: {outcome}")
    return ta.state.T.copy(), [res[3] for res in ta.propagate_res]


def propagate_chunks(ta, chunks):
    """Each chunk `(4, bs)` in turn through the `taylor_adaptive_batch` `ta`, reset to
    t = 0 and propagated to T1: the states `(n_chunks * bs, 4)` and steps per lane."""
    bs = chunks.shape[-1]
    zeros, t1 = np.zeros(bs), np.full(bs, T1)
    ys, steps = [], []
    for chunk in chunks:
        ta.set_time(zeros)
        ta.state[:] = chunk
        ta.propagate_until(t1)
        y, s = _lanes(ta)
        ys.append(y)
        steps.append(s)
    return np.concatenate(ys), np.concatenate(steps)


def _heyoka_result(one_pass, batch, settings, compile_s, order, notes=""):
    """Time `one_pass` (median of `settings.heyoka_repeats` calls) and report it."""
    times, (ys, steps) = h.time_calls(
        one_pass, repeats=settings.heyoka_repeats, warmup=False, block=False
    )
    return result(
        ys=ys, refs=batch.refs, accepted=steps.sum(), rejected=None,
        compile_s=compile_s, times=times, stat="median", order=order, notes=notes,
    )


@SOLVERS.add("heyoka batch")
def heyoka_batch(batch, tol, settings):
    """`taylor_adaptive_batch` of the recommended SIMD width; the trajectories in
    chunks of that width (the last one padded), each chunk reset and propagated to
    T1. Run = median of `settings.heyoka_repeats` passes over all chunks."""
    n = len(batch.y0s)
    bs, n_chunks, chunks = _chunked(batch.y0s)
    ta, compile_s = h.heyoka_build(
        hy.taylor_adaptive_batch, P.kepler_heyoka, chunks[0], tol=tol
    )

    def one_pass():
        ys, steps = propagate_chunks(ta, chunks)
        return ys[:n], steps[:n]

    return _heyoka_result(one_pass, batch, settings, compile_s, ta.order,
        notes=f"batch size {bs} ({n_chunks} chunks"
        + (f", the last padded with {n_chunks * bs - n} copies)" if n % bs else ")"))


@SOLVERS.add("heyoka one by one")
def heyoka_single(batch, tol, settings):
    """One `taylor_adaptive`, reset and propagated to T1 once per trajectory. Run =
    median of `settings.heyoka_repeats` passes over all trajectories."""
    ta, compile_s = h.heyoka_build(
        hy.taylor_adaptive, P.kepler_heyoka, batch.y0s[0], tol=tol
    )

    def one_pass():
        ys, steps = [], []
        for y0 in batch.y0s:
            ta.time = 0.0
            ta.state[:] = y0
            outcome, _, _, n_steps, *_ = ta.propagate_until(T1)
            if outcome != hy.taylor_outcome.time_limit:
                raise RuntimeError(f"heyoka stopped early: {outcome}")
            ys.append(ta.state.copy())
            steps.append(n_steps)
        return np.stack(ys), np.array(steps)

    return _heyoka_result(one_pass, batch, settings, compile_s, ta.order)


@SOLVERS.add("heyoka ensemble")
def heyoka_ensemble(batch, tol, settings):
    """`heyoka.ensemble_propagate_until` with threads (`algorithm="thread"`): one
    `taylor_adaptive` copied per trajectory, each reset to its initial state and
    propagated to T1 in parallel on the machine's cores. Run = median of
    `settings.heyoka_repeats` calls."""
    ta, compile_s = h.heyoka_build(
        hy.taylor_adaptive, P.kepler_heyoka, batch.y0s[0], tol=tol
    )
    y0s = batch.y0s

    def gen(copy, i):
        copy.time = 0.0
        copy.state[:] = y0s[i]
        return copy

    def one_pass():
        out = hy.ensemble_propagate_until(ta, T1, len(y0s), gen, algorithm="thread")
        for res in out:
            if res[1] != hy.taylor_outcome.time_limit:
                raise RuntimeError(f"heyoka stopped early: {res[1]}")
        return np.stack([res[0].state.copy() for res in out]), np.array([res[4] for res in out])

    return _heyoka_result(one_pass, batch, settings, compile_s, ta.order,
        notes="threads on all cores")


@SOLVERS.add("heyoka batch ensemble")
def heyoka_batch_ensemble(batch, tol, settings):
    """`heyoka.ensemble_propagate_until_batch` with threads: the chunks of
    `heyoka batch` propagated in parallel, one `taylor_adaptive_batch` copy each.
    Run = median of `settings.heyoka_repeats` calls."""
    n = len(batch.y0s)
    bs, n_chunks, chunks = _chunked(batch.y0s)
    ta, compile_s = h.heyoka_build(
        hy.taylor_adaptive_batch, P.kepler_heyoka, chunks[0], tol=tol
    )
    zeros = np.zeros(bs)

    def gen(copy, i):
        copy.set_time(zeros)
        copy.state[:] = chunks[i]
        return copy

    def one_pass():
        out = hy.ensemble_propagate_until_batch(ta, T1, n_chunks, gen, algorithm="thread")
        ys, steps = zip(*(_lanes(res[0]) for res in out))
        return np.concatenate(ys)[:n], np.concatenate(steps)[:n]

    return _heyoka_result(one_pass, batch, settings, compile_s, ta.order,
        notes=f"batch size {bs}, {n_chunks} chunks on threads")


# --- Report -----------------------------------------------------------------------


def header(cli, n, tols, names, ref_check, repeats):
    return [
        "# Batches: N Kepler trajectories, vmapped taylorode vs heyoka's batch mode",
        "",
        *h.environment_lines(cli.quick),
        f"- heyoka SIMD batch size (`recommended_simd_size()`): "
        f"{hy.recommended_simd_size()}",
        f"- Problem: {n} Kepler orbits (mu = 1) from pericentre, y0 = (1 - e, 0, 0, "
        f"sqrt((1 + e)/(1 - e))), semi-major axis 1, e evenly spaced in "
        f"[{ECC_RANGE[0]}, {ECC_RANGE[1]}], one period each (t1 = 2 pi); tols "
        f"{', '.join(f'{t:.0e}' for t in tols)} (rtol = atol = tol); solvers: "
        f"{', '.join(names)}",
        "- Reference: the exact solution of each float64 problem (Kepler's equation in "
        "mpmath, the orbit's own a and e from its float64 y0, at the float64 t1); "
        f"heyoka in real128 (tol 1e-33) agrees to {ref_check:.1e} on the first, middle "
        "and last trajectories.",
        "- Settings: float64; diffrax: `dt0=None`, `max_steps="
        f"{MAX_STEPS}`, `jax.jit(jax.vmap(solve))` over the (N, 4) initial states, "
        "the same t0, t1 and tolerance for all; Taylor(orders): orders (p-2, p, p+2) "
        "with p = max(2, ceil(-ln(tol)/2 + 1)). heyoka: default (non-compact) mode.",
        "- **error**: max (and median) over the trajectories of max_i |y_i(t1) - "
        "ref_i| / (1 + |ref_i|).",
        "- **steps**: accepted steps taken, summed over the trajectories, and rejected "
        "steps. heyoka never rejects a step. In heyoka's batch mode "
        "the lanes of a chunk step together, each with its own step size; the count "
        "is per lane.",
        "- **compile s**: diffrax: `lower(y0s).compile()` of the jitted (vmapped) "
        "solve; heyoka: construction of the integrator with its in-memory cache "
        "cleared and its disk cache off.",
        f"- **total ms**: diffrax vmap: best of {repeats} calls after a warm-up call; "
        f"heyoka: median of {repeats} passes over all trajectories (reset + "
        "`propagate_until`); `Taylor()+TC loop`: one pass after a warm-up pass. Wall "
        "time, single process. **µs/traj** = total / N.",
    ]


def table(tol, rows):
    rows_md, notes = [], []
    for name, _, r in rows:
        if "failed" in r:
            rows_md.append([name, "", "failed", "", "", "", "", ""])
            notes.append(f"- {name}: failed: {r['failed']}")
            continue
        rej = "-" if r["rejected"] is None else r["rejected"]
        rows_md.append([
            name, h.fmt_order(r["order"]), f"{r['accepted']}/{rej}",
            f"{r['max_error']:.2e}", f"{r['median_error']:.2e}", f"{r['compile_s']:.2f}",
            f"{1e3 * r['total_s']:.1f}", f"{r['per_traj_us']:.1f}",
        ])
        if r["notes"]:
            notes.append(f"- {name}: {r['notes']}")
    ok = {name: r for name, _, r in rows if "failed" not in r}
    ref = ok.get("Taylor()+TC vmap")
    if ref:
        ratios = [
            f"{name} {r['total_s'] / ref['total_s']:.2f}"
            for name, r in ok.items()
            if name != "Taylor()+TC vmap"
        ]
        notes.append("- Total time relative to Taylor()+TC vmap: " + "; ".join(ratios))
    lines = [
        "",
        f"## tol {tol:.0e}",
        "",
        *h.md_table(
            ["solver", "orders used", "steps (acc/rej)", "max error", "median error",
             "compile s", "total ms", "µs/traj"],
            "lrrrrrrr",
            rows_md,
        ),
    ]
    if notes:
        lines += ["", *notes]
    return lines


def main():
    parser = h.parser(
        __doc__,
        "results_batch.md",
        quick_help=f"{QUICK_N} trajectories, tols {QUICK_TOLS}, fewer repeats "
        "(--n/--tols still override)",
    )
    parser.add_argument("--n", type=int, help=f"trajectories (default {N_TRAJECTORIES})")
    parser.add_argument("--tols", type=float, nargs="+", help=f"default {ALL_TOLS}")
    parser.add_argument(
        "--solvers",
        nargs="+",
        choices=SOLVERS.names(),
        metavar="NAME",
        help=f"default: all of {SOLVERS.names()}",
    )
    cli = h.parse_args(parser)
    n = cli.n or (QUICK_N if cli.quick else N_TRAJECTORIES)
    tols = cli.tols or (QUICK_TOLS if cli.quick else ALL_TOLS)
    solvers = SOLVERS.select(cli.solvers)
    repeats = 2 if cli.quick else REPEATS
    settings = h.Settings(max_steps=MAX_STEPS, diffrax_repeats=repeats, heyoka_repeats=repeats)

    y0s, _ = initial_conditions(n)
    start = time.perf_counter()
    refs = references(y0s)
    ref_check = check_reference(y0s, refs)
    print(f"references: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    batch = Batch(y0s=y0s, refs=refs)

    lines = []
    h.emit(lines, header(cli, n, tols, [s.name for s in solvers], ref_check, repeats))
    for tol in tols:
        rows = h.run_grid(
            batch, [tol], solvers, settings,
            lambda r: f"orders {h.fmt_order(r['order'])}, steps "
            f"{r['accepted']}/{r['rejected']}, max error {r['max_error']:.2e}, compile "
            f"{r['compile_s']:.2f} s, total {1e3 * r['total_s']:.1f} ms",
        )
        h.emit(lines, table(tol, rows))

    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
