"""Ecosystem conventions: diffrax's progress meters and citations work with taylorode."""

import re

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest

import taylorode


def _decay(t, y, args):
    return -y


@pytest.mark.parametrize(
    "solver", [taylorode.Taylor(order=6), taylorode.HermiteObreschkoff(1, 2)], ids=["Taylor", "HO12"]
)
def test_progress_meters(solver, capfd):
    controller = (
        taylorode.TaylorController(rtol=1e-8, atol=1e-8)
        if isinstance(solver, taylorode.Taylor)
        else diffrax.PIDController(rtol=1e-8, atol=1e-8)
    )

    def solve(meter):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(_decay), solver, 0.0, 2.0, 0.1, jnp.array([1.0, 2.0]),
            stepsize_controller=controller, progress_meter=meter,
        )

    plain = solve(diffrax.NoProgressMeter())
    capfd.readouterr()
    text = solve(diffrax.TextProgressMeter(minimum_increase=0.2))
    printed = capfd.readouterr().out
    percents = [float(p) for p in re.findall(r"([\d.]+)%", printed)]
    assert percents and percents[-1] == 100.0 and percents == sorted(percents)
    np.testing.assert_array_equal(text.ys, plain.ys)
    tqdm_sol = solve(diffrax.TqdmProgressMeter(refresh_steps=1))
    assert "100.00%" in capfd.readouterr().err
    np.testing.assert_array_equal(tqdm_sol.ys, plain.ys)
    np.testing.assert_allclose(plain.ys[-1], np.exp(-2.0) * np.array([1.0, 2.0]), rtol=1e-5)


def test_citation_collects_references_from_docstrings():
    bib = taylorode.citation(taylorode.Taylor(), taylorode.TaylorController(rtol=1e-9, atol=1e-9))
    keys = re.findall(r"@\w+\{([^,]+),", bib)
    assert keys[0] == "taylorode"
    assert "jorba2005software" in keys and len(keys) == len(set(keys))
    assert taylorode.__version__ in bib
    ho = taylorode.citation(taylorode.HermiteObreschkoff(2, 3))
    assert "ehle1973" in ho and "jorba2005software" not in ho
    # Every entry is balanced BibTeX.
    everything = taylorode.citation()
    assert everything.count("{") == everything.count("}")
