"""Vector fields that switch inside a step (non-smooth fields), with accurate references.

Each `Problem` has the vector field `f(t, y, args)` written the way users write it with
`jax.numpy` (`jnp.sign`, `jnp.clip`, `jnp.where`, `jnp.interp`, an `equinox.nn.MLP`
with relu, ...), a float64 `y0`, a short horizon `[t0, t1]`, and a reference value of
y(t1) from scipy's `solve_ivp`.

**References.** The field is smooth between its switches, so the reference is
integrated piece by piece, each piece with the smooth *branch* of the field that holds
there (`branch(mode, tm)`, a NumPy function that never switches):

- time switches (`breaks`: table nodes, the `t < 0.5` of a `where`, the jumps of a
  `floor`) end the pieces at known times, and the branch of a piece is chosen from its
  midpoint `tm`, so no stage of a step is ever evaluated on the wrong side;
- state switches are found with scipy `events`: `exits(mode)` lists, for the branch
  in force, the switching functions whose zero ends it, each with the direction in which
  it leaves the branch (so an event does not fire again at the restart point, where it
  is zero), and `after(mode, i)` is the branch on the other side of exit `i`. Since the
  branch is smooth through the switch, scipy's dense output locates the switch to the
  integration tolerance.

`reference(problem)` is DOP853 at rtol = 1e-13, atol = 1e-15; `reference_check(problem)`
repeats it with Radau at the same tolerances (an independent method) for the tests to
compare, and `reference_pieces(problem)` returns the pieces (start, end, mode, midpoint,
dense output) so the tests can check that each branch is the user's field where it was
used. All are computed once per session (`functools.cache`).

None of the problems slides along a switching surface (Coulomb friction is chosen to stop
well away from sticking): there the field chatters and the solution is a Filippov one,
which neither the reference nor a pointwise evaluation of the field defines.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from scipy.integrate import solve_ivp


REFERENCE_RTOL = 1e-13
REFERENCE_ATOL = 1e-15


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    name: str
    f: Callable  # f(t, y, args), jax.numpy, as a user writes it
    y0: np.ndarray  # float64
    t1: float
    # The reference's description of the field: smooth branches and their switches.
    branch: Callable[[Any, float], Callable]  # (mode, tm) -> g(t, y), NumPy
    mode0: Any = None
    exits: Callable[[Any], Sequence[tuple[Callable, int]]] = lambda mode: ()
    after: Callable[[Any, int], Any] = lambda mode, i: mode
    breaks: tuple[float, ...] = ()
    t0: float = 0.0
    note: str = ""

    def __repr__(self):
        return f"Problem({self.name!r})"


def _piecewise(p: Problem, method: str, rtol: float, atol: float):
    """y(t1) of `p` and the pieces, integrated branch by branch (see the module docstring)."""
    edges = [p.t0] + sorted(b for b in p.breaks if p.t0 < b < p.t1) + [p.t1]
    t, y, mode = p.t0, np.array(p.y0, dtype=np.float64), p.mode0
    pieces = []
    for a, b in zip(edges[:-1], edges[1:]):
        tm = 0.5 * (a + b)
        for _ in range(1000):
            exits = list(p.exits(mode))
            events = []
            for g, direction in exits:
                event = (lambda t_, y_, g=g: g(t_, y_))
                event.terminal = True
                event.direction = direction
                events.append(event)
            sol = solve_ivp(
                p.branch(mode, tm),
                (t, b),
                y,
                method=method,
                rtol=rtol,
                atol=atol,
                events=events or None,
                dense_output=True,
            )
            if not sol.success and sol.status != 1:
                raise RuntimeError(f"{p.name}: reference {method} failed: {sol.message}")
            if sol.status == 1:
                hit = [te[0] if len(te) else math.inf for te in sol.t_events]
                i = int(np.argmin(hit))
                t_new, y = float(sol.t_events[i][0]), np.array(sol.y_events[i][0])
                pieces.append((t, t_new, mode, tm, sol.sol))
                t, mode = t_new, p.after(mode, i)
            else:
                pieces.append((t, b, mode, tm, sol.sol))
                t, y = b, sol.y[:, -1]
                break
        else:
            raise RuntimeError(f"{p.name}: more than 1000 switches in one piece")
    return y, tuple(pieces)


@functools.cache
def _reference(name: str, method: str):
    return _piecewise(PROBLEMS_BY_NAME[name], method, REFERENCE_RTOL, REFERENCE_ATOL)


def reference(p: Problem) -> np.ndarray:
    """y(t1): DOP853, piecewise, rtol = 1e-13, atol = 1e-15."""
    return _reference(p.name, "DOP853")[0]


def reference_check(p: Problem) -> np.ndarray:
    """y(t1) again with Radau (independent method), to validate `reference`."""
    return _reference(p.name, "Radau")[0]


def reference_pieces(p: Problem):
    """(t_start, t_end, mode, tm, dense output) of each piece of the DOP853 reference."""
    return _reference(p.name, "DOP853")[1]


def _sign_exits(index):
    """Exits of a two-branch field switching on the sign of y[index]; mode = +1 / -1."""

    def exits(mode):
        g = lambda t, y: y[index]
        return [(g, -1 if mode > 0 else +1)]

    return exits


_flip = lambda mode, i: -mode


# ---------------------------------------------------------------------------------------
# 1. Pendulum with the angle wrapped into [-pi, pi). The wrap switches (jnp.mod jumps by
# 2 pi) but sin is 2 pi-periodic, so the field itself is smooth: the branch is -sin(theta).
# Energy 3.125 > 2: it rotates, wrapping at theta = pi and 3 pi.


def pendulum_wrapped(t, y, args):
    theta, omega = y[0], y[1]
    wrapped = jnp.mod(theta + jnp.pi, 2 * jnp.pi) - jnp.pi
    return jnp.stack([omega, -jnp.sin(wrapped)])


# ---------------------------------------------------------------------------------------
# 2. Spring with saturation: x'' = -clip(4 x, -0.5, 0.5). Switches at x = +-0.125.


def spring_saturation(t, y, args):
    x, v = y[0], y[1]
    return jnp.stack([v, -jnp.clip(4 * x, -0.5, 0.5)])


def _spring_saturation_branch(mode, tm):
    if mode == 0:
        return lambda t, y: np.array([y[1], -4 * y[0]])
    return lambda t, y: np.array([y[1], -0.5 * mode])


def _spring_saturation_exits(mode):
    upper = lambda t, y: 4 * y[0] - 0.5
    lower = lambda t, y: 4 * y[0] + 0.5
    if mode == 1:
        return [(upper, -1)]
    if mode == -1:
        return [(lower, +1)]
    return [(upper, +1), (lower, -1)]


def _spring_saturation_after(mode, i):
    if mode != 0:
        return 0
    return 1 if i == 0 else -1


# ---------------------------------------------------------------------------------------
# 3. Tabulated forcing, linear interpolation in a coarse 6-node table (held constant
# after its last node): x'' = -x + interp(t). The forcing's slope jumps at the nodes.

T_TAB = np.linspace(0.0, 3.0, 6)
F_TAB = np.array([0.0, 1.0, -0.5, 0.8, 0.2, -0.3])


def table_forcing(t, y, args):
    x, v = y[0], y[1]
    return jnp.stack([v, -x + jnp.interp(t, T_TAB, F_TAB)])


# ---------------------------------------------------------------------------------------
# 4. Coulomb friction: x'' = -x - mu sign(v). mu = 0.1; the turning points (x = 1.02,
# -0.82 before t1) stay outside |x| <= mu, so the mass never sticks.

MU = 0.1


def coulomb_friction(t, y, args):
    x, v = y[0], y[1]
    return jnp.stack([v, -x - MU * jnp.sign(v)])


# ---------------------------------------------------------------------------------------
# 5. a'' = -log1p(a^2) sign(a): an oscillator whose force is C^1 but not C^2 at a = 0.


def log1p_sign(t, y, args):
    a, b = y[0], y[1]
    return jnp.stack([b, -jnp.log1p(a**2) * jnp.sign(a)])


# ---------------------------------------------------------------------------------------
# 6. Quadratic drag, thrown up: v' = -g - c v |v|; v crosses 0 at t = 1.60.

G, C_DRAG = 1.0, 0.5


def quadratic_drag(t, y, args):
    v = y[1]
    return jnp.stack([v, -G - C_DRAG * v * jnp.abs(v)])


# ---------------------------------------------------------------------------------------
# 7. An equinox MLP (2 -> 8 -> 8 -> 2, relu) as the vector field: piecewise affine,
# switching where a hidden pre-activation crosses 0 (about 8 times before t1).

MLP = eqx.nn.MLP(2, 2, width_size=8, depth=2, key=jr.PRNGKey(4), dtype=jnp.float64)


def mlp_relu(t, y, args):
    return MLP(y)


def _mlp_weights():
    return [(np.asarray(layer.weight), np.asarray(layer.bias)) for layer in MLP.layers]


def _mlp_preactivations(mode, y):
    """Pre-activations of the hidden units with the relu masks `mode`, and the output."""
    (W1, b1), (W2, b2), (W3, b3) = _mlp_weights()
    z1 = W1 @ y + b1
    h = np.where(mode[0], z1, 0.0)
    z2 = W2 @ h + b2
    h = np.where(mode[1], z2, 0.0)
    return (z1, z2), W3 @ h + b3


def _mlp_mode0():
    (W1, b1), (W2, b2), _ = _mlp_weights()
    z1 = W1 @ MLP_Y0 + b1
    z2 = W2 @ np.maximum(z1, 0.0) + b2
    return (tuple(bool(z > 0) for z in z1), tuple(bool(z > 0) for z in z2))


def _mlp_exits(mode):
    exits = []
    for layer in range(2):
        for j, active in enumerate(mode[layer]):
            g = lambda t, y, layer=layer, j=j: _mlp_preactivations(mode, y)[0][layer][j]
            exits.append((g, -1 if active else +1))
    return exits


def _mlp_after(mode, i):
    layer, j = divmod(i, len(mode[0]))
    masks = [list(mode[0]), list(mode[1])]
    masks[layer][j] = not masks[layer][j]
    return (tuple(masks[0]), tuple(masks[1]))


MLP_Y0 = np.array([1.0, 0.0])


# ---------------------------------------------------------------------------------------
# 8. Forcing switched in time: x'' = -x + where(t < 0.5, 1, -1).


def where_time(t, y, args):
    x, v = y[0], y[1]
    return jnp.stack([v, -x + jnp.where(t < 0.5, 1.0, -1.0)])


# ---------------------------------------------------------------------------------------
# 9. State switch: y' = where(y < 0.5, 1, 0.1), per component. Exact: each component
# reaches 0.5 at t = 0.5 - y0 and then grows at 0.1, so y(2) = (0.65, 0.68).


def where_state(t, y, args):
    return jnp.where(y < 0.5, 1.0, 0.1)


WHERE_STATE_EXACT = np.array([0.65, 0.68])


def _where_state_exits(mode):
    exits = []
    for i, below in enumerate(mode):
        exits.append((lambda t, y, i=i: y[i] - 0.5, +1 if below else -1))
    return exits


def _where_state_after(mode, i):
    return tuple((not m) if k == i else m for k, m in enumerate(mode))


# ---------------------------------------------------------------------------------------
# 10. (extra) Relay feedback with jnp.heaviside: a damped oscillator pushed by a unit
# force while x < 0.


def relay_heaviside(t, y, args):
    x, v = y[0], y[1]
    return jnp.stack([v, -x - 0.1 * v + jnp.heaviside(-x, 0.5)])


# ---------------------------------------------------------------------------------------
# 11. (extra) Contact force jnp.maximum(-x, 0): a ball falling under unit gravity onto a
# stiff spring floor (k = 100), bouncing twice before t1.

K_CONTACT = 100.0


def contact_maximum(t, y, args):
    x, v = y[0], y[1]
    return jnp.stack([v, -1.0 + K_CONTACT * jnp.maximum(-x, 0.0)])


# ---------------------------------------------------------------------------------------
# 12. (extra) Piecewise-constant (staircase) forcing with jnp.floor, jumping every 0.5.


def floor_forcing(t, y, args):
    x, v = y[0], y[1]
    return jnp.stack([v, -x + 0.25 * jnp.floor(2.0 * t)])


# ---------------------------------------------------------------------------------------


def _second_order(force):
    """Branch for a state (x, v) with x'' = force(t, x, v)."""
    return lambda t, y: np.array([y[1], force(t, y[0], y[1])])


PROBLEMS = [
    Problem(
        "pendulum_wrapped",
        pendulum_wrapped,
        np.array([0.0, 2.5]),
        5.0,
        branch=lambda mode, tm: _second_order(lambda t, x, v: -np.sin(x)),
        note="jnp.mod wrap; the field is smooth (sin is periodic)",
    ),
    Problem(
        "spring_saturation",
        spring_saturation,
        np.array([1.0, 0.0]),
        5.0,
        branch=_spring_saturation_branch,
        mode0=1,
        exits=_spring_saturation_exits,
        after=_spring_saturation_after,
        note="jnp.clip, switches at x = +-0.125",
    ),
    Problem(
        "table_forcing",
        table_forcing,
        np.array([0.5, 0.0]),
        3.5,
        branch=lambda mode, tm: _second_order(lambda t, x, v: -x + np.interp(t, T_TAB, F_TAB)),
        breaks=tuple(T_TAB),
        note="jnp.interp, 6 nodes, kinks in t",
    ),
    Problem(
        "coulomb_friction",
        coulomb_friction,
        np.array([1.0, 0.2]),
        5.0,
        branch=lambda mode, tm: _second_order(lambda t, x, v: -x - MU * mode),
        mode0=1,
        exits=_sign_exits(1),
        after=_flip,
        note="jnp.sign(v), jumps at v = 0, no sticking",
    ),
    Problem(
        "log1p_sign",
        log1p_sign,
        np.array([1.5, 0.5]),
        5.0,
        branch=lambda mode, tm: _second_order(lambda t, x, v: -np.log1p(x**2) * mode),
        mode0=1,
        exits=_sign_exits(0),
        after=_flip,
        note="log1p(a^2) sign(a), C^1 at a = 0",
    ),
    Problem(
        "quadratic_drag",
        quadratic_drag,
        np.array([0.0, 3.0]),
        4.0,
        branch=lambda mode, tm: _second_order(lambda t, x, v: -G - C_DRAG * mode * v * v),
        mode0=1,
        exits=_sign_exits(1),
        after=_flip,
        note="v |v|, C^1 at v = 0",
    ),
    Problem(
        "mlp_relu",
        mlp_relu,
        MLP_Y0,
        5.0,
        branch=lambda mode, tm: (lambda t, y: _mlp_preactivations(mode, y)[1]),
        mode0=_mlp_mode0(),
        exits=_mlp_exits,
        after=_mlp_after,
        note="eqx.nn.MLP relu, piecewise affine",
    ),
    Problem(
        "where_time",
        where_time,
        np.array([0.0, 0.0]),
        2.0,
        branch=lambda mode, tm: _second_order(lambda t, x, v: -x + (1.0 if tm < 0.5 else -1.0)),
        breaks=(0.5,),
        note="jnp.where(t < 0.5, ...), jump in t",
    ),
    Problem(
        "where_state",
        where_state,
        np.array([0.0, 0.3]),
        2.0,
        branch=lambda mode, tm: (lambda t, y: np.where(mode, 1.0, 0.1)),
        mode0=(True, True),
        exits=_where_state_exits,
        after=_where_state_after,
        note="jnp.where(y < 0.5, 1, 0.1), jump in y",
    ),
    Problem(
        "relay_heaviside",
        relay_heaviside,
        np.array([0.5, 0.0]),
        5.0,
        branch=lambda mode, tm: _second_order(lambda t, x, v: -x - 0.1 * v + (1.0 if mode < 0 else 0.0)),
        mode0=1,
        exits=_sign_exits(0),
        after=_flip,
        note="jnp.heaviside(-x, 0.5), jump at x = 0",
    ),
    Problem(
        "contact_maximum",
        contact_maximum,
        np.array([1.0, 0.0]),
        5.0,
        branch=lambda mode, tm: _second_order(lambda t, x, v: -1.0 - (K_CONTACT * x if mode < 0 else 0.0)),
        mode0=1,
        exits=_sign_exits(0),
        after=_flip,
        note="jnp.maximum(-x, 0), kink at x = 0",
    ),
    Problem(
        "floor_forcing",
        floor_forcing,
        np.array([0.2, -0.3]),
        2.75,
        branch=lambda mode, tm: _second_order(lambda t, x, v: -x + 0.25 * np.floor(2.0 * tm)),
        breaks=(0.5, 1.0, 1.5, 2.0, 2.5),
        note="jnp.floor(2 t), jumps in t",
    ),
]

PROBLEMS_BY_NAME = {p.name: p for p in PROBLEMS}

assert MLP.layers[0].weight.dtype == jnp.float64, "import with jax_enable_x64 set"
assert all(p.y0.dtype == np.float64 for p in PROBLEMS)
