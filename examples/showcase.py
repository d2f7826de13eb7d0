"""taylorode showcase: a Taylor-series solver next to diffrax's Dopri8.

Two orbits with known answers are solved at rtol = atol = 1e-12 by
`taylorode.Taylor()` (order 15, from the tolerance) with `taylorode.TaylorController`,
and by `diffrax.Dopri8()` with `diffrax.PIDController`, each inside `jax.jit`:

- the Kepler problem at eccentricity 0.5, against its exact solution;
- the Arenstorf orbit of the restricted three-body problem, a periodic orbit, against
  its own starting point one period later;
- a spring whose force saturates, `x'' = -jnp.clip(4 x, -0.5, 0.5)`, a vector field that
  switches four times a period (the Taylor steps end at the switches), against its
  exact piecewise solution.

For each solve the table gives the accepted and rejected steps, the compile time, the
best run time of a few calls after compiling, and the error.

Run with `python examples/showcase.py` (`--quick` for a shorter Kepler run).
"""

import argparse
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import taylorode


jax.config.update("jax_enable_x64", True)

RTOL = ATOL = 1e-12
REPEATS = 5


# --- Kepler problem: unit semi-major axis, period 2*pi, start at pericentre ---------


def kepler(t, y, args):
    q, p = y[:2], y[2:]
    r3 = jnp.sum(q**2) ** 1.5
    return jnp.concatenate([p, -q / r3])


def kepler_y0(e):
    return np.array([1 - e, 0.0, 0.0, np.sqrt((1 + e) / (1 - e))])


def kepler_exact(t, e):
    """The exact orbit from `kepler_y0(e)`, by Newton's method on Kepler's equation."""
    M = np.mod(t, 2 * np.pi)
    E = M + e * np.sin(M)
    for _ in range(50):
        E = E - (E - e * np.sin(E) - M) / (1 - e * np.cos(E))
    b = np.sqrt(1 - e**2)
    Edot = 1 / (1 - e * np.cos(E))
    return np.array(
        [np.cos(E) - e, b * np.sin(E), -np.sin(E) * Edot, b * np.cos(E) * Edot]
    )


# --- Arenstorf orbit: restricted three-body problem in the rotating frame -----------

ARENSTORF_MU = 0.012277471
ARENSTORF_Y0 = np.array([0.994, 0.0, 0.0, -2.00158510637908252240537862224])
ARENSTORF_PERIOD = 17.0652165601579625588917206249


def arenstorf(t, y, mu):
    x, yy, vx, vy = y
    mu1 = 1 - mu
    d1 = ((x + mu) ** 2 + yy**2) ** 1.5
    d2 = ((x - mu1) ** 2 + yy**2) ** 1.5
    ax = x + 2 * vy - mu1 * (x + mu) / d1 - mu * (x - mu1) / d2
    ay = yy - 2 * vx - mu1 * yy / d1 - mu * yy / d2
    return jnp.stack([vx, vy, ax, ay])


# --- Solving and timing ------------------------------------------------------------


# --- Saturated spring: x'' = -clip(4x, -1/2, 1/2), from x = 1 at rest ------------------


def saturated_spring(t, y, args):
    return jnp.stack([y[1], -jnp.clip(4 * y[0], -0.5, 0.5)])


def saturated_spring_exact(t1):
    """The exact state at `t1` from (1, 0): force -sign(x)/2 where |x| > 1/8, -4x
    inside, pieced together phase by phase (each phase ends on |x| = 1/8)."""
    x, v, t = 1.0, 0.0, 0.0
    saturated = True
    while True:
        if saturated:  # x'' = a = -sign(x)/2 until x is back at sign(x)/8
            a = -0.5 * np.sign(x)
            edge = np.sign(x) * 0.125
            root = np.sqrt(v * v - 2 * a * (x - edge))
            s = min(r for r in ((-v + root) / a, (-v - root) / a) if r > 0)
            if t + s >= t1:
                s = t1 - t
                return np.array([x + v * s + a * s * s / 2, v + a * s])
            x, v, t = edge, v + a * s, t + s
        else:  # x = amp cos(2s + phi) from x = x0 until x = -x0: 2s = pi - 2 phi
            amp, phi = np.hypot(x, v / 2), np.arctan2(-v / 2, x)
            s = ((np.pi - 2 * phi) % (2 * np.pi)) / 2
            if t + s >= t1:
                s = t1 - t
                return np.array([amp * np.cos(2 * s + phi), -2 * amp * np.sin(2 * s + phi)])
            x, v, t = -x, -2 * amp * np.sin(2 * s + phi), t + s
        saturated = not saturated


def run(solver, controller, vector_field, args, t1, y0, exact):
    """Compile and time one solve of `vector_field` from 0 to `t1`; return a row."""

    @jax.jit
    def solve(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vector_field),
            solver,
            t0=0.0,
            t1=t1,
            dt0=None,
            y0=y0,
            args=args,
            stepsize_controller=controller,
            max_steps=1_000_000,
        )
        stats = sol.stats
        return sol.ys[-1], stats["num_accepted_steps"], stats["num_rejected_steps"]

    y0 = jnp.asarray(y0)
    start = time.perf_counter()
    compiled = solve.lower(y0).compile()
    compile_s = time.perf_counter() - start

    run_s = np.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        y1, accepted, rejected = jax.block_until_ready(compiled(y0))
        run_s = min(run_s, time.perf_counter() - start)

    return dict(
        accepted=int(accepted),
        rejected=int(rejected),
        compile_s=compile_s,
        run_ms=1e3 * run_s,
        error=float(np.linalg.norm(np.asarray(y1) - exact)),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 Kepler periods instead of 10 (smoke run)",
    )
    cli = parser.parse_args()

    e = 0.5
    periods = 2 if cli.quick else 10
    t_kepler = periods * 2 * np.pi
    problems = [
        (
            f"Kepler e={e}, {periods} periods",
            kepler,
            None,
            t_kepler,
            kepler_y0(e),
            kepler_exact(t_kepler, e),
        ),
        (
            "Arenstorf orbit, 1 period",
            arenstorf,
            ARENSTORF_MU,
            ARENSTORF_PERIOD,
            ARENSTORF_Y0,
            ARENSTORF_Y0,
        ),
        (
            "Saturated spring, clip",
            saturated_spring,
            None,
            10.0,
            jnp.array([1.0, 0.0]),
            saturated_spring_exact(10.0),
        ),
    ]
    solvers = [
        ("Taylor()", taylorode.Taylor(), taylorode.TaylorController(rtol=RTOL, atol=ATOL)),
        ("Dopri8", diffrax.Dopri8(), diffrax.PIDController(rtol=RTOL, atol=ATOL)),
    ]

    print(
        f"taylorode {taylorode.__version__}: a Taylor method (order from the "
        f"tolerance) vs diffrax's Dopri8 on two orbits and a\nspring that switches, rtol = atol = {RTOL:g}, jit-compiled, float64. "
        f"Run time is the best of {REPEATS} calls after compiling;\nerror is the "
        "2-norm distance from the exact final state (for the periodic Arenstorf "
        "orbit,\nits starting point).\n"
    )
    header = (
        f"{'problem':<28} {'solver':<17} {'accepted':>8} {'rejected':>8} "
        f"{'compile [s]':>11} {'run [ms]':>9} {'error':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, vector_field, args, t1, y0, exact in problems:
        for solver_name, solver, controller in solvers:
            row = run(solver, controller, vector_field, args, t1, y0, exact)
            print(
                f"{name:<28} {solver_name:<17} {row['accepted']:>8} "
                f"{row['rejected']:>8} {row['compile_s']:>11.2f} "
                f"{row['run_ms']:>9.2f} {row['error']:>9.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
