"""What a packager and a user installing dmlkit beside their own torch rely on.

- pyproject.toml declares ranges (never ``==``), every imported third-party package and no
  runtime dependency that is never imported;
- constraints.txt pins today's environment exactly (what ``make`` installs) inside those ranges;
  constraints-oldest.txt pins each runtime dependency at its declared lower bound (what CI's
  oldest environment, ``make test-oldest``, runs the suite with);
- the wheel holds the package, its presets and ``py.typed`` and nothing from tests; the sdist
  holds what a downstream packager needs (sources, tests, docs, licence, constraints).
"""

import ast
import importlib.metadata
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dmlkit"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
EXTRAS = {extra: [Requirement(r) for r in reqs]
          for extra, reqs in PROJECT["optional-dependencies"].items()}
# import names whose distribution's name differs and that may be absent from the environment
IMPORT_TO_DIST = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn",
                  "faiss": "faiss-cpu", "mlflow": "mlflow-skinny"}


def pins(path: Path) -> dict[str, Version]:
    """``name==version`` lines of a constraints file, by canonical name."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            out[canonicalize_name(name)] = Version(version)
    return out


def declared() -> set[str]:
    """Every distribution named by pyproject.toml, runtime or extra (dmlkit's own excluded)."""
    reqs = RUNTIME + [r for rs in EXTRAS.values() for r in rs]
    return {canonicalize_name(r.name) for r in reqs} - {"dmlkit"}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level import name -> the source files importing it (stdlib and dmlkit excluded)."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"dmlkit", "__future__"}:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def distribution(import_name: str) -> str:
    installed = importlib.metadata.packages_distributions().get(import_name)
    if import_name in IMPORT_TO_DIST:
        return IMPORT_TO_DIST[import_name]
    return canonicalize_name(installed[0] if installed else import_name)


def test_runtime_dependencies_are_ranges_with_lower_bounds():
    for req in RUNTIME + [r for rs in EXTRAS.values() for r in rs]:
        if canonicalize_name(req.name) == "dmlkit":
            continue
        ops = {s.operator for s in req.specifier}
        assert "==" not in ops and "===" not in ops, f"{req}: exact pins belong in constraints.txt"
        assert ">=" in ops, f"{req}: a tested lower bound is missing"


def test_every_imported_package_is_declared():
    names = declared()
    missing = {imp: sorted(files) for imp, files in third_party_imports().items()
               if distribution(imp) not in names}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_runtime_dependency_is_imported():
    imported = {distribution(imp) for imp in third_party_imports()}
    unused = {canonicalize_name(r.name) for r in RUNTIME} - imported
    assert not unused, f"declared but never imported by dmlkit: {sorted(unused)}"


def test_constraints_pin_versions_inside_the_ranges():
    today = pins(ROOT / "constraints.txt")
    oldest = pins(ROOT / "constraints-oldest.txt")
    for req in RUNTIME:
        name = canonicalize_name(req.name)
        (lower,) = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert today[name] in req.specifier, f"constraints.txt {name} {today[name]} vs {req}"
        if name in {"torch", "torchvision"}:  # the oldest stack installs these first, by hand
            assert name not in oldest, "the oldest stack's torch is the user's, not a constraint"
            continue
        assert oldest.get(name) == lower, f"constraints-oldest.txt must pin {name}=={lower}"


def test_makefile_oldest_torch_is_the_declared_lower_bound():
    makefile = (ROOT / "Makefile").read_text()
    line = re.search(r"^OLDEST_TORCH := (.*)$", makefile, re.M).group(1)
    wanted = {canonicalize_name(n): Version(v) for n, v in (p.split("==") for p in line.split())}
    lower = {canonicalize_name(r.name): Version(s.version) for r in RUNTIME for s in r.specifier
             if s.operator == ">=" and canonicalize_name(r.name) in {"torch", "torchvision"}}
    assert wanted == lower


def build(kind: str, out: Path) -> Path:
    """Build a wheel or an sdist of the checkout with the current environment's setuptools."""
    pytest.importorskip("build")
    subprocess.run([sys.executable, "-m", "build", f"--{kind}", "--no-isolation",
                    "--outdir", str(out), str(ROOT)], check=True, capture_output=True)
    (artifact,) = out.glob("*.whl" if kind == "wheel" else "*.tar.gz")
    return artifact


def test_wheel_holds_the_package_presets_and_licence_only(tmp_path):
    with zipfile.ZipFile(build("wheel", tmp_path)) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    tops = {n.split("/")[0] for n in names}
    assert tops == {"dmlkit", "dmlkit-0.1.0.dist-info"}, tops
    assert "dmlkit/py.typed" in names
    assert any(n.startswith("dmlkit/presets/") and n.endswith(".yaml") for n in names)
    assert any(n.startswith("dmlkit/presets/benchmarks/") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if "/tests/" in n or "test_" in n.rsplit("/", 1)[-1]]
    text = metadata.decode()
    assert "Classifier: Programming Language :: Python :: 3.13" in text
    assert "Project-URL: Source" in text
    assert not [line for line in text.splitlines()
                if line.startswith("Requires-Dist:") and "==" in line.split(";")[0]]


def test_sdist_holds_what_a_packager_needs(tmp_path):
    with tarfile.open(build("sdist", tmp_path)) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for needed in ("LICENSE", "README.md", "pyproject.toml", "constraints.txt",
                   "constraints-oldest.txt", "src/dmlkit/py.typed", "tests/conftest.py",
                   "tests/test_packaging.py", "docs/metrics.md"):
        assert needed in names, needed
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith((".venv", "runs/", "build/"))]
