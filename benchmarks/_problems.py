"""The problems of the benchmark scripts, each defined once (a module, not a script).

Non-stiff, as `Problem`s (a JAX vector field, heyoka's form of the same system, y0, t1,
and a reference state at t1 computed on first use, with a note on how it was checked):

- `kepler_problem`: Kepler, e = 0.9, 10 periods from pericentre, exact reference
  (Kepler's equation in mpmath), cross-checked with heyoka in real128;
  `kepler_newton_problem`: e = 0.5 with a float64 Newton reference (bench_explicit);
  `kepler_pericentre_state` for batches of eccentricities (bench_batch, bench_switch);
  `kepler_with_mu` and `kepler_exact_from_state` for gradients (bench_sensitivity);
- `lorenz_problem`: Lorenz, t in [0, 5], heyoka real128 reference checked by an mpmath
  Taylor method; `lorenz_long_double_problem` (t1 = 10, heyoka in long double);
- `arenstorf_problem`: the Arenstorf orbit, one period, heyoka real128 reference;
- `pleiades_problem`: the 7-body Pleiades problem (HNW), t in [0, 3], vectorised;
  `pleiades_scalar_loops`: the same field written body by body (bench_scalar_field);
- `coefficient_fields`: the fields of bench_engine (Kepler, Lorenz, an N-body field, an
  oscillator chain, a tanh MLP) with their points of expansion.

Stiff, as `StiffProblem`s (`STIFF`): Robertson, Van der Pol mu = 1e3 and 1e6, a 1-D
Brusselator, HIRES, POLLU (20 species) and the Oregonator; each right-hand side written
once against an array namespace and used with `jax.numpy` (diffrax) and NumPy (scipy,
CVODE), analytic Jacobians (`check_jacobian` compares them with `jax.jacfwd`),
references from scipy Radau at rtol 1e-13 cross-checked with a second scipy solver or
Radau at rtol 1e-12 and, where published, the IVP Test Set's values (ROBER, VDPOL,
HIRES, POLLU). HIRES and POLLU are compared by the relative error floored at atol/rtol
(`floored_relative_errors`), Robertson by the pure relative error.

heyoka is imported only where a heyoka system or reference is built.
"""

import dataclasses
import functools
import time
from collections.abc import Callable

import _harness as h
import equinox as eqx
import jax
import jax.numpy as jnp
import mpmath
import numpy as np


def _heyoka():
    import heyoka

    return heyoka


@dataclasses.dataclass(frozen=True)
class Problem:
    key: str  # the name on the command line
    title: str
    vector_field: Callable  # f(t, y, args) with jnp, for diffrax
    heyoka_system: Callable  # () -> [(variable, right-hand side), ...], same order as y0
    y0: np.ndarray  # float64
    t1: float  # float64; t0 = 0
    # () -> (the state at t1 of the float64 problem (y0, t1), a note on how it was got
    # and checked); called once, on first use of `reference` or `reference_note`.
    make_reference: Callable

    @functools.cached_property
    def _reference(self):
        return self.make_reference()

    @property
    def reference(self):
        return self._reference[0]

    @property
    def reference_note(self):
        return self._reference[1]


def heyoka_reference(system, y0, t1, fp_type):
    """The state at t1 from heyoka in extended/quad precision (compact mode, which
    compiles in well under a second where the default mode takes minutes in real128),
    started from the float64 y0 and stopped at the float64 t1: (state, order, tol)."""
    hy = _heyoka()
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


def checked_heyoka_reference(system, y0, t1):
    """`heyoka_reference` in real128, and how far heyoka in long double is from it:
    (state, order, mixed error of the long-double state)."""
    hy = _heyoka()
    reference, order, _ = heyoka_reference(system, y0, t1, hy.real128)
    ld, _, _ = heyoka_reference(system, y0, t1, np.longdouble)
    return reference, order, h.mixed_error(ld, reference)


def dop853_solution(problem, tol=1e-14):
    """The state at t1 from scipy's DOP853 at rtol = atol = tol (a reference candidate
    for `bench_control.py --check-references`; scipy raises rtol to 100 eps)."""
    from scipy.integrate import solve_ivp

    f = jax.jit(problem.vector_field)
    sol = solve_ivp(
        lambda t, y: np.asarray(f(t, y, None)),
        (0.0, problem.t1),
        problem.y0,
        method="DOP853",
        rtol=tol,
        atol=tol,
    )
    return sol.y[:, -1]


# --- Kepler -------------------------------------------------------------------------


KEPLER_E = 0.9
KEPLER_PERIODS = 10


def kepler(t, y, args):
    q, p = y[:2], y[2:]
    r3 = jnp.sum(q**2) ** 1.5
    return jnp.concatenate([p, -q / r3])


def kepler_heyoka():
    x, y, vx, vy = _heyoka().make_vars("x", "y", "vx", "vy")
    r3 = (x**2 + y**2) ** 1.5
    return [(x, vx), (y, vy), (vx, -x / r3), (vy, -y / r3)]


def kepler_pericentre_state(e, xp=np):
    """(1 - e, 0, 0, sqrt((1 + e)/(1 - e))): the pericentre state of the orbit with
    semi-major axis 1 (period 2 pi) and eccentricity e; for an array of e, one row per
    orbit. `xp`: numpy, or jax.numpy (then e may be traced)."""
    return xp.stack([1 - e, 0.0 * e, 0.0 * e, xp.sqrt((1 + e) / (1 - e))], axis=-1)


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
    """Kepler, e = 0.9, 10 periods from pericentre (bench_control, bench_workprecision,
    bench_compile)."""
    e = KEPLER_E
    y0 = kepler_pericentre_state(e)
    t1 = KEPLER_PERIODS * 2 * np.pi

    def make_reference():
        reference = kepler_exact_from_apsis(y0, t1)
        r128, _, _ = heyoka_reference(kepler_heyoka, y0, t1, _heyoka().real128)
        note = (
            "exact solution of the float64 problem: the Kepler orbit through the float64 "
            "y0 (its own a and e, in mpmath), at the float64 t1, by Kepler's equation; "
            f"heyoka real128 (tol 1e-33) agrees to {h.mixed_error(r128, reference):.1e}. "
            f"Plain periodicity (y(t1) = y0) is off by {h.mixed_error(y0, reference):.1e} "
            "(rounding of y0 and of t1 = 20 pi), so it is no reference below tol ~ 1e-11"
        )
        return reference, note

    return Problem(
        key="kepler",
        title=f"Kepler, e = {e}, {KEPLER_PERIODS} periods from pericentre "
        f"(t1 = {t1:.6g})",
        vector_field=kepler,
        heyoka_system=kepler_heyoka,
        y0=y0,
        t1=t1,
        make_reference=make_reference,
    )


def kepler_exact_newton(t, e):
    """The exact orbit from pericentre (unit semi-major axis) at time t, by Newton's
    method on Kepler's equation in float64."""
    M = np.mod(t, 2 * np.pi)
    E = M + e * np.sin(M)
    for _ in range(50):
        E = E - (E - e * np.sin(E) - M) / (1 - e * np.cos(E))
    b = np.sqrt(1 - e**2)
    Edot = 1 / (1 - e * np.cos(E))
    return np.array(
        [np.cos(E) - e, b * np.sin(E), -np.sin(E) * Edot, b * np.cos(E) * Edot]
    )


def kepler_newton_problem(e, periods):
    """Kepler from pericentre with the float64 Newton reference (bench_explicit)."""
    t1 = periods * 2 * np.pi
    return Problem(
        key="kepler",
        title=f"Kepler, e = {e}, {periods} periods (t1 = {t1:.4g})",
        vector_field=kepler,
        heyoka_system=kepler_heyoka,
        y0=kepler_pericentre_state(e),
        t1=t1,
        make_reference=lambda: (
            kepler_exact_newton(t1, e),
            "exact solution (Kepler's equation solved by Newton's method)",
        ),
    )


def kepler_with_mu(t, y, mu):
    """Kepler with the gravitational parameter as the argument (bench_sensitivity)."""
    q, p = y[:2], y[2:]
    return jnp.concatenate([p, -mu * q / jnp.sum(q**2) ** 1.5])


def kepler_exact_from_state(z, time, dps=50):
    """The exact state at `time` of the Kepler orbit through the state z[:4] at t = 0
    with mu = z[4] (elliptic, any orientation), in mpmath: orbital elements from the
    state, Kepler's equation by Newton's method, back to Cartesian coordinates."""
    with mpmath.workdps(dps):
        x, y, vx, vy, mu = [mpmath.mpf(c) for c in z]
        t = mpmath.mpf(time)
        r = mpmath.sqrt(x**2 + y**2)
        v2 = vx**2 + vy**2
        a = 1 / (2 / r - v2 / mu)
        h = x * vy - y * vx
        rv = x * vx + y * vy
        ex = ((v2 - mu / r) * x - rv * vx) / mu
        ey = ((v2 - mu / r) * y - rv * vy) / mu
        e = mpmath.sqrt(ex**2 + ey**2)
        w = mpmath.atan2(ey, ex)
        n = mpmath.sqrt(mu / a**3)
        E0 = mpmath.atan2(rv / mpmath.sqrt(mu * a), 1 - r / a)  # e sin E, e cos E
        M = E0 - e * mpmath.sin(E0) + n * t
        M -= 2 * mpmath.pi * mpmath.floor(M / (2 * mpmath.pi) + mpmath.mpf(1) / 2)
        En = M
        for _ in range(100):
            En -= (En - e * mpmath.sin(En) - M) / (1 - e * mpmath.cos(En))
        s = mpmath.sign(h)
        b = a * mpmath.sqrt(1 - e**2)
        Edot = n / (1 - e * mpmath.cos(En))
        xp, yp = a * (mpmath.cos(En) - e), s * b * mpmath.sin(En)
        vxp, vyp = -a * mpmath.sin(En) * Edot, s * b * mpmath.cos(En) * Edot
        cw, sw = mpmath.cos(w), mpmath.sin(w)
        return [cw * xp - sw * yp, sw * xp + cw * yp, cw * vxp - sw * vyp, sw * vxp + cw * vyp]


# --- Lorenz -------------------------------------------------------------------------


LORENZ_SIGMA, LORENZ_RHO, LORENZ_BETA = 10.0, 28.0, 8.0 / 3.0  # float64, in both fields
LORENZ_T1 = 5.0


def lorenz(t, y, args):
    x, y_, z = y[0], y[1], y[2]
    return jnp.stack(
        [
            LORENZ_SIGMA * (y_ - x),
            x * (LORENZ_RHO - z) - y_,
            x * y_ - LORENZ_BETA * z,
        ]
    )


def lorenz_heyoka():
    x, y, z = _heyoka().make_vars("x", "y", "z")
    return [
        (x, LORENZ_SIGMA * (y - x)),
        (y, x * (LORENZ_RHO - z) - y),
        (z, x * y - LORENZ_BETA * z),
    ]


def lorenz_mpmath_taylor(y0, t1, *, steps=500, order=30, dps=40):
    """Fixed-step Taylor method in mpmath (the Lorenz recurrences written out), from the
    float64 y0 with the float64 parameters: an independent check of heyoka's real128
    reference. 500 steps of h = 0.01 at order 30: truncation ~ (h/rho)^30, far below
    float64 at this radius of convergence (rho ~ 0.1)."""
    with mpmath.workdps(dps):
        s, r, b = (mpmath.mpf(v) for v in (LORENZ_SIGMA, LORENZ_RHO, LORENZ_BETA))
        x, y, z = (mpmath.mpf(float(v)) for v in y0)
        h = mpmath.mpf(t1) / steps
        for _ in range(steps):
            X, Y, Z = [x], [y], [z]
            for k in range(order):
                xz = mpmath.fsum(X[i] * Z[k - i] for i in range(k + 1))
                xy = mpmath.fsum(X[i] * Y[k - i] for i in range(k + 1))
                X.append(s * (Y[k] - X[k]) / (k + 1))
                Y.append((r * X[k] - xz - Y[k]) / (k + 1))
                Z.append((xy - b * Z[k]) / (k + 1))
            x, y, z = (mpmath.polyval(c[::-1], h) for c in (X, Y, Z))
        return np.array([float(x), float(y), float(z)])


def lorenz_problem():
    """Lorenz, y0 = (1, 1, 1), t in [0, 5] (bench_workprecision)."""
    y0, t1 = np.ones(3), LORENZ_T1

    def make_reference():
        reference, order, agreement = checked_heyoka_reference(lorenz_heyoka, y0, t1)
        mp = lorenz_mpmath_taylor(y0, t1)
        note = (
            f"heyoka in real128 (tol 1e-33, order {order}) from the float64 y0 to t1 = 5; "
            "an independent fixed-step Taylor method in mpmath (Lorenz recurrences, order "
            f"30, 500 steps, 40 digits) agrees to {h.mixed_error(mp, reference):.1e} and "
            f"heyoka in long double (tol 1e-19) to {agreement:.1e} "
            "(after rounding to float64). Lorenz is chaotic (largest Lyapunov exponent "
            "~0.9): an error made early grows ~e^4.5 ~ 90-fold by t = 5"
        )
        return reference, note

    return Problem(
        key="lorenz",
        title="Lorenz, sigma = 10, rho = 28, beta = 8/3, y0 = (1, 1, 1), t in [0, 5]",
        vector_field=lorenz,
        heyoka_system=lorenz_heyoka,
        y0=y0,
        t1=t1,
        make_reference=make_reference,
    )


def lorenz_long_double_reference(y0, t1):
    """The state at t1: heyoka in long double (default mode, tol = its epsilon) if
    heyoka is installed, else scipy DOP853 at 1e-13: (state, note)."""
    try:
        hy = _heyoka()
    except ImportError:
        hy = None
    if hy is not None:
        ld = np.longdouble
        tol = np.finfo(ld).eps
        ta = hy.taylor_adaptive(lorenz_heyoka(), y0.astype(ld), tol=tol, fp_type=ld)
        ta.propagate_until(ld(t1))
        note = (
            f"heyoka in long double ({np.finfo(ld).nmant + 1}-bit significand) at "
            f"tol = {tol:.1e} (order {ta.order})"
        )
        return ta.state.astype(np.float64), note

    from scipy.integrate import solve_ivp

    f = jax.jit(lorenz)
    sol = solve_ivp(
        lambda t, y: np.asarray(f(t, y, None)),
        (0.0, t1),
        y0,
        method="DOP853",
        rtol=1e-13,
        atol=1e-13,
    )
    note = "scipy solve_ivp DOP853, rtol = atol = 1e-13 (heyoka not installed)"
    return sol.y[:, -1], note


def lorenz_long_double_problem(t1):
    """Lorenz, y0 = (1, 1, 1), to t1, long double reference (bench_explicit)."""
    y0 = np.array([1.0, 1.0, 1.0])
    return Problem(
        key="lorenz",
        title=f"Lorenz, sigma = 10, rho = 28, beta = 8/3, y0 = (1, 1, 1), t1 = {t1:g}",
        vector_field=lorenz,
        heyoka_system=lorenz_heyoka,
        y0=y0,
        t1=t1,
        make_reference=lambda: lorenz_long_double_reference(y0, t1),
    )


# --- Arenstorf ----------------------------------------------------------------------


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
    x, y, vx, vy = _heyoka().make_vars("x", "y", "vx", "vy")
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

    def make_reference():
        reference, order, agreement = checked_heyoka_reference(arenstorf_heyoka, y0, t1)
        note = (
            f"heyoka in real128 (tol 1e-33, order {order}) from the float64 y0 to the "
            f"float64 T; heyoka in long double (tol 1e-19) agrees to "
            f"{agreement:.1e}. Plain periodicity (y(T) = y0) is off by "
            f"{h.mixed_error(y0, reference):.1e} (mu, y0 and T rounded to float64; the "
            "orbit amplifies perturbations ~1e5-fold), so it is no reference below tol "
            "~ 1e-9"
        )
        return reference, note

    return Problem(
        key="arenstorf",
        title=f"Arenstorf orbit (restricted three-body, mu = {ARENSTORF_MU}), "
        f"one period (t1 = {t1:.6g})",
        vector_field=arenstorf,
        heyoka_system=arenstorf_heyoka,
        y0=y0,
        t1=t1,
        make_reference=make_reference,
    )


# --- Pleiades -----------------------------------------------------------------------


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


def pleiades_scalar_loops(t, y, args):
    """The same field written body by body with Python loops, as it is often written:
    hundreds of scalar operations (bench_scalar_field)."""
    x, yy, vx, vy = y[0:7], y[7:14], y[14:21], y[21:28]
    ax, ay = [], []
    for i in range(7):
        axi = ayi = 0.0
        for j in range(7):
            if i != j:
                dx, dy = x[j] - x[i], yy[j] - yy[i]
                r3 = (dx * dx + dy * dy) ** 1.5
                axi = axi + (j + 1) * dx / r3
                ayi = ayi + (j + 1) * dy / r3
        ax.append(axi)
        ay.append(ayi)
    return jnp.concatenate([vx, vy, jnp.stack(ax), jnp.stack(ay)])


def pleiades_heyoka():
    hy = _heyoka()
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

    def make_reference():
        reference, order, agreement = checked_heyoka_reference(pleiades_heyoka, y0, t1)
        note = (
            f"heyoka in real128 (tol 1e-33, order {order}); heyoka in long double "
            f"(tol 1e-19) agrees to {agreement:.1e}. scipy DOP853 at "
            "rtol = atol = 1e-14 is off by ~3e-12 and heyoka in float64 at tol 1e-16 to "
            "1e-18 by 3e-13 to 1e-12 (roundoff): neither would do at tol 1e-14 (see "
            "`--check-references`)"
        )
        return reference, note

    return Problem(
        key="pleiades",
        title="Pleiades, 7 bodies in the plane (HNW), t in [0, 3]",
        vector_field=pleiades,
        heyoka_system=pleiades_heyoka,
        y0=y0,
        t1=t1,
        make_reference=make_reference,
    )


def pleiades_loops_problem():
    """Pleiades with the field written body by body (`pleiades_scalar_loops`); the same
    y0, t1 and reference as `pleiades_problem`."""
    base = pleiades_problem()
    return dataclasses.replace(
        base,
        key="pleiades-loops",
        title=base.title + ", field written with Python loops",
        vector_field=pleiades_scalar_loops,
    )


# --- Outer solar system -------------------------------------------------------------

# Hairer, Lubich & Wanner, "Geometric Numerical Integration" (2006), section I.2.4:
# the Sun (with the inner planets' masses) and Jupiter, Saturn, Uranus, Neptune and
# Pluto, in 3D; units: AU, days, solar masses; initial state of 5 September 1994.
OUTER_G = 2.95912208286e-4
OUTER_MASSES = np.array(
    [1.00000597682, 0.000954786104043, 0.000285583733151, 0.0000437273164546,
     0.0000517759138449, 1 / 1.3e8]
)
OUTER_N = OUTER_MASSES.size
OUTER_EYE = np.eye(OUTER_N)
OUTER_WEIGHTS = OUTER_G * OUTER_MASSES[None, :] * (1 - OUTER_EYE)  # G m_j, 0 on i == j
OUTER_Q0 = np.array([
    [0.0, 0.0, 0.0],
    [-3.5023653, -3.8169847, -1.5507963],
    [9.0755314, -3.0458353, -1.6483708],
    [8.3101420, -16.2901086, -7.2521278],
    [11.4707666, -25.7294829, -10.8169456],
    [-15.5387357, -25.2225594, -3.1902382],
])
OUTER_V0 = np.array([
    [0.0, 0.0, 0.0],
    [0.00565429, -0.00412490, -0.00190589],
    [0.00168318, 0.00483525, 0.00192462],
    [0.00354178, 0.00137102, 0.00055029],
    [0.00288930, 0.00114527, 0.00039677],
    [0.00276725, -0.00170702, -0.00136504],
])
OUTER_Y0 = np.concatenate([OUTER_Q0.ravel(), OUTER_V0.ravel()])  # q_0, q_1, ..., then v
OUTER_T1 = 200_000.0  # days (as in HLW): 46 orbits of Jupiter, 2.2 of Pluto


def outer_solar_system(t, y, args):
    """q_i'' = sum_{j != i} G m_j (q_j - q_i) / |q_j - q_i|^3, vectorised: pairwise
    differences by broadcasting; the diagonal gets r^2 = 1 and weight 0."""
    n = OUTER_N
    q = y[: 3 * n].reshape(n, 3)
    d = q[None, :, :] - q[:, None, :]  # d[i, j] = q_j - q_i
    r2 = jnp.sum(d**2, axis=2) + OUTER_EYE
    w = OUTER_WEIGHTS * r2**-1.5
    acc = jnp.sum(w[:, :, None] * d, axis=1)  # (n, 3)
    return jnp.concatenate([y[3 * n :], acc.reshape(-1)])


def outer_solar_system_loops(t, y, args):
    """The same field written body by body with Python loops."""
    n = OUTER_N
    acc = []
    for i in range(n):
        a = [0.0, 0.0, 0.0]
        for j in range(n):
            if i != j:
                d = [y[3 * j + c] - y[3 * i + c] for c in range(3)]
                r3 = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) ** 1.5
                a = [a[c] + float(OUTER_WEIGHTS[i, j]) * d[c] / r3 for c in range(3)]
        acc.extend(a)
    return jnp.concatenate([y[3 * n :], jnp.stack(acc)])


def outer_solar_system_heyoka():
    hy = _heyoka()
    n = OUTER_N
    q = [hy.make_vars(*[f"q{i}{c}" for c in "xyz"]) for i in range(n)]
    v = [hy.make_vars(*[f"v{i}{c}" for c in "xyz"]) for i in range(n)]
    out = []
    for i in range(n):
        out += [(q[i][c], v[i][c]) for c in range(3)]
    for i in range(n):
        terms = [[], [], []]
        for j in range(n):
            if i != j:
                d = [q[j][c] - q[i][c] for c in range(3)]
                w = OUTER_WEIGHTS[i, j] * (d[0] ** 2 + d[1] ** 2 + d[2] ** 2) ** -1.5
                for c in range(3):
                    terms[c].append(w * d[c])
        out += [(v[i][c], hy.sum(terms[c])) for c in range(3)]
    return out


def outer_solar_system_problem(loops=False):
    y0, t1 = OUTER_Y0, OUTER_T1

    def make_reference():
        reference, order, agreement = checked_heyoka_reference(outer_solar_system_heyoka, y0, t1)
        note = (
            f"heyoka in real128 (tol 1e-33, order {order}); heyoka in long double "
            f"(tol 1e-19) agrees to {agreement:.1e}"
        )
        return reference, note

    return Problem(
        key="outer-loops" if loops else "outer",
        title=f"Outer solar system (HLW), 6 bodies in 3D, t in [0, {t1:g}] days"
        + (", field written with Python loops" if loops else ""),
        vector_field=outer_solar_system_loops if loops else outer_solar_system,
        heyoka_system=outer_solar_system_heyoka,
        y0=y0,
        t1=t1,
        make_reference=make_reference,
    )


NONSTIFF = {
    "kepler": kepler_problem,
    "lorenz": lorenz_problem,
    "arenstorf": arenstorf_problem,
    "pleiades": pleiades_problem,
}


# --- Fields for the coefficient engine (bench_engine) -------------------------------


def nbody(t, y, args):
    """7 bodies in 3D would be 42 coordinates; 28 = 7 bodies in 2D, positions+velocities,
    unit masses."""
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


def fput(t, y, args):
    """The Fermi-Pasta-Ulam-Tsingou beta chain, 32 masses with fixed ends:
    x_i'' = F(x_{i+1} - x_i) - F(x_i - x_{i-1}), F(d) = d + d^3 (cubic springs)."""
    x, v = y[:32], y[32:]
    d = jnp.diff(jnp.concatenate([jnp.zeros(1, y.dtype), x, jnp.zeros(1, y.dtype)]))
    force = d + d**3
    return jnp.concatenate([v, force[1:] - force[:-1]])


def make_mlp():
    """A tanh MLP on R^8 (width 32, depth 2) as a vector field."""
    mlp = eqx.nn.MLP(8, 8, 32, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    return lambda t, y, args: mlp(y)


def coefficient_fields():
    """[(name, field, y)]: the fields of bench_engine and the points at which their
    coefficients are computed."""
    rng = np.random.default_rng(0)
    return [
        ("Kepler (4)", kepler, jnp.array([0.5, 0.0, 0.0, 1.7])),
        ("Lorenz (3)", lorenz, jnp.array([1.0, 1.0, 1.0])),
        ("N-body (28)", nbody, jnp.asarray(np.concatenate([3 * rng.normal(size=14), 0.3 * rng.normal(size=14)]))),
        ("chain (100)", chain, jnp.asarray(0.1 * rng.normal(size=100))),
        ("MLP tanh (8)", make_mlp(), jnp.asarray(0.5 * rng.normal(size=8))),
    ]


# --- Stiff problems -----------------------------------------------------------------


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
    # A short name for summary tables.
    label: str = ""
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
    # (lower, upper): the Jacobian's bandwidths where it is banded in this layout (for
    # the banded linear solvers), else None.
    band: tuple[int, int] | None = None

    def solve(self, run, **kwargs):
        """`solve_ivp` from 0 to t1 with run's method and tolerances and the analytic
        Jacobian (none for explicit methods); raises if scipy does not reach t1."""
        from scipy.integrate import solve_ivp

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
                text = f"{label} to {h.mixed_error(y, ref):.1e}"
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
    import scipy.sparse

    def dense(t, y):
        j = jac(t, y)
        return j.toarray() if scipy.sparse.issparse(j) else j

    return dense


def _for_jax(f):
    return lambda t, y, args: f(y, jnp)


def _for_numpy(f):
    return lambda t, y: f(y, np)


# Robertson -------------------------------------------------------------------------


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
        label="Robertson to t = 1e11",
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


# Van der Pol -----------------------------------------------------------------------


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
    exponent = round(np.log10(mu))
    common = dict(
        title=f"Van der Pol, mu = 1e{exponent}: y1' = y2, "
        "y2' = mu ((1 - y1^2) y2 - y1), y0 = (2, 0), t in [0, 2]",
        label=f"Van der Pol, mu = 1e{exponent}",
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


# Brusselator -----------------------------------------------------------------------


BRUSS_N = 64  # interior grid points; y = (u_1..u_N, v_1..v_N)
BRUSS_ALPHA = 1 / 50
BRUSS_T1 = 10.0
BRUSS_U_BC, BRUSS_V_BC = 1.0, 3.0  # Dirichlet values at x = 0 and x = 1


def _bruss_split(n, interleaved):
    """(y -> (u, v), (du, dv, xp) -> y'): species by species, y = (u_1..u_N, v_1..v_N),
    or point by point, y = (u_1, v_1, u_2, v_2, ...), whose Jacobian is banded with
    bandwidths (2, 2)."""
    if interleaved:
        return (lambda y: (y[0::2], y[1::2])), (lambda du, dv, xp: xp.stack([du, dv], axis=-1).reshape(-1))
    return (lambda y: (y[:n], y[n:])), (lambda du, dv, xp: xp.concatenate([du, dv]))


def brusselator_rhs(n, interleaved=False):
    inv_dx2 = float((n + 1) ** 2)
    split, join = _bruss_split(n, interleaved)

    def laplacian(w, boundary, xp):
        edge = xp.full((1,), boundary, dtype=w.dtype)
        padded = xp.concatenate([edge, w, edge])
        return inv_dx2 * (padded[:-2] - 2 * w + padded[2:])

    def rhs(y, xp):
        u, v = split(y)
        u2v = u * u * v
        du = 1 + u2v - 4 * u + BRUSS_ALPHA * laplacian(u, BRUSS_U_BC, xp)
        dv = 3 * u - u2v + BRUSS_ALPHA * laplacian(v, BRUSS_V_BC, xp)
        return join(du, dv, xp)

    return rhs


def brusselator_jac(n, interleaved=False):
    import scipy.sparse

    inv_dx2 = float((n + 1) ** 2)
    ones = np.ones(n - 1)
    lap = scipy.sparse.diags([ones, -2 * np.ones(n), ones], [-1, 0, 1]) * inv_dx2
    lap = BRUSS_ALPHA * lap
    split, _ = _bruss_split(n, interleaved)
    # Point-by-point order: y_interleaved = y_blocks[order].
    order = np.stack([np.arange(n), n + np.arange(n)], axis=-1).reshape(-1)

    def jac(t, y):
        u, v = split(y)
        diag = scipy.sparse.diags
        blocks = scipy.sparse.bmat(
            [
                [diag(2 * u * v - 4) + lap, diag(u * u)],
                [diag(3 - 2 * u * v), diag(-u * u) + lap],
            ],
            format="csr",
        )
        return (blocks[order][:, order] if interleaved else blocks).tocsc()

    return jac


def _bruss_lambda(n):
    """About the most negative eigenvalue of the Brusselator's Jacobian at t = 0."""
    return 4 * BRUSS_ALPHA * (n + 1) ** 2 + 2


def brusselator_problem(n=BRUSS_N, key="brusselator", interleaved=False):
    x = np.arange(1, n + 1) / (n + 1)
    rhs = brusselator_rhs(n, interleaved)
    u0, v0 = 1 + np.sin(2 * np.pi * x), np.full(n, 3.0)
    # On a fine grid an explicit cross-check would take ~1e5 steps: a second Radau run.
    check = ScipyRun("DOP853", 1e-13, 1e-13) if n <= BRUSS_N else ScipyRun("Radau", 1e-12, 1e-12)
    return StiffProblem(
        key=key,
        title=f"1-D Brusselator (HW II, IV.1), alpha = 1/50, N = {n} interior points "
        f"({2 * n} unknowns), t in [0, {BRUSS_T1:g}]",
        label=f"Brusselator, {2 * n} unknowns",
        vector_field=_for_jax(rhs),
        rhs=_for_numpy(rhs),
        jac=brusselator_jac(n, interleaved),
        y0=np.stack([u0, v0], axis=-1).reshape(-1) if interleaved else np.concatenate([u0, v0]),
        band=(2, 2) if interleaved else None,
        t1=BRUSS_T1,
        check_runs=(check,),
        remarks=(
            "u_t = 1 + u^2 v - 4u + alpha u_xx, v_t = 3u - u^2 v + alpha v_xx, "
            "x_i = i/(N+1), Dirichlet u = 1, v = 3 at x = 0, 1, u(x, 0) = 1 + "
            "sin(2 pi x), v(x, 0) = 3; "
            + ("y = (u_1, v_1, u_2, v_2, ...), so the Jacobian is banded with bandwidths (2, 2). "
               if interleaved else "y = (u, v). ")
            + "scipy gets the sparse analytic "
            f"Jacobian. {'Only mildly stiff' if n <= BRUSS_N else 'Stiff'} at this N: "
            "the Jacobian's most negative "
            f"eigenvalue at t = 0 is about -{_bruss_lambda(n):.0f}, "
            f"so an explicit method is stability-bound to h ~ {2 / _bruss_lambda(n):.0e} "
            f"({BRUSS_T1 * _bruss_lambda(n) / 2:.0e} steps) at "
            "loose tols, while implicit methods take tens"
        ),
    )


# HIRES -----------------------------------------------------------------------------


HIRES_T1 = 321.8122
HIRES_Y0 = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057])
# IVP Test Set (Mazzia & Magherini), problem HIRES, y(321.8122).
HIRES_PUBLISHED = np.array(
    [
        0.7371312573325668e-3,
        0.1442485726316185e-3,
        0.5888729740967575e-4,
        0.1175651343283149e-2,
        0.2386356198831331e-2,
        0.6238968252742796e-2,
        0.2849998395185769e-2,
        0.2850001604814231e-2,
    ]
)
# atol = STIFF_KINETICS_ATOL_FACTOR tol (rtol = tol) for HIRES, POLLU and the
# Oregonator, and the floor of their relative errors (`floored_relative_errors`).
STIFF_KINETICS_ATOL_FACTOR = 1e-6


def hires_rhs(y, xp):
    y1, y2, y3, y4, y5, y6, y7, y8 = (y[i] for i in range(8))
    r = 280 * y6 * y8
    return xp.stack(
        [
            -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
            1.71 * y1 - 8.75 * y2,
            -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
            8.32 * y2 + 1.71 * y3 - 1.12 * y4,
            -1.745 * y5 + 0.43 * y6 + 0.43 * y7,
            -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
            r - 1.81 * y7,
            -r + 1.81 * y7,
        ]
    )


def hires_jac(t, y):
    j = np.array(
        [
            [-1.71, 0.43, 8.32, 0, 0, 0, 0, 0],
            [1.71, -8.75, 0, 0, 0, 0, 0, 0],
            [0, 0, -10.03, 0.43, 0.035, 0, 0, 0],
            [0, 8.32, 1.71, -1.12, 0, 0, 0, 0],
            [0, 0, 0, 0, -1.745, 0.43, 0.43, 0],
            [0, 0, 0, 0.69, 1.71, -0.43, 0.69, 0],
            [0, 0, 0, 0, 0, 0, -1.81, 0],
            [0, 0, 0, 0, 0, 0, 1.81, 0],
        ],
        dtype=np.float64,
    )
    # d(280 y6 y8) / dy6 and / dy8, in rows 6, 7, 8 with signs -, +, -.
    for row, sign in ((5, -1), (6, 1), (7, -1)):
        j[row, 5] += sign * 280 * y[7]
        j[row, 7] += sign * 280 * y[5]
    return j


def floored_relative_errors(floor):
    """(y, ref) -> {"floored rel err": max_i |y_i - ref_i| / (|ref_i| + floor),
    "max rel err": max_i |y_i - ref_i| / |ref_i|}: the first is the IVP Test Set's
    mixed measure ("mescd" = -log10 of it) with atol/rtol = floor, the relative error
    of every component above the floor; the second its pure relative error ("scd")."""

    def errors(y, ref):
        y = np.asarray(y, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        err = np.abs(y - ref)
        return {
            "floored rel err": float(np.max(err / (np.abs(ref) + floor))),
            "max rel err": float(np.max(err / np.abs(ref))),
        }

    return errors


def hires_problem():
    floor = STIFF_KINETICS_ATOL_FACTOR
    return StiffProblem(
        key="hires",
        title="HIRES (Schaefer 1975; HW II, IV.10), 8 species, "
        f"y0 = (1, 0, 0, 0, 0, 0, 0, 0.0057), t in [0, {HIRES_T1}]",
        label="HIRES",
        vector_field=_for_jax(hires_rhs),
        rhs=_for_numpy(hires_rhs),
        jac=hires_jac,
        y0=HIRES_Y0,
        t1=HIRES_T1,
        atol_factor=floor,
        reference_run=ScipyRun("Radau", 1e-13, 1e-19),
        check_runs=(ScipyRun("Radau", 1e-12, 1e-18),),
        published=HIRES_PUBLISHED,
        published_source="IVP Test Set, HIRES",
        remarks=(
            f"Every solver uses atol = {floor:g} tol (rtol = tol). The components at "
            "t1 lie between 5.9e-5 (y3) and 6.2e-3 (y6), so the mixed error is "
            "an absolute one there: **floored rel err** = max_i |y_i - ref_i| / "
            f"(|ref_i| + {floor:g}) (the IVP Test Set's mixed measure, mescd = "
            f"-log10 of it, with atol/rtol = {floor:g}; here within 2% of the "
            "pure relative error) is the error of the work-precision comparison; "
            "**max rel err** is the pure relative error (the test set's scd). "
            "y7 + y8 = 0.0057 is conserved"
        ),
        extra_errors=floored_relative_errors(floor),
        comparison_error="floored rel err",
    )


# POLLU -----------------------------------------------------------------------------


# Verwer (1994), as in the IVP Test Set (problem POLLU): 20 species, 25 reactions.
POLLU_K = np.array(
    [
        0.35e0, 0.266e2, 0.123e5, 0.86e-3, 0.82e-3, 0.15e5, 0.13e-3, 0.24e5, 0.165e5,
        0.9e4, 0.22e-1, 0.12e5, 0.188e1, 0.163e5, 0.48e7, 0.35e-3, 0.175e-1, 0.1e9,
        0.444e12, 0.124e4, 0.21e1, 0.578e1, 0.474e-1, 0.178e4, 0.312e1,
    ]
)
# The reactants of reaction k (0-based species indices): r_k = K_k prod_j y_j.
POLLU_REACTANTS = (
    (0,), (1, 3), (4, 1), (6,), (6,), (6, 5), (8,), (8, 5), (10, 1), (10, 0),
    (12,), (9, 1), (13,), (0, 5), (2,), (3,), (3,), (15,), (15,), (16, 5),
    (18,), (18,), (0, 3), (18, 0), (19,),
)
POLLU_T1 = 60.0
POLLU_Y0 = np.zeros(20)
POLLU_Y0[[1, 3, 6, 7, 8, 16]] = (0.2, 0.04, 0.1, 0.3, 0.01, 0.007)
# IVP Test Set, problem POLLU, y(60).
POLLU_PUBLISHED = np.array(
    [
        0.5646255480022769e-01, 0.1342484130422339e+00, 0.4139734331099427e-08,
        0.5523140207484359e-02, 0.2018977262302196e-06, 0.1464541863493966e-06,
        0.7784249118997964e-01, 0.3245075353396018e+00, 0.7494013383880406e-02,
        0.1622293157301561e-07, 0.1135863833257075e-07, 0.2230505975721359e-02,
        0.2087162882798630e-03, 0.1396921016840158e-04, 0.8964884856898295e-02,
        0.4352846369330103e-17, 0.6899219696263405e-02, 0.1007803037365946e-03,
        0.1772146513969984e-05, 0.5682943292316392e-04,
    ]
)


def pollu_rates(y, xp):
    """The 25 reaction rates r_k = K_k prod(y[j] for j in POLLU_REACTANTS[k])."""
    rates = []
    for k, species in zip(POLLU_K, POLLU_REACTANTS):
        r = float(k) * y[species[0]]
        for j in species[1:]:
            r = r * y[j]
        rates.append(r)
    return rates


def pollu_net(r, xp):
    """dy/dt from the rates r[0..24] (Verwer's equations, 1-based r as in the paper)."""
    r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13 = r[:13]
    r14, r15, r16, r17, r18, r19, r20, r21, r22, r23, r24, r25 = r[13:]
    return xp.stack(
        [
            -r1 - r10 - r14 - r23 - r24 + r2 + r3 + r9 + r11 + r12 + r22 + r25,
            -r2 - r3 - r9 - r12 + r1 + r21,
            -r15 + r1 + r17 + r19 + r22,
            -r2 - r16 - r17 - r23 + r15,
            -r3 + 2 * r4 + r6 + r7 + r13 + r20,
            -r6 - r8 - r14 - r20 + r3 + 2 * r18,
            -r4 - r5 - r6 + r13,
            r4 + r5 + r6 + r7,
            -r7 - r8,
            -r12 + r7 + r9,
            -r9 - r10 + r8 + r11,
            r9,
            -r11 + r10,
            -r13 + r12,
            r14,
            -r18 - r19 + r16,
            -r20,
            r20,
            -r21 - r22 - r24 + r23 + r25,
            -r25 + r24,
        ]
    )


def pollu_rhs(y, xp):
    return pollu_net(pollu_rates(y, xp), xp)


# The stoichiometric matrix (20 x 25): column k is dy/dt when r = e_k.
POLLU_STOICHIOMETRY = pollu_net(list(np.eye(25)), np)


def pollu_jac(t, y):
    """S dr/dy, with dr_k/dy_j = K_k prod of the other reactants of reaction k."""
    drdy = np.zeros((25, 20))
    for k, (rate, species) in enumerate(zip(POLLU_K, POLLU_REACTANTS)):
        for i, j in enumerate(species):
            others = species[:i] + species[i + 1 :]
            drdy[k, j] += rate * np.prod([y[m] for m in others])
    return POLLU_STOICHIOMETRY @ drdy


def pollu_problem():
    floor = STIFF_KINETICS_ATOL_FACTOR
    return StiffProblem(
        key="pollu",
        title="POLLU (Verwer 1994; IVP Test Set), air pollution kinetics, 20 species, "
        f"25 reactions, t in [0, {POLLU_T1:g}]",
        label="POLLU",
        vector_field=_for_jax(pollu_rhs),
        rhs=_for_numpy(pollu_rhs),
        jac=pollu_jac,
        y0=POLLU_Y0,
        t1=POLLU_T1,
        atol_factor=floor,
        reference_run=ScipyRun("Radau", 1e-13, 1e-20),
        check_runs=(ScipyRun("Radau", 1e-12, 1e-18),),
        published=POLLU_PUBLISHED,
        published_source="IVP Test Set, POLLU",
        remarks=(
            f"Every solver uses atol = {floor:g} tol (rtol = tol). The components at "
            "t1 span 4.4e-18 (y16) to 0.32 (y8), and the mixed error sees only the "
            "largest: **floored rel err** = max_i |y_i - ref_i| / "
            f"(|ref_i| + {floor:g}) (the IVP Test Set's mixed measure, mescd = "
            f"-log10 of it, with atol/rtol = {floor:g}: the relative error of the 15 "
            "components above 1e-6, absolute, scaled by 1e-6, below) is the error "
            "of the work-precision comparison; **max rel err** is the pure relative "
            "error (the test set's scd), y16 included"
        ),
        extra_errors=floored_relative_errors(floor),
        comparison_error="floored rel err",
    )


# Oregonator ------------------------------------------------------------------------


OREGO_S, OREGO_Q, OREGO_W = 77.27, 8.375e-6, 0.161
OREGO_T1 = 360.0


def oregonator_rhs(y, xp):
    y1, y2, y3 = y[0], y[1], y[2]
    return xp.stack(
        [
            OREGO_S * (y2 + y1 * (1 - OREGO_Q * y1 - y2)),
            (y3 - (1 + y1) * y2) / OREGO_S,
            OREGO_W * (y1 - y3),
        ]
    )


def oregonator_jac(t, y):
    s, q, w = OREGO_S, OREGO_Q, OREGO_W
    return np.array(
        [
            [s * (1 - 2 * q * y[0] - y[1]), s * (1 - y[0]), 0.0],
            [-y[1] / s, -(1 + y[0]) / s, 1 / s],
            [w, 0.0, -w],
        ]
    )


def oregonator_problem():
    factor = STIFF_KINETICS_ATOL_FACTOR
    return StiffProblem(
        key="oregonator",
        title="Oregonator (Field-Noyes; HW II, IV.1), y1' = 77.27 (y2 + y1 (1 - "
        "8.375e-6 y1 - y2)), y2' = (y3 - (1 + y1) y2) / 77.27, y3' = 0.161 (y1 - y3), "
        f"y0 = (1, 2, 3), t in [0, {OREGO_T1:g}]",
        label="Oregonator",
        vector_field=_for_jax(oregonator_rhs),
        rhs=_for_numpy(oregonator_rhs),
        jac=oregonator_jac,
        y0=np.array([1.0, 2.0, 3.0]),
        t1=OREGO_T1,
        atol_factor=factor,
        reference_run=ScipyRun("Radau", 1e-13, 1e-13 * factor),
        check_runs=(ScipyRun("Radau", 1e-12, 1e-12 * factor),),
        remarks=(
            f"Every solver uses atol = {factor:g} tol (rtol = tol): along the orbit "
            "y1 runs from 1 to 1.2e5, y2 from 3.0e-3 to 1.8e3, y3 from 1.0 to 3.1e4, "
            "so this is relative control throughout. At t1 (y = (1.0008, 1228, 132)) "
            "the mixed error is within a factor 2 of the relative error. A periodic "
            "relaxation oscillation (period about 300) with steep fronts, where an "
            "error in the phase shows up as a large error in the state"
        ),
    )


STIFF = {
    "robertson": robertson_problem,
    "vdp1e3": lambda: vdp_problem(1e3, "vdp1e3"),
    "vdp1e6": lambda: vdp_problem(1e6, "vdp1e6"),
    "brusselator": brusselator_problem,
    # The same PDE on method-of-lines grids with 1000 and 10,000 unknowns, ordered
    # point by point so that the Jacobian is banded (bandwidths 2 and 2).
    "brusselator1000": lambda: brusselator_problem(500, "brusselator1000", interleaved=True),
    "brusselator10000": lambda: brusselator_problem(5000, "brusselator10000", interleaved=True),
    "hires": hires_problem,
    "pollu": pollu_problem,
    "oregonator": oregonator_problem,
}


def check_jacobian(problem, y=None):
    """Max relative difference between the analytic Jacobian and `jax.jacfwd` of the
    JAX vector field, at y (default: y0)."""
    y = problem.y0 if y is None else np.asarray(y)
    auto = np.asarray(jax.jacfwd(lambda z: problem.vector_field(0.0, z, None))(
        jnp.asarray(y)))
    analytic = _dense(problem.jac)(0.0, y)
    return float(np.max(np.abs(auto - analytic)) / max(np.max(np.abs(analytic)), 1.0))
