"""djdask: run DataJoint pipelines on Dask workers.

The engine reads a pipeline's dependency DAG and missing keys from the
database, reserves keys in DataJoint's own jobs tables, and runs ``make()`` on
Dask workers.  ``djdask`` is its command line; :class:`Campaign` its Python API.

The names below are imported when first used: a worker process, a pipeline
module reading ``djdask.config`` or ``djdask status`` then pays only for what it
uses, not for Dask's client and the campaign loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from djdask.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
