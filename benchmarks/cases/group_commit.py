"""Case 6: group commit (``--case group``)."""

from __future__ import annotations

import importlib
import statistics
from pathlib import Path

from benchmarks.cases.common import (
    THROUGHPUT,
    WORKERS,
    campaign,
    check_rows,
    prefixed_env,
    row,
    run_python,
    schema_prefix,
    sizes,
    sql_client,
    warm_cluster,
)
from benchmarks.cases.sides import HALVES, ROUNDS, prepare_ceiling, raced, take_turns

__all__ = ["case_group"]


def case_group(quick: bool, work: Path) -> list[dict]:
    """Case 6, group commit: ``Fast`` (a make() that inserts one row) with
    ``djdask.campaign.group-commit: [Fast]``, 2 workers, against the ceiling (two
    connections, INSERT + COMMIT per key) and DataJoint's direct ``populate()`` in two
    processes on halves of the keys (DataJoint's per-key transaction, nothing on top).
    The sides take turns, ROUNDS times; the medians count."""
    import dask

    n = sizes(quick)["group_keys"]
    prefix, log = schema_prefix(), work / "group.log"
    sql = sql_client()
    tp = importlib.import_module(THROUGHPUT)
    tp.Fast().jobs  # noqa: B018
    ours = f"{prefix}_throughput"
    sql.fill_integers(ours, "key", "k", n)
    halves_env = prefixed_env(f"{prefix}d2")
    run_python(["-m", "benchmarks.baseline", "declare", THROUGHPUT, "Fast"], halves_env, log)
    halves = f"{prefix}d2_throughput"
    sql.fill_integers(halves, "key", "k", n)
    ceiling, ceiling_cmd = prepare_ceiling(sql, prefix, halves, n)

    def grouped() -> float:
        seconds, summary = campaign(THROUGHPUT, client, targets=["Fast"])
        check_rows(sql, ours, "__fast", n, "the group-commit campaign")
        if not summary.tables[0].group_commit:
            raise RuntimeError("the campaign did not run Fast with group commit")
        return seconds

    emptied = [(ceiling, "ceiling"), (halves, "__fast"), (ours, "__fast"), (ours, "~~fast")]
    with warm_cluster(THROUGHPUT) as client, dask.config.set({"djdask.campaign.group-commit": ["Fast"]}):
        sides = {
            "ceiling": raced(sql, ceiling_cmd, halves_env, log, (ceiling, "ceiling", n), "the ceiling"),
            "halves": raced(
                sql, HALVES, halves_env, log, (halves, "__fast", n), "DataJoint's direct populate on halves"
            ),
            "djdask": grouped,
        }
        runs = take_turns(sql, sides, emptied)
    sql.close()
    median = {side: statistics.median(seconds) for side, seconds in runs.items()}
    rate, raw_rate, direct_rate = (n / median[side] for side in ("djdask", "ceiling", "halves"))
    data = {
        "keys": n,
        "rounds": ROUNDS,
        "runs_s": {side: [round(x, 3) for x in seconds] for side, seconds in runs.items()},
        "group_commit_keys": dask.config.get("djdask.campaign.group-commit-keys"),
    }
    return [
        row(
            f"6 group commit: {n:,} keys, make() inserts one row, {WORKERS} workers",
            djdask=f"{rate:,.0f} keys/s",
            baseline=f"{WORKERS} connections, INSERT + COMMIT per key: {raw_rate:,.0f} keys/s",
            ratio=rate / raw_rate,
            ratio_text=f"{rate / raw_rate:.2f}x",
            goal=">= 1.5x",
            met=rate / raw_rate >= 1.5,
            note="the whole campaign (plan, enqueue, claim, make, complete) against bare INSERT + COMMIT",
            **data,
        ),
        row(
            f"6 group commit vs DataJoint's direct populate(): {n:,} keys",
            djdask=f"{rate:,.0f} keys/s",
            baseline=f"{WORKERS} x populate() direct, each on half the keys: {direct_rate:,.0f} keys/s",
            ratio=rate / direct_rate,
            ratio_text=f"{rate / direct_rate:.2f}x",
            goal=">= 3x",
            met=rate / direct_rate >= 3,
            **data,
        ),
    ]
