"""Array results as Zarr in a DataJoint store: the ``<xarray@store>`` codec.

An attribute declared ``result : <xarray@store>`` (or ``<xarray@>`` for the
default store) takes an :class:`xarray.Dataset` or :class:`xarray.DataArray`.
On insert the value is written as Zarr (format 3) at a schema-addressed path of
the store, ``{schema_prefix}/{schema}/{table}/{key}/{attribute}_{token}.zarr``
(DataJoint's :class:`~datajoint.builtin_codecs.schema.SchemaCodec` layout), on a
filesystem or on S3 through DataJoint's own storage backends (fsspec, s3fs).
The database keeps the path, the store, and per variable the dims, shape,
dtype and chunks, with the total size and a checksum of the content.  On fetch
the value is opened lazily: dask-backed, nothing is downloaded until computed.

Chunks are chosen from the shape: the leading dimension is split so a chunk
holds about ``djdask.storage.chunk-size`` (16 MiB) with the other dimensions
whole, or every dimension is split when one slice alone is too large.  Give
chunks per value with dask chunks or ``variable.encoding["chunks"]``, or per
attribute with ``djdask.storage.chunks.<attribute>: {dim: size}``.  A
dask-backed value is written chunk by chunk, in the worker's own process, so
an array larger than the worker's memory can be stored.

The store is written before the row is committed.  If the ``make()`` fails
afterwards, the transaction rolls back and the Zarr is referenced by no row:
``djdask gc`` (DataJoint's garbage collector, which knows Zarr directories)
removes such orphans.  A write that fails part-way removes what it wrote.

A decoded value hashes by what it is stored as.  DataJoint's tripartite make
runs ``make_fetch`` twice and compares ``deepdiff.DeepHash`` of the two results
(``AutoPopulate._populate1``).  DeepHash takes an xarray object for a plain
iterable: it raises on a DataArray (it recurses down to a 0-d DataArray, which
cannot be iterated) and hashes a Dataset by its variable names alone, so two
different arrays would pass the integrity check.  DeepHash has no per-type hook
that DataJoint's call can reach, so on the first decode in a process the codec
puts a subclass of it in place as ``deepdiff.DeepHash`` (the name
``_populate1`` looks up at call time; importing this module changes nothing).
It hashes an object exactly as the codec decoded it by the row's store, path
and checksum, without reading the array; any other Dataset, DataArray or
Variable by its content (:func:`checksum`, block by block); everything else as
DeepHash does.  This works in any process that decodes, DataJoint's own
``populate()`` included, since DataJoint finds the codec by its entry point.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import logging
import sys
import threading
import time
import warnings
import weakref
from typing import Any

import numpy as np
from dask.callbacks import Callback
from dask.utils import parse_bytes, parse_timedelta
from datajoint.builtin_codecs.schema import SchemaCodec
from datajoint.errors import DataJointError
from datajoint.gc import GarbageCollector

from djdask import djcompat
from djdask.config import namespace as config
from djdask.db.connect import import_datajoint, settings_view
from djdask.db.outage import is_store_unavailable
from djdask.errors import StoreUnavailableError
from djdask.worker import randomness

__all__ = ["XarrayCodec", "checksum", "collect_garbage", "default_chunks", "install_deephash", "verify"]

logger = logging.getLogger(__name__)

_DATAARRAY = "__xarray_dataarray_variable__"


def default_chunks(shape: tuple[int, ...], dtype: Any, limit: int | None = None) -> tuple[int, ...]:
    """A chunk shape for an array: the leading dimension split to about ``limit`` bytes per
    chunk with the others whole, or every dimension split when a slice alone exceeds it."""
    from dask.array.core import normalize_chunks  # lazy: dask.array (0.2 s), for arrays only

    if not shape:
        return ()
    limit = int(limit or _parse_bytes(config.get("storage.chunk-size")))
    dtype = np.dtype(dtype)
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    wanted: tuple = ("auto",) + (-1,) * (len(shape) - 1) if row <= limit else ("auto",) * len(shape)
    chunks = normalize_chunks(wanted, shape, limit=limit, dtype=dtype)
    return tuple(max(1, c[0]) if c else 1 for c in chunks)


def _parse_bytes(value: Any) -> int:
    return parse_bytes(value) if isinstance(value, str) else int(value)


def _block_slices(shape: tuple[int, ...], chunks: tuple[int, ...]):
    """Slices over the leading dimension in steps of its chunk size: bounded memory."""
    if not shape:
        yield ()
        return
    step = chunks[0] if chunks else shape[0]
    for start in range(0, shape[0], max(1, step)):
        yield (slice(start, min(shape[0], start + step)),)


def checksum(ds) -> str:
    """SHA-256 of a Dataset's variables (names, dims, dtype, shape and values), read one
    leading-dimension block at a time, so a dask-backed value is never loaded whole."""
    digest = hashlib.sha256()
    for name in sorted(map(str, ds.variables)):
        var = ds.variables[name]
        digest.update(f"{name}|{','.join(map(str, var.dims))}|{var.dtype.str}|{var.shape}".encode())
        chunks = var.encoding.get("chunks") or default_chunks(var.shape, var.dtype)
        for index in _block_slices(var.shape, tuple(chunks)):
            block = var.data[index] if index else var.data
            if hasattr(block, "compute"):
                block = block.compute(scheduler="synchronous")
            block = np.ascontiguousarray(np.asarray(block))
            if block.dtype.kind == "O":
                digest.update(repr(block.tolist()).encode())
            else:
                digest.update(block.tobytes())
    return digest.hexdigest()


class XarrayCodec(SchemaCodec):
    """``<xarray@store>``: an xarray Dataset or DataArray as Zarr in a DataJoint store."""

    name = "xarray"

    def validate(self, value: Any) -> None:
        import xarray as xr  # lazy: xarray (0.4 s), for arrays only (DataJoint loads this codec in any process)

        if isinstance(value, dict) and "path" in value:
            return  # already encoded (a copy of a stored reference)
        if not isinstance(value, (xr.Dataset, xr.DataArray)):
            raise DataJointError(
                f"<xarray@> takes an xarray.Dataset or xarray.DataArray, got {type(value).__name__}. "
                "Wrap a numpy array with its dimension names: xarray.DataArray(array, dims=('time', 'y', 'x'))."
            )

    def encode(
        self, value: Any, *, key: dict | None = None, context: dict | None = None, store_name: str | None = None
    ) -> dict:
        import xarray as xr  # lazy: xarray (0.4 s), for arrays only (DataJoint loads this codec in any process)

        if isinstance(value, dict) and "path" in value:
            return value
        self.validate(value)
        store_name = store_name or None  # `<xarray@>`: the default store
        is_array = isinstance(value, xr.DataArray)
        ds = value.to_dataset(name=value.name if value.name is not None else _DATAARRAY) if is_array else value
        schema, table, field, primary_key = self._extract_context(key, context)
        cfg = self._codec_config(key, context)
        store_label = store_name or _default_store(cfg)
        try:
            path, _token = self._build_path(
                schema, table, field, primary_key, ext=".zarr", store_name=store_name, config=cfg
            )
            backend = self._get_backend(store_name, config=cfg)
        except DataJointError as err:
            raise DataJointError(
                f"<xarray@{store_name or ''}> on {table}.{field}: store {store_label!r} is not usable ({err}). "
                f"Configure it in DataJoint's settings: dj.config['stores'][{store_label!r}] = "
                "{'protocol': 'file', 'location': '/data/store'} (or protocol 's3' with endpoint, bucket, "
                "access_key, secret_key), in datajoint.json or DJ_STORES."
            ) from None
        ds = self._chunked(ds, field)
        variables = {
            str(name): {
                "dims": list(map(str, var.dims)),
                "shape": list(var.shape),
                "dtype": var.dtype.str,
                "chunks": list(var.encoding["chunks"]) if "chunks" in var.encoding else None,
            }
            for name, var in ds.variables.items()
        }
        digest = checksum(ds)
        where = _describe(backend, path)
        try:
            mapper = backend.get_fsmap(path)

            def write(progressed) -> None:
                with warnings.catch_warnings(), Callback(posttask=lambda *_: progressed()):
                    # Zarr warns, once per array, that fixed-length strings (coordinate labels
                    # such as "y", "x") have no Zarr v3 spec yet; zarr-python reads them back.
                    warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
                    writing = ds.to_zarr(mapper, mode="w-", zarr_format=3, consolidated=False, compute=False)
                    writing.compute(scheduler="synchronous")  # chunk by chunk, here, not on the cluster

            _within(_write_timeout(), write)
        except Exception as err:
            if isinstance(err, StoreStalled):
                _forget_clients(mapper.fs)
            _remove_quietly(backend, path)
            message = (
                f"<xarray@{store_name or ''}> on {table}.{field}: could not write {where}: "
                f"{type(err).__name__}: {_short(err)}. Check that store {store_label!r} is reachable and its "
                f"credentials are right (DataJoint stores.{store_label}: endpoint, bucket, access_key, "
                "secret_key; or the AWS_* variables)."
            )
            if is_store_unavailable(err, from_store=True):  # worth another try: the worker waits for the store
                raise StoreUnavailableError(message) from err
            raise DataJointError(message) from None
        size = sum(int(np.prod(v["shape"], dtype=np.int64)) * np.dtype(v["dtype"]).itemsize for v in variables.values())
        return {
            "path": path,
            "store": store_name,
            "format": "zarr3",
            "kind": "DataArray" if is_array else "Dataset",
            "name": str(value.name) if is_array and value.name is not None else None,
            "variables": variables,
            "size": size,
            "checksum": digest,
        }

    def _chunked(self, ds, field: str):
        """The dataset with a chunk encoding on every variable that has none."""
        configured = (config.get("storage.chunks") or {}).get(field) or {}
        ds = ds.copy(deep=False)
        for name, var in ds.variables.items():
            if var.ndim == 0:
                var.encoding.pop("chunks", None)
                continue
            if hasattr(var.data, "chunks") and var.data.chunks is not None and not configured:
                # dask-backed: the value's own chunks, made regular as Zarr needs
                chunks = tuple(max(c) for c in var.data.chunks)
            elif var.encoding.get("chunks"):
                chunks = tuple(var.encoding["chunks"])
            else:
                chunks = default_chunks(var.shape, var.dtype)
            if configured:
                chunks = tuple(int(configured.get(dim, c)) for dim, c in zip(var.dims, chunks))
            chunks = tuple(min(max(1, c), max(1, n)) for c, n in zip(chunks, var.shape))
            if hasattr(var.data, "chunks") and var.data.chunks is not None:
                ds[name] = var.chunk(dict(zip(var.dims, chunks)))
                var = ds.variables[name]
            var.encoding = {k: v for k, v in var.encoding.items() if k in ("compressors", "filters", "fill_value")}
            var.encoding["chunks"] = chunks
        return ds

    def decode(self, stored: dict, *, key: dict | None = None, context: dict | None = None) -> Any:
        import xarray as xr  # lazy: xarray (0.4 s), for arrays only (DataJoint loads this codec in any process)

        cfg = self._codec_config(key, context)
        backend = self._get_backend(stored.get("store") or None, config=cfg)
        try:
            ds = xr.open_zarr(backend.get_fsmap(stored["path"]), consolidated=False, zarr_format=3, chunks={})
        except Exception as err:
            if not is_store_unavailable(err, from_store=True):
                raise
            raise StoreUnavailableError(
                f"<xarray@{stored.get('store') or ''}> could not read {_describe(backend, stored['path'])}: "
                f"{type(err).__name__}: {_short(err)}"
            ) from err
        if stored.get("kind") == "DataArray":
            value = ds[stored.get("name") or _DATAARRAY]
            if stored.get("name") is None:
                value.name = None
        else:
            value = ds
        _remember_decoded(value, stored)
        return value


def verify(value: Any, stored: dict) -> bool:
    """Whether a fetched value's content matches the checksum recorded at insert."""
    import xarray as xr  # lazy: xarray (0.4 s), for arrays only (DataJoint loads this codec in any process)

    ds = (
        value.to_dataset(name=value.name if value.name is not None else _DATAARRAY)
        if isinstance(value, xr.DataArray)
        else value
    )
    return checksum(ds) == stored["checksum"]


# id(value) -> (weak reference, parts at decode, identity text) of the values decode
# returned.  Keyed by id because xarray objects are unhashable (they compare element
# by element); the weak reference drops the entry when the value dies, and is
# checked at lookup so a reused id never inherits another value's identity.
_decoded: dict[int, tuple[weakref.ref, tuple, str]] = {}
_install_lock = threading.Lock()
_DEEPHASH_PARAMETERS = ("self", "obj", "parent", "parents_ids")


def _parts(value) -> tuple:
    """The names and Variable objects a Dataset or DataArray is made of."""
    import xarray as xr  # lazy: xarray (0.4 s), for arrays only (DataJoint loads this codec in any process)

    if isinstance(value, xr.DataArray):
        return ((("name", value.name), value.variable), *((("coord", k), v) for k, v in value.coords.variables.items()))
    return tuple((("variable", k), v) for k, v in value.variables.items())


def _same_parts(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(ka == kb and va is vb for (ka, va), (kb, vb) in zip(a, b))


def _remember_decoded(value, stored: dict) -> None:
    """Record the identity of a value decode returns, and put the DeepHash that uses it in place."""
    install_deephash()
    if not stored.get("checksum") or not stored.get("path"):
        return  # nothing to name it by: it hashes by content
    identity = "|".join(
        [
            "djdask-xarray-stored",
            str(stored.get("kind")),
            repr(stored.get("name")),
            repr(stored.get("store")),
            str(stored["path"]),
            str(stored["checksum"]),
        ]
    )
    key = id(value)

    def forget(ref, key=key):
        entry = _decoded.get(key)
        if entry is not None and entry[0] is ref:
            _decoded.pop(key, None)

    _decoded[key] = (weakref.ref(value, forget), _parts(value), identity)


def _stored_identity(value) -> str | None:
    """The identity of a value exactly as decode returned it, else None.  A value changed in
    place since (a variable added, replaced or renamed) is no longer what the row names."""
    entry = _decoded.get(id(value))
    if entry is None or entry[0]() is not value or not _same_parts(entry[1], _parts(value)):
        return None
    return entry[2]


def _is_xarray(value) -> bool:
    xr = sys.modules.get("xarray")  # never imported: the value cannot be one
    return xr is not None and isinstance(value, (xr.Dataset, xr.DataArray, xr.Variable))


def _xarray_hash_text(value) -> str:
    """What DeepHash hashes for an xarray Dataset, DataArray or Variable."""
    import xarray as xr  # lazy: xarray (0.4 s), for arrays only (DataJoint loads this codec in any process)

    if isinstance(value, xr.Variable):
        return "xarray.Variable|content|" + checksum(xr.Dataset({_DATAARRAY: value}))
    identity = _stored_identity(value)
    if identity is not None:
        return identity
    if isinstance(value, xr.DataArray):
        # a placeholder variable name, so a name that is also a coordinate's cannot clash
        return f"xarray.DataArray|content|{value.name!r}|" + checksum(value.to_dataset(name=_DATAARRAY))
    return "xarray.Dataset|content|" + checksum(value)


def install_deephash() -> bool:
    """Put the xarray-aware DeepHash in place as ``deepdiff.DeepHash`` (once per process).

    The codec calls this when it first decodes a value; there is no need to call it
    otherwise.  A DeepHash another library put there first is kept, as the base.

    Returns
    -------
    bool
        Whether it is in place: not when deepdiff is missing, or when its private
        ``DeepHash._hash`` no longer has the signature overridden (a warning says so).
    """
    try:
        import deepdiff  # lazy: deepdiff (0.6 s), once a value is decoded
    except ImportError:
        return False
    with _install_lock:
        base = deepdiff.DeepHash
        if getattr(base, "_djdask_xarray", False):
            return True
        if tuple(inspect.signature(base._hash).parameters) != _DEEPHASH_PARAMETERS:
            logger.warning(
                "deepdiff %s changed DeepHash._hash%s: <xarray@> values keep deepdiff's own hashing, "
                "under which a tripartite make() of a DataArray fails and one of a Dataset does "
                "not see changed upstream data.",
                getattr(deepdiff, "__version__", "?"),
                inspect.signature(base._hash),
            )
            return False
        deepdiff.DeepHash = _xarray_deephash(base)
        return True


def _xarray_deephash(base: type) -> type:
    """A subclass of ``base`` (deepdiff's DeepHash) that hashes xarray values as above."""

    class XarrayDeepHash(base):
        __doc__ = base.__doc__
        _djdask_xarray = True

        def _hash(self, obj, parent, parents_ids=frozenset()):
            if not _is_xarray(obj):
                return super()._hash(obj, parent, parents_ids=parents_ids)
            if self._skip_this(obj, parent):
                return None, 0
            text = _xarray_hash_text(obj)
            result = self.hasher(text) if self.apply_hash else text
            # Kept where DeepHash's own _hash keeps it, so DeepHash(x)[x] finds it
            # (xarray objects are unhashable: under their id).
            try:
                self.hashes[self._make_hash_key(obj)] = (result, 1)
            except TypeError:
                from deepdiff.helper import get_id  # lazy: deepdiff (0.6 s), as in install_deephash

                self.hashes[get_id(obj)] = (result, 1)
            return result, 1

    XarrayDeepHash.__module__ = __name__
    XarrayDeepHash.__qualname__ = "XarrayDeepHash"
    return XarrayDeepHash


def _object_root(path: str) -> str:
    """The object a stored file belongs to: its Zarr store, or the file itself."""
    marker = path.find(".zarr/")
    return path[: marker + len(".zarr")] if marker >= 0 else path


def _age_seconds(backend: Any, path: str) -> float | None:
    """Seconds since a stored file was written (None when the store does not say)."""
    info = backend.fs.info(djcompat.store_full_path(backend, path))
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
    if stamp is None:
        return None
    if isinstance(stamp, datetime.datetime):
        stamp = stamp.timestamp()
    return max(0.0, datetime.datetime.now().timestamp() - float(stamp))


def collect_garbage(
    schema_names, *, connection: Any = None, dry_run: bool = True, min_age: float = 3600.0
) -> dict[str, dict]:
    """Remove the schema-addressed objects (Zarr stores of ``<xarray@>``) of these
    schemas that no row references, store by store, with DataJoint's garbage
    collector finding them.  Objects younger than ``min_age`` seconds are kept: a
    ``make()`` still running has written its array but not committed its row.

    Returns, per store: referenced, orphaned, orphaned_bytes, removed, too_recent,
    and the orphaned object paths.
    """
    dj = import_datajoint()
    conn = connection if connection is not None else dj.conn()
    schemas = [
        dj.Schema(name, connection=conn, create_schema=False, create_tables=False) for name in sorted(schema_names)
    ]
    stores: set[str | None] = set()
    for schema in schemas:
        for table_name in schema.list_tables():
            heading = schema.get_table(table_name).heading
            stores.update(heading.attributes[a].store or None for a in heading.schema_objects)
    report = {}
    configured = dict(settings_view().stores or {})
    for store in sorted(stores, key=str):
        if store is not None and store not in configured:
            logger.warning("Store %r is named by a table but not configured: nothing can be stored there.", store)
            continue
        collector = GarbageCollector(*schemas, store=store)
        scan = collector.collect(dry_run=True)
        if scan["scan_errors"]:
            raise DataJointError(f"Could not list store {store or 'default'!r}: {scan['scan_errors']}")
        objects: dict[str, list[str]] = {}
        for path in scan["orphaned_schema_paths"]:
            objects.setdefault(_object_root(path), []).append(path)
        removed = too_recent = 0
        for files in objects.values():
            ages = [_age_seconds(collector.backend, f) for f in files]
            if any(a is not None and a < min_age for a in ages):
                too_recent += 1
                continue
            if not dry_run:
                for f in files:
                    collector.delete_schema_path(f)
                removed += 1
        name = store or configured.get("default") or "default"
        report[str(name)] = {
            "referenced": scan["schema_paths_referenced"],
            "orphaned": len(objects),
            "orphaned_bytes": scan["schema_paths_orphaned_bytes"],
            "removed": removed if not dry_run else len(objects) - too_recent,
            "too_recent": too_recent,
            "paths": sorted(objects),
        }
    return report


def _default_store(cfg: Any) -> str:
    """The name ``stores.default`` points at, for messages."""
    try:
        name = (cfg.stores if cfg is not None else {}).get("default")
    except AttributeError:
        name = None
    return name if isinstance(name, str) else "default"


def _describe(backend: Any, path: str) -> str:
    """Where a path is, for messages: the URL without credentials."""
    try:
        return backend.get_url(path)
    except Exception:  # an adapter without URLs
        return path


class StoreStalled(TimeoutError):
    """A write to the object store got no answer within ``djdask.storage.write-timeout``."""


def _write_timeout() -> float:
    return parse_timedelta(config.get("storage.write-timeout"))


def _within(timeout: float, write: Any) -> None:
    """Run ``write(progressed)`` and wait for it as long as it progresses: it calls
    ``progressed()`` after each chunk, and a write with no progress for ``timeout`` seconds
    is given up.

    Zarr's writes wait on their event loop without a limit (``Array.__setitem__`` ignores
    ``async.timeout``), and an S3 connection the server took but never answers is not
    always bounded by botocore's read timeout (seen: a worker waiting for good after a
    network outage).  So the write runs in a thread of its own; one left waiting is
    abandoned, and the key waits for the store as in an outage."""
    outcome: dict[str, BaseException] = {}
    last = [time.monotonic()]
    # A lazy array that draws from the global generators draws, while written, from those
    # of make()'s thread (which waits meanwhile), as in DataJoint's own populate().
    owns = randomness.owned_by_this_thread if randomness.this_thread_owns() else contextlib.nullcontext

    def progressed() -> None:
        last[0] = time.monotonic()

    def run() -> None:
        try:
            with owns():
                write(progressed)
        except BaseException as err:  # noqa: BLE001  (handed to the caller's thread)
            outcome["error"] = err

    thread = threading.Thread(target=run, name="djdask-store-write", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(max(0.0, last[0] + timeout - time.monotonic()))
        if thread.is_alive() and time.monotonic() - last[0] >= timeout:
            raise StoreStalled(f"the store gave no answer for {timeout:g} s (djdask.storage.write-timeout)")
    if "error" in outcome:
        raise outcome["error"]


def _forget_clients(fs: Any) -> None:
    """Drop fsspec's cached filesystems of ``fs``'s kind, so that the next write opens new
    connections instead of queueing behind the stalled one."""
    try:
        type(fs).clear_instance_cache()
    except Exception as err:  # noqa: BLE001  (only a cache)
        logger.debug("Could not clear the filesystem cache: %s", err)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""


def _remove_quietly(backend: Any, path: str) -> None:
    try:
        full = djcompat.store_full_path(backend, path)
        if backend.fs.exists(full):
            backend.fs.rm(full, recursive=True)
    except Exception as err:  # the store is unreachable: gc finds it later
        logger.warning("Could not remove the partial Zarr at %s: %s", path, err)
