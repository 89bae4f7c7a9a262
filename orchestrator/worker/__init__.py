"""What runs on a Dask worker: the executor of a batch, the watchdog nanny plugin, and the
isolation of a make()'s global random generators.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Beacon",
    "LIFETIME_ENV",
    "PLUGIN_NAME",
    "PipelinePlugin",
    "STAGGER_ENV",
    "TOPIC",
    "WatchdogPlugin",
    "beacon_path",
    "describe_exit",
    "is_isolated",
    "isolate",
    "owned_by_this_thread",
    "run_batch",
    "this_thread_owns",
]

_WHERE = {
    "Beacon": "watchdog",
    "LIFETIME_ENV": "executor",
    "PLUGIN_NAME": "executor",
    "PipelinePlugin": "executor",
    "STAGGER_ENV": "executor",
    "TOPIC": "watchdog",
    "WatchdogPlugin": "watchdog",
    "beacon_path": "watchdog",
    "describe_exit": "watchdog",
    "is_isolated": "randomness",
    "isolate": "randomness",
    "owned_by_this_thread": "randomness",
    "run_batch": "executor",
    "this_thread_owns": "randomness",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
