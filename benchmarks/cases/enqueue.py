"""Case 3: enqueue, and the claim latency at the end of a long jobs table (``--case enqueue``)."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.cases.common import row, schema_prefix, settle, sizes, sql_client

__all__ = ["CLAIM_KEYS", "case_enqueue"]


def case_enqueue(quick: bool, work: Path) -> list[dict]:
    """Case 3: enqueue every missing key; djdask's one statement vs DataJoint's
    ``jobs.refresh()``, which inserts one row per key: measured on fewer keys and
    extrapolated linearly."""
    from djdask.jobs.queue import JobQueue
    from tests.pipelines.simple import declare
    from tests.services import Server

    size = sizes(quick)
    prefix, sql = schema_prefix(), sql_client()
    inst = Server(os.environ["DJ_BACKEND"], dict(os.environ), lambda: None).instance()
    try:
        m = size["refresh_keys"]
        _, Result = declare(inst, f"{prefix}_refresh")
        sql.fill_integers(f"{prefix}_refresh", "key", "k", m)
        Result.jobs  # noqa: B018  (declared outside the timing, as JobQueue does below)
        settle(sql)
        t0 = time.perf_counter()
        added = Result.jobs.refresh()["added"]
        per_key = (time.perf_counter() - t0) / m
        if added != m:
            raise RuntimeError(f"jobs.refresh() added {added} keys, expected {m}")
        rows = []
        for n in size["enqueue_keys"]:
            schema = f"{prefix}_e{n}"
            _, Result = declare(inst, schema)
            sql.fill_integers(schema, "key", "k", n)
            jobs = JobQueue(Result())
            settle(sql)
            t0 = time.perf_counter()
            added = jobs.enqueue()
            seconds = time.perf_counter() - t0
            if added != n:
                raise RuntimeError(f"djdask enqueued {added} keys, expected {n}")
            baseline_s = per_key * n
            rows.append(
                row(
                    f"3 enqueue {n:,} missing keys",
                    djdask=f"{seconds:.2f} s",
                    baseline=f"jobs.refresh(): {baseline_s:,.0f} s (extrapolated)",
                    ratio=baseline_s / seconds,
                    ratio_text=f"{baseline_s / seconds:,.0f}x",
                    goal=">= 100x",
                    met=baseline_s / seconds >= 100,
                    note=f"refresh() measured on {m:,} keys ({m / (per_key * m):,.0f} keys/s), extrapolated linearly",
                    keys=n,
                    djdask_s=round(seconds, 3),
                    baseline_s=round(baseline_s, 3),
                    refresh_keys=m,
                    refresh_s=round(per_key * m, 3),
                )
            )
            rows.append(_claim_latency(sql, jobs, schema, n))
        return rows
    finally:
        inst.connection.close()
        sql.close()


#: Keys one claim takes in case 3's latency rows (a batch of a fast make()).
CLAIM_KEYS = 1000


def _purged_rows(sql) -> int | None:
    """InnoDB's count of delete-marked rows purged so far, its monitor switched on for the
    counts that follow; None on PostgreSQL."""
    if sql.backend == "postgresql":
        return None
    sql.query("SET GLOBAL innodb_monitor_enable = 'purge_del_mark_records'")
    return _purge_count(sql)


def _purge_count(sql) -> int:
    return int(
        sql.scalar("SELECT `COUNT` FROM information_schema.INNODB_METRICS WHERE NAME = 'purge_del_mark_records'")
    )


def _wait_for_purge(sql, before: int, rows: int, timeout: float) -> None:
    """Until InnoDB has purged ``rows`` more delete-marked rows than ``before``, its count
    stops growing for 5 s, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        done = _purge_count(sql) - before
        if done >= rows:
            return
        if done != last:
            last, still_since = done, time.monotonic()
        elif time.monotonic() - still_since > 5:
            return
        time.sleep(0.5)


def _claim_latency(sql, jobs: Any, schema: str, n: int, claims: int = 5) -> dict:
    """Case 3's claim latency with ``n`` keys pending: a claim of CLAIM_KEYS keys at the
    start of the table, and at its end, when all but the last keys have been made (their
    jobs rows deleted at once, as a campaign's complete step deletes them, then the server's
    cleanup of them waited for; also right after the deletion); the median of ``claims`` each."""

    def median_claim() -> float:
        times = []
        for _ in range(claims):
            t0 = time.perf_counter()
            got = jobs.claim(CLAIM_KEYS)
            times.append(time.perf_counter() - t0)
            if len(got) != CLAIM_KEYS:
                raise RuntimeError(f"a claim returned {len(got)} keys, expected {CLAIM_KEYS}")
        return statistics.median(times)

    start = median_claim()
    left = 2 * claims * CLAIM_KEYS
    purged = _purged_rows(sql)
    t0 = time.perf_counter()
    sql.query(f"DELETE FROM {sql.table(schema, '~~result')} WHERE k < %s AND status = 'pending'", (n - left,))
    deleted_s = time.perf_counter() - t0
    at_once = median_claim()
    # The server's cleanup of the deleted rows (InnoDB's purge, PostgreSQL's vacuum), to its
    # end.  One DELETE is one entry in InnoDB's history list however many rows it deleted,
    # so settle() cannot tell that 9.99M delete-marked rows are still being purged (a claim
    # measured meanwhile took 0.5-1.0 s): on MariaDB wait for the purged-rows counter too.
    t1 = time.monotonic()
    settle(sql)
    if purged is not None:
        _wait_for_purge(sql, purged, n - left, timeout=max(30.0, n / 10_000))
    cleanup_s = time.monotonic() - t1
    end = median_claim()
    return row(
        f"3 claim latency, {n:,} keys: at the end of the table vs its start",
        djdask=f"{end * 1000:.1f} ms at the end",
        baseline=f"{start * 1000:.1f} ms at the start",
        ratio=end / start,
        ratio_text=f"{end / start:.2f}x",
        goal="<= 2x",
        met=end / start <= 2,
        note=f"a claim of {CLAIM_KEYS:,} keys (median of {claims}); the end: all but the last {left:,} keys' "
        f"jobs rows deleted (in {deleted_s:.1f} s, as if made), then the server's cleanup of them let run "
        f"({cleanup_s:.0f} s); "
        f"right after the deletion, before the cleanup: {at_once * 1000:.1f} ms ({at_once / start:.1f}x)",
        keys=n,
        start_ms=round(start * 1000, 2),
        end_ms=round(end * 1000, 2),
        end_before_cleanup_ms=round(at_once * 1000, 2),
        delete_s=round(deleted_s, 2),
        cleanup_s=round(cleanup_s, 1),
    )
