"""Cases 1 and 2: throughput and efficiency (``--case throughput``)."""

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
    settle,
    sizes,
    sql_client,
    warm_cluster,
)
from benchmarks.cases.sides import HALVES, ROUNDS, Racers, prepare_ceiling, raced, take_turns

__all__ = ["case_throughput"]


def case_throughput(quick: bool, work: Path) -> list[dict]:
    """Case 1, a make() that inserts one row: djdask vs two processes of DataJoint's
    ``populate(reserve_jobs=True)`` vs the ceiling (two connections, INSERT + COMMIT per key).
    Case 2, a 50 ms make(): djdask's wall time against keys x 50 ms / workers.

    For reference, DataJoint's ``populate()`` in direct mode (no jobs table) gives
    the cost of DataJoint's own per-key transaction, which any tool that calls
    ``make()`` through DataJoint pays: in one process (the per-key cost of case 2),
    and in two processes at once on halves of the keys (the most two workers that
    run DataJoint's per-key path can do on this machine, nothing else on top)."""
    size = sizes(quick)
    n, n_slow, n_direct = size["throughput_keys"], size["efficiency_keys"], size["direct_keys"]
    prefix, log = schema_prefix(), work / "throughput.log"
    sql = sql_client()
    tp = importlib.import_module(THROUGHPUT)
    for table in (tp.Fast, tp.Slow):
        table().jobs  # noqa: B018  (declared before the clock, as on DataJoint's side)
    ours = f"{prefix}_throughput"
    sql.fill_integers(ours, "key", "k", n)
    sql.fill_integers(ours, "slow_key", "s", n_slow)

    copies = {}
    for side, keys, slow_keys in (("dj", n, n_slow), ("dd", n_direct, n_direct // 25), ("d2", n, 0)):
        env = prefixed_env(f"{prefix}{side}")
        run_python(["-m", "benchmarks.baseline", "declare", THROUGHPUT, "Fast", "Slow"], env, log)
        schema = f"{prefix}{side}_throughput"
        sql.fill_integers(schema, "key", "k", keys)
        if slow_keys:
            sql.fill_integers(schema, "slow_key", "s", slow_keys)
        copies[side] = env, schema
    env, theirs = copies["dj"]

    ceiling, ceiling_cmd = prepare_ceiling(sql, prefix, theirs, n)
    populate = [["-m", "benchmarks.baseline", "populate", THROUGHPUT, "Fast"]] * WORKERS
    halves_env, halves = copies["d2"]
    direct_env, direct = copies["dd"]
    dd = {}
    for table, keys in (("Fast", n_direct), ("Slow", n_direct // 25)):
        settle(sql)
        dd[table] = (
            Racers([["-m", "benchmarks.baseline", "populate", THROUGHPUT, table, "--direct"]], direct_env, log).run()[
                "seconds"
            ]
            / keys
        )
        check_rows(sql, direct, f"__{table.lower()}", keys, "DataJoint's direct populate")

    summaries = []

    def ours_fast() -> float:
        seconds, summary = campaign(THROUGHPUT, client, targets=["Fast"])
        check_rows(sql, ours, "__fast", n, "the djdask campaign")
        summaries.append(summary)
        return seconds

    emptied = [
        (ceiling, "ceiling"),
        (theirs, "__fast"),
        (theirs, "~~fast"),
        (halves, "__fast"),
        (ours, "__fast"),
        (ours, "~~fast"),
    ]  # what the sides wrote, emptied before the next round
    with warm_cluster(THROUGHPUT) as client:
        sides = {
            "ceiling": raced(sql, ceiling_cmd, env, log, (ceiling, "ceiling", n), "the ceiling"),
            "datajoint": raced(sql, populate, env, log, (theirs, "__fast", n), "DataJoint's populate"),
            "halves": raced(
                sql, HALVES, halves_env, log, (halves, "__fast", n), "DataJoint's direct populate on halves"
            ),
            "djdask": ours_fast,
        }
        runs = take_turns(sql, sides, emptied)
        fast = summaries[-1]
        settle(sql)
        slow_s, slow = campaign(THROUGHPUT, client, targets=["Slow"])
        check_rows(sql, ours, "__slow", n_slow, "the djdask campaign")
    populate = [["-m", "benchmarks.baseline", "populate", THROUGHPUT, "Slow"]] * WORKERS
    settle(sql)
    dj_slow = Racers(populate, env, log).run()
    check_rows(sql, theirs, "__slow", n_slow, "DataJoint's populate")
    sql.close()

    median = {side: statistics.median(seconds) for side, seconds in runs.items()}
    rate, dj_rate, raw_rate = n / median["djdask"], n / median["datajoint"], n / median["ceiling"]
    direct_rate = n / median["halves"]  # DataJoint's per-key transaction on each worker, nothing else
    ideal = n_slow * tp.SLOW_SECONDS / WORKERS
    achievable = n_slow * dd["Slow"] / WORKERS
    fast_table, slow_table = fast.tables[0], slow.tables[0]
    common = {
        "keys": n,
        "djdask_s": round(median["djdask"], 3),
        "tasks": fast_table.tasks,
        "rounds": ROUNDS,
        "runs_s": {side: [round(x, 3) for x in seconds] for side, seconds in runs.items()},
        "largest_batch": fast_table.largest_batch,
        "direct_keys_per_s_one_process": round(1 / dd["Fast"], 1),
        "direct_keys_per_s_two_processes": round(direct_rate, 1),
    }
    direct_note = (
        f"DataJoint's populate() direct (no jobs table): one process {1 / dd['Fast']:,.0f} keys/s; "
        f"{WORKERS} processes at once, each on half the keys, {direct_rate:,.0f} keys/s: DataJoint's "
        f"own per-key transaction, which djdask's workers run, reaches {direct_rate / raw_rate:.0%} "
        f"of the ceiling, and djdask {rate / direct_rate:.0%} of that"
    )
    return [
        row(
            f"1 throughput: {n:,} keys, make() inserts one row, {WORKERS} workers",
            djdask=f"{rate:,.0f} keys/s",
            baseline=f"{WORKERS} x populate(reserve_jobs=True): {dj_rate:,.0f} keys/s",
            ratio=rate / dj_rate,
            ratio_text=f"{rate / dj_rate:.2f}x",
            goal=">= 3x",
            met=rate / dj_rate >= 3,
            baseline_s=round(median["datajoint"], 3),
            **common,
        ),
        row(
            f"1 throughput vs the ceiling: {n:,} keys",
            djdask=f"{rate:,.0f} keys/s",
            baseline=f"{WORKERS} connections, INSERT + COMMIT per key: {raw_rate:,.0f} keys/s",
            ratio=rate / raw_rate,
            ratio_text=f"{rate / raw_rate:.1%}",
            goal=">= 50%",
            met=rate / raw_rate >= 0.5,
            note=direct_note,
            ceiling_s=round(median["ceiling"], 3),
            **common,
        ),
        row(
            f"2 efficiency: {n_slow:,} keys, {tp.SLOW_SECONDS * 1000:.0f} ms make(), {WORKERS} workers",
            djdask=f"{slow_s:.2f} s",
            baseline=f"ideal {n_slow:,} x {tp.SLOW_SECONDS * 1000:.0f} ms / {WORKERS}: {ideal:.2f} s",
            ratio=ideal / slow_s,
            ratio_text=f"{ideal / slow_s:.1%}",
            goal=">= 90%",
            met=ideal / slow_s >= 0.9,
            note=f"a key costs {dd['Slow'] * 1000:.1f} ms through DataJoint's populate() (direct, one process), "
            f"so {achievable:.2f} s is the most any DataJoint-based tool can do: djdask reaches "
            f"{achievable / slow_s:.0%} of that; DataJoint's {WORKERS} x populate(reserve_jobs=True): "
            f"{dj_slow['seconds']:.2f} s ({ideal / dj_slow['seconds']:.0%} of ideal)",
            keys=n_slow,
            djdask_s=round(slow_s, 3),
            ideal_s=ideal,
            achievable_s=round(achievable, 3),
            direct_ms_per_key=round(dd["Slow"] * 1000, 2),
            datajoint_s=round(dj_slow["seconds"], 3),
            tasks=slow_table.tasks,
            largest_batch=slow_table.largest_batch,
        ),
    ]
