"""The sides djdask is measured against: DataJoint's processes, released together
(:class:`Racers`); and, for cases 1 and 6, the ceiling (:func:`prepare_ceiling`),
DataJoint's direct populate() on halves of the keys (:data:`HALVES`), and the sides
taking turns (:func:`take_turns`)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.baseline import READY, RESULT
from benchmarks.cases.common import PYTHON, THROUGHPUT, WORKERS, check_rows, create_schema, settle

__all__ = ["HALVES", "ROUNDS", "Racers", "prepare_ceiling", "raced", "take_turns"]

#: How often each side of case 1 runs; the median counts.
ROUNDS = 3


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


def prepare_ceiling(sql, prefix: str, keys_schema: str, n: int) -> tuple[str, list[list[str]]]:
    """The ceiling: a table of the same rows (with the same foreign key, to ``keys_schema``'s
    ``key``) that WORKERS connections fill with INSERT + COMMIT per key, no framework at
    all; its schema and those processes' commands."""
    ceiling = f"{prefix}_ceiling"
    create_schema(sql, ceiling)
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


def raced(
    sql, commands: list[list[str]], env: dict[str, str], log: Path, written: tuple[str, str, int], who: str
) -> Callable[[], float]:
    """A side of :func:`take_turns`: ``commands`` as :class:`Racers`, then a check that they
    left the expected rows (``written``: schema, table, rows)."""

    def run() -> float:
        seconds = Racers(commands, env, log).run()["seconds"]
        check_rows(sql, *written, who)
        return seconds

    return run


def take_turns(sql, sides: dict[str, Callable[[], float]], emptied: Sequence[tuple[str, str]]) -> dict[str, list]:
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
