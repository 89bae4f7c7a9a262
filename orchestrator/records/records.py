"""Campaign records: who ran what, with which code, how it ended and what it cost.

Every campaign registers itself in ``~djdask_campaign``, a table djdask owns in
the first schema (by name) of the pipeline's auto-populated tables, declared by
DataJoint as its jobs tables are (``djdask jobs init`` creates it beside them).
A record holds the campaign's id, module, targets and restriction, user, host,
pid, cluster profiles, code version (git commit and dirty flag of the
pipeline package; djdask's and DataJoint's versions), start, end, state,
exit code, dashboard link, a heartbeat and the accounting
(:mod:`djdask.records.accounting`).

States: ``submitted`` (``djdask submit`` queued its controller), ``running``,
``finished``, ``failed``, ``cancelled``, ``lost``.  A running campaign renews
its heartbeat every ``djdask.campaign.heartbeat`` from its own database
session; it is ``lost`` when the heartbeat is older than three beats and the
session has ended (the liveness rule of the jobs tables, :mod:`djdask.jobs.leases`),
or when the heartbeat is older than ``djdask.campaign.lost-after``.  Whoever
notices first (a campaign, ``djdask campaigns``) marks it and sends the
notification, once.

Its times are the database server's clock in UTC, whatever the time zone of
the session or of the machine that writes or reads them (:mod:`djdask.db.clock`);
records of earlier djdask versions hold their session's time, read as UTC.

Every reservation a campaign makes carries, as DataJoint's own do, the host
and pid of the process that made it; the record keeps the host, pid and start
of each of its controllers (``owners``), so any jobs-table row (reserved, error,
or success with ``jobs.keep_completed``) is traced to the campaign whose
controller held it at the time (:func:`djdask.cli.campaigns.jobs_of_campaign`).
DataJoint's ``version`` column and the rows' job metadata stay exactly what
DataJoint writes: a campaign id in them would make djdask's rows differ from
``populate()``'s.
"""

from __future__ import annotations

import datetime
import importlib
import json
import logging
import os
import re
import secrets
import subprocess
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from typing import Any

from dask.utils import parse_timedelta

from djdask import djcompat
from djdask.config import namespace as config
from djdask.db import clock
from djdask.errors import CampaignConflictError, CampaignNotFoundError, JobsTableError
from djdask.jobs.leases import SessionThread, session_gone
from djdask.jobs.queue import is_permission_error
from djdask.records.notify import campaign_lost

__all__ = [
    "CampaignRecord",
    "DEFINITION",
    "ENDED",
    "RecordKeeper",
    "Records",
    "TABLE_NAME",
    "code_version",
    "description",
    "find",
    "home_schema",
    "is_following",
    "new_id",
    "refuse_second_follower",
    "shown_state",
]

logger = logging.getLogger(__name__)

TABLE_NAME = "~djdask_campaign"
DEFINITION = """
# djdask campaigns: who ran what, with which code, how it ended, what it cost
campaign               : varchar(16)      # the campaign's id
---
module                 : varchar(255)     # the pipeline module
targets=""             : varchar(2047)    # target tables (JSON list; empty: all)
restriction=""         : varchar(2047)    # the restriction (JSON object)
user=""                : varchar(255)     # database user
host=""                : varchar(255)     # where the controller runs
pid=0                  : int32            # the controller's process
connection_id=0        : int64            # the session that renews the heartbeat
clusters=""            : varchar(1023)    # pools and their profiles (JSON object)
code_version=""        : varchar(255)     # git commit of the pipeline package (+dirty), or its version
djdask_version=""      : varchar(64)
datajoint_version=""   : varchar(64)
started                : datetime(3)
heartbeat              : datetime(3)
ended=null             : datetime(3)
state                  : enum('submitted', 'running', 'finished', 'failed', 'cancelled', 'lost')
exit_code=null         : int32
dashboard=""           : varchar(1023)    # the Dask dashboard of the default pool
log=""                 : varchar(1023)    # the controller's log file (submitted campaigns)
job_id=""              : varchar(255)     # the controller's batch job (submitted campaigns)
controllers=0          : int32            # controllers so far (--resubmit hands over)
cancel_requested=null  : datetime(3)      # set by `djdask cancel`
keys_made=0            : int64
errors=0               : int64
accounting=null        : json             # per table and per pool (djdask.records.accounting)
owners=null            : json             # each controller: host, pid, started (UTC), session_utc_offset
"""

#: States of a campaign that no controller runs any more.
ENDED = ("finished", "failed", "cancelled", "lost")

_COLUMNS = (
    "campaign module targets restriction user host pid connection_id clusters code_version djdask_version "
    "datajoint_version started heartbeat ended state exit_code dashboard log job_id controllers "
    "cancel_requested keys_made errors accounting owners"
).split()


def is_following(record: dict[str, Any]) -> bool:
    """A running campaign started with ``--follow`` (its accounting says so from its start)."""
    return record["state"] == "running" and "following" in (record.get("accounting") or {})


def shown_state(record: dict[str, Any]) -> str:
    """The state a user reads: ``following`` for a running following campaign (the stored
    state stays ``running``, which the records' tables of earlier versions know), else the state."""
    return "following" if is_following(record) else record["state"]


def refuse_second_follower(records: Records, module: str, campaign: str) -> None:
    """One following campaign per pipeline: raise naming the one that already follows ``module``."""
    for other in records.rows(f"{records.q('module')} = %s AND {records.q('state')} = 'running'", (module,)):
        if other["campaign"] != campaign and is_following(other):
            raise CampaignConflictError(
                f"Campaign {other['campaign']} already follows {module} (user {other['user']} on {other['host']}, "
                f"pid {other['pid']}, since {clock.utc_text(other['started'], zone=' UTC')}): it makes the keys new "
                f"data brings. A second following campaign would only double the database's work while idle. "
                f"Leave the pipeline to it, or stop it first: djdask cancel {other['campaign']}"
            )


def new_id() -> str:
    """A new campaign id: 8 hex digits (type as few as make it unique)."""
    return secrets.token_hex(4)


def home_schema(tables: dict[str, type]) -> str:
    """The schema that holds a pipeline's campaign records: the first, by name, of its
    auto-populated tables' schemas (the same whichever targets a campaign has)."""
    return min(cls.database for cls in tables.values())


def code_version(module_name: str) -> str:
    """The pipeline package's git commit (``+dirty`` with uncommitted changes to tracked
    files), else its installed distribution's version, else ``""``."""
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return ""
    path = getattr(module, "__file__", None)
    if path:
        folder = os.path.dirname(os.path.abspath(path))
        try:
            commit = subprocess.run(
                ["git", "-C", folder, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
            )
            if commit.returncode == 0 and commit.stdout.strip():
                status = subprocess.run(
                    ["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                return commit.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            pass
    top = module_name.split(".")[0]
    for distribution in packages_distributions().get(top, []):
        try:
            return f"{distribution} {version(distribution)}"
        except PackageNotFoundError:
            continue
    return ""


def description(selection: Any, user: str, clusters: dict[str, str]) -> dict[str, Any]:
    """What a record says of the campaign it describes, whoever writes it (``djdask submit``
    or the campaign itself): module, targets, restriction, user, pools, code and versions."""
    return {
        "module": selection.module_name,
        "targets": list(getattr(selection, "targets", ()) or ()),
        "restriction": json.dumps(selection.restriction, default=str),
        "user": user,
        "clusters": clusters,
        "code_version": code_version(selection.module_name),
        **versions(),
    }


def versions() -> dict[str, str]:
    """djdask's and DataJoint's versions, as a record keeps them."""
    import datajoint  # lazy: DataJoint (1 s; warns unless import_datajoint loads it)

    return {"djdask_version": version("djdask"), "datajoint_version": str(getattr(datajoint, "__version__", ""))}


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    for name in ("targets", "restriction", "clusters", "accounting", "owners"):
        value = row.get(name)
        if isinstance(value, (str, bytes)) and value:
            try:
                row[name] = json.loads(value)
            except ValueError:
                pass
    return row


class Records:
    """The campaign records of one schema (``~djdask_campaign``).

    Parameters
    ----------
    connection : datajoint.Connection
    schema : str
        The schema holding the table (:func:`home_schema`).
    """

    def __init__(self, connection: Any, schema: str) -> None:
        self.connection = connection
        self.schema = schema
        self.table = djcompat.hidden_table(connection, schema, TABLE_NAME, DEFINITION)
        self.name = self.table.full_table_name
        self.q = connection.adapter.quote_identifier

    def exists(self) -> bool:
        return bool(self.table.is_declared)

    def ensure(self) -> bool:
        """Create the table if missing (as DataJoint declares tables); True if it was created."""
        if self.exists():
            return False
        try:
            self.table.declare()
        except Exception as err:
            if is_permission_error(err):
                user = self.connection.conn_info.get("user")
                raise JobsTableError(
                    f"Campaign records need the table {self.name}, which user {user!r} may not create. "
                    f"Have it created once by a user who may (`djdask jobs init MODULE` creates it with the "
                    f"jobs tables), or grant CREATE on schema {self.schema!r}."
                ) from None
            if "already exists" not in str(err) or not self.exists():
                raise
        return True

    def now(self) -> datetime.datetime:
        """The server's time in UTC (naive): the clock of every time in the records."""
        return clock.utc_now(self.connection)

    def insert(self, row: dict[str, Any]) -> None:
        """A new record; ``started`` and ``heartbeat`` are the server's time (UTC)."""
        row = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items()}
        now = self.now()
        row.setdefault("started", now)
        row.setdefault("heartbeat", now)
        names = ", ".join(self.q(k) for k in row)
        marks = ", ".join(["%s"] * len(row))
        self.connection.query(f"INSERT INTO {self.name} ({names}) VALUES ({marks})", args=tuple(row.values()))

    def update(self, campaign: str, where_state: Iterable[str] | None = None, **fields: Any) -> int:
        """Set ``fields`` of a record (``now`` as a value: the server's time, UTC); return rows changed."""
        sets, args = [], []
        for name, value in fields.items():
            if value == "now":
                sets.append(f"{self.q(name)} = {clock.utc_now_sql(self.connection)}")
                continue
            sets.append(f"{self.q(name)} = %s")
            args.append(json.dumps(value) if isinstance(value, (dict, list)) else value)
        sql = f"UPDATE {self.name} SET {', '.join(sets)} WHERE {self.q('campaign')} = %s"
        args.append(campaign)
        if where_state:
            states = list(where_state)
            sql += f" AND {self.q('state')} IN ({', '.join(['%s'] * len(states))})"
            args += states
        return self.connection.query(sql, args=tuple(args)).rowcount

    def rows(self, where: str = "1=1", args: tuple = (), limit: int | None = None) -> list[dict[str, Any]]:
        """Records, newest first."""
        columns = ", ".join(self.q(c) for c in _COLUMNS)
        sql = f"SELECT {columns} FROM {self.name} WHERE {where} ORDER BY {self.q('started')} DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_decoded(dict(zip(_COLUMNS, row))) for row in self.connection.query(sql, args=args).fetchall()]

    def get(self, campaign: str) -> dict[str, Any] | None:
        found = self.rows(f"{self.q('campaign')} = %s", (campaign,))
        return found[0] if found else None

    def cancel_requested(self, campaign: str) -> bool:
        row = self.connection.query(
            f"SELECT {self.q('cancel_requested')}, {self.q('state')} FROM {self.name} WHERE {self.q('campaign')} = %s",
            args=(campaign,),
        ).fetchone()
        return bool(row) and (row[0] is not None or row[1] == "cancelled")

    def mark_lost(self, secrets_: list[str]) -> list[dict[str, Any]]:
        """:meth:`judge_lost`, and notify each campaign this call marked (once: the next
        call finds it marked already)."""
        marked = self.judge_lost() if self.exists() else []
        for record in marked:
            campaign_lost(record, secrets_)
        return marked

    def judge_lost(self) -> list[dict[str, Any]]:
        """Mark running campaigns that stopped beating ``lost``; return those this call marked."""
        q, interval = self.q, self.connection.adapter.interval_expr
        beat = parse_timedelta(config.get("campaign.heartbeat"))
        lost_after = parse_timedelta(config.get("campaign.lost-after"))
        gone, gone_args = session_gone(self.connection, stamp="heartbeat", utc=True)
        now = clock.utc_now_sql(self.connection)
        condition = (
            f"j.{q('state')} = 'running' AND ((j.{q('heartbeat')} < {now} - "
            f"{interval(max(1, int(3 * beat)), 'second')} AND {gone}) OR j.{q('heartbeat')} < "
            f"{now} - {interval(max(1, int(lost_after)), 'second')})"
        )
        candidates = self.connection.query(
            f"SELECT j.{q('campaign')} FROM {self.name} j WHERE {condition}", args=tuple(gone_args)
        ).fetchall()
        marked = []
        for (campaign,) in candidates:
            changed = self.connection.query(
                f"UPDATE {self.name} j SET {q('state')} = 'lost', {q('ended')} = j.{q('heartbeat')} "
                f"WHERE j.{q('campaign')} = %s AND {condition}",
                args=(campaign, *gone_args),
            ).rowcount
            if changed:
                record = self.get(campaign)
                if record is not None:
                    logger.warning(
                        "Campaign %s of %s (user %s on %s, pid %s) stopped beating at %s UTC: marked lost.",
                        campaign,
                        record["module"],
                        record["user"],
                        record["host"],
                        record["pid"],
                        clock.utc_text(record["heartbeat"]),
                    )
                    marked.append(record)
        return marked


def recent(records: Records, campaign: str, limit: int = 10) -> list[dict[str, Any]]:
    """The latest campaigns of ``campaign``'s pipeline, newest first."""
    q = records.q
    module = f"(SELECT {q('module')} FROM {records.name} WHERE {q('campaign')} = %s)"
    return records.rows(f"{q('module')} = {module}", (campaign,), limit=limit)


def record_tables(connection: Any) -> list[Records]:
    """Every schema's campaign records this user can see."""
    rows = connection.query(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = %s ORDER BY table_schema",
        args=(TABLE_NAME,),
    ).fetchall()
    return [Records(connection, schema) for (schema,) in rows]


def find(connection: Any, prefix: str) -> tuple[Records, dict[str, Any]]:
    """The record whose id starts with ``prefix``, in whichever schema holds it."""
    if not re.fullmatch(r"[0-9a-f]{1,16}", prefix or ""):
        raise CampaignNotFoundError(
            f"{prefix!r} is not a campaign id (hex digits, as `djdask campaigns MODULE` lists them)."
        )
    found = []
    for records in record_tables(connection):
        for row in records.rows(f"{records.q('campaign')} LIKE %s", (prefix + "%",)):
            found.append((records, row))
    if not found:
        raise CampaignNotFoundError(
            f"No campaign {prefix!r} in this database's campaign records. List them with "
            "`djdask campaigns MODULE` (a campaign's id is printed when it starts)."
        )
    if len(found) > 1:
        ids = ", ".join(row["campaign"] for _, row in found)
        raise CampaignNotFoundError(f"{prefix!r} starts the ids of several campaigns ({ids}); give more of it.")
    return found[0]


#: Seconds between two looks at the pipeline's recent campaigns while a following campaign is idle.
IDLE_HISTORY = 60.0


class RecordKeeper(SessionThread):
    """A thread, with its own database session, that keeps a running campaign's record.

    Every ``djdask.campaign.cancel-poll`` it looks whether ``djdask cancel`` asked the
    campaign to stop (then calls ``on_cancel``, once); every ``djdask.campaign.heartbeat``
    it renews the heartbeat with its session id and the accounting ``snapshot()`` (and hands
    the recent campaigns of the pipeline to ``history``, for the campaign page); every
    ``djdask.jobs.orphan-check`` it marks other campaigns that stopped beating ``lost``.
    """

    thread_name = "djdask-record"
    what = "Campaign record"

    def __init__(
        self,
        records: Records,
        campaign: str,
        *,
        snapshot: Callable[[], dict[str, Any]],
        on_cancel: Callable[[], None],
        secrets_: list[str],
        history: Callable[[list[dict[str, Any]]], None] | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(records.connection, parse_timedelta(config.get("campaign.cancel-poll")))
        self.idle = idle  # a following campaign with nothing to do: fewer statements (see tick)
        self._since_history = 0.0
        self.records = records
        self.campaign = campaign
        self.history = history
        self.snapshot = snapshot
        self.on_cancel = on_cancel
        self.secrets = secrets_
        self.beat = parse_timedelta(config.get("campaign.heartbeat"))
        self.lost_check = parse_timedelta(config.get("jobs.orphan-check"))
        self.cancelled = False
        self.beats = 0
        self._since_beat = self._since_check = 0.0
        self._mine: Records | None = None  # the records through this thread's own session

    def tick(self, conn: Any) -> None:
        if self._mine is None or self._mine.connection is not conn:
            self._mine = Records(conn, self.records.schema)
        mine = self._mine
        self._since_beat += self.interval
        self._since_check += self.interval
        self._since_history += self.interval
        beat = self._since_beat >= self.beat
        # Idle (a following campaign between arrivals), a cancel is looked for at each beat
        # only, and the pipeline's recent campaigns once a minute: its statements per idle
        # minute stay few, whatever the pipeline's size.
        idle = self.idle is not None and self.idle()
        if not self.cancelled and (beat or not idle) and mine.cancel_requested(self.campaign):
            self.cancelled = True
            logger.warning("Campaign %s: cancelled by `djdask cancel`; stopping.", self.campaign)
            self.on_cancel()
        if beat:
            self._since_beat = 0.0
            self.renew(mine, djcompat.live_connection_id(conn))
            if self.history is not None and (not idle or self._since_history >= IDLE_HISTORY):
                self._since_history = 0.0
                self.history(recent(mine, self.campaign))
        if self._since_check >= self.lost_check:
            self._since_check = 0.0
            mine.mark_lost(self.secrets)

    def renew(self, records: Records, connection_id: int) -> None:
        account = self.snapshot()
        changed = records.update(
            self.campaign,
            ("running", "lost"),
            heartbeat="now",
            connection_id=connection_id,
            state="running",
            keys_made=int(account.get("made") or 0),
            errors=int(account.get("errors") or 0),
            accounting=account,
        )
        self.beats += 1
        if not changed:
            logger.debug("Campaign record %s not renewed: it has ended", self.campaign)


class CampaignCancelledError(CampaignNotFoundError):
    """A submitted campaign was cancelled before its controller started."""


class CampaignRecord:
    """One campaign's own record: registered when it starts, kept while it runs by a
    :class:`RecordKeeper`, closed with its state, exit code and accounting when it ends.

    A campaign started with the id of a ``submitted`` record (``djdask submit``, and each
    successor of ``--resubmit``) takes that record over and adds to its accounting.
    """

    def __init__(self, records: Records, campaign: str, earlier: dict[str, Any] | None) -> None:
        self.records = records
        self.campaign = campaign
        self.earlier = earlier or {}
        self.keeper: RecordKeeper | None = None

    @classmethod
    def open(
        cls, selection: Any, identity: dict[str, Any], pools: Iterable[Any], owner: Any, secrets_: list[str]
    ) -> CampaignRecord:

        connection = selection.connection
        records = Records(connection, home_schema(selection.tables))
        records.ensure()
        records.mark_lost(secrets_)
        campaign = identity["id"]
        if identity.get("follow"):
            refuse_second_follower(records, identity["module"], campaign)
        row = {
            **description(selection, owner.user, {p.name: getattr(p.profile, "name", None) or "local" for p in pools}),
            "host": owner.host,
            "pid": owner.pid,
            "connection_id": djcompat.live_connection_id(connection),
            "state": "running",
        }
        if identity.get("follow"):  # a following campaign says so from its start (is_following)
            row["accounting"] = {"following": {}}
        existing = records.get(campaign)
        # The jobs tables' times are in this session's clock: the offset lets `djdask report`
        # find the rows this controller held (:func:`djdask.cli.campaigns.jobs_of_campaign`).
        owner_now = {
            "host": owner.host,
            "pid": owner.pid,
            "started": str(records.now()),
            "session_utc_offset": clock.session_offset(connection),
        }
        if existing is None:
            records.insert({"campaign": campaign, **row, "controllers": 1, "owners": [owner_now]})
            return cls(records, campaign, None)
        if existing["state"] != "submitted" or existing["cancel_requested"] is not None:
            raise CampaignCancelledError(
                f"Campaign {campaign} is {existing['state']}"
                + (" and was cancelled" if existing["cancel_requested"] is not None else "")
                + "; this controller does not start it. Start a new campaign with `djdask populate` or "
                "`djdask submit`."
            )
        row["clusters"] = {**(existing.get("clusters") or {}), **row["clusters"]}  # keeps its `controller`
        if "accounting" in row:  # a following successor: its predecessors' figures stay
            row["accounting"] = {**(existing.get("accounting") or {}), **row["accounting"]}
        owners = [*(existing.get("owners") or []), owner_now]
        records.update(
            campaign, ("submitted",), **row, heartbeat="now", controllers=existing["controllers"] + 1, owners=owners
        )
        return cls(records, campaign, existing.get("accounting"))

    def keep(
        self,
        dashboard: str | None,
        snapshot: Callable[[], dict],
        on_cancel: Callable[[], None],
        secrets_: list[str],
        history: Callable[[list[dict[str, Any]]], None] | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        """The campaign runs: note its dashboard, hand the recent campaigns to ``history`` (the
        campaign page) and start renewing the record."""
        self.records.update(self.campaign, dashboard=dashboard or "")
        if history is not None:
            history(recent(self.records, self.campaign))
        self.keeper = RecordKeeper(
            self.records,
            self.campaign,
            snapshot=snapshot,
            on_cancel=on_cancel,
            secrets_=secrets_,
            history=history,
            idle=idle,
        ).start()

    def stop_keeping(self) -> None:
        """Stop the keeper's thread (the record stays as it last wrote it)."""
        if self.keeper is not None:
            self.keeper.stop()

    def close(self, state: str, exit_code: int | None, account: dict[str, Any], **fields: Any) -> None:
        """The campaign ended (or handed over, ``state="submitted"``): its last figures, also to
        the keeper's ``history`` (a scheduler the campaign did not start keeps its page)."""
        history = self.keeper.history if self.keeper is not None else None
        self.stop_keeping()
        try:
            self.records.update(
                self.campaign,
                state=state,
                exit_code=exit_code,
                ended=None if state == "submitted" else "now",
                heartbeat="now",
                keys_made=int(account.get("made") or 0),
                errors=int(account.get("errors") or 0),
                accounting=account,
                **fields,
            )
        except Exception as err:  # the database is gone: the record will read `lost`
            logger.warning(
                "Campaign %s: its record could not be closed (%s): it will show as lost.", self.campaign, err
            )
            return
        if history is not None:
            try:
                history(recent(self.records, self.campaign))
            except Exception as err:
                logger.debug("Campaign %s: the final history was not published: %s", self.campaign, err)
