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

import contextlib
import datetime
import inspect
import logging
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from djdask.errors import DataJointCompatibilityError

__all__ = [
    "EXPECTED_POPULATE1_PARAMETERS",
    "check_compatibility",
    "SCHEMA_CODEC_METHODS",
    "clone_connection",
    "dependencies_loaded_once",
    "encode_error_stack",
    "jobs_settings",
    "store_full_path",
    "fresh_config",
    "thread_safe_mode",
    "MakeResult",
    "current_job_version",
    "hidden_table",
    "job_version",
    "live_connection_id",
    "quiet_make_errors",
    "run_make",
    "GROUP_COMMIT_ATTRIBUTES",
    "existing_keys",
    "is_tripartite",
    "GroupMaker",
    "jobs_declaration_error",
    "CHANGED_INPUTS",
    "TRIPARTITE",
    "is_splittable",
    "fetch_hash",
    "split_insert",
    "without_database",
]

EXPECTED_POPULATE1_PARAMETERS = ("key", "jobs", "suppress_errors", "return_exception_objects", "make_kwargs")


def _incompatible(message: str) -> DataJointCompatibilityError:
    import datajoint  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    return DataJointCompatibilityError(
        f"{message} (DataJoint {getattr(datajoint, '__version__', '?')} is installed). Install a DataJoint "
        "version djdask supports: pip install 'datajoint>=2.3,<2.4'."
    )


@contextlib.contextmanager
def dependencies_loaded_once(connection: Any) -> Iterator[None]:
    """Within the block, DataJoint's dependency graph is read from the server once.

    DataJoint reloads the whole graph (every foreign key of every activated schema)
    at each ``Job(table)`` (``Job._get_fk_derived_pk_attrs`` calls
    ``dependencies.load()``, which forces a reload by default): for a pipeline of
    200 tables, ``djdask status`` read it 1,200 times (16 s of its 20).  Nothing
    declares tables meanwhile, so the block loads it once and makes the later loads
    reuse it.  (An instance attribute shadows the method; removed at the end.)"""
    deps = connection.dependencies
    deps.load()
    deps.load = lambda force=True, schema_names=None: None
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError):
            del deps.load


def check_compatibility() -> None:
    """Check every private DataJoint name djdask uses; raise
    :class:`~djdask.errors.DataJointCompatibilityError` naming the first one missing
    or changed."""
    # lazy: DataJoint (1 s; warns unless import_datajoint loads it)
    import datajoint.codecs
    import datajoint.instance
    import datajoint.jobs
    import datajoint.provenance
    import datajoint.storage
    from datajoint.autopopulate import AutoPopulate
    from datajoint.builtin_codecs.schema import SchemaCodec
    from datajoint.connection import Connection
    from datajoint.dependencies import Dependencies

    load = inspect.signature(Dependencies.load).parameters
    if list(load)[:3] != ["self", "force", "schema_names"]:
        raise _incompatible(
            "DataJoint's Dependencies.load(force, schema_names) changed; dependencies_loaded_once mirrors it"
        )
    for owner, name in (
        (datajoint.instance, "_create_config"),
        (datajoint.instance, "_load_thread_safe"),
        (datajoint.jobs, "_get_job_version"),
        (datajoint.storage.StorageBackend, "_full_path"),
        (AutoPopulate, "_has_job_metadata_attrs"),
        (AutoPopulate, "_update_job_metadata"),
        *((AutoPopulate, name) for name in GROUP_COMMIT_ATTRIBUTES),
        (datajoint.provenance, "set_ingesting"),
        (datajoint.provenance, "reset_ingesting"),
    ):
        if not hasattr(owner, name):
            raise _incompatible(f"DataJoint's {owner.__name__}.{name} is gone")
    populate1 = inspect.getsource(AutoPopulate._populate1)
    steps = (CHANGED_INPUTS, "ignore_iterable_order=False", "self.make_compute(")  # split_insert mirrors them
    if not all(s in populate1 + inspect.getsource(AutoPopulate.make) for s in steps):
        raise _incompatible("DataJoint's tripartite make() changed: split_insert mirrors its hash and its steps")
    for step in ("_allow_insert = True", "self._upstream_key = dict(key)", "set_ingesting(", "make(dict(key)"):
        if step not in populate1:  # GroupMaker mirrors these steps of _populate1
            raise _incompatible(f"DataJoint's AutoPopulate._populate1 no longer does `{step}`; GroupMaker mirrors it")
    source = inspect.getsource(Connection)
    for name in ("_conn", "_config"):  # instance attributes: set in its methods
        if f"self.{name} =" not in source:
            raise _incompatible(f"DataJoint's Connection no longer sets self.{name}")
    job_source = inspect.getsource(datajoint.jobs.Job.__init__)
    for name in ("_connection", "_table_name", "_heading", "_support"):  # what hidden_table() sets as Job does
        if f"self.{name} =" not in job_source:
            raise _incompatible(f"DataJoint's Job no longer sets self.{name}; hidden_table() mirrors it")
    if tuple(inspect.signature(datajoint.jobs._get_job_version).parameters) != ("config",):
        raise _incompatible("DataJoint's jobs._get_job_version no longer takes (config)")
    for name in SCHEMA_CODEC_METHODS:
        if not callable(getattr(SchemaCodec, name, None)):
            raise _incompatible(f"DataJoint's SchemaCodec.{name}, which the <xarray@> codec builds on, is gone")

    decode = tuple(inspect.signature(getattr(datajoint.codecs, "decode_attribute", lambda: None)).parameters)
    if decode[:2] != ("attr", "data"):
        raise _incompatible(
            "DataJoint's codecs.decode_attribute(attr, data), which KeyCodec decodes keys with, changed"
        )
    params = tuple(inspect.signature(AutoPopulate._populate1).parameters)[1:]
    if params != EXPECTED_POPULATE1_PARAMETERS:
        raise _incompatible(
            f"DataJoint's AutoPopulate._populate1 has parameters {params}, djdask expects "
            f"{EXPECTED_POPULATE1_PARAMETERS}"
        )
    metadata_params = tuple(inspect.signature(AutoPopulate._update_job_metadata).parameters)[1:]
    if metadata_params != ("key", "start_time", "duration", "version"):
        raise _incompatible(
            f"DataJoint's AutoPopulate._update_job_metadata has parameters {metadata_params}; run_make() "
            "captures (key, start_time, duration, version)"
        )
    conn_params = set(inspect.signature(Connection.__init__).parameters)
    expected = ("host", "user", "password", "port", "use_tls", "database_name", "backend", "config_override")
    missing = set(expected) - conn_params
    if missing:
        raise _incompatible(
            f"DataJoint's Connection() lacks the parameters {sorted(missing)} that clone_connection() passes"
        )


@dataclass
class MakeResult:
    """What one ``make()`` call through DataJoint's ``_populate1`` came to."""

    #: ``"success"`` (rows committed), ``"skipped"`` (already in the table) or ``"error"``.
    status: str
    #: For an error, the message and traceback in DataJoint's own format (``Class: message``).
    error_message: str | None = None
    error_stack: str | None = None
    error: BaseException | None = None  # the exception itself, for the caller to classify
    #: The duration DataJoint stamped on the row's hidden ``_job_duration`` (tables with job
    #: metadata), so that the jobs table gets the same figure.
    duration: float | None = None
    commit: float = 0.0  # seconds its transaction's commit took: what group commit would share out


def run_make(
    table: Any,
    key: dict,
    *,
    make_kwargs: dict | None = None,
    version: str | None = None,
    make: Any = None,
    began: tuple[float, float] | None = None,
) -> MakeResult:
    """Run ``make(key, **make_kwargs)`` of ``table`` in its own transaction, as
    ``populate()`` does for one key in direct mode.

    Parameters
    ----------
    version : str, optional
        The code version the campaign stamps on the key's jobs row; DataJoint
        stamps the same on the row's job metadata (``_job_version``) and
        provenance, instead of running ``git rev-parse`` here, in the worker's
        directory, twice per key.
    make : callable, optional
        Run in place of the table's ``make`` (on this instance only): a split make's
        last part (:func:`split_insert`).
    began : (float, float), optional
        When the key's make() began (``time.time()``) and the seconds its earlier parts
        took: the job metadata's start and duration count them, as ``populate()``'s do.
    """
    captured: dict[str, float] = {}
    update_metadata = table._update_job_metadata

    def capture(key, start_time, duration, version):  # DataJoint's own figures, kept for the jobs row
        if began is not None:  # a split make(): from its fetch, its parts' own seconds
            start_time = datetime.datetime.fromtimestamp(began[0])
            duration = float(duration) + began[1]
        captured["duration"] = float(duration)
        return update_metadata(key, start_time=start_time, duration=duration, version=version)

    connection = table.connection
    commit_transaction = connection.commit_transaction

    def timed_commit():
        began = time.perf_counter()
        try:
            commit_transaction()
        finally:
            captured["commit"] = time.perf_counter() - began

    table._update_job_metadata = capture  # on this instance only
    connection.commit_transaction = timed_commit  # likewise
    if make is not None:
        table.make = make  # likewise: _populate1 calls self.make
    try:
        with job_version(version):
            result = table._populate1(
                key, None, suppress_errors=True, return_exception_objects=True, make_kwargs=make_kwargs or None
            )
    except Exception as err:  # raised past DataJoint's own handling (its rollback on a lost connection)
        result = (key, err)
    finally:
        del table._update_job_metadata
        del connection.commit_transaction
        if make is not None:
            del table.make
    if result is True:
        return MakeResult("success", duration=captured.get("duration"), commit=captured.get("commit", 0.0))
    if result is False:
        return MakeResult("skipped")
    _, error = result
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return MakeResult("error", message, stack, error)


_versions: dict[int, str] = {}  # thread -> the campaign's version, while it runs a batch
_version_lock = threading.Lock()
_original_get_job_version: Any = None


@contextlib.contextmanager
def job_version(version: str | None) -> Iterator[None]:
    """While inside, DataJoint's ``_get_job_version`` returns ``version`` in this thread
    (unchanged when None, and in other threads).

    ``_populate1`` imports it from ``datajoint.jobs`` at each call, so replacing the
    module attribute reaches it.  It is replaced once per process, by a function that
    looks up the calling thread, so that batches in overlapping threads cannot undo
    each other's replacement.
    """
    global _original_get_job_version
    if version is None:
        yield
        return
    import datajoint.jobs as dj_jobs  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    with _version_lock:
        if _original_get_job_version is None:
            original = dj_jobs._get_job_version
            _original_get_job_version = original

            def campaign_version(config=None):
                found = _versions.get(threading.get_ident())
                return found if found is not None else original(config)

            dj_jobs._get_job_version = campaign_version
    me = threading.get_ident()
    previous = _versions.get(me)
    _versions[me] = version
    try:
        yield
    finally:
        if previous is None:
            _versions.pop(me, None)
        else:
            _versions[me] = previous


def jobs_settings(connection: Any) -> Any:
    """The ``jobs`` settings (``keep_completed``, ``default_priority``, ...) DataJoint
    applies on ``connection``: its Instance's config, or the global one."""
    return connection._config.jobs


def encode_error_stack(jobs: Any, stack: str) -> Any:
    """A traceback as DataJoint stores it in a jobs table's ``error_stack`` (``<blob>``),
    for a set-based UPDATE that ``Job.error`` (one key at a time) cannot do."""
    return jobs.heading.attributes["error_stack"].codec.encode(stack, key=None)


def store_full_path(backend: Any, path: str) -> str:
    """The path of a stored object as the store's filesystem (fsspec) names it."""
    return backend._full_path(path)


#: The protected methods of ``SchemaCodec`` that the ``<xarray@>`` codec, like
#: DataJoint's own ``<object@>``, builds on (its subclass interface).
SCHEMA_CODEC_METHODS = ("_extract_context", "_codec_config", "_build_path", "_get_backend")


def thread_safe_mode() -> bool:
    """Whether DataJoint runs in thread-safe mode (``DJ_THREAD_SAFE``): no global
    ``dj.config`` or ``dj.conn()``, each ``dj.Instance`` with its own."""
    from datajoint.instance import _load_thread_safe  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    return bool(_load_thread_safe())


def fresh_config() -> Any:
    """A DataJoint config read anew from ``datajoint.json``, ``.secrets/`` and ``DJ_*``:
    what a ``dj.Instance`` starts from (thread-safe mode has no global one)."""
    from datajoint.instance import _create_config  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    with warnings.catch_warnings():  # "No datajoint.json found": settings may well be DJ_* only
        warnings.filterwarnings("ignore", message=r"No datajoint\.json found")
        return _create_config()


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


def current_job_version(connection: Any) -> str:
    """The code version DataJoint stamps on reserved jobs (``jobs.version_method``)."""
    from datajoint.jobs import _get_job_version  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

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
    from datajoint.connection import Connection  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

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


def hidden_table(connection: Any, database: str, table_name: str, definition: str) -> Any:
    """A DataJoint table of djdask's own (``~`` name, hidden from the pipeline's diagram), made
    as DataJoint makes its jobs tables: declare it with ``.declare()`` if ``.is_declared``
    is false; fetch and insert as with any table."""
    # lazy: DataJoint (1 s; warns unless import_datajoint loads it)
    from datajoint.heading import Heading
    from datajoint.table import Table

    class DjdaskTable(Table):
        @property
        def table_name(self) -> str:
            return self._table_name

        @property
        def definition(self) -> str:
            return self._definition

    table = DjdaskTable()
    table._connection = connection
    table.database = database
    table._table_name = table_name
    table._definition = definition
    table._heading = Heading(table_info=dict(conn=connection, database=database, table_name=table_name, context=None))
    table._support = [table.full_table_name]
    return table


# -- group commit: several keys' make() in one transaction ------------------------------
#: What ``_populate1`` sets around each ``make()`` and :class:`GroupMaker` sets alike.
GROUP_COMMIT_ATTRIBUTES = ("_allow_insert", "_upstream", "_upstream_key")


def _make_function(table: Any) -> Any:
    return table._make_tuples if hasattr(table, "_make_tuples") else table.make


def is_tripartite(cls: type) -> bool:
    """Whether ``cls.make`` is a generator (tripartite, or a generator ``make``): DataJoint runs
    it in a transaction of its own, opened after the computation (no group commit)."""
    make = getattr(cls, "_make_tuples", None) or getattr(cls, "make", None)
    return inspect.isgeneratorfunction(make)


def existing_keys(table: Any, keys: list[dict]) -> list[dict]:
    """Those of ``keys`` already in ``table``, in one query (``_populate1`` asks ``key in
    table`` for each), as the table's primary-key dicts."""
    if not keys:
        return []
    return (table & keys).keys()


class GroupMaker:
    """Runs ``make(key)`` of ``table`` inside the caller's open transaction, as ``_populate1``
    runs it inside its own (inserts allowed, ``self.upstream`` and provenance set for the
    key), without starting, checking or committing anything: group commit's make().

    What does not change from key to key (the make function, the table's name, the job
    version) is looked up once, for the whole group."""

    def __init__(self, table: Any, make_kwargs: dict | None, version: str | None) -> None:
        import datajoint.jobs as dj_jobs  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

        self.table = table
        self.make = _make_function(table)
        self.kwargs = make_kwargs or {}
        self.name = table.full_table_name
        with job_version(version):
            self.version = dj_jobs._get_job_version(table.connection._config)

    def __call__(self, key: dict) -> BaseException | None:
        """Make ``key``; returns what make() raised, else None (the caller rolls back)."""
        from datajoint import provenance  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

        table = self.table
        table.__class__._allow_insert = True
        table._upstream_key = dict(key)
        table._upstream = None
        token = provenance.set_ingesting(self.name, key, self.version)
        try:
            self.make(dict(key), **self.kwargs)
        except Exception as error:
            return error
        finally:
            provenance.reset_ingesting(token)
            table.__class__._allow_insert = False
            table._upstream = None
            table._upstream_key = None
        return None

    def stamp(self, made: list[tuple[dict, float, float]]) -> None:
        """Stamp the hidden job metadata (start, duration, version) on the rows of ``made``
        (``(key, start time, seconds)``), as ``_populate1`` does after each key's commit; here
        inside the group's transaction, so that rows and metadata commit together."""
        table = self.table
        if not made or not table._has_job_metadata_attrs():
            return
        for key, start, seconds in made:
            table._update_job_metadata(
                key, start_time=datetime.datetime.fromtimestamp(start), duration=seconds, version=self.version
            )


def jobs_declaration_error(jobs: Any) -> str | None:
    """Why DataJoint cannot declare the jobs table ``jobs`` (a ``datajoint.jobs.Job`` not yet
    declared), or None when it can.

    DataJoint 2.3 builds a jobs table's definition from the types its heading reports;
    on PostgreSQL some come back as the server's names (``double precision``,
    ``timestamp without time zone``, an enum's own type), which its parser then
    refuses, so ``populate(reserve_jobs=True)`` fails on such a table while plain
    ``populate()`` works.  The definition is compiled here without running it
    (``datajoint.declare.declare`` only builds the SQL).
    """
    # lazy: DataJoint (1 s; warns unless import_datajoint loads it)
    from datajoint.declare import declare
    from datajoint.errors import DataJointError

    try:
        declare(jobs.full_table_name, jobs.definition, {}, jobs.connection.adapter, config=jobs.connection._config)
    except DataJointError as err:
        return str(err)
    return None


# -- a tripartite make() split across the network: fetch and insert here, compute elsewhere --
#: DataJoint's own message (``_populate1``) when a tripartite make()'s inputs changed between
#: its fetch and its insert; a split make() raises the same error.
CHANGED_INPUTS = "Referential integrity failed! The `make_fetch` data has changed"

#: The methods of a make() that can be split (DataJoint's tripartite make).
TRIPARTITE = ("make_fetch", "make_compute", "make_insert")


def is_splittable(cls: type) -> bool:
    """Whether ``cls`` makes its keys with ``make_fetch``/``make_compute``/``make_insert``
    driven by DataJoint's own ``make`` (a ``make`` of its own cannot be cut)."""
    from datajoint.autopopulate import AutoPopulate  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    return (
        all(callable(getattr(cls, name, None)) for name in TRIPARTITE)
        and getattr(cls, "make", None) is AutoPopulate.make
        and not hasattr(cls, "_make_tuples")
    )


def fetch_hash(fetched: Any) -> str:
    """The hash of a ``make_fetch`` result, as ``_populate1`` takes it."""
    import deepdiff  # lazy: DataJoint's dependency (0.1 s), as _populate1 imports it

    return deepdiff.DeepHash(fetched, ignore_iterable_order=False)[fetched]


def split_insert(table: Any, computed: tuple, expected_hash: str) -> Any:
    """The make() that finishes a split key inside ``_populate1``'s transaction, as DataJoint's
    tripartite sequence does: ``make_fetch`` again, its hash compared with the one taken for
    ``make_compute`` (DataJoint's own error when they differ), ``make_insert``."""
    from datajoint.errors import DataJointError  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    def make(key: dict, **kwargs: Any) -> None:
        fetched = table.make_fetch(key, **kwargs)
        if fetch_hash(fetched) != expected_hash:
            raise DataJointError(CHANGED_INPUTS)
        table.make_insert(key, *computed)

    return make


@contextlib.contextmanager
def without_database() -> Iterator[dict[tuple[str, str], type]]:
    """While inside, DataJoint's schemas neither activate nor decorate (no connection): a
    compute node without database access imports its pipeline so.  Yields ``{(schema,
    table name): class}`` of the classes decorated meanwhile."""
    from datajoint.schemas import _Schema as Schema  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    activate, decorate = Schema.activate, Schema.__call__
    bound: dict[tuple[str, str], type] = {}

    def offline_activate(self: Any, schema_name: str | None = None, **kwargs: Any) -> None:
        self.djdask_offline_name = schema_name  # nothing connects

    def offline_decorate(self: Any, cls: type, *, context: dict | None = None) -> type:
        name = getattr(self, "djdask_offline_name", None)
        if name:
            bound[(name, cls.table_name)] = cls
        return cls  # undecorated: no heading, no connection

    Schema.activate, Schema.__call__ = offline_activate, offline_decorate
    try:
        yield bound
    finally:
        Schema.activate, Schema.__call__ = activate, decorate
