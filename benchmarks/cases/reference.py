"""Case 4: the reference pipeline (``--case reference``)."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.cases.common import (
    WORKERS,
    FirstRow,
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
from benchmarks.cases.sides import Racers

__all__ = ["case_reference"]


def case_reference(quick: bool, work: Path) -> list[dict]:
    """Case 4: the reference pipeline; time to the first CellStats row and in all.
    djdask's streaming campaign vs two processes each running
    ``populate(reserve_jobs=True)`` table by table in topological order."""
    from djdask.pipeline.demo import insert_demo_data
    from djdask.planning.planner import select

    scale = sizes(quick)["reference_scale"]
    prefix, log, sql = schema_prefix(), work / "reference.log", sql_client()
    insert_demo_data(scale)
    selection = select("djdask.pipeline")
    order = [selection.graph.class_names[name] for name in selection.graph.order]
    for cls in selection.tables.values():
        cls().jobs  # noqa: B018
    import djdask.pipeline as pipeline

    expected = len(pipeline.Scan()) * len(pipeline.SegmentationParams())

    theirs = f"{prefix}dj"
    env = prefixed_env(theirs)
    run_python(["-m", "benchmarks.baseline", "declare", "djdask.pipeline", *order, "--demo", scale], env, log)
    settle(sql)
    poll = FirstRow(f"{theirs}_imaging", "__cell_stats")
    poll.start()
    result = Racers([["-m", "benchmarks.baseline", "populate", "djdask.pipeline", *order]] * WORKERS, env, log).run()
    go = max(r["start"] for r in result["reports"])
    poll.stop()
    dj_first, dj_total = poll.seen - go, result["seconds"]
    check_rows(sql, f"{theirs}_imaging", "__cell_stats", expected, "DataJoint's populate")

    with warm_cluster("djdask.pipeline") as client:
        settle(sql)
        poll = FirstRow(f"{prefix}_imaging", "__cell_stats")
        poll.start()
        start = time.time()
        total, summary = campaign("djdask.pipeline", client)
        poll.stop()
    first = poll.seen - start
    check_rows(sql, f"{prefix}_imaging", "__cell_stats", expected, "the djdask campaign")
    sql.close()
    label = f"{WORKERS} x populate(reserve_jobs=True), table by table"
    return [
        row(
            f"4 reference pipeline ({scale}, {expected} CellStats keys): first CellStats row",
            djdask=f"{first:.2f} s",
            baseline=f"{label}: {dj_first:.2f} s",
            ratio=dj_first / first,
            ratio_text=f"{dj_first / first:.1f}x sooner",
            goal=">= 3x sooner",
            met=dj_first / first >= 3,
            djdask_s=round(first, 3),
            baseline_s=round(dj_first, 3),
        ),
        row(
            f"4 reference pipeline ({scale}): all tables",
            djdask=f"{total:.2f} s",
            baseline=f"{label}: {dj_total:.2f} s",
            ratio=dj_total / total,
            ratio_text=f"{dj_total / total:.2f}x",
            goal=">= 1.2x",
            met=dj_total / total >= 1.2,
            djdask_s=round(total, 3),
            baseline_s=round(dj_total, 3),
            tables={
                t.table: {"keys": t.succeeded, "tasks": t.tasks, "first_done": t.first_done, "last_done": t.last_done}
                for t in summary.tables
            },
        ),
    ]
