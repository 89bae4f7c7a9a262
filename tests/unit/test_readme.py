"""The README's two set-up commands must stay true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line for block in blocks[:2] for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_gives_the_demo_and_test_commands_first():
    """The first screen shows exactly the two commands, demo first."""
    demo, tests = commands()[:2]
    assert demo.endswith("djdask demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command():
    """CI must run what the README tells users to run, or the README can rot unnoticed."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands()[1] in ci.splitlines()


def test_code_map_names_exist():
    """Each module and function the README's code map names for a campaign step must exist;
    a stale map sends readers (and the next engineer) to code that is not there."""
    import importlib

    text = (ROOT / "README.md").read_text()
    section = text.split("## Code map", 1)[1]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    steps = {}
    for line in table[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        steps[cells[0]] = re.findall(r"`(djdask\.[\w.]+)`", cells[2])
    assert list(steps) == [
        "load",
        "graph",
        "open",
        "plan",
        "claim",
        "dispatch",
        "execute",
        "complete",
        "stream",
        "lease",
        "finish",
    ]
    for step, names in steps.items():
        assert names, step
        for name in names:
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                    break
                except ImportError:
                    continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)  # AttributeError: the map names something gone
