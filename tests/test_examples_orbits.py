"""The orbit examples (`examples/kepler_long_term.py`, `examples/three_body_events.py`)
run in quick mode, write their figures and get the right numbers."""

import importlib.util
import pathlib

import numpy as np
import pytest


pytest.importorskip("matplotlib")
EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kepler_long_term(tmp_path):
    example = load_example("kepler_long_term")
    out = tmp_path / "x.png"
    r = example.main(quick=True, out=str(out))
    assert out.is_file() and out.stat().st_size > 0

    assert r["periods"] == 20
    # At tol 1e-14 Taylor's invariants drift only by round-off (~1e-14 over 20 periods).
    assert r["taylor_max_energy_error"] < 1e-12
    assert r["taylor_max_energy_error_saved"] < 1e-12  # dense output as accurate
    assert r["taylor_max_angular_momentum_error"] < 1e-12
    assert r["taylor_max_energy_error"] <= r["dopri8_max_energy_error"]
    assert r["taylor_rejected_steps"] == 0
    # Every step at the tolerance's order 18 but the first, at the start order 4.
    assert r["taylor_orders"] == {4: 1, 18: r["taylor_accepted_steps"] - 1}
    assert 0 < r["taylor_accepted_steps"] < r["dopri8_accepted_steps"]


def test_three_body_events(tmp_path):
    scipy_integrate = pytest.importorskip("scipy.integrate")
    example = load_example("three_body_events")
    out = tmp_path / "x.png"
    r = example.main(quick=True, out=str(out))
    assert out.is_file() and out.stat().st_size > 0

    mu, radius = example.MU, example.RADIUS
    assert abs(r["distance_at_event"] - radius) < 1e-9
    assert r["dense_vs_saveat_max_diff"] < 1e-10
    assert r["periodicity_error"] < 1e-8

    # Independent reference: scipy's DOP853 with its own event location.
    def field(t, y):
        x, yy, vx, vy = y
        d1 = ((x + mu) ** 2 + yy**2) ** 1.5
        d2 = ((x - 1 + mu) ** 2 + yy**2) ** 1.5
        ax = x + 2 * vy - (1 - mu) * (x + mu) / d1 - mu * (x - 1 + mu) / d2
        ay = yy - 2 * vx - (1 - mu) * yy / d1 - mu * yy / d2
        return [vx, vy, ax, ay]

    def approach(t, y):
        return np.hypot(y[0] - (1 - mu), y[1]) - radius

    approach.terminal = True
    approach.direction = -1
    ref = scipy_integrate.solve_ivp(
        field, (0.0, 2 * example.PERIOD), example.Y0, method="DOP853",
        rtol=1e-13, atol=1e-13, events=approach,
    )
    assert ref.status == 1  # stopped by the event
    (t_ref,) = ref.t_events[0]
    assert abs(r["event_time"] - t_ref) < 1e-8
    np.testing.assert_allclose(r["event_state"], ref.y_events[0][0], rtol=0, atol=1e-8)
    assert 0 < r["event_time"] < example.PERIOD
