"""Fit the parameters of a damped pendulum to noisy data, by gradients through a
Taylor solve.

The model is a damped nonlinear pendulum,

    x'' = -omega^2 sin(x) - gamma x',    x(0) = x0,  x'(0) = 0,

with unknown frequency `omega`, damping `gamma` and initial angle `x0`. Synthetic data:
the angle at 50 times in [0, 10] (`--quick`: 20 in [0, 4]) from the true parameters, plus Gaussian noise of
standard deviation `NOISE`. The loss is the mean squared residual between the data and
`diffrax.diffeqsolve` with `taylorode.Taylor(order=ORDER)` and
`taylorode.TaylorController` (saved at the data times); its gradient comes from
`jax.value_and_grad` straight through the solve (diffrax's default
`RecursiveCheckpointAdjoint`). The optimiser is a few lines of Adam on the logarithms of
the parameters (they are positive), written here rather than taken from optax.

The figure (`docs/img/parameter_fitting.png`) shows the data with the true, initial and
fitted curves, and the loss against the iteration; true and fitted parameters are
printed.

Run with `python examples/parameter_fitting.py` (`--quick`: a shorter horizon and
fewer iterations, a few seconds; `--out` for the figure's path). The data are made
with the same solver at a tight tolerance; the fit itself uses a looser one.
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

ORDER = 8
FIT_TOL = 1e-9  # rtol = atol of the solves inside the loss
DATA_TOL = 1e-12  # for the synthetic data and the plotted true curve
NOISE = 0.02
TRUE = {"omega": 2.0, "gamma": 0.25, "x0": 1.2}
GUESS = {"omega": 1.7, "gamma": 0.6, "x0": 0.8}
OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "img" / "parameter_fitting.png"


def pendulum(t, y, params):
    x, v = y[0], y[1]
    return jnp.stack([v, -params["omega"] ** 2 * jnp.sin(x) - params["gamma"] * v])


def solve(params, ts, tol):
    """The angle at times `ts` (ts[0] > 0 is allowed: the solve starts at t = 0)."""
    y0 = jnp.stack([params["x0"], jnp.zeros_like(params["x0"])])
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(pendulum),
        taylorode.Taylor(order=ORDER),
        t0=0.0,
        t1=ts[-1],
        dt0=None,
        y0=y0,
        args=params,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=taylorode.TaylorController(rtol=tol, atol=tol),
        max_steps=10_000,
    )
    return sol.ys[:, 0]


def to_params(log_params):
    return jax.tree_util.tree_map(jnp.exp, log_params)


def loss(log_params, ts, data):
    return jnp.mean((solve(to_params(log_params), ts, FIT_TOL) - data) ** 2)


def adam_init(params):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return zeros, zeros, jnp.asarray(0, dtype=jnp.int64)


def adam_update(grads, state, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam step: returns (updates, new state); add the updates to the parameters."""
    m, v, k = state
    k = k + 1
    m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g**2, v, grads)
    kf = k.astype(jnp.float64)
    c1, c2 = 1 - b1**kf, 1 - b2**kf
    updates = jax.tree_util.tree_map(lambda m, v: -lr * (m / c1) / (jnp.sqrt(v / c2) + eps), m, v)
    return updates, (m, v, k)


@jax.jit
def train_step(log_params, state, ts, data, lr):
    value, grads = jax.value_and_grad(loss)(log_params, ts, data)
    updates, state = adam_update(grads, state, lr)
    log_params = jax.tree_util.tree_map(jnp.add, log_params, updates)
    return log_params, state, value


@jax.jit
def curve(params, ts):
    """The angle at `ts` at the tight tolerance: data, and the plotted curves."""
    return solve(params, ts, DATA_TOL)


def fit(log_params, ts, data, iterations, lr):
    """Adam for `iterations` steps; returns the final log-parameters and the loss before
    each step and after the last (`iterations + 1` values)."""
    state = adam_init(log_params)
    losses = []
    lr = jnp.asarray(lr)
    for _ in range(iterations + 1):
        # The last call only evaluates the loss (its update is dropped): one compile.
        new_log_params, state, value = train_step(log_params, state, ts, data, lr)
        losses.append(float(value))
        if len(losses) <= iterations:
            log_params = new_log_params
    return log_params, np.array(losses)


def main(quick: bool = False, out: str | pathlib.Path = OUT):
    """Make the data, fit, plot to `out`, print a summary. Returns a dict with the true,
    initial and fitted parameters (floats) and the loss history (a NumPy array)."""
    start = time.perf_counter()
    t1, num_data, iterations, lr = (4.0, 20, 80, 0.05) if quick else (10.0, 50, 400, 0.03)
    # One grid for the plotted curves; the data are at every `stride`-th point of it,
    # so that `curve` compiles once.
    stride = 10
    fine = jnp.linspace(t1 / (stride * num_data), t1, stride * num_data)
    ts = fine[stride - 1 :: stride]
    as_arrays = lambda p: {k: jnp.asarray(v, dtype=jnp.float64) for k, v in p.items()}
    true, guess = as_arrays(TRUE), as_arrays(GUESS)
    true_curve = curve(true, fine)
    noise = NOISE * jax.random.normal(jax.random.PRNGKey(0), ts.shape, dtype=jnp.float64)
    data = true_curve[stride - 1 :: stride] + noise

    log_fitted, losses = fit(jax.tree_util.tree_map(jnp.log, guess), ts, data, iterations, lr)
    fitted = {k: float(v) for k, v in to_params(log_fitted).items()}
    elapsed = time.perf_counter() - start

    # --- figure -------------------------------------------------------------------
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    ax0.plot(ts, data, "o", color="k", markersize=4, label=f"data (noise sd {NOISE:g})")
    ax0.plot(fine, true_curve, color="0.6", lw=3, label="true")
    ax0.plot(fine, curve(guess, fine), ":", color="C1", label="initial guess")
    ax0.plot(fine, curve(as_arrays(fitted), fine), "--", color="C0", label="fitted")
    ax0.set_xlabel("$t$")
    ax0.set_ylabel("angle $x$")
    ax0.set_title(f"Damped pendulum, Taylor(order={ORDER}) + TaylorController({FIT_TOL:g})")
    ax0.legend(loc="best", fontsize="small")
    ax1.semilogy(np.arange(len(losses)), losses, color="C0")
    ax1.axhline(NOISE**2, ls=":", color="0.5", label=r"noise variance $\sigma^2$")
    ax1.set_xlabel("Adam iteration")
    ax1.set_ylabel("mean squared residual")
    ax1.set_title("loss")
    ax1.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)

    # --- summary ------------------------------------------------------------------
    print(f"{'parameter':<10}{'true':>10}{'initial':>10}{'fitted':>10}")
    for k in TRUE:
        print(f"{k:<10}{TRUE[k]:>10.4f}{GUESS[k]:>10.4f}{fitted[k]:>10.4f}")
    print(f"loss {losses[0]:.3e} -> {losses[-1]:.3e} in {iterations} Adam steps "
          f"(noise variance {NOISE**2:.1e}); {elapsed:.1f} s with compilation")
    print(f"saved {out}")
    return dict(true=dict(TRUE), initial=dict(GUESS), fitted=fitted, losses=losses)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short horizon, few iterations")
    parser.add_argument("--out", default=str(OUT), help="figure path (default: %(default)s)")
    cli = parser.parse_args()
    main(quick=cli.quick, out=cli.out)
