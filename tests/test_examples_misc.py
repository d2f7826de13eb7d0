"""Smoke tests of three examples in quick mode: each runs, saves its figure, and its
key numbers are right. Compiling dominates their run time (~10 s each on an idle
machine)."""

import importlib.util
import pathlib

import numpy as np


EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PNG = b"\x89PNG\r\n\x1a\n"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name, tmp_path):
    example = load(name)
    out = tmp_path / "x.png"
    result = example.main(quick=True, out=str(out))
    assert out.exists() and out.read_bytes()[:8] == PNG
    return example, result


def test_lorenz_divergence(tmp_path):
    example, r = run("lorenz_divergence", tmp_path)
    # Quick mode fits over t in [2, 8] only: a finite-time exponent (1.06 here, 0.91
    # over the full run's [2, 18]), so the check is loose.
    assert abs(r["exponent"] - example.LYAPUNOV) < 0.3
    assert r["window"][0] == example.T_ALIGN and r["window"][1] > 7
    # Separations grew by orders of magnitude from 1e-10 but are still far from
    # saturation (attractor size ~ 20) at t = 8.
    assert 1e-8 < r["max_separation"] < 1e-4


def test_neural_ode(tmp_path):
    _, r = run("neural_ode", tmp_path)
    assert np.all(np.isfinite(r["losses"])) and len(r["losses"]) == 11
    # 10 Adam steps: 1.3 -> 0.06 here.
    assert r["final_loss"] < r["initial_loss"] / 10


def test_stiff_robertson_vdp(tmp_path):
    _, r = run("stiff_robertson_vdp", tmp_path)
    # Both solvers at tolerance 1e-6, against scipy Radau at 1e-12.
    for key in ("vdp_ho", "vdp_kvaerno5", "rober_ho", "rober_kvaerno5"):
        assert r[f"{key}_error"] < 1e-5, key
    for key in ("rober_ho", "rober_kvaerno5"):
        assert r[f"{key}_max_rel_error"] < 1e-4, key  # y2 ~ 1e-5 included
        assert r[f"{key}_conservation"] < 1e-10, key
    # Van der Pol on [0, 0.5] (the slow branch): HO(2, 3) takes far fewer steps than
    # Kvaerno5 (40 vs 163 here), and steps well past an explicit Taylor method's
    # stability limit.
    assert 2 * r["vdp_ho_steps"] < r["vdp_kvaerno5_steps"]
    assert r["vdp_ho_newton"] >= r["vdp_ho_steps"]
    assert r["vdp_stability_ratio_max"] > 5


def test_stiffness_diagnostics(tmp_path):
    _, out = run("stiffness_diagnostics", tmp_path)
    # At y = (2, 0) the Jacobian of vdp1000 is [[0, 1], [-1, -3000]]: max|lambda| = 3000.0003
    # is the largest along the slow branch, where |y1| <= 2.
    np.testing.assert_allclose(out["max_abs_eigenvalue"], 3000.0, atol=0.01)
    # An explicit Taylor method would need orders of magnitude more steps than the
    # implicit solver, whether limited by accuracy or by stability.
    assert out["explicit_steps_stability"] > 1000 * out["implicit_steps"]
    assert out["explicit_steps_accuracy"] > 1000 * out["implicit_steps"]


def test_reaction_diffusion(tmp_path):
    _, r = run("reaction_diffusion", tmp_path)
    assert r["unknowns"] == 500
    # Both at tolerance 1e-6 with banded Newton matrices, against scipy Radau at 1e-10,
    # over 41 saved times (VOHO's through its dense output).
    for key in ("voho", "kvaerno5"):
        assert r[f"{key}_error"] < 1e-5, key
    # The implicit Taylor solver's steps are longer (24 against 103 here).
    assert 2 * r["voho_accepted"] < r["kvaerno5_accepted"]
