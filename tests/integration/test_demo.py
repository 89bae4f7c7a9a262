"""`djdask demo` and `djdask db` on a machine with no database configured."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import DASK_DASHBOARD, clean_env

pytestmark = pytest.mark.integration

EXPECTED_ROWS = {"ScanMovie": 8, "MotionCorrection": 8, "Segmentation": 16, "Traces": 16, "CellStats": 16}


def run(args, env, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "djdask.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def unconfigured(tmp_path):
    """No DataJoint settings at all; the embedded server's data in a fresh directory."""
    env = clean_env({"DASK_DJDASK__DATABASE__DATA_DIR": str(tmp_path / "data"), **DASK_DASHBOARD})
    yield env, tmp_path
    run(["db", "stop"], env, tmp_path)


def test_demo_populates_every_table_on_the_embedded_database(unconfigured):
    """The README's first command: with nothing configured, the demo must start the embedded
    PostgreSQL and fill every table of the reference pipeline; a missing row means a
    table was skipped or a key lost."""
    env, cwd = unconfigured
    summary_file = cwd / "summary.json"
    result = run(["demo", "--workers", "2", "--json-summary", str(summary_file)], env, cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dask dashboard: http://127.0.0.1:" in result.stdout
    assert re.search(r"Campaign page: +http://127\.0\.0\.1:\d+/djdask", result.stdout)
    assert "Warning" not in result.stdout + result.stderr  # nothing but progress and results
    assert "postgresql://postgres@" in result.stdout
    summary = json.loads(summary_file.read_text())
    assert summary["errors"] == 0
    assert {t["table"]: t["succeeded"] for t in summary["tables"]} == EXPECTED_ROWS

    status = run(["status", "djdask.pipeline", "--json"], env, cwd)
    assert status.returncode == 0, status.stderr
    rows = {r["table"]: r for r in json.loads(status.stdout)["tables"]}
    assert {name: r["rows"] for name, r in rows.items()} == EXPECTED_ROWS
    assert all(r["pending"] == r["reserved"] == r["error"] == 0 for r in rows.values())

    # Run again: nothing is left to do, and nothing is recomputed.
    again = run(["demo", "--workers", "1", "--json-summary", str(summary_file)], env, cwd)
    assert again.returncode == 0, again.stderr
    assert all(t["succeeded"] == 0 for t in json.loads(summary_file.read_text())["tables"])


def test_db_commands_manage_the_embedded_server(unconfigured):
    """start/status/url/stop must report the server's real state; a wrong one leaves users
    with a server running they think is stopped, or the reverse."""
    env, cwd = unconfigured
    assert run(["db", "status"], env, cwd).returncode == 3  # not running yet
    started = run(["db", "start"], env, cwd)
    assert started.returncode == 0, started.stderr
    status = run(["db", "status"], env, cwd)
    assert status.returncode == 0 and "running" in status.stdout
    url = run(["db", "url"], env, cwd).stdout.strip()
    assert url.startswith("postgresql://postgres@/postgres?host=")
    import psycopg2

    host = url.split("host=", 1)[1]
    conn = psycopg2.connect(host=host, user="postgres", dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    stopped = run(["db", "stop"], env, cwd)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert run(["db", "status"], env, cwd).returncode == 3


def readme_python() -> str:
    """The README's Python block, verbatim."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]


def in_a_running_loop(code: str) -> str:
    """``code`` run as a notebook cell runs: synchronously, inside a running asyncio loop."""
    return (
        "import asyncio\n"
        "async def cell():\n"
        "    asyncio.get_running_loop()  # as in Jupyter: a loop runs while the cell does\n"
        f"    exec(compile({code!r}, 'cell', 'exec'), {{'__name__': '__main__'}})\n"
        "asyncio.run(cell())\n"
    )


def test_python_api_chooses_the_database_as_the_cli_does(unconfigured):
    """`Campaign("djdask.pipeline").run()` in a fresh session with no DJ_* set must start the embedded
    PostgreSQL as the CLI does; before, the pipeline's import failed ("Database user not
    configured") and notebook users had to configure a database by hand first."""
    env, cwd = unconfigured
    code = "from djdask import Campaign\nprint('exit', Campaign('djdask.pipeline', workers=1).run().exit_code)\n"
    result = subprocess.run(
        [sys.executable, "-c", in_a_running_loop(code)], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exit 0" in result.stdout


def test_readme_python_block_runs_verbatim_in_a_fresh_notebook_session(unconfigured):
    """The README's Python block, as a user pastes it into a new notebook with nothing set up,
    must populate the reference pipeline; if it fails, the first thing a notebook user
    tries does not work."""
    env, cwd = unconfigured
    result = subprocess.run(
        [sys.executable, "-c", in_a_running_loop(readme_python())],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    made = dict(re.findall(r"\('(\w+)', (\d+), 0\)", result.stdout))
    assert {k: int(v) for k, v in made.items()} == EXPECTED_ROWS, result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("0 ["), result.stdout  # the exit code
