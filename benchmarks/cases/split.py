"""Case 10: compute workers without database access (``--case split``).

A tripartite table (``tests/pipelines/split.py``'s ``Result``: ``make_fetch`` reads two rows,
``make_compute`` sleeps 500 ms, ``make_insert`` writes a row and three part rows) made by
8 compute workers that have no database access (a ``local`` profile with ``database:
none``; its fetch and insert on 2 database-side workers) against the same campaign on 8
workers that each hold a connection.  Each side's clock covers its whole campaign, its
workers' start included (both start 8 worker processes).  Goal: the split side at least
90% of the other's throughput.  Then the largest transfer: one key whose ``make_compute``
returns 256 MiB (1 GiB in a full run), sent back to the database side.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dask.config

from benchmarks.cases.common import check_rows, row, schema_prefix, settle, sql_client

__all__ = ["case_split"]

PIPELINES = Path(__file__).resolve().parents[2] / "tests" / "pipelines"
COMPUTE_SECONDS = 0.5
WORKERS = 8


def _campaign(**kwargs) -> float:
    from djdask.campaign.loop import Campaign

    t0 = time.perf_counter()
    summary = Campaign("split", targets=["Result"], **kwargs).run()
    seconds = time.perf_counter() - t0
    if summary.errors or summary.cancelled:
        raise RuntimeError(f"the campaign ended with {summary.errors} error(s)")
    return seconds


def case_split(quick: bool, work: Path) -> list[dict]:
    n = WORKERS * (10 if quick else 40)
    prefix = schema_prefix()
    # The workers (forked from this process) import the test pipeline too, with its make()'s sleep.
    os.environ["PYTHONPATH"] = os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(PIPELINES)])
    os.environ["DJDASK_TEST_MAKE_SECONDS"] = str(COMPUTE_SECONDS)
    sys.path.insert(0, str(PIPELINES))
    import split  # the test pipeline: its schema is named once, for both sides

    split.seed(n)
    sql = sql_client()
    seconds = {}
    for side in ("everywhere", "split"):
        settle(sql)
        if side == "everywhere":
            seconds[side] = _campaign(workers=WORKERS)
        else:
            settings = {
                "djdask.clusters.bench-nodb": {"kind": "local", "database": "none", "workers": WORKERS},
                "djdask.campaign.pools": {"Result": "compute"},
            }
            with dask.config.set(settings):
                seconds[side] = _campaign(workers=1, cluster={"default": "local", "compute": "bench-nodb"})
        check_rows(sql, f"{prefix}_split", "__result", n, f"the {side} campaign")
        split.Result.delete(prompt=False)  # its parts too; then the jobs rows the side left
        split.Result.jobs.delete_quick()
    transfer = _largest_transfer(sql, prefix, 256 if quick else 1024)
    sql.close()
    ideal = n * COMPUTE_SECONDS / WORKERS
    ratio = seconds["everywhere"] / seconds["split"]
    return [
        row(
            f"10 compute without database: {n} keys, make_compute {COMPUTE_SECONDS * 1000:.0f} ms, {WORKERS} workers",
            djdask=f"{n / seconds['split']:.1f} keys/s ({seconds['split']:.1f} s; ideal {ideal:.1f} s)",
            baseline=f"{n / seconds['everywhere']:.1f} keys/s with the database on every worker "
            f"({seconds['everywhere']:.1f} s)",
            ratio=ratio,
            ratio_text=f"{ratio * 100:.0f}% of its throughput",
            goal=">= 90%",
            met=ratio >= 0.9,
            keys=n,
            seconds=seconds,
            ideal=ideal,
        ),
        row(
            f"10 compute without database: one key's {transfer['mib']} MiB result sent back",
            djdask=f"made in {transfer['seconds']:.1f} s (max-transfer 2 GiB)",
            baseline="-",
            ratio=None,
            ratio_text="-",
            goal="sent, not refused",
            met=transfer["made"],
            **transfer,
        ),
    ]


def _largest_transfer(sql, prefix: str, mib: int) -> dict:
    """One key of ``Big`` whose make_compute returns ``mib`` MiB, made on a compute worker and
    sent back to the database side: how long its campaign took, and whether the row is there."""
    os.environ["DJDASK_TEST_BIG_MB"] = str(mib)
    settings = {
        "djdask.clusters.bench-nodb": {"kind": "local", "database": "none", "workers": 1},
        "djdask.campaign.pools": {"Big": "compute"},
    }
    with dask.config.set(settings):
        from djdask.campaign.loop import Campaign

        t0 = time.perf_counter()
        Campaign(
            "split", targets=["Big"], restrictions=["source_id=0"], workers=1,
            cluster={"default": "local", "compute": "bench-nodb"},
        ).run()  # fmt: skip
        seconds = time.perf_counter() - t0
    size = sql.scalar(f"SELECT MAX(size) FROM {sql.table(prefix + '_split', '__big')}")
    return {"mib": mib, "seconds": seconds, "made": size == mib * 2**20}
