"""The state an expansion keeps between orders, as a pytree.

The recurrence engine keeps, for every equation of a jaxpr, the series of its outputs
and whatever auxiliary series its rule needs at later orders (`ctx`, see `_rules.py`),
in plain Python containers that grow order by order. Expanding a loop body order by
order inside a `lax.scan` (see `_scan_rule` in `recurrence.py`) needs that state as
arrays with one entry per iteration, and rebuilt inside each order's scan body. This
module makes it a pytree without asking rules to declare anything:

- `flatten(state, shared)` copies the containers reachable from `state` (lists, dicts,
  tuples, instances of taylorode's own classes such as the engine's expanders, `Const`
  and rules' helper objects, and the closures of Python functions, such as a switching
  function's series), replacing each tracer by a numbered placeholder. It returns the copy (a *template*: static, no tracers) and the
  tracers. Objects in `shared` (the series of a loop's loop-invariant inputs, the same
  for every iteration) become placeholders of their own instead of being copied.
- `unflatten(template, leaves, shared)` rebuilds the state from the template with new
  leaves (each iteration's slice of the stacked arrays) and the current shared objects.
- `snapshot(state)` copies the containers and keeps the arrays: a throwaway copy that
  can be advanced by one order without touching the original.

Aliasing is preserved (a list reachable from two places is copied once), which the
engine relies on: an equation's input series is the very list its producer appends to.
"""

import functools
import types

import jax


class Leaf:
    """Placeholder for the `index`-th leaf (a tracer) of a template."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


class Shared:
    """Placeholder for the `index`-th shared object of a template."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


class Template:
    """A flattened state: static, and opaque to `flatten` (so that a loop nested in a
    loop keeps its own template, placeholders included, as it is)."""

    __slots__ = ("tree",)

    def __init__(self, tree):
        self.tree = tree


def _copy(obj, is_leaf, on_leaf, memo):
    key = id(obj)
    if key in memo:
        return memo[key][1]
    if is_leaf(obj):
        out = on_leaf(obj)
    elif type(obj) is list:
        out = []
        memo[key] = (obj, out)
        out.extend(_copy(x, is_leaf, on_leaf, memo) for x in obj)
        return out
    elif type(obj) is dict:
        out = {}
        memo[key] = (obj, out)
        for k, v in obj.items():
            out[k] = _copy(v, is_leaf, on_leaf, memo)
        return out
    elif type(obj) is tuple:
        out = tuple(_copy(x, is_leaf, on_leaf, memo) for x in obj)
    elif _is_ours(obj):
        out = object.__new__(type(obj))
        memo[key] = (obj, out)
        for name in _attributes(obj):
            object.__setattr__(out, name, _copy(getattr(obj, name), is_leaf, on_leaf, memo))
        return out
    elif isinstance(obj, types.FunctionType) and obj.__closure__:
        cells = tuple(types.CellType() for _ in obj.__closure__)
        out = types.FunctionType(obj.__code__, obj.__globals__, obj.__name__, obj.__defaults__, cells)
        out.__kwdefaults__ = obj.__kwdefaults__
        memo[key] = (obj, out)
        for old, new in zip(obj.__closure__, cells):
            try:
                contents = old.cell_contents
            except ValueError:  # an empty cell
                continue
            new.cell_contents = _copy(contents, is_leaf, on_leaf, memo)
        return out
    elif isinstance(obj, types.MethodType):
        # A bound method would carry its instance's state past the copy; rules keep
        # functions and their own objects instead.
        raise TypeError(
            "taylorode internal error: a rule keeps a bound method in its state between "
            "orders, which loop expansion cannot copy; keep a function or an object."
        )
    elif isinstance(obj, functools.partial):
        out = functools.partial(
            _copy(obj.func, is_leaf, on_leaf, memo),
            *_copy(obj.args, is_leaf, on_leaf, memo),
            **_copy(obj.keywords, is_leaf, on_leaf, memo),
        )
    else:  # static: numbers, strings, NumPy and concrete arrays, jaxprs, templates
        out = obj
    memo[key] = (obj, out)
    return out


def _is_ours(obj) -> bool:
    """Instances of taylorode's own classes (the engine's expanders and `Const`, rules'
    helper objects) are copied attribute by attribute; those of other libraries (JAX's
    jaxprs and primitives, NumPy arrays) are static."""
    cls = type(obj)
    return cls.__module__.startswith("taylorode.") and cls not in (Template, Leaf, Shared) and not isinstance(obj, type)


def _attributes(obj):
    slots = [s for cls in type(obj).__mro__ for s in getattr(cls, "__slots__", ())]
    return list(getattr(obj, "__dict__", {})) + [s for s in slots if hasattr(obj, s)]


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def flatten(state, shared=(), inputs=()):
    """`(template, new_leaves, origin)`: the template of `state`, with `shared` objects
    as placeholders. `origin[i]` is the position in `inputs` of the template's leaf `i`
    where that leaf is one of `inputs` (unchanged since `unflatten`), else `None`, in
    which case the leaf is the next of `new_leaves`."""
    positions = {id(x): i for i, x in enumerate(inputs)}
    new, origin = [], []

    def on_leaf(x):
        origin.append(positions.get(id(x)))
        if origin[-1] is None:
            new.append(x)
        return Leaf(len(origin) - 1)

    memo = {id(s): (s, Shared(i)) for i, s in enumerate(shared)}
    tree = _copy(state, _is_tracer, on_leaf, memo)
    return Template(tree), new, origin


def unflatten(template, leaves, shared=()):
    """The state of `template` with the given leaves and shared objects."""

    def on_leaf(x):
        return leaves[x.index] if isinstance(x, Leaf) else shared[x.index]

    return _copy(template.tree, lambda x: isinstance(x, (Leaf, Shared)), on_leaf, {})


def snapshot(state, shared=()):
    """A copy of `state`'s containers sharing its arrays (and the `shared` objects)."""
    memo = {id(s): (s, s) for s in shared}
    return _copy(state, lambda x: False, None, memo)
