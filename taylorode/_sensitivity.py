"""Forward sensitivities: the solution of an ODE together with its first (and second)
derivatives with respect to the initial state and chosen parameters, from the
variational equations integrated alongside the state in one `diffrax.diffeqsolve`."""

import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree


class SensitivitySolution(eqx.Module):
    r"""The result of [`taylorode.forward_sensitivity`][]: a solution and its
    sensitivities, aligned with `saveat`.

    Write $y(t) = y(t; y_0, \theta)$ for the solution and $\theta$ for the selected
    leaves of `args`. Every sensitivity has exactly the layout that `jax.jacfwd` gives
    for the saved output, so it can be checked against (or swapped for) a
    differentiated solve:

    - `solution`: the `diffrax.Solution` of $y$: `ts`, `ys` (of the structure of
        `y0` with the leading save axis, as from `diffeqsolve` with the same `saveat`),
        `stats`, `result`. Its `solver_state`/`controller_state`, when requested, are
        those of the augmented solve.
    - `dy_dy0`: $\partial y / \partial y_0$, the PyTree
        `jax.jacfwd(lambda y0: diffeqsolve(..., y0, ...).ys)(y0)`: for every leaf of
        `ys` of shape `(T, *o)` and every leaf of `y0` of shape `i`, an array of shape
        `(T, *o, *i)`, nested output leaf first, then the `y0` structure. `None` with
        `wrt_y0=False`.
    - `dy_dargs`: $\partial y / \partial \theta$, the PyTree
        `jax.jacfwd(lambda theta: diffeqsolve(..., eqx.combine(theta, rest)).ys)(theta)`
        where `theta, rest = eqx.partition(args, wrt_args)` (the selected leaves as
        arrays, `None` elsewhere): arrays of shape `(T, *o, *j)` for a selected leaf of
        shape `j`. `None` when no leaf of `args` is selected.
    - `d2y_dy0dy0`: $\partial^2 y / \partial y_0^2$, as
        `jax.jacfwd(jax.jacfwd(f))(y0)` (= `jax.hessian(f)(y0)`): shape
        `(T, *o, *i, *k)` for `y0` leaves `i`, `k`. Only with `second_order=True`.
    - `d2y_dy0dargs`: $\partial^2 y / \partial y_0 \partial \theta$, as
        `jax.jacfwd(jax.jacfwd(f, argnums=0), argnums=1)(y0, theta)`: shape
        `(T, *o, *i, *j)`. Only with `second_order=True`.
    - `d2y_dargsdargs`: $\partial^2 y / \partial \theta^2$, as
        `jax.hessian(f)(theta)`: shape `(T, *o, *j, *l)`. Only with
        `second_order=True`.

    With `SaveAt(subs=...)` or a `SaveAt(fn=...)`, "`ys`" above is whatever
    `diffeqsolve` would return as `sol.ys` (the PyTree of the subs, each leaf what its
    `fn` returns), and its sensitivities are those of that output.

    The properties `ts`, `ys`, `stats` and `result` are those of `solution`.
    """

    solution: diffrax.Solution
    dy_dy0: PyTree | None
    dy_dargs: PyTree | None
    d2y_dy0dy0: PyTree | None = None
    d2y_dy0dargs: PyTree | None = None
    d2y_dargsdargs: PyTree | None = None

    @property
    def ts(self):
        return self.solution.ts

    @property
    def ys(self):
        return self.solution.ys

    @property
    def stats(self):
        return self.solution.stats

    @property
    def result(self):
        return self.solution.result


def forward_sensitivity(
    terms: diffrax.ODETerm,
    solver: diffrax.AbstractSolver,
    t0: Any,
    t1: Any,
    dt0: Any,
    y0: PyTree,
    args: PyTree = None,
    *,
    saveat: diffrax.SaveAt = diffrax.SaveAt(t1=True),
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.ConstantStepSize(),
    wrt_y0: bool = True,
    wrt_args: bool | PyTree[bool] | Callable[[Any], bool] = True,
    second_order: bool = False,
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint(),
    max_steps: int | None = 4096,
    throw: bool = True,
    progress_meter: diffrax.AbstractProgressMeter = diffrax.NoProgressMeter(),
) -> SensitivitySolution:
    r"""Solve an ODE together with its forward sensitivities with respect to the
    initial state and chosen parameters (the variational equations).

    For $y' = f(t, y, \text{args})$ let $z = (y_0, \theta)$, flattened to a vector of
    length $m$, collect the initial state and the selected leaves $\theta$ of `args`.
    The sensitivities $S = \partial y / \partial z$ ($n \times m$) and, with
    `second_order=True`, $S_2 = \partial^2 y / \partial z^2$ ($n \times m \times m$)
    solve the first and second variational equations

    $$S' = f_y S + f_\theta E_\theta, \qquad
    S_2' = f_y S_2 + f_{yy}[S, S] + f_{y\theta}[S, E_\theta] + f_{\theta y}[E_\theta, S]
    + f_{\theta\theta}[E_\theta, E_\theta],$$

    with $S(t_0) = [I\ 0]$, $S_2(t_0) = 0$ and $E_\theta$ the selection of the
    parameter components of $z$ (Hairer, Nørsett & Wanner I, §I.14). They are
    written here as derivatives of one function: with
    $F(e) = f(t,\ y + S e + \tfrac12 S_2[e, e],\ \theta + E_\theta e)$, the
    augmented field is $(F(0), F'(0), F''(0))$, computed as directional derivatives
    (`jax.jvp`, vectorised with `jax.vmap`) along the $m$ columns of $S$ and, for
    $F''$, the $m^2$ pairs of columns. The augmented state $(y, S, S_2)$ is
    integrated in one `diffrax.diffeqsolve` with your solver and step-size
    controller, as heyoka's variational integrator does: with [`taylorode.Taylor`][]
    the Taylor coefficients of the sensitivities come from the same engine as those of
    $y$ (it expands the differentiated program like any other); any diffrax solver
    (`Dopri8`, `Tsit5`, ...) works too.

    **Error control sees the sensitivities.** They are part of the state, so the
    controller's tolerances apply to every entry of $S$ (and $S_2$) as to $y$, and
    steps are as small as the least smooth of them needs: on a chaotic or unstable
    problem the sensitivities grow, and so does the work. (Without this, a solution
    that is locally flat while its sensitivities are not, e.g. $y \equiv 0$ for
    $y' = -k y$, $y_0 = 0$, would allow arbitrarily long, wrong steps.) Rescale
    parameters to make their sensitivities of comparable size, or give the
    controller a `norm`: it receives the scaled error of the augmented state,
    `(y, (S,))` or `(y, (S, S2))`, with `S` and `S2` shaped like `y` with one or two
    trailing axes of length `m`; e.g. `diffrax.PIDController(...,
    norm=lambda e: optimistix.rms_norm(e[0]))` controls `y` alone (at your risk).

    The returned sensitivities are those of the *exact* variational equations solved
    numerically, not derivatives of the numerical solution (as `jax.jacfwd` through
    `diffeqsolve` gives); both converge to the same thing as the tolerance shrinks.
    The call is `jax.jit`-compiled (once per solver, controller, `saveat` structure
    and shapes) and works under `jax.vmap` and `jax.jit`.

    **Arguments:**

    - `terms`: a `diffrax.ODETerm` of the vector field `f(t, y, args)`. Any other
        term raises a `ValueError`.
    - `solver`: any diffrax ODE solver, such as [`taylorode.Taylor`][] or
        `diffrax.Dopri8()`.
    - `t0`, `t1`, `dt0`: as in `diffrax.diffeqsolve`.
    - `y0`: the initial state, a PyTree of floating-point arrays.
    - `args`: passed to the vector field; its selected leaves are the parameters.
    - `saveat`: a `diffrax.SaveAt` (`t0`, `t1`, `ts`, `steps`, `fn`, `subs`);
        the sensitivities are saved where the solution is, and of what `fn` returns.
        `dense=True` is not supported.
    - `stepsize_controller`: as in `diffrax.diffeqsolve`; it controls the whole
        augmented state (see above).
    - `wrt_y0`: whether to compute derivatives with respect to `y0`.
    - `wrt_args`: which leaves of `args` are parameters: `True` (every floating-point
        leaf: arrays and Python floats), `False` (none), a PyTree of bools that is a
        prefix of `args`, or a function from leaf to bool (as `filter_spec` in
        `eqx.partition`). Selected leaves must be floating point.
    - `second_order`: also compute the second derivatives. They cost $m(m+1)/2$ more
        equations per state component ($m^2$ directional derivatives of $f$ are
        evaluated).
    - `adjoint`, `max_steps`, `throw`, `progress_meter`: as in
        `diffrax.diffeqsolve`.

    **Returns:**

    A [`taylorode.SensitivitySolution`][]: the solution and the sensitivities
    `dy_dy0`, `dy_dargs` (and, with `second_order=True`, `d2y_dy0dy0`,
    `d2y_dy0dargs`, `d2y_dargsdargs`) saved at the times of `saveat`, each in the
    layout of `jax.jacfwd` of the saved output.

    **Raises:**

    - `ValueError` for a term that is not a `diffrax.ODETerm`, a non-floating `y0` or
        selected `args` leaf, `SaveAt(dense=True)`, or nothing to differentiate with
        respect to.

    ??? cite "References"

        ```bibtex
        @book{hairer1993solving,
            author={Hairer, Ernst and N{\o}rsett, Syvert P. and Wanner, Gerhard},
            title={Solving Ordinary Differential Equations {I}: Nonstiff Problems},
            edition={2},
            series={Springer Series in Computational Mathematics},
            volume={8},
            publisher={Springer},
            year={1993},
            note={Section I.14, ``Differentiation with respect to initial values
                  and parameters''}
        }

        @misc{heyoka_variational,
            author={Biscani, Francesco and Izzo, Dario},
            title={heyoka.py: variational ODE systems ({\tt heyoka.var\_ode\_sys},
                   since version 5.0.0, and its tutorial)},
            howpublished={\url{https://bluescarni.github.io/heyoka.py/}}
        }
        ```
    """
    if not isinstance(terms, diffrax.ODETerm):
        raise ValueError(
            "`forward_sensitivity` differentiates an ordinary differential equation "
            "y' = f(t, y, args) and needs `terms` to be a `diffrax.ODETerm(f)`; got "
            f"{type(terms).__name__}. Control and SDE terms are not supported; a sum of "
            "vector fields (MultiTerm of ODETerms) can be written as one ODETerm."
        )
    if not isinstance(saveat, diffrax.SaveAt):
        raise ValueError(f"`saveat` must be a `diffrax.SaveAt`; got {type(saveat).__name__}.")
    if saveat.dense:
        raise ValueError(
            "`forward_sensitivity` saves sensitivities at the points of `saveat` and "
            "does not support `SaveAt(dense=True)`; ask for the times you need with "
            "`SaveAt(ts=...)`."
        )
    y0 = jtu.tree_map(jnp.asarray, y0)
    y_leaves = jtu.tree_leaves(y0)
    if not y_leaves:
        raise ValueError("`y0` has no leaves; there is no state to integrate.")
    for leaf in y_leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(
                "Sensitivities are derivatives, so every leaf of `y0` must be a real "
                f"floating-point array; got dtype {leaf.dtype}."
            )
    if wrt_args is True:
        theta, rest = eqx.partition(args, _is_real_float)
    elif wrt_args is False:
        theta, rest = None, args
    else:
        theta, rest = eqx.partition(args, wrt_args)
    y_dtype = y_leaves[0].dtype

    def parameter(x):
        if not _is_real_float(x):
            raise ValueError(
                f"`wrt_args` selects a leaf of `args` that is not real floating point "
                f"({_describe(x)}); only real floating-point arrays and Python floats "
                "can be differentiated."
            )
        # A Python float (weakly typed) becomes an array of the state's dtype, as it
        # would in arithmetic with the state; arrays keep theirs.
        return jnp.asarray(x, y_dtype) if isinstance(x, float) else jnp.asarray(x)

    theta = jtu.tree_map(parameter, theta)
    n_y = sum(math.prod(leaf.shape) for leaf in y_leaves) if wrt_y0 else 0
    n_theta = sum(math.prod(leaf.shape) for leaf in jtu.tree_leaves(theta))
    if n_y + n_theta == 0:
        raise ValueError(
            "Nothing to differentiate with respect to: `wrt_y0=False` and no "
            "floating-point leaf of `args` is selected by `wrt_args`."
        )
    return _forward_sensitivity(
        terms,
        solver,
        t0,
        t1,
        dt0,
        y0,
        theta,
        rest,
        saveat,
        stepsize_controller,
        bool(wrt_y0),
        bool(second_order),
        adjoint,
        max_steps,
        throw,
        progress_meter,
    )


def _is_real_float(x) -> bool:
    """A real floating-point array (traced or not) or Python float: the leaves of
    `args` that `wrt_args=True` selects."""
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return bool(jnp.issubdtype(x.dtype, jnp.floating))
    return isinstance(x, float)


def _describe(x) -> str:
    dtype = getattr(x, "dtype", None)
    return f"dtype {dtype}" if dtype is not None else f"a {type(x).__name__}"


def _specs(leaves):
    """`(offset, size, shape)` of each leaf in the flattened vector of all of them."""
    specs, offset = [], 0
    for leaf in leaves:
        size = math.prod(leaf.shape)
        specs.append((offset, size, leaf.shape))
        offset += size
    return specs


def _split_last(x, specs, treedef):
    """Split the last axis of `x` (one entry per flattened input) into the input's
    PyTree: leaves of shape `(*x.shape[:-1], *shape)`, the `jax.jacfwd` layout."""
    prefix = x.shape[:-1]
    return jtu.tree_unflatten(
        treedef, [jnp.reshape(x[..., o : o + s], prefix + shape) for o, s, shape in specs]
    )


def _split_last_two(x, specs_a, treedef_a, specs_b, treedef_b):
    """Split the last two axes of `x` into the input PyTrees `a` (outer) and `b`
    (inner): leaves of shape `(*x.shape[:-2], *shape_a, *shape_b)`."""
    prefix = x.shape[:-2]
    return jtu.tree_unflatten(
        treedef_a,
        [
            jtu.tree_unflatten(
                treedef_b,
                [
                    jnp.reshape(x[..., oa : oa + sa, ob : ob + sb], prefix + sha + shb)
                    for ob, sb, shb in specs_b
                ],
            )
            for oa, sa, sha in specs_a
        ],
    )


# diffrax's default `fn`, which saves the state itself.
_SAVE_Y = diffrax.SubSaveAt(t1=True).fn


def _is_subsaveat(x):
    return isinstance(x, diffrax.SubSaveAt)


@eqx.filter_jit
def _forward_sensitivity(
    terms,
    solver,
    t0,
    t1,
    dt0,
    y0,
    theta,
    rest,
    saveat,
    stepsize_controller,
    wrt_y0,
    second_order,
    adjoint,
    max_steps,
    throw,
    progress_meter,
):
    y_leaves, y_treedef = jtu.tree_flatten(y0)
    y_specs = _specs(y_leaves)
    theta_leaves, theta_treedef = jtu.tree_flatten(theta)
    theta_specs = _specs(theta_leaves)
    n_y = sum(s for _, s, _ in y_specs) if wrt_y0 else 0
    n_theta = sum(s for _, s, _ in theta_specs)
    m = n_y + n_theta

    def expand(g, y, sens, theta, rest):
        """`g(y, args)` and its first (and second) derivatives with respect to `z`
        along the solution's sensitivities: per output leaf of shape `o`, arrays
        `(*o, m)` (and `(*o, m, m)`), by directional derivatives (`jax.jvp`) along the
        columns of `S` (and the pairs of columns of `S, S2`)."""
        # The parameters' tangent directions: column n_y + o + i is leaf entry i.
        e_theta = jtu.tree_unflatten(
            theta_treedef,
            [
                jnp.reshape(jnp.eye(s, m, k=n_y + o, dtype=leaf.dtype), shape + (m,))
                for leaf, (o, s, shape) in zip(jtu.tree_leaves(theta), theta_specs)
            ],
        )

        def value(y, theta):
            return g(y, eqx.combine(theta, rest))

        def first(y, s1, theta):
            # F(0) and dF/dz = g_y S + g_theta E_theta, one column at a time.
            def column(s, e):
                return jax.jvp(value, (y, theta), (s, e))

            return jax.vmap(column, in_axes=-1, out_axes=(None, -1))(s1, e_theta)

        if not second_order:
            out, jac = first(y, sens[0], theta)
            return out, (jac,)

        # d/dz_k of (F, dF/dz) along the solution, where dS/dz_k = S2[..., k]: that is
        # g_y S2 + g_yy[S, S] + g_y theta[S, E] + ... (the second variational
        # equation), one column k at a time.
        def column2(s, s2, e):
            return jax.jvp(first, (y, sens[0], theta), (s, s2, e))

        (out, jac), (_, hess) = jax.vmap(
            column2, in_axes=-1, out_axes=((None, None), (-1, -1))
        )(sens[0], sens[1], e_theta)
        return out, (jac, hess)

    def vector_field(t, state, args):
        y, sens = state
        return expand(lambda y, args: terms.vf(t, y, args), y, sens, *args)

    def wrap_fn(fn):
        if fn is _SAVE_Y:
            return fn  # the augmented state already holds (y, S, S2).

        def wrapped(t, state, args):
            y, sens = state
            return expand(lambda y, args: fn(t, y, args), y, sens, *args)

        return wrapped

    subs, subs_treedef = jtu.tree_flatten(saveat.subs, is_leaf=_is_subsaveat)
    new_subs = [
        diffrax.SubSaveAt(t0=s.t0, t1=s.t1, ts=s.ts, steps=s.steps, fn=wrap_fn(s.fn))
        for s in subs
    ]
    aug_saveat = diffrax.SaveAt(
        subs=jtu.tree_unflatten(subs_treedef, new_subs),
        solver_state=saveat.solver_state,
        controller_state=saveat.controller_state,
        made_jump=saveat.made_jump,
    )

    s1_0 = []
    for leaf, (o, s, shape) in zip(y_leaves, y_specs):
        if wrt_y0:
            s1 = jnp.eye(s, m, k=o, dtype=leaf.dtype)
        else:
            s1 = jnp.zeros((s, m), leaf.dtype)
        s1_0.append(jnp.reshape(s1, shape + (m,)))
    sens0 = (jtu.tree_unflatten(y_treedef, s1_0),)
    if second_order:
        sens0 = sens0 + (jtu.tree_map(lambda y: jnp.zeros(y.shape + (m, m), y.dtype), y0),)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0,
        t1,
        dt0,
        (y0, sens0),
        # The parameters and the rest of `args`, through diffrax (not closed over), so
        # that adjoints and transformations see them as they see `args`.
        (theta, rest),
        saveat=aug_saveat,
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
        throw=throw,
        progress_meter=progress_meter,
    )

    ys, dy_dy0, dy_dargs, d2_yy, d2_ya, d2_aa = [], [], [], [], [], []
    for out, sens in subs_treedef.flatten_up_to(sol.ys):
        ys.append(out)
        jac = sens[0]
        if wrt_y0:
            dy_dy0.append(
                jtu.tree_map(lambda j: _split_last(j[..., :n_y], y_specs, y_treedef), jac)
            )
        if n_theta:
            dy_dargs.append(
                jtu.tree_map(
                    lambda j: _split_last(j[..., n_y:], theta_specs, theta_treedef), jac
                )
            )
        if second_order:
            hess = sens[1]
            if wrt_y0:
                d2_yy.append(
                    jtu.tree_map(
                        lambda h: _split_last_two(
                            h[..., :n_y, :n_y], y_specs, y_treedef, y_specs, y_treedef
                        ),
                        hess,
                    )
                )
            if wrt_y0 and n_theta:
                d2_ya.append(
                    jtu.tree_map(
                        lambda h: _split_last_two(
                            h[..., :n_y, n_y:], y_specs, y_treedef, theta_specs, theta_treedef
                        ),
                        hess,
                    )
                )
            if n_theta:
                d2_aa.append(
                    jtu.tree_map(
                        lambda h: _split_last_two(
                            h[..., n_y:, n_y:],
                            theta_specs,
                            theta_treedef,
                            theta_specs,
                            theta_treedef,
                        ),
                        hess,
                    )
                )

    def unflatten(parts):
        return jtu.tree_unflatten(subs_treedef, parts) if parts else None

    solution = eqx.tree_at(lambda s: s.ys, sol, unflatten(ys))
    return SensitivitySolution(
        solution=solution,
        dy_dy0=unflatten(dy_dy0),
        dy_dargs=unflatten(dy_dargs),
        d2y_dy0dy0=unflatten(d2_yy),
        d2y_dy0dargs=unflatten(d2_ya),
        d2y_dargsdargs=unflatten(d2_aa),
    )
