"""The harness that every benchmark script in this folder runs on (a module, not a script).

Importing it enables float64 in JAX and, where the command line holds `--xla-flags=...`,
sets `XLA_FLAGS` before JAX is imported (XLA reads it when JAX creates its backend). It
provides:

- **environment**: `environment_lines`, the Date (UTC), Machine (CPU count, load average
  at the start), Versions (Python, jax, diffrax, taylorode with its git revision, heyoka,
  numpy, scipy, mpmath), Command and XLA_FLAGS lines that open every results file;
- **timing**: `compile_timed` (`jax.jit(fn).lower(...).compile()`), `time_calls` (the
  wall times of repeated calls, after a warm-up call), `heyoka_build` (the construction
  of a heyoka integrator, which is its LLVM compilation);
- **runs**: `Settings` (repetitions, `max_steps`), a solver `Registry`, `result` dicts,
  `run_diffrax` and `run_heyoka` (one solve of a problem at a tolerance; `diffrax_entry`
  makes a registry entry of a diffrax solver and controller), `run_grid` (problems x
  tolerances x solvers, a failing solve reported and skipped), `group_runs`;
- **Markdown**: `emit` (print and collect lines), `md_row`, `md_table`, `fmt_order`;
- **command line**: `parser` with the options every script takes (`--quick`, `--out`,
  `--xla-flags`), `Grid` (`--tols`, `--problems`, `--solvers` and their quick
  defaults), `add_plot_options`; `parse_args` sends `--quick` results to a scratch
  folder (`QUICK_DIR`), never to `benchmarks/results_*.md`; `write_results`.

The problems live in `_problems.py`. A benchmark script imports both and never another
benchmark script; its configuration travels as arguments (`Settings`), not as globals.
"""

import argparse
import dataclasses
import datetime
import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _xla_flags_from_argv(argv):
    """The value of `--xla-flags=...` (given with `=`, as its value starts with `--`)."""
    for arg in argv:
        if arg.startswith("--xla-flags="):
            return arg.split("=", 1)[1]
    return None


if _xla_flags_from_argv(sys.argv) is not None:
    os.environ["XLA_FLAGS"] = _xla_flags_from_argv(sys.argv)

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


jax.config.update("jax_enable_x64", True)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
QUICK_DIR = Path(tempfile.gettempdir()) / "taylorode-bench-quick"


# --- Environment header -------------------------------------------------------------


def git_revision():
    """The short hash of HEAD, marked where taylorode/ has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "taylorode"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return rev + (" (taylorode/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions():
    """Python and the packages the benchmarks use, taylorode with its git revision."""
    parts = [f"Python {platform.python_version()}"]
    for package in ("jax", "diffrax", "taylorode", "heyoka", "numpy", "scipy", "mpmath"):
        parts.append(f"{package} {_version(package)}")
        if package == "taylorode":
            parts[-1] += f" (git {git_revision()})"
    return ", ".join(parts)


def environment_lines(quick=False):
    """The Date, Machine (with the load average now), Versions, Command and XLA_FLAGS
    lines with which every results file begins."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    flags = os.environ.get("XLA_FLAGS")
    return [
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (load average at start: {load}); "
        f"JAX backend {jax.default_backend()}",
        f"- Versions: {versions()}",
        f"- Command: `{' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}`"
        + (" (quick: smoke run)" if quick else ""),
        f"- XLA_FLAGS: `{flags}`" if flags else "- XLA_FLAGS: none",
    ]


def problem_heading(problem):
    """The lines that open a problem's section of a results file: its title and how its
    reference was got."""
    return ["", f"## {problem.title}", "", f"Reference: {problem.reference_note}.", ""]


def grid_line(problems, tols, solvers):
    """The "- Problems: ...; tols: ...; solvers: ..." line of a results header."""
    return (
        f"- Problems: {', '.join(problems)}; tols: "
        f"{', '.join(f'{t:.0e}' for t in tols)}; solvers: "
        f"{', '.join(s.name for s in solvers)}"
    )


# --- Errors -------------------------------------------------------------------------


def mixed_error(y, ref):
    """max_i |y_i - ref_i| / (1 + |ref_i|): the error measure of the benchmarks."""
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(y - ref) / (1 + np.abs(ref))))


def short_error(exc):
    """The line of an exception's message that says what went wrong: for an error
    raised inside a jitted solve (`eqx.error_if`, such as "The maximum number of
    solver steps was reached"), equinox's message, not the callback traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "EquinoxRuntimeError: " in line:
            return line.split("EquinoxRuntimeError: ", 1)[1]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


# --- Timing -------------------------------------------------------------------------


def compile_timed(fn, *args):
    """`jax.jit(fn).lower(*args).compile()`: (the compiled function, seconds)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def time_calls(fn, *args, repeats, warmup=True, block=True):
    """Wall times (s) of `repeats` calls `fn(*args)`, each waited for with
    `jax.block_until_ready` (unless `block=False`), after one untimed warm-up call
    (unless `warmup=False`): (times, the last call's output)."""
    wait = jax.block_until_ready if block else (lambda x: x)
    out = wait(fn(*args)) if warmup else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = wait(fn(*args))
        times.append(time.perf_counter() - start)
    return times, out


def heyoka_build(cls, system, *args, clear_cache=True, **kwargs):
    """Construct a heyoka integrator `cls(system(), *args, **kwargs)` (the system's
    expressions built, then LLVM-compiled), with heyoka's in-memory cache cleared and
    its disk cache off unless `clear_cache=False`: (integrator, seconds)."""
    import heyoka as hy

    if clear_cache:
        hy.llvm_state.set_diskcache_enabled(False)
        hy.llvm_state.clear_memcache()
    start = time.perf_counter()
    ta = cls(system(), *args, **kwargs)
    return ta, time.perf_counter() - start


# --- Runs ---------------------------------------------------------------------------


def heyoka_order(tol):
    """heyoka's order rule (Jorba-Zou): p = max(2, ceil(-ln(tol)/2 + 1))."""
    return max(2, math.ceil(-0.5 * math.log(tol) + 1))


@dataclasses.dataclass(frozen=True)
class Settings:
    """How each solve of a grid is run; every solver entry gets it as an argument."""

    max_steps: int
    diffrax_repeats: int = 5  # timed calls (after one warm-up call); best is reported
    heyoka_repeats: int = 7  # timed propagations from a reset state; median reported
    scipy_repeats: int = 5  # timed solves (nothing to warm up); median reported
    warmup: bool = True  # diffrax: one untimed call before the timed ones

    @classmethod
    def for_run(cls, max_steps, quick, **kwargs):
        """The defaults, or with `quick` 2 diffrax, 3 heyoka and 2 scipy repeats."""
        if quick:
            kwargs = dict(diffrax_repeats=2, heyoka_repeats=3, scipy_repeats=2) | kwargs
        return cls(max_steps=max_steps, **kwargs)


@dataclasses.dataclass(frozen=True)
class Solver:
    name: str
    run: Callable  # (problem, tol, settings) -> result dict (see `result`)


class Registry(list):
    """A script's solver configurations, in order: `@SOLVERS.add("name")` registers
    `fn(problem, tol, settings) -> result dict`."""

    def add(self, name):
        def register(fn):
            self.append(Solver(name, fn))
            return fn

        return register

    def names(self):
        return [s.name for s in self]

    def select(self, names=None):
        return [s for s in self if names is None or s.name in names]


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
    """The result dict a solver entry returns. `rejected` is None where the method has
    no rejections (heyoka); `run_stat` is "best" or "median" of `run_times_s`, the one
    shown in the tables (`run_ms`); `stats`: the diffrax `sol.stats` (or other
    counters), as Python numbers; `notes`: a free-form line printed under the table."""
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


def run_ms(r):
    """The run time (ms) a table shows for result `r`: its best or its median."""
    return r["run_ms_best"] if r["run_stat"] == "best" else r["run_ms_median"]


def run_diffrax(
    problem, solver, stepsize_controller, *, settings, order, dt0=None, outputs=None,
    **solve_kwargs,
):
    """`diffrax.diffeqsolve` of `problem` from 0 to t1 under one `jax.jit` (compiled once
    by lower + compile), a warm-up call (unless `settings.warmup` is off), then
    `settings.diffrax_repeats` timed calls.
    Extra keyword arguments go to `diffeqsolve`. `outputs`: optional
    `solution -> PyTree` of extra outputs (for example `taylorode.order_counts`),
    computed inside the jit and returned as Python numbers under "outputs"; the final
    state is under "y1". A failing solve raises a one-line `RuntimeError`."""

    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(problem.vector_field),
            solver,
            t0=0.0,
            t1=problem.t1,
            dt0=dt0,
            y0=y0,
            stepsize_controller=stepsize_controller,
            max_steps=settings.max_steps,
            **solve_kwargs,
        )
        return sol.ys[-1], sol.stats, None if outputs is None else outputs(sol)

    try:
        y0 = jnp.asarray(problem.y0)
        compiled, compile_s = compile_timed(solve, y0)
        times, (y1, stats, extra) = time_calls(
            compiled, y0, repeats=settings.diffrax_repeats, warmup=settings.warmup
        )
    except Exception as exc:
        raise RuntimeError(short_error(exc)) from None

    stats = {k: np.asarray(v).tolist() for k, v in stats.items()}
    return dict(
        outputs=jax.tree_util.tree_map(lambda x: np.asarray(x).tolist(), extra),
        y1=np.asarray(y1),
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


def pid(tol):
    """diffrax's `PIDController(rtol=tol, atol=tol)`."""
    return diffrax.PIDController(rtol=tol, atol=tol)


def diffrax_entry(solver, controller, order, **solve_kwargs):
    """A registry entry that solves with `solver(tol)` and `controller(tol)` through
    `run_diffrax`; `order`: the order to report, or `tol -> order`."""

    def run(problem, tol, settings):
        return run_diffrax(
            problem, solver(tol), controller(tol), settings=settings,
            order=order(tol) if callable(order) else order, **solve_kwargs,
        )

    return run


def run_heyoka(problem, tol, settings):
    """heyoka.taylor_adaptive at tol (its default: order from tol, mixed abs/rel
    tolerance, default (non-compact) mode). Compile = construction with heyoka's
    in-memory LLVM cache cleared and its disk cache off; run = median of
    `settings.heyoka_repeats` `propagate_until(t1)` from a reset time and state."""
    import heyoka as hy

    ta, compile_s = heyoka_build(
        hy.taylor_adaptive, problem.heyoka_system, problem.y0, tol=tol
    )
    times = []
    for _ in range(settings.heyoka_repeats):
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


def run_grid(problem, tols, solvers, settings, progress):
    """Every solver at every tol on one problem: `[(name, tol, result)]`. A solver that
    raises gets `{"failed": message}` and the run goes on; `progress(result)` gives the
    text of each progress line (on stderr)."""
    rows = []
    for tol in tols:
        for solver in solvers:
            try:
                r = solver.run(problem, tol, settings)
            except Exception as exc:  # report and go on
                r = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
            rows.append((solver.name, tol, r))
            print(f"  [{problem.key} tol={tol:.0e}] {solver.name}: "
                  + (r["failed"] if "failed" in r else progress(r)),
                  file=sys.stderr, flush=True)
    return rows


def group_runs(rows):
    """`run_grid`'s rows as {solver: [(tol, result)]}, failed runs left out."""
    by = {}
    for name, tol, r in rows:
        if "failed" not in r:
            by.setdefault(name, []).append((tol, r))
    return by


# --- Markdown -----------------------------------------------------------------------


def emit(lines, new):
    """Print the lines `new` (as they are measured) and append them to `lines`, the
    results file being built."""
    print("\n".join(new), flush=True)
    lines += new


def md_row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_table(header, align, rows=()):
    """The lines of a Markdown table: the `header` cells, then the alignment row
    (`align`: one letter per column, "l" left or "r" right), then `rows`."""
    return [
        md_row(header),
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
        *(md_row(row) for row in rows),
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


# --- Command line and results files -------------------------------------------------


def parser(doc, results_name, *, quick_help):
    """An argument parser with the options every benchmark script takes: `--quick`
    (a smoke run: `quick_help` says what it shrinks), `--out` (default
    `benchmarks/<results_name>`, or `QUICK_DIR/<results_name>` with `--quick`) and
    `--xla-flags`."""
    p = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {quick_help}; the results go to {QUICK_DIR / results_name} "
        "(never to benchmarks/results_*.md)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help=f"Markdown file for the results (default: benchmarks/{results_name})",
    )
    p.add_argument(
        "--xla-flags",
        metavar="FLAGS",
        help="XLA_FLAGS for this run, given as --xla-flags=... (set before JAX starts)",
    )
    p.set_defaults(results_name=results_name)
    return p


def parse_args(p, argv=None):
    """Parse the command line; fills in `--out` (see `parser`) and refuses a `--quick`
    run that would overwrite a results file in benchmarks/."""
    cli = p.parse_args(argv)
    if cli.out is None:
        cli.out = (QUICK_DIR if cli.quick else BENCH_DIR) / cli.results_name
    elif (
        cli.quick
        and cli.out.resolve().parent == BENCH_DIR
        and cli.out.name.startswith("results_")
    ):
        p.error("--quick does not write to benchmarks/results_*.md; give another --out")
    return cli


@dataclasses.dataclass(frozen=True)
class Grid:
    """The problems x tolerances of a grid script, full and with `--quick`; adds and
    reads `--tols`, `--problems` and `--solvers`."""

    problems: dict  # key -> () -> problem
    tols: tuple
    quick_problems: tuple
    quick_tols: tuple
    # The problems run when none are named (None: all); the others only on request.
    default_problems: tuple | None = None

    @property
    def quick_help(self):
        return (f"tols {self.quick_tols}, problems {self.quick_problems}, fewer repeats "
                "(--tols/--problems still override)")

    def add_options(self, p, solvers):
        """`--tols`, `--problems` and `--solvers` (choices: `solvers`)."""
        p.add_argument("--tols", type=float, nargs="+", help=f"default {self.tols}")
        p.add_argument("--problems", nargs="+", choices=list(self.problems),
                       help="default: all")
        p.add_argument(
            "--solvers",
            nargs="+",
            choices=list(solvers),
            metavar="NAME",
            help=f"default: all of {list(solvers)}",
        )

    def select(self, cli):
        """(tols, loosest first; problem keys) from the command line, else the
        defaults, or the quick defaults with `--quick`."""
        tols = cli.tols or (self.quick_tols if cli.quick else self.tols)
        default = self.problems if self.default_problems is None else self.default_problems
        keys = cli.problems or list(self.quick_problems if cli.quick else default)
        return sorted(tols, reverse=True), keys


def add_plot_options(p, pattern):
    """`--img-dir` and `--no-plots`, for plots named like `pattern` (see `plot_dir`)."""
    p.add_argument(
        "--img-dir",
        type=Path,
        help=f"where the plots go, as {pattern} (default: docs/img; with --quick, no "
        "plots unless --img-dir is given, so that a smoke run leaves the documented "
        "plots alone)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the plots")


def plot_dir(cli):
    """The folder for the plots, or None for none (`add_plot_options`)."""
    if cli.img_dir is not None:
        return None if cli.no_plots else cli.img_dir
    return None if cli.no_plots or cli.quick else ROOT / "docs" / "img"


def save_figure(fig, path):
    """Save a matplotlib figure, close it; the path as a results file shows it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_results(cli, lines):
    """Write the results file `cli.out` (its folder made if needed)."""
    cli.out.parent.mkdir(parents=True, exist_ok=True)
    cli.out.write_text("\n".join(lines) + "\n")
    print(f"\nWritten to {cli.out}")
