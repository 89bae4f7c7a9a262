"""djdask: run DataJoint pipelines on Dask workers.

The engine reads a pipeline's dependency DAG and missing keys from the
database, reserves keys in DataJoint's own jobs tables, and runs ``make()`` on
Dask workers.  ``djdask`` is its command line; :class:`Campaign` its Python API.
"""

from __future__ import annotations

from .campaign import Campaign, CampaignSummary, TableSummary
from .database import connect
from .errors import DjdaskError
from .planner import plan, select

__all__ = ["Campaign", "CampaignSummary", "DjdaskError", "TableSummary", "connect", "plan", "select"]
