"""Local sensitivity analysis of Michaelis–Menten enzyme kinetics (mass action).

    S + E  <->  C  ->  P + E         (binding kf, unbinding kr, catalysis kcat)

    S' = -kf S E + kr C
    E' = -kf S E + (kr + kcat) C
    C' =  kf S E - (kr + kcat) C
    P' =  kcat C

with S0 = 5 uM of substrate, E0 = 0.5 uM of enzyme, no complex or product, kf = 2 /uM/s,
kr = 1 /s, kcat = 0.5 /s (so Km = (kr + kcat)/kf = 0.75 uM and Vmax = kcat E0 =
0.25 uM/s), on t in [0, 40] s.

`taylorode.forward_sensitivity` integrates the state together with its first-order
sensitivities to the three rate constants and to the initial state (the variational
equations) in one solve by `taylorode.Taylor()` with `taylorode.TaylorController`. The
normalised (relative) sensitivity coefficients

    s_{y,k}(t) = (k / y(t)) dy(t)/dk,

the percentage change of y per percent change of k, are plotted over time for the
product P and the substrate S (docs/img/sensitivity_coefficients.png), and a table
is printed. Two checks come for free: the conservation laws E + C = E0 and
S + C + P = S0 hold for every parameter value, so their sensitivities to the rate
constants must vanish; and multiplying all rate constants by c runs the clock c times
faster, y(t; c k) = y(c t; k), so sum_k k dy/dk = t y'(t) = t f(y(t)).

Run with `python examples/sensitivity_analysis.py` (`--quick` for a short horizon and
a looser tolerance, as in CI; `--out PATH` to write the figure elsewhere).
"""

import argparse
import pathlib
import time

import diffrax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np


matplotlib.use("Agg")
import matplotlib.pyplot as plt

import taylorode


jax.config.update("jax_enable_x64", True)

OUT = (
    pathlib.Path(__file__).resolve().parent.parent
    / "docs"
    / "img"
    / "sensitivity_coefficients.png"
)
SPECIES = ("S", "E", "C", "P")
RATES = {"kf": 2.0, "kr": 1.0, "kcat": 0.5}
Y0 = (5.0, 0.5, 0.0, 0.0)


def michaelis_menten(t, y, k):
    s, e, c = y[0], y[1], y[2]  # (the product, y[3], feeds back into nothing)
    bind = k["kf"] * s * e
    unbind = k["kr"] * c
    cat = k["kcat"] * c
    return jnp.stack([-bind + unbind, -bind + unbind + cat, bind - unbind - cat, cat])


def main(quick: bool = False, out=None) -> list[str]:
    """Run the analysis, save the figure to `out` (default
    `docs/img/sensitivity_coefficients.png`) and print and return the table rows."""
    out = OUT if out is None else pathlib.Path(out)
    t1, num, tol = (10.0, 6, 1e-6) if quick else (40.0, 161, 1e-10)
    ts = jnp.linspace(0.0, t1, num)
    rates = {name: jnp.array(value) for name, value in RATES.items()}

    start = time.perf_counter()
    sens = taylorode.forward_sensitivity(
        diffrax.ODETerm(michaelis_menten),
        taylorode.Taylor(),  # order from the tolerance: 8 at 1e-6, 13 at 1e-10
        0.0,
        t1,
        None,
        jnp.array(Y0),
        rates,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=taylorode.TaylorController(rtol=tol, atol=tol),
    )
    jax.block_until_ready(sens)
    elapsed = time.perf_counter() - start

    t = np.asarray(sens.ts)
    y = np.asarray(sens.ys)  # (T, 4)
    dy_dk = {name: np.asarray(d) for name, d in sens.dy_dargs.items()}  # (T, 4) each
    dy_dy0 = np.asarray(sens.dy_dy0)  # (T, 4, 4): [time, species, initial species]

    # Normalised coefficients (k / y) dy/dk, where y > 0 (C and P start at zero).
    def normalised(i, dy, scale):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(y[:, i] > 0, scale * dy / y[:, i], np.nan)

    coeff_p = {name: normalised(3, dy_dk[name][:, 3], RATES[name]) for name in RATES}
    coeff_p["E0"] = normalised(3, dy_dy0[:, 3, 1], Y0[1])
    coeff_p["S0"] = normalised(3, dy_dy0[:, 3, 0], Y0[0])
    coeff_s = {name: normalised(0, dy_dk[name][:, 0], RATES[name]) for name in RATES}
    coeff_s["E0"] = normalised(0, dy_dy0[:, 0, 1], Y0[1])

    # Conservation laws: d(E + C)/dk = 0 and d(S + C + P)/dk = 0 for every rate k.
    conservation = max(
        max(np.max(np.abs(d[:, 1] + d[:, 2])), np.max(np.abs(d[:, 0] + d[:, 2] + d[:, 3])))
        for d in dy_dk.values()
    )

    # Time scaling: multiplying every rate constant by c is running the clock c times
    # faster, y(t; c k) = y(c t; k), so sum_k k dy/dk = t y'(t) = t f(y(t)).
    f_along = np.asarray(jax.vmap(michaelis_menten, in_axes=(0, 0, None))(sens.ts, sens.ys, rates))
    euler = sum(RATES[name] * dy_dk[name] for name in RATES)
    scaling = np.max(np.abs(euler - t[:, None] * f_along))

    # --- figure -------------------------------------------------------------------
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for i, name in enumerate(SPECIES):
        axes[0].plot(t, y[:, i], label=name)
    axes[0].set_ylabel("concentration (uM)")
    axes[0].set_title(
        "Michaelis-Menten kinetics: normalised sensitivities $(k/y)\\,\\partial y/\\partial k$"
    )
    axes[0].legend(loc="center right")
    for name, c in coeff_p.items():
        axes[1].plot(t, c, label=name)
    axes[1].set_ylabel(r"P: $(k/P)\,\partial P/\partial k$")
    axes[1].axhline(0.0, color="grey", linewidth=0.5)
    axes[1].legend(loc="best", fontsize="small")
    for name, c in coeff_s.items():
        axes[2].plot(t, c, label=name)
    axes[2].set_ylabel(r"S: $(k/S)\,\partial S/\partial k$")
    axes[2].axhline(0.0, color="grey", linewidth=0.5)
    axes[2].legend(loc="best", fontsize="small")
    axes[2].set_xlabel("t (s)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)

    # --- table --------------------------------------------------------------------
    picks = np.unique(np.searchsorted(t, np.linspace(0.0, t1, 6)[1:] - 1e-9))
    names = list(coeff_p)
    rows = [
        f"{'t':>6}{'P':>9}{'S':>9}  "
        + "".join(f"{'P:' + n:>9}" for n in names)
        + "".join(f"{'S:' + n:>9}" for n in coeff_s)
    ]
    for j in picks:
        rows.append(
            f"{t[j]:>6.1f}{y[j, 3]:>9.4f}{y[j, 0]:>9.4f}  "
            + "".join(f"{coeff_p[n][j]:>9.3f}" for n in names)
            + "".join(f"{coeff_s[n][j]:>9.3f}" for n in coeff_s)
        )
    print(
        f"Michaelis-Menten on [0, {t1:g}] s, Taylor() + TaylorController at tol {tol:g}: "
        f"{int(sens.stats['num_accepted_steps'])} steps for the state and its "
        f"{dy_dy0.shape[-1] + len(RATES)} sensitivities, {elapsed:.1f} s "
        "(compilation included)"
    )
    print("normalised sensitivity coefficients (k/y) dy/dk of P and S:")
    for row in rows:
        print(row)
    print(f"checks: max |d(E+C)/dk|, |d(S+C+P)/dk| = {conservation:.1e} (conservation); "
          f"max |sum_k k dy/dk - t f(y)| = {scaling:.1e} (time scaling)")
    print(f"saved {out}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short horizon, for CI")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="figure path")
    cli = parser.parse_args()
    main(quick=cli.quick, out=cli.out)
