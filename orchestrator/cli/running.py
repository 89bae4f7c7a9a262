"""The commands that run a campaign: ``djdask populate`` and ``djdask demo``.

Arguments, cluster profiles and the store are checked before anything is written; the
campaign loop is imported only once a campaign is about to run: ``populate --dry-run`` and a
refused argument do not wait for it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from djdask.campaign.checks import make_kwargs_arg, pools_arg
from djdask.cli.inspection import plan
from djdask.cli.output import print_table
from djdask.clusters import resolve
from djdask.db.connect import connect, describe
from djdask.errors import InvalidInputError
from djdask.monitor.progress import TerminalProgress
from djdask.planning.planner import select, table_counts
from djdask.storage.stores import configure_store

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

__all__ = ["demo", "populate", "run_campaign"]


def populate(args: argparse.Namespace) -> int:
    """``djdask populate MODULE``: a campaign over the pipeline's auto-populated tables."""
    if args.resubmit and not args.campaign_id:
        raise InvalidInputError(
            "--resubmit is for campaigns whose controller `djdask submit` started: submit it with "
            "`djdask submit MODULE --cluster PROFILE --resubmit`."
        )
    args.make_kwargs = make_kwargs_arg(args.make_kwargs)
    for profile in (pools_arg(args.cluster) or {}).values():  # a bad profile is reported before anything else
        resolve(profile).validate()
    connect()
    if args.dry_run:
        args.json = False
        return plan(args)
    print(f"Arrays: {configure_store(args.store)}", flush=True)
    return run_campaign(args.module, args, args.target, args.restrict)


def demo(args: argparse.Namespace) -> int:
    """``djdask demo``: the reference pipeline's rows inserted, then a campaign over it."""
    connect()
    print(f"Database: {describe()}", flush=True)
    print(f"Arrays: {configure_store(args.store)}", flush=True)
    # lazy: importing the reference pipeline declares its schemas, on the database connect() chose
    from djdask.pipeline.demo import insert_demo_data

    scans = insert_demo_data(args.scale)
    print(f"Reference pipeline ready: {scans} scans at scale {args.scale!r}.", flush=True)
    return run_campaign("djdask.pipeline", args)


def run_campaign(
    module: str, args: argparse.Namespace, targets: Sequence[str] = (), restrictions: Sequence[str] = ()
) -> int:
    """Run the campaign the arguments describe on ``module``'s tables (``targets`` and their
    ancestors, keys matching ``restrictions``), print its summary, and return its exit code."""
    # lazy: only a campaign that runs needs the loop (0.1-0.2 s to import): not --dry-run, not a refusal
    from djdask.campaign.loop import Campaign
    from djdask.cli.submit import hand_over, stop_after

    selection = select(module, targets, restrictions)
    campaign = Campaign(
        selection,
        workers=args.workers,
        progress=TerminalProgress(sys.stdout),
        target_duration=getattr(args, "target_duration", None),
        max_calls=getattr(args, "max_calls", None),
        priority=getattr(args, "priority", None),
        cluster=pools_arg(getattr(args, "cluster", None)),
        performance_report=getattr(args, "performance_report", None),
        make_kwargs=getattr(args, "make_kwargs", None),
        store=getattr(args, "store", None),
        campaign_id=getattr(args, "campaign_id", None),
        follow=getattr(args, "follow", False),
    )
    if getattr(args, "stop_after", None):
        stop_after(campaign, args.stop_after, resubmit=args.resubmit)

    def stop(signum: int, frame: Any) -> None:
        # The first Ctrl-C or SIGTERM stops gracefully; the second aborts.
        if campaign.stopping:
            raise KeyboardInterrupt
        print(
            "\ndjdask: stopping: no new keys; running ones may finish (Ctrl-C again to abort).",
            file=sys.stderr,
            flush=True,
        )
        campaign.request_stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = campaign.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if campaign.handing_over:
        return hand_over(campaign, summary)
    counts = {r["table"]: r for r in table_counts(selection.graph, selection.tables)}
    rows = [
        {
            "table": t.table,
            "made": t.succeeded,
            "errors": t.errors,
            "retries": t.retries,
            "tasks": t.tasks,
            "seconds": f"{t.seconds:.2f}",
            "rows": counts[t.table]["rows"],
            "pending": counts[t.table]["pending"],
        }
        for t in summary.tables
    ]
    print()
    print_table(rows, ["table", "made", "errors", "retries", "tasks", "seconds", "rows", "pending"])
    state = "stopped" if summary.cancelled else "finished"
    if summary.following:
        state = "stopped following"
    print(f"\nCampaign {state} in {summary.seconds:.1f} s with {summary.errors} error(s).")
    if summary.cancelled and not summary.following:
        print("Reserved keys were released. Run the same command to resume.", file=sys.stderr)
    if summary.waiting_for_resources:
        print("No worker had the resources for: " + ", ".join(summary.waiting_for_resources), file=sys.stderr)
    for hint in summary.hints:
        print(f"Hint: {hint}", file=sys.stderr)
    if summary.errors:
        print(f"See them with: djdask jobs {module} --status error")
    if getattr(args, "performance_report", None) and os.path.exists(args.performance_report):
        print(f"Dask performance report: {args.performance_report}")
    if args.json_summary:
        with open(args.json_summary, "w") as f:
            json.dump({"module": module, **summary.as_dict()}, f, indent=2)
    return summary.exit_code
