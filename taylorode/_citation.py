import inspect
import re


_TAYLORODE = """@software{taylorode,
    author={{The taylorode developers}},
    title={taylorode: {T}aylor-series {ODE} solvers for {JAX} and diffrax},
    year={2026},
    note={Python package, version VERSION}
}"""

_BLOCK = re.compile(r'\?\?\? cite "[^"]*"\s*```bibtex\n(.*?)```', re.DOTALL)
_ENTRY = re.compile(r"@\w+\{([^,]+),")


def _entries(obj) -> list[str]:
    doc = inspect.getdoc(obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj))
    out = []
    for block in _BLOCK.findall(doc or ""):
        for entry in re.split(r"\n\s*\n(?=\s*@)", inspect.cleandoc(block)):
            if entry.strip():
                out.append(inspect.cleandoc(entry))
    return out


def citation(*objects) -> str:
    """BibTeX for taylorode and for the methods behind the objects of a solve.

    The references are read from the `??? cite "References"` blocks of the objects'
    docstrings (as `diffrax.citation` does for diffrax's solvers), so they are the ones
    shown in this documentation.

    **Arguments:**

    - `*objects`: solvers, controllers or functions of taylorode used in your work,
        e.g. `taylorode.citation(taylorode.Taylor(), taylorode.TaylorController(1e-12,
        1e-12))`. With none, the references of every public taylorode object.

    **Returns:**

    A string of BibTeX entries, taylorode's own first, each entry once. Print it.
    """
    import taylorode

    if not objects:
        objects = tuple(
            getattr(taylorode, name) for name in dir(taylorode) if not name.startswith("_")
        )
    seen, entries = set(), [_TAYLORODE.replace("VERSION", taylorode.__version__)]
    for obj in objects:
        for entry in _entries(obj):
            key = _ENTRY.match(entry.strip())
            key = key.group(1) if key else entry
            if key not in seen:
                seen.add(key)
                entries.append(entry)
    return "\n\n".join(entries) + "\n"
