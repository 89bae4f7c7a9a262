"""Cluster profiles: registry, validation and the job scripts they would submit."""

from __future__ import annotations

import dask.config
import pytest

from djdask.clusters import KINDS, Profile, profile_names, resolve
from djdask.errors import ProfileError, ProfileNotFoundError


def test_shipped_profiles_and_kinds():
    assert {"local", "slurm", "pbs", "sge", "lsf", "htcondor"} <= set(profile_names())
    assert {"local", "address", "scheduler-file", "slurm", "pbs", "sge", "lsf", "htcondor"} <= set(KINDS)
    with pytest.raises(TypeError):
        KINDS["mine"] = "x:Y"  # a read-only view


def test_unknown_profile_and_kind_list_the_known_ones():
    with pytest.raises(ProfileNotFoundError, match="Unknown cluster profile 'nope'.*local.*slurm"):
        resolve("nope")
    with dask.config.set({"djdask.clusters.odd": {"kind": "mainframe"}}):
        with pytest.raises(ProfileNotFoundError, match="Unknown profile kind 'mainframe'.*htcondor.*slurm"):
            resolve("odd")


SCRIPT_CASES = {
    "slurm": (
        {"queue": "gpu", "account": "lab42", "walltime": "04:00:00", "job-extra-directives": ["--gres=gpu:1"]},
        [
            "#SBATCH -p gpu",
            "#SBATCH -A lab42",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --mem=",
            "#SBATCH -t 04:00:00",
            "#SBATCH --gres=gpu:1",
        ],
    ),
    "pbs": (
        {"queue": "long", "account": "lab42", "walltime": "04:00:00", "job-extra-directives": ["-m abe"]},
        ["#PBS -q long", "#PBS -A lab42", "ncpus=8", "mem=", "walltime=04:00:00", "#PBS -m abe"],
    ),
    "sge": (
        {"queue": "all.q", "project": "lab42", "walltime": "04:00:00", "job-extra-directives": ["-pe smp 8"]},
        ["#$ -q all.q", "#$ -P lab42", "h_rt=04:00:00", "#$ -pe smp 8"],
    ),
    "lsf": (
        {"queue": "normal", "project": "lab42", "walltime": "04:00", "job-extra-directives": ["-R select[gpu]"]},
        ["#BSUB -q normal", '#BSUB -P "lab42"', "#BSUB -n 8", "#BSUB -M", "#BSUB -W 04:00", "#BSUB -R select[gpu]"],
    ),
    "htcondor": (
        {"disk": "10GB", "job-extra-directives": {"+ProjectName": '"lab42"'}},
        ["MY.DaskWorkerCores = 8", "MY.DaskWorkerMemory = 24000000000", '+ProjectName = "lab42"'],
    ),
}


@pytest.mark.parametrize("kind", sorted(SCRIPT_CASES))
def test_job_scripts_carry_the_profile(kind):
    """The script a profile submits must carry its queue, account, cores, memory, walltime
    and extra directives; one that lost them would run jobs where and how users did not ask."""
    settings, expected = SCRIPT_CASES[kind]
    profile = {"kind": kind, "cores": 8, "memory": "24GB", "resources": {"GPU": 1}, **settings}
    with dask.config.set({"djdask.clusters.site": profile}):
        p = resolve("site")
        script = p.kind.script("site", p.raw)
    for fragment in expected:
        assert fragment in script, (fragment, script)
    assert "--nworkers 8" in script and "--nthreads 1" in script  # one thread per worker process
    assert "--resources GPU=1" in script


def test_a_site_jobqueue_section_is_reused():
    with dask.config.set(
        {
            "jobqueue.mysite": {"queue": "sitequeue", "account": "siteacct", "cores": 2, "memory": "4GB"},
            "djdask.clusters.mine": {"kind": "slurm", "jobqueue": "mysite", "cores": 4},
        }
    ):
        p = resolve("mine")
        script = p.kind.script("mine", p.raw)
    assert "#SBATCH -p sitequeue" in script and "#SBATCH -A siteacct" in script
    assert "--cpus-per-task=4" in script  # the profile's own value wins


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"kind": "slurm", "memory": "4GB"}, r"no `cores`.*djdask\.clusters\.bad\.cores"),
        ({"kind": "pbs", "cores": 2}, r"no `memory`.*djdask\.clusters\.bad\.memory"),
        ({"kind": "slurm", "cores": 2, "memory": "4GB", "walltime": "4h"}, r"walltime '4h'.*'04:00:00'"),
        ({"kind": "lsf", "cores": 2, "memory": "4GB", "walltime": "04:00:00"}, r"walltime.*'04:00'"),
        ({"kind": "slurm", "jobqueue": "absent", "cores": 2, "memory": "4GB"}, r"jobqueue\.absent"),
        ({"kind": "address"}, r"no `address`"),
        ({"cores": 2}, r"no `kind`"),
    ],
)
def test_bad_profiles_name_the_key_and_the_fix(profile, message):
    with dask.config.set({"djdask.clusters.bad": profile}):
        with pytest.raises(ProfileError, match=message):
            p = resolve("bad")
            if hasattr(p.kind, "settings"):
                p.kind.settings("bad", p.raw)
            else:
                p.kind.start("bad", p.raw)


def test_missing_submit_command_is_refused(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    p = resolve("slurm")
    with pytest.raises(ProfileError, match="`sbatch`, which is not on this machine's PATH"):
        p.kind.start("slurm", p.raw)


def test_show_hides_secrets():
    """No kind takes a password, so reading such a profile refuses it without printing the
    value; a Profile built in code still shows it masked."""
    raw = {"kind": "address", "address": "tcp://h:8786", "password": "hunter2"}
    with dask.config.set({"djdask.clusters.s": raw}):
        with pytest.raises(ProfileError, match=r"`djdask\.clusters\.s\.password`") as refused:
            resolve("s")
    assert "hunter2" not in str(refused.value)
    with dask.config.set({"djdask.clusters.s": {k: v for k, v in raw.items() if k != "password"}}):
        kind = resolve("s").kind
    shown = Profile("s", kind, raw).shown()
    assert shown["password"] == "********" and shown["address"] == "tcp://h:8786"


def run_cli(*args, env_extra=None):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "DASK_DJDASK"))}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "djdask.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_clusters_commands():
    """list, show and script work without a database; a bad profile exits 2 with the fix."""
    listing = run_cli("clusters", "list")
    assert listing.returncode == 0 and "slurm" in listing.stdout and "htcondor" in listing.stdout
    script = run_cli("clusters", "script", "slurm")
    assert script.returncode == 0 and "#SBATCH --cpus-per-task=1" in script.stdout
    shown = run_cli(
        "clusters",
        "show",
        "gpu",
        env_extra={
            "DASK_DJDASK__CLUSTERS__GPU__KIND": "slurm",
            "DASK_DJDASK__CLUSTERS__GPU__CORES": "8",
            "DASK_DJDASK__CLUSTERS__GPU__MEMORY": "64GB",
            "DASK_DJDASK__CLUSTERS__GPU__QUEUE": "gpu",
        },
    )
    assert shown.returncode == 0 and "queue: gpu" in shown.stdout and "processes: 8" in shown.stdout
    bad = run_cli("populate", "djdask.pipeline", "--cluster", "nope")
    assert bad.returncode == 2 and "Unknown cluster profile 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    walltime = run_cli(
        "clusters",
        "script",
        "w",
        env_extra={
            "DASK_DJDASK__CLUSTERS__W__KIND": "slurm",
            "DASK_DJDASK__CLUSTERS__W__CORES": "1",
            "DASK_DJDASK__CLUSTERS__W__MEMORY": "1GB",
            "DASK_DJDASK__CLUSTERS__W__WALLTIME": "one hour",
        },
    )
    assert walltime.returncode == 2 and "djdask.clusters.w.walltime" in walltime.stderr


def test_workers_retire_before_the_walltime():
    """The job script tells workers when to stop starting make() calls: before the walltime,
    by a margin, with a stagger; an explicit lifetime wins."""
    from djdask.clusters.batch import lifetime_for

    lifetime, stagger = lifetime_for(3600)
    assert lifetime + stagger < 3600 - 60 and stagger > 0
    lifetime, stagger = lifetime_for(60)
    assert 40 <= lifetime - stagger and lifetime + stagger < 60
    with dask.config.set({"djdask.clusters.w": {"kind": "slurm", "cores": 1, "memory": "1GB", "walltime": "01:00:00"}}):
        p = resolve("w")
        script = p.kind.script("w", p.raw)
    expected = lifetime_for(3600)
    assert f"export DJDASK_WORKER_LIFETIME={expected[0]:.0f}" in script
    assert f"export DJDASK_WORKER_LIFETIME_STAGGER={expected[1]:.0f}" in script
    assert "--lifetime" not in script  # distributed's lifetime would reschedule running tasks
    with dask.config.set(
        {
            "djdask.clusters.l": {
                "kind": "lsf",
                "cores": 1,
                "memory": "1GB",
                "walltime": "02:00",
                "lifetime": "30m",
                "lifetime-stagger": "1m",
            }
        }
    ):
        p = resolve("l")
        script = p.kind.script("l", p.raw)
    assert "export DJDASK_WORKER_LIFETIME=1800" in script and "DJDASK_WORKER_LIFETIME_STAGGER=60" in script
    with dask.config.set({"djdask.clusters.b": {"kind": "slurm", "cores": 1, "memory": "1GB", "lifetime": "soon"}}):
        p = resolve("b")
        with pytest.raises(ProfileError, match="not durations"):
            p.kind.script("b", p.raw)


def test_pools_on_the_command_line():
    from djdask.campaign.checks import pools_arg as _pools_arg
    from djdask.errors import DjdaskError

    assert _pools_arg(["slurm"]) == {"default": "slurm"}
    assert _pools_arg(["default=slurm", "gpu=gpuprofile"]) == {"default": "slurm", "gpu": "gpuprofile"}
    with pytest.raises(DjdaskError, match="give each pool once"):
        _pools_arg(["slurm", "default=pbs"])
    with pytest.raises(DjdaskError, match="give each pool once"):
        _pools_arg(["gpu="])
