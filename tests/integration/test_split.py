"""Compute workers without database access, on one host (issue 32): a ``local`` profile with
``database: none`` whose workers get ``DJDASK_DATABASE=none`` and no credential, and the
database side that fetches and inserts for them.  A tripartite table routed there gives
exactly DataJoint's rows; inputs that change between the fetch and the insert give
DataJoint's own error row; a plain make() routed there is refused before anything is
written; a result past ``max-transfer`` is an error row naming the table and the key.
The rows on both backends; the errors and the refusal on PostgreSQL here and on MariaDB on
the nodes.  (On nodes that cannot reach the database: tests/integration/test_multinode.py.)"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.batch_campaigns import Said
from tests.integration.test_fidelity import table_rows
from tests.integration.test_jobs_engine import wait_for

pytestmark = pytest.mark.integration

SEED = "import split; split.seed({n})"


def split_env(djdask, tmp_path: Path, tables: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a campaign whose ``tables`` go to the pools named (``compute``: the
    `nodb` profile, local workers without database access; ``default``: the LocalCluster)."""
    config = tmp_path / "dask"
    config.mkdir(exist_ok=True)
    settings = {
        "djdask": {
            "clusters": {"nodb": {"kind": "local", "database": "none", "workers": 2}},
            "campaign": {"pools": tables},
        }
    }
    (config / "djdask.yaml").write_text(json.dumps(settings))
    return djdask.env(DASK_CONFIG=str(config), DJDASK_TEST_WHERE=str(tmp_path / "where.txt"), **extra)


def where(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "where.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


#: `djdask populate split` on the two pools of :func:`split_env`.
CAMPAIGN = ("populate", "split", "--cluster", "default=local", "--cluster", "compute=nodb", "--workers", "1")


def populate(djdask, env, *tables: str, expect: int = 0):
    args = [a for t in tables for a in ("--target", t)]
    result = djdask(*CAMPAIGN, *args, env=env, timeout=240)
    assert result.returncode == expect, result.stdout + result.stderr
    return result


def assert_each_key_inserted_once(sql, prefix: str, n: int) -> None:
    """Result holds its ``n`` rows (one per key: its primary key), none is an error, none reserved."""
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_split', '__result')}") == n
    jobs = sql.jobs_counts(f"{prefix}_split", "__result")
    assert not jobs.get("reserved") and not jobs.get("error"), jobs


@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_a_split_table_gives_datajoints_rows_and_its_compute_runs_without_credentials(
    server, djdask, sql, prefix, tmp_path
):
    """Result's make_compute runs on the `compute` pool's workers (DJDASK_DATABASE=none, no
    DJ_* or AWS_* variable), its fetch and insert on the database side; every row and part
    row, `_job_version` included, equals DataJoint's populate() of the same data; each row's
    hidden job metadata is its jobs row's (version, duration: the three parts'); every jobs
    row is a success, none left reserved."""
    n = 12
    metadata = {"DJ_JOBS_ADD_JOB_METADATA": "true", "DJ_JOBS_KEEP_COMPLETED": "true"}
    env = split_env(djdask, tmp_path, {"Result": "compute"}, DJDASK_TEST_MAKE_SECONDS="0.05", **metadata)
    seeded = djdask.python(SEED.format(n=n), env=env)
    assert seeded.returncode == 0, seeded.stderr
    populate(djdask, env, "Result")

    ran = where(tmp_path)
    assert Counter(int(k) for k, *_ in ran) == Counter(range(n)), "a key's make_compute ran twice or never"
    assert {database for _, _, _, database, _ in ran} == {"none"}, ran
    assert {given for *_, given in ran} == {"-"}, f"compute workers were given credentials: {ran}"

    other = prefix + "seq"
    theirs = djdask.env(DASK_DJDASK__DEMO__SCHEMA_PREFIX=other, **metadata)
    code = SEED.format(n=n) + "\nsplit.Result.populate(display_progress=False)"
    seq = djdask.python(code, env=theirs)
    assert seq.returncode == 0, seq.stderr
    mine, their = table_rows(sql, f"{prefix}_split"), table_rows(sql, f"{other}_split")
    assert mine["__result"] and mine["__result__sample"], mine
    for table in ("__result", "__result__sample"):
        assert mine[table] == their[table], f"{table} differs from DataJoint's populate()"
    assert sql.jobs_counts(f"{prefix}_split", "__result") == {"success": n}
    # The hidden job metadata as _populate1 stamps it: the jobs row's version and duration,
    # the duration counting the three parts (at least make_compute's 0.05 s).
    rows = sql.query(
        f"SELECT t._job_version, t._job_duration, t._job_start_time, j.version, j.duration FROM "
        f"{sql.table(prefix + '_split', '__result')} t JOIN {sql.table(prefix + '_split', '~~result')} j "
        "ON t.source_id = j.source_id"
    )
    assert len(rows) == n
    for version, duration, started, job_version, job_duration in rows:
        assert version == job_version and started is not None, (version, job_version, started)
        assert abs(float(duration) - float(job_duration)) <= 1e-6 and float(duration) >= 0.05, (duration, job_duration)


@pytest.mark.parametrize("server", ["postgres"], indirect=True)  # MariaDB: on the nodes (test_multinode_split)
def test_inputs_changed_between_fetch_and_insert_give_datajoints_error_row(server, djdask, sql, prefix, tmp_path):
    """While key 1's make_compute runs, the row it read beyond its foreign keys (the day's
    gain) changes: its insert finds other inputs and it becomes DataJoint's own error
    ("Referential integrity failed! The `make_fetch` data has changed"), once; key 0, made
    before, keeps its row; nothing is left reserved."""
    started = tmp_path / "started"
    started.mkdir()
    env = split_env(
        djdask, tmp_path, {"Result": "compute"}, DJDASK_TEST_MAKE_SECONDS="3", DJDASK_TEST_STARTED=str(started)
    )
    seeded = djdask.python(SEED.format(n=1), env=env)
    assert seeded.returncode == 0, seeded.stderr
    run = Said(djdask, env, *CAMPAIGN, "--target", "Result")
    try:
        wait_for(lambda: (started / "0.started").exists(), 120, "key 0's make_compute")
        sql.query(f"UPDATE {sql.table(prefix + '_split', 'gain')} SET gain = 2.0 WHERE day = 1")
        result = run.finish(120)
    finally:
        run.finish(5)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    errors = sql.query(f"SELECT error_message FROM {sql.table(prefix + '_split', '~~result')} WHERE status = 'error'")
    assert [e[0] for e in errors] == ["DataJointError: Referential integrity failed! The `make_fetch` data has changed"]
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_split', '__result')}") == 0
    assert sql.jobs_counts(f"{prefix}_split", "__result").get("reserved", 0) == 0


@pytest.mark.parametrize("server", ["postgres"], indirect=True)  # MariaDB: on the nodes (test_multinode_split)
def test_a_plain_make_routed_without_database_is_refused_and_a_result_too_large_is_an_error_row(
    server, djdask, sql, prefix, tmp_path
):
    """Plain's make(key) routed to the pool without database: exit 2 before anything is
    written, naming the table and both ways out.  Big's 2-MiB result past a 1-MiB
    max-transfer: an error row naming the table, the key and the size."""
    env = split_env(djdask, tmp_path, {"Plain": "compute", "Big": "compute"}, DJDASK_TEST_BIG_MB="2",
                    DASK_DJDASK__CAMPAIGN__MAX_TRANSFER="1MiB")  # fmt: skip
    seeded = djdask.python(SEED.format(n=1), env=env)
    assert seeded.returncode == 0, seeded.stderr
    refused = populate(djdask, env, "Plain", expect=2)
    said = " ".join(refused.stderr.split())
    assert "Table Plain is routed to pool 'compute'" in said and "make_fetch" in said, said
    assert "djdask.campaign.pools.Plain" in said and "Traceback" not in said, said
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_split', '__plain')}") == 0
    assert not sql.jobs_counts(f"{prefix}_split", "__plain"), "the refused campaign wrote jobs rows"

    populate(djdask, env, "Big", expect=1)
    (message,) = sql.query(f"SELECT error_message FROM {sql.table(prefix + '_split', '~~big')} WHERE status = 'error'")[
        0
    ]
    assert "max-transfer" in message and "Big" in message and "'source_id': 0" in message, message
    assert "2.00 MiB" in message, message


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_a_compute_worker_killed_mid_make_compute_runs_its_key_again(server, djdask, sql, prefix, tmp_path):
    """Key 2's compute worker is killed (SIGKILL) while its make_compute runs: the key's
    fetch and compute run again on another worker and the key is made once; every other key
    is made once too, none is an error, none left reserved."""
    started = tmp_path / "started"
    started.mkdir()
    n = 4
    env = split_env(
        djdask, tmp_path, {"Result": "compute"}, DJDASK_TEST_MAKE_SECONDS="2", DJDASK_TEST_STARTED=str(started),
        DASK_DJDASK__CAMPAIGN__MAX_BATCH_SIZE="1",
    )  # fmt: skip
    seeded = djdask.python(SEED.format(n=n), env=env)
    assert seeded.returncode == 0, seeded.stderr
    run = Said(djdask, env, *CAMPAIGN, "--target", "Result")
    try:
        wait_for(lambda: (started / "2.started").exists(), 120, "key 2's make_compute")
        os.kill(int((started / "2.started").read_text()), signal.SIGKILL)
        result = run.finish(180)
    finally:
        run.finish(5)
    assert result.returncode == 0, result.stdout + result.stderr
    # The killed make_compute wrote no line (it writes after its sleep); a key whose result the
    # killed worker still held is computed again: every key computed, key 2 once more.
    computed = Counter(int(k) for k, *_ in where(tmp_path))
    assert set(computed) == set(range(n)) and computed[2] == 1, computed
    assert_each_key_inserted_once(sql, prefix, n)


@pytest.mark.parametrize("server", ["mariadb"], indirect=True)
def test_a_database_side_worker_lost_between_fetch_and_insert_loses_no_key(server, djdask, sql, prefix, tmp_path):
    """The database-side worker that fetched key 1 is killed (SIGKILL) while the key's
    make_compute runs on a compute worker: every key is inserted once, after its insert's own
    fetch in the transaction (the insert needs nothing else of the lost worker: the compute
    worker holds the fetched data it got; a batch whose insert ran there runs again,
    uncharged); no key is an error, none left reserved."""
    started, fetched = tmp_path / "started", tmp_path / "fetched.txt"
    started.mkdir()
    n = 3
    env = split_env(
        djdask, tmp_path, {"Result": "compute"}, DJDASK_TEST_MAKE_SECONDS="3", DJDASK_TEST_STARTED=str(started),
        DJDASK_TEST_FETCHED=str(fetched), DASK_DJDASK__CAMPAIGN__MAX_BATCH_SIZE="1",
    )  # fmt: skip
    seeded = djdask.python(SEED.format(n=n), env=env)
    assert seeded.returncode == 0, seeded.stderr
    run = Said(djdask, env, *CAMPAIGN, "--target", "Result")
    try:
        wait_for(lambda: (started / "1.started").exists(), 120, "key 1's make_compute")
        (pid,) = [int(p) for k, p in (line.split() for line in fetched.read_text().splitlines()) if k == "1"]
        os.kill(pid, signal.SIGKILL)
        result = run.finish(180)
    finally:
        run.finish(5)
    assert result.returncode == 0, result.stdout + result.stderr
    fetches = Counter(int(line.split()[0]) for line in fetched.read_text().splitlines())
    # For make_compute and in the insert's transaction; once more for a key whose fetched data
    # only the killed worker held (its make_compute not yet begun).
    assert set(fetches) == set(range(n)) and all(2 <= c <= 3 for c in fetches.values()), fetches
    # A key whose insert ran on the killed worker runs again from its fetch, uncharged.
    computed = Counter(int(k) for k, *_ in where(tmp_path))
    assert set(computed) == set(range(n)) and max(computed.values()) <= 2, computed
    assert_each_key_inserted_once(sql, prefix, n)
