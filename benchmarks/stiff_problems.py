"""Stiff test problems: JAX and NumPy vector fields, analytic Jacobians, references.

Four float64 problems, each a `StiffProblem`:

- `robertson`: Robertson's chemical kinetics (ROBER), t in [0, 1e11];
- `vdp1e3`, `vdp1e6`: Van der Pol in Hairer's time-scaled form, mu = 1e3 and 1e6,
  t in [0, 2] (one full period, both relaxation jumps);
- `brusselator`: the 1-D Brusselator reaction-diffusion PDE by the method of lines
  (Hairer-Wanner II, IV.1), 64 interior points, 128 unknowns, t in [0, 10].

Each right-hand side is written once, against an array namespace `xp`, and used
twice: with `jax.numpy` as the diffrax vector field `f(t, y, args)`, and with NumPy
as the scipy right-hand side `f(t, y)`. So the two compute the same float64 function.
The Jacobians are analytic (dense NumPy, or `scipy.sparse` for the Brusselator);
`check_jacobian` compares them with `jax.jacfwd` of the vector field.

References come from scipy's `Radau` at rtol = 1e-13 with the analytic Jacobian, and
are cross-checked against a second scipy solver at tight tolerance (DOP853 where the
problem is mild enough for an explicit method, LSODA otherwise) and, for Robertson
and Van der Pol mu = 1e6, against the published values of the IVP Test Set (Mazzia &
Magherini, Bari). `StiffProblem.reference` solves on first use (seconds) and keeps
the result; `StiffProblem.reference_note` says how well the checks agree.

This module sets no JAX configuration: float64 needs `jax_enable_x64` from the caller
(the benchmarks get it from `bench_control`, the tests from `conftest.py`).

    python benchmarks/stiff_problems.py        # references, cross-checks, Jacobians
"""

import dataclasses
import functools
import time
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import scipy.sparse
from scipy.integrate import solve_ivp


def mixed_error(y, ref):
    """max_i |y_i - ref_i| / (1 + |ref_i|): the error measure of every benchmark."""
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(y - ref) / (1 + np.abs(ref))))


@dataclasses.dataclass(frozen=True)
class ScipyRun:
    """One `solve_ivp` configuration for a reference or a cross-check."""

    method: str
    rtol: float
    atol: float

    def label(self):
        return f"scipy {self.method} (rtol {self.rtol:.0e}, atol {self.atol:.0e})"


@dataclasses.dataclass(frozen=True)
class StiffProblem:
    key: str  # the name on the command line
    title: str
    vector_field: Callable  # f(t, y, args) with jnp, for diffrax
    rhs: Callable  # f(t, y) with NumPy, for scipy; the same formula
    jac: Callable  # (t, y) -> analytic Jacobian of rhs (ndarray or scipy.sparse)
    y0: np.ndarray  # float64
    t1: float  # t0 = 0
    # atol = atol_factor * tol for every solver at tolerance tol (rtol = tol).
    atol_factor: float = 1.0
    reference_run: ScipyRun = ScipyRun("Radau", 1e-13, 1e-13)
    check_runs: tuple[ScipyRun, ...] = ()
    published: np.ndarray | None = None  # the IVP Test Set's values at t1, if any
    published_source: str = ""
    remarks: str = ""  # appended to the reference note
    # (y, ref) -> {label: value}: error measures besides `mixed_error`.
    extra_errors: Callable = lambda y, ref: {}
    # The error that work-precision comparisons use: None for `mixed_error`, else a
    # key of `extra_errors`.
    comparison_error: str | None = None

    def solve(self, run, **kwargs):
        """`solve_ivp` from 0 to t1 with run's method and tolerances and the analytic
        Jacobian (none for explicit methods); raises if scipy does not reach t1."""
        if run.method not in ("RK23", "RK45", "DOP853"):  # explicit: no Jacobian
            # LSODA takes no sparse Jacobian.
            kwargs["jac"] = _dense(self.jac) if run.method == "LSODA" else self.jac
        sol = solve_ivp(
            self.rhs,
            (0.0, self.t1),
            self.y0,
            method=run.method,
            rtol=run.rtol,
            atol=run.atol,
            **kwargs,
        )
        if sol.status != 0:
            raise RuntimeError(f"{run.label()} failed: {sol.message}")
        return sol

    @functools.cached_property
    def _reference(self):
        start = time.perf_counter()
        sol = self.solve(self.reference_run)
        ref = sol.y[:, -1].copy()
        info = dict(steps=len(sol.t) - 1, seconds=time.perf_counter() - start)
        checks = []
        for run in self.check_runs:
            y = self.solve(run).y[:, -1]
            checks.append((run.label(), y))
        if self.published is not None:
            checks.append((f"the published value ({self.published_source})",
                           self.published))
        return ref, info, checks

    @property
    def reference(self):
        """The state at t1 (float64), from `reference_run`."""
        return self._reference[0]

    @property
    def reference_checks(self):
        """[(label, state at t1)] of the cross-checks."""
        return self._reference[2]

    @property
    def reference_note(self):
        ref, info, checks = self._reference
        run = self.reference_run
        note = (
            f"{run.label()} with the analytic Jacobian, {info['steps']} steps "
            f"({info['seconds']:.1f} s)"
        )
        if checks:
            agree = []
            for label, y in checks:
                text = f"{label} to {mixed_error(y, ref):.1e}"
                extra = self.extra_errors(y, ref)
                if extra:
                    text += " (" + ", ".join(
                        f"{k} {v:.1e}" for k, v in extra.items()) + ")"
                agree.append(text)
            note += "; agreement with " + "; ".join(agree)
        if self.remarks:
            note += ". " + self.remarks
        return note


def _dense(jac):
    def dense(t, y):
        j = jac(t, y)
        return j.toarray() if scipy.sparse.issparse(j) else j

    return dense


def _for_jax(f):
    return lambda t, y, args: f(y, jnp)


def _for_numpy(f):
    return lambda t, y: f(y, np)


# --- Robertson --------------------------------------------------------------------


ROBERTSON_K = (0.04, 1e4, 3e7)
ROBERTSON_T1 = 1e11
# IVP Test Set (Mazzia & Magherini, release 2.4), problem ROBER, y(1e11).
ROBERTSON_PUBLISHED = np.array(
    [0.2083340149701255e-07, 0.8333360770334713e-13, 0.9999999791665050]
)


def robertson_rhs(y, xp):
    k1, k2, k3 = ROBERTSON_K
    r1 = k1 * y[0]
    r2 = k2 * y[1] * y[2]
    r3 = k3 * y[1] * y[1]
    return xp.stack([r2 - r1, r1 - r2 - r3, r3])


def robertson_jac(t, y):
    k1, k2, k3 = ROBERTSON_K
    return np.array(
        [
            [-k1, k2 * y[2], k2 * y[1]],
            [k1, -k2 * y[2] - 2 * k3 * y[1], -k2 * y[1]],
            [0.0, 2 * k3 * y[1], 0.0],
        ]
    )


def robertson_extra_errors(y, ref):
    """At t1 = 1e11, y1 = 2.1e-8 and y2 = 8.3e-14 are invisible to the mixed error,
    which only sees y3 ~ 1: y2's relative error; the largest componentwise relative
    error max_i |y_i - ref_i| / |ref_i| (the IVP Test Set's measure, "scd" = -log10 of
    it); and the conservation defect |y1 + y2 + y3 - 1|."""
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return {
        "y2 rel err": float(abs(y[1] - ref[1]) / abs(ref[1])),
        "max rel err": float(np.max(np.abs(y - ref) / np.abs(ref))),
        "abs(y1+y2+y3-1)": float(abs(np.sum(y) - 1)),
    }


def robertson_problem():
    return StiffProblem(
        key="robertson",
        title="Robertson (ROBER), y0 = (1, 0, 0), t in [0, 1e11]",
        vector_field=_for_jax(robertson_rhs),
        rhs=_for_numpy(robertson_rhs),
        jac=robertson_jac,
        y0=np.array([1.0, 0.0, 0.0]),
        t1=ROBERTSON_T1,
        atol_factor=1e-6,
        reference_run=ScipyRun("Radau", 1e-13, 1e-22),
        check_runs=(ScipyRun("LSODA", 1e-13, 1e-20),),
        published=ROBERTSON_PUBLISHED,
        published_source="IVP Test Set, ROBER",
        remarks=(
            "Every solver uses atol = 1e-6 tol (rtol = tol), so that the absolute "
            "tolerance lies well below y2's scale (at most 3.7e-5) at every tol. "
            "At t1 the mixed error sees only y3 (~1; y1 = 2.1e-8, y2 = 8.3e-14) and "
            "is ~1e-11 already at tol 1e-4, so it says little: **max rel err** = "
            "max_i |y_i - ref_i| / |ref_i| (the IVP Test Set's measure) is the error "
            "of the work-precision comparison, the summary and the plot; **y2 rel "
            "err** is y2's part of it, and |y1 + y2 + y3 - 1| the conservation defect "
            "(the exact solution conserves the sum)"
        ),
        extra_errors=robertson_extra_errors,
        comparison_error="max rel err",
    )


# --- Van der Pol ------------------------------------------------------------------


VDP_T1 = 2.0
# IVP Test Set, problem VDPOL (eps = 1e-6, y0 = (2, 0)), y(2).
VDP_PUBLISHED_1E6 = np.array([0.1706167732170483e01, -0.8928097010247975e00])


def vdp_rhs(mu):
    def rhs(y, xp):
        return xp.stack([y[1], mu * ((1 - y[0] ** 2) * y[1] - y[0])])

    return rhs


def vdp_jac(mu):
    def jac(t, y):
        return np.array(
            [[0.0, 1.0], [mu * (-2 * y[0] * y[1] - 1), mu * (1 - y[0] ** 2)]]
        )

    return jac


def vdp_problem(mu, key):
    rhs = vdp_rhs(mu)
    common = dict(
        title=f"Van der Pol, mu = 1e{round(np.log10(mu))}: y1' = y2, "
        "y2' = mu ((1 - y1^2) y2 - y1), y0 = (2, 0), t in [0, 2]",
        vector_field=_for_jax(rhs),
        rhs=_for_numpy(rhs),
        jac=vdp_jac(mu),
        y0=np.array([2.0, 0.0]),
        t1=VDP_T1,
    )
    form = (
        "This is Hairer's time-scaled form (eps = 1/mu): in it the period is "
        "(3 - 2 ln 2) + O(mu^-2/3) ~ 1.6 whatever mu, so t in [0, 2] covers one full "
        "period with both relaxation jumps (the period (3 - 2 ln 2) mu belongs to the "
        "unscaled Lienard form y2' = mu (1 - y1^2) y2 - y1)"
    )
    if mu == 1e6:
        return StiffProblem(
            key=key,
            check_runs=(ScipyRun("LSODA", 1e-13, 1e-13),),
            published=VDP_PUBLISHED_1E6,
            published_source="IVP Test Set, VDPOL",
            remarks=form + ". scipy BDF fails at rtol 1e-13 on this problem",
            **common,
        )
    return StiffProblem(
        key=key,
        check_runs=(ScipyRun("DOP853", 1e-13, 1e-13), ScipyRun("LSODA", 1e-13, 1e-13)),
        remarks=form,
        **common,
    )


# --- Brusselator ------------------------------------------------------------------


BRUSS_N = 64  # interior grid points; y = (u_1..u_N, v_1..v_N)
BRUSS_ALPHA = 1 / 50
BRUSS_T1 = 10.0
BRUSS_U_BC, BRUSS_V_BC = 1.0, 3.0  # Dirichlet values at x = 0 and x = 1


def brusselator_rhs(n):
    inv_dx2 = float((n + 1) ** 2)

    def laplacian(w, boundary, xp):
        edge = xp.full((1,), boundary, dtype=w.dtype)
        padded = xp.concatenate([edge, w, edge])
        return inv_dx2 * (padded[:-2] - 2 * w + padded[2:])

    def rhs(y, xp):
        u, v = y[:n], y[n:]
        u2v = u * u * v
        du = 1 + u2v - 4 * u + BRUSS_ALPHA * laplacian(u, BRUSS_U_BC, xp)
        dv = 3 * u - u2v + BRUSS_ALPHA * laplacian(v, BRUSS_V_BC, xp)
        return xp.concatenate([du, dv])

    return rhs


def brusselator_jac(n):
    inv_dx2 = float((n + 1) ** 2)
    ones = np.ones(n - 1)
    lap = scipy.sparse.diags([ones, -2 * np.ones(n), ones], [-1, 0, 1]) * inv_dx2
    lap = BRUSS_ALPHA * lap

    def jac(t, y):
        u, v = y[:n], y[n:]
        diag = scipy.sparse.diags
        return scipy.sparse.bmat(
            [
                [diag(2 * u * v - 4) + lap, diag(u * u)],
                [diag(3 - 2 * u * v), diag(-u * u) + lap],
            ],
            format="csc",
        )

    return jac


def brusselator_problem(n=BRUSS_N):
    x = np.arange(1, n + 1) / (n + 1)
    rhs = brusselator_rhs(n)
    return StiffProblem(
        key="brusselator",
        title=f"1-D Brusselator (HW II, IV.1), alpha = 1/50, N = {n} interior points "
        f"({2 * n} unknowns), t in [0, {BRUSS_T1:g}]",
        vector_field=_for_jax(rhs),
        rhs=_for_numpy(rhs),
        jac=brusselator_jac(n),
        y0=np.concatenate([1 + np.sin(2 * np.pi * x), np.full(n, 3.0)]),
        t1=BRUSS_T1,
        check_runs=(ScipyRun("DOP853", 1e-13, 1e-13),),
        remarks=(
            "u_t = 1 + u^2 v - 4u + alpha u_xx, v_t = 3u - u^2 v + alpha v_xx, "
            "x_i = i/(N+1), Dirichlet u = 1, v = 3 at x = 0, 1, u(x, 0) = 1 + "
            "sin(2 pi x), v(x, 0) = 3; y = (u, v). scipy gets the sparse analytic "
            "Jacobian. Only mildly stiff at this N: the Jacobian's most negative "
            f"eigenvalue at t = 0 is about -{4 * BRUSS_ALPHA * (n + 1) ** 2 + 2:.0f}, "
            "so an explicit method is stability-bound to h ~ 0.01 (1e3 steps) at "
            "loose tols, while implicit methods take tens"
        ),
    )


PROBLEMS = {
    "robertson": robertson_problem,
    "vdp1e3": lambda: vdp_problem(1e3, "vdp1e3"),
    "vdp1e6": lambda: vdp_problem(1e6, "vdp1e6"),
    "brusselator": brusselator_problem,
}


def check_jacobian(problem, y=None):
    """Max relative difference between the analytic Jacobian and `jax.jacfwd` of the
    JAX vector field, at y (default: y0). Needs jax_enable_x64 for float64."""
    import jax

    y = problem.y0 if y is None else np.asarray(y)
    auto = np.asarray(jax.jacfwd(lambda z: problem.vector_field(0.0, z, None))(
        jnp.asarray(y)))
    analytic = _dense(problem.jac)(0.0, y)
    return float(np.max(np.abs(auto - analytic)) / max(np.max(np.abs(analytic)), 1.0))


def main():
    import jax

    jax.config.update("jax_enable_x64", True)
    for key, make in PROBLEMS.items():
        problem = make()
        print(f"\n{key}: {problem.title}")
        print(f"  reference {np.array2string(problem.reference, threshold=8)}")
        print(f"  {problem.reference_note}")
        f_jax = np.asarray(problem.vector_field(0.0, jnp.asarray(problem.reference),
                                                None))
        f_np = problem.rhs(0.0, problem.reference)
        print(f"  jnp vs numpy rhs at the reference: max |diff| "
              f"{np.max(np.abs(f_jax - f_np)):.1e}")
        print(f"  analytic Jacobian vs jax.jacfwd: {check_jacobian(problem):.1e} at "
              f"y0, {check_jacobian(problem, problem.reference):.1e} at the reference")


if __name__ == "__main__":
    main()
