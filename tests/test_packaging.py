"""Packaging: environment.yml and pyproject.toml describe the same environment."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += extra
    return {r.replace(" ", "") for r in reqs}


def _environment_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\s*- pip:\s*$", line))
    reqs = set()
    for line in lines[start + 1 :]:
        m = re.match(r"\s+- (\S+)\s*$", line)
        if not m:
            break
        if not m.group(1).startswith("-e"):
            reqs.add(m.group(1))
    return reqs


def test_environment_yml_matches_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_no_pinned_torch():
    # Colab brings its own torch: ranges only, never == pins.
    for req in _pyproject_requirements():
        assert "==" not in req, req


def test_console_script_declared():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["mixquant-lite"] == "mixquant_lite.cli:main"
