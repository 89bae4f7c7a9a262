"""Case 5: campaign memory (``--case memory``; each run in a process of its own, ``memory-run``)."""

from __future__ import annotations

import gc
import importlib
import json
import resource
import threading
from pathlib import Path
from typing import Any

from benchmarks.cases.common import (
    THROUGHPUT,
    campaign,
    prefixed_env,
    row,
    run_python,
    schema_prefix,
    settle,
    sizes,
    sql_client,
    warm_cluster,
)

__all__ = ["case_memory", "memory_run"]


class _RssSampler(threading.Thread):
    """The process's resident memory every 10 ms; the highest seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def memory_run(keys: int, calls: int) -> dict[str, Any]:
    """One campaign process holding ``keys`` pending keys and making ``calls`` of them:
    its resident memory (peak during ``run()``, sampled every 10 ms) without tracing,
    then, in a second campaign over the same backlog, tracemalloc's peak of the loop."""
    import dask.config

    tp = importlib.import_module(THROUGHPUT)
    tp.Fast().jobs  # noqa: B018
    sql = sql_client()
    sql.fill_integers(f"{schema_prefix()}_throughput", "key", "k", keys)
    with warm_cluster(THROUGHPUT) as client:
        settle(sql)
        gc.collect()
        sampler = _RssSampler()
        before = sampler.peak
        sampler.start()
        seconds, summary = campaign(THROUGHPUT, client, targets=["Fast"], max_calls=calls)
        peak = sampler.stop()
        with dask.config.set({"djdask.campaign.trace-memory": True}):
            _, traced = campaign(THROUGHPUT, client, targets=["Fast"], max_calls=calls)
    pending = sql.jobs_counts(f"{schema_prefix()}_throughput", "__fast").get("pending", 0)
    sql.close()
    return {
        "keys": keys,
        "calls": calls,
        "made": summary.tables[0].succeeded + traced.tables[0].succeeded,
        "pending_after": pending,
        "rss_before": before,
        "rss_peak": peak,
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "traced_peak": traced.traced_peak_bytes,
        "seconds": round(seconds, 3),
    }


def case_memory(quick: bool, work: Path) -> list[dict]:
    """Case 5: the campaign process's memory with 10,000 and with 1,000,000 keys pending,
    each in a fresh process, the campaign bounded by ``max_calls``."""
    size = sizes(quick)
    calls = size["memory_calls"]
    runs = {}
    for n in size["memory_keys"]:
        out = work / f"memory-{n}.json"
        run_python(
            [
                "-m",
                "benchmarks.cases",
                "memory-run",
                "--keys",
                str(n),
                "--calls",
                str(calls),
                "--out",
                str(out),
                "--work",
                str(work),
            ],
            prefixed_env(f"{schema_prefix()}m{n}"),
            work / "memory.log",
        )
        runs[n] = json.loads(out.read_text())
    small, big = (runs[n] for n in size["memory_keys"])
    mb = 1024 * 1024
    growth = (big["rss_peak"] - small["rss_peak"]) / mb
    traced_growth = (big["traced_peak"] - small["traced_peak"]) / mb
    return [
        row(
            f"5 campaign memory: {small['keys']:,} vs {big['keys']:,} keys pending",
            djdask=f"peak RSS {big['rss_peak'] / mb:.1f} MB at {big['keys']:,}",
            baseline=f"peak RSS {small['rss_peak'] / mb:.1f} MB at {small['keys']:,}",
            ratio=growth,
            ratio_text=f"{growth:+.1f} MB",
            goal="<= +50 MB",
            met=growth <= 50,
            note=f"traced (tracemalloc) peak of the loop: {small['traced_peak'] / mb:.2f} MB vs "
            f"{big['traced_peak'] / mb:.2f} MB ({traced_growth:+.2f} MB); each campaign made {calls:,} keys "
            f"(max_calls) with the rest pending",
            runs=runs,
        )
    ]
