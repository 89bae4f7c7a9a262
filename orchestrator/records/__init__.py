"""Campaign records (``~djdask_campaign``), their accounting, the notifications of their
end, and controllers submitted as batch jobs.

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
    "cancel_command",
    "code_version",
    "controller_stop_after",
    "description",
    "find",
    "hand_over",
    "home_schema",
    "message",
    "new_id",
    "resubmit",
    "send",
    "stop_after",
    "submit_dir",
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
    "cancel_command": "submit",
    "code_version": "records",
    "controller_stop_after": "submit",
    "description": "records",
    "find": "records",
    "hand_over": "submit",
    "home_schema": "records",
    "message": "notify",
    "new_id": "records",
    "resubmit": "submit",
    "send": "notify",
    "stop_after": "submit",
    "submit_dir": "submit",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
