"""What runs on a Dask worker: the pipeline, one connection, and batches of keys.

:class:`PipelinePlugin` imports the pipeline module once per worker process and
opens that process's DataJoint connection from the worker's own DataJoint
configuration (``datajoint.json``, ``DJ_*``): no credential travels through
Dask.  :func:`run_batch` is the task: it runs ``make()`` for each key of a
batch, each in its own transaction, and returns one outcome per key.  One
``make()`` at a time per process: DataJoint allows inserts through a class-level
flag and one connection cannot nest transactions, so workers have one thread.

Workers of batch jobs retire before their walltime.  The job script sets
``DJDASK_WORKER_LIFETIME`` (seconds, counted from the worker process's start)
and ``DJDASK_WORKER_LIFETIME_STAGGER``; past its deadline a worker starts no
new ``make()`` (a batch returns its remaining keys as ``requeue``, for another
worker) and, once nothing runs, closes gracefully, which ends its job.  No
``make()`` is interrupted by retirement and none runs twice; distributed's own
``--lifetime`` would reschedule a running task while it still runs.
"""

from __future__ import annotations

import logging
import os
import random
import resource
import sys
import time
from typing import Any

import dask
import psutil
from distributed import WorkerPlugin, get_worker
from tornado.ioloop import PeriodicCallback

from djdask import djcompat
from djdask.clusters.credentials import without_credentials
from djdask.db.connect import import_datajoint
from djdask.db.outage import (
    OUTAGE_TOPIC,
    is_connection_error,
    is_store_unavailable,
    is_transient,
    reconnect,
    store_backoff,
    wait_for_database,
)
from djdask.logs import setup_logging
from djdask.planning.graph import split_name
from djdask.planning.loader import load_offline, load_pipeline
from djdask.worker import randomness
from djdask.worker.watchdog import Beacon

__all__ = [
    "DATABASE_ENV",
    "FORGET_ENV",
    "LIFETIME_ENV",
    "PLUGIN_NAME",
    "RUNNING_METRIC",
    "STAGGER_ENV",
    "PipelinePlugin",
    "peak_memory",
    "run_batch",
]

LIFETIME_ENV = "DJDASK_WORKER_LIFETIME"
STAGGER_ENV = "DJDASK_WORKER_LIFETIME_STAGGER"

PLUGIN_NAME = "djdask-pipeline"

#: Set to ``none`` in the jobs of a profile with ``database: none``: the worker opens no
#: connection and imports the pipeline without one (:func:`djdask.planning.load_offline`).
DATABASE_ENV = "DJDASK_DATABASE"
#: Set by a ``local`` profile with ``database: none``: its workers, forked from a process with
#: this machine's credentials, drop them from their environment as they start.
FORGET_ENV = "DJDASK_FORGET_CREDENTIALS"

#: The worker metric (sent with each heartbeat to the scheduler) naming the key a worker runs.
RUNNING_METRIC = "djdask-running"

logger = logging.getLogger(__name__)


class PipelinePlugin(WorkerPlugin):
    """Imports a pipeline module on each worker and keeps its table classes.

    Parameters
    ----------
    module_name : str
        The importable pipeline module, as given to the CLI.
    """

    name = PLUGIN_NAME

    def __init__(self, module_name: str) -> None:
        self.module_name = module_name
        self.tables: dict[str, type] = {}
        self.deadline: float | None = None  # time.time() after which no make() starts
        self.beacon: Beacon | None = None  # what runs now, for the nanny's watchdog
        self.now: dict[str, Any] | None = None  # the key running now, for the campaign page
        self._retiring = False
        self.stopping = False  # the campaign stops: start no more make() (Pools.stop_starting)
        self.offline = False  # no database here (DJDASK_DATABASE=none): make_compute only
        self.offline_tables: dict[tuple[str, str], type] = {}

    def setup(self, worker: Any) -> None:
        if os.environ.get(FORGET_ENV):  # a local worker without database access: before DataJoint reads them
            for name in set(os.environ) - set(without_credentials(dict(os.environ))):
                del os.environ[name]
        import_datajoint()
        setup_logging(worker=True)  # masking from the start: importing the pipeline may log
        # Before the pipeline is imported, so that its `from random import ...` take
        # the functions that keep other threads off the generators make() seeds.
        randomness.isolate()
        self.offline = os.environ.get(DATABASE_ENV) == "none"
        if self.offline:  # a compute node without database access: make_compute only
            self.offline_tables = load_offline(self.module_name)
            self.beacon = Beacon.open(worker.nanny, worker.address)
            worker.metrics[RUNNING_METRIC] = lambda worker: self.now
            return
        self.tables = load_pipeline(self.module_name).auto_populated()
        connections = self.connections()
        # DataJoint logs a failing make()'s message, which may hold a secret.
        setup_logging(connections=connections, worker=True)
        # Fail here, at worker start, rather than in the first task. A plugin
        # registered again (a second campaign on the same workers) finds the
        # connections its predecessor's teardown closed: open them again.  The
        # tables' own connections, not dj.conn(): a pipeline in DataJoint's
        # thread-safe mode has no global one.
        for connection in connections:
            _reconnect_if_lost(connection)
        _warm_up()
        self.beacon = Beacon.open(worker.nanny, worker.address)
        worker.metrics[RUNNING_METRIC] = lambda worker: self.now  # sent to the scheduler with each heartbeat
        self.deadline = _deadline()
        if self.deadline is not None:
            callback = PeriodicCallback(lambda: self._maybe_retire(worker), 500)
            worker.periodic_callbacks["djdask-lifetime"] = callback
            callback.start()

    def past_deadline(self, expected: float | None = None) -> bool:
        """Whether no make() may start now: the lifetime is over, or what is left of it is
        shorter than ``expected`` seconds (the key would meet the walltime).  Then the
        worker retires as soon as it is idle, and a fresh one takes the key."""
        if self.deadline is None:
            return False
        now = time.time()
        if now >= self.deadline:
            return True
        if expected and now + expected > self.deadline:
            logger.info(
                "%.0f s of lifetime left, a make() takes about %.0f s: this worker starts no more",
                self.deadline - now,
                expected,
            )
            self.deadline = now  # retire when idle
            return True
        return False

    def _maybe_retire(self, worker: Any) -> None:
        """Past the deadline and idle: close gracefully (its job ends; tasks queued here
        and not started go to other workers)."""
        if self._retiring or not self.past_deadline() or worker.state.executing:
            return
        self._retiring = True
        logger.info("Worker %s reached its djdask lifetime; retiring", worker.address)
        worker.loop.add_callback(worker.close_gracefully, restart=False, reason="djdask-lifetime")

    def table_class(self, full_name: str) -> type:
        """The class of table ``full_name`` (as the campaign names it), here or offline."""
        if self.offline:
            return self.offline_tables[split_name(full_name)]
        return self.tables[full_name]

    def connections(self) -> list[Any]:
        """The distinct DataJoint connections of the pipeline's tables."""
        found: dict[int, Any] = {}
        for cls in self.tables.values():
            connection = cls().connection
            found.setdefault(id(connection), connection)
        return list(found.values())

    def teardown(self, worker: Any) -> None:
        if self.beacon is not None:
            self.beacon.close()
        for connection in self.connections():
            try:
                connection.close()
            except Exception:  # closing a connection that is already gone
                pass


def _warm_up() -> None:
    """Import now what DataJoint's populate imports on its first ``make()`` (deepdiff, some
    60 ms), so that the first key of a campaign does not wait for it."""
    try:
        # lazy: the point: on a worker, as it starts (the campaign's process imports this module too)
        import deepdiff  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency of DataJoint
        pass


def _deadline() -> float | None:
    """The wall-clock time this worker stops starting make() calls, from the job's
    environment, counted from the worker process's start."""
    lifetime = os.environ.get(LIFETIME_ENV)
    if not lifetime:
        return None
    stagger = float(os.environ.get(STAGGER_ENV) or 0)
    started = psutil.Process().create_time()
    return started + float(lifetime) + random.uniform(-stagger, stagger)


def peak_memory() -> int:
    """This process's peak resident memory in bytes (a worker's, when run in one)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _reconnect_if_lost(connection: Any) -> None:
    """Re-open the worker's session when it is gone (DataJoint does not on PostgreSQL)."""
    if not reconnect(connection):
        connection.connect()  # the error says why


def run_batch(
    table_name: str,
    keys: list[dict],
    make_kwargs: dict | None = None,
    version: str | None = None,
    timeout: float | None = None,
    tolerance: float = 600.0,
    expected: float | None = None,
    group: tuple[int, float] | None = None,
) -> list[dict[str, Any]]:
    """Run ``make()`` for each key of ``keys`` in ``table_name``; one outcome per key.

    Each outcome is a dict with ``key``, ``status`` (success, skipped, error,
    transient, or requeue for a key not started because the worker retires),
    ``duration`` in seconds, ``error_message`` and ``error_stack``.  Failures
    are outcomes, not exceptions: one bad key does not fail its batch.

    ``make_kwargs`` go to each ``make()`` as ``populate(make_kwargs=...)`` passes
    them; ``version`` is the campaign's code version, stamped on the rows' job
    metadata as on the keys' jobs rows.  ``timeout`` is the table's time limit of
    one ``make()`` in seconds, enforced by the nanny's watchdog (:mod:`djdask.worker.watchdog`),
    which reads what runs from the beacon written here before each key.  A key whose
    database connection fails waits for the database, up to ``tolerance`` seconds, and
    runs again (:mod:`djdask.db.outage`).  ``expected`` is how long a key is expected to
    take (measured, with a margin): a worker whose lifetime ends sooner does not start it.
    ``group`` is ``(keys, seconds)`` for a table with group commit (:func:`_run_grouped`):
    up to that many keys, or keys for up to that long, share one transaction.
    """
    worker = get_worker()
    plugin = worker.plugins[PLUGIN_NAME]
    table = plugin.tables[table_name]()
    if plugin.beacon is None:  # the nanny's watchdog was registered after this worker started
        plugin.beacon = Beacon.open(worker.nanny, worker.address)
    running = _Running(plugin, str(worker.get_current_task()), table_name, timeout)
    # Lazy arrays a make() fetches (<xarray@>) compute here, in this thread: on the
    # cluster's scheduler they would wait for this very worker.
    try:
        with dask.config.set(scheduler="synchronous"), randomness.owned_by_this_thread():
            if group is not None:
                return _run_grouped(plugin, table, keys, make_kwargs, version, running, tolerance, expected, group)
            return _run_keys(plugin, table, keys, make_kwargs, version, running, tolerance, expected)
    finally:
        running.done()


class _Running:
    """Tells the beacon (when a nanny watches) and the campaign page which key runs."""

    def __init__(self, plugin: PipelinePlugin, task: str, table: str, timeout: float | None) -> None:
        self.plugin, self.beacon, self.task, self.table, self.timeout = plugin, plugin.beacon, task, table, timeout
        self.name = table.rsplit(".", 1)[-1].strip('`"').lstrip("_#")

    def key(self, index: int, key: dict) -> None:
        self.plugin.now = {"table": self.name, "key": str(key)[:200], "since": time.time()}
        if self.beacon is not None:
            self.beacon.running(self.task, self.table, index, key, self.timeout)

    def done(self) -> None:
        self.plugin.now = None
        if self.beacon is not None:
            self.beacon.idle()


def _run_keys(
    plugin: PipelinePlugin,
    table: Any,
    keys: list[dict],
    make_kwargs: dict | None,
    version: str | None,
    running: _Running,
    tolerance: float,
    expected: float | None = None,
) -> list[dict[str, Any]]:
    outcomes = []
    for index, key in enumerate(keys):
        if plugin.stopping or plugin.past_deadline(expected):
            outcomes.append(_outcome(key, "requeue"))
            continue
        outcomes.append(_run_key(table, index, key, make_kwargs, version, running, tolerance))
    return outcomes


#: Times a key runs again at once when its database connection failed but reconnected
#: straight away (a statement the server drops the connection for would loop forever).
IMMEDIATE_RERUNS = 2


def _run_key(
    table: Any,
    index: int,
    key: dict,
    make_kwargs: dict | None,
    version: str | None,
    running: _Running,
    tolerance: float,
    *,
    make: Any = None,
    began: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One key's make(), run again after a database outage (uncharged: DataJoint's check
    skips it when its commit had gone through before the connection failed).  ``make`` and
    ``began``: the last part of a split make() and when its first began
    (:func:`djdask.djcompat.run_make`)."""
    reruns = 0
    store_since: float | None = None  # when the object store first failed this key
    while True:
        running.key(index, key)
        start = time.perf_counter()
        result = djcompat.run_make(table, key, make_kwargs=make_kwargs, version=version, make=make, began=began)
        status, message, error = result.status, result.error_message, result.error
        if status != "error":
            break
        # Whatever make() raised, ask the database whether it is there: a server that went
        # away shows itself in many guises (lost connection, "shutdown in progress", a
        # transaction DataJoint could not roll back).
        if reconnect(table.connection):
            if error is not None and is_connection_error(error) and reruns < IMMEDIATE_RERUNS:
                reruns += 1  # its session dropped while the server stayed up: once more
                continue
            if error is not None and is_store_unavailable(error):
                now = time.monotonic()
                store_since = now if store_since is None else store_since
                if now - store_since < tolerance:  # the store is away: wait for it, uncharged
                    running.done()
                    if store_since == now:
                        _tell_the_campaign(message, store=True)
                    time.sleep(store_backoff(reruns))
                    reruns += 1
                    continue
                message = f"object store unreachable for {now - store_since:.0f} s: {message}"
            elif error is not None and is_transient(error):
                status = "transient"
            break
        running.done()  # waiting for the database is no make(): no time limit runs
        _tell_the_campaign(message)
        if wait_for_database(table.connection, tolerance) is not None:
            reruns += 1
            continue
        status, message = "transient", f"database unreachable for {tolerance:.0f} s: {message}"
        break
    if status not in ("success", "skipped"):
        try:
            if table.connection.in_transaction:
                table.connection.cancel_transaction()  # the next key starts clean
        except Exception as err:  # the session is gone: the next key reconnects
            logger.debug("No rollback after %s: %s", key, err)
    # DataJoint's own figure where it stamped one on the row (_job_duration)
    if result.duration is not None:
        duration = result.duration
    else:  # a split make()'s earlier parts count too
        duration = time.perf_counter() - start + (began[1] if began is not None else 0.0)
    outcome = _outcome(key, status, duration, message, result.error_stack)
    outcome["memory"] = peak_memory()  # the worker's peak so far, for the campaign's accounting
    outcome["commit"] = result.commit
    return outcome


def _run_grouped(
    plugin: PipelinePlugin,
    table: Any,
    keys: list[dict],
    make_kwargs: dict | None,
    version: str | None,
    running: _Running,
    tolerance: float,
    expected: float | None,
    group: tuple[int, float],
) -> list[dict[str, Any]]:
    """Group commit: the keys of a batch in groups of up to ``group[0]`` keys (or
    ``group[1]`` seconds of make()), each group one transaction, one existence check and
    one commit.  A make() that raises rolls its group back; the group's keys up to it then
    run again one transaction each (:func:`_run_key`), so that only the culprit is an error
    and outages are waited out as usual.  Outcomes go back only when the batch ends, after
    every commit; a worker killed mid-group has committed nothing of that group."""
    size, window = group
    outcomes: list[dict[str, Any]] = []
    start = 0
    while start < len(keys):
        if plugin.stopping or plugin.past_deadline(expected):
            outcomes.extend(_outcome(key, "requeue") for key in keys[start:])
            break
        done = _run_group(
            plugin, table, keys[start : start + size], start, make_kwargs, version, running, expected, window
        )
        if done is None:  # the group could not begin (the connection failed): one key at a time
            done = [_run_key(table, start, keys[start], make_kwargs, version, running, tolerance)]
        elif any(o["status"] == "redo" for o in done):
            done = [
                _run_key(table, start + i, o["key"], make_kwargs, version, running, tolerance)
                if o["status"] == "redo"
                else o
                for i, o in enumerate(done)
            ]
        outcomes.extend(done)
        start += len(done)
    return outcomes


def _run_group(
    plugin: PipelinePlugin,
    table: Any,
    keys: list[dict],
    offset: int,
    make_kwargs: dict | None,
    version: str | None,
    running: _Running,
    expected: float | None,
    window: float,
) -> list[dict[str, Any]] | None:
    """One group's transaction.  Returns one outcome per key it took (a prefix of ``keys``):
    ``success``, ``skipped`` or ``redo`` (rolled back: to run again on its own); None when
    the transaction could not begin."""
    connection = table.connection
    try:
        connection.start_transaction()
        present = {_pk(table, key) for key in djcompat.existing_keys(table, keys)}
    except Exception as err:  # a lost connection: the per-key path waits it out
        logger.debug("Group transaction could not begin: %s", err)
        _roll_back(connection)
        return None
    outcomes: list[dict[str, Any]] = []
    made: list[tuple[dict, float, float]] = []
    maker = djcompat.GroupMaker(table, make_kwargs, version)
    began = time.monotonic()
    for index, key in enumerate(keys):
        if outcomes and (time.monotonic() - began > window or plugin.stopping or plugin.past_deadline(expected)):
            break
        if _pk(table, key) in present:
            outcomes.append(_outcome(key, "skipped"))
            continue
        running.key(offset + index, key)
        started, clock = time.time(), time.perf_counter()
        error = maker(key)
        if error is not None:  # roll back; the keys made so far and this one run again alone
            _roll_back(connection)
            return _redo([*outcomes, _outcome(key, "redo")])
        made.append((key, started, time.perf_counter() - clock))
        outcomes.append(_outcome(key, "success", made[-1][2]))
    try:
        maker.stamp(made)
        connection.commit_transaction()
    except Exception as err:  # committed or not: the per-key path finds out (a committed key is skipped)
        logger.warning("Group commit of %d key(s) failed (%s); running them one at a time", len(made), err)
        _roll_back(connection)
        return _redo(outcomes)
    memory = peak_memory()
    for outcome in outcomes:
        outcome["memory"] = memory
    return outcomes


def _redo(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A rolled-back group's outcomes: each key it made is to run again alone (``redo``);
    keys found already made stay ``skipped``."""
    return [o if o["status"] == "skipped" else _outcome(o["key"], "redo") for o in outcomes]


def _pk(table: Any, key: dict) -> tuple:
    return tuple(key.get(name) for name in table.primary_key)


def _roll_back(connection: Any) -> None:
    try:
        if connection.in_transaction:
            connection.cancel_transaction()
    except Exception as err:  # the session is gone, and its transaction with it
        logger.debug("No rollback: %s", err)


def _tell_the_campaign(message: str | None, *, store: bool = False) -> None:
    """Tell the campaign (an event on the scheduler) that this worker waits for the database
    (it then says so, once, and re-stamps its reservations when the database is back) or
    for an object store."""
    try:
        get_worker().log_event(OUTAGE_TOPIC, {"store" if store else "error": (message or "")[:300]})
    except Exception as err:  # no scheduler either: nothing to tell
        logger.debug("Could not report the outage: %s", err)


def _outcome(
    key: dict, status: str, duration: float = 0.0, message: str | None = None, stack: str | None = None
) -> dict[str, Any]:
    return {"key": key, "status": status, "duration": duration, "error_message": message, "error_stack": stack}
