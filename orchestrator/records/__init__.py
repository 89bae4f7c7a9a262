"""Campaign records (``~djdask_campaign``), their accounting and the notifications of their
end.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "Accounting",
    "CampaignRecord",
    "DEFINITION",
    "Durations",
    "ENDED",
    "ErrorWatch",
    "RecordKeeper",
    "Records",
    "TABLE_NAME",
    "by_name",
    "campaign_ended",
    "campaign_lost",
    "code_version",
    "description",
    "find",
    "home_schema",
    "is_following",
    "long_outage",
    "message",
    "new_id",
    "send",
    "shown_state",
]

_WHERE = {
    "Accounting": "accounting",
    "CampaignRecord": "records",
    "DEFINITION": "records",
    "Durations": "accounting",
    "ENDED": "records",
    "ErrorWatch": "notify",
    "RecordKeeper": "records",
    "Records": "records",
    "TABLE_NAME": "records",
    "by_name": "accounting",
    "campaign_ended": "notify",
    "campaign_lost": "notify",
    "code_version": "records",
    "description": "records",
    "find": "records",
    "home_schema": "records",
    "is_following": "records",
    "long_outage": "notify",
    "message": "notify",
    "new_id": "records",
    "send": "notify",
    "shown_state": "records",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
