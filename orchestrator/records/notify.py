"""Telling people that a campaign ended: webhooks (Slack-compatible JSON) and e-mail.

``djdask.campaign.notify`` names the receivers.  Each gets one message per
campaign end (finished, failed, cancelled, lost) with the campaign's id, module,
state, exit code, where it ran, and per table the keys made, errors and
retries.  A receiver that cannot be reached costs a warning, never the
campaign's outcome.  Webhook URLs carry tokens and SMTP passwords are
secrets: neither is logged; a failing receiver is named by its position.
"""

from __future__ import annotations

import datetime
import json
import logging
import smtplib
import threading
import urllib.request
from email.message import EmailMessage
from typing import Any

from djdask.config import namespace as config
from djdask.db.clock import utc_text
from djdask.db.connect import redact

__all__ = ["ErrorWatch", "campaign_ended", "campaign_lost", "long_outage", "message", "send"]

logger = logging.getLogger(__name__)

#: Seconds one receiver may take.
TIMEOUT = 10.0


def message(identity: dict[str, Any], summary: Any, state: str) -> dict[str, Any]:
    """The notification of a campaign end: Slack's ``text`` and the campaign's figures."""
    tables = [
        {
            "table": t.table,
            "made": t.succeeded,
            "errors": t.errors,
            "retries": t.retries,
            "seconds": round(t.seconds, 2),
        }
        for t in summary.tables
    ]
    made, errors = sum(t["made"] for t in tables), sum(t["errors"] for t in tables)
    # A following campaign's normal end is a stop: say that it no longer follows.
    said = "stopped following" if identity.get("follow") and state == "finished" else state
    text = (
        f"djdask campaign {identity.get('id')} of {identity.get('module')} {said} after {summary.seconds:.0f} s: "
        f"{made} key(s) made, {errors} error(s) (user {identity.get('user')} on {identity.get('host')})"
    )
    campaign = {
        "id": identity.get("id"),
        "module": identity.get("module"),
        "state": state,
        "exit_code": summary.exit_code if state != "failed" else 1,
        "user": identity.get("user"),
        "host": identity.get("host"),
        "pid": identity.get("pid"),
        "seconds": round(summary.seconds, 2),
        "tables": tables,
    }
    return {"text": text, "campaign": campaign}


def campaign_ended(identity: dict[str, Any], summary: Any, state: str, secrets: list[str]) -> int:
    """Send the end of a campaign to every configured receiver; return how many took it."""
    settings = config.get("campaign.notify") or {}
    if not settings.get("webhooks") and not settings.get("email"):
        return 0
    for thread in threading.enumerate():  # messages of the run itself go first
        if thread.name == "djdask-notify":
            thread.join(TIMEOUT)
    return send(message(identity, summary, state), secrets)


def campaign_lost(record: dict[str, Any], secrets: list[str]) -> int:
    """Say that a campaign stopped beating (its controller killed, its node gone): sent by
    whoever marked its record ``lost`` (:mod:`djdask.records.records`), once."""
    settings = config.get("campaign.notify") or {}
    if not settings.get("webhooks") and not settings.get("email"):
        return 0
    account = record.get("accounting") or {}
    tables = [
        {"table": t["table"], "made": t.get("made", 0), "errors": t.get("errors", 0), "retries": t.get("retries", 0)}
        for t in account.get("tables") or []
    ]
    text = (
        f"djdask campaign {record['campaign']} of {record['module']} lost: its controller (user {record['user']} "
        f"on {record['host']}, pid {record['pid']}) stopped beating at {utc_text(record['heartbeat'], zone=' UTC')}; "
        f"{record.get('keys_made', 0)} key(s) made, {record.get('errors', 0)} error(s). The next campaign "
        "releases its keys."
    )
    body = {
        "text": text,
        "campaign": {
            "id": record["campaign"],
            "module": record["module"],
            "state": "lost",
            "exit_code": None,
            "user": record["user"],
            "host": record["host"],
            "pid": record["pid"],
            "tables": tables,
        },
    }
    return send(body, secrets)


def long_outage(identity: dict[str, Any], secrets: list[str], words: str) -> None:
    """Tell the receivers, in the background, that a following campaign still waits for its
    database past ``outage-tolerance`` (``words``: what the campaign said)."""
    settings = config.get("campaign.notify") or {}
    if not settings.get("webhooks") and not settings.get("email"):
        return
    body = {
        "text": f"djdask campaign {identity.get('id')} of {identity.get('module')}: {words}",
        "campaign": {"id": identity.get("id"), "module": identity.get("module"), "state": "following", "outage": True},
    }
    threading.Thread(target=send, args=(body, secrets), name="djdask-notify", daemon=True).start()


class ErrorWatch:
    """Says once per table, in the background, when its errors reach
    ``djdask.campaign.notify.error-threshold`` during a campaign; for a following campaign
    (which runs for weeks), once per table and UTC day, counting that day's errors."""

    def __init__(self, identity: dict[str, Any], secrets: list[str], today: Any = None) -> None:
        settings = config.get("campaign.notify") or {}
        self.threshold = settings.get("error-threshold")
        self.active = bool(self.threshold) and bool(settings.get("webhooks") or settings.get("email"))
        self.identity, self.secrets = identity, secrets
        self.told: set[str] = set()
        self.today = today or (lambda: datetime.datetime.now(datetime.timezone.utc).date())
        self.day = self.today()
        self.seen: dict[str, int] = {}  # each table's errors at the last call
        self.before: dict[str, int] = {}  # and at the start of the day (following campaigns)

    def see(self, table: str, errors: int) -> bool:
        """Note ``table``'s errors so far; True when this call told the receivers."""
        if not self.active:
            return False
        counted, period = errors, ""
        if self.identity.get("follow"):
            day = self.today()
            if day != self.day:
                self.day, self.told, self.before = day, set(), dict(self.seen)
            self.seen[table] = errors
            counted, period = errors - self.before.get(table, 0), f" today ({day.isoformat()}, UTC)"
        if counted < self.threshold or table in self.told:
            return False
        self.told.add(table)
        text = (
            f"djdask campaign {self.identity.get('id')} of {self.identity.get('module')}: table {table} has "
            f"{counted} error(s){period}, past the threshold of {self.threshold}; the campaign goes on "
            f"(djdask errors {self.identity.get('module')} --table {table})"
        )
        body = {
            "text": text,
            "campaign": {
                "id": self.identity.get("id"),
                "module": self.identity.get("module"),
                "state": "running",
                "table": table,
                "errors": counted,
            },
        }
        threading.Thread(target=send, args=(body, self.secrets), name="djdask-notify", daemon=True).start()
        return True


def send(body: dict[str, Any], secrets: list[str]) -> int:
    """Send ``body`` to every configured receiver; return how many took it."""
    settings = config.get("campaign.notify") or {}
    webhooks, email = list(settings.get("webhooks") or []), settings.get("email")
    sent = 0
    for number, url in enumerate(webhooks, start=1):
        try:
            request = urllib.request.Request(
                url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                response.read()
            sent += 1
        except Exception as err:  # the campaign's outcome stands; say so without the URL (its token)
            reason = redact(f"{type(err).__name__}: {err}", [*secrets, url])
            logger.warning("Notification to webhook %d of djdask.campaign.notify failed: %s", number, reason[:300])
    if email:
        try:
            _mail(email, body)
            sent += 1
        except Exception as err:
            password = str(email.get("password") or "")
            reason = redact(f"{type(err).__name__}: {err}", [*secrets, *([password] if password else [])])
            logger.warning("Notification by e-mail through %s failed: %s", email.get("host"), reason[:300])
    return sent


def _mail(settings: dict[str, Any], body: dict[str, Any]) -> None:
    mail = EmailMessage()
    mail["Subject"] = body["text"].split(":", 1)[0]
    mail["From"] = settings["from"]
    mail["To"] = ", ".join(settings["to"])
    mail.set_content(body["text"] + "\n\n" + json.dumps(body["campaign"], indent=2) + "\n")
    with smtplib.SMTP(settings["host"], int(settings.get("port") or 25), timeout=TIMEOUT) as smtp:
        if settings.get("starttls"):
            smtp.starttls()
        if settings.get("username"):
            smtp.login(settings["username"], settings.get("password") or "")
        smtp.send_message(mail)
