"""Batching of scalar operations: a jaxpr-to-jaxpr pass run before Taylor expansion.

Vector fields are often written one scalar at a time (`for i in range(n): for j in
range(n): dx = x[j] - x[i]; ...`). Expanded as they stand, every scalar operation gets
its own recurrence at every order, and the program XLA has to compile grows with
(operations × order). This pass rewrites such a jaxpr so that independent scalar
elementwise equations of the same kind become one equation on a vector:

- equations are scheduled in waves; within a wave, all ready scalar equations with the
  same primitive, parameters and input dtypes are applied once to vectors of their
  inputs;
- a scalar is kept as a reference to an element of such a vector (or of an input
  vector, via `slice`/`squeeze`/`stack`/`concatenate`), so moving scalars around costs
  nothing; vectors of operands are assembled from static slices (runs of consecutive
  elements) and one concatenation, or with one gather where there are more runs than
  XLA:CPU fuses into one concatenation kernel;
- everything else (vector operations, calls, control flow) is applied as it was, with
  its scalar operands extracted.

The rewritten jaxpr computes the same values with the same floating-point operations,
so the Taylor coefficients are unchanged; only the program shape differs. The pass
applies only where it batches something, so vectorised fields pass through unchanged.
"""

import contextlib
from collections import defaultdict, deque

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
from jax import lax


# Elementwise primitives whose batched form is the same primitive on vectors.
ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "neg", "max", "min", "pow", "integer_pow", "square",
    "sqrt", "rsqrt", "cbrt", "exp", "exp2", "expm1", "log", "log1p", "sin", "cos",
    "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh",
    "atanh", "logistic", "erf", "erfc", "abs", "sign", "convert_element_type",
    "select_n", "clamp",
})

# Only rewrite when at least this many scalar equations fall into groups of two or
# more: below that, the rewrite cannot pay for the slicing and concatenation it adds.
MIN_BATCHED = 8
# ... and when some group has at least this many: each group's operands are assembled
# by a concatenation, a kernel of its own at every order, which pairs do not pay for
# (Kepler written with scalars, three pairs: 2.07 us per step batched, 1.74 not;
# Arenstorf, pairs and two groups of four: 2.46 batched, 2.89 not; measured 2026-12-04).
MIN_GROUP = 3


# XLA:CPU fuses a concatenation of at most this many operands with what produces them
# (`kMaxConcatenateArguments` of its instruction fusion); a longer one makes each
# operand a kernel of its own. The loop-written Pleiades field (bench_scalar_field,
# order 8) assembled its operands from up to 28 slices each: 8.5 s to compile and
# 160 µs per coefficient set, against 1.5 s and 14 µs with one gather.
MAX_FUSED_CONCATENATION = 8


class _Ref:
    """Element `index` of the 1-D array `base` (a scalar value)."""

    __slots__ = ("base", "index")

    def __init__(self, base, index):
        self.base = base
        self.index = index


class _Elems:
    """A 1-D value kept as a list of scalar parts (`_Ref`s, literals or 0-d arrays)."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = parts


def _is_scalar(v) -> bool:
    return v.aval.shape == ()


def _batchable(eqn) -> bool:
    return (
        eqn.primitive.name in ELEMENTWISE
        and not eqn.primitive.multiple_results
        and not eqn.effects
        and all(_is_scalar(v) for v in eqn.invars)
        and _is_scalar(eqn.outvars[0])
        and jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.inexact)
    )


def _key(eqn):
    params = tuple(sorted((k, repr(v)) for k, v in eqn.params.items()))
    ins = tuple(
        (v.aval.dtype, getattr(v.aval, "weak_type", False), isinstance(v, jex_core.Literal))
        for v in eqn.invars
    )
    return eqn.primitive.name, params, ins


def _waves(jaxpr):
    """Simulate the wave schedule: yields ("one", eqn) or ("group", [eqns])."""
    available = set(jaxpr.invars) | set(jaxpr.constvars)
    consumers = defaultdict(list)
    missing = []
    for i, eqn in enumerate(jaxpr.eqns):
        needed = {v for v in eqn.invars if not isinstance(v, jex_core.Literal)}
        needed -= available
        missing.append(len(needed))
        for v in needed:
            consumers[v].append(i)
    batchable = [_batchable(e) for e in jaxpr.eqns]
    ready_one, ready_group = deque(), []
    for i, m in enumerate(missing):
        if m == 0:
            (ready_group if batchable[i] else ready_one).append(i)

    def done(eqn):
        for v in eqn.outvars:
            for i in consumers.pop(v, ()):
                missing[i] -= 1
                if missing[i] == 0:
                    (ready_group if batchable[i] else ready_one).append(i)

    while ready_one or ready_group:
        while ready_one:
            i = ready_one.popleft()
            yield "one", [jaxpr.eqns[i]]
            done(jaxpr.eqns[i])
        wave, ready_group = sorted(ready_group), []
        groups = defaultdict(list)
        for i in wave:
            groups[_key(jaxpr.eqns[i])].append(jaxpr.eqns[i])
        for eqns in groups.values():
            yield "group", eqns
        for i in wave:
            done(jaxpr.eqns[i])


def worth_batching(jaxpr) -> bool:
    """Whether the pass would batch enough scalar equations to pay off."""
    if any(e.effects for e in jaxpr.eqns):
        return False
    sizes = [len(eqns) for kind, eqns in _waves(jaxpr) if kind == "group" and len(eqns) > 1]
    return sum(sizes) >= MIN_BATCHED and max(sizes, default=0) >= MIN_GROUP


class _Evaluator:
    def __init__(self):
        self.scalars = {}  # (id(base), index) -> extracted 0-d array

    # --- representations ------------------------------------------------------------
    def scalar(self, x):
        """A 0-d array for a scalar part."""
        if isinstance(x, _Ref):
            key = (id(x.base), x.index)
            if key not in self.scalars:
                self.scalars[key] = (x.base, lax.index_in_dim(x.base, x.index, keepdims=False))
            return self.scalars[key][1]
        return x

    def array(self, x, aval):
        """A plain array for any value."""
        if isinstance(x, _Elems):
            return self.vector(x.parts, aval.dtype)
        if isinstance(x, _Ref):
            return self.scalar(x)
        return x

    def parts(self, x, aval):
        """The scalar parts of a rank-0 or rank-1 value."""
        if isinstance(x, _Elems):
            return x.parts
        if aval.shape == ():
            return [x]
        return [_Ref(x, i) for i in range(aval.shape[0])]

    def vector(self, parts, dtype):
        """A 1-D array holding the given scalar parts: static slices of runs of
        consecutive elements, concatenated."""
        if all(isinstance(p, _Lit) for p in parts):
            return jnp.asarray(np.array([p.val for p in parts], dtype=dtype))
        refs = [p for p in parts if isinstance(p, _Ref)]
        if len(refs) == len(parts):
            base = refs[0].base
            if all(r.base is base for r in refs):
                index = [r.index for r in refs]
                if index == list(range(base.shape[0])):
                    return base
                if index == list(range(index[0], index[0] + len(index))):
                    return lax.slice_in_dim(base, index[0], index[0] + len(index))
        sources, offsets, index = [], {}, []
        literals = [p for p in parts if isinstance(p, _Lit)]
        for p in parts:
            if isinstance(p, _Ref):
                if id(p.base) not in offsets:
                    offsets[id(p.base)] = sum(s.shape[0] for s in sources)
                    sources.append(p.base.astype(dtype))
                index.append(offsets[id(p.base)] + p.index)
            elif isinstance(p, _Lit):
                index.append(None)
            else:
                index.append(sum(s.shape[0] for s in sources))
                sources.append(jnp.reshape(p, (1,)).astype(dtype))
        if literals:
            start = sum(s.shape[0] for s in sources)
            sources.append(jnp.asarray(np.array([p.val for p in literals], dtype=dtype)))
            it = iter(range(start, start + len(literals)))
            index = [next(it) if i is None else i for i in index]
        source = sources[0] if len(sources) == 1 else jnp.concatenate(sources)
        # Static slices of runs of consecutive indices, concatenated, where XLA:CPU
        # fuses that concatenation into one kernel (Arenstorf at order 13: 93 kernels
        # against 123 with a gather, compiled 7 % and run 10 % faster); with more runs
        # it would make every slice a kernel of its own, at every order, so one gather.
        runs = []
        for i in index:
            if runs and i == runs[-1][1]:
                runs[-1][1] += 1
            else:
                runs.append([i, i + 1])
        if len(runs) > MAX_FUSED_CONCATENATION:
            return source[np.asarray(index)]
        pieces = [lax.slice_in_dim(source, a, b) for a, b in runs]
        return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces)

    # --- evaluation -----------------------------------------------------------------
    def run(self, jaxpr, consts, args):
        env = {}

        def read(v):
            if isinstance(v, jex_core.Literal):
                return _Lit(v.val)
            return env[v]

        for v, x in zip(jaxpr.constvars, consts):
            env[v] = x
        for v, x in zip(jaxpr.invars, args):
            env[v] = x
        for kind, eqns in _waves(jaxpr):
            if kind == "group" and len(eqns) > 1:
                with _from_source(eqns[0]):
                    self.group(eqns, read, env)
            else:
                for eqn in eqns:
                    with _from_source(eqn):
                        self.one(eqn, read, env)
        return [self.array(read(v), v.aval) if not isinstance(v, jex_core.Literal) else v.val
                for v in jaxpr.outvars]

    def group(self, eqns, read, env):
        first = eqns[0]
        vectors = []
        for pos, v in enumerate(first.invars):
            parts = [read(e.invars[pos]) for e in eqns]
            vectors.append(self.vector(parts, v.aval.dtype))
        out = first.primitive.bind(*vectors, **first.params)
        for g, eqn in enumerate(eqns):
            env[eqn.outvars[0]] = _Ref(out, g)

    def one(self, eqn, read, env):
        name = eqn.primitive.name
        ins = [read(v) for v in eqn.invars]
        shapes = [v.aval.shape for v in eqn.invars]
        out_aval = eqn.outvars[0].aval if eqn.outvars else None
        # Free moves of scalars: kept as lists of parts, no operation emitted.
        if name == "slice" and len(shapes[0]) == 1 and not isinstance(ins[0], _Lit):
            (start,), (limit,) = eqn.params["start_indices"], eqn.params["limit_indices"]
            stride = (eqn.params["strides"] or (1,))[0]
            parts = self.parts(ins[0], eqn.invars[0].aval)
            env[eqn.outvars[0]] = _Elems(parts[start:limit:stride])
            return
        if name in ("squeeze", "reshape", "expand_dims") and out_aval.shape in ((), (1,)) and (
            shapes[0] in ((), (1,))
        ) and not isinstance(ins[0], _Lit):
            parts = self.parts(ins[0], eqn.invars[0].aval)
            env[eqn.outvars[0]] = parts[0] if out_aval.shape == () else _Elems(parts)
            return
        if name == "stack" and all(s == () for s in shapes) and eqn.params["axis"] == 0:
            env[eqn.outvars[0]] = _Elems(ins)
            return
        if name == "broadcast_in_dim" and shapes[0] == () and len(out_aval.shape) == 1:
            env[eqn.outvars[0]] = _Elems([ins[0]] * out_aval.shape[0])
            return
        if name == "concatenate" and all(len(s) == 1 for s in shapes) and not any(
            isinstance(x, _Lit) for x in ins
        ):
            parts = [p for x, v in zip(ins, eqn.invars) for p in self.parts(x, v.aval)]
            env[eqn.outvars[0]] = _Elems(parts)
            return
        if name in ("jit", "pjit", "closed_call"):
            key = "jaxpr" if "jaxpr" in eqn.params else "call_jaxpr"
            sub = eqn.params[key]
            outs = self.run(sub.jaxpr, list(sub.consts), ins)
            for v, x in zip(eqn.outvars, outs):
                env[v] = x
            return
        values = [x.val if isinstance(x, _Lit) else self.array(x, v.aval) for x, v in zip(ins, eqn.invars)]
        out = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
        outs = out if eqn.primitive.multiple_results else [out]
        for v, x in zip(eqn.outvars, outs):
            env[v] = x


def _from_source(eqn):
    """A context in which new equations carry `eqn`'s source information (as
    `jax.core.eval_jaxpr` does), so that the rewritten jaxpr still points to the user's
    code: the engine names that place in its errors."""
    try:
        from jax._src import source_info_util

        info = eqn.source_info
        return source_info_util.user_context(info.traceback, name_stack=info.name_stack)
    except Exception:  # pragma: no cover - private API moved
        return contextlib.nullcontext()


class _Lit:
    __slots__ = ("val",)

    def __init__(self, val):
        self.val = val


def batch_scalars(closed, *args):
    """Re-trace `closed` (a `ClosedJaxpr`) at `args` with its scalar operations batched.

    **Arguments:**

    - `closed`: the jaxpr to rewrite.
    - `args`: example arguments (arrays or tracers) with the jaxpr's input types.

    **Returns:**

    A `ClosedJaxpr` computing the same outputs, or `closed` itself when there is
    nothing worth batching.
    """
    if not worth_batching(closed.jaxpr):
        return closed

    def fn(*xs):
        return _Evaluator().run(closed.jaxpr, list(closed.consts), list(xs))

    return jax.make_jaxpr(fn)(*args)
