"""A batch of trajectories spread over several devices with `jax.sharding` (the recipe of
the "Batches and ensembles" guide): on 8 virtual CPU devices, in a process of its own
(the device count is fixed when JAX starts), the sharded solve equals the unsharded one
and each trajectory's own solve."""

import json
import os
import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent(
    """
    import json
    import diffrax, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    jax.config.update("jax_enable_x64", True)
    import taylorode

    def kepler(t, y, args):
        r3 = jnp.sum(y[:2] ** 2) ** 1.5
        return jnp.concatenate([y[2:], -y[:2] / r3])

    def solve(y0, mu):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, a: a * kepler(t, y, None)), taylorode.Taylor(),
            0.0, 2 * np.pi, None, y0, args=mu,
            stepsize_controller=taylorode.TaylorController(rtol=1e-10, atol=1e-10),
            max_steps=10_000,
        )
        return sol.ys[-1], sol.stats["num_accepted_steps"]

    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("batch",), axis_types=(jax.sharding.AxisType.Auto,))
    batch = NamedSharding(mesh, PartitionSpec("batch"))
    e = np.linspace(0.1, 0.7, 16)
    y0s = np.stack([1 - e, 0 * e, 0 * e, np.sqrt((1 + e) / (1 - e))], axis=-1)
    mus = np.linspace(0.9, 1.1, 16)
    solve_all = jax.jit(jax.vmap(solve))
    ys, steps = solve_all(jax.device_put(y0s, batch), jax.device_put(mus, batch))
    plain_ys, plain_steps = solve_all(y0s, mus)
    one = [jax.jit(solve)(y, m) for y, m in zip(y0s, mus)]
    print(json.dumps(dict(
        devices=len(devices),
        shards=len(ys.sharding.device_set),
        vs_plain=float(np.max(np.abs(np.asarray(ys) - np.asarray(plain_ys)))),
        vs_single=float(max(np.max(np.abs(np.asarray(ys[i]) - np.asarray(o[0]))) for i, o in enumerate(one))),
        steps_equal=bool(all(int(steps[i]) == int(o[1]) for i, o in enumerate(one))),
        steps_vary=bool(len(set(np.asarray(steps).tolist())) > 1),
    )))
    """
)


def test_sharded_ensemble_on_8_devices_equals_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    env.pop("JAX_PLATFORMS", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["devices"] == 8 and r["shards"] == 8, r
    # Each trajectory keeps its own step sizes (different step counts across the batch)
    # and its own solve's: the same steps, and the same state up to rounding.
    assert r["steps_vary"] and r["steps_equal"], r
    assert r["vs_plain"] <= 1e-12 and r["vs_single"] <= 1e-11, r
