"""Riding out a database outage, on the campaign's side and on a worker's.

A database that restarts, fails over or drops off the network for a while is
normal in a days-long campaign.  A lost or refused connection is therefore an
outage to wait out, not an error:

- The campaign runs every statement of its loop (claim, complete, fail,
  enqueue, count, release) through :meth:`Outage.call`.  On a connection error
  it says so once ("database unreachable since 12:03:10, retrying"), on the
  terminal and the campaign page, reconnects with capped, jittered backoff,
  runs the statement again (each is idempotent) and, once the database is
  back, calls ``on_return`` (the campaign then re-stamps its reservations, so
  that no orphan check takes them, and gives back keys a claim cut short had
  reserved).  Past ``djdask.campaign.outage-tolerance`` it raises
  :class:`~djdask.errors.DatabaseOutageError`: the campaign stops, exit 2.
- A worker whose ``make()`` lost its connection asks :func:`wait_for_database`
  whether the database is gone: if so it waits for it (up to the same
  tolerance) and runs the key again, uncharged, where DataJoint's check skips
  it if its commit had gone through; if not, the failure was the ``make()``'s
  own, an attempt as before.
- A key whose object store cannot be reached (:func:`is_store_unavailable`:
  connection refused or reset, timeouts, S3 503 SlowDown or 500) is tried again
  by its worker with the same backoff, uncharged; only a store that stays away
  past the tolerance fails the key, with the store named in its error row.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from djdask.djcompat import live_connection_id
from djdask.errors import DatabaseOutageError, StoreUnavailableError

__all__ = [
    "MYSQL_CONNECTION_CODES",
    "OUTAGE_TOPIC",
    "Outage",
    "is_connection_error",
    "is_store_unavailable",
    "is_transient",
    "reconnect",
    "store_backoff",
    "wait_for_database",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The scheduler event topic on which workers say they wait for the database.
OUTAGE_TOPIC = "djdask-database-outage"

#: Backoff between reconnection attempts: first wait, growth, cap (seconds).
FIRST_WAIT, GROWTH, MOST_WAIT = 0.5, 2.0, 5.0

#: pymysql's codes of a lost or refused connection: can't connect (2003), server gone away
#: (2006), lost during a query (2013), lost at a system error (2055), server shutting down (1053).
MYSQL_CONNECTION_CODES = frozenset({2003, 2006, 2013, 2055, 1053})


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` says the *database* connection is lost or refused (not that a
    statement was wrong, nor that some other service a ``make()`` uses went away).
    Follows the chain of causes: DataJoint wraps driver errors."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if _is_connection_error(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _is_connection_error(error: BaseException) -> bool:
    from datajoint.errors import LostConnectionError  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    if isinstance(error, LostConnectionError):
        return True
    try:
        import pymysql  # lazy: a driver, when an error is to be classified (a campaign uses one of two)

        if isinstance(error, pymysql.err.InterfaceError):  # a closed connection used again
            return True
        if isinstance(error, pymysql.err.OperationalError) and error.args and error.args[0] in MYSQL_CONNECTION_CODES:
            return True
    except ImportError:  # pragma: no cover - pymysql is a dependency
        pass
    try:
        import psycopg2  # lazy: a driver, when an error is to be classified (a campaign uses one of two)

        if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return True
        # libpq's own failure with no SQLSTATE: the server sent no answer.  An idle session whose
        # server was killed reads "server closed the connection unexpectedly" as a bare
        # DatabaseError (every error a server sends has a code, and a subclass of its own).
        if type(error) is psycopg2.DatabaseError and getattr(error, "pgcode", None) is None:
            return True
    except ImportError:  # pragma: no cover - psycopg2 comes with datajoint[postgres]
        pass
    return False


def is_transient(error: BaseException) -> bool:
    """Whether a ``make()``'s failure is worth another attempt: the database connection was lost
    or refused (:func:`is_connection_error`, the one classification the controller and the
    workers share), or another connection of its own was lost or timed out.  Anything else is
    the user's error, recorded at once."""
    return is_connection_error(error) or isinstance(error, (ConnectionError, TimeoutError))


#: Network failures of a socket (not a full disk or a missing file): errno values.
_NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EPIPE,
}

#: S3 answers that mean "not now": throttling and server-side failures.
_S3_RETRY_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500", "502", "504"}


def is_store_unavailable(error: BaseException, *, from_store: bool = False) -> bool:
    """Whether ``error`` says an object store could not be reached, or asked to be asked
    again later (S3 503 SlowDown, 500): connection refused or reset, timeouts, however a
    codec or s3fs wraps them.  A refusal (wrong credentials, no such bucket) is not.

    A bare network ``OSError`` counts only ``from_store`` (raised by a store's client, as
    the codec knows): from anywhere else in a ``make()`` it names no store.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, StoreUnavailableError) or _is_store_unavailable(error, from_store):
            return True
        error = error.__cause__ or error.__context__
    return False


def _is_store_unavailable(error: BaseException, from_store: bool) -> bool:
    if from_store and isinstance(error, OSError) and error.errno in _NETWORK_ERRNOS:
        return True
    if from_store and isinstance(error, TimeoutError):  # the store took no answer in time
        return True
    module = type(error).__module__ or ""
    name = type(error).__name__
    if module.startswith(("botocore", "aiobotocore")):
        if name in ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError"):
            return True
        response = getattr(error, "response", None) or {}
        code = str((response.get("Error") or {}).get("Code", ""))
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        return code in _S3_RETRY_CODES or status >= 500
    if module.startswith("aiohttp"):
        return name in ("ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ServerTimeoutError")
    return False


def _backoff(attempt: int) -> float:
    wait = min(MOST_WAIT, FIRST_WAIT * GROWTH**attempt)
    return wait * random.uniform(0.8, 1.2)


def store_backoff(attempt: int) -> float:
    """Seconds before trying a key again whose object store was away (capped, jittered)."""
    return _backoff(attempt)


def reconnect(connection: Any) -> bool:
    """Make ``connection`` work again if the database lets it; True when it works now.

    Asks the server (DataJoint's ``is_connected`` does not notice a dead session), opens
    a new session if needed, and clears a transaction the old session took with it.
    """
    try:
        connection.query("SELECT 1", reconnect=False).fetchall()
        return True
    except Exception as err:
        logger.debug("Database session lost: %s", err)
    try:
        connection.connect()
        connection.cancel_transaction()  # a ROLLBACK on the new session; clears DataJoint's flag
        return True
    except Exception as err:
        logger.debug("Database still unreachable: %s", err)
        return False


def _server(connection: Any) -> str:
    info = getattr(connection, "conn_info", {}) or {}
    return f"{info.get('user', '?')}@{info.get('host', '?')}:{info.get('port', '?')}"


class Outage:
    """The campaign's side: statements run through :meth:`call` wait out an outage.

    Parameters
    ----------
    connection : datajoint.Connection
        The campaign's connection.
    tolerance : float
        Seconds an outage may last before the campaign gives up (``inf``: never).
    say_after : float, optional
        With no limit: after this many seconds of an outage, say once that the campaign
        still waits for it (a following campaign passes its ``outage-tolerance``).
    on_long : callable, optional
        Called with those words too (a following campaign notifies them).
    stopping : callable, optional
        True when the campaign is asked to stop: waiting ends at once.
    on_change : callable, optional
        Called with a notice while the database is unreachable, and None when it is back.
    on_return : callable, optional
        Called once the database is back, before the statement runs again.
    """

    def __init__(
        self,
        connection: Any,
        *,
        tolerance: float,
        say_after: float | None = None,
        on_long: Callable[[str], None] = lambda text: None,
        stopping: Callable[[], bool] = lambda: False,
        on_change: Callable[[str | None], None] = lambda notice: None,
        on_return: Callable[[], None] = lambda: None,
    ) -> None:
        self.connection = connection
        self.tolerance = tolerance
        self.say_after = say_after
        self.on_long = on_long
        self.stopping = stopping
        self.on_change = on_change
        self.on_return = on_return
        self.outages = 0  # how many the campaign rode out
        self.longest = 0.0  # seconds, the longest of them
        self._reported: str | None = None  # a worker's error, when one said it waits for the database
        self._store: str | None = None  # a worker's error, when one said it waits for an object store
        self._store_said = -1e9  # when the campaign last said so

    def subscribe(self, client: Any) -> None:
        """Hear from ``client``'s workers when they wait for the database."""
        client.subscribe_topic(OUTAGE_TOPIC, self._on_report)

    def _on_report(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        if msg.get("store"):
            self._store = str(msg["store"])
        else:
            self._reported = str(msg.get("error") or "a worker lost its database connection")

    def check(self) -> None:
        """When a worker has said it waits for the database, see for ourselves: wait the
        outage out here too (saying so once), and re-stamp the reservations after it.  When
        one waits for an object store, say so (once a minute at most)."""
        store, self._store = self._store, None
        if store is not None and time.monotonic() - self._store_said > 60:
            self._store_said = time.monotonic()
            logger.warning(
                "Object store unreachable; keys that write to it wait for it, up to %.0f s (%s)",
                self.tolerance,
                store,
            )
        reported, self._reported = self._reported, None
        if reported is None:
            return
        try:
            before = live_connection_id(self.connection)
        except Exception:
            before = None
        if not reconnect(self.connection):
            self.wait(ConnectionError(reported))
        elif live_connection_id(self.connection) != before:  # a new session: stamp it on our keys
            self.on_return()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, run again after an outage as often as needed, up to the tolerance."""
        while True:
            try:
                return fn()
            except Exception as err:
                if not is_connection_error(err):
                    raise
                self.wait(err)

    def wait(self, error: BaseException) -> None:
        """The database connection failed with ``error``: wait until it works again."""
        since, began = time.monotonic(), datetime.now().strftime("%H:%M:%S")
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        notice = f"Database {_server(self.connection)} unreachable since {began}, retrying ({reason})"
        if self.tolerance == float("inf"):
            logger.warning("%s; the campaign waits for it without a limit.", notice)
        else:
            logger.warning("%s; the campaign waits up to %.0f s for it.", notice, self.tolerance)
        self.on_change(notice)
        attempt = 0
        said = self.say_after is None
        while not reconnect(self.connection):
            waited = time.monotonic() - since
            if not said and waited > self.say_after:
                said = True
                long = (
                    f"The database {_server(self.connection)} has been unreachable for {waited:.0f} s (since "
                    f"{began}), longer than djdask.campaign.outage-tolerance ({self.say_after:.0f} s); a following "
                    "campaign waits for it without a limit (stop it with Ctrl-C, SIGTERM or `djdask cancel`)."
                )
                logger.warning("%s", long)
                self.on_long(long)
            if self.stopping() or waited > self.tolerance:
                raise DatabaseOutageError(
                    f"The database {_server(self.connection)} has been unreachable since {began} "
                    f"({waited:.0f} s; last error: {reason}). The campaign stopped"
                    + (
                        " as asked"
                        if self.stopping()
                        else f" after djdask.campaign.outage-tolerance ({self.tolerance:.0f} s)"
                    )
                    + ". Keys it held stay reserved until an orphan check frees them (the next campaign does it at "
                    "start, or `djdask release MODULE`); keys already committed are kept. Once the database is back, "
                    "run the same command again: it makes only what is missing. To wait longer next time, raise "
                    "djdask.campaign.outage-tolerance."
                )
            time.sleep(_backoff(attempt))
            attempt += 1
        waited = time.monotonic() - since
        self.outages += 1
        self.longest = max(self.longest, waited)
        logger.warning("Database %s reachable again after %.1f s; resuming.", _server(self.connection), waited)
        self.on_change(None)
        self.on_return()


def wait_for_database(connection: Any, tolerance: float) -> float | None:
    """A worker's side: a ``make()`` lost its database connection; wait until it works again.

    Returns the seconds waited (0.0 when it reconnected at once), or None when
    the database stayed unreachable for ``tolerance`` seconds.
    """
    if reconnect(connection):
        return 0.0
    since, attempt = time.monotonic(), 0
    logger.info("Database %s unreachable; this worker waits for it.", _server(connection))
    while time.monotonic() - since < tolerance:
        time.sleep(_backoff(attempt))
        attempt += 1
        if reconnect(connection):
            waited = time.monotonic() - since
            logger.info("Database reachable again after %.1f s.", waited)
            return waited
    return None
