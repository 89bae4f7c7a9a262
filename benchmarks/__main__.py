"""Run the benchmarks: ``python -m benchmarks [--quick] [--backend postgres|mariadb]``."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pipelines.simple import declare  # noqa: E402
from tests.services import start_mariadb, start_postgres  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def case_enqueue(server, *, keys: int, baseline_keys: int) -> dict:
    """Case 3: enqueue missing keys; djdask's one statement vs DataJoint's jobs.refresh()."""
    from orchestrator.jobs import JobQueue

    inst = server.instance()
    try:
        Key, Result = declare(inst, f"bench_{uuid.uuid4().hex[:8]}")
        Key.insert(({"k": i} for i in range(keys)))
        queue = JobQueue(Result())
        t0 = time.perf_counter()
        added = queue.enqueue()
        djdask_s = time.perf_counter() - t0
        assert added == keys

        Key2, Result2 = declare(inst, f"bench_{uuid.uuid4().hex[:8]}")
        Key2.insert(({"k": i} for i in range(baseline_keys)))
        Result2.jobs  # declare the jobs table outside the timing, as JobQueue did
        t0 = time.perf_counter()
        Result2.jobs.refresh()
        baseline_s = (time.perf_counter() - t0) * keys / baseline_keys
        return {
            "case": "enqueue",
            "keys": keys,
            "djdask_s": round(djdask_s, 3),
            "baseline": "Table.jobs.refresh()",
            "baseline_s": round(baseline_s, 3),
            "baseline_note": f"measured on {baseline_keys} keys, extrapolated linearly" if baseline_keys < keys else "",
            "speedup": round(baseline_s / djdask_s, 1),
        }
    finally:
        inst.connection.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes in all)")
    parser.add_argument("--backend", choices=["postgres", "mariadb"], action="append")
    args = parser.parse_args(argv)
    backends = args.backend or ["postgres", "mariadb"]
    keys = 100_000
    baseline_keys = 2_000 if args.quick else 10_000
    rows = []
    for backend in backends:
        base = Path(tempfile.mkdtemp(prefix=f"djdask-bench-{backend}-"))
        server = (start_postgres if backend == "postgres" else start_mariadb)(base)
        try:
            result = case_enqueue(server, keys=keys, baseline_keys=baseline_keys)
            result["backend"] = backend
            rows.append(result)
            print(json.dumps(result), flush=True)
        finally:
            server.stop()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stamp}.json").write_text(json.dumps({"date": stamp, "machine": machine, "results": rows}, indent=2))
    lines = [f"Benchmarks of {stamp} on {machine}", "",
             "| case | backend | keys | djdask (s) | baseline | baseline (s) | ratio |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        note = f" ({r['baseline_note']})" if r["baseline_note"] else ""
        lines.append(f"| {r['case']} | {r['backend']} | {r['keys']:,} | {r['djdask_s']} | {r['baseline']}{note} | "
                     f"{r['baseline_s']} | {r['speedup']}x |")
    table = "\n".join(lines)
    (RESULTS / f"{stamp}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
