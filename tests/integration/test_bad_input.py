"""Bad input: a clear one-paragraph error, exit code 2, no traceback, nothing changed."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import Djdask, clean_env

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
    text = " ".join(result.stderr.split())  # the message is one paragraph, wrapped
    for fragment in fragments:
        assert fragment in text, result.stderr


CASES = {
    # id: (arguments, environment, fragments of the message)
    "unknown-module": (
        ["plan", "no_such_pipeline_module"],
        {},
        ["No module named 'no_such_pipeline_module'", "pip install -e ."],
    ),
    "no-tables": (["populate", "notables"], {}, ["defines no DataJoint tables"]),
    "unknown-target": (
        ["populate", "djdask.pipeline", "--target", "NoSuchTable"],
        {},
        ["Unknown target table 'NoSuchTable'", "CellStats"],
    ),
    "manual-target": (["populate", "djdask.pipeline", "--target", "Scan"], {}, ["manual table", "no make()"]),
    "unknown-attr": (
        ["populate", "djdask.pipeline", "-r", "no_such_attr=1"],
        {},
        ["Unknown restriction attribute 'no_such_attr'", "mouse_id"],
    ),
    "no-value": (["plan", "djdask.pipeline", "-r", "mouse_id"], {}, ["not of the form ATTR=VALUE"]),
    "bad-number": (["plan", "djdask.pipeline", "-r", "mouse_id=abc"], {}, ["is not a number"]),
    "workers-0": (
        ["populate", "djdask.pipeline", "--workers", "0"],
        {},
        ["--workers 0 is not a whole number of 1 or more", "e.g. --workers 4"],
    ),
    "workers-negative": (
        ["populate", "djdask.pipeline", "--workers", "-3"],
        {},
        ["--workers -3 is not a whole number of 1 or more"],
    ),
    "max-calls-negative": (
        ["populate", "djdask.pipeline", "--max-calls", "-5"],
        {},
        ["--max-calls -5 is not a whole number of 1 or more"],
    ),
    "target-duration": (
        ["populate", "djdask.pipeline", "--target-duration", "soon"],
        {},
        ["--target-duration 'soon' is not a positive duration", "5s"],
    ),
    "max-attempts": (
        ["populate", "djdask.pipeline"],
        {"DASK_DJDASK__CAMPAIGN__MAX_ATTEMPTS": "lots"},
        ["djdask.campaign.max_attempts is 'lots'", "DASK_DJDASK__CAMPAIGN__MAX_ATTEMPTS", "a whole number >= 1"],
    ),
    "grace-period": (
        ["populate", "djdask.pipeline"],
        {"DASK_DJDASK__CAMPAIGN__GRACE_PERIOD": "soon"},
        ["grace_period is 'soon'", "a duration"],
    ),
    "worker-memory": (
        ["populate", "djdask.pipeline"],
        {"DASK_DJDASK__CAMPAIGN__WORKER_MEMORY": "lots"},
        ["worker_memory is 'lots'", "byte size", "'auto'"],
    ),
    "unknown-setting": (
        ["status", "djdask.pipeline"],
        {"DASK_DJDASK__CAMPAIGN__MAX_ATEMPTS": "3"},
        ["djdask.campaign.max_atempts", "did you mean djdask.campaign.max-attempts"],
    ),
    "store-typo": (
        ["populate", "djdask.pipeline", "--store", "s3:/bucket/x"],
        {},
        ["--store 's3:/bucket/x' looks like a URL", "did you mean s3://bucket/x?"],
    ),
    "store-unknown-name": (
        ["populate", "djdask.pipeline", "--store", "archive"],
        {},
        ["--store 'archive' is no store configured", "--store ./archive"],
    ),
    "store-unwritable": (
        ["populate", "djdask.pipeline", "--store", "/proc/djdask-store"],
        {},
        ["The store /proc/djdask-store", "cannot be written", "a directory you may write to"],
    ),
    "summary-unwritable": (
        ["populate", "djdask.pipeline", "--json-summary", "/no/such/folder/s.json"],
        {},
        ["--json-summary", "/no/such/folder is not a folder you may write to"],
    ),
}


#: Refused before any connection is made: the same on either backend, so run on one.
BEFORE_CONNECTING = {
    "workers-0",
    "workers-negative",
    "max-calls-negative",
    "target-duration",
    "max-attempts",
    "grace-period",
    "worker-memory",
    "unknown-setting",
    "summary-unwritable",
}


#: The schema prefix seeded with the reference pipeline's small data, per server (in this
#: process): each refusal must leave it as it is, so the cases share one copy.
SEEDED: dict[str, str] = {}


def check_refused(djdask, sql, prefix, args, env, fragments, tmp_path):
    """The mistake named with its fix; a traceback, another exit code or a changed table would
    mean djdask half-ran on input it should have refused."""
    label = djdask.server.label
    if label not in SEEDED:
        seeded = djdask.python("from djdask.pipeline.demo import insert_demo_data; insert_demo_data('small')")
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        SEEDED[label] = prefix
    djdask = Djdask(djdask.server, SEEDED[label], tmp_path)
    before = snapshot(sql, djdask.prefix)
    assert before, "the reference pipeline's tables are missing"
    assert_clean_error(djdask(*args, env=djdask.env(**env)), *fragments)
    assert snapshot(sql, djdask.prefix) == before
    assert not (tmp_path / "archive").exists()


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [case for name, case in CASES.items() if name not in BEFORE_CONNECTING],
    ids=[name for name in CASES if name not in BEFORE_CONNECTING],
)
def test_bad_input_is_reported_and_changes_nothing(djdask, sql, prefix, args, env, fragments, tmp_path):
    check_refused(djdask, sql, prefix, args, env, fragments, tmp_path)


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [case for name, case in CASES.items() if name in BEFORE_CONNECTING],
    ids=[name for name in CASES if name in BEFORE_CONNECTING],
)
def test_bad_arguments_and_settings_are_refused_before_connecting(djdask, sql, prefix, args, env, fragments, tmp_path):
    check_refused(djdask, sql, prefix, args, env, fragments, tmp_path)


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


@pytest.mark.parametrize("server", ["mariadb"], indirect=True)
def test_wrong_password_is_told_first_and_never_shown(server, tmp_path):
    """With TLS left to DataJoint's choice, a refused login made DataJoint print its "SSL
    connection failed ... Falling back to non-SSL" warning before djdask's message: now the
    first line is djdask's, naming server, user, the driver's reason and the fix."""
    import subprocess
    import sys

    secret = "Wr0ng-Pa55word-xyz"
    env = clean_env({**server.env, "DJ_PASS": secret})
    env.pop("DJ_USE_TLS")
    result = subprocess.run(
        [sys.executable, "-m", "djdask.cli", "status", "djdask.pipeline"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_clean_error(result, "Could not connect to the database", "Access denied", "check DJ_USER and DJ_PASS")
    assert f"user {server.env['DJ_USER']!r}" in " ".join(result.stderr.split())
    assert "Falling back" not in result.stderr, result.stderr
    assert secret not in result.stdout + result.stderr
