"""Benchmark: work-precision on stiff problems, Hermite-Obreschkoff against Kvaerno5, scipy and CVODE.

For the stiff float64 problems of `_problems.py` (references from scipy Radau at
rtol 1e-13, cross-checked there),

- `robertson`: Robertson's kinetics, t in [0, 1e11] (atol = 1e-6 tol throughout);
- `vdp1e3`, `vdp1e6`: Van der Pol, mu = 1e3 and 1e6, Hairer's time-scaled form,
  t in [0, 2];
- `brusselator`: 1-D Brusselator by the method of lines, 128 unknowns, t in [0, 10];
- `brusselator1000`, `brusselator10000`: the same on finer grids, 1000 and 10,000
  unknowns, stored point by point so that the Jacobian is banded (bandwidths (2, 2));
  not in the default set;
- `hires`: HIRES, 8 species, t in [0, 321.8122] (atol = 1e-6 tol);
- `pollu`: POLLU, air pollution kinetics, 20 species, t in [0, 60] (atol = 1e-6 tol);
- `oregonator`: the Oregonator, 3 species, t in [0, 360] (atol = 1e-6 tol),

and tolerances 1e-4 ... 1e-10 (rtol = tol, atol = tol except where said), the solvers:

- `Kvaerno5+PID`: `diffrax.Kvaerno5()` with `diffrax.PIDController(rtol, atol)`;
- `scipy Radau`, `scipy BDF`: `scipy.integrate.solve_ivp` with the analytic Jacobian;
- `CVODE(BDF)`: SUNDIALS CVODE (variable-order BDF, orders 1-5, Newton with a dense
  direct solver) through scikit-sundae (`sksundae.cvode.CVODE`), with the analytic
  Jacobian, dense; reported as failed, with the reason, where sksundae is absent;
- `Kvaerno5+PID banded`, `VOHO+PID banded`, `CVODE(BDF) banded`: the same with banded
  Newton matrices (`taylorode.BandedLU(lower, upper)` as Kvaerno5's VeryChord linear
  solver and as VOHO's `linear_solver`; CVODE's `band` linear solver with its own
  difference-quotient band Jacobian), for problems
  with a banded layout (the large Brusselators); run only when named in `--solvers`;
- `VOHO+PID`: `taylorode.VariableOrderHermiteObreschkoff()` (HO(1, 2) and HO(2, 3),
  each step with the higher one where its Newton iteration converges) with
  `diffrax.PIDController`; its order column counts accepted steps per order;
- `HO(p,q)+PID`: `taylorode.HermiteObreschkoff(p, q)` with `diffrax.PIDController`,
  for each pair given by `--ho` (default 2,3 and 3,4). Skipped, with a note, where
  this checkout of taylorode has no `HermiteObreschkoff`.
- `XHO(p,q)+PID`: `taylorode.ExtrapolatedHermiteObreschkoff(p, q)` (HO(p, q) with
  Richardson extrapolation, order p + q + 1) with `diffrax.PIDController`, for each
  pair given by `--xho` (default 1,2 and 2,3); skipped where absent.

Per run: accepted/rejected steps, Newton iterations and Jacobian evaluations
(`taylorode.implicit_stats` for HO; scipy's nfev/njev/nlu), the error at t1 against
the reference (Robertson: also the largest componentwise relative error, which its
comparisons use, y2's relative error and the conservation defect; HIRES, POLLU: the
relative error with a floor of 1e-6, which their comparisons use, and the pure
relative error),
compile and run time; then a targets summary per problem (run time and
steps of Kvaerno5 / the best HO at equal achieved error) and a work-precision plot per
problem (`docs/img/stiff_<problem>.png`), and an overview of the summaries (the table
that docs/benchmarks.md shows). Timing and result conventions are the harness's;
`run_diffrax` is `_harness.run_diffrax` with a per-problem dt0 (see `DIFFRAX_DT0`:
diffrax 0.7.2's dt0=None always starts at 0.01).

    python benchmarks/bench_stiff.py                      # full run
    python benchmarks/bench_stiff.py --quick              # smoke run
    python benchmarks/bench_stiff.py --problems robertson --tols 1e-6 1e-8 \\
        --solvers Kvaerno5+PID HO XHO --ho 2,3 4,5 --xho 1,2
    python benchmarks/bench_stiff.py --check-references   # references and Jacobians
"""

import argparse
import logging
import math
import sys

import _harness as h
import _problems as P
import diffrax
import jax.numpy as jnp
import numpy as np

import taylorode


PROBLEMS = P.STIFF
GRID = h.Grid(
    problems=PROBLEMS,
    tols=(1e-4, 1e-6, 1e-8, 1e-10),
    quick_problems=("robertson", "vdp1e3"),
    quick_tols=(1e-4, 1e-8),
    # The 1000- and 10,000-unknown grids only when asked for.
    default_problems=tuple(k for k in PROBLEMS if k not in ("brusselator1000", "brusselator10000")),
)
DEFAULT_HO = ((2, 3), (3, 4))
DEFAULT_XHO = ((1, 2), (2, 3))
MAX_STEPS = 200_000
# The target: at equal achieved error, HO solvers beat diffrax Kvaerno5's run time on
# Robertson and Van der Pol mu = 1000 and take fewer steps.
TARGET_PROBLEMS = ("robertson", "vdp1e3")
TARGET_ERRORS = (1e-4, 1e-6, 1e-8)

# dt0 for the diffrax solves: None (diffrax picks it), except where that fails. In
# diffrax 0.7.2, dt0=None gives a first step of 0.01 for every ODE: diffeqsolve wraps
# the terms in a WrapTerm before PIDController.init, and the initial-step heuristic
# (`_select_initial_step`) returns 0.01 for anything that is not an ODETerm. On
# vdp1e6, Kvaerno5 then rejects every step (0 accepted in 2e6 steps at tol 1e-4
# and 1e-6; dt0 = 0.01 does the same, dt0 = 1e-3 ... 1e-9 all work).
DIFFRAX_DT0 = {"vdp1e6": 1e-6}

HAVE_HO = hasattr(taylorode, "HermiteObreschkoff")
HAVE_XHO = hasattr(taylorode, "ExtrapolatedHermiteObreschkoff")
HAVE_IMPLICIT_STATS = hasattr(taylorode, "implicit_stats")


# --- Solvers ----------------------------------------------------------------------


SOLVERS = h.Registry()


def atol(problem, tol):
    return problem.atol_factor * tol


def finish(problem, r, y1, **counters):
    """Add the counters (Newton iterations, Jacobian evaluations, f evaluations, LU
    decompositions; None where the solver does not report them) and the problem's
    extra error measures to a result dict."""
    r.update(
        newton=counters.get("newton"),
        jac_evals=counters.get("jac_evals"),
        nfev=counters.get("nfev"),
        nlu=counters.get("nlu"),
        extra_errors=problem.extra_errors(np.asarray(y1), problem.reference),
    )
    return r


def run_diffrax(problem, solver, controller, settings, *, order, outputs=None, **kwargs):
    """`_harness.run_diffrax` with the problem's `DIFFRAX_DT0` for dt0."""
    return h.run_diffrax(
        problem, solver, controller, settings=settings, order=order,
        dt0=DIFFRAX_DT0.get(problem.key), outputs=outputs, **kwargs,
    )


@SOLVERS.add("Kvaerno5+PID")
def kvaerno5_pid(problem, tol, settings):
    """diffrax's Kvaerno5 (ESDIRK, order 5, VeryChord Newton with the controller's
    tolerances; diffrax reports no Newton or Jacobian counts)."""
    r = run_diffrax(
        problem,
        diffrax.Kvaerno5(),
        diffrax.PIDController(rtol=tol, atol=atol(problem, tol)),
        settings,
        order=5,
    )
    return finish(problem, r, r["y1"])


def band_of(problem):
    """The problem's Jacobian bandwidths (lower, upper), for the banded solvers; raises
    (reported as failed) where its layout has none."""
    if problem.band is None:
        raise RuntimeError("this problem's Jacobian is not banded in its layout")
    return problem.band


@SOLVERS.add("Kvaerno5+PID banded")
def kvaerno5_pid_banded(problem, tol, settings):
    """Kvaerno5 as above, with `taylorode.BandedLU` as VeryChord's linear solver (the
    band of each Newton matrix from lower + upper + 1 Jacobian-vector products)."""
    root_finder = diffrax.VeryChord(
        rtol=tol, atol=atol(problem, tol), linear_solver=taylorode.BandedLU(*band_of(problem))
    )
    r = run_diffrax(
        problem,
        diffrax.Kvaerno5(root_finder=root_finder),
        diffrax.PIDController(rtol=tol, atol=atol(problem, tol)),
        settings,
        order=5,
    )
    return finish(problem, r, r["y1"])


def run_scipy(problem, tol, settings, method, order):
    """`solve_ivp` with the analytic Jacobian: the median of `settings.scipy_repeats`
    solves; steps = len(sol.t) - 1 (scipy counts no rejections)."""
    run = P.ScipyRun(method, tol, atol(problem, tol))
    times, sol = h.time_calls(
        problem.solve, run, repeats=settings.scipy_repeats, warmup=False, block=False
    )
    y1 = sol.y[:, -1]
    r = h.result(
        order=order,
        accepted=len(sol.t) - 1,
        rejected=None,
        error=h.mixed_error(y1, problem.reference),
        compile_s=float("nan"),
        run_times_s=times,
        run_stat="median",
        stats=dict(nfev=sol.nfev, njev=sol.njev, nlu=sol.nlu),
    )
    return finish(problem, r, y1, nfev=sol.nfev, jac_evals=sol.njev, nlu=sol.nlu)


@SOLVERS.add("scipy Radau")
def scipy_radau(problem, tol, settings):
    return run_scipy(problem, tol, settings, "Radau", 5)


@SOLVERS.add("scipy BDF")
def scipy_bdf(problem, tol, settings):
    return run_scipy(problem, tol, settings, "BDF", "1-5")


def sksundae_version():
    import importlib.metadata

    try:
        return importlib.metadata.version("scikit-sundae")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def cvode_solve(problem, rtol, atol, band=None):
    """One solve by SUNDIALS CVODE (BDF, dense direct linear solver with the problem's
    analytic Jacobian as a dense matrix; or with `band = (lower, upper)` its banded
    solver with its own difference-quotient band Jacobian, lower + upper + 1 right-hand
    side evaluations each, as sksundae's Jacobian template is a dense N x N array)
    through scikit-sundae, from 0 to t1 with the state saved at every internal step;
    raises if CVODE does not reach t1."""
    try:
        from sksundae.cvode import CVODE
    except ImportError:
        raise RuntimeError(
            "scikit-sundae is not installed (pip install scikit-sundae, or the "
            "`bench` extra)"
        ) from None
    rhs, jac = problem.rhs, P._dense(problem.jac)

    def rhsfn(t, y, yp):
        yp[:] = rhs(t, y)

    def jacfn(t, y, yp, jj):
        jj[:, :] = jac(t, y)

    solver = CVODE(
        rhsfn,
        method="BDF",
        rtol=rtol,
        atol=atol,
        **(
            dict(linsolver="dense", jacfn=jacfn)
            if band is None
            else dict(linsolver="band", lband=band[0], uband=band[1])
        ),
        # A cap per call of CVode; sksundae saving every step calls it once per step,
        # so this is no cap on the whole solve (CVODE ends a stalled one itself).
        max_num_steps=MAX_STEPS,
    )
    sol = solver.solve(np.array([0.0, problem.t1]), problem.y0)
    if not sol.success or sol.t[-1] != problem.t1:
        raise RuntimeError(
            f"CVODE stopped at t = {sol.t[-1]:.6g}: {sol.message} (status {sol.status})"
        )
    return sol


@SOLVERS.add("CVODE(BDF)")
def cvode_bdf(problem, tol, settings, band=None):
    """SUNDIALS CVODE, BDF orders 1-5 (`cvode_solve`), rtol = tol and the scipy
    entries' atol, timed as they are (the median of `settings.scipy_repeats` solves);
    steps = len(sol.t) - 1 (one saved state per internal step; sksundae reports no
    rejections); f and Jac: CVODE's nfev and njev."""
    times, sol = h.time_calls(
        cvode_solve, problem, tol, atol(problem, tol), band,
        repeats=settings.scipy_repeats, warmup=False, block=False,
    )
    y1 = sol.y[-1]  # sksundae: one row per saved time
    r = h.result(
        order="1-5",
        accepted=len(sol.t) - 1,
        rejected=None,
        error=h.mixed_error(y1, problem.reference),
        compile_s=float("nan"),
        run_times_s=times,
        run_stat="median",
        stats=dict(nfev=sol.nfev, njev=sol.njev),
    )
    return finish(problem, r, y1, nfev=sol.nfev, jac_evals=sol.njev)


@SOLVERS.add("CVODE(BDF) banded")
def cvode_bdf_banded(problem, tol, settings):
    """CVODE as above with its banded direct linear solver (`linsolver="band"` and the
    problem's bandwidths) and its own difference-quotient band Jacobian."""
    return cvode_bdf(problem, tol, settings, band=band_of(problem))


# The default stiff solver, `taylorode.VariableOrderHermiteObreschkoff()`: the overview
# also compares it alone with Kvaerno5 and CVODE.
DEFAULT = "VOHO+PID"


def ho_name(p, q, extrapolated=False):
    return f"{'X' if extrapolated else ''}HO({p},{q})+PID"


def implicit_run(solver, order, orders_used=False):
    """A run of a taylorode implicit solver with diffrax's PIDController, recording
    `taylorode.implicit_stats` where it exists, and with `orders_used` the accepted
    steps per order (`taylorode.order_counts`) in the order column."""

    def outputs(sol):
        out = taylorode.implicit_stats(sol) if HAVE_IMPLICIT_STATS else {}
        return dict(out, counts=taylorode.order_counts(sol)) if orders_used else out

    def run(problem, tol, settings):
        r = run_diffrax(
            problem,
            solver,
            diffrax.PIDController(rtol=tol, atol=atol(problem, tol)),
            settings,
            order=order,
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
            outputs=outputs,
        )
        implicit = r["outputs"] or {}
        if "counts" in implicit:
            r["order"] = h.fmt_order({q: int(n) for q, n in implicit["counts"].items()})
        return finish(
            problem,
            r,
            r["y1"],
            newton=implicit.get("newton_iterations"),
            jac_evals=implicit.get("jacobian_evaluations"),
        )

    return run


# `taylorode.VariableOrderHermiteObreschkoff()` (pairs HO(1, 2) and HO(2, 3)); order
# column: accepted steps per order (3 and 5).
if hasattr(taylorode, "VariableOrderHermiteObreschkoff"):
    SOLVERS.add(DEFAULT)(implicit_run(taylorode.VariableOrderHermiteObreschkoff(), "3/5", orders_used=True))

if hasattr(taylorode, "BandedLU"):

    @SOLVERS.add(DEFAULT + " banded")
    def voho_pid_banded(problem, tol, settings):
        """The default stiff solver with banded Newton matrices
        (`VariableOrderHermiteObreschkoff(linear_solver=taylorode.BandedLU(lower, upper))`)."""
        solver = taylorode.VariableOrderHermiteObreschkoff(
            linear_solver=taylorode.BandedLU(*band_of(problem))
        )
        return implicit_run(solver, "3/5", orders_used=True)(problem, tol, settings)


def ho_config(p, q, extrapolated=False):
    """`taylorode.HermiteObreschkoff(p, q)` (order p + q), or with `extrapolated`
    `taylorode.ExtrapolatedHermiteObreschkoff(p, q)` (order p + q + 1), with diffrax's
    PIDController (`implicit_run`)."""
    if extrapolated:
        solver, order = taylorode.ExtrapolatedHermiteObreschkoff(p, q), p + q + 1
    else:
        solver, order = taylorode.HermiteObreschkoff(p, q), p + q
    return h.Solver(ho_name(p, q, extrapolated), implicit_run(solver, order))


def is_ho(name):
    return name.startswith(("HO(", "XHO("))


def error_name(problem):
    return problem.comparison_error or "error"


def comparison_error(problem):
    """r -> the error that the summary and the plots compare: the mixed error, or
    the problem's `comparison_error` (Robertson: the max componentwise relative
    error)."""
    if problem.comparison_error is None:
        return lambda r: r["error"]
    return lambda r: r["extra_errors"][problem.comparison_error]


# --- Report -----------------------------------------------------------------------


def header(cli, problems, tols, solvers, skipped, settings):
    lines = [
        "# Stiff work-precision: Hermite-Obreschkoff vs Kvaerno5, scipy Radau/BDF "
        "and CVODE",
        "",
        *h.environment_lines(cli.quick),
        h.grid_line(problems, tols, solvers),
    ]
    if skipped:
        lines.append(f"- Skipped: {skipped}")
    lines += [
        "- Settings: float64; t0 = 0; rtol = tol and atol = tol for every solver, "
        + atol_exceptions(problems) + ". diffrax: "
        "`PIDController(rtol, atol)` with its default coefficients, `dt0=None` "
        "(except "
        + ", ".join(f"{k}: dt0 = {v:g}" for k, v in DIFFRAX_DT0.items())
        + ": diffrax 0.7.2's dt0=None always starts with a step of 0.01, as its "
        "initial-step heuristic skips the WrapTerm that diffeqsolve wraps terms in, "
        "and with that first step Kvaerno5 never accepts a step on vdp1e6), "
        f"`max_steps={settings.max_steps}`, whole solve under `jax.jit`; Kvaerno5 with "
        "its default root finder (VeryChord, the controller's tolerances, at most 10 "
        "iterations). `HO(p,q)+PID`: `taylorode.HermiteObreschkoff(p, q)` (order "
        "p + q), `XHO(p,q)+PID`: `taylorode.ExtrapolatedHermiteObreschkoff(p, q)` "
        "(HO(p, q) steps of h and twice h/2, Richardson-extrapolated: order "
        "p + q + 1; each step is three HO solves), both with "
        "`SaveAt(t1=True, solver_state=True)`. scipy: `solve_ivp(method=...)` "
        "with the analytic Jacobian (sparse for the Brusselator). `CVODE(BDF)`: "
        f"SUNDIALS CVODE through scikit-sundae {sksundae_version()} "
        "(`sksundae.cvode.CVODE`, method "
        "`BDF`, orders 1-5, its default Newton iteration with the `dense` direct "
        "linear solver and the analytic Jacobian as a dense matrix, the state saved "
        "at every internal step). `... banded`: the same with banded Newton matrices: "
        "`taylorode.BandedLU(lower, upper)` as Kvaerno5's VeryChord `linear_solver` and "
        "as VOHO's, each Jacobian's band from lower + upper + 1 Jacobian-vector "
        "products; CVODE's `band` linear solver with its own difference-quotient band "
        "Jacobian (lower + upper + 1 right-hand side calls).",
        "- **steps (acc/rej)**: diffrax's counts; scipy and CVODE: len(sol.t) - 1 "
        "accepted, rejections not reported. **Newton**: Newton iterations (HO: "
        "`taylorode.implicit_stats(sol)`; diffrax's Kvaerno5, scipy and sksundae "
        "report none). **Jac**: Jacobian evaluations (HO: `implicit_stats`; scipy "
        "and CVODE: njev). **f**: scipy's and CVODE's nfev; **LU**: scipy's nlu.",
        "- **error** = max_i |y_i(t1) - ref_i| / (1 + |ref_i|) (mixed abs/rel, max "
        "norm), as in bench_control; references in each section. Robertson's "
        "comparisons use **max rel err** = max_i |y_i(t1) - ref_i| / |ref_i| instead "
        "(its mixed error sees only y3 ~ 1); HIRES's and POLLU's use **floored rel "
        "err** = max_i |y_i(t1) - ref_i| / (|ref_i| + 1e-6) (the IVP Test Set's "
        "mixed measure with atol/rtol = 1e-6; their components at t1 span 5.9e-5 to "
        "6.2e-3 and 4.4e-18 to 0.32).",
        "- **compile s**: diffrax: `jax.jit(...).lower(y0).compile()`; scipy: none.",
        f"- **run ms**: diffrax: best of {settings.diffrax_repeats} calls after a "
        f"warm-up call; scipy and CVODE: median of {settings.scipy_repeats} solves. "
        "Wall time, single process. scipy and CVODE call the NumPy right-hand side "
        "and Jacobian from Python at every evaluation.",
        "- **Targets**: at equal achieved error, HO solvers beat diffrax "
        "Kvaerno5's run time on Robertson and Van der Pol mu = 1000 and take fewer "
        f"steps; checked at errors {', '.join(f'{e:.0e}' for e in cli.target_errors)} "
        "against the best HO or XHO (least run time) by run time and accepted steps, each "
        "interpolated log-log in the error between the two tols that bracket it. "
        "The verdict uses accepted steps; **steps tried** (accepted + rejected, "
        "diffrax's `num_steps`) is shown beside it, since every rejected step costs "
        "a full step's work.",
    ]
    return lines


def atol_exceptions(keys):
    """The "except ..." clause of the settings line: each problem among `keys` whose
    atol is not tol, with its atol."""
    why = {"robertson": " (y2 is at most 3.7e-5)"}
    parts = []
    for key in keys:
        factor = PROBLEMS[key]().atol_factor
        if factor != 1:
            parts.append(f"{key}: atol = {factor:g} tol{why.get(key, '')}")
    return "except " + "; ".join(parts) if parts else "on every problem"


def fmt_count(x):
    return "" if x is None else str(int(x))


def table(problem, rows):
    extra_keys = list(problem.extra_errors(problem.reference, problem.reference))
    rows_md, notes = [], []
    for name, tol, r in rows:
        if "failed" in r:
            rows_md.append([name, f"{tol:.0e}", "", "failed"] + [""] * (8 + len(extra_keys)))
            notes.append(f"- {name}, tol {tol:.0e}: failed: {r['failed']}")
            continue
        rej = "-" if r["rejected"] is None else r["rejected"]
        rows_md.append([
            name, f"{tol:.0e}", r["order"], f"{r['accepted']}/{rej}",
            fmt_count(r["newton"]), fmt_count(r["jac_evals"]), fmt_count(r["nfev"]),
            fmt_count(r["nlu"]), f"{r['error']:.2e}", f"{r['error'] / tol:.3g}",
            *(f"{r['extra_errors'][k]:.2e}" for k in extra_keys),
            "" if math.isnan(r["compile_s"]) else f"{r['compile_s']:.2f}",
            f"{h.run_ms(r):.3f}",
        ])
        if r["notes"]:
            notes.append(f"- {name}, tol {tol:.0e}: {r['notes']}")
    lines = [
        *h.problem_heading(problem),
        *h.md_table(
            ["solver", "tol", "order", "steps (acc/rej)", "Newton", "Jac", "f", "LU",
             "error", "error/tol", *extra_keys, "compile s", "run ms"],
            "l" + "r" * (11 + len(extra_keys)),
            rows_md,
        ),
    ]
    if notes:
        lines += ["", *notes]
    return lines


# --- Done-when summary ------------------------------------------------------------


def at_error(runs, target, metric, error):
    """`metric(r)` at achieved error `error(r) == target` from one solver's runs
    [(tol, r)]: log-log interpolation in the error between the first two consecutive
    tols (loosest first) whose errors bracket the target; else the least value among
    the runs with error <= target; else None. Returns (value, how)."""
    runs = sorted([(t, r) for t, r in runs if "failed" not in r], key=lambda x: -x[0])
    for (ta, ra), (tb, rb) in zip(runs, runs[1:]):
        ea, eb = error(ra), error(rb)
        if ea > target >= eb and eb > 0:
            w = (math.log(target) - math.log(ea)) / (math.log(eb) - math.log(ea))
            va, vb = math.log(metric(ra)), math.log(metric(rb))
            return math.exp(va + w * (vb - va)), f"tols {ta:.0e}-{tb:.0e}"
    ok = [(metric(r), t) for t, r in runs if error(r) <= target]
    if ok:
        v, t = min(ok)
        return v, f"tol {t:.0e}"
    return None, "not reached"


def fmt_at(value, how, fmt, unit=""):
    """A value from `at_error` and how it was got ("not reached" / "not run")."""
    return how if value is None else f"{value:{fmt}}{unit} ({how})"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(x):
    return "" if x is None else f"{x:.2f}"


def summary(problem, rows, targets):
    """The targets section of one problem: (lines, record), the record holding what
    `overview` shows: per target error, the best HO and the three ratios as the
    targets table prints them."""
    by = {}
    for name, tol, r in rows:
        by.setdefault(name, []).append((tol, r))
    lines = ["", f"### Targets: {problem.key}", ""]
    if problem.key in TARGET_PROBLEMS:
        lines.append(
            "Target: HO beats Kvaerno5's run time at equal error and takes "
            "fewer steps (both ratios Kvaerno5 / best HO > 1)."
        )
    else:
        lines.append("For information (the targets name Robertson and Van der Pol "
                     "mu = 1000 only).")
    steps = lambda r: r["accepted"]  # noqa: E731
    # diffrax's `num_steps`: accepted + rejected, every step tried.
    tried = lambda r: r["accepted"] + r["rejected"]  # noqa: E731
    error = comparison_error(problem)
    hos = [name for name in by if is_ho(name)]
    k5 = by.get("Kvaerno5+PID")
    rows_md, info, record = [], [], {}
    for target in targets:
        k5_ms = at_error(k5, target, h.run_ms, error) if k5 else (None, "not run")
        k5_steps = at_error(k5, target, steps, error) if k5 else (None, "not run")
        best = None
        for name in hos:
            ms = at_error(by[name], target, h.run_ms, error)
            if ms[0] is not None and (best is None or ms[0] < best[1][0]):
                best = (name, ms, at_error(by[name], target, steps, error),
                        at_error(by[name], target, tried, error))
        if best is None:
            name = "none reached" if hos else "not run"
            ho_ms = ho_steps = ho_tried = (None, "not reached" if hos else "not run")
        else:
            name, ho_ms, ho_steps, ho_tried = best
        k5_tried = at_error(k5, target, tried, error) if k5 else (None, "not run")
        tr, sr = ratio(k5_ms[0], ho_ms[0]), ratio(k5_steps[0], ho_steps[0])
        trr = ratio(k5_tried[0], ho_tried[0])
        if tr is None or sr is None:
            verdict = "n/a"
        else:
            ok = tr > 1 and sr > 1
            verdict = ("met" if ok else "**missed**") if problem.key in TARGET_PROBLEMS \
                else ("would be met" if ok else "would be missed")
        rows_md.append([
            f"{target:.0e}", fmt_at(*k5_ms, ".3g"), name, fmt_at(*ho_ms, ".3g"),
            fmt_ratio(tr), fmt_at(*k5_steps, ".0f"), fmt_at(*ho_steps, ".0f"),
            fmt_ratio(sr), fmt_ratio(trr), verdict,
        ])
        record[target] = dict(
            best=name, time=fmt_ratio(tr), steps=fmt_ratio(sr), tried=fmt_ratio(trr)
        )
        if DEFAULT in by:
            # The default stiff solver against Kvaerno5 and CVODE.
            d_ms = at_error(by[DEFAULT], target, h.run_ms, error)
            d_tried = at_error(by[DEFAULT], target, tried, error)
            cv = by.get("CVODE(BDF)")
            cv_ms = at_error(cv, target, h.run_ms, error) if cv else (None, "not run")
            record[target]["default"] = dict(
                time=fmt_ratio(ratio(k5_ms[0], d_ms[0])),
                tried=fmt_ratio(ratio(k5_tried[0], d_tried[0])),
                cvode=fmt_ratio(ratio(cv_ms[0], d_ms[0])),
            )
        if f"{DEFAULT} banded" in by:
            # The banded solvers against each other: the same linear algebra.
            d_ms = at_error(by[f"{DEFAULT} banded"], target, h.run_ms, error)
            d_tried = at_error(by[f"{DEFAULT} banded"], target, tried, error)
            parts = []
            for other in ("Kvaerno5+PID banded", "CVODE(BDF) banded"):
                if other in by:
                    o_ms = at_error(by[other], target, h.run_ms, error)
                    # CVODE reports no rejections: its accepted steps against ours.
                    diffrax_run = other.startswith("Kvaerno5")
                    count = tried if diffrax_run else steps
                    o_n = at_error(by[other], target, count, error)
                    d_n = d_tried if diffrax_run else at_error(by[f"{DEFAULT} banded"], target, steps, error)
                    parts.append(
                        f"{other} / {DEFAULT} banded: run time "
                        f"{fmt_ratio(ratio(o_ms[0], d_ms[0])) or 'n/a'}, "
                        f"{'steps tried' if diffrax_run else 'accepted steps'} "
                        f"{fmt_ratio(ratio(o_n[0], d_n[0])) or 'n/a'}"
                    )
            if parts:
                info.append(f"banded, at {error_name(problem)} {target:.0e}: " + "; ".join(parts))
        others = []
        for other in by:
            if other == "Kvaerno5+PID" or is_ho(other):
                continue
            ms = at_error(by[other], target, h.run_ms, error)
            others.append(f"{other} {fmt_at(*ms, '.3g', ' ms')}")
            notes = []
            if best is not None and ms[0] is not None:
                notes.append(f"{ms[0] / ho_ms[0]:.2f}x {name}")
            k5_ratio = ratio(k5_ms[0], ms[0])
            if k5_ratio is not None:
                notes.append(f"Kvaerno5 / this {k5_ratio:.2f}")
            if notes:
                others[-1] += f" ({'; '.join(notes)})"
        if others:
            info.append(f"at {error_name(problem)} {target:.0e}: " + "; ".join(others))
    lines += [
        "",
        *h.md_table(
            [error_name(problem), "Kvaerno5 ms", "best HO", "HO ms", "time K5/HO",
             "Kvaerno5 steps", "HO steps", "steps K5/HO", "K5/HO steps tried", "verdict"],
            "rrlrrrrrrl",
            rows_md,
        ),
    ]
    if not hos:
        lines += ["", "No HO solver ran: no verdict."]
    if info:
        lines += ["", "Other solvers at equal error, for information: "
                  + "; ".join(info) + "."]
    return lines, record


def overview(records, targets):
    """One table of every problem's targets ratios (`records`: {key: (problem,
    record from `summary`)}): the table docs/benchmarks.md shows."""
    def label(problem):
        return problem.label + (
            f" ({problem.comparison_error})" if problem.comparison_error else ""
        )

    rows = []
    for problem, record in records.values():
        cells = [label(problem)]
        for target in targets:
            r = record.get(target)
            if r is None:
                cells.append("not run")
            elif r["time"] and r["steps"] and r["tried"]:
                cells.append(f"{r['time']}×; {r['steps']}×; {r['tried']}× ({r['best']})")
            else:
                cells.append(f"n/a ({r['best']})")
        rows.append(cells)
    default_rows = []
    for problem, record in records.values():
        cells = [label(problem)]
        for target in targets:
            d = record.get(target, {}).get("default")
            if d is None:
                cells.append("not run")
            elif d["time"] and d["tried"]:
                cvode = f"{d['cvode']}×" if d["cvode"] else "n/a"
                cells.append(f"{d['time']}×; {d['tried']}×; {cvode}")
            else:
                cells.append("n/a (not reached)")
        default_rows.append(cells)
    default_table = [] if not any(
        r.get("default") for _, record in records.values() for r in record.values()
    ) else [
        "",
        "## The default stiff solver: overview",
        "",
        f"{DEFAULT} at equal achieved error: Kvaerno5's run time / its run time; "
        "Kvaerno5's steps tried / its steps tried; CVODE's run time / its run time (> 1: "
        f"{DEFAULT} is faster or takes fewer steps).",
        "",
        *h.md_table(
            ["problem", *(f"error {t:.0e}" for t in targets)],
            "l" + "l" * len(targets),
            default_rows,
        ),
    ]
    return default_table + [
        "",
        "## Targets: overview",
        "",
        "Kvaerno5 / the best HO or XHO (least run time) at equal achieved error, from "
        "the targets tables above: run time; accepted steps; steps tried (accepted + "
        "rejected).",
        "",
        *h.md_table(
            ["problem", *(f"error {t:.0e}" for t in targets)],
            "l" + "l" * len(targets),
            rows,
        ),
    ]


# --- Plots ------------------------------------------------------------------------


STYLES = {
    "Kvaerno5+PID": dict(color="tab:blue", marker="s"),
    "scipy Radau": dict(color="black", marker="o"),
    "scipy BDF": dict(color="tab:gray", marker="v"),
    "CVODE(BDF)": dict(color="tab:green", marker="o", linestyle="--"),
}
HO_COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink")
HO_MARKERS = ("D", "^", "P", "X", "*")


def style(name, index):
    if name in STYLES:
        return STYLES[name]
    return dict(color=HO_COLORS[index % len(HO_COLORS)],
                marker=HO_MARKERS[index % len(HO_MARKERS)])


def plot(problem, rows, targets, path):
    plt = h.pyplot()
    by = h.group_runs(rows)
    error = comparison_error(problem)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    n_ho = 0
    for name, runs in by.items():
        runs.sort(key=lambda x: -x[0])
        s = style(name, n_ho)
        n_ho += is_ho(name)
        errors = [max(error(r), 1e-17) for _, r in runs]
        ax1.loglog([h.run_ms(r) for _, r in runs], errors, label=name, **s)
        ax2.loglog([r["accepted"] for _, r in runs], errors, label=name, **s)
    for ax in (ax1, ax2):
        for target in targets:
            ax.axhline(target, color="0.6", linewidth=0.8, linestyle=":")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_ylabel(
            "error at t1 (mixed, max norm)" if problem.comparison_error is None
            else f"{problem.comparison_error} at t1"
        )
    ax1.set_xlabel("run time (ms)")
    ax1.set_title("error vs run time")
    ax2.set_xlabel("accepted steps")
    ax2.set_title("error vs steps")
    ax1.legend(fontsize=8)
    fig.suptitle(problem.title, fontsize=10)
    fig.tight_layout()
    return h.save_figure(fig, path)


# --- Main -------------------------------------------------------------------------


def parse_pair(text):
    try:
        p, q = (int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected p,q (two integers, e.g. 2,3), got {text!r}"
        ) from None
    return p, q


def check_references(problem):
    """Print the reference with its cross-checks, the JAX and NumPy right-hand sides
    against each other, and the analytic Jacobian against `jax.jacfwd`."""
    print(f"\n{problem.key}: {problem.title}")
    print(f"  reference {np.array2string(problem.reference, threshold=8)}")
    print(f"  {problem.reference_note}")
    f_jax = np.asarray(problem.vector_field(0.0, jnp.asarray(problem.reference), None))
    f_np = problem.rhs(0.0, problem.reference)
    print(f"  jnp vs numpy rhs at the reference: max |diff| "
          f"{np.max(np.abs(f_jax - f_np)):.1e}")
    print(f"  analytic Jacobian vs jax.jacfwd: {P.check_jacobian(problem):.1e} at y0, "
          f"{P.check_jacobian(problem, problem.reference):.1e} at the reference")


def main():
    parser = h.parser(__doc__, "results_stiff.md", quick_help=GRID.quick_help)
    GRID.add_options(parser, SOLVERS.names() + ["HO", "XHO"])
    parser.add_argument(
        "--ho",
        type=parse_pair,
        nargs="*",
        default=list(DEFAULT_HO),
        metavar="P,Q",
        help="the HermiteObreschkoff(p, q) pairs to run (default: "
        + " ".join(f"{p},{q}" for p, q in DEFAULT_HO) + "; none if given empty)",
    )
    parser.add_argument(
        "--xho",
        type=parse_pair,
        nargs="*",
        default=list(DEFAULT_XHO),
        metavar="P,Q",
        help="the ExtrapolatedHermiteObreschkoff(p, q) pairs to run (default: "
        + " ".join(f"{p},{q}" for p, q in DEFAULT_XHO) + "; none if given empty)",
    )
    parser.add_argument(
        "--target-errors",
        type=float,
        nargs="+",
        default=list(TARGET_ERRORS),
        help="achieved errors at which the targets summary compares solvers "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--check-references",
        action="store_true",
        help="print each reference's cross-checks, the JAX vs NumPy right-hand side "
        "and the Jacobian check, then exit",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="timed calls per diffrax and scipy run (default 5; 2 with --quick)",
    )
    h.add_plot_options(parser, "stiff_<problem>.png")
    cli = h.parse_args(parser)
    tols, problem_keys = GRID.select(cli)
    repeats = {} if cli.repeats is None else dict(diffrax_repeats=cli.repeats, scipy_repeats=cli.repeats)
    settings = h.Settings.for_run(MAX_STEPS, cli.quick, **repeats)
    img_dir = h.plot_dir(cli)

    # A solve that fails inside jit (eqx.error_if) logs the callback's traceback;
    # `_harness.short_error` keeps the message for the table.
    logging.getLogger("jax._src.callback").setLevel(logging.CRITICAL)

    if cli.check_references:
        for key in problem_keys:
            check_references(PROBLEMS[key]())
        return

    # The banded solvers only when named: they need a problem with a banded layout.
    wanted = lambda name: name in cli.solvers if cli.solvers is not None else not name.endswith(" banded")  # noqa: E731
    solvers = [s for s in SOLVERS if wanted(s.name)]
    skipped = ""
    if wanted("HO") and cli.ho:
        if HAVE_HO:
            solvers += [ho_config(p, q) for p, q in cli.ho]
            if not HAVE_IMPLICIT_STATS:
                skipped = ("Newton/Jacobian counts of the HO rows: "
                           "`taylorode.implicit_stats` absent in this checkout")
        else:
            skipped = (
                ", ".join(ho_name(p, q) for p, q in cli.ho)
                + ": `taylorode.HermiteObreschkoff` absent in this checkout"
            )
            print(f"Skipping {skipped}", file=sys.stderr)

    if wanted("XHO") and cli.xho:
        if HAVE_XHO:
            solvers += [ho_config(p, q, extrapolated=True) for p, q in cli.xho]
        else:
            note = (", ".join(ho_name(p, q, True) for p, q in cli.xho)
                    + ": `taylorode.ExtrapolatedHermiteObreschkoff` absent in this checkout")
            skipped = f"{skipped}; {note}" if skipped else note
            print(f"Skipping {note}", file=sys.stderr)

    lines = []
    h.emit(lines, header(cli, problem_keys, tols, solvers, skipped, settings))
    records = {}
    for key in problem_keys:
        problem = PROBLEMS[key]()
        print(f"[{key}] reference ...", file=sys.stderr, flush=True)
        problem.reference_note  # noqa: B018  (solve for the reference now)
        rows = h.run_grid(
            problem, tols, solvers, settings,
            lambda r: f"steps {r['accepted']}/{r['rejected'] or 0}, "
            f"error {r['error']:.2e}, "
            + ("" if math.isnan(r["compile_s"])
               else f"compile {r['compile_s']:.2f} s, ")
            + f"run {h.run_ms(r):.3f} ms",
        )
        summary_lines, record = summary(problem, rows, cli.target_errors)
        records[key] = (problem, record)
        problem_lines = table(problem, rows) + summary_lines
        if img_dir is not None:
            shown = plot(problem, rows, cli.target_errors, img_dir / f"stiff_{key}.png")
            problem_lines += ["", f"Plot: `{shown}`."]
        h.emit(lines, problem_lines)
    h.emit(lines, overview(records, cli.target_errors))

    h.write_results(cli, lines)


if __name__ == "__main__":
    main()
