"""Check the built documentation site in a headless browser.

Serves `build/site` (from `make docs`) on localhost, opens the home page, the Examples
page, the FAQ and every API page (`docs/api/*.md`) in headless Chromium, with every host
but localhost unresolvable (so nothing comes from the network), and checks the DOM after
the page's scripts have run:

- math: on a page whose HTML has math (`arithmatex` elements, `\\(...\\)` and
  `\\[...\\]` from the Markdown's `$...$`), MathJax has typeset it: `mjx-container`
  elements are present, none inside another (math typeset twice), no `\\(` or `\\[` is
  left in the text, and MathJax reported no error (`mjx-merror`);
- code: the home page shows a code block, and the Examples page shows each script
  included with `--8<--` as a code block with the script's full text;
- every page: no request for a file of the site failed (a missing MathJax font, image
  or script), no `--8<--` snippet line was left unexpanded, and no paragraph holds a
  Markdown list item that did not render as one (a missing blank line before a list).

It also checks the last point, which needs no browser, on every page of the site.
It prints one row per page and exits with 1 if any check fails (2 if Chromium or the
site is missing). A developer check, not part of `make test` (CI has no Chromium):

    make site-check                      # builds the docs, then runs this
    .venv/bin/python tools/check_site.py [--site build/site] [--chromium PATH]

Chromium: `apt-get install chromium` (Debian), or pass `--chromium` / set `CHROMIUM`.
"""

import argparse
import functools
import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
SNIPPET = re.compile(r'^\s*--8<--\s+"([^"]+)"\s*$', re.MULTILINE)
# A line of a paragraph that starts like a Markdown list item.
LIST_MARKER = re.compile(r"^\s*[-*+]\s+\S")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Dom(html.parser.HTMLParser):
    """The counts and texts the checks need, from one HTML document."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.math_sources = 0  # elements of class arithmatex (math before MathJax)
        self.containers = 0  # <mjx-container>
        self.nested = 0  # <mjx-container> inside another (the same math typeset twice)
        self.errors = 0  # <mjx-merror>
        self.text = []  # visible text outside code, scripts and typeset math
        self.codes = []  # text of each <pre> block
        self.paragraphs = []  # text of each <p>
        self._pre = None
        self._p = None

    def _inside(self, *tags):
        return any(tag in tags for tag, _ in self.stack)

    def _in_math(self):
        return any("arithmatex" in classes for _, classes in self.stack)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if "arithmatex" in classes:
            self.math_sources += 1
        if tag == "mjx-container":
            self.containers += 1
            self.nested += self._inside("mjx-container")
        if tag == "mjx-merror":
            self.errors += 1
        if tag == "pre" and self._pre is None:
            self._pre = []
        if tag == "p" and self._p is None:
            self._p = []
        if tag not in VOID:
            self.stack.append((tag, classes))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        # Pop to the matching open tag (browsers' DOMs are well nested; this is lenient).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break
        if tag == "pre" and self._pre is not None and not self._inside("pre"):
            self.codes.append("".join(self._pre))
            self._pre = None
        if tag == "p" and self._p is not None and not self._inside("p"):
            self.paragraphs.append("".join(self._p))
            self._p = None

    def handle_data(self, data):
        if self._inside("script", "style", "noscript", "template"):
            return
        if self._pre is not None:
            self._pre.append(data)
        if self._p is not None and not (self._inside("code", "mjx-container") or self._in_math()):
            self._p.append(data)
        if not self._inside("pre", "code", "mjx-container"):
            self.text.append(data)


def _parse(html_text):
    dom = _Dom()
    dom.feed(html_text)
    dom.close()
    return dom


def _unrendered_list_items(dom):
    """Paragraph lines that look like list items (a list glued to the text before it)."""
    found = []
    for paragraph in dom.paragraphs:
        lines = paragraph.splitlines()
        for line in lines[1:]:
            if LIST_MARKER.match(line):
                found.append(line.strip()[:60])
    return found


class _Server:
    """The site on 127.0.0.1 in a thread, recording every request and its status."""

    def __init__(self, site):
        self.log = []
        lock = threading.Lock()
        log = self.log

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                with lock:
                    log.append((self.path, int(code) if str(code).isdigit() else code))

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(site))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _dump_dom(chromium, url, budget_ms, timeout_s):
    with tempfile.TemporaryDirectory(prefix="taylorode-site-check-") as profile:
        cmd = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
            # Everything but the local server is unreachable: the site must render offline.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--virtual-time-budget={budget_ms}", "--dump-dom", url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or "<html" not in done.stdout:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"chromium failed on {url} (exit {done.returncode}):\n{tail}")
    return done.stdout


def _pages(site):
    """(name, path of index.html relative to the site, kind) of the pages to open."""
    pages = [("home", "index.html", "home"), ("examples", "examples/index.html", "examples")]
    if (site / "faq" / "index.html").exists():
        pages.append(("faq", "faq/index.html", "page"))
    for md in sorted((ROOT / "docs" / "api").glob("*.md")):
        pages.append((f"api/{md.stem}", f"api/{md.stem}/index.html", "api"))
    return pages


def _normalise(code):
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def check_page(name, path, kind, site, server, chromium, budget_ms):
    """One row of the table: the counts, and the failures (an empty list if it passes)."""
    source = _parse((site / path).read_text(encoding="utf-8"))
    start = len(server.log)
    dom = _parse(_dump_dom(chromium, server.url + path, budget_ms, timeout_s=120))
    requests = server.log[start:]
    text = "".join(dom.text)
    raw_math = len(re.findall(r"\\[(\[]", text))
    failures = []
    if source.math_sources:
        if dom.containers == 0:
            failures.append("math not typeset (no mjx-container)")
        if raw_math:
            failures.append(f"{raw_math} raw \\( or \\[ left in the text")
        if dom.errors:
            failures.append(f"{dom.errors} MathJax errors (mjx-merror)")
        if dom.nested:
            failures.append(f"{dom.nested} formulas typeset twice (nested mjx-container)")
    elif raw_math:
        failures.append(f"{raw_math} raw \\( or \\[ in a page without math")
    missing = sorted({p for p, code in requests if code != 200 and code != 304})
    if missing:
        failures.append("failed requests: " + ", ".join(missing[:5]))
    if "--8<--" in text or any("--8<--" in code for code in dom.codes):
        failures.append("unexpanded --8<-- snippet")
    stray = _unrendered_list_items(dom)
    if stray:
        failures.append(f"unrendered list item: {stray[0]!r}")
    codes = [code for code in dom.codes if code.strip()]
    if kind == "home" and not codes:
        failures.append("no code block")
    if kind == "examples":
        md = (ROOT / "docs" / "examples.md").read_text(encoding="utf-8")
        scripts = SNIPPET.findall(md)
        if not scripts:
            failures.append("docs/examples.md includes no script")
        shown = {_normalise(code) for code in codes}
        for script in scripts:
            if _normalise((ROOT / script).read_text(encoding="utf-8")) not in shown:
                failures.append(f"{script} not shown as a code block")
    row = {
        "page": name,
        "math": source.math_sources,
        "mjx": dom.containers,
        "raw": raw_math,
        "err": dom.errors,
        "nested": dom.nested,
        "code": len(codes),
        "req": len(requests),
        "failed": len(missing),
    }
    return row, failures


def check_all_pages_statically(site):
    """Unrendered list items on every page of the site (no browser needed)."""
    failures = []
    for path in sorted(site.rglob("*.html")):
        stray = _unrendered_list_items(_parse(path.read_text(encoding="utf-8")))
        for line in stray:
            failures.append(f"{path.relative_to(site)}: unrendered list item {line!r}")
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, default=ROOT / "build" / "site")
    parser.add_argument(
        "--chromium",
        default=os.environ.get("CHROMIUM")
        or next((c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None),
    )
    parser.add_argument("--budget-ms", type=int, default=10000, help="virtual time per page")
    args = parser.parse_args(argv)
    site = args.site.resolve()
    if not (site / "index.html").exists():
        print(f"no site at {site}: build it first (make docs)", file=sys.stderr)
        return 2
    if not args.chromium:
        print("Chromium not found: apt-get install chromium, or pass --chromium", file=sys.stderr)
        return 2

    rows, problems = [], []
    with _Server(site) as server:
        for name, path, kind in _pages(site):
            row, failures = check_page(name, path, kind, site, server, args.chromium, args.budget_ms)
            row["result"] = "ok" if not failures else "FAIL"
            rows.append(row)
            problems += [f"{name}: {failure}" for failure in failures]
    problems += check_all_pages_statically(site)

    columns = [
        ("page", "page"), ("math", "math in HTML"), ("mjx", "mjx-container"),
        ("raw", "raw \\( \\["), ("err", "MathJax errors"), ("nested", "nested"), ("code", "code blocks"),
        ("req", "requests"), ("failed", "failed"), ("result", "result"),
    ]
    widths = [max(len(title), *(len(str(r[key])) for r in rows)) for key, title in columns]
    print("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(r[key]).ljust(w) for (key, _), w in zip(columns, widths)))
    print()
    if problems:
        print(f"{len(problems)} problem(s):")
        for problem in problems:
            print("  " + problem)
        return 1
    print(f"all {len(rows)} pages ok (Chromium: {args.chromium}; site: {site})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
