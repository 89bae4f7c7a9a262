"""What every benchmark case shares: its sizes, its rows, its environment and its set-up.

The server is named by the ``DJ_*`` variables and the schema names by
``DASK_DJDASK__DEMO__SCHEMA_PREFIX`` (see :mod:`benchmarks.cases`); a case reaches
the server through :func:`sql_client`, starts baseline processes with
:func:`run_python` or :class:`benchmarks.cases.sides.Racers`, warms djdask's workers
with :func:`warm_cluster`, runs djdask with :func:`campaign`, lets the server
:func:`settle` before each side's clock starts, and returns its rows (:func:`row`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "PYTHON",
    "THROUGHPUT",
    "WORKERS",
    "FirstRow",
    "campaign",
    "check_rows",
    "create_schema",
    "prefixed_env",
    "row",
    "run_python",
    "schema_prefix",
    "settle",
    "sizes",
    "sql_client",
    "warm_cluster",
]

PYTHON = sys.executable
THROUGHPUT = "benchmarks.pipelines.throughput"
WORKERS = 2


def sizes(quick: bool) -> dict[str, Any]:
    """How big each case is; ``--quick`` keeps the whole run under ten minutes on two cores."""
    return {
        "throughput_keys": 5_000,
        "efficiency_keys": 400 if quick else 2_000,
        "direct_keys": 1_000 if quick else 5_000,
        "enqueue_keys": (100_000, 1_000_000) if quick else (100_000, 1_000_000, 10_000_000),
        "refresh_keys": 2_000 if quick else 20_000,
        "reference_scale": "medium",
        "memory_keys": (10_000, 1_000_000) if quick else (10_000, 10_000_000),
        "memory_calls": 2_000 if quick else 10_000,
        "group_keys": 20_000 if quick else 100_000,
    }


def row(
    case: str,
    *,
    djdask: str,
    baseline: str,
    ratio: float | None,
    ratio_text: str,
    goal: str,
    met: bool | None,
    note: str = "",
    **data: Any,
) -> dict[str, Any]:
    """One line of the results table: djdask's figure, the baseline's, their ratio, the goal.

    ``data`` keeps the raw measurements for the JSON file.
    """
    return {
        "case": case,
        "djdask": djdask,
        "baseline": baseline,
        "ratio": ratio,
        "ratio_text": ratio_text,
        "goal": goal,
        "met": met,
        "note": note,
        "data": data,
    }


# -- helpers --------------------------------------------------------------------
def schema_prefix() -> str:
    """This case's schema prefix (``djdask.demo.schema-prefix``), which djdask's side uses."""
    from djdask.config import namespace as config

    return str(config.get("demo.schema-prefix"))


def prefixed_env(prefix: str, **extra: str) -> dict[str, str]:
    """This process's environment with another schema prefix: a side's own copy of the tables."""
    return {**os.environ, "DASK_DJDASK__DEMO__SCHEMA_PREFIX": prefix, **extra}


def sql_client():
    """A plain driver connection to the server named by the ``DJ_*`` variables."""
    from tests.services import SqlClient

    return SqlClient(dict(os.environ))


def run_python(args: Sequence[str], env: dict[str, str], log: Path, timeout: float = 900) -> None:
    """``python ARGS`` to its end, its output appended to ``log``; an error if it fails."""
    with open(log, "a") as out:
        done = subprocess.run(
            [PYTHON, *args], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed (exit {done.returncode}); see {log}")


class FirstRow(threading.Thread):
    """Polls a table every 50 ms, on its own connection, for its first row; records the time."""

    def __init__(self, schema: str, table: str, interval: float = 0.05, where: str = "TRUE") -> None:
        super().__init__(daemon=True)
        self.client = sql_client()
        self.sql = f"SELECT 1 FROM {self.client.table(schema, table)} WHERE {where} LIMIT 1"
        self.interval = interval
        self.seen: float | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                if self.client.query(self.sql):
                    self.seen = time.time()
                    return
                self._stop_event.wait(self.interval)
        finally:
            self.client.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def _warm(module: str) -> int:
    """On a worker: import the pipeline and connect, as the baseline's processes do before the clock."""
    from djdask.db.connect import import_datajoint
    from djdask.planning.loader import load_pipeline

    load_pipeline(module)
    import_datajoint().conn()
    return os.getpid()


@contextlib.contextmanager
def warm_cluster(module: str, workers: int = WORKERS) -> Iterator[Any]:
    """A LocalCluster of single-threaded workers that have imported ``module``; its client."""
    from distributed import Client

    from djdask.clusters import local_cluster

    cluster = local_cluster(workers)
    client = Client(cluster)
    try:
        client.wait_for_workers(workers)
        client.run(_warm, module)
        yield client
    finally:
        client.close()
        cluster.close()


def campaign(module: str, client: Any, **kwargs: Any) -> tuple[float, Any]:
    """Run a campaign on ``client``'s workers; its wall time in seconds (construction
    included: it plans from the database) and its summary."""
    from djdask.campaign.loop import Campaign

    t0 = time.perf_counter()
    summary = Campaign(module, client=client, **kwargs).run()
    seconds = time.perf_counter() - t0
    if summary.errors or summary.cancelled:
        raise RuntimeError(f"the djdask campaign over {module} ended with {summary.errors} error(s)")
    return seconds, summary


def _count(sql, schema: str, table: str) -> int:
    return int(sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, table)}"))


def check_rows(sql, schema: str, table: str, expected: int, who: str) -> None:
    got = _count(sql, schema, table)
    if got != expected:
        raise RuntimeError(f"{who} left {got} rows in {schema}.{table}, expected {expected}")


def settle(sql, timeout: float = 30) -> None:
    """Let the server finish the previous side's background work before the next side's
    clock starts: dirty pages written (PostgreSQL CHECKPOINT; InnoDB flushed) and deleted
    rows purged (InnoDB's history list, PostgreSQL's autovacuum workers), so that neither
    side pays for the other."""
    deadline = time.monotonic() + timeout
    if sql.backend == "postgresql":
        sql.query("CHECKPOINT")
        while time.monotonic() < deadline and sql.scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
        ):
            time.sleep(0.1)
        return
    status = (
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_buffer_pool_pages_dirty', 'Innodb_history_list_length')"
    )
    limit = sql.scalar("SELECT @@GLOBAL.innodb_max_dirty_pages_pct")
    sql.query("SET GLOBAL innodb_max_dirty_pages_pct = 0")
    try:
        while time.monotonic() < deadline:
            counts = {name: int(value) for name, value in sql.query(status)}
            if counts["Innodb_buffer_pool_pages_dirty"] < 100 and counts["Innodb_history_list_length"] < 100:
                break
            time.sleep(0.1)
    finally:
        sql.query("SET GLOBAL innodb_max_dirty_pages_pct = %s", (limit,))


def create_schema(sql, name: str) -> None:
    sql.query(f'CREATE SCHEMA "{name}"' if sql.backend == "postgresql" else f"CREATE DATABASE `{name}`")
