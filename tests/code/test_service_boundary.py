"""The service ships and imports only what serving needs, with a pinned environment."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("prefect", "great_expectations", "evidently", "flows", "tasks", "research")
FORBIDDEN_CXR = ("cxr.train", "cxr.data", "cxr.monitor", "cxr.cli")


def _pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file's ``name==version`` lines (normalised)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def _shipped_files() -> list[Path]:
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    excluded = {REPO / p for p in bentofile["exclude"] if not p.endswith("/")}
    files = {f for pattern in bentofile["include"] for f in REPO.glob(pattern)}
    return sorted(f for f in files - excluded if f.suffix == ".py")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_importing_the_service_loads_no_training_or_orchestration_code(tmp_path: Path) -> None:
    code = "import sys, service, json; print(json.dumps(sorted(sys.modules)))"
    env = {"BENTOML_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert "cxr.core.preprocessing" in loaded  # the check sees the service's own imports
    bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN_CXR)]
    assert bad == []


def test_the_bento_ships_every_cxr_module_the_service_needs_and_nothing_else() -> None:
    shipped = {f.relative_to(REPO).as_posix() for f in _shipped_files()}
    assert "service.py" in shipped and "cxr/core/preprocessing.py" in shipped
    assert not [f for f in shipped if f.startswith(("cxr/train", "cxr/data", "cxr/monitor"))]
    migrations = {f.relative_to(REPO).as_posix() for f in REPO.glob("cxr/serve/migrations/**/*.py")}
    assert "cxr/serve/migrations/env.py" in migrations and migrations <= shipped  # log schema
    for path in _shipped_files():
        for name in _imports(path):
            if name.startswith("cxr."):
                assert f"{name.replace('.', '/')}.py" in shipped, f"{path} needs {name}"


def test_service_requirements_pin_every_import_at_the_lock_version() -> None:
    lock = _pins(REPO / "requirements-lock.txt")
    service = _pins(REPO / "requirements-service.txt")
    assert {name: lock.get(name) for name in service} == service  # the lock's versions
    distributions = packages_distributions()
    stdlib = sys.stdlib_module_names
    for path in _shipped_files():
        for name in _imports(path):
            top = name.split(".")[0]
            if top in stdlib or top in ("cxr", "__future__") or top.startswith("_bentoml"):
                continue
            dists = {d.lower().replace("_", "-") for d in distributions[top]}
            assert dists & set(service), f"{path.name} imports {top}, not pinned"
    assert {"keras", "tensorflow-cpu", "h5py"} <= set(service)  # loading the .keras model


def test_the_bento_pins_the_projects_python() -> None:
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'requires-python = ">={bentofile["docker"]["python_version"]},' in pyproject
