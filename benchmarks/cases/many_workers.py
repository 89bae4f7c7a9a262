"""Case 7: many workers (``--case workers``)."""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path

from benchmarks.cases.common import (
    THROUGHPUT,
    campaign,
    check_rows,
    prefixed_env,
    row,
    run_python,
    schema_prefix,
    settle,
    sql_client,
    warm_cluster,
)
from benchmarks.cases.sides import Racers

__all__ = ["Sessions", "case_workers"]


class Sessions(threading.Thread):
    """Samples how many client sessions the server has, every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.sql = sql_client()
        self.interval, self.peak, self._done = interval, 0, threading.Event()
        self.query = (
            "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            if self.sql.backend == "postgresql"
            else "SELECT COUNT(*) FROM information_schema.processlist WHERE command <> 'Daemon'"
        )

    def now(self) -> int:
        return int(self.sql.scalar(self.query))

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        self.sql.close()
        return self.peak


def case_workers(quick: bool, work: Path) -> list[dict]:
    """Case 7, many workers on one machine: 64 single-threaded worker processes, a make()
    that sleeps 200 ms (the CPU does not decide), against the ideal (keys x 200 ms / 64)
    and 64 processes of DataJoint's ``populate(reserve_jobs=True)``; the server's client
    sessions while the campaign runs, against the workers plus djdask's own."""
    from djdask.db.capacity import OWN_CONNECTIONS

    workers, per_worker = 64, (30 if quick else 100)
    n = workers * per_worker
    prefix, log = schema_prefix(), work / "workers.log"
    sql = sql_client()
    tp = importlib.import_module(THROUGHPUT)
    tp.Nap().jobs  # noqa: B018
    ours = f"{prefix}_throughput"
    sql.fill_integers(ours, "slow_key", "s", n)
    env = prefixed_env(f"{prefix}dj")
    run_python(["-m", "benchmarks.baseline", "declare", THROUGHPUT, "Nap"], env, log)
    theirs = f"{prefix}dj_throughput"
    sql.fill_integers(theirs, "slow_key", "s", n)
    ideal = n * tp.NAP_SECONDS / workers
    with warm_cluster(THROUGHPUT, workers) as client:
        settle(sql)
        before = Sessions().now()  # the workers' connections (made warming up), this process's, the sampler's
        sessions = Sessions()
        sessions.start()
        try:
            seconds, summary = campaign(THROUGHPUT, client, targets=["Nap"])
        finally:
            peak = sessions.stop()
        check_rows(sql, ours, "__nap", n, "the djdask campaign")
    own = peak - before  # what the campaign opened beyond the workers' own
    settle(sql)
    dj = Racers([["-m", "benchmarks.baseline", "populate", THROUGHPUT, "Nap"]] * workers, env, log).run(timeout=1800)
    check_rows(sql, theirs, "__nap", n, "DataJoint's populate")
    sql.close()
    table = summary.tables[0]
    # From the first make()'s start (its end less one make()) to the last key done: the
    # campaign's start (its worker plugin set up in 64 processes on 2 cores) left out.
    running = table.last_done - table.first_done + tp.NAP_SECONDS
    return [
        row(
            f"7 many workers, once running: {n:,} keys, {tp.NAP_SECONDS * 1000:.0f} ms make(), {workers} workers",
            djdask=f"{running:.2f} s",
            baseline=f"ideal {n:,} x {tp.NAP_SECONDS * 1000:.0f} ms / {workers}: {ideal:.2f} s",
            ratio=ideal / running,
            ratio_text=f"{ideal / running:.1%}",
            goal=">= 90%",
            met=ideal / running >= 0.9,
            note=f"from the first make() to the last key done; the campaign's first {table.first_done:.1f} s "
            f"(plan, enqueue, and the worker plugin set up in {workers} processes) left out",
            keys=n,
            running_s=round(running, 3),
            first_done_s=round(table.first_done, 3),
        ),
        row(
            f"7 many workers: {n:,} keys, {tp.NAP_SECONDS * 1000:.0f} ms make(), {workers} workers on one machine",
            djdask=f"{seconds:.2f} s",
            baseline=f"ideal {n:,} x {tp.NAP_SECONDS * 1000:.0f} ms / {workers}: {ideal:.2f} s",
            ratio=ideal / seconds,
            ratio_text=f"{ideal / seconds:.1%}",
            goal=">= 90%",
            met=ideal / seconds >= 0.9,
            note=f"{workers} x DataJoint's populate(reserve_jobs=True): {dj['seconds']:.2f} s "
            f"({ideal / dj['seconds']:.0%} of ideal); the campaign opened {own} database session(s) beyond "
            f"its workers' {workers} (budgeted: {OWN_CONNECTIONS})",
            keys=n,
            workers=workers,
            djdask_s=round(seconds, 3),
            ideal_s=ideal,
            datajoint_s=round(dj["seconds"], 3),
            sessions_before=before,
            sessions_peak=peak,
            campaign_sessions=own,
            tasks=table.tasks,
            largest_batch=table.largest_batch,
        ),
        row(
            f"7 many workers vs DataJoint: {workers} x populate(reserve_jobs=True)",
            djdask=f"{seconds:.2f} s",
            baseline=f"{workers} x populate(reserve_jobs=True): {dj['seconds']:.2f} s",
            ratio=dj["seconds"] / seconds,
            ratio_text=f"{dj['seconds'] / seconds:.2f}x",
            goal="(none)",
            met=None,
            keys=n,
        ),
    ]
