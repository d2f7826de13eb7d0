"""taylorode's own Taylor-mode engine: per-primitive recurrences over a jaxpr."""

import functools
import os
from typing import ClassVar

import equinox as eqx
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax import lax
from jaxtyping import Array

from .._custom_taylor import CUSTOM_RULES
from .._errors import TaylorRuleError
from . import _rules_linalg  # noqa: F401  (registers the linear-algebra rules into RULES)
from ._base import AbstractTaylorMethod, SwitchSeries, flatten_state, output_leaves
from ._batching import batch_scalars
from ._collect import collecting, current
from ._rules import (
    CUSTOM_JVP_RULES,
    LINEAR,
    RULES,
    ZERO_DERIVATIVE,
    Const,
    coeff,
    linear_rule,
    series_of,
)
from ._series import kept
from ._state import flatten, snapshot, unflatten
from ._switches import NOT_SWITCHES, SWITCHING, is_real_series, switching_series


# Primitives that call a sub-jaxpr: expanded inline.
_CALLS = {
    "jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
    "remat": "jaxpr", "checkpoint": "jaxpr", "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}


_ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))


def _where(eqn) -> str | None:
    """`file:line (function)` of the user code that produced an equation, if known (not
    for equations this engine traced itself, such as a custom JVP's program: their
    callers pass the place of the call instead. The engine's rewrites of the user's
    jaxpr, such as `_batching.py`, keep the original source information.)"""
    try:
        from jax._src import source_info_util

        frame = source_info_util.user_frame(eqn.source_info.traceback)
    except Exception:  # pragma: no cover - private API moved
        return None
    if frame is None or os.path.dirname(os.path.abspath(frame.file_name)) == _ENGINE_DIR:
        return None
    return f"{frame.file_name}:{frame.start_line} ({frame.function_name})"


def _bind(eqn, values: list) -> list:
    """Apply an equation's primitive to values, as `jax.core.eval_jaxpr` does (call
    primitives such as custom_jvp_call rebuild their functions in get_bind_params)."""
    out = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


def _note_switch(eqn, ins, outs, site) -> None:
    """Record the switching functions of an equation that depends on t or y, if it
    switches (see `_switches.py`)."""
    collector = current()
    name = eqn.primitive.name
    if collector is None or name in NOT_SWITCHES or not any(is_real_series(x) for x in ins):
        return
    if name in SWITCHING:
        series = switching_series(name, ins, outs, dict(eqn.params))
        if series is not None:
            collector.series.append(series)
    else:
        collector.opaque.setdefault(name, site)


def _closed(j):
    if isinstance(j, jex_core.ClosedJaxpr):
        return j.jaxpr, list(j.consts)
    return j, []


class _Expander:
    """Expands one jaxpr order by order. `step(k, inputs)` computes the order-k
    coefficient of every variable, given inputs whose series reach order k, and
    returns the outputs (each a `Const` or a series)."""

    def __init__(self, jaxpr, consts, site=None, known=None):
        self.jaxpr = jaxpr
        self.consts = consts
        # Equations (by index) whose output series are already known to the caller and
        # are shared with it rather than recomputed; see `_custom_jvp_rule`.
        self.known = known or {}
        # Where this jaxpr is called from in user code: equations inside library
        # functions (e.g. a jitted jnp.sort) carry no user frame of their own.
        self.site = site
        self.env: dict = {}
        self.ctxs = [dict() for _ in jaxpr.eqns]

    def _read(self, v):
        if isinstance(v, jex_core.Literal):
            return Const(v.val)
        return self.env[v]

    def step(self, k: int, inputs: list) -> list:
        if k == 0:
            for v, c in zip(self.jaxpr.constvars, self.consts):
                self.env[v] = Const(c)
            for v, x in zip(self.jaxpr.invars, inputs):
                self.env[v] = x
        for i, (eqn, ctx) in enumerate(zip(self.jaxpr.eqns, self.ctxs)):
            if i in self.known:
                if k == 0:
                    for v, series in zip(eqn.outvars, self.known[i]):
                        self.env[v] = series
                continue
            ins = [self._read(v) for v in eqn.invars]
            if k == 0:
                self._first(eqn, ins, ctx)
                continue
            outs = [self.env.get(v) for v in eqn.outvars]
            if all(o is None or isinstance(o, Const) for o in outs):
                continue
            new = _rule(eqn)(k, ins, outs, ctx, **_params(eqn))
            keep = eqn.primitive.name not in _NOT_KEPT
            for o, c in zip(outs, new):
                if o is not None and not isinstance(o, Const):
                    o.append(kept(c) if keep else c)
        return [self._read(v) for v in self.jaxpr.outvars]

    def _first(self, eqn, ins, ctx):
        name = eqn.primitive.name
        floats = [jnp.issubdtype(v.aval.dtype, jnp.inexact) for v in eqn.outvars]
        if all(isinstance(x, Const) for x in ins) or name in ZERO_DERIVATIVE or not any(floats):
            for v, val in zip(eqn.outvars, _bind(eqn, [coeff(x, 0) for x in ins])):
                self.env[v] = Const(val)
            _note_switch(eqn, ins, [self.env[v] for v in eqn.outvars], _where(eqn) or self.site)
            return
        site = _where(eqn) or self.site
        ctx["site"] = site
        rule = _rule(eqn, site)  # raises here, at trace time, for an unsupported primitive
        if rule in (_call_rule, _cond_rule, _scan_rule):
            outs = rule(0, ins, [None] * len(eqn.outvars), ctx, _eqn=eqn)
        else:
            outs = _bind(eqn, [coeff(x, 0) for x in ins])
        for v, out, is_float in zip(eqn.outvars, outs, floats):
            if isinstance(out, Const) or not is_float:
                self.env[v] = out if isinstance(out, Const) else Const(out)
            else:
                self.env[v] = [out]
        if name in SWITCHING:
            _note_switch(eqn, ins, [self.env[v] for v in eqn.outvars], site)


def _params(eqn) -> dict:
    if eqn.primitive.name in _CALLS or eqn.primitive.name in ("cond", "scan", "custom_jvp_call", "custom_linear_solve"):
        return dict(_eqn=eqn)
    return dict(eqn.params)


def _custom_jvp_name(eqn):
    """The name JAX records for the function of a custom_jvp_call equation (else None)."""
    if eqn.primitive.name != "custom_jvp_call":
        return None
    debug = getattr(eqn.params["call_jaxpr"].jaxpr, "debug_info", None)
    return getattr(debug, "func_name", None)


def _registered_rule(eqn):
    """The `taylorode.custom_taylor` rule of a custom_jvp_call equation, if any."""
    return CUSTOM_RULES.get(_custom_jvp_name(eqn))


def _custom_rule(k, ins, outs, ctx, _eqn):
    """A function with a registered Taylor rule (order 0 is its primal, as for every
    primitive)."""
    rule = _registered_rule(_eqn)
    return [rule(k, tuple(series_of(x, k) for x in ins), outs[0])]


def _same_function(a, b) -> bool:
    """Whether two custom_jvp_call equations compute the same function (same primal
    program and constants; functions that differ only in a non-differentiable argument,
    like `jnp.sinc`'s Maclaurin helper, have different programs)."""
    if a.primitive.name != "custom_jvp_call" or b.primitive.name != "custom_jvp_call":
        return False
    ja, jb = a.params["call_jaxpr"], b.params["call_jaxpr"]
    return (
        _custom_jvp_name(a) == _custom_jvp_name(b)
        and str(ja.jaxpr) == str(jb.jaxpr)
        and len(ja.consts) == len(jb.consts)
        and all(x is y for x, y in zip(ja.consts, jb.consts))
    )


def _custom_jvp_rule(k, ins, outs, ctx, _eqn):
    """A `jax.custom_jvp` function without a Taylor rule of its own: its Taylor rule is
    derived from its custom JVP. With c = f(a), c' = jvp_f(a; a'), so the series of c'
    is the expansion of the JVP rule's program at the input series a and a', and
    c_k = (c')_{k-1} / k. The custom JVP is thereby honoured at every order: a function
    that is stable at a singular point under `jax.jvp` (a guarded sqrt, `jnp.sinc` at 0,
    an `eqx.filter_custom_jvp` rule) is stable in Taylor mode too.

    Inputs that do not depend on t or y are closed over, so the JVP rule sees them as
    symbolic zeros (`None` tangents for `eqx.filter_custom_jvp`). Where the JVP rule
    calls the function itself at the same inputs (the usual `y = f(x)` inside a rule),
    that call's series is the one being computed here, shared rather than re-expanded.
    """
    if "sub" not in ctx:
        dyn = [i for i, x in enumerate(ins) if not isinstance(x, Const)]
        fixed = [i for i, x in enumerate(ins) if isinstance(x, Const)]
        multiple = _eqn.primitive.multiple_results

        def merged(dyn_vals, fixed_vals):
            vals = [None] * len(ins)
            for i, v in zip(dyn, dyn_vals):
                vals[i] = v
            for i, v in zip(fixed, fixed_vals):
                vals[i] = v
            return vals

        def jvp(primals, tangents, fixed_vals):
            def f(*d):
                out = _bind(_eqn, merged(d, fixed_vals))
                return tuple(out) if multiple else out[0]

            return jax.jvp(f, tuple(primals), tuple(tangents))

        spec = [jax.ShapeDtypeStruct(jnp.shape(coeff(x, 0)), jnp.result_type(coeff(x, 0))) for x in ins]
        dyn_spec = [spec[i] for i in dyn]
        closed = jax.make_jaxpr(jvp)(dyn_spec, dyn_spec, [spec[i] for i in fixed])
        jaxpr = closed.jaxpr
        n_dyn = len(dyn)
        same_inputs = merged(jaxpr.invars[:n_dyn], jaxpr.invars[2 * n_dyn:])
        known = {
            i: outs
            for i, e in enumerate(jaxpr.eqns)
            if _same_function(e, _eqn) and list(e.invars) == same_inputs
        }
        ctx["sub"] = _Expander(jaxpr, list(closed.consts), ctx.get("site"), known)
        ctx["args"] = (dyn, fixed)
        # The expander keeps its input series by reference and reads order m at step m.
        ctx["tangents"] = [[] for _ in dyn]
    dyn, fixed = ctx["args"]
    m = k - 1
    for i, tangent in zip(dyn, ctx["tangents"]):
        tangent.append(k * ins[i][k])  # (a')_m = (m + 1) a_{m+1}
    inputs = [ins[i] for i in dyn] + ctx["tangents"] + [ins[i] for i in fixed]
    results = ctx["sub"].step(m, inputs)
    tangents = results[len(results) // 2:]
    return [coeff(t, m) / k for t in tangents]


def _call_rule(k, ins, outs, ctx, _eqn):
    """Inline expansion of a called jaxpr (jit, custom_jvp/vjp primal, remat, ...)."""
    if k == 0:
        key = _CALLS[_eqn.primitive.name]
        jaxpr, consts = _closed(_eqn.params[key])
        ctx["sub"] = _Expander(jaxpr, consts, ctx["site"])
        return [o if isinstance(o, Const) else o[0] for o in ctx["sub"].step(0, ins)]
    return [coeff(o, k) for o in ctx["sub"].step(k, ins)]


def _cond_rule(k, ins, outs, ctx, _eqn):
    """`lax.cond`/`lax.switch`: the branch taken at the expansion point. Every branch is
    expanded and the active one selected, since the index is only known at run time."""
    index, operands = coeff(ins[0], 0), ins[1:]
    if k == 0:
        ctx["subs"] = [_Expander(*_closed(b), ctx["site"]) for b in _eqn.params["branches"]]
        results = [sub.step(0, operands) for sub in ctx["subs"]]
    else:
        results = [sub.step(k, operands) for sub in ctx["subs"]]
    picked = []
    for branch_outs in zip(*results):
        vals = [coeff(o, k) for o in branch_outs]
        val = jax.lax.select_n(jnp.clip(index, 0, len(vals) - 1), *vals)
        const = k == 0 and all(isinstance(o, Const) for o in branch_outs)
        picked.append(Const(val) if const else val)
    return picked


def _inexact(aval) -> bool:
    return jnp.issubdtype(aval.dtype, jnp.inexact)


def _as_aval(x, aval):
    """`x` as an array of `aval`'s shape and dtype (strongly typed, as a scan's carry
    must be)."""
    x = lax.convert_element_type(x, aval.dtype)
    return x if x.shape == aval.shape else jnp.broadcast_to(x, aval.shape)


def _loop_extras(collector, k, have):
    """What a loop body's expansion reports besides coefficients, for one iteration at
    order k: the coefficients of its switching functions not yet reported (series `s`
    has orders `have[s]..` to report, as far as it goes: a switching function inside a
    derived rule runs one order behind), and whether any validity check fails.
    Returns `(values, have, flag)` (`flag` is `None` without checks)."""
    values, new_have = [], []
    for s, fn in enumerate(collector.series):
        start = have[s] if s < len(have) else 0
        vals = []
        for j in range(start, k + 1):
            c = fn(j)
            if c is None:
                break
            vals.append(jnp.asarray(c))
        values.append(vals)
        new_have.append(start + len(vals))
    flag = None
    if collector.checks:
        flag = jnp.any(jnp.stack([jnp.any(check()) for check in collector.checks]))
    return values, new_have, flag


def _stacked_series(coeffs: list):
    return lambda j: coeffs[j] if j < len(coeffs) else None


def _any_of(flags: list):
    return lambda: jnp.any(jnp.stack(flags))


def _report_loop_extras(ctx, values, flags, opaque) -> None:
    """Pass a loop body's switching functions (one per iteration and function: the
    stacked values become one series of the loop), its validity checks and its
    switches the engine cannot see into on to the expansion's collector."""
    collector = current()
    if collector is None:
        return
    switch = ctx.setdefault("switch", [])
    for s, vals in enumerate(values):
        if s == len(switch):
            switch.append([])
            collector.series.append(_stacked_series(switch[s]))
        switch[s].extend(vals)
    if flags is not None:
        if "flags" not in ctx:
            ctx["flags"] = []
            collector.checks.append(_any_of(ctx["flags"]))
        ctx["flags"].append(jnp.any(flags))
    for name, where in opaque.items():
        collector.opaque.setdefault(name, where)


def _scan_rule(k, ins, outs, ctx, _eqn):
    """`lax.scan` with its static length (so `lax.fori_loop` with static bounds,
    `jnp.polyval`, ...): the body is expanded order by order inside a scan over the
    iterations, so that the program grows with the order, not with iterations × order.

    Order 0 runs the loop itself, with the body's expansion state (the series of every
    value in the body and its rules' auxiliary series, `_state.py`) as per-iteration
    outputs, stacked along the iteration axis. Order k runs a scan whose carry is the
    order-k coefficient of the loop's carry and whose per-iteration inputs are the
    stacked state of orders < k: each iteration rebuilds its body expander from its
    slice of the state, appends the order-k coefficients of its carry and of its `xs`,
    steps it to order k, and returns the order-k coefficients of its carry and `ys`,
    with the state's new arrays (stacked again as the scan's outputs). Floating carries
    are series, integer ones (a loop counter) are taken at order 0, as everywhere."""
    p = _eqn.params
    body, body_consts = _closed(p["jaxpr"])
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    consts, init, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    carry_vars = body.invars[n_consts:n_consts + n_carry]
    xs_vars = body.invars[n_consts + n_carry:]
    y_avals = [v.aval for v in body.outvars[n_carry:]]
    floats = [_inexact(v.aval) for v in carry_vars]
    series_xs = [i for i, x in enumerate(xs) if not isinstance(x, Const)]
    scan = functools.partial(lax.scan, length=p["length"], reverse=p["reverse"], unroll=p["unroll"])
    found = {}

    if k == 0:

        def body0(carry, x):
            inputs = list(consts)
            inputs += [[c] if f else Const(c) for c, f in zip(carry, floats)]
            inputs += [[v] if i in series_xs else Const(v) for i, v in enumerate(x)]
            expander = _Expander(body, body_consts, ctx["site"])
            with collecting() as collector:
                results = expander.step(0, inputs)
            carry_out = [_as_aval(coeff(r, 0), v.aval) for r, v in zip(results, carry_vars)]
            ys = [_as_aval(coeff(r, 0), a) for r, a in zip(results[n_carry:], y_avals)]
            values, have, flag = _loop_extras(collector, 0, [])
            template, leaves, _ = flatten((expander, collector.series, collector.checks), consts)
            found.update(
                template=template, have=have, opaque=dict(collector.opaque),
                y_series=[not isinstance(r, Const) for r in results[n_carry:]],
            )
            return carry_out, (ys, leaves, values, flag)

        start = [_as_aval(coeff(x, 0), v.aval) for x, v in zip(init, carry_vars)]
        carry, (ys, leaves, values, flags) = scan(body0, start, [coeff(x, 0) for x in xs])
        ctx["y_series"] = found["y_series"]
        out = [c if f else Const(c) for c, f in zip(carry, floats)]
        out += [y if s else Const(y) for y, s in zip(ys, ctx["y_series"])]
    else:
        template, stacked, have = ctx["template"], ctx["stacked"], ctx["have"]

        def body_k(carry, x):
            leaves, xs_k = x
            expander, series, checks = unflatten(template, leaves, consts)
            for v, c in zip([v for v, f in zip(carry_vars, floats) if f], carry):
                expander.env[v].append(c)
            for i, c in zip(series_xs, xs_k):
                expander.env[xs_vars[i]].append(c)
            with collecting() as collector:
                collector.series, collector.checks = series, checks
                results = expander.step(k, None)
            carry_out = [_as_aval(coeff(r, k), v.aval) for r, v, f in zip(results, carry_vars, floats) if f]
            ys = [
                _as_aval(coeff(r, k), a)
                for r, a, s in zip(results[n_carry:], y_avals, ctx["y_series"])
                if s
            ]
            values, new_have, flag = _loop_extras(collector, k, have)
            new_template, new, origin = flatten((expander, collector.series, collector.checks), consts, leaves)
            found.update(template=new_template, have=new_have, origin=origin, opaque=dict(collector.opaque))
            return carry_out, (ys, new, values, flag)

        start = [_as_aval(coeff(x, k), v.aval) for x, v, f in zip(init, carry_vars, floats) if f]
        carry, (ys, new, values, flags) = scan(body_k, start, (stacked, [xs[i][k] for i in series_xs]))
        new = iter(new)
        leaves = [stacked[i] if i is not None else next(new) for i in found["origin"]]
        carry, ys = iter(carry), iter(ys)
        out = [next(carry) if f else None for f in floats]
        out += [next(ys) if s else None for s in ctx["y_series"]]
    ctx["template"], ctx["stacked"], ctx["have"] = found["template"], leaves, found["have"]
    _report_loop_extras(ctx, values, flags, found["opaque"])
    return out


def _linear_solve_rule(k, ins, outs, ctx, _eqn):
    """`lax.custom_linear_solve` (what `jnp.linalg.solve` and `jnp.linalg.inv` emit):
    x with matvec(x) = b, matvec linear in x with operands c that may depend on t and y.
    Order k of matvec(c, x) = b is matvec(c_0, x_k) + r_k = b_k, where r_k, the part
    from x's lower orders, is order k of matvec expanded with x_k = 0 (on a copy of the
    matvec's expansion, which then goes on with the true x_k). So x_k is the same solve
    at the order-0 operands (the factorisation made at order 0, reused by XLA):
    x_k = solve_0(b_k - r_k). It is the primitive itself, so that differentiating the
    coefficients goes through its own rules (the factorisation in `jnp.linalg.solve` is
    behind a `stop_gradient`; the matvec carries the derivative)."""
    n = _eqn.params["const_lengths"]
    consts, b = ins[:sum(n)], ins[sum(n):]
    if "matvec" not in ctx:
        dynamic = not all(isinstance(c, Const) for c in consts[:n.matvec])
        matvec = _closed(_eqn.params["jaxprs"].matvec)
        ctx["matvec"] = _Expander(*matvec, ctx.get("site")) if dynamic else None
        ctx["done"] = -1
    rhs = [coeff(x, k) for x in b]
    matvec = ctx["matvec"]
    if matvec is not None:
        inputs = list(consts[:n.matvec]) + list(outs)
        while ctx["done"] < k - 1:  # the true expansion, to order k - 1
            ctx["done"] += 1
            matvec.step(ctx["done"], inputs)
        probe = snapshot(matvec)
        for v in probe.jaxpr.invars[n.matvec:]:
            probe.env[v].append(jnp.zeros_like(probe.env[v][0]))
        with collecting():  # a throwaway: no checks or switches from the probe
            r = probe.step(k, None)
        rhs = [bk - coeff(rk, k) for bk, rk in zip(rhs, r)]
    return _bind(_eqn, [coeff(c, 0) for c in consts] + rhs)


RULES["custom_linear_solve"] = _linear_solve_rule


def _signature_of(jaxpr, consts, values, dependent, found: list) -> list:
    """Evaluate a jaxpr, appending to `found` the (integer) outputs of the operations
    that depend on t or y, return integers or booleans and have no switching function
    (the engine's unseen switches; see `_note_switch`)."""
    env = {}

    def read(v):
        if isinstance(v, jex_core.Literal):
            return v.val, False
        return env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = (c, False)
    for v, x, d in zip(jaxpr.invars, values, dependent):
        env[v] = (x, d)
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        vals = [x for x, _ in ins]
        dep = any(d for _, d in ins)
        name = eqn.primitive.name
        floats = [jnp.issubdtype(v.aval.dtype, jnp.inexact) for v in eqn.outvars]
        if dep and any(floats) and (name in _CALLS or name == "custom_jvp_call"):
            sub, sub_consts = _closed(eqn.params[_CALLS.get(name, "call_jaxpr")])
            outs = _signature_of(sub, sub_consts, vals, [d for _, d in ins], found)
        elif dep and any(floats) and name == "scan":
            outs = _scan_signature(eqn, vals, [d for _, d in ins], found)
        else:
            outs = _bind(eqn, vals)
            if dep and not any(floats) and name not in SWITCHING and name not in NOT_SWITCHES:
                real = any(
                    not isinstance(v, jex_core.Literal) and d and jnp.issubdtype(v.aval.dtype, jnp.floating)
                    for v, (_, d) in zip(eqn.invars, ins)
                )
                if real:
                    found.extend(jnp.ravel(o).astype(jnp.int32) for o in outs)
        for v, o in zip(eqn.outvars, outs):
            env[v] = (o, dep)
    return [read(v)[0] for v in jaxpr.outvars]


def _scan_signature(eqn, vals, dependent, found: list) -> list:
    """`_signature_of` through a `lax.scan`: the loop run with the unseen switches of
    every iteration as a per-iteration output. The carry is taken as depending on t or
    y when any input does (it may come to, through the body)."""
    p = eqn.params
    body, body_consts = _closed(p["jaxpr"])
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    carry_avals = [v.aval for v in body.invars[n_consts:n_consts + n_carry]]
    y_avals = [v.aval for v in body.outvars[n_carry:]]
    body_dependent = dependent[:n_consts] + [any(dependent)] * n_carry + dependent[n_consts + n_carry:]

    def step(carry, x):
        inner: list = []
        outs = _signature_of(body, body_consts, vals[:n_consts] + list(carry) + list(x), body_dependent, inner)
        sig = jnp.concatenate(inner) if inner else jnp.zeros((0,), jnp.int32)
        carry = [_as_aval(o, a) for o, a in zip(outs, carry_avals)]
        return carry, ([_as_aval(o, a) for o, a in zip(outs[n_carry:], y_avals)], sig)

    init = [_as_aval(c, a) for c, a in zip(vals[n_consts:n_consts + n_carry], carry_avals)]
    carry, (ys, sig) = lax.scan(
        step, init, list(vals[n_consts + n_carry:]), length=p["length"], reverse=p["reverse"]
    )
    if sig.size:
        found.append(jnp.ravel(sig))
    return list(carry) + list(ys)


_LINEAR_CACHE: dict = {}


def _rule(eqn, site=None):
    prim = eqn.primitive
    name = prim.name
    if _registered_rule(eqn) is not None:
        return _custom_rule
    if _custom_jvp_name(eqn) in CUSTOM_JVP_RULES:
        return CUSTOM_JVP_RULES[_custom_jvp_name(eqn)]
    if name == "custom_jvp_call":
        return _custom_jvp_rule
    if name in _CALLS:
        return _call_rule
    if name == "cond":
        return _cond_rule
    if name == "scan":
        return _scan_rule
    if name in RULES:
        return RULES[name]
    if name in LINEAR:
        if prim not in _LINEAR_CACHE:
            _LINEAR_CACHE[prim] = linear_rule(prim)
        return _LINEAR_CACHE[prim]
    where = site or "<unknown location>"
    if name in _IMPLICIT:
        raise TaylorRuleError(
            f"method='recurrence' has no Taylor rule for the primitive '{name}', used at {where}: "
            f"{_IMPLICIT[name]} Wrap the function that contains it in `taylorode.custom_taylor` (or "
            "`jax.custom_jvp`) and give its derivative by the implicit function theorem: for x "
            "solving g(x, p) = 0, x' = -g_p p' / g_x. The recipe, with a Newton loop for Kepler's "
            "equation, is in docs/api/custom-rules.md (\"Loops that solve an equation\")."
        )
    raise TaylorRuleError(
        f"method='recurrence' has no Taylor rule for the primitive '{name}', used at "
        f"{where}. Either rewrite that part of the vector field with supported "
        "operations (arithmetic, exp/log/pow, trigonometric and hyperbolic functions "
        "and their inverses, erf, min/max/abs/where, sort, sums and products, linear "
        "algebra products, solves and LU/Cholesky/symmetric eigendecompositions, indexing, "
        "lax.cond, lax.scan and lax.fori_loop with static bounds), or, if it sits inside a "
        "function of yours, give that function a Taylor rule with `taylorode.custom_taylor`. "
        "method='jvp' also handles it at low order."
    )


# Primitives whose values come out of a loop or a call the engine cannot expand order by
# order (the number of iterations is only known at run time), with why.
_IMPLICIT = {
    "while": "a lax.while_loop (or a lax.fori_loop with traced bounds) runs a number of "
    "iterations known only at run time, so its series cannot be expanded through the loop.",
    "pure_callback": "a callback's code is outside JAX, so its series cannot be expanded.",
}


def _series_rows(series: list, order: int, dtype):
    """The series `j -> array` (`None` for an order a series does not have: zeros)
    flattened side by side: shape `(order, n)`, or `None` without series."""
    if not series:
        return None
    rows = []
    for j in range(order):
        parts = []
        for fn in series:
            c = fn(j)
            parts.append(jnp.ravel(jnp.zeros_like(fn(0)) if c is None else c).astype(dtype))
        rows.append(jnp.concatenate(parts))
    return jnp.stack(rows)


def _invalid(collector):
    """Whether any of the expansion's validity checks failed (`None`: no checks)."""
    if not collector.checks:
        return None
    return jnp.any(jnp.stack([jnp.any(check()) for check in collector.checks]))


def _poison(tree, invalid):
    return jtu.tree_map(lambda c: jnp.where(invalid, jnp.full_like(c, jnp.nan), c), tree)


def _traced_field(fn, t, y, args) -> tuple:
    """`(closed_jaxpr, t, y_leaves, arg_leaves, y_treedef)`: the vector field traced as a function
    of `t`, the state's leaves and the array leaves of `args` (the rest of `args` is
    static), returning the leaves of dy/dt."""
    t, leaves, treedef = flatten_state(t, y)
    dynamic, static = eqx.partition(args, eqx.is_array)
    arg_leaves, arg_def = jtu.tree_flatten(dynamic)
    n = len(leaves)

    def flat(t, *xs):
        full_args = eqx.combine(jtu.tree_unflatten(arg_def, xs[n:]), static)
        return output_leaves(fn, treedef, t, list(xs[:n]), full_args)

    return jax.make_jaxpr(flat)(t, *leaves, *arg_leaves), t, leaves, arg_leaves, treedef


def _materialized(x: Array) -> Array:
    """`x`, through a gather with the identity's indices, so that XLA materialises it.

    Every order's coefficients are built from the state's lower-order ones, so without a
    boundary XLA:CPU fuses the elementwise arithmetic of many orders into one kernel. Where
    the field reads the state at other indices than it writes (`y[::-1]`, `y[0]` broadcast
    to every component), that kernel's code generator recomputes the fused chain for each
    index it is read at, once more per order: `jnp.tanh(y[::-1]) - y` took 3 s per
    coefficient set at order 20 (2^20 recomputations), 0.3 ms with this boundary. XLA
    does not fuse a gather's operand into it, and it keeps the indices (they are not
    known to it as an identity); the boundary costs one small kernel per order. The
    indices are in bounds, so the gather clips rather than fills: `jnp.take`'s default
    fill mode adds a bounds mask and a select to every order, a fifth of a Kepler
    step's time and a third of a Lorenz step's (measured per step, 2026-12-04)."""
    x = jnp.asarray(x)
    if x.ndim == 0:
        return x
    return jnp.take(jnp.ravel(x), np.arange(x.size), mode="clip").reshape(x.shape)


# Equations whose coefficients are not passed through `kept` (`_series.py`): linear
# ones (an order's coefficient is that of its inputs, rearranged: cheap to recompute)
# and calls, whose outputs are those of equations of their own jaxprs.
_NOT_KEPT = frozenset(LINEAR) | frozenset(_CALLS)


class RecurrenceMethod(AbstractTaylorMethod):
    """Normalised Taylor coefficients by taylorode's own Taylor-mode engine.

    The vector field is traced once to a jaxpr; the engine then walks it order by
    order, computing the order-`k` coefficient of every intermediate value from lower
    orders with a recurrence per primitive (Cauchy products, and `c' = u a'`
    recurrences for exp, log, powers, trigonometric and hyperbolic functions and their
    inverses, erf, logistic), and sets `y^[k+1] = f^[k] / (k + 1)`. Total work is
    O(order² × operations). Recurrence sums of up to 24 terms are written out term by
    term, which XLA compiles to the fastest code; longer ones (orders above 24) are one
    stacked multiply-and-reduce each, so that the traced program grows only linearly
    with the order there.

    **Supported operations:** arithmetic, `integer_pow`/`pow`/`sqrt`/`rsqrt`/`cbrt`,
    `exp`/`exp2`/`log`/`log1p`/`expm1`, `sin`/`cos`/`tan`/`asin`/`acos`/`atan`/`atan2`,
    `sinh`/`cosh`/`tanh` and inverses, `logistic`, `erf`, `erf_inv`; `lgamma`,
    `digamma` and `polygamma` with a constant order (`jax.scipy.special.gammaln`, ...),
    `bessel_i0e`/`bessel_i1e` (their kink at 0 is a switch); complex parts (`conj`,
    `complex`, `real`, `imag`) and the FFTs (`jnp.fft.fft`/`ifft`/`rfft`/`irfft` and their
    n-dimensional forms); convolutions (`conv_general_dilated`, hence `jnp.convolve`);
    windowed reductions (`lax.reduce_window` with add, max or min: windowed maxima follow
    each window's extremal element, and steps end where it changes); `abs`, `max`, `min`, `clamp`,
    `select_n` (`jnp.where`), `sign` and `lax.cond`/`lax.switch`, taking the branch
    active at the expansion point; `sort` (all coefficients follow the order-0
    permutation); `dot_general` with constant or state-dependent operands; reductions
    (sum, product, max, min) and cumulative sums, products, maxima and minima; reshaping, broadcasting, slicing, gathering with constant
    indices, concatenation, padding; nested `jit`; `stop_gradient` (a constant);
    `lax.scan` with its static length, so `lax.fori_loop` with static bounds,
    `jnp.polyval` and `jax.scipy.special.bessel_jn` (the body is expanded once per order
    inside a scan over the iterations, so the program grows with the order, not with
    iterations × order); linear solves (`lax.custom_linear_solve`, hence
    `jnp.linalg.solve` and `jnp.linalg.inv`: each order is one more solve with the
    order-0 factorisation), `triangular_solve`, `lu` (square matrices, pivoting of the
    expansion point), `cholesky`, `eigh` (all eigenvalues; the series exists where they
    are distinct, and the expansion is marked invalid where two coincide) and so
    `jax.scipy.linalg.expm`; and
    `jax.custom_jvp` and `eqx.filter_custom_jvp` functions: their registered Taylor
    rule (see [`taylorode.custom_taylor`][]; JAX's `logaddexp`/`logaddexp2`, hence
    `jax.nn.softplus`, have rules of ours), else a rule derived from their custom JVP
    (c' = jvp(a; a'), expanded order by order), so a JVP that is stable at a singular
    point (`jnp.sinc` at 0, a guarded `sqrt`) is stable at every order.
    `jax.custom_vjp` functions are expanded through their primal code. Anything else raises
    [`taylorode.TaylorRuleError`][] naming the primitive and where it is used in your
    code; for a `lax.while_loop` (a Newton or fixed-point iteration) the message points
    to the recipe on the "Custom Taylor rules" page: wrap the solver with
    [`taylorode.custom_taylor`][] so that its series comes from the implicit function
    theorem.

    **Arguments:**

    - `batch_scalars`: before expanding, rewrite the vector field so that independent
        scalar operations of the same kind (as in fields written with Python loops over
        components) run as one vector operation. This cuts compile time and run time of
        such fields several-fold and leaves vectorised fields unchanged; turn it off
        only to compare.
    """

    batch_scalars: bool = True

    name: ClassVar[str] = "recurrence"
    max_order: ClassVar[int] = 60

    def expand(self, fn, t0, y0, args, order):
        with collecting() as collector:
            coeffs = self._expand(fn, t0, y0, args, order)
        invalid = _invalid(collector)
        if invalid is None:
            return coeffs
        return coeffs[:1] + [_poison(c, invalid) for c in coeffs[1:]]

    def expand_with_switches(self, fn, t0, y0, args, order):
        with collecting() as collector:
            coeffs = self._expand(fn, t0, y0, args, order)
        invalid = _invalid(collector)
        if invalid is not None:
            # Invalid series (see `_collect.py`): the last coefficient is made NaN,
            # which the solvers' finiteness checks see; one select, not one per order.
            coeffs = coeffs[:-1] + [_poison(coeffs[-1], invalid)]
        # The switching functions are real: the real dtype of the state (a complex
        # state's included) and of t0, promoted explicitly (strict promotion allows no
        # implicit mix of real and complex).
        dtypes = [jnp.result_type(x) for x in jtu.tree_leaves(coeffs[0])] + [jnp.result_type(t0)]
        dtype = functools.reduce(
            jnp.promote_types,
            [jnp.finfo(d).dtype if jnp.issubdtype(d, jnp.inexact) else d for d in dtypes],
        )
        switch_coeffs = _series_rows(collector.series, order, dtype)
        unseen = tuple(sorted(collector.opaque.items(), key=lambda kv: kv[0]))
        return coeffs, SwitchSeries(switch_coeffs, unseen)

    def push_forward(self, fn, t0, dt, coeffs, args, order):
        leaves0, treedef = jtu.tree_flatten(coeffs[0])
        series = [jtu.tree_leaves(c) for c in coeffs]
        dynamic, static = eqx.partition(args, eqx.is_array)
        arg_leaves, arg_def = jtu.tree_flatten(dynamic)
        n = len(leaves0)
        t0 = jnp.asarray(t0)

        def flat(t, *xs):
            full_args = eqx.combine(jtu.tree_unflatten(arg_def, xs[n:]), static)
            return jnp.ravel(fn(t, jtu.tree_unflatten(treedef, list(xs[:n])), full_args))

        closed = jax.make_jaxpr(flat)(t0, *leaves0, *arg_leaves)
        expander = _Expander(closed.jaxpr, list(closed.consts))
        t_series = [t0, jnp.asarray(dt, t0.dtype)] + [jnp.zeros_like(t0)] * max(order - 2, 0)
        ys = [[c[i] for c in series] for i in range(n)]
        inputs = [t_series, *ys, *[Const(a) for a in arg_leaves]]
        rows = []
        with collecting() as collector:
            for k in range(order):
                (out,) = expander.step(k, inputs)
                rows.append(coeff(out, k))
        # The switching functions inside `fn` (the comparisons of a boolean condition)
        # follow as further columns.
        dtype = jnp.result_type(rows[0], 1.0)
        return _series_rows([lambda j: rows[j]] + collector.series, order, dtype)

    def discrete_signature(self, fn, t, y, args):
        closed, t, leaves, arg_leaves, _ = _traced_field(fn, t, y, args)
        found: list = []
        dependent = [True] * (1 + len(leaves)) + [False] * len(arg_leaves)
        _signature_of(closed.jaxpr, list(closed.consts), [t, *leaves, *arg_leaves], dependent, found)
        if not found:
            return jnp.zeros((0,), jnp.int32)
        return jnp.concatenate(found)

    def _expand(self, fn, t0, y0, args, order):
        closed, t0, leaves, arg_leaves, treedef = _traced_field(fn, t0, y0, args)
        if self.batch_scalars:
            closed = batch_scalars(closed, t0, *leaves, *arg_leaves)
        expander = _Expander(closed.jaxpr, list(closed.consts))
        t_series = [t0, jnp.ones_like(t0)]
        ys = [[y] for y in leaves]
        inputs = [t_series, *ys, *[Const(a) for a in arg_leaves]]
        for k in range(order):
            while len(t_series) <= k:
                t_series.append(jnp.zeros_like(t0))
            f = expander.step(k, inputs)
            for y, fk in zip(ys, f):
                y.append(_materialized(coeff(fk, k) / (k + 1)))
        return [jtu.tree_unflatten(treedef, [y[j] for y in ys]) for j in range(order + 1)]
