"""Which failures of a make() are worth another attempt: lost connections and timeouts, by
each driver's own error codes; everything else is the user's error, recorded at once."""

from __future__ import annotations

import psycopg2
import pymysql
import pytest
from datajoint.errors import DataJointError, DuplicateError, LostConnectionError

from djdask.executor import is_transient

TRANSIENT = [
    pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'"),
    pymysql.err.OperationalError(2006, "MySQL server has gone away"),
    pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
    psycopg2.OperationalError("server closed the connection unexpectedly"),
    psycopg2.InterfaceError("connection already closed"),
    LostConnectionError("Server connection lost"),
    ConnectionResetError(104, "Connection reset by peer"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError("timed out"),
]

PERMANENT = [
    pymysql.err.OperationalError(1045, "Access denied for user"),
    pymysql.err.OperationalError(1054, "Unknown column 'x' in 'field list'"),
    pymysql.err.IntegrityError(1062, "Duplicate entry"),
    psycopg2.errors.UndefinedColumn("column x does not exist"),
    DuplicateError("Duplicate entry"),
    DataJointError("Referential integrity failed! The `make_fetch` data has changed"),
    ValueError("bad value"),
    MemoryError(),
    ZeroDivisionError("division by zero"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: f"{type(e).__name__}-{e.args[0] if e.args else ''}")
def test_lost_connections_and_timeouts_are_retried(error):
    """A lost connection is the infrastructure's fault: the key must be retried, not made an
    error row that a user has to retry by hand."""
    assert is_transient(error)


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: f"{type(e).__name__}-{e.args[0] if e.args else ''}")
def test_everything_else_is_recorded_at_once(error):
    """A make() that raises for its own reasons would fail again: retrying it only delays the
    error row (and repeats side effects)."""
    assert not is_transient(error)
