"""docs/benchmarks.md shows measured numbers only as copies of the results files.

Every table of measurements on the benchmarks page sits in a generated block,
`<!-- generated: benchmarks/results_<name>.md, table <N> -->` ... `<!-- /generated -->`
(or `header`), which `python benchmarks/render_docs.py` fills in from the results file.
These tests parse files only (no JAX, no heyoka): they fail when a block differs from its
source, when a marker names a results file or table that does not exist, when a table
with numbers stands outside the blocks without a `<!-- not generated: <reason> -->`
note on the last non-blank line before it, and when a line of prose copied from a results
file (one that opens like a line of it) no longer equals that line.
"""

import importlib.util
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


def _load_render_docs():
    spec = importlib.util.spec_from_file_location(
        "render_docs", ROOT / "benchmarks" / "render_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rd = _load_render_docs()
FIX = "run `python benchmarks/render_docs.py` to refresh the blocks"


def test_generated_blocks_match_results_files():
    _, changed = rd.refresh(DOC.read_text())
    assert not changed, (
        f"{len(changed)} generated block(s) of docs/benchmarks.md differ from their "
        f"results files ({FIX}):\n\n"
        + "\n\n".join(rd.diff(block, old, new) for block, old, new in changed)
    )


def test_markers_name_existing_files_and_tables():
    blocks = rd.blocks(DOC.read_text().splitlines())
    assert blocks, "docs/benchmarks.md has no generated blocks"
    errors = []
    for block in blocks:
        try:
            rd.render(block.path, block.what)
        except rd.DocError as exc:
            errors.append(f"line {block.begin + 1}: {exc}")
    assert not errors, "\n".join(errors)


def test_numeric_tables_are_generated():
    bad = rd.unmarked_numeric_tables(DOC.read_text())
    assert not bad, (
        "tables with numbers outside generated blocks in docs/benchmarks.md (copy them "
        "from a results file with a generated block, or say why not with "
        "'<!-- not generated: <reason> -->' on the last non-blank line before them):\n"
        + "\n".join(f"line {line}: {first}" for line, first in bad)
    )


def test_lines_copied_from_results_files_match_them():
    stale = rd.stale_copies(DOC.read_text())
    assert not stale, (
        "lines of docs/benchmarks.md that copy a line of a results file (the same opening) "
        "but differ from it: copy the line again from its file\n"
        + "\n".join(f"line {line}: {text[:100]}" for line, text in stale)
    )


# --- The checker itself, on small documents -------------------------------------------


RESULTS = """# Title

- Date: 2026-01-01 00:00 UTC
- Machine: test machine, 2 CPUs
- Versions: Python 3.11, jax 0.10

| a | b |
|---|---:|
| x | 1.5 |

## Second

| c | d |
|---|---:|
| y | 2e-3 |
"""


@pytest.fixture
def root(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "results_x.md").write_text(RESULTS)
    return tmp_path


def _doc(what, content=("",)):
    return "\n".join(
        ["# Doc", "", f"<!-- generated: benchmarks/results_x.md, {what} -->", *content,
         "<!-- /generated -->", ""]
    )


def test_render_copies_the_table_and_the_header_fields(root):
    lines = rd.render("benchmarks/results_x.md", "table 2", root)
    assert lines[-4:] == ["| c | d |", "|---|---:|", "| y | 2e-3 |", ""]
    assert "| x | 1.5 |" not in lines
    assert any("2026-01-01 00:00 UTC" in line for line in lines)
    assert any("Versions: Python 3.11, jax 0.10" in line for line in lines)
    header = rd.render("benchmarks/results_x.md", "header", root)
    assert "- Machine: test machine, 2 CPUs" in header


def test_refresh_reports_a_stale_block(root):
    fresh, changed = rd.refresh(_doc("table 1"), root)
    assert len(changed) == 1
    again, changed = rd.refresh(fresh, root)
    assert again == fresh and not changed
    stale = fresh.replace("| x | 1.5 |", "| x | 1.6 |")
    _, changed = rd.refresh(stale, root)
    assert len(changed) == 1


@pytest.mark.parametrize(
    "doc, message",
    [
        (_doc("table 3"), "no table 3"),
        (_doc("table 1").replace("results_x.md", "results_missing.md"), "no such results file"),
        (_doc("table 1").replace("<!-- /generated -->\n", ""), "not closed"),
        (_doc("table one"), "malformed marker"),
    ],
)
def test_bad_markers_raise(root, doc, message):
    with pytest.raises(rd.DocError, match=message):
        rd.refresh(doc, root)


def test_numeric_table_outside_blocks_is_flagged_unless_marked(root):
    table = ["| solver | ms |", "|---|---:|", "| A | 3.2 |"]
    plain = "\n".join(["# Doc", "", "Text.", "", *table, ""])
    assert [line for line, _ in rd.unmarked_numeric_tables(plain)] == [5]
    marked = plain.replace("Text.", "Text. <!-- not generated: measured by hand -->")
    assert rd.unmarked_numeric_tables(marked) == []
    words = "\n".join(["| option | meaning |", "|---|---|", "| --quick | smoke run |", ""])
    assert rd.unmarked_numeric_tables(words) == []
    inside, _ = rd.refresh(_doc("table 1"), root)
    assert rd.unmarked_numeric_tables(inside) == []


def test_stale_copy_of_a_results_line_is_flagged(root):
    line = "Reference: heyoka in long double agrees to 2.9e-14 on every component."
    (root / "benchmarks" / "results_x.md").write_text(RESULTS + "\n" + line + "\n")
    doc = "\n".join(["# Doc", "", line, "", "Prose of the page, long enough to be compared.", ""])
    assert rd.stale_copies(doc, root) == []
    stale = doc.replace("2.9e-14", "3.1e-14")
    assert rd.stale_copies(stale, root) == [(3, line.replace("2.9e-14", "3.1e-14"))]
    # Inside a generated block the block check applies instead.
    assert rd.stale_copies(_doc("table 1", [line.replace("2.9", "3.1")]), root) == []
