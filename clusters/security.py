"""Who may drive a campaign's scheduler: TLS, with credentials made for the campaign.

On a shared cluster anyone who can reach a Dask scheduler can submit code that
runs as the campaign's owner, with their database password and storage keys.
So on every kind that starts or reaches a scheduler over the network (the
batch kinds, ``address``, ``scheduler-file``), the scheduler, its workers and
the campaign talk TLS, and each side must show a certificate signed by the
campaign's own authority (distributed's mutual TLS): a client without one is
refused, whatever it knows of the address.

A profile's ``security`` says where the credentials come from:

- ``temporary`` (the default for batch kinds): made for this campaign in memory
  (``distributed.security.Security.temporary()``); the workers' copies are
  written, readable by the owner only, to ``shared-temp-directory`` (a folder
  the compute nodes see; default ``~/.djdask/tls``, made absolute on the
  controller: a node's HOME may differ) and removed when the campaign ends.
- ``{ca-file: ..., cert: ..., key: ...}``: certificate files of the site's own
  (every side uses the same certificate and key).
- ``none``: plain TCP, as Dask's default; djdask warns that anyone who reaches
  the scheduler can run code as you.

``dashboard-address`` is where the scheduler's dashboard listens: loopback by
default (``127.0.0.1:0``, a free port), reached through an SSH tunnel.  The
campaign prints its links at the address the server is bound to, with that
tunnel (:mod:`djdask.monitor.links`), not at the scheduler's network address.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from djdask.config import namespace as config
from djdask.errors import ProfileError

from .paths import controller_path

__all__ = ["DEFAULT_DASHBOARD", "DEFAULT_SHARED", "client_security", "secure_scheduler", "security_of"]

logger = logging.getLogger(__name__)

DEFAULT_SHARED = "~/.djdask/tls"
DEFAULT_DASHBOARD = "127.0.0.1:0"
_FILES = ("ca-file", "cert", "key")


def security_of(profile: str, raw: Mapping[str, Any], *, create: bool = False, default: str = "temporary") -> Any:
    """The profile's ``security`` checked, and with ``create`` made: a
    :class:`distributed.security.Security`, or None for plain TCP."""
    value = raw.get("security", default)
    if value in ("none", "off", False) or value is None and default == "none":
        return None
    if value in ("temporary", True, None):
        if not create:
            return None
        # lazy: Dask's client (0.4 s), only as a pool starts: listing or checking profiles goes without
        from distributed.security import Security

        return Security.temporary()
    if isinstance(value, Mapping):
        files = {k: controller_path(str(value[k])) if value.get(k) else "" for k in _FILES}
        missing = [f"{k} ({files[k] or 'not set'})" for k in _FILES if not os.path.isfile(files[k])]
        if missing:
            raise ProfileError(
                f"Profile {profile!r}: security names no readable file for {', '.join(missing)}. Give "
                f"`djdask.clusters.{profile}.security` as {{ca-file: ..., cert: ..., key: ...}} (PEM files), or "
                "`temporary` to have credentials made for each campaign."
            )
        if not create:
            return None
        # lazy: Dask's client (0.4 s), only as a pool starts: listing or checking profiles goes without
        from distributed.security import Security

        cert, key = files["cert"], files["key"]
        return Security(
            tls_ca_file=files["ca-file"],
            tls_client_cert=cert,
            tls_client_key=key,
            tls_scheduler_cert=cert,
            tls_scheduler_key=key,
            tls_worker_cert=cert,
            tls_worker_key=key,
            require_encryption=True,
        )
    raise ProfileError(
        f"Profile {profile!r}: security is {value!r}. Write `temporary` (credentials made for each campaign, the "
        "default), a mapping {ca-file: ..., cert: ..., key: ...} of PEM files, or `none` (plain TCP: anyone who "
        "reaches the scheduler can run code as you)."
    )


def secure_scheduler(profile: str, raw: Mapping[str, Any], scheduler_options: Mapping[str, Any] | None) -> dict:
    """dask-jobqueue keyword arguments for a scheduler only the campaign may drive: its TLS
    credentials (and where the workers' copies go) and a dashboard on the profile's address."""
    options = dict(scheduler_options or {})
    options.setdefault("dashboard_address", str(raw.get("dashboard-address") or DEFAULT_DASHBOARD))
    options.setdefault("dashboard", bool(config.get("campaign.dask-dashboard")))
    kwargs: dict[str, Any] = {"scheduler_options": options}
    security = security_of(profile, raw, create=True)
    if security is None:
        logger.warning(
            "Profile %r: TLS is off (security: none). Anyone who can reach the scheduler can submit code that runs "
            "as you, with your database credentials.",
            profile,
        )
        return kwargs
    # dask-jobqueue writes the workers' copies here but names the folder in the job script as
    # given, for the node to expand: a `~` there is the node's HOME, maybe not this one.
    shared = controller_path(raw.get("shared-temp-directory") or DEFAULT_SHARED)
    try:
        Path(shared).mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ProfileError(
            f"Profile {profile!r}: shared-temp-directory {shared!r} cannot be created ({err}). Name a folder of "
            f"yours that the compute nodes also see (`djdask.clusters.{profile}.shared-temp-directory`)."
        ) from None
    kwargs.update(security=security, protocol="tls://", shared_temp_directory=shared)
    return kwargs


def client_security(profile: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """``Client`` keyword arguments for a scheduler djdask did not start (``address``,
    ``scheduler-file``): its TLS files when the profile gives them."""
    security = security_of(profile, raw, create=True, default="none")
    return {"security": security} if security is not None else {}
