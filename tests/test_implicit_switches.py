"""Implicit solvers on fields that switch: a step may not hide two crossings.

`HermiteObreschkoff` and `ExtrapolatedHermiteObreschkoff` cannot end a step at a switch,
so a step whose switching functions change sign twice (its ends on the same branch)
would be blind to the switch. Checked against exact solutions: a window in time
(`where(sin(20 t) > c, 1, 0)`, whose integral is the time spent above `c`) per
trajectory under `vmap`, and an event inside a window shorter than the solver's steps.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

import taylorode


def _window(t, y, args):
    return jnp.stack([jnp.where(jnp.sin(20 * t) > args, 1.0, 0.0)])


def _time_above(c):
    # Three full windows of sin(20 t) > c in [0, 1].
    return 3 * 2 * (np.pi / 2 - np.arcsin(c)) / 20


@pytest.mark.parametrize(
    "solver",
    [taylorode.HermiteObreschkoff(2, 3), taylorode.ExtrapolatedHermiteObreschkoff(1, 2)],
    ids=["HO23", "XHO12"],
)
def test_windows_shorter_than_a_step_are_not_skipped(solver):
    # Before steps were checked for double crossings, two of the three windows were
    # stepped over (error 0.028 at every tolerance).
    @jax.jit
    @jax.vmap
    def solve(c):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_window), solver, 0.0, 1.0, None, jnp.zeros(1), c,
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8),
            max_steps=4096,
        )
        return sol.ys[-1, 0]

    cs = np.array([0.99, 0.95])
    err = np.abs(np.asarray(solve(jnp.asarray(cs))) - [_time_above(c) for c in cs])
    assert np.all(err < 1e-7), err


def _oscillator(t, y, args):
    return jnp.stack([20 * y[1], -20 * y[0]])


def test_event_in_a_window_is_found_by_an_implicit_solver():
    event = diffrax.Event(lambda t, y, args, **kw: y[0] - 0.99, optx.Newton(rtol=1e-12, atol=1e-12))
    args = dict(
        terms=diffrax.ODETerm(_oscillator), solver=taylorode.HermiteObreschkoff(2, 3), t0=0.0, t1=2.0,
        dt0=None, y0=jnp.array([0.0, 1.0]), event=event, throw=False,
        stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
    )
    sol = taylorode.diffeqsolve(**args)
    assert abs(float(sol.ts[-1]) - np.arcsin(0.99) / 20) < 1e-5


@pytest.mark.parametrize("kind", ["jump", "kink"])
def test_a_step_across_a_switch_is_never_accepted_with_a_smaller_estimate(kind):
    # One HO(2, 3) step of length 0.1 over a switch at tau: the error estimate bounds
    # the step's true error wherever the switch lies in it (tau = 0.075 puts the switch
    # exactly on a boundary of the cells that locate it, once missed).
    if kind == "jump":
        field = lambda t, y, tau: jnp.where(t < tau, 1.0, 3.0) * jnp.ones_like(y)  # noqa: E731
        exact = lambda tau, h: tau + 3 * (h - tau)  # noqa: E731
    else:
        field = lambda t, y, tau: jnp.maximum(t - tau, 0.0) * jnp.ones_like(y)  # noqa: E731
        exact = lambda tau, h: (h - tau) ** 2 / 2  # noqa: E731
    solver = taylorode.HermiteObreschkoff(2, 3, root_finder=taylorode.PadeChord(rtol=1e-13, atol=1e-13))
    term = diffrax.ODETerm(field)
    h = 0.1

    @jax.jit
    def step(tau):
        y0 = jnp.zeros(1)
        state = solver.init(term, 0.0, h, y0, tau)
        y1, err, _, _, _ = solver.step(term, 0.0, h, y0, tau, state, False)
        return y1[0], err[0]

    for tau in np.linspace(0.005, 0.095, 10):
        y1, err = step(tau)
        assert abs(float(y1) - exact(tau, h)) <= abs(float(err)), (tau, float(y1), exact(tau, h), float(err))
