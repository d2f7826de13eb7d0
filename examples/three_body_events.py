"""Arenstorf orbit: dense output and event location with a Taylor solver.

The Arenstorf orbit is a periodic orbit of the restricted three-body problem (a light
body moving with the Earth (mass 1 - mu, at (-mu, 0)) and the Moon (mass mu, at
(1 - mu, 0)), in the frame rotating with them):

    x'' = x + 2 y' - (1 - mu) (x + mu) / r1^3 - mu (x - 1 + mu) / r2^3
    y'' = y - 2 x' - (1 - mu) y / r1^3 - mu y / r2^3

with mu = 0.012277471. It starts 0.0063 from the Moon, swings around the Earth and
comes back after one period T = 17.065... . It is solved at rtol = atol = 1e-12 by
`taylorode.Taylor()` (order 15, from the tolerance) with `taylorode.TaylorController`,
in three ways:

- over one period with `SaveAt(dense=True, steps=True)`: the orbit is drawn from
  `sol.evaluate` at 20 points inside each step (the step's own Taylor polynomial, of
  full order, so the few, long steps give a smooth curve), with the step endpoints
  marked; the distance between the end point and the start measures the error after
  one period;
- over one period with `SaveAt(ts=...)`: a separate solve saved at 1000 times, which
  must agree with the dense output of the first at those times;
- with a `diffrax.Event` that stops the solve at the first close approach to the Moon:
  `cond_fn` is the distance to the Moon minus `RADIUS` = 0.1 and `direction=False`
  (a down-crossing; the orbit starts inside that radius, so leaving it is no event).
  With `root_finder=optimistix.Newton(...)` diffrax locates the event time on the
  dense output of the step where the sign changed, so the distance at the event
  equals the radius up to round-off.

The figure (`docs/img/three_body_events.png`) shows the orbit with its steps and the
event, a zoom on the Moon, the distance to the Moon against time, and the step sizes; a
table of results is printed.

Run with `python examples/three_body_events.py` (`--quick`: fewer plotted and checked
points; the solves are the same, each a fraction of a second after compiling; `--out`
for the figure's path).
"""

import argparse
import pathlib
import time

import diffrax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optimistix as optx


matplotlib.use("Agg")
import matplotlib.pyplot as plt

import taylorode


jax.config.update("jax_enable_x64", True)

MU = 0.012277471
Y0 = np.array([0.994, 0.0, 0.0, -2.00158510637908252240537862224])
PERIOD = 17.0652165601579625588917206249
TOL = 1e-12
RADIUS = 0.1  # the orbit comes from beyond 1.2 to 0.0063 of the Moon, so it crosses this
EARTH = (-MU, 0.0)
MOON = (1 - MU, 0.0)
OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "img" / "three_body_events.png"


def arenstorf(t, y, mu):
    x, yy, vx, vy = y
    mu1 = 1 - mu
    d1 = ((x + mu) ** 2 + yy**2) ** 1.5
    d2 = ((x - mu1) ** 2 + yy**2) ** 1.5
    ax = x + 2 * vy - mu1 * (x + mu) / d1 - mu * (x - mu1) / d2
    ay = yy - 2 * vx - mu1 * yy / d1 - mu * yy / d2
    return jnp.stack([vx, vy, ax, ay])


def moon_distance(y, mu):
    return jnp.sqrt((y[..., 0] - (1 - mu)) ** 2 + y[..., 1] ** 2)


def moon_approach(t, y, args, **kwargs):
    """Event function: changes sign (downwards) where the distance to the Moon drops
    below RADIUS. diffrax passes more keyword arguments (solver, terms, ...)."""
    return moon_distance(y, args) - RADIUS


def solve(t1, saveat, event=None):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(arenstorf),
        taylorode.Taylor(),
        t0=0.0,
        t1=t1,
        dt0=None,
        y0=jnp.asarray(Y0),
        args=MU,
        saveat=saveat,
        stepsize_controller=taylorode.TaylorController(rtol=TOL, atol=TOL),
        event=event,
        max_steps=4096,
    )


@jax.jit
def solve_dense():
    return solve(PERIOD, diffrax.SaveAt(dense=True, steps=True, solver_state=True))


@jax.jit
def solve_saved(ts):
    return solve(PERIOD, diffrax.SaveAt(ts=ts))


@jax.jit
def solve_to_event():
    event = diffrax.Event(
        moon_approach,
        root_finder=optx.Newton(rtol=1e-13, atol=1e-13),
        direction=False,  # down-crossings only
    )
    # Integrate up to two periods; the event stops the solve before the end of the first.
    return solve(2 * PERIOD, diffrax.SaveAt(t1=True), event=event)


@jax.jit
def evaluate(sol, ts):
    """Dense output at many times: `sol.evaluate`, vectorised."""
    return jax.vmap(sol.evaluate)(ts)


def timed(fn, *args):
    """(result, seconds for the first call (compiling), seconds for a second call)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, first, time.perf_counter() - start


def main(quick: bool = False, out: str | pathlib.Path | None = None) -> dict:
    """Solve, plot to `out`, print a table. Returns the event time and the state and
    distance to the Moon there, the largest dense-output vs `SaveAt(ts=...)` difference,
    the periodicity error and the step count."""
    out = pathlib.Path(OUT if out is None else out)
    per_step, num_check = (8, 100) if quick else (20, 1000)

    # --- 1. one period, dense output ---------------------------------------------------
    sol, dense_first_s, dense_s = timed(solve_dense)
    keep = np.isfinite(np.asarray(sol.ts))  # the steps buffer is padded with inf
    t_steps, y_steps = np.asarray(sol.ts)[keep], np.asarray(sol.ys)[keep]
    # Steps' end points, with the start in front.
    t_steps, y_steps = np.append(0.0, t_steps), np.vstack([np.asarray(Y0), y_steps])
    accepted = int(sol.stats["num_accepted_steps"])
    orders = {q: int(n) for q, n in taylorode.order_counts(sol).items() if int(n) > 0}
    periodicity_error = float(np.linalg.norm(y_steps[-1] - Y0))
    # `per_step` points inside each step, plus the last endpoint.
    frac = np.arange(per_step) / per_step
    t_dense = np.append((t_steps[:-1, None] + frac * np.diff(t_steps)[:, None]).ravel(), PERIOD)
    y_dense = np.asarray(evaluate(sol, jnp.asarray(t_dense)))

    # --- 2. the same period saved at fixed times, vs the dense output there -------------
    ts = jnp.linspace(0.0, PERIOD, num_check)
    saved, saved_first_s, saved_s = timed(solve_saved, ts)
    dense_at_ts = np.asarray(evaluate(sol, ts))
    dense_vs_saved = float(np.max(np.abs(dense_at_ts - np.asarray(saved.ys))))

    # --- 3. stop at the first close approach to the Moon -------------------------------
    ev, event_first_s, event_s = timed(solve_to_event)
    if ev.result != diffrax.RESULTS.event_occurred:
        raise RuntimeError(f"no event: {ev.result}")
    t_event = float(ev.ts[-1])
    y_event = np.asarray(ev.ys[-1])
    distance_at_event = float(moon_distance(y_event, MU))

    # --- figure -------------------------------------------------------------------
    fig = plt.figure(figsize=(14, 6.2))
    grid = fig.add_gridspec(2, 2, width_ratios=[1.5, 1])
    ax_orbit = fig.add_subplot(grid[:, 0])
    ax_dist = fig.add_subplot(grid[0, 1])
    ax_step = fig.add_subplot(grid[1, 1], sharex=ax_dist)

    def draw_orbit(ax, markersize):
        ax.plot(y_dense[:, 0], y_dense[:, 1], color="C0", lw=1,
                label=f"dense output ({per_step} points per step)")
        ax.plot(y_steps[:, 0], y_steps[:, 1], "o", color="k", markersize=markersize,
                label=f"step endpoints ({len(t_steps) - 1} steps)")
        ax.add_patch(plt.Circle(MOON, RADIUS, fill=False, ls="--", color="0.5"))
        ax.plot(*EARTH, "o", color="tab:blue", markersize=9)
        ax.plot(*MOON, "o", color="0.5", markersize=5)
        ax.plot(y_event[0], y_event[1], "*", color="C3", markersize=14,
                label=f"event: distance to Moon = {RADIUS:g}")

    draw_orbit(ax_orbit, 3)
    ax_orbit.annotate("Earth", EARTH, xytext=(8, 8), textcoords="offset points")
    ax_orbit.annotate("Moon", MOON, xytext=(-10, -22), textcoords="offset points")
    ax_orbit.set_aspect("equal")
    ax_orbit.set_xlim(-1.4, 2.35)
    ax_orbit.set_ylim(-1.3, 1.3)
    ax_orbit.set_xlabel("$x$ (rotating frame)")
    ax_orbit.set_ylabel("$y$")
    ax_orbit.set_title(f"Arenstorf orbit, Taylor() + TaylorController({TOL:g})")
    ax_orbit.legend(loc="upper right", fontsize="small")
    # Zoom on the Moon, where the steps are shortest and the event is, to its right.
    inset = ax_orbit.inset_axes([1.3, -0.5, 1.0, 1.0], transform=ax_orbit.transData)
    draw_orbit(inset, 2)
    inset.set_xlim(MOON[0] - 1.6 * RADIUS, MOON[0] + 1.6 * RADIUS)
    inset.set_ylim(-1.6 * RADIUS, 1.6 * RADIUS)
    inset.set_aspect("equal")
    inset.tick_params(labelsize="x-small")
    inset.set_title(f"near the Moon (circle: radius {RADIUS:g})", fontsize="small")
    ax_orbit.indicate_inset_zoom(inset, edgecolor="0.4")

    ax_dist.semilogy(t_dense, moon_distance(y_dense, MU), color="C0")
    ax_dist.axhline(RADIUS, ls="--", color="0.5", label=f"radius {RADIUS:g}")
    ax_dist.plot(t_event, distance_at_event, "*", color="C3", markersize=12,
                 label=f"event at t = {t_event:.10f}")
    ax_dist.set_ylabel("distance to the Moon")
    ax_dist.legend(loc="lower center", fontsize="small")
    ax_step.semilogy(t_steps[1:], np.diff(t_steps), ".", color="k", markersize=4)
    ax_step.set_ylabel("step size")
    ax_step.set_xlabel("$t$")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)

    # --- summary ------------------------------------------------------------------
    order = "/".join(str(q) for q in orders)
    print(f"Arenstorf orbit (mu = {MU}), Taylor() order {order}, rtol=atol={TOL:g}, float64, jit")
    print(f"{'solve':<34}{'accepted':>9}{'1st call [s]':>14}{'2nd call [ms]':>15}")
    for name, s, first, second in [
        ("one period, SaveAt(dense, steps)", sol, dense_first_s, dense_s),
        (f"one period, SaveAt(ts), {num_check} times", saved, saved_first_s, saved_s),
        ("to the event, Event + Newton", ev, event_first_s, event_s),
    ]:
        print(f"{name:<34}{int(s.stats['num_accepted_steps']):>9}{first:>14.2f}{1e3 * second:>15.2f}")
    print("(the first call compiles)")
    print(f"event time (distance to Moon = {RADIUS:g})  {t_event:.15f}")
    print(f"distance at event                  {distance_at_event:.15f}  "
          f"(- radius: {distance_at_event - RADIUS:.1e})")
    print(f"dense output vs SaveAt(ts)         {dense_vs_saved:.1e}  (max abs difference, "
          f"{num_check} times)")
    print(f"periodicity |y(T) - y(0)|          {periodicity_error:.1e}")
    print(f"saved {out}")

    return dict(
        event_time=t_event,
        event_state=y_event,
        distance_at_event=distance_at_event,
        radius=RADIUS,
        dense_vs_saveat_max_diff=dense_vs_saved,
        periodicity_error=periodicity_error,
        accepted_steps=accepted,
        orders=orders,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer plotted and checked points")
    parser.add_argument("--out", default=str(OUT), help="figure path (default: %(default)s)")
    cli = parser.parse_args()
    main(quick=cli.quick, out=cli.out)
