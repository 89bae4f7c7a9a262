"""djdask: run DataJoint pipelines on Dask workers.

The engine reads a pipeline's dependency DAG and missing keys from the
database, reserves keys in DataJoint's own jobs tables, and runs ``make()`` on
Dask workers.  ``djdask`` is its command line; :class:`Campaign` its Python API.

The names below are imported when first used: a worker process, a pipeline
module reading ``djdask.config`` or ``djdask status`` then pays only for what it
uses, not for Dask's client and the campaign loop.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from djdask.campaign.loop import Campaign, CampaignSummary, TableSummary
    from djdask.db.connect import connect
    from djdask.errors import DjdaskError
    from djdask.planning.planner import plan, select

__all__ = ["Campaign", "CampaignSummary", "DjdaskError", "TableSummary", "connect", "plan", "select"]

_WHERE = {
    "Campaign": "campaign.loop",
    "CampaignSummary": "campaign.loop",
    "TableSummary": "campaign.loop",
    "connect": "db.connect",
    "DjdaskError": "errors",
    "plan": "planning.planner",
    "select": "planning.planner",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
