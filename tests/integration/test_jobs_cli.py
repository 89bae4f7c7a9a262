"""`djdask jobs`, `retry` and `release`, and the legacy ~jobs table, through the CLI."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def seed_badkey(djdask):
    result = djdask.python("import badkey; badkey.Item.insert([{'item_id': i} for i in range(1, 6)])")
    assert result.returncode == 0, result.stderr


def test_jobs_retry_and_release(djdask, sql, prefix):
    """jobs lists the error row; retry puts it back to pending; release frees a reservation
    whose session is gone but not one whose session is alive."""
    seed_badkey(djdask)
    assert djdask("populate", "badkey", "--workers", "1").returncode == 1
    listing = djdask("jobs", "badkey", "--status", "error", "--json")
    assert listing.returncode == 0, listing.stderr
    jobs = json.loads(listing.stdout)["jobs"]
    assert [(j["table"], j["key"], j["status"]) for j in jobs] == [("Square", {"item_id": 3}, "error")]
    assert jobs[0]["error_message"] == "ValueError: item 3 is unlucky"
    plain = djdask("jobs", "badkey")
    assert "item_id=3" in plain.stdout and "unlucky" in plain.stdout

    jobs_table = sql.table(f"{prefix}_badkey", "~~square")
    retried = djdask("retry", "badkey", "--table", "Square")
    assert retried.returncode == 0 and "1 key(s)" in retried.stdout
    assert sql.query(f"SELECT item_id, status, error_message FROM {jobs_table}") in (
        [(3, "pending", "")],
        ((3, "pending", ""),),
    )

    # A reservation by a session that no longer exists, and one by this test's live session.
    sql.query(f"INSERT INTO {sql.table(f'{prefix}_badkey', 'item')} (item_id) VALUES (10), (11)")
    live_id = sql.scalar("SELECT pg_backend_pid()" if sql.backend == "postgresql" else "SELECT CONNECTION_ID()")

    def ago(seconds):
        if sql.backend == "postgresql":
            return f"CURRENT_TIMESTAMP(3) - INTERVAL '{seconds} second'"
        return f"CURRENT_TIMESTAMP(3) - INTERVAL {seconds} SECOND"

    # The live row is younger than this test's session (which connected before populate ran).
    sql.query(
        f"INSERT INTO {jobs_table} (item_id, status, priority, reserved_time, connection_id) VALUES "
        f"(10, 'reserved', 5, {ago(30)}, 999999), (11, 'reserved', 5, {ago(2)}, %s)",
        (live_id,),
    )
    released = djdask("release", "badkey")
    assert released.returncode == 0, released.stderr
    assert "1 orphaned reservation(s) freed" in released.stdout
    rows = dict(sql.query(f"SELECT item_id, status FROM {jobs_table}"))
    assert rows == {3: "pending", 10: "pending", 11: "reserved"}


LEGACY_DDL = {
    "mysql": (
        "CREATE TABLE {t} (table_name VARCHAR(255) NOT NULL, key_hash CHAR(32) NOT NULL, "
        "status ENUM('reserved','error','ignore') NOT NULL, `key` LONGBLOB, error_message VARCHAR(2047) NOT NULL DEFAULT '', "
        "error_stack MEDIUMBLOB, user VARCHAR(255) NOT NULL DEFAULT '', host VARCHAR(255) NOT NULL DEFAULT '', "
        "pid INT UNSIGNED NOT NULL DEFAULT 0, connection_id BIGINT UNSIGNED NOT NULL DEFAULT 0, "
        "timestamp TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (table_name, key_hash))"
    ),
    "postgresql": (
        "CREATE TABLE {t} (table_name VARCHAR(255) NOT NULL, key_hash CHAR(32) NOT NULL, "
        "status VARCHAR(16) NOT NULL, key BYTEA, error_message VARCHAR(2047) NOT NULL DEFAULT '', "
        "error_stack BYTEA, \"user\" VARCHAR(255) NOT NULL DEFAULT '', host VARCHAR(255) NOT NULL DEFAULT '', "
        "pid INTEGER NOT NULL DEFAULT 0, connection_id BIGINT NOT NULL DEFAULT 0, "
        "timestamp TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (table_name, key_hash))"
    ),
}


def test_legacy_jobs_table_is_reported_and_left_alone(djdask, sql, prefix):
    """A DataJoint 0.x `~jobs` table with live reservations stops the campaign with a clear
    message (exit 2); without them the campaign runs and warns. Its rows never change."""
    seed_badkey(djdask)
    legacy = sql.table(f"{prefix}_badkey", "~jobs")
    sql.query(LEGACY_DDL[sql.backend].format(t=legacy))
    sql.query(
        f"INSERT INTO {legacy} (table_name, key_hash, status) VALUES ('__square', 'abc', 'reserved'), "
        "('__square', 'def', 'error')"
    )
    before = sorted(sql.query(f"SELECT table_name, key_hash, status FROM {legacy}"))

    refused = djdask("populate", "badkey")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "legacy DataJoint 0.x jobs table" in refused.stderr and "1 reserved" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sorted(sql.query(f"SELECT table_name, key_hash, status FROM {legacy}")) == before
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(f'{prefix}_badkey', '__square')}") == 0

    sql.query(f"DELETE FROM {legacy} WHERE status = 'reserved'")
    ran = djdask("populate", "badkey")
    assert ran.returncode == 1  # item 3 still fails; the rest ran
    assert "still has a legacy DataJoint 0.x jobs table" in ran.stderr
    assert sorted(sql.query(f"SELECT table_name, key_hash, status FROM {legacy}")) == before[1:]
