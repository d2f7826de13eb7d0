"""Train a neural ODE through a Taylor-series solver.

The vector field is a small multilayer perceptron, an `equinox.nn.MLP` (2 -> 32 -> 32
-> 2, tanh), and the model's trajectory from y0 is

    y' = MLP(y),    y(0) = y0,

solved by `diffrax.diffeqsolve` with `taylorode.Taylor(order=ORDER)` at a fixed step
(`diffrax.ConstantStepSize`, DT): each step expands the solution of the network's ODE
to order 6 by Taylor-mode differentiation through the MLP, matrix products and tanh
included. The data are a known linear system, a damped spiral,

    y' = A y,    A = [[-0.1, 2], [-2, -0.1]],    y0 = (2, 0),

sampled exactly (y(t) = expm(A t) y0) at the step grid on [0, T_TRAIN], about two
turns of the spiral. Fitting one long rollout from y0 stalled when we tried it (500
Adam steps on [0, 4]: the model's trajectory fell onto a fixed point and the loss
stayed near 1), so the fit is by multiple shooting: the model is started from every STRIDE-th data point and run for
SEGMENT steps (`jax.vmap` over the starting points), and the loss is the mean squared
difference from the data along these segments. Its gradient comes from
`eqx.filter_value_and_grad` straight through the solves (diffrax's default
`RecursiveCheckpointAdjoint`), one training step is `eqx.filter_jit`-compiled, and the
optimiser is a few lines of Adam written here rather than taken from optax.

The trained model is then run from y0 alone, over the training window and on to
T_PLOT (extrapolation). The figure (`docs/img/neural_ode.png`) shows it with the data
in the phase plane and against time, and the loss curve.

Run with `python examples/neural_ode.py` (`--quick`: 10 Adam steps instead of 600;
`--out` for the figure's path). Compiling the training step (reverse mode through
the Taylor solve) takes most of the time.
"""

import argparse
import pathlib
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import scipy.linalg


matplotlib.use("Agg")
import matplotlib.pyplot as plt

import taylorode


jax.config.update("jax_enable_x64", True)

A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
Y0 = np.array([2.0, 0.0])
ORDER = 6
DT = 0.1  # the fixed step: |A| DT = 0.2, so the order-6 local error is ~ 0.2^7 / 7! ~ 3e-9
T_TRAIN = 6.0  # data on [0, T_TRAIN]: about two turns of the spiral
T_PLOT = 10.0  # the model run from y0 continues to here
SEGMENT = 10  # multiple shooting: segments of SEGMENT steps (length 1) ...
STRIDE = 2  # ... starting at every STRIDE-th data point
WIDTH, DEPTH = 32, 2
LR = 1e-2
OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "img" / "neural_ode.png"


class NeuralField(eqx.Module):
    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(2, 2, WIDTH, DEPTH, activation=jnp.tanh, key=key)

    def __call__(self, t, y, args):
        return self.mlp(y)


def trajectory(field, y0, num_steps):
    """The model's states at 0, DT, ..., num_steps DT from y0, by fixed Taylor steps."""
    ts = DT * jnp.arange(num_steps + 1, dtype=jnp.float64)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        taylorode.Taylor(order=ORDER),
        t0=0.0,
        t1=num_steps * DT,
        dt0=DT,
        y0=y0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=num_steps + 1,  # reverse mode needs a bound
    )
    return sol.ys


def loss_fn(field, segments):
    """Mean squared error along the segments, each solved from its first state."""
    pred = jax.vmap(trajectory, in_axes=(None, 0, None))(field, segments[:, 0], SEGMENT)
    return jnp.mean((pred - segments) ** 2)


def adam_init(params):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return zeros, zeros, jnp.asarray(0.0)


def adam_update(grads, state, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam step: returns (updates, new state); add the updates to the parameters."""
    m, v, k = state
    k = k + 1
    m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g**2, v, grads)
    c1, c2 = 1 - b1**k, 1 - b2**k
    updates = jax.tree_util.tree_map(lambda m, v: -lr * (m / c1) / (jnp.sqrt(v / c2) + eps), m, v)
    return updates, (m, v, k)


@eqx.filter_jit
def train_step(field, state, segments):
    value, grads = eqx.filter_value_and_grad(loss_fn)(field, segments)
    updates, state = adam_update(grads, state, LR)
    return eqx.apply_updates(field, updates), state, value


predict = eqx.filter_jit(trajectory)  # num_steps is static (a Python int)


def main(quick: bool = False, out: str | pathlib.Path | None = None) -> dict:
    """Train, plot to `out`, print a summary. Returns the initial and final loss, the
    loss history (a NumPy array) and the rms errors of the model run from y0."""
    out = pathlib.Path(OUT if out is None else out)
    steps = 10 if quick else 600
    start = time.perf_counter()

    n_train = int(round(T_TRAIN / DT)) + 1
    n_plot = int(round(T_PLOT / DT)) + 1
    ts_plot = DT * np.arange(n_plot)
    exact = np.stack([scipy.linalg.expm(A * t) @ Y0 for t in ts_plot])
    firsts = range(0, n_train - SEGMENT, STRIDE)
    segments = jnp.asarray(np.stack([exact[i : i + SEGMENT + 1] for i in firsts]))

    field = NeuralField(jax.random.PRNGKey(0))
    state = adam_init(eqx.filter(field, eqx.is_inexact_array))
    losses = []
    # One call more than `steps`: the last one only evaluates the loss (no recompile).
    for i in range(steps + 1):
        new_field, state, value = train_step(field, state, segments)
        losses.append(float(value))
        if i < steps:
            field = new_field
    losses = np.array(losses)
    model = np.asarray(predict(field, jnp.asarray(Y0), n_plot - 1))
    elapsed = time.perf_counter() - start

    train_rms = float(np.sqrt(np.mean((model[:n_train] - exact[:n_train]) ** 2)))
    extrap_rms = float(np.sqrt(np.mean((model[n_train:] - exact[n_train:]) ** 2)))

    # --- figure -------------------------------------------------------------------
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1, 1.4, 1]})
    ax0, ax1, ax2 = axes
    ax0.plot(exact[:, 0], exact[:, 1], color="0.7", lw=3, label="true (A y)")
    ax0.plot(exact[:n_train, 0], exact[:n_train, 1], "o", color="k", markersize=3,
             label="training data")
    ax0.plot(model[:, 0], model[:, 1], "--", color="C0", label="trained model, from $y_0$")
    ax0.set_xlabel("$y_1$")
    ax0.set_ylabel("$y_2$")
    ax0.set_aspect("equal", adjustable="datalim")
    ax0.legend(loc="best", fontsize="small")
    ax0.set_title("phase plane")
    for i, c in enumerate(["C0", "C1"]):
        ax1.plot(ts_plot, exact[:, i], color="0.7", lw=3)
        ax1.plot(ts_plot[:n_train], exact[:n_train, i], "o", color="k", markersize=3)
        ax1.plot(ts_plot, model[:, i], "--", color=c, label=f"model $y_{i + 1}$")
    ax1.axvspan(0, T_TRAIN, color="0.9", zorder=0, label="training window")
    ax1.set_xlabel("$t$")
    ax1.set_title(f"MLP {WIDTH}x{DEPTH} tanh vector field, Taylor(order={ORDER}), step {DT:g}")
    ax1.legend(loc="best", fontsize="small")
    ax2.semilogy(np.arange(len(losses)), losses, color="C0")
    ax2.set_xlabel("Adam step")
    ax2.set_ylabel("mean squared error")
    ax2.set_title("loss")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)

    # --- summary ------------------------------------------------------------------
    print(f"neural ODE, MLP {WIDTH}x{DEPTH} tanh, Taylor(order={ORDER}) at step {DT:g}, "
          f"{steps} Adam steps (lr {LR:g}) on y' = A y, t in [0, {T_TRAIN:g}], "
          f"{len(segments)} segments of {SEGMENT} steps")
    print(f"{'initial loss':<38}{losses[0]:>10.3e}")
    print(f"{'final loss':<38}{losses[-1]:>10.3e}")
    print(f"{'model from y0: rms error on [0, ' + f'{T_TRAIN:g}]':<38}{train_rms:>10.3e}")
    print(f"{'   and on (' + f'{T_TRAIN:g}, {T_PLOT:g}] (extrapolation)':<38}{extrap_rms:>10.3e}")
    print(f"saved {out}; {elapsed:.1f} s with compilation")
    return dict(initial_loss=float(losses[0]), final_loss=float(losses[-1]), losses=losses,
                train_rms=train_rms, extrapolation_rms=extrap_rms, seconds=elapsed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 Adam steps instead of 600")
    parser.add_argument("--out", default=str(OUT), help="figure path (default: %(default)s)")
    cli = parser.parse_args()
    main(quick=cli.quick, out=cli.out)
