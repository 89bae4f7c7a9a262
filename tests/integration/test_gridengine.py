"""Campaigns on a real single-node Grid Engine (started by the ``gridengine`` fixture).

Workers are SGE jobs submitted by dask-jobqueue's ``qsub``; the ledger pipeline
writes each make()'s SGE job id (``JOB_ID``).  Grid Engine gives a job none of the
submitting shell's environment unless asked (``-V``, which the ``sge`` kind adds),
and ends a job at its ``h_rt`` with SIGKILL: a worker must retire before.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.integration.batch_campaigns import (
    Watch,
    ledger_lines,
    queue_empties,
    submitted_campaign_hands_over,
    write_profile,
)
from tests.integration.test_jobs_engine import ledger_lines as raw_ledger_lines
from tests.integration.test_jobs_engine import seed_ledger as seed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("sge"),
    pytest.mark.parametrize("server", ["postgres"], indirect=True),
]


def test_workers_are_sge_jobs_that_retire_before_their_walltime(server, djdask, sql, prefix, gridengine, tmp_path):
    """12 keys of 1 s on one job at a time whose workers retire after 10 s (h_rt one minute):
    every make() runs inside an SGE job that qstat showed running, exactly once; several
    jobs take turns; no key starts on a worker whose lifetime would end first; nothing is
    left reserved or queued."""
    n = 12
    seed(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        **gridengine.env,
        **write_profile(
            tmp_path, "sge", walltime="00:01:00", lifetime="10s", **{"max-jobs": 1, "lifetime-stagger": "1s"}
        ),
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="1",
    )
    watch = Watch(djdask, gridengine, env)
    code, out, err = watch.wait(240)
    assert code == 0, out + err
    lines = ledger_lines(ledger)
    counts = Counter(k for k, _, _ in lines)
    assert set(counts) == set(range(n)) and max(counts.values()) == 1, "a make() ran twice or never"
    jobs = {job for _, _, job in lines}
    assert "-" not in jobs, "a make() ran outside Grid Engine"
    assert jobs <= watch.ran(), f"make() ran in jobs {jobs - watch.ran()} qstat never showed running"
    assert len(jobs) >= 2, "no replacement worker made keys"
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_ledger', '__entry')}") == n
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry") == {}
    late = [
        (key, round(float(deadline) - float(start), 2))
        for key, _, _, start, deadline in raw_ledger_lines(ledger)
        if deadline != "-" and float(start) + 1.0 > float(deadline)
    ]
    assert not late, f"keys started with less lifetime left than their make() takes: {late}"
    assert all(deadline != "-" for *_, deadline in raw_ledger_lines(ledger)), "the job script's prologue did not run"
    assert queue_empties(gridengine), f"jobs left in the queue: {gridengine.queue()}"


def test_an_unknown_sge_queue_stops_the_campaign(server, djdask, sql, prefix, gridengine, tmp_path):
    """qsub refuses every job for a queue that does not exist: exit 2 with its reason and
    the profile key to fix; nothing left reserved or queued."""
    seed(djdask, 3)
    env = djdask.env(
        **gridengine.env,
        **write_profile(tmp_path, "sge", queue="nosuch.q"),
        DJDASK_TEST_LEDGER=str(tmp_path / "ledger.txt"),
    )
    result = djdask("populate", "ledger", "--cluster", "testsge", env=env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Profile 'testsge' could not submit a worker job" in result.stderr
    assert 'unknown queue "nosuch.q"' in result.stderr and "djdask.clusters.testsge" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry").get("reserved", 0) == 0
    assert queue_empties(gridengine, timeout=5)


def test_a_submitted_campaign_runs_as_sge_jobs_and_hands_over_to_its_successors(
    server, djdask, sql, prefix, gridengine, tmp_path
):
    """`djdask submit --resubmit` with SGE jobs for the controllers and the workers
    (batch_campaigns.submitted_campaign_hands_over says what is checked)."""
    seed(djdask, 8)
    print(submitted_campaign_hands_over(djdask, gridengine, tmp_path, n=8))
