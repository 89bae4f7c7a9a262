"""Which failures of a make() are worth another attempt: lost connections and timeouts, by
each driver's own error codes; everything else is the user's error, recorded at once."""

from __future__ import annotations

import psycopg2
import pymysql
import pytest
from datajoint.errors import DataJointError, DuplicateError, LostConnectionError

from djdask.db.outage import MYSQL_CONNECTION_CODES, is_connection_error, is_transient

TRANSIENT = [
    pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1'"),
    pymysql.err.OperationalError(2006, "MySQL server has gone away"),
    pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
    psycopg2.OperationalError("server closed the connection unexpectedly"),
    psycopg2.InterfaceError("connection already closed"),
    psycopg2.DatabaseError("server closed the connection unexpectedly"),  # an idle session's server killed
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


#: Every pymysql code of a lost connection, and a closed connection used again: the one list the
#: controller (outages) and the workers (a make()'s attempts) share.
DATABASE_LOST = [pymysql.err.OperationalError(code, "lost") for code in sorted(MYSQL_CONNECTION_CODES)] + [
    pymysql.err.InterfaceError(0, ""),
]


@pytest.mark.parametrize("error", DATABASE_LOST, ids=lambda e: f"{type(e).__name__}-{e.args[0] if e.args else ''}")
def test_one_classification_of_a_lost_database_for_controller_and_workers(error):
    """The controller waits out an outage on exactly the errors a worker retries a key for: two
    lists drifted apart once (the workers missed 2055, 1053 and a closed connection)."""
    assert is_connection_error(error) and is_transient(error)
    assert is_transient(_wrapped(error, DataJointError("while inserting")))


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


def _wrapped(cause: BaseException, outer: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as err:
        return err


def _client_error(code: str, status: int) -> BaseException:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Put"
    )


def test_database_connection_errors_are_told_from_other_services():
    """An outage is waited out only when the *database* went away: a make()'s own lost
    connection to some archive (a bare ConnectionResetError) stays an attempt."""
    for error in TRANSIENT[:6]:
        assert is_connection_error(error), error
        assert is_connection_error(_wrapped(error, DataJointError("while inserting"))), error
    assert is_connection_error(pymysql.err.InterfaceError(0, ""))
    for error in [ConnectionResetError(104, "archive reset"), TimeoutError("slow"), *PERMANENT]:
        assert not is_connection_error(error), error


def test_an_unreachable_or_throttling_store_is_waited_for_however_it_is_wrapped():
    """Connection refused, S3 503 SlowDown or 500, an endpoint that does not answer: worth
    waiting for, even inside the codec's DataJointError; wrong credentials or a missing
    bucket are not (waiting would not help), nor is a full local disk."""
    import errno

    from botocore.exceptions import EndpointConnectionError

    from djdask.db.outage import is_store_unavailable
    from djdask.errors import StoreUnavailableError

    waited = [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
        _client_error("SlowDown", 503),
        _client_error("InternalError", 500),
        _wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), StoreUnavailableError("could not write")),
        _wrapped(EndpointConnectionError(endpoint_url="http://s3"), DataJointError("could not write s3://b/x")),
        StoreUnavailableError("could not write"),
    ]
    refused = [
        _client_error("InvalidAccessKeyId", 403),
        _client_error("NoSuchBucket", 404),
        OSError(errno.ENOSPC, "No space left on device"),
        FileNotFoundError(errno.ENOENT, "missing"),
        DataJointError("could not write: AccessDenied"),
    ]
    for error in waited:
        assert is_store_unavailable(error), error
    for error in refused:
        assert not is_store_unavailable(error), error
        assert not is_store_unavailable(error, from_store=True), error
    # A network error inside a make() names no store (an archive, a web service): an attempt.
    assert not is_store_unavailable(ConnectionResetError(errno.ECONNRESET, "archive reset"))
    assert is_store_unavailable(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), from_store=True)
