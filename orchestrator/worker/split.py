"""A tripartite make() split across the network boundary: the tasks of one batch.

A table whose keys go to a pool without database access (a profile with
``database: none``) runs each batch as three Dask tasks:

1. :func:`fetch_batch`, on a database-side worker: ``make_fetch`` for each key, the
   hash of what it returned (as DataJoint takes it), and that data made concrete (lazy
   arrays of ``<xarray@>`` inputs read here, where the store's credentials are);
2. :func:`compute_batch`, on a compute worker, which Dask sends the fetched data to from
   the database side, worker to worker: ``make_compute`` for each key, with no
   connection and no credential;
3. :func:`insert_batch`, on a database-side worker, which Dask sends the results to (not
   the fetched data: once the compute worker has it, the database side holds it no more):
   each key through DataJoint's own ``_populate1`` (transaction, "already made" check,
   ``make_fetch`` again with its hash compared, ``make_insert``, commit, job metadata and
   provenance), one outcome per key as :func:`djdask.worker.executor.run_batch` returns.

A key that fails in the fetch or the compute is an error outcome with its traceback
(an error row), as in ``populate()``.  Data larger than ``djdask.campaign.max-transfer``
is not sent: the key is an error that names the table, the key and the size.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Iterator
from typing import Any

import dask
from dask.sizeof import sizeof
from dask.utils import format_bytes
from distributed import get_worker

from djdask import djcompat
from djdask.db.outage import reconnect, wait_for_database
from djdask.worker import randomness
from djdask.worker.executor import PLUGIN_NAME, _outcome, _run_key, _Running, peak_memory

__all__ = ["COMPUTE_RESOURCE", "DATABASE_RESOURCE", "compute_batch", "fetch_batch", "insert_batch"]

logger = logging.getLogger(__name__)

#: The worker resource of the database-side workers (they hold the connections).
DATABASE_RESOURCE = "djdask-database"
#: The worker resource of the workers of a pool without database access.
COMPUTE_RESOURCE = "djdask-compute"


def _error(key: dict, part: str, error: BaseException, duration: float = 0.0) -> dict[str, Any]:
    """An error outcome in DataJoint's format, the traceback naming the part that raised."""
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return _outcome(key, "error", duration, message, f"In {part}:\n{stack}")


def _too_large(cls: type, key: dict, what: str, size: int, limit: int) -> dict[str, Any]:
    message = (
        f"{what} of table {cls.__name__} for key {key} is {format_bytes(size)}, more than "
        f"djdask.campaign.max-transfer ({format_bytes(limit)}): it is not sent across. Make less data "
        "cross (fetch or return less), raise djdask.campaign.max-transfer, or route the table to a pool "
        "with database access (djdask.campaign.pools)."
    )
    return _outcome(key, "error", 0.0, f"DjdaskError: {message}", message)


def fetch_batch(
    table_name: str, keys: list[dict], make_kwargs: dict | None, max_transfer: int, tolerance: float = 600.0
) -> list[dict[str, Any]]:
    """``make_fetch`` of each key, on a database-side worker: per key either ``{"key",
    "fetched", "hash", "began", "seconds"}`` or ``{"key", "outcome"}`` (an error)."""
    plugin = get_worker().plugins[PLUGIN_NAME]
    table = plugin.tables[table_name]()
    results = []
    with dask.config.set(scheduler="synchronous"), randomness.owned_by_this_thread():
        for key in keys:
            results.append(_fetch(table, key, make_kwargs, max_transfer, tolerance))
    return results


def _fetch(table: Any, key: dict, make_kwargs: dict | None, max_transfer: int, tolerance: float) -> dict[str, Any]:
    began, clock = time.time(), time.perf_counter()
    for attempt in range(2):
        try:
            fetched = table.make_fetch(dict(key), **(make_kwargs or {}))
            digest = djcompat.fetch_hash(fetched)
            (concrete,) = dask.compute(fetched)  # lazy arrays read here, not on the compute node
            break
        except Exception as error:
            lost = attempt == 0 and not reconnect(table.connection)
            if lost and wait_for_database(table.connection, tolerance) is not None:
                continue  # the database was away and is back: fetch again
            return {"key": key, "outcome": _error(key, "make_fetch", error, time.perf_counter() - clock)}
    size = sizeof(concrete)
    if size > max_transfer:
        return {"key": key, "outcome": _too_large(type(table), key, "make_fetch's data", size, max_transfer)}
    return {"key": key, "fetched": concrete, "hash": digest, "began": began, "seconds": time.perf_counter() - clock}


@contextlib.contextmanager
def _running(table_name: str) -> Iterator[tuple[Any, _Running]]:
    """A batch's task on this worker: the pipeline plugin, and what runs now (for the page and
    the nanny's watchdog); lazy arrays computed in this thread, its random generators its own."""
    worker = get_worker()
    plugin = worker.plugins[PLUGIN_NAME]
    running = _Running(plugin, str(worker.get_current_task()), table_name, None)
    try:
        with dask.config.set(scheduler="synchronous"), randomness.owned_by_this_thread():
            yield plugin, running
    finally:
        running.done()


def compute_batch(table_name: str, fetched: list[dict[str, Any]], max_transfer: int) -> list[dict[str, Any]]:
    """``make_compute`` of each fetched key, on a compute worker (no connection): per key
    either ``{"key", "computed", "hash", "began", "seconds"}`` (the hash of the data it
    computed on, when its fetch began, the seconds of fetch and compute) or ``{"key", "outcome"}``."""
    results = []
    with _running(table_name) as (plugin, running):
        cls = plugin.table_class(table_name)
        instance = cls()  # offline: an unbound class, whose make_compute needs no connection
        for index, item in enumerate(fetched):
            key = item["key"]
            if "outcome" in item:
                results.append({"key": key, "outcome": item["outcome"]})
                continue
            running.key(index, key)
            clock = time.perf_counter()
            try:
                computed = instance.make_compute(dict(key), *item["fetched"])
            except Exception as error:
                results.append({"key": key, "outcome": _error(key, "make_compute", error, time.perf_counter() - clock)})
                continue
            seconds = time.perf_counter() - clock
            size = sizeof(computed)
            if size > max_transfer:
                results.append(
                    {
                        "key": key,
                        "outcome": _too_large(cls, key, "make_compute's result", size, max_transfer),
                    }
                )
                continue
            # With the hash of the data it computed on, and when its fetch began and how long it
            # took: the insert needs no more of the fetch, which the database side then drops.
            results.append(
                {
                    "key": key,
                    "computed": computed,
                    "hash": item["hash"],
                    "began": item["began"],
                    "seconds": item["seconds"] + seconds,
                }
            )
    return results


def insert_batch(
    table_name: str,
    computed: list[dict[str, Any]],
    make_kwargs: dict | None = None,
    version: str | None = None,
    tolerance: float = 600.0,
) -> list[dict[str, Any]]:
    """Finish each key on a database-side worker through DataJoint's ``_populate1``; one
    outcome per key, as :func:`~djdask.worker.executor.run_batch` returns them."""
    outcomes = []
    with _running(table_name) as (plugin, running):
        table = plugin.tables[table_name]()
        for index, result in enumerate(computed):
            key = result["key"]
            if "outcome" in result:
                outcomes.append(result["outcome"])
                continue
            make = djcompat.split_insert(table, result["computed"], result["hash"])
            began = (result["began"], result["seconds"])
            outcomes.append(
                _run_key(table, index, key, make_kwargs, version, running, tolerance, make=make, began=began)
            )
    memory = peak_memory()
    for outcome in outcomes:
        outcome.setdefault("memory", memory)
    return outcomes
