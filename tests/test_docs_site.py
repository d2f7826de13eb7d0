"""What users read stays user-facing: no private module paths in the public docstrings
and signatures that the API pages render, and no project-tracking words in the README,
the documentation pages and those docstrings. Builds nothing; reads `docs/api/*.md`'s
mkdocstrings directives, imports the objects they name and reads their docstrings with
`inspect` (and, where griffe, the docs' own parser, is installed, their signatures as
the API pages show them)."""

import importlib
import inspect
import re
import types
from pathlib import Path

import pytest

import taylorode


ROOT = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r"^::: (taylorode(?:\.\w+)*)[ \t]*\n((?:[ \t]+\S.*\n?)*)", re.MULTILINE)
SNIPPET = re.compile(r'^\s*--8<--\s+"([^":]+)', re.MULTILINE)

# Names that exist only inside the package: private modules and their files, and the
# private modules of the libraries taylorode builds on.
PRIVATE = re.compile(
    r"\btaylorode\._\w"
    r"|\btaylorode/_\w"
    r"|\b(?:jax|jaxlib)\._src\b"
    r"|\b(?:diffrax|equinox|eqx|optimistix|optx|lineax|lx|jaxtyping)\._\w"
    r"|(?<![\w.])_custom_types\b"
    r"|(?<![\w./])_coefficients\b"
    r"|\bmodule's docstring\b"
)
# Project bookkeeping, which belongs in the tracker, not in the docs. ("issues" alone is
# allowed: the changelog names the project's issue-tracker link.)
TRACKING = re.compile(r"\bissue\b|\bdone when\b|\bsessions?\b|\bmilestones?\b", re.IGNORECASE)


def _directives():
    """(identifier, options) of every `::: taylorode.X` in docs/api/*.md."""
    found = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            found.append((match.group(1), _options(match.group(2))))
    return found


def _options(block):
    """The `members:` option of a directive's indented YAML block, the only one read
    here: `false`, `[a, b]` or a list of `- a` lines."""
    match = re.search(r"^\s*members:[ \t]*(.*)$((?:\n\s*- .*)*)", block, re.MULTILINE)
    if match is None:
        return {}
    inline, items = match.group(1).strip(), match.group(2)
    if inline.lower() == "false":
        return {"members": False}
    if inline.startswith("["):
        return {"members": [name.strip() for name in inline.strip("[]").split(",") if name.strip()]}
    return {"members": re.findall(r"- (\w+)", items)}


def _resolve(identifier):
    module, *attributes = identifier.split(".")
    obj = importlib.import_module(module)
    for attribute in attributes:
        obj = getattr(obj, attribute)
    return obj


def _members(obj, options):
    """The public members with docstrings that mkdocstrings shows for `obj`."""
    selected = options.get("members", None)
    if selected is False:
        return []
    if isinstance(obj, types.ModuleType):
        names = getattr(obj, "__all__", None) or [
            name for name, value in vars(obj).items()
            if getattr(value, "__module__", None) == obj.__name__
        ]
        candidates = {name: getattr(obj, name) for name in names}
    elif inspect.isclass(obj):
        candidates = dict(vars(obj))
    else:
        return []
    if isinstance(selected, list):
        candidates = {name: candidates[name] for name in selected}
    members = []
    for name, value in candidates.items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if callable(value) or isinstance(value, types.ModuleType):
            members.append((name, value))
    return members


def _public_docstrings():
    """(where, docstring) for every object the API pages render."""
    texts = {}
    for identifier, options in _directives():
        obj = _resolve(identifier)
        texts[identifier] = inspect.getdoc(obj) or ""
        if inspect.isclass(obj) and "__init__" in vars(obj):
            texts[f"{identifier}.__init__"] = vars(obj)["__init__"].__doc__ or ""
        for name, member in _members(obj, options):
            texts[f"{identifier}.{name}"] = member.__doc__ or ""
    return texts


def _user_pages():
    """README.md, docs/**/*.md and the Markdown files they include with --8<--."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in list(pages):
        for included in SNIPPET.findall(page.read_text(encoding="utf-8")):
            if included.endswith(".md"):
                pages.append(ROOT / included)
    return pages


DOCSTRINGS = _public_docstrings()


def test_every_public_name_has_an_api_entry():
    documented = {identifier for identifier, _ in _directives()}
    public = {
        f"taylorode.{name}"
        for name, value in vars(taylorode).items()
        if not name.startswith("_")
        and not (isinstance(value, types.ModuleType) and not value.__name__.startswith("taylorode"))
    }
    assert public <= documented, sorted(public - documented)
    assert len(DOCSTRINGS) > len(public)


@pytest.mark.parametrize("where", sorted(DOCSTRINGS))
def test_docstring_names_no_private_module(where):
    found = PRIVATE.findall(DOCSTRINGS[where])
    assert not found, f"{where} names {found}: users cannot import or read these"


def test_no_project_tracking_words():
    found = []
    for page in _user_pages():
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if TRACKING.search(line):
                found.append(f"{page.relative_to(ROOT)}:{number}: {line.strip()}")
    for where, doc in DOCSTRINGS.items():
        for line in doc.splitlines():
            if TRACKING.search(line):
                found.append(f"{where}: {line.strip()}")
    assert not found, "\n".join(found)


def test_signatures_name_no_private_object():
    """Annotations and defaults as the API pages show them (griffe reads the source, so
    an alias such as `VectorField` is shown by its name): every name they use must be
    public, in taylorode or in a library's public namespace."""
    griffe = pytest.importorskip("griffe")
    package = griffe.load("taylorode", search_paths=[str(ROOT)], resolve_aliases=True)
    problems = []
    for identifier, options in _directives():
        obj = package[identifier.removeprefix("taylorode.")] if identifier != "taylorode" else package
        functions = [obj] if obj.is_function or obj.is_class else []
        if (obj.is_class or obj.is_module) and options.get("members", None) is not False:
            selected = options.get("members")
            for name, member in obj.members.items():
                if isinstance(selected, list) and name not in selected:
                    continue
                try:  # what mkdocstrings shows: public members with a docstring
                    if member.is_function and member.is_public and member.docstring:
                        functions.append(member)
                except griffe.AliasResolutionError:  # an import from elsewhere
                    continue
        for function in functions:
            # A class's parameters are its __init__'s (or its fields'), as the page shows.
            parts = [p.annotation for p in function.parameters]
            parts += [] if function.is_class else [function.returns]
            parts += [p.default for p in function.parameters]
            for part in parts:
                if part is None or isinstance(part, str):
                    continue
                for name in part.iterate(flat=True):
                    if isinstance(name, str) or not hasattr(name, "canonical_path"):
                        continue
                    path = name.canonical_path
                    if not path.startswith("taylorode."):
                        if re.search(r"\._", path):
                            problems.append(f"{function.path}: {path}")
                        continue
                    public = f"taylorode.{path.rsplit('.', 1)[-1]}"
                    if public not in {i for i, _ in _directives()}:
                        problems.append(f"{function.path}: {name} ({path}) is not public")
    assert not problems, "\n".join(problems)


def test_faq_versions_are_pyproject_ranges():
    """The FAQ's table of tested versions is pyproject.toml's dependency ranges."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    faq = (ROOT / "docs" / "faq.md").read_text(encoding="utf-8").splitlines()
    rows = [line for line in faq if line.strip().startswith("|")]
    for dependency in project["dependencies"]:
        name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dependency).groups()
        assert any(
            name in re.split(r"[\s,|]+", row) and f"`{spec.replace(' ', '')}`" in row for row in rows
        ), f"docs/faq.md does not list {dependency} (pyproject.toml)"
    minimum = re.fullmatch(r">=\s*([\d.]+)", project["requires-python"]).group(1)
    assert any(f"Python {minimum} or newer" in line for line in faq)


def test_home_page_numbers_are_the_benchmark_pages():
    """Every ratio, time range and tolerance in the home page's summary is quoted from
    docs/benchmarks.md, so the two cannot disagree."""
    home = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    summary = home.split("## At a glance", 1)[1].split("\n## ", 1)[0]
    benchmarks = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    numbers = re.findall(r"\d+(?:\.\d+)?(?:–\d+(?:\.\d+)?)?(?:×| s\b)|\d(?:\.\d+)?e-\d+", summary)
    assert len(numbers) > 10
    missing = [number for number in numbers if number not in benchmarks]
    assert not missing, f"docs/index.md quotes {missing}, which docs/benchmarks.md does not have"


def test_home_page_citation_is_taylorodes():
    home = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    block = re.search(r"```bibtex\n(.*?)```", home, re.DOTALL).group(1)
    assert block.strip() == taylorode.citation(taylorode.Taylor()).split("\n\n")[0].strip()


def test_no_list_item_left_in_a_paragraph():
    """A list item written right under an indented paragraph, without a blank line, renders
    as text inside that paragraph ("... raised. - **Deprecations.** ..."). Rendered here
    with the site's Markdown extensions; `make site-check` looks for the same in the
    built site."""
    markdown = pytest.importorskip("markdown")
    extensions = [
        "admonition", "attr_list", "md_in_html", "tables", "pymdownx.details",
        "pymdownx.superfences", "pymdownx.arithmatex", "pymdownx.snippets",
    ]
    configs = {"pymdownx.arithmatex": {"generic": True}, "pymdownx.snippets": {"base_path": [str(ROOT)]}}
    found = []
    for page in _user_pages():
        html = markdown.markdown(
            page.read_text(encoding="utf-8"), extensions=extensions, extension_configs=configs
        )
        for paragraph in re.findall(r"<p>(.*?)</p>", html, re.DOTALL):
            text = re.sub(r'<span class="arithmatex">.*?</span>|<code>.*?</code>|<[^>]+>', "", paragraph, flags=re.DOTALL)
            for line in text.splitlines()[1:]:
                if re.match(r"\s*[-*+]\s+\S", line):
                    found.append(f"{page.relative_to(ROOT)}: {line.strip()[:70]}")
    assert not found, "list items rendered as paragraph text (add a blank line before them):\n" + "\n".join(found)
