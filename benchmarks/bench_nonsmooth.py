"""Benchmark: Taylor() on vector fields that switch, and what switch detection costs.

Two parts (`--parts`):

1. **Work-precision on fields with switches** (`workprecision`). Three fields of the test
   module `tests/nonsmooth_fields.py` (imported by path; fields, initial values, horizons
   and references are its own):

   - `coulomb_friction`: x'' = -x - 0.1 sign(x') (`jnp.sign`, jumps at v = 0);
   - `spring_saturation`: x'' = -clip(4 x, -0.5, 0.5) (`jnp.clip`, kinks at x = +-0.125);
   - `table_forcing`: x'' = -x + interp(t) in a 6-node table (`jnp.interp`, kinks in t),

   with references integrated branch by branch by scipy (DOP853, rtol 1e-13, atol 1e-15;
   Radau at the same tolerances as a check). Solvers: `taylorode.Taylor()` with
   `taylorode.TaylorController` and with `diffrax.PIDController`, `diffrax.Dopri8()` and
   `diffrax.Tsit5()` with `PIDController`, and the implicit solvers with `PIDController`
   (`taylorode.HermiteObreschkoff(2, 3)`, `taylorode.ExtrapolatedHermiteObreschkoff(1, 2)`
   and diffrax's `Kvaerno5()`), at tol 1e-6 ... 1e-12 (rtol = atol = tol).
   Per run: orders used, accepted/rejected steps, the error at t1, compile and run time
   (`_harness.run_diffrax`, as in `bench_workprecision.py`); then a summary per problem:
   the errors per tol and the run time at equal achieved error.

2. **Overhead of switch detection on smooth fields** (`overhead`). The smooth problems of
   `bench_workprecision.py` (`_problems.NONSTIFF`: Kepler e = 0.9, Lorenz, Arenstorf,
   Pleiades) and Kepler with a guard that never switches (`jnp.where(r2 > 0, r2, 1.0)`
   on |q|^2), solved with `Taylor()` + `TaylorController` at tol 1e-8 and 1e-12 by the
   package as it is (this checkout) and by the package at a baseline git revision
   (`--baseline`, default 633dd5f, the last commit before steps ended at switches),
   checked out with `git worktree add --detach` under the temporary folder
   (`taylorode-baseline-<REV>`, reused if present). Each package is measured in its own
   process (this script with `--worker`, `PYTHONPATH` set to the checkout, which the
   worker checks against `taylorode.__file__`), the two interleaved (current, baseline,
   current, baseline, ... for `--rounds` rounds) to spread drift over both. Per run:
   compile time, run time (best of `--repeats` calls after a warm-up), steps, whether the
   final states and the optimised HLO programs (metadata stripped) are identical. Then
   the guarded Kepler field against the plain one, both by the current package: the cost
   of detection where switching operations exist but never switch.

    python benchmarks/bench_nonsmooth.py                # full run (~5 min)
    python benchmarks/bench_nonsmooth.py --quick        # smoke run
    python benchmarks/bench_nonsmooth.py --parts overhead --baseline af9b4f1 --rounds 2
"""

import argparse
import hashlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import _harness as h  # first: it enables float64 and sets XLA_FLAGS before JAX starts
import _problems as P
import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


# --- Part 1: work-precision on fields with switches ---------------------------------


def _nonsmooth_fields():
    """The test module `tests/nonsmooth_fields.py`, imported by path (float64 is on)."""
    name = "nonsmooth_fields"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, h.ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


TITLES = {
    "coulomb_friction": "Coulomb friction, x'' = -x - 0.1 sign(x')",
    "spring_saturation": "Saturation spring, x'' = -clip(4 x, -0.5, 0.5)",
    "table_forcing": "Tabulated forcing, x'' = -x + interp(t, 6-node table)",
}


def nonsmooth_problem(name):
    """The test module's problem `name` as a `_problems.Problem` (reference on first use:
    the module's piecewise DOP853 reference, checked against its Radau one)."""
    fields = _nonsmooth_fields()
    p = fields.PROBLEMS_BY_NAME[name]
    assert p.t0 == 0.0, "the harness solves from t0 = 0"

    def make_reference():
        reference = fields.reference(p)
        check = fields.reference_check(p)
        switches = len(fields.reference_pieces(p)) - 1
        note = (
            f"`tests/nonsmooth_fields.py`: scipy DOP853 (rtol {fields.REFERENCE_RTOL:.0e}, "
            f"atol {fields.REFERENCE_ATOL:.0e}) branch by branch, {switches} switches in "
            f"[0, {p.t1:g}] located by events or known times; Radau at the same "
            f"tolerances agrees to {h.mixed_error(check, reference):.1e}, so errors "
            "below ~1e-12 are at the reference's accuracy"
        )
        return reference, note

    return P.Problem(
        key=name,
        title=f"{TITLES[name]}: `{name}` ({p.note}), y0 = ({', '.join(f'{v:g}' for v in p.y0)}), "
        f"t in [0, {p.t1:g}]",
        vector_field=p.f,
        heyoka_system=None,
        y0=np.asarray(p.y0, dtype=np.float64),
        t1=float(p.t1),
        make_reference=make_reference,
    )


NONSMOOTH = {name: (lambda name=name: nonsmooth_problem(name)) for name in TITLES}
GRID = h.Grid(
    problems=NONSMOOTH,
    tols=(1e-6, 1e-8, 1e-10, 1e-12),
    quick_problems=tuple(TITLES),
    quick_tols=(1e-8,),
)
MAX_STEPS = 200_000
REPEATS = 10  # timed calls per solve (best reported), after a warm-up call
TARGET_ERROR = 1e-10  # the achieved error at which the summary compares run times


SOLVERS = h.Registry()


def run_taylor(problem, tol, controller, settings):
    """A `taylorode.Taylor()` solve, recording the orders used."""
    r = h.run_diffrax(
        problem,
        taylorode.Taylor(),
        controller,
        settings=settings,
        order=None,
        saveat=diffrax.SaveAt(t1=True, solver_state=True),
        outputs=taylorode.order_counts,
    )
    r["order"] = {int(q): int(n) for q, n in r["outputs"].items()}
    return r


@SOLVERS.add("Taylor()+TC")
def taylor_tc(problem, tol, settings):
    return run_taylor(problem, tol, taylorode.TaylorController(rtol=tol, atol=tol), settings)


@SOLVERS.add("Taylor()+PID")
def taylor_pid(problem, tol, settings):
    return run_taylor(problem, tol, h.pid(tol), settings)


SOLVERS.add("Dopri8+PID")(h.diffrax_entry(lambda tol: diffrax.Dopri8(), h.pid, 8))
SOLVERS.add("Tsit5+PID")(h.diffrax_entry(lambda tol: diffrax.Tsit5(), h.pid, 5))
SOLVERS.add("HO(2,3)+PID")(h.diffrax_entry(lambda tol: taylorode.HermiteObreschkoff(2, 3), h.pid, 5))
SOLVERS.add("XHO(1,2)+PID")(
    h.diffrax_entry(lambda tol: taylorode.ExtrapolatedHermiteObreschkoff(1, 2), h.pid, 4)
)
SOLVERS.add("Kvaerno5+PID")(h.diffrax_entry(lambda tol: diffrax.Kvaerno5(), h.pid, 5))


def workprecision_table(problem, rows):
    rows_md, notes = [], []
    for name, tol, r in rows:
        if "failed" in r:
            rows_md.append([name, f"{tol:.0e}", "", "failed", "", "", "", ""])
            notes.append(f"- {name}, tol {tol:.0e}: failed: {r['failed']}")
            continue
        rows_md.append([
            name, f"{tol:.0e}", h.fmt_order(r["order"]),
            f"{r['accepted']}/{r['rejected'] or 0}", f"{r['error']:.2e}",
            f"{r['error'] / tol:.3g}", f"{r['compile_s']:.2f}", f"{h.run_ms(r):.3f}",
        ])
    lines = [
        *h.problem_heading(problem),
        *h.md_table(
            ["solver", "tol", "order", "steps (acc/rej)", "error", "error/tol",
             "compile s", "run ms"],
            "lrrrrrrr",
            rows_md,
        ),
    ]
    return lines + (["", *notes] if notes else [])


def time_at_error(runs, target=TARGET_ERROR):
    """Run time (ms) at achieved error `target` from one solver's runs [(tol, r)], and how
    it was got: log-log interpolation of run time against error between the first two
    consecutive tols (loosest first) whose errors bracket the target; else the fastest
    run whose error is at most the target (an upper bound, marked "<="); else None."""
    runs = sorted(runs, key=lambda x: -x[0])
    for (ta, ra), (tb, rb) in zip(runs, runs[1:]):
        ea, eb = ra["error"], rb["error"]
        if ea > target >= eb and eb > 0:
            w = (math.log(target) - math.log(ea)) / (math.log(eb) - math.log(ea))
            ms = math.exp((1 - w) * math.log(h.run_ms(ra)) + w * math.log(h.run_ms(rb)))
            return ms, "interpolated"
    ok = [h.run_ms(r) for _, r in runs if r["error"] <= target]
    if ok:
        return min(ok), "<="
    return None, "not reached"


def workprecision_summary(results, tols):
    """One row per problem and solver: the error at each tol, the run time at achieved
    error TARGET_ERROR and its ratio to Taylor()+TC's."""
    rows = []
    for key, rows_ in results.items():
        by = h.group_runs(rows_)
        at = {name: time_at_error(runs) for name, runs in by.items()}
        base = at.get("Taylor()+TC", (None, ""))[0]
        for name in SOLVERS.names():
            if not any(n == name for n, _, _ in rows_):
                continue
            errors = {t: r for t, r in by.get(name, [])}
            ms, how = at.get(name, (None, "not reached"))
            if ms is None:
                time_cell, ratio = how, ""
            else:
                time_cell = f"{'<= ' if how == '<=' else ''}{ms:.3g}"
                ratio = f"{ms / base:.2f}" if base else ""
            rows.append([
                key, name,
                *(f"{errors[t]['error']:.1e}" if t in errors else "failed" for t in tols),
                time_cell, ratio,
            ])
    return [
        "",
        "## Work-precision summary",
        "",
        f"Error at t1 per tol, and run time at achieved error {TARGET_ERROR:.0e}: "
        "interpolated log-log between the two tols whose errors bracket it, else the "
        f"fastest run with error <= {TARGET_ERROR:.0e} (\"<=\", an upper bound), else "
        "not reached. Ratio: that run time over Taylor()+TC's on the same problem.",
        "",
        *h.md_table(
            ["problem", "solver", *(f"error at {t:.0e}" for t in tols),
             f"run ms at error {TARGET_ERROR:.0e}", "/ Taylor()+TC"],
            "ll" + "r" * (len(tols) + 2),
            rows,
        ),
    ]


def run_workprecision(cli, lines):
    tols, keys = GRID.select(cli)
    solvers = SOLVERS.select(cli.solvers)
    settings = h.Settings.for_run(MAX_STEPS, cli.quick, diffrax_repeats=cli.repeats)
    h.emit(lines, [
        "",
        "# Part 1: work-precision on fields with switches",
        "",
        h.grid_line(keys, tols, solvers),
        "- Settings: float64; t0 = 0; rtol = atol = tol, `dt0=None`, "
        f"`max_steps={settings.max_steps}`, whole solve under `jax.jit`. `Taylor()+TC`: "
        "`taylorode.Taylor()` + `taylorode.TaylorController(rtol=tol, atol=tol)`; "
        "`Taylor()+PID`: `taylorode.Taylor()` + `diffrax.PIDController(rtol=tol, "
        "atol=tol)`; in both the order comes from the controller's tolerance, "
        "p = max(2, ceil(-ln(tol)/2 + 1)). `Dopri8+PID`, `Tsit5+PID`: diffrax with "
        "`PIDController(rtol=tol, atol=tol)`. `HO(2,3)+PID`, `XHO(1,2)+PID`, `Kvaerno5+PID`: "
        "the implicit solvers (orders 5, 4, 5) with the same controller.",
        "- **order**: for taylorode, `taylorode.order_counts(sol)` (order:steps).",
        "- **steps (acc/rej)**: as diffrax counts them (a Taylor step cut into pieces at "
        "switches counts once).",
        "- **error** = max_i |y_i(t1) - ref_i| / (1 + |ref_i|) (mixed abs/rel, max norm).",
        "- **compile s**: `jax.jit(solve).lower(y0).compile()`.",
        f"- **run ms**: best of {settings.diffrax_repeats} calls after a warm-up call. "
        "Wall time, single process.",
    ])
    results = {}
    for key in keys:
        problem = NONSMOOTH[key]()
        problem.reference  # noqa: B018  (compute the reference before any solve)
        rows = h.run_grid(
            problem, tols, solvers, settings,
            lambda r: f"steps {r['accepted']}/{r['rejected'] or 0}, "
            f"error {r['error']:.2e}, compile {r['compile_s']:.2f} s, "
            f"run {h.run_ms(r):.3f} ms",
        )
        results[key] = rows
        h.emit(lines, workprecision_table(problem, rows))
    h.emit(lines, workprecision_summary(results, tols))


# --- Part 2: overhead of switch detection on smooth fields ---------------------------


def kepler_guarded(t, y, args):
    """Kepler with a guard on |q|^2 that never switches on an orbit (r2 > 0)."""
    q, p = y[:2], y[2:]
    r2 = jnp.sum(q**2)
    r2 = jnp.where(r2 > 0, r2, 1.0)
    return jnp.concatenate([p, -q / r2**1.5])


def kepler_guarded_problem():
    kepler = P.kepler_problem()
    return P.Problem(
        key="kepler_guarded",
        title="Kepler with `jnp.where(r2 > 0, r2, 1.0)` on r2 = |q|^2",
        vector_field=kepler_guarded,
        heyoka_system=None,
        y0=kepler.y0,
        t1=kepler.t1,
        make_reference=lambda: (None, "none (not needed)"),
    )


SMOOTH = dict(P.NONSTIFF)
SMOOTH["kepler_guarded"] = kepler_guarded_problem
# The order in each worker: the guarded field right after the plain one.
SMOOTH_ORDER = ("kepler", "kepler_guarded", "lorenz", "arenstorf", "pleiades")
OVERHEAD_TOLS = (1e-8, 1e-12)
QUICK_OVERHEAD = dict(problems=("kepler", "kepler_guarded"), tols=(1e-8,), rounds=2, repeats=3)
FULL_OVERHEAD = dict(problems=SMOOTH_ORDER, tols=OVERHEAD_TOLS, rounds=3, repeats=20)
DEFAULT_BASELINE = "633dd5f"


def hlo_fingerprint(compiled):
    """(hash, instructions) of a compiled program's optimised HLO with its metadata (op
    names, source files and lines, stack frames) stripped, so that the same program built
    from two checkouts in different folders has the same hash."""
    text = compiled.as_text()
    kept, skip = [], False
    for line in text.splitlines():
        if re.match(r"^(FileNames|FunctionNames|FileLocations|StackFrames)\b", line):
            skip = True
            continue
        if skip:
            if not line.strip():
                skip = False
            continue
        kept.append(re.sub(r", metadata=\{[^}]*\}", "", line))
    instructions = sum(1 for line in kept if re.match(r"^\s+(ROOT )?%\S+ = ", line))
    return hashlib.sha1("\n".join(kept).encode()).hexdigest()[:12], instructions


def worker(spec):
    """One process's measurement (`--worker`): every (problem, tol) of `spec` with the
    `taylorode` found on `PYTHONPATH`, which must lie under `spec["root"]`; one JSON
    line per run on stdout."""
    where = Path(taylorode.__file__).resolve()
    root = Path(spec["root"]).resolve()
    if root not in where.parents:
        raise SystemExit(f"taylorode imported from {where}, not from under {root}")
    print(f"worker: taylorode from {where}", file=sys.stderr, flush=True)

    # One small solve first, so that no measured compile pays JAX's first-use costs.
    warm = jax.jit(lambda y0: diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: -y), taylorode.Taylor(), 0.0, 1.0, None, y0,
        stepsize_controller=taylorode.TaylorController(rtol=1e-8, atol=1e-8),
    ).ys)
    jax.block_until_ready(warm(jnp.ones(2)))

    for key in spec["problems"]:
        problem = SMOOTH[key]()
        for tol in spec["tols"]:

            def solve(y0, problem=problem, tol=tol):
                sol = diffrax.diffeqsolve(
                    diffrax.ODETerm(problem.vector_field), taylorode.Taylor(), 0.0,
                    problem.t1, None, y0,
                    stepsize_controller=taylorode.TaylorController(rtol=tol, atol=tol),
                    max_steps=MAX_STEPS,
                )
                return sol.ys[-1], sol.stats

            out = dict(problem=key, tol=tol)
            try:
                jax.clear_caches()
                y0 = jnp.asarray(problem.y0)
                compiled, compile_s = h.compile_timed(solve, y0)
                times, (y1, stats) = h.time_calls(compiled, y0, repeats=spec["repeats"])
                digest, instructions = hlo_fingerprint(compiled)
                out.update(
                    compile_s=compile_s, run_ms=1e3 * min(times),
                    accepted=int(stats["num_accepted_steps"]),
                    rejected=int(stats["num_rejected_steps"]),
                    y1=np.asarray(y1).tolist(), hlo=digest, instructions=instructions,
                )
            except Exception as exc:  # report and go on
                out["failed"] = h.short_error(exc)
            print("RESULT " + json.dumps(out), flush=True)


def baseline_checkout(rev):
    """A detached git worktree of `rev` under the temporary folder (made, or reused if
    it is there at the same commit): (path, full commit hash)."""
    git = lambda *args, cwd=h.ROOT: subprocess.run(  # noqa: E731
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    name = re.sub(r"[^\w.-]", "-", rev)
    path = Path(tempfile.gettempdir()) / f"taylorode-baseline-{name}"
    if path.exists():
        have = git("rev-parse", "HEAD", cwd=path)
        if have != commit:
            raise SystemExit(f"{path} is at {have[:10]}, not at {rev} ({commit[:10]}); "
                             "remove it (git worktree remove) or give another --baseline")
    else:
        print(f"git worktree add --detach {path} {rev}", file=sys.stderr, flush=True)
        git("worktree", "add", "--detach", str(path), commit)
    return path, commit


def run_worker(label, root, spec):
    """The worker in a child process with PYTHONPATH = root: {(problem, tol): result}."""
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, __file__, "--worker", json.dumps(dict(spec, root=str(root)))]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{label} worker failed (exit {proc.returncode}):\n{proc.stderr}")
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            out[(r["problem"], r["tol"])] = r
    for (key, tol), r in out.items():
        print(f"  [{label}] {key} tol={tol:.0e}: "
              + (r["failed"] if "failed" in r else
                 f"steps {r['accepted']}/{r['rejected']}, compile {r['compile_s']:.2f} s, "
                 f"run {r['run_ms']:.3f} ms, HLO {r['hlo']} ({r['instructions']})"),
              file=sys.stderr, flush=True)
    print(f"  [{label}] process: {time.perf_counter() - start:.0f} s", file=sys.stderr,
          flush=True)
    return out


def fmt_ratio(values):
    """A ratio's best-of value with its range over rounds: "1.02 (0.98-1.05)"."""
    best, per_round = values
    if not per_round:
        return f"{best:.2f}"
    return f"{best:.2f} ({min(per_round):.2f}-{max(per_round):.2f})"


def ratios(runs_a, runs_b, field):
    """(min over rounds of a / min over rounds of b, [a_i / b_i per round])."""
    a = [r[field] for r in runs_a]
    b = [r[field] for r in runs_b]
    return min(a) / min(b), [x / y for x, y in zip(a, b)]


def same_state(runs_a, runs_b):
    """"identical" where every final state of both is bitwise the same, else the largest
    mixed difference."""
    ys = [np.asarray(r["y1"]) for r in runs_a + runs_b]
    if all(np.array_equal(ys[0], y) for y in ys):
        return "identical"
    return f"{max(h.mixed_error(y, ys[0]) for y in ys):.1e}"


def steps(runs):
    found = sorted({(r["accepted"], r["rejected"]) for r in runs})
    return ", ".join(f"{a}/{b}" for a, b in found)


def overhead_table(cur, base, problems, tols):
    rows, notes = [], []
    for key in problems:
        for tol in tols:
            a = [r[(key, tol)] for r in cur]
            b = [r[(key, tol)] for r in base]
            failed = [r for r in a + b if "failed" in r]
            if failed:
                rows.append([key, f"{tol:.0e}", "failed", *[""] * 8])
                notes.append(f"- {key}, tol {tol:.0e}: failed: {failed[0]['failed']}")
                continue
            same_hlo = {r["hlo"] for r in a} == {r["hlo"] for r in b} and len(
                {r["hlo"] for r in a}) == 1
            ia, ib = a[0]["instructions"], b[0]["instructions"]
            rows.append([
                key, f"{tol:.0e}",
                steps(a) if steps(a) == steps(b) else f"{steps(a)} vs {steps(b)}",
                same_state(a, b),
                "yes" if same_hlo else f"no ({ia} vs {ib})",
                f"{min(r['compile_s'] for r in b):.2f}",
                f"{min(r['compile_s'] for r in a):.2f}",
                fmt_ratio(ratios(a, b, "compile_s")),
                f"{min(r['run_ms'] for r in b):.3f}",
                f"{min(r['run_ms'] for r in a):.3f}",
                fmt_ratio(ratios(a, b, "run_ms")),
            ])
    lines = h.md_table(
        ["problem", "tol", "steps (acc/rej)", "y(t1) current vs baseline",
         "same HLO (instructions current vs baseline)", "compile s baseline",
         "compile s current", "compile current / baseline", "run ms baseline",
         "run ms current", "run current / baseline"],
        "lrrrrrrrrrr",
        rows,
    )
    return lines + (["", *notes] if notes else [])


def guard_table(cur, tols):
    rows = []
    for tol in tols:
        try:
            a = [r[("kepler_guarded", tol)] for r in cur]
            b = [r[("kepler", tol)] for r in cur]
        except KeyError:
            continue
        if any("failed" in r for r in a + b):
            rows.append([f"{tol:.0e}", "failed", *[""] * 7])
            continue
        rows.append([
            f"{tol:.0e}",
            steps(a) if steps(a) == steps(b) else f"{steps(b)} vs {steps(a)}",
            same_state(b, a),
            f"{min(r['compile_s'] for r in b):.2f}",
            f"{min(r['compile_s'] for r in a):.2f}",
            fmt_ratio(ratios(a, b, "compile_s")),
            f"{min(r['run_ms'] for r in b):.3f}",
            f"{min(r['run_ms'] for r in a):.3f}",
            fmt_ratio(ratios(a, b, "run_ms")),
        ])
    return h.md_table(
        ["tol", "steps (acc/rej)", "y(t1) guarded vs plain", "compile s plain",
         "compile s guarded", "compile guarded / plain", "run ms plain",
         "run ms guarded", "run guarded / plain"],
        "lrrrrrrrr",
        rows,
    )


def run_overhead(cli, lines):
    defaults = QUICK_OVERHEAD if cli.quick else FULL_OVERHEAD
    problems = cli.overhead_problems or list(defaults["problems"])
    problems = sorted(problems, key=SMOOTH_ORDER.index)
    tols = sorted(cli.overhead_tols or defaults["tols"], reverse=True)
    rounds = cli.rounds or defaults["rounds"]
    repeats = cli.overhead_repeats or defaults["repeats"]
    path, commit = baseline_checkout(cli.baseline)
    spec = dict(problems=problems, tols=tols, repeats=repeats)

    cur, base = [], []
    for i in range(rounds):
        print(f"round {i + 1}/{rounds}", file=sys.stderr, flush=True)
        cur.append(run_worker("current", h.ROOT, spec))
        base.append(run_worker(f"baseline {cli.baseline}", path, spec))

    h.emit(lines, [
        "",
        "# Part 2: overhead of switch detection on smooth fields",
        "",
        f"- Current: taylorode from this checkout (git {h.git_revision()}); baseline: "
        f"taylorode at {cli.baseline} ({commit[:10]}), a detached `git worktree` at "
        f"`{path}`. Each measured by this script in a child process "
        "(`--worker`, `PYTHONPATH` set to the checkout; the worker checks "
        "`taylorode.__file__`), the two interleaved: "
        + ", ".join(["current, baseline"] * rounds) + f" ({rounds} rounds).",
        f"- Problems: {', '.join(problems)}; tols: {', '.join(f'{t:.0e}' for t in tols)}; "
        "`taylorode.Taylor()` + `taylorode.TaylorController(rtol=tol, atol=tol)`, "
        f"`dt0=None`, `max_steps={MAX_STEPS}`, whole solve under `jax.jit`. "
        "`kepler_guarded`: the Kepler field with `r2 = jnp.where(r2 > 0, r2, 1.0)` on "
        "r2 = |q|^2, a switching operation that never switches on the orbit.",
        "- **compile s**: `jax.jit(solve).lower(y0).compile()` after `jax.clear_caches()`, "
        "each worker having compiled one small solve first; **run ms**: best of "
        f"{repeats} calls after a warm-up call. Both columns: the best over the rounds; "
        "each ratio: best over best, with the range of the per-round ratios (round i's "
        "current over round i's baseline) in brackets.",
        "- **y(t1)**: \"identical\" where the final states of all rounds of both are "
        "bitwise equal, else their largest mixed difference. **same HLO**: whether the "
        "optimised HLO programs, with metadata (op names, source locations) stripped, "
        "are identical, with their instruction counts (fused ones included).",
        "",
        f"## Current against baseline {cli.baseline}",
        "",
        *overhead_table(cur, base, problems, tols),
    ])
    if "kepler" in problems and "kepler_guarded" in problems:
        h.emit(lines, [
            "",
            "## Kepler with a guard that never switches, against plain Kepler (current "
            "package)",
            "",
            "The same rounds' runs of the current package: `kepler_guarded` against "
            "`kepler`, the cost of detection where switching operations exist. Ratios: "
            "guarded over plain, best over best (per-round range in brackets).",
            "",
            *guard_table(cur, tols),
        ])


# --- Main --------------------------------------------------------------------------


def main():
    parser = h.parser(
        __doc__, "results_nonsmooth.md",
        quick_help=f"part 1 at tols {GRID.quick_tols}, part 2 on "
        f"{', '.join(QUICK_OVERHEAD['problems'])} at {QUICK_OVERHEAD['tols']}, "
        f"{QUICK_OVERHEAD['rounds']} rounds; few repeats",
    )
    GRID.add_options(parser, SOLVERS.names())
    parser.add_argument("--parts", nargs="+", choices=("workprecision", "overhead"),
                        default=["workprecision", "overhead"], help="default: both")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"part 1: timed calls per solve (default {REPEATS}; quick 2)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, metavar="REV",
                        help="part 2: the git revision to compare with (default %(default)s)")
    parser.add_argument("--overhead-problems", nargs="+", choices=SMOOTH_ORDER,
                        help=f"part 2 (default: {', '.join(FULL_OVERHEAD['problems'])})")
    parser.add_argument("--overhead-tols", type=float, nargs="+",
                        help=f"part 2 (default: {FULL_OVERHEAD['tols']})")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"part 2: rounds of (current, baseline) processes (default "
                        f"{FULL_OVERHEAD['rounds']}; quick {QUICK_OVERHEAD['rounds']})")
    parser.add_argument("--overhead-repeats", type=int, default=None,
                        help=f"part 2: timed calls per solve (default "
                        f"{FULL_OVERHEAD['repeats']}; quick {QUICK_OVERHEAD['repeats']})")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    cli = h.parse_args(parser)
    if cli.worker:
        try:
            worker(json.loads(cli.worker))
        except SystemExit:
            raise
        except Exception:
            traceback.print_exc()
            sys.exit(1)
        return
    cli.repeats = cli.repeats or (2 if cli.quick else REPEATS)

    lines = []
    h.emit(lines, [
        "# Non-smooth fields and switch detection",
        "",
        *h.environment_lines(cli.quick),
        f"- Parts: {', '.join(cli.parts)}",
    ])
    start = time.perf_counter()
    if "workprecision" in cli.parts:
        run_workprecision(cli, lines)
    if "overhead" in cli.parts:
        run_overhead(cli, lines)
    h.emit(lines, ["", f"Total time of the run: {time.perf_counter() - start:.0f} s."])
    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
