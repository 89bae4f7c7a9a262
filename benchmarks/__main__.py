"""Run the benchmarks: ``python -m benchmarks [--quick] [--backend postgres|mariadb] [--case NAME]``.

Starts its own database servers (as the tests do), runs every case on each
backend in a process of its own (:mod:`benchmarks.cases`), and writes
``benchmarks/results/<date>.json`` and ``<date>.md`` (``<date>-quick.*`` with ``--quick``),
the table it prints.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cases import CASES  # noqa: E402  (after the path is set)
from benchmarks.report import machine, markdown  # noqa: E402
from tests.services import start_mariadb, start_postgres  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: Cases that take longer than --timeout's default at their full size (case 9's soak is 30 minutes).
CASE_TIMEOUTS = {"follow": 3600.0}
STARTERS = {"postgres": start_postgres, "mariadb": start_mariadb}


def _case_env(server, work: Path) -> dict[str, str]:
    """The environment of a case process: this one's without DataJoint or djdask settings,
    plus the server's ``DJ_*`` variables, a local store and a fresh schema prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "DASK_DJDASK", "AWS_"))}
    store = work / "store"
    store.mkdir(exist_ok=True)
    env.update(server.env)
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "DJ_STORES": json.dumps({"default": "local", "local": {"protocol": "file", "location": str(store)}}),
            "DJ_LOG_STREAM": "stderr",
            "DASK_DJDASK__CAMPAIGN__DASHBOARD_ADDRESS": "127.0.0.1:0",
            "DASK_DJDASK__DEMO__SCHEMA_PREFIX": f"b{uuid.uuid4().hex[:8]}",
        }
    )
    return env


def run_case(name: str, server, work: Path, quick: bool, timeout: float) -> list[dict]:
    """Run one case in its own process; its rows."""
    out = work / f"{name}.json"
    args = [sys.executable, "-m", "benchmarks.cases", name, "--out", str(out), "--work", str(work)]
    if quick:
        args.append("--quick")
    with open(work / f"{name}.out", "w") as log:
        done = subprocess.run(
            args,
            env=_case_env(server, work),
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if done.returncode:
        tail = (work / f"{name}.out").read_text().strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"exit {done.returncode}: {tail[0]} (log: {work / f'{name}.out'})")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under 10 minutes on 2 cores")
    parser.add_argument(
        "--backend", choices=list(STARTERS), action="append", help="only this backend (repeatable); default both"
    )
    parser.add_argument("--case", choices=list(CASES), action="append", help="only this case (repeatable)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one case may take")
    args = parser.parse_args(argv)
    backends = args.backend or list(STARTERS)
    cases = args.case or list(CASES)
    t0 = time.monotonic()
    rows = []
    for backend in backends:
        work = Path(tempfile.mkdtemp(prefix=f"djdask-bench-{backend}-"))
        server = STARTERS[backend](work / "server")
        try:
            for name in cases:
                started = time.monotonic()
                try:
                    timeout = max(args.timeout, CASE_TIMEOUTS.get(name, 0.0))
                    results = run_case(name, server, work, args.quick, timeout)
                except Exception as err:  # noqa: BLE001  (a failed case keeps the other cases' figures)
                    traceback.print_exc()
                    results = [{"case": name, "error": str(err)}]
                for result in results:
                    result["backend"] = backend
                    rows.append(result)
                    print(json.dumps({k: v for k, v in result.items() if k != "data"}), flush=True)
                print(f"# {backend} {name}: {time.monotonic() - started:.0f} s", flush=True)
        finally:
            server.stop()
    today = datetime.date.today().isoformat()
    stamp = today + ("-quick" if args.quick else "")  # a quick run never replaces the day's full one
    run = {
        "date": today,
        "quick": args.quick,
        "wall_seconds": round(time.monotonic() - t0, 1),
        "machine": machine(),
        "backends": backends,
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    table = markdown(run)
    (RESULTS / f"{stamp}.md").write_text(table + "\n")
    print(table)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
