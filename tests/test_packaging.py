"""The wheel as users get it: its files and its metadata.

One wheel is built (`pip wheel --no-deps`, a second or two) into a temporary folder and
read as a zip file; nothing is installed. `make test` also installs it into a clean
virtual environment and imports it (`make wheel-check`).
"""

import email.parser
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version


ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
         str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (path,) = out.glob("taylorode-*.whl")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(zf.read(meta_name).decode())
    return path, names, metadata


def test_wheel_name_and_version_match_pyproject(wheel):
    path, _, metadata = wheel
    assert metadata["Name"] == "taylorode"
    assert metadata["Version"] == PYPROJECT["version"]
    assert path.name.startswith(f"taylorode-{PYPROJECT['version']}-py3-none-any")


def test_wheel_holds_the_package_py_typed_and_license(wheel):
    _, names, _ = wheel
    assert "taylorode/__init__.py" in names
    assert "taylorode/py.typed" in names
    assert any(re.fullmatch(r"taylorode-[^/]+\.dist-info/licenses/LICENSE", n) for n in names)
    # Only the package and its metadata: no tests, benchmarks or docs.
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"taylorode"}, tops


def test_license_expression(wheel):
    _, _, metadata = wheel
    assert Version(metadata["Metadata-Version"]) >= Version("2.4")
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    # PEP 639: no license classifier beside the expression.
    assert not [c for c in metadata.get_all("Classifier") if c.startswith("License ::")]


def test_classifiers_name_the_supported_pythons_and_typing(wheel):
    _, _, metadata = wheel
    classifiers = metadata.get_all("Classifier")
    assert "Typing :: Typed" in classifiers
    versions = sorted(
        Version(c.rsplit(" ", 1)[1]) for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert versions, classifiers
    assert metadata["Requires-Python"] == f">={versions[0]}"
    assert [v.minor for v in versions] == list(range(versions[0].minor, versions[-1].minor + 1))


def test_project_urls(wheel):
    _, _, metadata = wheel
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL"))
    assert set(urls) >= {"Documentation", "Source", "Issues", "Changelog"}
    assert all(url.startswith("https://") for url in urls.values()), urls


def _runtime_requirements(metadata):
    reqs = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    return [r for r in reqs if r.marker is None]


def test_runtime_dependencies_have_lower_and_upper_bounds(wheel):
    _, _, metadata = wheel
    reqs = _runtime_requirements(metadata)
    assert {r.name for r in reqs} == {
        "jax", "jaxlib", "diffrax", "equinox", "lineax", "optimistix", "jaxtyping"
    }
    for req in reqs:
        operators = {spec.operator for spec in req.specifier}
        assert ">=" in operators and "<" in operators, f"{req}: needs both bounds"


def test_oldest_pins_are_the_lower_bounds(wheel):
    """`.ci/oldest.txt` (what `make test-oldest` installs) pins every runtime dependency
    at its lower bound, so that the bound is a version the smoke run has tested."""
    _, _, metadata = wheel
    pins = dict(
        line.split("==") for line in (ROOT / ".ci" / "oldest.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    reqs = _runtime_requirements(metadata)
    assert set(pins) == {r.name for r in reqs}
    for req in reqs:
        lower = next(Version(s.version) for s in req.specifier if s.operator == ">=")
        pinned = Version(pins[req.name])
        assert pinned in req.specifier, f"{req.name}=={pinned} is outside {req}"
        assert pinned == lower, f"{req.name}: pinned {pinned}, lower bound {lower}"
