"""The worker command of LSF and HTCondor job scripts, run for real.

No LSF or HTCondor can run here.  What a job of theirs would run is the body of the
script djdask generates (`djdask clusters script PROFILE --scheduler ADDRESS`): run
as the job would run it, it must start a worker that joins a campaign's scheduler,
carries djdask's walltime prologue and makes keys.  The campaign runs on that
scheduler through an `address` profile.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests.integration.test_jobs_engine import ledger_lines
from tests.integration.test_jobs_engine import seed_ledger as seed

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server", ["postgres"], indirect=True)]

PROFILES = {
    "lsf": {"kind": "lsf", "cores": 1, "memory": "1GB", "walltime": "00:10"},
    "htcondor": {"kind": "htcondor", "cores": 1, "memory": "1GB", "disk": "1GB", "lifetime": "9m"},
}


def condor_arguments(text: str) -> list[str]:
    """HTCondor's "new syntax" Arguments: split on spaces outside single quotes; a
    doubled quote ('' or "") inside stands for itself."""
    args, current, quoted, i, started = [], "", False, 0, False
    while i < len(text):
        char = text[i]
        if char in "'\"" and text[i : i + 2] == char * 2 and (quoted or char == '"'):
            current, i, started = current + char, i + 2, True
            continue
        if char == "'":
            quoted, started = not quoted, True
        elif char == " " and not quoted:
            if started:
                args.append(current)
            current, started = "", False
        else:
            current, started = current + char, True
        i += 1
    if started:
        args.append(current)
    return args


def job_command(kind: str, script: str) -> list[str]:
    """The command a job of ``kind`` runs for ``script``."""
    if kind == "lsf":  # bsub reads the script; its #BSUB lines are comments to the shell
        return ["bash", "-c", script]
    submit = dict(line.split(" = ", 1) for line in script.splitlines() if " = " in line and not line.startswith("#"))
    assert submit.get("getenv") == "True", "the HTCondor job would start without the database settings"
    return [submit["Executable"].strip(), *condor_arguments(submit["Arguments"].strip().strip('"'))]


@pytest.mark.parametrize("kind", sorted(PROFILES))
def test_the_job_scripts_worker_command_joins_a_campaign_and_makes_its_keys(
    server, djdask, sql, prefix, tmp_path, kind
):
    n = 6
    seed(djdask, n)
    address_file, ledger = tmp_path / "scheduler.json", tmp_path / "ledger.txt"
    scheduler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            "--scheduler-file",
            str(address_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        deadline = time.monotonic() + 30
        while not address_file.exists() or '"address"' not in address_file.read_text():
            assert time.monotonic() < deadline and scheduler.poll() is None, "the scheduler did not start"
            time.sleep(0.2)
        address = re.search(r'"address": "([^"]+)"', address_file.read_text()).group(1)
        profile = {f"DASK_DJDASK__CLUSTERS__TEST{kind.upper()}__{k.upper()}": str(v) for k, v in PROFILES[kind].items()}
        env = djdask.env(
            **profile,
            DASK_DJDASK__CLUSTERS__CAMPAIGN__KIND="address",
            DASK_DJDASK__CLUSTERS__CAMPAIGN__ADDRESS=address,
            DJDASK_TEST_LEDGER=str(ledger),
        )
        shown = djdask("clusters", "script", f"test{kind}", "--scheduler", address, env=env)
        assert shown.returncode == 0, shown.stderr
        script = shown.stdout
        assert address in script and "SCHEDULER" not in script
        job_env = {**env, "DJDASK_TEST_JOB_ID": f"{kind}-job-1"}  # what the batch system would set
        worker = subprocess.Popen(
            job_command(kind, script),
            env=job_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        result = djdask("populate", "ledger", "--cluster", "campaign", env=env, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = ledger_lines(ledger)
        assert sorted(int(line[0]) for line in lines) == list(range(n))
        assert {line[2] for line in lines} == {f"{kind}-job-1"}, "a key was made outside the job's worker"
        # djdask's prologue reached the worker: its retirement deadline (walltime or lifetime less a margin)
        assert all(line[4] != "-" for line in lines), "the worker runs without djdask's walltime prologue"
        assert sql.jobs_counts(f"{prefix}_ledger", "__entry") == {}
        assert worker.poll() is None, "the worker left while its scheduler was still there"
    finally:
        for process in (worker, scheduler):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, 15) if process is worker else process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
