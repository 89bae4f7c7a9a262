"""The ``djdask`` dask-config namespace (defaults shipped in ``djdask.yaml``), the settings'
schema (``djdask-schema.yaml``) and the check of a user's settings against it.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "check",
    "describe",
    "get",
    "leaves",
    "load_dask_config",
    "load_defaults",
    "markdown",
    "resolve",
    "settings",
    "shown",
    "source",
]

_WHERE = {
    "check": "schema",
    "describe": "schema",
    "get": "namespace",
    "leaves": "schema",
    "load_dask_config": "schema",
    "load_defaults": "namespace",
    "markdown": "schema",
    "resolve": "namespace",
    "settings": "schema",
    "shown": "schema",
    "source": "schema",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
