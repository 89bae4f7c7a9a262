"""A profile's keys, checked against those its kind takes whenever a command reads it (issue 30,
item 6): a misspelt key is refused with where it was set and the nearest key, instead of a
dask-jobqueue TypeError once the scheduler is up, or nothing at all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import dask.config
import pytest
import yaml

from djdask.clusters import resolve
from djdask.clusters.keys import signature_keys
from djdask.errors import ProfileError

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
djdask:
  clusters:
    myslurm:
      kind: slurm
      cores: 2
      memory: 4GB
      walltme: "01:00:00"
    mylocal:
      kind: local
      workrs: 4
    myaddress: {kind: address, adress: "tcp://10.0.0.5:8786"}
    mysite: {kind: sge, jobqueue: mysite, cores: 1, memory: 1GB}
    twice:
      kind: pbs
      cores: 1
      memory: 1GB
      qeue: long
      frobnicate: 3
jobqueue:
  mysite:
    queue: all.q
    projct: lab42
    walltme: null
"""


@pytest.fixture
def config_file(tmp_path):
    """CONFIG as a file in one of Dask's config directories, read as a command reads it."""
    folder = tmp_path / "dask"
    folder.mkdir()
    path = folder / "djdask.yaml"
    path.write_text(CONFIG)
    saved = list(dask.config.paths)
    dask.config.paths.append(str(folder))  # in place: Dask's functions take this list as their default
    dask.config.refresh()
    yield path
    dask.config.paths[:] = saved
    dask.config.refresh()


def line_of(text: str) -> int:
    """The line of CONFIG holding ``text``."""
    return next(i for i, line in enumerate(CONFIG.splitlines(), 1) if text in line)


@pytest.mark.parametrize(
    ("profile", "key", "nearest"),
    [
        ("myslurm", "walltme", "walltime"),  # handed to dask-jobqueue: its TypeError at start
        ("mylocal", "workrs", "workers"),  # silently ignored before
        ("myaddress", "adress", "address"),
    ],
)
def test_a_misspelt_key_names_its_file_line_and_the_nearest_key(config_file, profile, key, nearest):
    """Without the file and line a user hunts through every config file; without the nearest
    key, through the kind's documentation."""
    with pytest.raises(ProfileError) as refused:
        resolve(profile)
    message = str(refused.value)
    assert f"`djdask.clusters.{profile}.{key}` (set in {config_file}, line {line_of(key + ':')}; " in message
    assert f"did you mean {nearest}?" in message
    assert f"djdask clusters show {profile}" in message  # how to check again


def test_several_keys_at_once_and_the_keys_a_kind_takes_when_none_is_near(config_file):
    """Each bad key is named (one round trip, not one per key); a key with no near match gets
    the list of those the kind takes."""
    with pytest.raises(ProfileError) as refused:
        resolve("twice")
    message = str(refused.value)
    assert "has keys no pbs profile takes" in message
    assert (
        f"`djdask.clusters.twice.qeue` (set in {config_file}, line {line_of('qeue')}; did you mean queue?)" in message
    )
    assert f"`djdask.clusters.twice.frobnicate` (set in {config_file}, line {line_of('frobnicate')})" in message
    takes = re.search(r"A pbs profile takes: ([^.]+)\.", message).group(1).split(", ")
    assert {"queue", "walltime", "resource-spec", "max-jobs", "lifetime"} <= set(takes)


def test_a_reused_jobqueue_section_is_held_to_dask_jobqueue_keys(config_file):
    """The section's keys go to dask-jobqueue as they are: a misspelt one fails there. A key
    left null is dask-jobqueue's "unset" and passed to nobody, so it is let be."""
    with pytest.raises(ProfileError) as refused:
        resolve("mysite")
    message = str(refused.value)
    assert (
        f"`jobqueue.mysite.projct` (set in {config_file}, line {line_of('projct')}; did you mean project?)" in message
    )
    assert "walltme" not in message


def test_an_environment_variable_is_named(monkeypatch):
    """A key from a DASK_ variable has no file: the variable is what the user must change."""
    monkeypatch.setenv("DASK_DJDASK__CLUSTERS__ENVLOCAL__KIND", "local")
    monkeypatch.setenv("DASK_DJDASK__CLUSTERS__ENVLOCAL__WORKRS", "4")
    dask.config.refresh()
    try:
        with pytest.raises(ProfileError) as refused:
            resolve("envlocal")
    finally:
        monkeypatch.delenv("DASK_DJDASK__CLUSTERS__ENVLOCAL__KIND")
        monkeypatch.delenv("DASK_DJDASK__CLUSTERS__ENVLOCAL__WORKRS")
        dask.config.refresh()
    assert (
        "`djdask.clusters.envlocal.workrs` (set in environment variable DASK_DJDASK__CLUSTERS__ENVLOCAL__WORKRS; "
        "did you mean workers?)" in str(refused.value)
    )


@pytest.mark.parametrize(
    ("kind", "keys"),
    [
        ("slurm", {"job-cpu", "job-mem", "account", "walltime"}),
        ("pbs", {"resource-spec", "account", "project"}),
        ("sge", {"resource-spec", "project"}),
        ("lsf", {"lsf-units", "use-stdin", "ncpus", "mem", "project"}),
        ("htcondor", {"disk", "submit-command-extra", "cancel-command-extra"}),
    ],
)
def test_a_batch_kind_takes_dask_jobqueue_keywords_read_from_its_signatures(kind, keys):
    """The keys come from dask-jobqueue's own classes: its job class's own keywords, those of
    the Job base it hands the rest to, the cluster's; every key of dask-jobqueue's own
    ``jobqueue.<kind>`` section (what a site's jobqueue.yaml copies); never a keyword taking a
    Python object. A hand-kept list would drift from the installed dask-jobqueue."""
    found = resolve(kind).kind  # the shipped profile of that kind
    accepted = found.accepted_keys()
    assert keys <= accepted
    assert {"cores", "memory", "job-extra-directives", "log-directory", "scheduler-options", "interface"} <= accepted
    assert {"max-jobs", "lifetime", "shared-temp-directory", "export-environment"} <= accepted  # djdask's own
    shipped = {k.replace("_", "-") for k in dask.config.get(f"jobqueue.{kind}")}
    assert shipped <= found.jobqueue_keys(), sorted(shipped - found.jobqueue_keys())
    assert not {"loop", "job-cls", "scheduler-cls", "asynchronous", "self", "scheduler"} & accepted
    # A controller's job (djdask submit; not on HTCondor) is charged through the key the workers' jobs take.
    assert found.account_key in found.jobqueue_keys() or not found.directive_prefix


def test_a_keyword_of_another_kind_is_refused():
    """SGE's and LSF's job classes take `project`, not SLURM's `account`: dask-jobqueue would
    refuse it once the campaign's scheduler is up."""
    with dask.config.set({"djdask.clusters.s": {"kind": "sge", "cores": 1, "memory": "1GB", "account": "lab42"}}):
        with pytest.raises(ProfileError, match=r"`djdask\.clusters\.s\.account`.*A sge profile takes: .*project"):
            resolve("s")


def test_signature_keys_follow_the_job_classes_kwargs_and_stop_where_they_end():
    class Base:
        def __init__(self, scheduler=None, name=None, cores=None, memory_limit=None):
            pass

    class Job(Base):
        def __init__(self, scheduler=None, queue=None, **kwargs):
            super().__init__(scheduler, **kwargs)

    class Cluster:
        def __init__(self, n_workers=0, loop=None, job_cls=None, dashboard_address=None, **job_kwargs):
            pass

    assert signature_keys(Cluster, Job) == {"n-workers", "dashboard-address", "queue", "name", "cores", "memory-limit"}


def test_the_readmes_profiles_are_accepted():
    """The profiles the README shows a user are ones djdask takes."""
    text = (ROOT / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    profiles = {
        n: p for b in blocks if "clusters" in (b or {}).get("djdask", {}) for n, p in b["djdask"]["clusters"].items()
    }
    assert {"cpu", "gpu", "here", "k8s"} <= set(profiles)
    with dask.config.set(
        {"jobqueue.mysite": {"queue": "normal"}, **{f"djdask.clusters.{n}": p for n, p in profiles.items()}}
    ):
        for name in profiles:
            resolve(name)


def run_cli(*args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    """`djdask ARGS` with a database that refuses every connection: a check that let a bad
    profile through ends there (exit 2, another message) and never starts the embedded
    PostgreSQL or a campaign."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "DASK_"))}
    env.update(DJ_HOST="127.0.0.1", DJ_PORT="9", DJ_USER="nobody", DJ_PASS="unused", **env_extra)
    return subprocess.run(
        [sys.executable, "-m", "djdask.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("argv", "key", "nearest"),
    [
        (["clusters", "show", "myslurm"], "myslurm.walltme", "walltime"),
        (["clusters", "script", "myslurm"], "myslurm.walltme", "walltime"),
        (["populate", "djdask.pipeline", "--cluster", "myslurm"], "myslurm.walltme", "walltime"),
        (["populate", "djdask.pipeline", "--cluster", "mylocal"], "mylocal.workrs", "workers"),
        (["submit", "djdask.pipeline", "--cluster", "mylocal"], "mylocal.workrs", "workers"),
    ],
)
def test_the_command_line_refuses_a_misspelt_key_before_anything_starts(tmp_path, argv, key, nearest):
    """Through the real `djdask` command: exit 2 with the file, the line and the nearest key, no
    traceback, before the database is reached (none is configured here) or a job submitted."""
    folder = tmp_path / "dask"
    folder.mkdir()
    (folder / "djdask.yaml").write_text(CONFIG)
    done = run_cli(*argv, env_extra={"DASK_CONFIG": str(folder)})
    err = " ".join(done.stderr.split())  # the paragraph is wrapped for the terminal
    assert done.returncode == 2, done.stderr
    line = line_of(key.split(".")[1] + ":")
    assert f"`djdask.clusters.{key}` (set in {folder / 'djdask.yaml'}, line {line}; did you mean {nearest}?)" in err
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_the_command_line_names_an_environment_variable(tmp_path):
    done = run_cli(
        "clusters",
        "show",
        "e",
        env_extra={
            "DASK_CONFIG": str(tmp_path),
            "DASK_DJDASK__CLUSTERS__E__KIND": "slurm",
            "DASK_DJDASK__CLUSTERS__E__CORES": "1",
            "DASK_DJDASK__CLUSTERS__E__MEMORY": "1GB",
            "DASK_DJDASK__CLUSTERS__E__WALLTME": "01:00:00",
        },
    )
    err = " ".join(done.stderr.split())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "(set in environment variable DASK_DJDASK__CLUSTERS__E__WALLTME; did you mean walltime?)" in err


def test_a_good_profile_still_shows(tmp_path):
    """The check refuses only what no kind takes: the README's `gpu` profile shows as before."""
    (tmp_path / "djdask.yaml").write_text(
        textwrap.dedent(
            """\
            djdask:
              clusters:
                gpu: {kind: slurm, queue: gpu, cores: 8, memory: 64GB, walltime: "04:00:00", resources: {GPU: 1},
                      job-extra-directives: ["--gres=gpu:1"], max-jobs: 4}
            """
        )
    )
    done = run_cli("clusters", "show", "gpu", env_extra={"DASK_CONFIG": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "queue: gpu" in done.stdout and "max-jobs: 4" in done.stdout
