"""Case 8: many tables (``--case tables``)."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.cases.common import (
    FirstRow,
    campaign,
    prefixed_env,
    row,
    run_python,
    schema_prefix,
    settle,
    sql_client,
    warm_cluster,
)

__all__ = ["case_tables"]

MANY = "many"  # tests/pipelines/many.py: 200 Computed tables over 4 schemas

#: DataJoint's own view of a pipeline's progress: each table's progress() (missing of total).
DJ_PROGRESS = (
    "import many\nimport datajoint as dj\n"
    "tables = [v for v in vars(many).values() if isinstance(v, type) and issubclass(v, dj.Computed)]\n"
    "print(sum(t().progress(display=False)[0] for t in tables))\n"
)
#: DataJoint's own view of the jobs: each table's jobs table, counted by status.
DJ_JOBS = (
    "import many\nimport datajoint as dj\n"
    "tables = [v for v in vars(many).values() if isinstance(v, type) and issubclass(v, dj.Computed)]\n"
    "print(sum(len(t().jobs & {'status': s}) for t in tables for s in ('pending', 'reserved', 'error')))\n"
)


def _timed_command(args: Sequence[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    run_python(args, env, log)
    return time.perf_counter() - t0


def case_tables(quick: bool, work: Path) -> list[dict]:
    """Case 8, a pipeline of 200 tables (tests/pipelines/many.py): ``djdask plan`` and
    ``djdask status`` as whole commands (Python's start and imports included) against
    DataJoint's own ``progress()`` and jobs-table counts over the same tables, and a
    campaign's start: from ``Campaign(...)`` to the first row made, on warm workers."""
    pipelines = Path(__file__).resolve().parents[2] / "tests" / "pipelines"
    sys.path.insert(0, str(pipelines))
    env = {
        **prefixed_env(schema_prefix()),
        "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(pipelines)]),
    }
    log = work / "tables.log"
    many = importlib.import_module(MANY)
    many.Session.insert1({"session": 0})
    sql = sql_client()
    settle(sql)
    dj_plan = _timed_command(["-c", DJ_PROGRESS], env, log)
    plan_s = _timed_command(["-m", "djdask.cli", "plan", MANY, "--json"], env, log)

    def started(client: Any, session: int) -> tuple[float, float]:
        """Seconds from Campaign() to the session's first row made, and of the whole campaign."""
        settle(sql)
        first = FirstRow(f"{schema_prefix()}_many_0", "__step000", interval=0.02, where=f"session = {session}")
        t0 = time.time()
        first.start()
        seconds, summary = campaign(MANY, client)
        first.stop()
        made = sum(t.succeeded for t in summary.tables)
        if made != 200:
            raise RuntimeError(f"the campaign made {made} keys, expected 200")
        return (first.seen or time.time()) - t0, seconds

    with warm_cluster(MANY) as client:
        first_start_s, first_s = started(client, 0)  # the pipeline's first campaign: 200 jobs tables declared
        many.Session.insert1({"session": 1})  # keys missing again, now with jobs tables
        settle(sql)
        dj_status = _timed_command(["-c", DJ_JOBS], env, log)
        status_s = _timed_command(["-m", "djdask.cli", "status", MANY, "--json"], env, log)
        plan_jobs_s = _timed_command(["-m", "djdask.cli", "plan", MANY, "--json"], env, log)
        start_s, seconds = started(client, 1)
    sql.close()
    data = {
        "tables": 200,
        "plan_with_jobs_tables_s": round(plan_jobs_s, 2),
        "campaign_s": round(seconds, 2),
        "first_campaign_start_s": round(first_start_s, 2),
        "first_campaign_s": round(first_s, 2),
    }
    return [
        row(
            "8 many tables: djdask plan, 200 tables",
            djdask=f"{plan_s:.1f} s ({plan_jobs_s:.1f} s with jobs tables)",
            baseline=f"DataJoint's progress() of each table: {dj_plan:.1f} s",
            ratio=dj_plan / plan_s,
            ratio_text=f"{dj_plan / plan_s:.2f}x",
            goal="<= 5 s",
            met=max(plan_s, plan_jobs_s) <= 5,
            note="whole commands, Python's start and the pipeline's import included",
            plan_s=round(plan_s, 2),
            datajoint_s=round(dj_plan, 2),
            **data,
        ),
        row(
            "8 many tables: djdask status, 200 tables",
            djdask=f"{status_s:.1f} s",
            baseline=f"DataJoint's jobs tables counted by status: {dj_status:.1f} s",
            ratio=dj_status / status_s,
            ratio_text=f"{dj_status / status_s:.2f}x",
            goal="<= 5 s",
            met=status_s <= 5,
            status_s=round(status_s, 2),
            datajoint_s=round(dj_status, 2),
            **data,
        ),
        row(
            "8 many tables: campaign start, 200 tables",
            djdask=f"first row {start_s:.1f} s after Campaign()",
            baseline=f"the whole campaign: {seconds:.1f} s for 200 keys",
            ratio=start_s / seconds,
            ratio_text=f"{start_s / seconds:.0%} of it",
            goal="<= 5 s",
            met=start_s <= 5,
            note="Campaign() loads the pipeline and its graph, makes 200 jobs tables' states and enqueues; "
            f"2 warm workers; the pipeline's first campaign, which also declares its 200 jobs tables: "
            f"{first_start_s:.1f} s",
            start_s=round(start_s, 2),
            **data,
        ),
    ]
