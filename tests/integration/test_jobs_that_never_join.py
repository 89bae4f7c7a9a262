"""Worker jobs that never join the scheduler, explained (djdask.clusters.jobwatch), on a real
single-node SLURM and Grid Engine: a ``python`` the nodes do not have, a worker that cannot
reach its scheduler.  Each checks what a user sees (the job's own words quoted, the setting to
fix), that the campaign does not hang, and that nothing is left reserved or queued, with no
traceback.  A failing prologue line, a job held pending and a node cut off from the scheduler
are tested on two compute nodes (test_multinode.py)"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.integration.batch_campaigns import Said, queue_empties, write_profile
from tests.integration.test_jobs_engine import seed_ledger as seed

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server", ["postgres"], indirect=True)]

SLURM = pytest.mark.xdist_group("slurm")
SGE = pytest.mark.xdist_group("sge")


def never_joins(djdask, system, tmp_path, **settings) -> tuple[subprocess.CompletedProcess, float]:
    """`djdask populate` on a profile whose jobs end before their worker joins; its result and seconds."""
    seed(djdask, 3)
    env = djdask.env(
        **system.env,
        **write_profile(tmp_path, system.kind, **settings),
        DJDASK_TEST_LEDGER=str(tmp_path / "ledger.txt"),
    )
    result, took, ended = populate_timed(djdask, env, system.kind, tmp_path)
    print(f"{system.kind}: each ended job said {ended} s after its last output")
    return result, took


def populate_timed(djdask, env, kind: str, tmp_path) -> tuple[subprocess.CompletedProcess, float, dict[str, float]]:
    """`djdask populate ledger --cluster test<kind>` to its end: its result, its seconds, and the
    seconds from each ended job's last output to the line that said it (each under 60)."""
    start = time.monotonic()
    run = Said(djdask, env, "populate", "ledger", "--cluster", f"test{kind}")
    result = run.finish(240)
    took = time.monotonic() - start
    ended = run.after_job_end(tmp_path / f"{kind}-logs")
    assert all(delay < 60 for delay in ended.values()), f"a job's end was said {ended} s after it"
    return result, took, ended


def assert_stopped_cleanly(result, sql, prefix, system, queue_timeout: float = 10) -> None:
    """Exit 2, no traceback, no key reserved, no job queued (within ``queue_timeout`` s)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry").get("reserved", 0) == 0
    assert queue_empties(system, timeout=queue_timeout), f"jobs left in the queue: {system.queue()}"


@SLURM
def test_a_python_the_nodes_lack_stops_the_campaign_with_the_jobs_words(server, djdask, sql, prefix, slurm, tmp_path):
    """Every job's worker command fails (no such python): each ended job is said with SLURM's
    state and exit code and the last lines of its output; after 3 in a row the campaign stops
    (exit 2) naming the profile's `python`.  A failure means a silent wait, or words that do
    not say what the job said."""
    result, took = never_joins(djdask, slurm, tmp_path, python="/nonexistent/env/bin/python3")
    assert_stopped_cleanly(result, sql, prefix, slurm)
    ended = re.findall(
        r"Worker job (\d+) on \S+ ended before its worker joined the scheduler: slurm says FAILED, "
        r"exit code 127:0",
        result.stderr,
    )
    assert len(ended) >= 3, result.stderr
    assert "/nonexistent/env/bin/python3: No such file or directory" in result.stderr, result.stderr
    assert "3 worker jobs in a row ended before their worker joined the scheduler" in result.stderr
    assert "Likely fix: the compute nodes have no Python at /nonexistent/env/bin/python3" in result.stderr
    assert "`djdask.clusters.testslurm.python`" in result.stderr
    assert took < 120, f"the campaign took {took:.0f} s to give up"
    print(f"slurm, missing python: gave up after {took:.1f} s; jobs {ended}")


@SLURM
def test_a_worker_that_cannot_reach_the_scheduler_is_said_with_the_address_it_tries(
    server, djdask, sql, prefix, slurm, tmp_path
):
    """The scheduler tells its workers an address where nothing listens (contact_address):
    the job runs, its worker waits to connect until its death timeout.  The campaign says so
    while the job runs, with the address, and names `interface` and `scheduler-options`."""
    result, took = never_joins(
        djdask,
        slurm,
        tmp_path,
        **{
            "scheduler-options": {"host": "127.0.0.1", "contact_address": "tls://127.0.0.1:9"},
            "death-timeout": 20,
            "report-pending-after": "5s",
            "max-failed-starts": 1,
        },
    )
    assert_stopped_cleanly(result, sql, prefix, slurm)
    assert re.search(
        r"Worker job \d+ has run on \S+ for \d+ s, but its worker has not joined: it cannot reach the scheduler "
        r"at tls://127.0.0.1:9",
        result.stderr,
    ), result.stderr
    assert "Likely fix: the workers cannot reach the scheduler" in result.stderr.split("djdask: Profile")[1]
    assert "`djdask.clusters.testslurm.interface`" in result.stderr
    assert "`djdask.clusters.testslurm.scheduler-options`" in result.stderr
    print(f"slurm, unreachable scheduler: gave up after {took:.1f} s")


@SGE
def test_a_python_the_nodes_lack_stops_an_sge_campaign(server, djdask, sql, prefix, gridengine, tmp_path):
    """As on SLURM, on Grid Engine: the job's own words from its output file in the
    profile's log-directory, and the profile's `python` named."""
    result, took = never_joins(djdask, gridengine, tmp_path, python="/nonexistent/env/bin/python3")
    assert_stopped_cleanly(result, sql, prefix, gridengine)
    assert "ended before its worker joined the scheduler: sge says" in result.stderr, result.stderr
    assert "/nonexistent/env/bin/python3: No such file or directory" in result.stderr
    assert "`djdask.clusters.testsge.python`" in result.stderr
    print(f"sge, missing python: gave up after {took:.1f} s")
