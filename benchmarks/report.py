"""The results of a run: the machine it ran on, and the markdown table."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

__all__ = ["describe", "machine", "markdown"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / 1024**3


def machine() -> dict[str, str]:
    """What the figures depend on: CPU, cores, memory, OS, Python and library versions."""
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{_memory_gb():.0f} GB",
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "datajoint": metadata.version("datajoint"),
        "dask": metadata.version("distributed"),
    }


def describe(info: dict[str, str]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory']} RAM, {info['os']}, Python {info['python']}, "
        f"DataJoint {info['datajoint']}, Dask {info['dask']}"
    )


def _met(value: bool | None) -> str:
    return "-" if value is None else "**yes**" if value else "**no**"


def markdown(run: dict[str, Any]) -> str:
    """The results table of a run, with its date, machine and notes."""
    mode = "quick" if run["quick"] else "full"
    title = (
        f"Benchmarks of {run['date']} ({mode} run, {run['wall_seconds'] / 60:.1f} min, "
        f"{' and '.join(run['backends'])}) on {describe(run['machine'])}."
    )
    lines = [
        title,
        "",
        "| case | backend | djdask | baseline | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in run["results"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['backend']} | failed | | | | **no** |")
            notes.append(f"{r['case']} on {r['backend']} failed: {r['error']}")
            continue
        lines.append(
            f"| {r['case']} | {r['backend']} | {r['djdask']} | {r['baseline']} | {r['ratio_text']} | "
            f"{r['goal']} | {_met(r['met'])} |"
        )
        if r["note"]:
            notes.append(f"{r['case'].split(':')[0]} ({r['backend']}): {r['note']}")
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines)
