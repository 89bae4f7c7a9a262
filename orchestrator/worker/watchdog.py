"""Why a worker died, and per-key time limits: the nanny watches its worker.

A worker process runs one ``make()`` at a time.  Before each key it writes a
small *beacon* file (:class:`Beacon`): which task, which key of the batch,
since when, and until when it may run.  The beacon lives where the worker's
nanny, the process that started it and outlives it, can read it.

:class:`WatchdogPlugin` is a Dask nanny plugin.  Every ``interval`` it looks at
its worker process: it keeps the peak of its memory, stops it (``SIGKILL``; the
database rolls back the open transaction and the nanny starts a fresh worker)
when the key in the beacon is past its time limit, and, when the process has
exited, logs one event on the scheduler (topic :data:`TOPIC`) with the exit
code, the peak memory and limit, the beacon, and whether the nanny itself was
closing (its batch job ending).  The campaign turns that event into the
reason a key failed (:func:`djdask.campaign.losses.judge`), and charges an attempt only
to the key that was running.

Nothing here talks to the database, and the beacon costs two system calls per
key.  Without a nanny (``dask worker --no-nanny``) no event is logged: a lost
worker is then a loss of unknown cause, retried without charging any key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from distributed.diagnostics.plugin import NannyPlugin
from tornado.ioloop import PeriodicCallback

__all__ = ["TOPIC", "Beacon", "WatchdogPlugin", "beacon_path", "describe_exit"]

logger = logging.getLogger(__name__)

#: The scheduler event topic of worker deaths.
TOPIC = "djdask-worker-exit"

PLUGIN_NAME = "djdask-watchdog"


def beacon_path(nanny: str) -> Path:
    """The beacon of the worker whose nanny listens at ``nanny`` (on this host).  By address,
    not process: a LocalCluster's nannies all live in the campaign's process."""
    name = re.sub(r"[^A-Za-z0-9.]+", "-", nanny)
    return Path(tempfile.gettempdir()) / f"djdask-{os.getuid()}" / f"beacon-{name}.json"


class Beacon:
    """The worker's side: what it is running now, written before each key.

    The nanny creates the file; a worker without a watching nanny has no
    beacon (:meth:`open` returns None).
    """

    def __init__(self, path: Path, worker: str | None = None) -> None:
        self.path = path
        self.worker = worker
        self._fd = os.open(path, os.O_WRONLY)

    @classmethod
    def open(cls, nanny: str | None, worker: str | None = None) -> Beacon | None:
        """The beacon of the worker at address ``worker`` whose nanny is at ``nanny``
        (``Worker.nanny``)."""
        if not nanny:
            return None
        try:
            return cls(beacon_path(nanny), worker)
        except OSError:
            return None

    def _write(self, record: dict[str, Any]) -> None:
        data = json.dumps(record, default=str).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as err:  # the nanny went away: nothing reads it any more
            logger.debug("Beacon %s not written: %s", self.path, err)

    def running(self, task: str, table: str, index: int, key: dict, timeout: float | None) -> None:
        """Key ``index`` of the batch of task ``task`` starts now, limited to ``timeout`` seconds."""
        now = time.time()
        self._write(
            {
                "worker": self.worker,  # the nanny learns its new worker's address late: it may die first
                "task": task,
                "table": table,
                "index": index,
                "key": key,
                "started": now,
                "timeout": timeout,
                "deadline": None if timeout is None else now + timeout,
            }
        )

    def idle(self) -> None:
        self._write({})

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def read_beacon(path: Path) -> dict[str, Any]:
    """The beacon's last record; empty when there is none (or it is being written)."""
    try:
        text = path.read_text()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def describe_exit(exitcode: int | None) -> str:
    """``exited with status 3`` or ``killed by signal 11 (SIGSEGV)``."""
    if exitcode is None:
        return "vanished"
    if exitcode >= 0:
        return f"exited with status {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        return f"killed by signal {-exitcode}"
    return f"killed by signal {-exitcode} ({name})"


class WatchdogPlugin(NannyPlugin):
    """Watches a nanny's worker process: memory peak, per-key time limits, how it ended.

    Parameters
    ----------
    interval : float
        Seconds between looks at the worker process.
    """

    name = PLUGIN_NAME
    idempotent = True  # a second campaign on the same workers keeps the first one's watchdog

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.nanny: Any = None
        self.path: Path | None = None
        self._process: Any = None  # the AsyncProcess watched (it keeps its exit code)
        self._pid: int | None = None
        self._address: str | None = None
        self._peak = 0
        self._timed_out: dict[str, Any] | None = None
        self._callback: Any = None

    def setup(self, nanny: Any) -> None:
        self.nanny = nanny
        self.path = beacon_path(nanny.address)
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        self.path.write_text("")
        self._callback = PeriodicCallback(self._poll, self.interval * 1000)
        nanny.periodic_callbacks[PLUGIN_NAME] = self._callback
        self._callback.start()

    def teardown(self, nanny: Any) -> None:
        if self._callback is not None:
            self._callback.stop()
            nanny.periodic_callbacks.pop(PLUGIN_NAME, None)
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    # -- the look, every interval ----------------------------------------------------
    def _current(self) -> Any:
        worker_process = getattr(self.nanny, "process", None)
        return getattr(worker_process, "process", None) if worker_process is not None else None

    def _poll(self) -> None:
        try:
            self._look()
        except Exception as err:  # never let the watchdog take the nanny down
            logger.debug("djdask watchdog: %s", err)

    def _look(self) -> None:
        current = self._current()
        if self._process is not None and (self._process.exitcode is not None or current is not self._process):
            self._report()
        if self._process is None and current is not None and current.pid and current.exitcode is None:
            self._process, self._pid, self._peak, self._timed_out = current, current.pid, 0, None
            self._address = None  # the new worker's, once it has registered
        if self._process is None:
            return
        address = getattr(self.nanny, "worker_address", None)
        if address:
            self._address = address
        self._sample_memory()
        self._enforce_time_limit()

    def _sample_memory(self) -> None:
        try:
            self._peak = max(self._peak, psutil.Process(self._pid).memory_info().rss)
        except (psutil.Error, OSError):
            pass

    def _enforce_time_limit(self) -> None:
        if self._timed_out is not None or self.path is None:
            return
        record = read_beacon(self.path)
        deadline = record.get("deadline")
        if deadline is None or time.time() < deadline:
            return
        self._timed_out = record
        logger.warning(
            "Worker %s: %s %s ran past its time limit of %.0f s; stopping the worker",
            self._address,
            record.get("table"),
            record.get("key"),
            record.get("timeout") or 0,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)

    def _report(self) -> None:
        """The watched process has exited: say how, with what it was running, then forget it."""
        process, self._process = self._process, None
        nanny = self.nanny
        status = str(getattr(nanny, "status", ""))
        closing = "running" not in status  # the nanny is closing: its job ends, or the cluster closes
        record = self._timed_out or (read_beacon(self.path) if self.path is not None else {})
        memory = getattr(nanny, "memory_manager", None)
        event = {
            "worker": record.get("worker") or self._address,
            "pid": self._pid,
            "exitcode": process.exitcode,
            "peak": self._peak,
            "memory_limit": getattr(memory, "memory_limit", None),
            "beacon": record,
            "timed_out": self._timed_out is not None,
            "closing": closing,
            "host": os.uname().nodename,
        }
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.write_text("")
        if closing:
            return  # nobody to tell: the scheduler connection goes with the nanny
        try:
            nanny.log_event(TOPIC, event)
        except Exception as err:
            logger.warning("djdask watchdog could not report worker %s's exit: %s", self._address, err)
