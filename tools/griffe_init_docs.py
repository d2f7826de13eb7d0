"""Griffe extension for the API pages: `__init__` docstrings attached after the class.

taylorode follows diffrax in documenting a class's arguments after its body,

    class Taylor(...):
        ...

    Taylor.__init__.__doc__ = \"\"\"**Arguments:** ...\"\"\"

which Python sees but a static reader of the source does not, so mkdocstrings
(`merge_init_into_class`) would show these classes without their arguments. This
extension finds such assignments in taylorode's modules and gives their text to the
class's `__init__`. Where the class has no `__init__` of its own (an `equinox.Module`
whose `__init__` equinox generates from its fields), it also makes one, with the fields
as parameters in order, so that the page shows the signature users call.

Loaded by mkdocs.yml (`extensions:` of the mkdocstrings Python handler).
"""

import ast
from typing import Any

import griffe


def _assigned_init_docs(source: str) -> dict[str, str]:
    """`{class name: text}` for every top-level `Class.__init__.__doc__ = "..."`."""
    docs = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "__doc__"
            and isinstance(target.value, ast.Attribute)
            and target.value.attr == "__init__"
            and isinstance(target.value.value, ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[target.value.value.id] = node.value.value
    return docs


def _field_default(attribute: griffe.Attribute):
    """The default of an equinox field: `x: T = v` or `x: T = eqx.field(default=v)`."""
    value = attribute.value
    if isinstance(value, griffe.ExprCall) and str(value.function) in {"eqx.field", "equinox.field", "field"}:
        for argument in value.arguments:
            if isinstance(argument, griffe.ExprKeyword) and argument.name == "default":
                return argument.value
        return None
    return value


def _field_parameters(cls: griffe.Class) -> list[griffe.Parameter]:
    """The fields of an equinox Module (its own and its taylorode parents'), in order."""
    parameters = {}
    try:
        parents = [p for p in reversed(cls.mro()) if p.path.startswith("taylorode.")]
    except ValueError:
        parents = []
    for owner in [*parents, cls]:
        for member in owner.members.values():
            if member.is_alias or not member.is_attribute or member.annotation is None:
                continue
            if "class-attribute" in member.labels and "instance-attribute" not in member.labels:
                continue  # a ClassVar
            if isinstance(member.value, griffe.ExprCall) and any(
                isinstance(a, griffe.ExprKeyword) and a.name == "init" and str(a.value) == "False"
                for a in member.value.arguments
            ):
                continue
            parameters[member.name] = griffe.Parameter(
                member.name,
                annotation=member.annotation,
                kind=griffe.ParameterKind.positional_or_keyword,
                default=_field_default(member),
            )
    return list(parameters.values())


class InitDocs(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name == "taylorode":
            self._visit(pkg)

    def _visit(self, module: griffe.Module) -> None:
        for member in module.members.values():
            if not member.is_alias and member.is_module:
                self._visit(member)
        if module.filepath is None or isinstance(module.filepath, list):
            return
        for name, text in _assigned_init_docs(module.filepath.read_text(encoding="utf-8")).items():
            cls = module.members.get(name)
            if cls is None or cls.is_alias or not cls.is_class:
                continue
            init = cls.members.get("__init__")
            if init is None:
                init = griffe.Function(
                    "__init__",
                    parent=cls,
                    parameters=griffe.Parameters(
                        griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword),
                        *_field_parameters(cls),
                    ),
                    returns="None",
                )
                cls.set_member("__init__", init)
            init.docstring = griffe.Docstring(text, parent=init)
