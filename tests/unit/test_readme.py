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
    section = text.split("## Code map", 1)[1].split("A campaign, step by step", 1)[1]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        if line.startswith("| "):
            table.append(line)
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
        "split",
        "complete",
        "stream",
        "lease",
        "follow",
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


def test_code_map_sub_packages_exist():
    """The README's table of sub-packages names each one and its modules: each must exist, and
    every sub-package of djdask must be in it."""
    import importlib
    import pkgutil

    import djdask

    text = (ROOT / "README.md").read_text()
    section = text.split("| sub-package | what it holds |", 1)[1].split("\n\n", 1)[0]
    listed = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        listed[cells[0].strip("`")] = re.findall(r"\(`(\w+)`", cells[1])
    actual = {f"djdask.{m.name}" for m in pkgutil.iter_modules(djdask.__path__) if m.ispkg} - {
        "djdask.clusters",
        "djdask.pipeline",
    }
    assert set(listed) == actual
    for package, modules in listed.items():
        assert modules, package
        for module in modules:
            importlib.import_module(f"{package}.{module}")
