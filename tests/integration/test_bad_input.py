"""Bad input: a clear one-paragraph error, exit code 2, no traceback, nothing changed."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import clean_env

pytestmark = pytest.mark.integration


def snapshot(sql, prefix):
    """Every table of the test's schemas with its row count."""
    out = {}
    for schema in (f"{prefix}_acquisition", f"{prefix}_imaging"):
        for name in sql.tables(schema):
            out[(schema, name)] = sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, name)}")
    return out


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stderr.startswith("djdask: ")
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["plan", "no_such_pipeline_module"], ["No module named 'no_such_pipeline_module'", "pip install -e ."]),
        (["populate", "notables"], ["defines no DataJoint tables"]),
        (
            ["populate", "djdask.pipeline", "--target", "NoSuchTable"],
            ["Unknown target table 'NoSuchTable'", "CellStats"],
        ),
        (["populate", "djdask.pipeline", "--target", "Scan"], ["manual table", "no make()"]),
        (
            ["populate", "djdask.pipeline", "-r", "no_such_attr=1"],
            ["Unknown restriction attribute 'no_such_attr'", "mouse_id"],
        ),
        (["plan", "djdask.pipeline", "-r", "mouse_id"], ["not of the form ATTR=VALUE"]),
        (["plan", "djdask.pipeline", "-r", "mouse_id=abc"], ["is not a number"]),
    ],
    ids=["unknown-module", "no-tables", "unknown-target", "manual-target", "unknown-attr", "no-value", "bad-number"],
)
def test_bad_input_is_reported_and_changes_nothing(djdask, sql, prefix, args, fragments):
    """Each mistake must name the problem and the fix; a traceback, another exit code or a
    changed table would mean djdask half-ran on input it should have refused."""
    assert djdask.python("from djdask.pipeline.demo import insert_demo_data; insert_demo_data('small')").returncode == 0
    before = snapshot(sql, prefix)
    assert_clean_error(djdask(*args), *fragments)
    assert snapshot(sql, prefix) == before


def test_refused_connection(server, tmp_path):
    """A database that refuses the connection: exit 2, the server named, the password never shown."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    secret = "s3cret-Pa55word-xyz"
    env = clean_env(
        {
            "DJ_BACKEND": server.backend,
            "DJ_HOST": "127.0.0.1",
            "DJ_PORT": str(port),
            "DJ_USER": "alice",
            "DJ_PASS": secret,
            "DJ_USE_TLS": "false",
        }
    )
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "djdask.cli", "populate", "djdask.pipeline"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_clean_error(result, "Could not connect to the database", f"127.0.0.1:{port}", "DJ_HOST")
    assert secret not in result.stdout + result.stderr
