"""What `djdask submit` generates for each batch system (the controller's job script and
command line), checked without a batch system; SLURM runs it for real in
tests/integration/test_slurm.py."""

from __future__ import annotations

import argparse
import os

import dask
import pytest

from djdask.cli.parser import build_parser, main
from djdask.cli.submit import controller_command, controller_stop_after, job_id_in, job_script
from djdask.clusters import resolve
from djdask.clusters.profiles import batch_kind

WALLTIMES = {"slurm": "02:00:00", "pbs": "02:00:00", "sge": "02:00:00", "lsf": "2:00"}


def _args(*extra: str) -> argparse.Namespace:
    args = build_parser().parse_args(["submit", "mylab.pipeline", "--cluster", "site", *extra])
    args.make_kwargs = None
    if args.stop_after is not None:
        args.stop_after = float(dask.utils.parse_timedelta(args.stop_after))
    return args


def test_the_batch_kinds_that_run_a_controller():
    """One registry of batch systems: the kind classes say which run a controller job."""
    from djdask.clusters.profiles import KINDS

    assert sorted(k for k in KINDS if batch_kind(k) is not None) == sorted(WALLTIMES)


@pytest.mark.parametrize("kind", sorted(WALLTIMES))
def test_the_controller_job_script_of_each_batch_system(kind, tmp_path):
    account = batch_kind(kind).account_key  # the key dask-jobqueue's job class takes: `project` on SGE, LSF
    profile = {"kind": kind, "cores": 4, "memory": "8GB", "queue": "long", account: "lab42"}
    with dask.config.set({"djdask.clusters.site": {**profile, "walltime": WALLTIMES[kind]}}):
        script = job_script(
            resolve("site"),
            _args("--resubmit", "-r", "subject=3"),
            "1a2b3c4d",
            tmp_path / "x.log",
            WALLTIMES[kind],
        )
    prefix = batch_kind(kind).directive_prefix
    directives = [line for line in script.splitlines() if line.startswith(prefix + " ")]
    assert any("djdask-1a2b3c4d" in d for d in directives)
    assert any(WALLTIMES[kind] in d for d in directives) and any("long" in d for d in directives)
    assert any("lab42" in d for d in directives) and any("4G" in d for d in directives)
    assert any(str(tmp_path / "x.batch.out") in d for d in directives)  # the batch system's own output
    assert f"exec >>{tmp_path / 'x.log'} 2>&1" in script.splitlines()  # the controller's, appended by each
    command = script.splitlines()[-1]
    assert command.startswith("exec ") and "djdask.cli populate mylab.pipeline" in command
    assert "--campaign-id 1a2b3c4d" in command and "--resubmit" in command and "-r subject=3" in command
    # The controller claims until the margin before its walltime: 2 h less 5 min.
    assert "--stop-after 6900s" in command
    if kind in ("pbs", "sge"):  # they pass the environment (database settings) only when asked
        assert f"{prefix} -V" in directives
    for name in ("DJ_PASS", "AWS_SECRET", "password"):  # credentials travel by the environment only
        assert name not in script


def test_an_explicit_stop_after_and_the_margin_of_short_walltimes():
    assert controller_stop_after(3600) == 3600 - 300
    assert controller_stop_after(120) == 90  # at most a quarter of the walltime
    with dask.config.set({"djdask.clusters.site": {"kind": "slurm", "cores": 1, "memory": "1GB"}}):
        script = job_script(resolve("site"), _args("--stop-after", "10m"), "1a2b3c4d", "/x.log", "01:00:00")
    assert "--stop-after 600s" in script


def test_job_ids_as_each_batch_system_prints_them():
    assert job_id_in("1234\n") == "1234"
    assert job_id_in("1234;cluster\n") == "1234"
    assert job_id_in("5678.pbs-server\n") == "5678.pbs-server"
    assert job_id_in("Job <91011> is submitted to queue <normal>.\n") == "91011"


def test_the_controller_command_keeps_the_campaign_options():
    args = _args("--workers", "8", "--max-calls", "100", "--priority", "3", "--target", "Traces")
    args.target_duration = 5.0
    command = controller_command(args, "1a2b3c4d", None)
    assert command[1:5] == ["-m", "djdask.cli", "populate", "mylab.pipeline"]
    for pair in (
        ["--workers", "8"],
        ["--max-calls", "100"],
        ["--priority", "3"],
        ["--target", "Traces"],
        ["--target-duration", "5.0s"],
        ["--cluster", "site"],
    ):
        assert any(command[i : i + 2] == pair for i in range(len(command))), pair
    assert "--stop-after" not in command


def test_submit_refuses_resubmit_on_local_and_populate_refuses_it_alone(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in os.environ.items()}
    assert main(["submit", "mylab.pipeline", "--resubmit"]) == 2
    assert "--resubmit hands a campaign over before its controller's walltime" in capsys.readouterr().err
    assert main(["populate", "mylab.pipeline", "--resubmit"]) == 2
    assert "--resubmit is for campaigns whose controller `djdask submit` started" in capsys.readouterr().err
    assert env == dict(os.environ)
