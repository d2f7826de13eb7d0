"""Refresh the tables of docs/benchmarks.md from the results files of the benchmarks.

Every table of measured numbers in docs/benchmarks.md is a generated block, a verbatim
copy of a table (or of the header) of one results file, between two markers:

    <!-- generated: benchmarks/results_compile.md, table 2 -->
    ... (written by this script; do not edit by hand)
    <!-- /generated -->

- `table N`: the N-th Markdown table of the results file, counting from 1 in the order
  of the file. The block holds a collapsed note naming the file and giving the Date,
  Machine, Versions and Command lines of its header, then the table.
- `header`: the results file's header, the list of "- ..." lines under its title (Date,
  Machine, Versions, Command, settings), verbatim.

A table with numbers that is not a copy of a results file must say why: the last
non-blank line before it ends with `<!-- not generated: <reason> -->`. A line of prose
that opens like a line of a results file (its first 40 characters) is a copy of one and
must equal it. `tests/test_benchmark_docs.py` checks all four rules (blocks up to date,
markers naming a file and a table that exist, no unmarked numeric table outside the
blocks, copied lines up to date) with the functions below, which read files only (no
JAX).

    python benchmarks/render_docs.py            # rewrite the blocks of docs/benchmarks.md
    python benchmarks/render_docs.py --check    # report stale blocks, exit 1 if any
"""

import argparse
import dataclasses
import difflib
import re
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"

BEGIN = re.compile(r"^<!-- generated: (?P<path>\S+), (?P<what>header|table (?P<n>\d+)) -->$")
END = "<!-- /generated -->"
NOT_GENERATED = re.compile(r"<!-- not generated: .+ -->\s*$")
# The header fields that a table block's note repeats.
NOTE_FIELDS = ("Machine", "Versions", "Command", "XLA_FLAGS")
# A cell that is a measured number: a decimal, possibly signed, scaled, percent, x.
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(\.\d+)?(e[-+]?\d+)?\s*(%|×|x)?(?![\w.])")


class DocError(Exception):
    """A marker that names no file or table, or a block that is not closed."""


@dataclasses.dataclass(frozen=True)
class Table:
    start: int  # the line index of its first line
    lines: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Block:
    begin: int  # the line index of the opening marker
    end: int  # the line index of the closing marker
    path: str  # as written in the marker, relative to the repository root
    what: str  # "header" or "table N"


def tables(lines):
    """The Markdown tables in `lines`: runs of lines starting with "|" (after any
    indentation) whose second line is an alignment row."""
    found, i = [], 0
    is_row = lambda line: line.lstrip().startswith("|")  # noqa: E731
    while i < len(lines):
        if is_row(lines[i]):
            j = i
            while j < len(lines) and is_row(lines[j]):
                j += 1
            if j - i >= 2 and re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", lines[i + 1].strip()):
                found.append(Table(i, tuple(lines[i:j])))
            i = j
        else:
            i += 1
    return found


def header(lines):
    """The header of a results file: the "- ..." lines after its title, up to the
    first line that is neither a list item nor its continuation."""
    start = next((i for i, line in enumerate(lines) if line.startswith("- ")), None)
    if start is None:
        return []
    end = start
    while end < len(lines) and lines[end].strip() and not lines[end].startswith(("#", "|")):
        end += 1
    return lines[start:end]


def header_fields(lines):
    """{"Date": "...", "Machine": "...", ...} from a results file's header."""
    fields = {}
    for line in header(lines):
        m = re.match(r"- (\w[\w ]*?): (.*)$", line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
    return fields


def blocks(lines):
    """The generated blocks of a document, in order; raises `DocError` for a block
    that is not closed or a stray closing marker."""
    found, begin = [], None
    for i, line in enumerate(lines):
        m = BEGIN.match(line)
        if m:
            if begin is not None:
                raise DocError(f"line {begin + 1}: generated block not closed before "
                               f"line {i + 1}")
            begin = (i, m.group("path"), m.group("what"))
        elif line == END:
            if begin is None:
                raise DocError(f"line {i + 1}: {END} without an opening marker")
            found.append(Block(begin[0], i, begin[1], begin[2]))
            begin = None
        elif line.startswith("<!-- generated"):
            raise DocError(f"line {i + 1}: malformed marker {line!r} (expected "
                           "'<!-- generated: <path>, table <N> -->' or '..., header -->')")
    if begin is not None:
        raise DocError(f"line {begin[0] + 1}: generated block not closed")
    return found


def render(path, what, root=ROOT):
    """The lines of a generated block's content: `what` ("header" or "table N") of
    the results file `path` (relative to `root`)."""
    source = root / path
    if not source.is_file():
        raise DocError(f"{path}: no such results file")
    lines = source.read_text().splitlines()
    if what == "header":
        content = header(lines)
        if not content:
            raise DocError(f"{path}: no header (no '- ...' lines under the title)")
        return ["", f"From `{path}`:", "", *content, ""]
    n = int(what.split()[1])
    found = tables(lines)
    if not 1 <= n <= len(found):
        raise DocError(f"{path}: no table {n} (the file has {len(found)} tables)")
    fields = header_fields(lines)
    title = f"Source: `{path}`, table {n} ({fields.get('Date', 'date not recorded')})"
    note = [f"??? note \"{title}\""]
    note += [f"    - {key}: {fields[key]}" for key in NOTE_FIELDS if key in fields]
    if len(note) == 1:
        note.append("    The results file records no machine or versions.")
    return ["", *note, "", *found[n - 1].lines, ""]


def refresh(text, root=ROOT):
    """`text` with every generated block re-rendered: (new text, [(block, old lines,
    new lines)] of the blocks that changed)."""
    lines = text.splitlines()
    out, changed, pos = [], [], 0
    for block in blocks(lines):
        new = render(block.path, block.what, root)
        old = lines[block.begin + 1 : block.end]
        out += lines[pos : block.begin + 1] + new
        pos = block.end
        if old != new:
            changed.append((block, old, new))
    out += lines[pos:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else ""), changed


def unmarked_numeric_tables(text):
    """[(line number, first line)] of the tables outside generated blocks that hold
    numbers in their body and whose last non-blank line before them does not end with
    `<!-- not generated: ... -->`."""
    lines = text.splitlines()
    inside = set()
    for block in blocks(lines):
        inside.update(range(block.begin, block.end + 1))
    bad = []
    for table in tables(lines):
        if table.start in inside:
            continue
        before = [line.strip() for line in lines[: table.start] if line.strip()]
        if before and NOT_GENERATED.search(before[-1]):
            continue
        cells = [c.strip() for row in table.lines[2:] for c in row.strip().strip("|").split("|")]
        if any(NUMBER.search(c) for c in cells):
            bad.append((table.start + 1, table.lines[0]))
    return bad


# Lines of prose copied from a results file (a "Reference: ..." line, a "Run-time ratios
# ..." line) are recognised by their opening: this many characters equal to the opening
# of a line of some results file.
COPY_PREFIX = 40


def stale_copies(text, root=ROOT):
    """[(line number, line)] of the lines outside generated blocks that open like a line
    of a results file (the same first `COPY_PREFIX` characters) but equal none of them:
    a copy of a results line that was not refreshed with its file."""
    lines = text.splitlines()
    inside = set()
    for block in blocks(lines):
        inside.update(range(block.begin, block.end + 1))
    sources = {}
    for path in sorted((root / "benchmarks").glob("results_*.md")):
        for line in path.read_text().splitlines():
            if len(line) >= COPY_PREFIX:
                sources.setdefault(line[:COPY_PREFIX], set()).add(line)
    return [
        (i + 1, line) for i, line in enumerate(lines)
        if i not in inside and len(line) >= COPY_PREFIX
        and line not in sources.get(line[:COPY_PREFIX], {line})
    ]


def diff(block, old, new):
    return "\n".join(difflib.unified_diff(
        old, new, f"docs (line {block.begin + 1})", f"{block.path}, {block.what}",
        lineterm="", n=1,
    ))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a block differs from its source")
    parser.add_argument("--doc", type=Path, default=DOC, help="default: %(default)s")
    cli = parser.parse_args()
    text = cli.doc.read_text()
    try:
        new_text, changed = refresh(text)
    except DocError as exc:
        sys.exit(f"{cli.doc}: {exc}")
    for block, old, new in changed:
        print(diff(block, old, new) if cli.check else
              f"refreshed line {block.begin + 1}: {block.path}, {block.what}")
    for line, first in unmarked_numeric_tables(text):
        print(f"{cli.doc}:{line}: numeric table outside a generated block: {first[:60]}")
    stale = stale_copies(text)
    for line, copy in stale:
        print(f"{cli.doc}:{line}: copied from a results file but differs from it now: "
              f"{copy[:60]}")
    if cli.check:
        sys.exit(1 if changed or stale else 0)
    if changed:
        cli.doc.write_text(new_text)
    print(f"{len(changed)} of {len(blocks(text.splitlines()))} blocks refreshed in {cli.doc}")


if __name__ == "__main__":
    main()
