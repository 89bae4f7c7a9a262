"""The campaign loop and its pieces: each table's state, batch sizing, the batches in flight,
the complete step, outcomes and retries, lost workers, pools and the argument checks.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Batch",
    "BatchSizer",
    "Campaign",
    "CampaignSummary",
    "Classified",
    "Completion",
    "Decision",
    "InFlight",
    "Losses",
    "PRIORITY_RANGE",
    "Pool",
    "Pools",
    "RetryPolicy",
    "TableState",
    "TableSummary",
    "Verdict",
    "check_count",
    "check_duration",
    "check_make_kwargs",
    "check_priority",
    "claim_and_submit",
    "classify",
    "covers",
    "duration_text",
    "ending",
    "group_commit_hints",
    "group_commits",
    "judge",
    "make_kwargs_arg",
    "order_hints",
    "performance_report",
    "pools_arg",
    "resources_of",
    "stream",
    "sweep",
    "table_states",
    "table_timeout",
    "unlock",
    "worker_of",
]

_WHERE = {
    "Batch": "inflight",
    "BatchSizer": "batching",
    "Campaign": "loop",
    "CampaignSummary": "loop",
    "Classified": "outcomes",
    "Completion": "complete",
    "Decision": "outcomes",
    "InFlight": "inflight",
    "Losses": "losses",
    "PRIORITY_RANGE": "checks",
    "Pool": "pools",
    "Pools": "pools",
    "RetryPolicy": "outcomes",
    "TableState": "loop",
    "TableSummary": "loop",
    "Verdict": "losses",
    "check_count": "checks",
    "check_duration": "checks",
    "check_make_kwargs": "checks",
    "check_priority": "checks",
    "claim_and_submit": "inflight",
    "classify": "outcomes",
    "covers": "pools",
    "duration_text": "losses",
    "ending": "loop",
    "group_commit_hints": "tables",
    "group_commits": "checks",
    "judge": "losses",
    "make_kwargs_arg": "checks",
    "order_hints": "tables",
    "performance_report": "loop",
    "pools_arg": "checks",
    "resources_of": "pools",
    "stream": "complete",
    "sweep": "loop",
    "table_states": "loop",
    "table_timeout": "checks",
    "unlock": "tables",
    "worker_of": "losses",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
