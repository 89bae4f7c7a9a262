"""What runs on a Dask worker: the pipeline, one connection, and batches of keys.

:class:`PipelinePlugin` imports the pipeline module once per worker process and
opens that process's DataJoint connection from the worker's own DataJoint
configuration (``datajoint.json``, ``DJ_*``): no credential travels through
Dask.  :func:`run_batch` is the task: it runs ``make()`` for each key of a
batch, each in its own transaction, and returns one outcome per key.  One
``make()`` at a time per process: DataJoint allows inserts through a class-level
flag and one connection cannot nest transactions, so workers have one thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from distributed import WorkerPlugin, get_worker

from . import djcompat

__all__ = ["PLUGIN_NAME", "PipelinePlugin", "is_transient", "run_batch"]

PLUGIN_NAME = "djdask-pipeline"

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

    def setup(self, worker: Any) -> None:
        from .database import import_datajoint
        from .loader import load_pipeline

        dj = import_datajoint()
        logging.getLogger("datajoint").setLevel(logging.WARNING)
        self.tables = load_pipeline(self.module_name).auto_populated()
        dj.conn()  # fail here, at worker start, rather than in the first task

    def teardown(self, worker: Any) -> None:
        from .database import import_datajoint

        dj = import_datajoint()
        try:
            dj.conn().close()
        except Exception:  # closing a connection that is already gone
            pass


def is_transient(error: BaseException) -> bool:
    """Whether a failure is worth retrying: the connection to the database or to object
    storage was lost or timed out.  Anything else raised by ``make()`` is the user's
    error and is recorded at once."""
    from datajoint.errors import LostConnectionError

    if isinstance(error, (LostConnectionError, ConnectionError, TimeoutError)):
        return True
    try:
        import pymysql

        if isinstance(error, pymysql.err.OperationalError) and error.args and error.args[0] in (2003, 2006, 2013):
            return True
    except ImportError:  # pragma: no cover - pymysql is a dependency
        pass
    try:
        import psycopg2

        if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return True
    except ImportError:  # pragma: no cover - psycopg2 comes with datajoint[postgres]
        pass
    return False


def _reconnect_if_lost(connection: Any) -> None:
    """Re-open the worker's session when it is gone (DataJoint does not on PostgreSQL)."""
    if not connection.is_connected:
        connection.connect()


def run_batch(table_name: str, keys: list[dict]) -> list[dict[str, Any]]:
    """Run ``make()`` for each key of ``keys`` in ``table_name``; one outcome per key.

    Each outcome is a dict with ``key``, ``status`` (success, skipped, error or
    transient), ``duration`` in seconds, ``error_message`` and ``error_stack``.
    Failures are outcomes, not exceptions: one bad key does not fail its batch.
    """
    plugin = get_worker().plugins[PLUGIN_NAME]
    table = plugin.tables[table_name]()
    outcomes = []
    lost = False
    for key in keys:
        if lost:
            _reconnect_if_lost(table.connection)
        start = time.perf_counter()
        status, message, stack, error = djcompat.run_make(table, key)
        if status == "error" and error is not None and is_transient(error):
            status, lost = "transient", True
        outcomes.append(
            {
                "key": key,
                "status": status,
                "duration": time.perf_counter() - start,
                "error_message": message,
                "error_stack": stack,
            }
        )
    return outcomes
