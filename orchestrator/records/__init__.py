"""Campaign records (``~djdask_campaign``), their accounting, the notifications of their
end, and controllers submitted as batch jobs.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Accounting",
    "DEFINITION",
    "Durations",
    "ErrorWatch",
    "RecordKeeper",
    "Records",
    "TABLE_NAME",
    "by_name",
    "campaign_ended",
    "campaign_lost",
    "cancel_command",
    "code_version",
    "controller_stop_after",
    "find",
    "hand_over",
    "home_schema",
    "message",
    "new_id",
    "peak_memory",
    "resubmit",
    "send",
    "stop_after",
    "submit_dir",
]

_WHERE = {
    "Accounting": "accounting",
    "DEFINITION": "records",
    "Durations": "accounting",
    "ErrorWatch": "notify",
    "RecordKeeper": "records",
    "Records": "records",
    "TABLE_NAME": "records",
    "by_name": "accounting",
    "campaign_ended": "notify",
    "campaign_lost": "notify",
    "cancel_command": "submit",
    "code_version": "records",
    "controller_stop_after": "submit",
    "find": "records",
    "hand_over": "submit",
    "home_schema": "records",
    "message": "notify",
    "new_id": "records",
    "peak_memory": "accounting",
    "resubmit": "submit",
    "send": "notify",
    "stop_after": "submit",
    "submit_dir": "submit",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
