"""Paths in job scripts mean on the node what they mean on the controller (issue 30, item 4): a
`~` or a relative path left in a script is read on the node, with the node's HOME and working
directory. Grid Engine's workers failed so: `Invalid value for '--tls-ca-file'`, a `~/.djdask/tls`
the controller had written into and the node's HOME did not hold."""

from __future__ import annotations

import os
import stat

import dask.config
import pytest

from djdask.cli.submit import submit_dir
from djdask.clusters import controller_path, resolve
from djdask.clusters.security import secure_scheduler


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A HOME and a working directory of their own: (home, work)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home, work


def test_controller_path(elsewhere, monkeypatch):
    home, work = elsewhere
    monkeypatch.setenv("SCRATCH", "/scratch/ana")
    assert controller_path("~/.djdask/tls") == f"{home}/.djdask/tls"
    assert controller_path("logs") == f"{work}/logs"
    assert controller_path("$SCRATCH/tls") == "/scratch/ana/tls"  # the controller writes there
    assert controller_path("/shared/x/../tls") == "/shared/tls"
    # A folder of the node's alone: its own $TMPDIR is the node's shell's to expand.
    assert controller_path("$TMPDIR/dask", node_variables=True) == "$TMPDIR/dask"
    assert controller_path("~/scratch", node_variables=True) == f"{home}/scratch"


def test_a_worker_job_script_names_absolute_paths(elsewhere):
    """log-directory (the batch system's -o/-e, created by dask-jobqueue here), local-directory
    and a python given as a path; `python3` and `$TMPDIR` are the node's to find."""
    home, work = elsewhere
    profile = {
        "kind": "sge",
        "cores": 1,
        "memory": "1GB",
        "log-directory": "~/logs",
        "local-directory": "scratch",
        "python": ".venv/bin/python",
    }
    with dask.config.set({"djdask.clusters.w": profile}):
        p = resolve("w")
        script = p.kind.script("w", p.raw)
    assert f"#$ -e {home}/logs/" in script and f"#$ -o {home}/logs/" in script
    assert (home / "logs").is_dir() and not (work / "~").exists()  # made where the script says
    assert f"\n{work}/.venv/bin/python -m distributed.cli.dask_worker" in script
    assert f"--local-directory {work}/scratch" in script
    assert "~" not in script

    node_side = {**profile, "local-directory": "$TMPDIR/dask", "python": "python3"}
    with dask.config.set({"djdask.clusters.w": node_side}):
        p = resolve("w")
        script = p.kind.script("w", p.raw)
    assert "--local-directory $TMPDIR/dask" in script and "\npython3 -m distributed.cli.dask_worker" in script


def test_dask_jobqueues_own_setting_is_made_absolute_too(elsewhere):
    """Unset in the profile, dask-jobqueue reads jobqueue.<kind>.log-directory itself."""
    home, _ = elsewhere
    with dask.config.set(
        {"djdask.clusters.w": {"kind": "slurm", "cores": 1, "memory": "1GB"}, "jobqueue.slurm.log-directory": "~/q"}
    ):
        p = resolve("w")
        script = p.kind.script("w", p.raw)
    assert f"#SBATCH -e {home}/q/" in script


def test_the_shared_temp_directory_and_site_certificates_are_absolute(elsewhere, tmp_path):
    home, work = elsewhere
    kwargs = secure_scheduler("cpu", {}, None)  # the default, ~/.djdask/tls
    assert kwargs["shared_temp_directory"] == f"{home}/.djdask/tls"
    assert stat.S_IMODE((home / ".djdask" / "tls").stat().st_mode) == 0o700
    assert secure_scheduler("cpu", {"shared-temp-directory": "tls"}, None)["shared_temp_directory"] == f"{work}/tls"
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (work / name).write_text("x")
    files = {"ca-file": "ca.pem", "cert": "cert.pem", "key": "key.pem"}
    security = secure_scheduler("site", {"security": files}, None)["security"]
    assert security.tls_ca_file == f"{work}/ca.pem" and security.tls_worker_key == f"{work}/key.pem"


def test_the_workers_tls_files_are_named_absolute_in_the_job_script(elsewhere, tmp_path, monkeypatch):
    """Through a started cluster, as a campaign starts it (a stand-in `sbatch`, no job submitted):
    the worker command's TLS files are under the controller's HOME, absolute. With `~` there, a
    node with another HOME looked for them in its own."""
    home, _ = elsewhere
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    profile = {"kind": "slurm", "cores": 1, "memory": "1GB", "scheduler-options": {"host": "127.0.0.1"}}
    with dask.config.set({"djdask.clusters.w": profile, "djdask.campaign.dask-dashboard": False}):
        client, cluster = resolve("w").start()
    try:
        script = cluster.job_script()
    finally:
        client.close()
        cluster.close()
    tls = f"{home}/.djdask/tls/.dask-jobqueue.worker."
    for option in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        assert f"{option} {tls}" in script, script
    assert "~" not in script


def test_the_submit_folder_is_absolute(elsewhere):
    """The controller's job script names its log there; Grid Engine starts a job in HOME."""
    _, work = elsewhere
    with dask.config.set({"djdask.campaign.submit-dir": "runs"}):
        assert submit_dir() == work / "runs" and (work / "runs").is_dir()
