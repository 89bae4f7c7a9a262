"""Least privileges: a campaign run by a database user who may read and write the pipeline's
tables but not create tables.  Without the jobs tables it stops at once (exit 2) naming the
missing privilege, the schema and both fixes, and changes nothing; once a privileged user
has run `djdask jobs init`, the same user's campaign makes every key."""

from __future__ import annotations

import secrets

import pytest

from tests.conftest import Djdask
from tests.integration.test_bad_input import assert_clean_error
from tests.integration.test_jobs_engine import ledger_lines, seed_ledger

pytestmark = pytest.mark.integration


def least_privileged(server, sql, schema: str) -> dict[str, str]:
    """A user with SELECT, INSERT, UPDATE and DELETE on ``schema`` only (the README's list);
    returns the environment that connects as that user."""
    user, password = f"lp{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    if server.backend == "postgresql":
        sql.query(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        sql.query(f'GRANT USAGE ON SCHEMA "{schema}" TO {user}')
        sql.query(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO {user}')
        # Tables created later (the jobs tables, by `djdask jobs init`) come with the same grants.
        sql.query(
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{schema}" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {user}'
        )
    else:
        host = server.env["DJ_HOST"]
        sql.query(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
        sql.query(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{schema}`.* TO '{user}'@'{host}'")
    return {"DJ_USER": user, "DJ_PASS": password}


def tables_and_rows(sql, schema: str) -> dict[str, int]:
    return {t: sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, t)}") for t in sql.tables(schema)}


def test_a_least_privileged_user_runs_campaigns_once_the_jobs_tables_exist(server, sql, prefix, tmp_path):
    admin = Djdask(server, prefix, tmp_path)
    n = 30
    seed_ledger(admin, n)  # declares the pipeline's tables (as the privileged user)
    schema = f"{prefix}_ledger"
    user = least_privileged(server, sql, schema)
    ledger = tmp_path / "ledger.txt"
    env = admin.env(**user, DJDASK_TEST_LEDGER=str(ledger))
    before = tables_and_rows(sql, schema)
    assert not any(t.startswith("~~") for t in before)  # no jobs table yet

    refused = admin("populate", "ledger", "--workers", "2", env=env)
    grant = f'GRANT CREATE ON SCHEMA "{schema}"' if server.backend == "postgresql" else f"GRANT CREATE ON `{schema}`.*"
    assert_clean_error(
        refused,
        f"User {user['DJ_USER']!r} may not create tables in schema {schema!r}",
        "djdask jobs init ledger",
        grant,
    )
    assert user["DJ_PASS"] not in refused.stdout + refused.stderr
    assert tables_and_rows(sql, schema) == before
    assert ledger_lines(ledger) == []

    init = admin("jobs", "init", "ledger")  # the privileged user, once
    assert init.returncode == 0, init.stdout + init.stderr
    assert "created" in init.stdout and "SELECT, INSERT, UPDATE and DELETE" in init.stdout

    result = admin("populate", "ledger", "--workers", "2", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(schema, '__entry')}") == n
    assert sql.jobs_counts(schema, "_entry") == {}
    assert len(ledger_lines(ledger)) == n
