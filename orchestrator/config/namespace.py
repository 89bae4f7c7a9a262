"""The ``djdask`` dask-config namespace: shipped defaults and one look-up helper."""

from __future__ import annotations

import os

import dask.config
import yaml

__all__ = ["get", "load_defaults", "resolve"]


def load_defaults(path: str) -> None:
    """Add the defaults in the YAML file ``path`` to dask config (user settings still win)."""
    with open(path) as f:
        dask.config.update_defaults(yaml.safe_load(f))


load_defaults(os.path.join(os.path.dirname(__file__), "djdask.yaml"))


def get(key: str) -> object:
    """Return ``djdask.<key>`` from dask config: the user's setting, else the shipped default.

    Parameters
    ----------
    key : str
        Dotted key below the ``djdask`` namespace, e.g. ``"campaign.max-batch-size"``.
    """
    return dask.config.get(f"djdask.{key}")


def resolve(key: str, explicit: object = None) -> object:
    """The value of a setting: ``explicit`` (a CLI flag, a keyword argument) when it is
    not None, else ``djdask.<key>`` from dask config, else the shipped default."""
    return get(key) if explicit is None else explicit
