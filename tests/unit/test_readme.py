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
