"""The ``djdask`` dask-config namespace (defaults shipped in ``djdask.yaml``), the settings'
schema (``djdask-schema.yaml``) and the check of a user's settings against it.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "check",
    "describe",
    "get",
    "load_dask_config",
    "load_defaults",
    "markdown",
    "resolve",
    "settings",
    "source",
]

_WHERE = {
    "check": "schema",
    "describe": "schema",
    "get": "namespace",
    "load_dask_config": "schema",
    "load_defaults": "namespace",
    "markdown": "schema",
    "resolve": "namespace",
    "settings": "schema",
    "source": "schema",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
