"""Where ``<xarray@>`` arrays go: the store a campaign writes to, checked before it starts.

:func:`configure_store` gives DataJoint (and the workers the campaign starts)
a default store from ``--store``: ``s3://BUCKET/PREFIX``, a directory, or the
name of a store in DataJoint's settings.  Before anything else happens it
writes one small probe object there and deletes it (:func:`probe_store`), so
that a typo, a missing bucket, wrong credentials, an unwritable directory or
an endpoint nobody answers on stops the command with a message, not every key
of a campaign with an error row.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from datajoint.storage import get_storage_backend

from djdask import djcompat
from djdask.db.connect import default_data_dir, import_datajoint, redact, settings_view
from djdask.errors import StoreError

__all__ = ["configure_store", "probe_store"]

#: Seconds the probe may take before the store counts as not answering.
PROBE_TIMEOUT = 60.0

_probed: set[str] = set()  # the specs already probed by this process


def configure_store(store: str | None = None, *, probe: bool = True) -> str:
    """Give DataJoint a default store for ``<xarray@>`` results, here and in the workers
    this process starts; return where it is, without credentials.

    Parameters
    ----------
    store : str, optional
        ``None``: DataJoint's ``stores.default`` if it has one, else a local store
        in djdask's data directory.  The name of a configured DataJoint store: that
        one.  ``s3://bucket/prefix``: S3, with the endpoint and credentials of the
        usual ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` and
        ``AWS_SECRET_ACCESS_KEY`` variables (or the ambient AWS identity).  A path
        (with a ``/``, or an existing directory): that directory.
    probe : bool
        Write and delete one probe object first (:func:`probe_store`).

    Raises
    ------
    StoreError
        The value names no store djdask can use, or the store cannot be written.
    """
    dj = import_datajoint()
    stores = {k: (dict(v) if isinstance(v, dict) else v) for k, v in dict(settings_view().stores or {}).items()}
    configured = ", ".join(k for k in stores if k != "default") or "none"
    if store is None and isinstance(stores.get("default"), str) and stores["default"] in stores:
        name = stores["default"]
    elif store is not None and store in stores and store != "default":
        name = store
    elif store is not None and store.startswith("s3://"):
        name = "djdask-s3"
        stores[name] = _s3_spec(store)
    else:
        name = "djdask"
        stores[name] = {"protocol": "file", "location": str(_directory(store, configured))}
    stores["default"] = name
    spec = stores[name]
    if not isinstance(spec, dict):
        raise StoreError(
            f"DataJoint's store {name!r} is {spec!r}, not a store's settings. Give it a protocol and location, "
            "e.g. {'protocol': 'file', 'location': '/data/store'}, in datajoint.json or DJ_STORES."
        )
    if probe:
        probe_store(name, spec)
    if not djcompat.thread_safe_mode():  # there, the pipeline's Instances read DJ_STORES
        dj.config.stores = stores
    os.environ["DJ_STORES"] = json.dumps(stores)  # for the workers this process starts
    return describe(name, spec)


def describe(name: str, spec: dict[str, Any]) -> str:
    """Where store ``name`` is, without credentials."""
    if spec.get("protocol") == "s3":
        return f"s3://{spec.get('bucket')}/{spec.get('location', '')} at {spec.get('endpoint')} (store {name!r})"
    return f"{spec.get('location') or spec.get('protocol')} (store {name!r})"


def _s3_spec(store: str) -> dict[str, Any]:
    bucket, _, prefix = store[len("s3://") :].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise StoreError(
            f"--store {store!r} names no valid bucket ({bucket!r}): S3 bucket names are 3-63 lower-case letters, "
            "digits, dots and hyphens. Write s3://BUCKET/PREFIX, e.g. s3://mylab-arrays/pipeline."
        )
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "https://s3.amazonaws.com"
    spec = {
        "protocol": "s3",
        "endpoint": endpoint,
        "bucket": bucket,
        "location": prefix.strip("/"),
        "secure": endpoint.startswith("https://"),
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID") or None,
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
    }
    return {k: v for k, v in spec.items() if v is not None}


def _directory(store: str | None, configured: str) -> Path:
    """The local directory ``--store`` names (created), or djdask's own."""
    if store is None:
        return default_data_dir() / "store"
    text = store.removeprefix("file://")
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", text)
    if "://" in text:
        raise StoreError(
            f"--store {store!r}: djdask writes to s3://BUCKET/PREFIX, a directory, or a store configured in "
            f"DataJoint's settings (configured: {configured})."
        )
    if scheme and not Path(text).exists():
        fix = (
            f"did you mean s3://{text.split(':', 1)[1].lstrip('/')}?"
            if scheme.group(1).lower() == "s3"
            else "djdask writes to s3://BUCKET/PREFIX, a directory, or a store configured in DataJoint's settings."
        )
        raise StoreError(
            f"--store {store!r} looks like a URL but is not one djdask can use ({scheme.group(1)}: with no //): {fix}"
        )
    if "/" not in text and not text.startswith("~") and not Path(text).is_dir():
        raise StoreError(
            f"--store {store!r} is no store configured in DataJoint's settings (configured: {configured}). For a "
            f"directory, give a path: --store ./{text} (or s3://BUCKET/PREFIX for S3)."
        )
    return Path(text).expanduser().resolve()


def probe_store(name: str, spec: dict[str, Any]) -> None:
    """Write one small object to store ``name`` and delete it; raise :class:`StoreError`
    saying why when that fails or takes longer than :data:`PROBE_TIMEOUT` seconds."""
    key = json.dumps(spec, sort_keys=True, default=str)
    if key in _probed:
        return
    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            if spec.get("protocol") == "file":
                Path(spec["location"]).mkdir(parents=True, exist_ok=True)
            backend = get_storage_backend(spec)
            path = f"djdask-probe-{uuid.uuid4().hex}"
            backend.put_buffer(b"djdask checks that it may write here", path)
            backend.remove(path)
        except BaseException as err:  # reported below, in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=attempt, name="djdask-store-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT)
    where = describe(name, spec)
    if thread.is_alive():
        raise StoreError(
            f"The store {where} did not answer within {PROBE_TIMEOUT:.0f} s (writing a probe object). "
            + _fix(spec, None)
        )
    if failure:
        err = failure[0]
        reason = redact(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
        raise StoreError(f"The store {where} cannot be written ({reason[:300]}). " + _fix(spec, err))
    _probed.add(key)


def _fix(spec: dict[str, Any], err: BaseException | None) -> str:
    text = f"{type(err).__name__} {err}" if err is not None else ""
    if spec.get("protocol") == "file":
        return (
            "Give a directory you may write to (--store /path/you/own), or fix its permissions. Nothing was written "
            "to the database."
        )
    if re.search(r"Access ?Key|SignatureDoesNotMatch|AccessDenied|Forbidden|credentials|PermissionError|403", text):
        fix = (
            "Check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the store's access_key and "
            "secret_key) and that they may write to the bucket."
        )
    elif re.search(r"NoSuchBucket|bucket does not exist", text):
        fix = f"Create the bucket {spec.get('bucket')!r} first, or name an existing one."
    else:
        fix = (
            f"Check the endpoint ({spec.get('endpoint')}: AWS_ENDPOINT_URL, or the store's endpoint) and that it "
            "is reachable from here."
        )
    return fix + " Nothing was written to the database."
