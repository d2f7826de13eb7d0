"""Benchmark: step-size and order control, against heyoka and diffrax's Dopri8.

heyoka's adaptive Taylor integrator (Jorba-Zou order and step-size rules, LLVM
compiled), diffrax's `Dopri8` with a `PIDController`, and `taylorode.Taylor` with a
`PIDController` at heyoka's order for the tolerance, on three float64 problems with
accurate references:

- `kepler`: Kepler problem, e = 0.9, 10 periods from pericentre;
- `arenstorf`: restricted three-body Arenstorf orbit, one period;
- `pleiades`: the 7-body Pleiades problem of Hairer-Norsett-Wanner, t in [0, 3].

For each (problem, solver, tol): the order, accepted/rejected steps, the error at t1
against the reference, compile time and run time. One Markdown table per problem goes
to stdout and to `--out`.

The solvers form a registry: each entry is a function `(problem, tol) -> result dict`
registered with `@solver_config("name")`; `run_diffrax` does the work for any diffrax
solver + step-size controller, so a new taylorode configuration is one short function.

    python benchmarks/bench_control.py                # full run
    python benchmarks/bench_control.py --quick        # smoke run
    python benchmarks/bench_control.py --problems kepler --tols 1e-9 1e-14 \\
        --solvers heyoka "Taylor(p)+PID"
    python benchmarks/bench_control.py --check-references   # cross-check references
"""

import argparse
import dataclasses
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import diffrax
import heyoka as hy
import jax
import jax.numpy as jnp
import mpmath
import numpy as np

import taylorode


jax.config.update("jax_enable_x64", True)


# --- Settings ---------------------------------------------------------------------

ALL_TOLS = (1e-6, 1e-9, 1e-12, 1e-14)
QUICK_TOLS = (1e-6, 1e-12)
QUICK_PROBLEMS = ("kepler", "arenstorf")
MAX_STEPS = 200_000


@dataclasses.dataclass
class Timing:
    diffrax_repeats: int = 5  # timed calls after one warm-up call; best is reported
    heyoka_repeats: int = 7  # timed propagations from a reset state; median reported


TIMING = Timing()


def heyoka_order(tol):
    """heyoka's order rule (Jorba-Zou): p = max(2, ceil(-ln(tol)/2 + 1))."""
    return max(2, math.ceil(-0.5 * math.log(tol) + 1))


def mixed_error(y, ref):
    """max_i |y_i - ref_i| / (1 + |ref_i|): the error measure used throughout."""
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(y - ref) / (1 + np.abs(ref))))


# --- Problems ---------------------------------------------------------------------


@dataclasses.dataclass
class Problem:
    key: str  # the name on the command line
    title: str
    vector_field: Callable  # f(t, y, args) with jnp, for diffrax
    heyoka_system: Callable  # () -> [(variable, right-hand side), ...], same order as y0
    y0: np.ndarray  # float64
    t1: float  # float64; t0 = 0
    reference: np.ndarray  # the exact state at t1 of the float64 problem (y0, t1)
    reference_note: str


def heyoka_reference(system, y0, t1, fp_type):
    """The state at t1 from heyoka in extended/quad precision (compact mode, which
    compiles in well under a second where the default mode takes minutes in real128),
    started from the float64 y0 and stopped at the float64 t1."""
    tol = {np.longdouble: 1e-19, hy.real128: 1e-33}[fp_type]
    ta = hy.taylor_adaptive(
        system(),
        np.asarray(y0).astype(fp_type),
        fp_type=fp_type,
        tol=fp_type(tol),
        compact_mode=True,
    )
    outcome, *_ = ta.propagate_until(fp_type(t1))
    assert outcome == hy.taylor_outcome.time_limit, outcome
    return ta.state.astype(np.float64), ta.order, tol


def dop853_check(problem):
    from scipy.integrate import solve_ivp

    f = jax.jit(problem.vector_field)
    sol = solve_ivp(
        lambda t, y: np.asarray(f(t, y, None)),
        (0.0, problem.t1),
        problem.y0,
        method="DOP853",
        rtol=1e-14,  # scipy raises rtol to 100 eps = 2.2e-14
        atol=1e-14,
    )
    return sol.y[:, -1]


# Kepler ---------------------------------------------------------------------------


KEPLER_E = 0.9
KEPLER_PERIODS = 10


def kepler(t, y, args):
    q, p = y[:2], y[2:]
    r3 = jnp.sum(q**2) ** 1.5
    return jnp.concatenate([p, -q / r3])


def kepler_heyoka():
    x, y, vx, vy = hy.make_vars("x", "y", "vx", "vy")
    r3 = (x**2 + y**2) ** 1.5
    return [(x, vx), (y, vy), (vx, -x / r3), (vy, -y / r3)]


def kepler_exact_from_apsis(y0, t, dps=50):
    """Exact Kepler solution (mu = 1) at time t from an apsis state y0 = (r, 0, 0, v),
    in mpmath: semi-major axis and eccentricity from the (float64) y0 itself, then
    Kepler's equation by Newton's method."""
    with mpmath.workdps(dps):
        rp, vp, t = mpmath.mpf(y0[0]), mpmath.mpf(y0[3]), mpmath.mpf(t)
        a = -1 / (2 * (vp**2 / 2 - 1 / rp))
        ecc = 1 - rp / a
        n = a**-1.5
        M = n * t
        M -= 2 * mpmath.pi * mpmath.floor(M / (2 * mpmath.pi) + mpmath.mpf(1) / 2)
        E = M
        for _ in range(200):
            E -= (E - ecc * mpmath.sin(E) - M) / (1 - ecc * mpmath.cos(E))
        b = mpmath.sqrt(1 - ecc**2)
        Edot = n / (1 - ecc * mpmath.cos(E))
        state = [
            a * (mpmath.cos(E) - ecc),
            a * b * mpmath.sin(E),
            -a * mpmath.sin(E) * Edot,
            a * b * mpmath.cos(E) * Edot,
        ]
        return np.array([float(s) for s in state])


def kepler_problem():
    e = KEPLER_E
    y0 = np.array([1 - e, 0.0, 0.0, np.sqrt((1 + e) / (1 - e))])
    t1 = KEPLER_PERIODS * 2 * np.pi
    reference = kepler_exact_from_apsis(y0, t1)
    r128, _, _ = heyoka_reference(kepler_heyoka, y0, t1, hy.real128)
    note = (
        "exact solution of the float64 problem: the Kepler orbit through the float64 "
        "y0 (its own a and e, in mpmath), at the float64 t1, by Kepler's equation; "
        f"heyoka real128 (tol 1e-33) agrees to {mixed_error(r128, reference):.1e}. "
        f"Plain periodicity (y(t1) = y0) is off by {mixed_error(y0, reference):.1e} "
        "(rounding of y0 and of t1 = 20 pi), so it is no reference below tol ~ 1e-11"
    )
    return Problem(
        key="kepler",
        title=f"Kepler, e = {e}, {KEPLER_PERIODS} periods from pericentre "
        f"(t1 = {t1:.6g})",
        vector_field=kepler,
        heyoka_system=kepler_heyoka,
        y0=y0,
        t1=t1,
        reference=reference,
        reference_note=note,
    )


# Arenstorf ------------------------------------------------------------------------


ARENSTORF_MU = 0.012277471
ARENSTORF_MUP = 1 - ARENSTORF_MU  # float64, the same number in both vector fields
ARENSTORF_Y0 = np.array([0.994, 0.0, 0.0, -2.00158510637908252240537862224])
ARENSTORF_T = 17.0652165601579625588917206249


def arenstorf(t, y, args):
    x, y_, vx, vy = y[0], y[1], y[2], y[3]
    mu, mup = ARENSTORF_MU, ARENSTORF_MUP
    d1 = ((x + mu) ** 2 + y_**2) ** 1.5
    d2 = ((x - mup) ** 2 + y_**2) ** 1.5
    ax = x + 2 * vy - mup * (x + mu) / d1 - mu * (x - mup) / d2
    ay = y_ - 2 * vx - mup * y_ / d1 - mu * y_ / d2
    return jnp.stack([vx, vy, ax, ay])


def arenstorf_heyoka():
    x, y, vx, vy = hy.make_vars("x", "y", "vx", "vy")
    mu, mup = ARENSTORF_MU, ARENSTORF_MUP
    d1 = ((x + mu) ** 2 + y**2) ** 1.5
    d2 = ((x - mup) ** 2 + y**2) ** 1.5
    return [
        (x, vx),
        (y, vy),
        (vx, x + 2 * vy - mup * (x + mu) / d1 - mu * (x - mup) / d2),
        (vy, y - 2 * vx - mup * y / d1 - mu * y / d2),
    ]


def arenstorf_problem():
    y0, t1 = ARENSTORF_Y0, ARENSTORF_T
    reference, order, _ = heyoka_reference(arenstorf_heyoka, y0, t1, hy.real128)
    ld, _, _ = heyoka_reference(arenstorf_heyoka, y0, t1, np.longdouble)
    note = (
        f"heyoka in real128 (tol 1e-33, order {order}) from the float64 y0 to the "
        f"float64 T; heyoka in long double (tol 1e-19) agrees to "
        f"{mixed_error(ld, reference):.1e}. Plain periodicity (y(T) = y0) is off by "
        f"{mixed_error(y0, reference):.1e} (mu, y0 and T rounded to float64; the orbit "
        "amplifies perturbations ~1e5-fold), so it is no reference below tol ~ 1e-9"
    )
    return Problem(
        key="arenstorf",
        title=f"Arenstorf orbit (restricted three-body, mu = {ARENSTORF_MU}), "
        f"one period (t1 = {t1:.6g})",
        vector_field=arenstorf,
        heyoka_system=arenstorf_heyoka,
        y0=y0,
        t1=t1,
        reference=reference,
        reference_note=note,
    )


# Pleiades -------------------------------------------------------------------------


PLEIADES_N = 7
PLEIADES_MASSES = np.arange(1.0, PLEIADES_N + 1)
PLEIADES_EYE = np.eye(PLEIADES_N)
PLEIADES_WEIGHTS = PLEIADES_MASSES[None, :] * (1 - PLEIADES_EYE)  # m_j, 0 on i == j
PLEIADES_Y0 = np.array(
    [3, 3, -1, -3, 2, -2, 2]  # x_i
    + [3, -3, 2, 0, 0, -4, 4]  # y_i
    + [0, 0, 0, 0, 0, 1.75, -1.5]  # x_i'
    + [0, 0, 0, -1.25, 1, 0, 0],  # y_i'
    dtype=np.float64,
)


def pleiades(t, y, args):
    """q_i'' = sum_{j != i} m_j (q_j - q_i) / |q_j - q_i|^3, vectorised: pairwise
    differences by broadcasting; the diagonal (all zeros) gets r^2 = 1 and weight 0."""
    n = PLEIADES_N
    q = y[: 2 * n].reshape(2, n)
    d = q[:, None, :] - q[:, :, None]  # d[:, i, j] = q_j - q_i
    r2 = jnp.sum(d**2, axis=0) + PLEIADES_EYE
    w = PLEIADES_WEIGHTS * r2**-1.5
    acc = jnp.sum(w * d, axis=2)  # (2, n): x accelerations, then y
    return jnp.concatenate([y[2 * n :], acc.reshape(-1)])


def pleiades_heyoka():
    n = PLEIADES_N
    xs = hy.make_vars(*[f"x{i}" for i in range(n)])
    ys = hy.make_vars(*[f"y{i}" for i in range(n)])
    vxs = hy.make_vars(*[f"vx{i}" for i in range(n)])
    vys = hy.make_vars(*[f"vy{i}" for i in range(n)])
    ax, ay = [], []
    for i in range(n):
        sx, sy = [], []
        for j in range(n):
            if i != j:
                dx, dy = xs[j] - xs[i], ys[j] - ys[i]
                w = PLEIADES_MASSES[j] * (dx**2 + dy**2) ** -1.5
                sx.append(w * dx)
                sy.append(w * dy)
        ax.append(hy.sum(sx))
        ay.append(hy.sum(sy))
    return (
        list(zip(xs, vxs))
        + list(zip(ys, vys))
        + list(zip(vxs, ax))
        + list(zip(vys, ay))
    )


def pleiades_problem():
    y0, t1 = PLEIADES_Y0, 3.0
    reference, order, _ = heyoka_reference(pleiades_heyoka, y0, t1, hy.real128)
    ld, _, _ = heyoka_reference(pleiades_heyoka, y0, t1, np.longdouble)
    note = (
        f"heyoka in real128 (tol 1e-33, order {order}); heyoka in long double "
        f"(tol 1e-19) agrees to {mixed_error(ld, reference):.1e}. scipy DOP853 at "
        "rtol = atol = 1e-14 is off by ~3e-12 and heyoka in float64 at tol 1e-16 to "
        "1e-18 by 3e-13 to 1e-12 (roundoff): neither would do at tol 1e-14 (see "
        "`--check-references`)"
    )
    return Problem(
        key="pleiades",
        title="Pleiades, 7 bodies in the plane (HNW), t in [0, 3]",
        vector_field=pleiades,
        heyoka_system=pleiades_heyoka,
        y0=y0,
        t1=t1,
        reference=reference,
        reference_note=note,
    )


PROBLEMS = {
    "kepler": kepler_problem,
    "arenstorf": arenstorf_problem,
    "pleiades": pleiades_problem,
}


# --- Solver configurations --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    name: str
    run: Callable  # (problem, tol) -> result dict (see `result`)


SOLVERS: list[SolverConfig] = []


def solver_config(name):
    """Register `fn(problem, tol) -> result dict` as a solver configuration."""

    def register(fn):
        SOLVERS.append(SolverConfig(name, fn))
        return fn

    return register


def result(
    *,
    order,
    accepted,
    rejected,
    error,
    compile_s,
    run_times_s,
    run_stat,
    stats=None,
    notes="",
):
    """The result dict an entry returns. `rejected` is None where the method has no
    rejections (heyoka); `run_stat` is "best" or "median" of `run_times_s`, the one
    shown in the table; `stats`: the diffrax `sol.stats` (or other counters), as
    Python numbers; `notes`: a free-form line printed under the table."""
    return dict(
        order=order,
        accepted=int(accepted),
        rejected=None if rejected is None else int(rejected),
        error=float(error),
        compile_s=float(compile_s),
        run_ms_best=1e3 * min(run_times_s),
        run_ms_median=1e3 * statistics.median(run_times_s),
        run_stat=run_stat,
        stats=stats or {},
        notes=notes,
    )


def run_diffrax(
    problem, tol, solver, stepsize_controller, *, order, outputs=None, **solve_kwargs
):
    """`diffrax.diffeqsolve` from 0 to t1 under one `jax.jit` (compiled once by
    lower + compile), a warm-up call, then the best of `TIMING.diffrax_repeats`
    calls. Extra keyword arguments go to `diffeqsolve`. `outputs`: optional
    `solution -> PyTree` of extra outputs (for example `taylorode.order_counts`),
    computed inside the jit; returned as Python numbers under the result's
    "outputs" key."""

    @jax.jit
    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field),
            solver,
            t0=0.0,
            t1=problem.t1,
            dt0=None,
            y0=y0,
            stepsize_controller=stepsize_controller,
            max_steps=MAX_STEPS,
            **solve_kwargs,
        )
        return sol.ys[-1], sol.stats, None if outputs is None else outputs(sol)

    y0 = jnp.asarray(problem.y0)
    start = time.perf_counter()
    compiled = solve.lower(y0).compile()
    compile_s = time.perf_counter() - start

    y1, stats, extra = jax.block_until_ready(compiled(y0))  # warm-up
    times = []
    for _ in range(TIMING.diffrax_repeats):
        start = time.perf_counter()
        y1, stats, extra = jax.block_until_ready(compiled(y0))
        times.append(time.perf_counter() - start)

    stats = {k: np.asarray(v).tolist() for k, v in stats.items()}
    return dict(
        outputs=jax.tree_util.tree_map(lambda x: np.asarray(x).tolist(), extra),
        **result(
            order=order,
            accepted=stats["num_accepted_steps"],
            rejected=stats["num_rejected_steps"],
            error=mixed_error(y1, problem.reference),
            compile_s=compile_s,
            run_times_s=times,
            run_stat="best",
            stats=stats,
        ),
    )


@solver_config("heyoka")
def heyoka_entry(problem, tol):
    """heyoka.taylor_adaptive at tol (its default: order from `heyoka_order(tol)`,
    mixed abs/rel tolerance, default (non-compact) mode). Compile = construction with
    heyoka's in-memory LLVM cache cleared and its disk cache off; run = median of
    `TIMING.heyoka_repeats` `propagate_until(t1)` from a reset time and state."""
    hy.llvm_state.set_diskcache_enabled(False)
    hy.llvm_state.clear_memcache()
    start = time.perf_counter()
    ta = hy.taylor_adaptive(problem.heyoka_system(), problem.y0, tol=tol)
    compile_s = time.perf_counter() - start

    times = []
    for _ in range(TIMING.heyoka_repeats):
        ta.time = 0.0
        ta.state[:] = problem.y0
        start = time.perf_counter()
        outcome, min_h, max_h, n_steps, _, _ = ta.propagate_until(problem.t1)
        times.append(time.perf_counter() - start)
        if outcome != hy.taylor_outcome.time_limit:
            raise RuntimeError(f"heyoka stopped early: {outcome}")
    return result(
        order=ta.order,
        accepted=n_steps,
        rejected=None,  # heyoka sizes each step before taking it: no rejections
        error=mixed_error(ta.state, problem.reference),
        compile_s=compile_s,
        run_times_s=times,
        run_stat="median",
        stats=dict(n_steps=n_steps, min_h=min_h, max_h=max_h),
        notes=f"h in [{min_h:.3g}, {max_h:.3g}]",
    )


@solver_config("Dopri8+PID")
def dopri8_pid(problem, tol):
    return run_diffrax(
        problem,
        tol,
        diffrax.Dopri8(),
        diffrax.PIDController(rtol=tol, atol=tol),
        order=8,
    )


@solver_config("Taylor(p)+PID")
def taylor_pid(problem, tol):
    """taylorode.Taylor at heyoka's order for tol, with diffrax's PIDController."""
    p = heyoka_order(tol)
    return run_diffrax(
        problem,
        tol,
        taylorode.Taylor(order=p),
        diffrax.PIDController(rtol=tol, atol=tol),
        order=p,
    )


@solver_config("Taylor(p)+TaylorController")
def taylor_tc(problem, tol):
    """taylorode.Taylor at heyoka's order for tol, with taylorode.TaylorController."""
    p = heyoka_order(tol)
    return run_diffrax(
        problem,
        tol,
        taylorode.Taylor(order=p),
        taylorode.TaylorController(rtol=tol, atol=tol),
        order=p,
    )


# --- Report -----------------------------------------------------------------------


STANDARD_STATS = {"max_steps", "num_accepted_steps", "num_rejected_steps", "num_steps"}


def git_revision():
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "taylorode"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return rev + (" (taylorode/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment_lines(quick):
    """The Date, Machine (with the load average now), Versions and Command lines of a
    results header; shared by the other benchmark scripts that import this module."""
    import scipy

    versions = (
        f"Python {platform.python_version()}, jax {jax.__version__}, "
        f"diffrax {diffrax.__version__}, taylorode {taylorode.__version__} "
        f"(git {git_revision()}), heyoka {hy.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, mpmath {mpmath.__version__}"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return [
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (load average at start: {load}); "
        f"JAX backend {jax.default_backend()}",
        f"- Versions: {versions}",
        f"- Command: `{' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}`"
        + (" (quick: smoke run)" if quick else ""),
    ]


def header(cli, problems, tols, solvers):
    return [
        "# Step-size and order control: taylorode vs heyoka vs Dopri8",
        "",
        *environment_lines(cli.quick),
        f"- Problems: {', '.join(problems)}; tols: "
        f"{', '.join(f'{t:.0e}' for t in tols)}; solvers: "
        f"{', '.join(s.name for s in solvers)}",
        "- Settings: float64; t0 = 0; diffrax: rtol = atol = tol, `dt0=None`, "
        f"`max_steps={MAX_STEPS}`, whole solve under `jax.jit`; heyoka: "
        "`taylor_adaptive(sys, y0, tol=tol)` (order and step size by heyoka's own "
        "rules; its tol is absolute and relative at once). Taylor(p): "
        "p = max(2, ceil(-ln(tol)/2 + 1)), heyoka's order rule.",
        "- **error** = max_i |y_i(t1) - ref_i| / (1 + |ref_i|) (mixed abs/rel, "
        "max norm) for every problem; references in each section.",
        "- **steps**: accepted/rejected (heyoka never rejects a step).",
        "- **compile s**: diffrax: `jax.jit(...).lower(y0).compile()`; heyoka: "
        "construction of `taylor_adaptive` (its LLVM compilation), with heyoka's "
        "in-memory cache cleared and its disk cache off.",
        f"- **run ms**: diffrax: best of {TIMING.diffrax_repeats} calls after a warm-up "
        f"call; heyoka: median of {TIMING.heyoka_repeats} `propagate_until(t1)` from "
        "a reset time and state. Wall time, single process.",
    ]


def fmt_order(order):
    """An order, or a {order: steps} dict (`taylorode.order_counts`): the one order used,
    else `order:steps` pairs."""
    if isinstance(order, dict):
        used = {q: n for q, n in order.items() if n}
        if len(used) == 1:
            return str(next(iter(used)))
        return " ".join(f"{q}:{n}" for q, n in order.items())
    return str(order)


def run_grid(problem, tols, solvers, progress):
    """Every solver at every tol on one problem: `[(name, tol, result)]`. A solver that
    raises gets `{"failed": message}` and the run goes on; `progress(result)` gives the
    text of each progress line (on stderr)."""
    rows = []
    for tol in tols:
        for solver in solvers:
            try:
                r = solver.run(problem, tol)
            except Exception as exc:  # report and go on
                r = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
            rows.append((solver.name, tol, r))
            print(f"  [{problem.key} tol={tol:.0e}] {solver.name}: "
                  + (r["failed"] if "failed" in r else progress(r)),
                  file=sys.stderr, flush=True)
    return rows


def table(problem, rows):
    lines = [
        "",
        f"## {problem.title}",
        "",
        f"Reference: {problem.reference_note}.",
        "",
        "| solver | tol | order | steps (acc/rej) | error | error/tol "
        "| compile s | run ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    stats_keys = {}
    for name, tol, r in rows:
        if "failed" in r:
            lines.append(f"| {name} | {tol:.0e} | | failed | | | | |")
            notes.append(f"- {name}, tol {tol:.0e}: failed: {r['failed']}")
            continue
        rej = 0 if r["rejected"] is None else r["rejected"]
        run_ms = r["run_ms_best"] if r["run_stat"] == "best" else r["run_ms_median"]
        lines.append(
            f"| {name} | {tol:.0e} | {fmt_order(r['order'])} "
            f"| {r['accepted']}/{rej} | {r['error']:.2e} | {r['error'] / tol:.3g} "
            f"| {r['compile_s']:.2f} | {run_ms:.3f} |"
        )
        if name != "heyoka":
            stats_keys.setdefault(name, sorted(r["stats"]))
            extra = {k: v for k, v in r["stats"].items() if k not in STANDARD_STATS}
            if extra:
                notes.append(f"- {name}, tol {tol:.0e}: stats {extra}")
        if r["notes"]:
            notes.append(f"- {name}, tol {tol:.0e}: {r['notes']}")
    notes += [
        f"- `sol.stats` keys, {name}: {', '.join(keys)}"
        for name, keys in stats_keys.items()
    ]
    if notes:
        lines += ["", *notes]
    return lines


def check_references(problem):
    """Print the candidate references against the one used."""
    print(f"\n{problem.key}: candidates vs the reference used")
    print(f"  y0 (as if periodic)       {mixed_error(problem.y0, problem.reference):.2e}")
    for fp in (np.longdouble, hy.real128):
        y, order, tol = heyoka_reference(problem.heyoka_system, problem.y0, problem.t1, fp)
        print(f"  heyoka {fp.__name__:10s} tol {tol:.0e} (order {order}) "
              f"{mixed_error(y, problem.reference):.2e}")
    for tol in (1e-16, 1e-18):
        ta = hy.taylor_adaptive(problem.heyoka_system(), problem.y0, tol=tol,
                                compact_mode=True)
        ta.propagate_until(problem.t1)
        print(f"  heyoka float64 tol {tol:.0e} (order {ta.order}) "
              f"{mixed_error(ta.state, problem.reference):.2e}")
    print(f"  scipy DOP853 1e-14        "
          f"{mixed_error(dop853_check(problem), problem.reference):.2e}")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: tols {QUICK_TOLS}, problems {QUICK_PROBLEMS}, fewer repeats "
        "(--tols/--problems still override)",
    )
    parser.add_argument("--tols", type=float, nargs="+", help=f"default {ALL_TOLS}")
    parser.add_argument(
        "--problems", nargs="+", choices=list(PROBLEMS), help="default: all"
    )
    parser.add_argument(
        "--solvers",
        nargs="+",
        choices=[s.name for s in SOLVERS],
        metavar="NAME",
        help=f"default: all of {[s.name for s in SOLVERS]}",
    )
    parser.add_argument(
        "--check-references",
        action="store_true",
        help="compare candidate references (periodicity, heyoka long double / real128 "
        "/ float64, scipy DOP853) with the one used, then exit",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results_control.md",
        help="Markdown file for the results (default: %(default)s)",
    )
    cli = parser.parse_args()

    tols = cli.tols or (QUICK_TOLS if cli.quick else ALL_TOLS)
    problem_keys = cli.problems or (QUICK_PROBLEMS if cli.quick else list(PROBLEMS))
    solvers = [s for s in SOLVERS if cli.solvers is None or s.name in cli.solvers]
    if cli.quick:
        TIMING.diffrax_repeats, TIMING.heyoka_repeats = 2, 3

    if cli.check_references:
        for key in problem_keys:
            check_references(PROBLEMS[key]())
        return

    lines = header(cli, problem_keys, tols, solvers)
    print("\n".join(lines), flush=True)
    for key in problem_keys:
        problem = PROBLEMS[key]()
        rows = run_grid(
            problem, tols, solvers,
            lambda r: f"steps {r['accepted']}/{r['rejected'] or 0}, "
            f"error {r['error']:.2e}, compile {r['compile_s']:.2f} s",
        )
        problem_lines = table(problem, rows)
        print("\n".join(problem_lines), flush=True)
        lines += problem_lines

    cli.out.write_text("\n".join(lines) + "\n")
    print(f"\nWritten to {cli.out}")


if __name__ == "__main__":
    main()
