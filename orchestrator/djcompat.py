"""The private DataJoint API djdask relies on, in one place.

DataJoint 2.x has no public call that runs ``make()`` for one key inside its
transaction without also reserving through the jobs table (``populate`` with
``reserve_jobs=True`` installs a SIGTERM handler, which fails off the main
thread, and reserves key by key).  djdask reserves keys itself, in batches, so
workers run each key through ``AutoPopulate._populate1`` in direct mode: the
same code path ``populate()`` uses, with its transaction, its "already
populated" check, tripartite ``make`` support and job metadata.

``tests/unit/test_djcompat.py`` checks these entry points against the
installed DataJoint and fails loudly when they change.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from typing import Any

__all__ = [
    "EXPECTED_POPULATE1_PARAMETERS",
    "check_compatibility",
    "clone_connection",
    "job_version",
    "live_connection_id",
    "quiet_make_errors",
    "run_make",
]

EXPECTED_POPULATE1_PARAMETERS = ("key", "jobs", "suppress_errors", "return_exception_objects", "make_kwargs")


def check_compatibility() -> None:
    """Raise RuntimeError when the installed DataJoint lacks what djdask uses."""
    from datajoint.autopopulate import AutoPopulate
    from datajoint.jobs import _get_job_version  # noqa: F401  (presence is the check)

    from datajoint.connection import Connection

    params = tuple(inspect.signature(AutoPopulate._populate1).parameters)[1:]
    if params != EXPECTED_POPULATE1_PARAMETERS:
        raise RuntimeError(
            f"DataJoint's AutoPopulate._populate1 has parameters {params}, djdask expects "
            f"{EXPECTED_POPULATE1_PARAMETERS}. Install a DataJoint version djdask supports."
        )
    conn_params = set(inspect.signature(Connection.__init__).parameters)
    missing = {"host", "user", "password", "port", "use_tls", "database_name", "backend", "config_override"} - conn_params
    if missing:
        raise RuntimeError(
            f"DataJoint's Connection() lacks the parameters {sorted(missing)} that "
            "clone_connection() passes. Install a DataJoint version djdask supports."
        )


def run_make(table: Any, key: dict) -> tuple[str, str | None, str | None, BaseException | None]:
    """Run ``make(key)`` of ``table`` in its own transaction.

    Returns
    -------
    status : str
        ``"success"`` when make() committed rows, ``"skipped"`` when the key was
        already in the table, ``"error"`` when make() raised.
    error_message, error_stack : str or None
        For an error, the message and traceback in DataJoint's own format
        (``ExceptionClass: message``, as ``populate`` writes them).
    error : BaseException or None
        The exception itself, for the caller to classify.
    """
    result = table._populate1(key, None, suppress_errors=True, return_exception_objects=True, make_kwargs=None)
    if result is True:
        return "success", None, None, None
    if result is False:
        return "skipped", None, None, None
    _, error = result
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return "error", message, stack, error


class _MakeErrorFilter(logging.Filter):
    """Drops the record ``_populate1`` logs for a failing ``make()`` (its message, no key)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.funcName == "_populate1")


def quiet_make_errors() -> None:
    """Keep DataJoint from logging each failing ``make()`` on the worker.

    With ``suppress_errors=True`` DataJoint's ``_populate1`` logs the message of a
    failing ``make()`` at ERROR, without the key; the campaign reports the same
    error with its key, and writes it to the jobs table, so the terminal showed
    every error twice.  Other DataJoint log records pass.
    """
    dj_logger = logging.getLogger("datajoint")
    if not any(isinstance(f, _MakeErrorFilter) for f in dj_logger.filters):
        dj_logger.addFilter(_MakeErrorFilter())


def job_version(connection: Any) -> str:
    """The code version DataJoint stamps on reserved jobs (``jobs.version_method``)."""
    from datajoint.jobs import _get_job_version

    return _get_job_version(connection._config)


def live_connection_id(connection: Any) -> int:
    """The server-side id of ``connection``'s current session, read from the driver.

    DataJoint sets ``Connection.connection_id`` once, when the connection is
    first made, and does not update it when it reconnects; reservations must
    carry the id of the session that is really open (MySQL ``CONNECTION_ID()``,
    PostgreSQL ``pg_backend_pid()``).  Both drivers keep it from the handshake,
    so reading it costs no query and is safe from another thread.
    """
    raw = connection._conn
    if hasattr(raw, "get_backend_pid"):  # psycopg2
        return int(raw.get_backend_pid())
    return int(raw.thread_id())  # pymysql


def clone_connection(connection: Any) -> Any:
    """A new DataJoint connection to the same server with the same settings.

    Used by the lease heartbeat, which runs in its own thread and so needs its
    own session.  The settings, password included, are taken from the existing
    connection object and never written anywhere.
    """
    from datajoint.connection import Connection

    info = connection.conn_info
    return Connection(
        info["host"],
        info["user"],
        info["passwd"],
        info["port"],
        info.get("ssl_input"),
        database_name=info.get("database_name"),
        backend=connection.adapter.backend,
        config_override=connection._config,
    )
