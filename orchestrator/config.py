"""The ``djdask`` dask-config namespace: shipped defaults and one look-up helper."""

from __future__ import annotations

import os

import dask.config
import yaml

__all__ = ["get", "load_defaults"]


def load_defaults(path: str) -> None:
    """Add the defaults in the YAML file ``path`` to dask config (user settings still win)."""
    with open(path) as f:
        dask.config.update_defaults(yaml.safe_load(f))


load_defaults(os.path.join(os.path.dirname(__file__), "djdask.yaml"))


def get(key: str, override: object = None) -> object:
    """Return ``djdask.<key>`` from dask config; an explicit ``override`` wins.

    Parameters
    ----------
    key : str
        Dotted key below the ``djdask`` namespace, e.g. ``"campaign.batch-size"``.
    override : object, optional
        A value given explicitly by the caller (a CLI flag, an argument); used
        when it is not None.
    """
    if override is not None:
        return override
    return dask.config.get(f"djdask.{key}")
