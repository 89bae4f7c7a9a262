"""A campaign that keeps a pipeline populated (``djdask populate --follow``,
djdask.campaign.follow), on both backends: new upstream rows made downstream within the
follow interval, a row deleted and inserted again made again, a stop by SIGTERM or
``djdask cancel`` as its normal end (exit 0), and the statements it sends while idle,
counted on the server, the same for 3 tables as for 200."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from functools import partial

import pytest

from tests.integration.batch_campaigns import Said
from tests.integration.test_jobs_engine import ledger_lines, seed_ledger, wait_for
from tests.services import StatementCounter

pytestmark = pytest.mark.integration

#: The follow interval of these tests (the default is 30 s).
INTERVAL = 2.0


def rows(sql, prefix: str) -> int:
    return sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_ledger', '__entry')}")


#: Wait for a predicate, asking every 0.1 s (latencies are measured with it); the seconds it took.
until = partial(wait_for, poll=0.1)


def follow_env(djdask, tmp_path, **extra: str) -> dict[str, str]:
    return djdask.env(
        DJDASK_TEST_LEDGER=str(tmp_path / "ledger.txt"),
        DJDASK_TEST_MAKE_SECONDS="0.2",
        DASK_DJDASK__CAMPAIGN__FOLLOW_INTERVAL=f"{INTERVAL}s",
        **extra,
    )


@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_new_rows_are_made_while_following_and_sigterm_ends_it(server, djdask, sql, prefix, tmp_path):
    """Two waves of new Source rows inserted by another client while the campaign follows:
    each wave's Entry rows appear within the interval plus their make() time (plus slack for
    a loaded machine); a Source row deleted (its Entry with it) and inserted again is made
    again.  SIGTERM ends the campaign with exit 0, every key made once per insert (the
    ledger), nothing left reserved."""
    seed_ledger(djdask, 2)
    source = sql.table(prefix + "_ledger", "source")
    run = Said(djdask, follow_env(djdask, tmp_path), "populate", "ledger", "--follow", "--workers", "2")
    try:
        until(lambda: rows(sql, prefix) == 2, 120, "the first keys")
        latencies = []
        for wave in ((2, 3, 4), (5, 6)):
            time.sleep(INTERVAL)  # idle a while: the wave is found by a look, not by the end of the last
            sql.query(f"INSERT INTO {source} (source_id) VALUES " + ", ".join(f"({k})" for k in wave))
            latencies.append(until(lambda n=wave[-1] + 1: rows(sql, prefix) == n, INTERVAL + 20, f"wave {wave}"))
        time.sleep(INTERVAL)
        sql.query(f"DELETE FROM {sql.table(prefix + '_ledger', '__entry')} WHERE source_id = 1")
        sql.query(f"DELETE FROM {source} WHERE source_id = 1")
        sql.query(f"INSERT INTO {source} (source_id) VALUES (1)")
        latencies.append(until(lambda: rows(sql, prefix) == 7, INTERVAL + 20, "the row inserted again"))
        assert run.proc.poll() is None, run.stderr
    finally:
        result = run.finish(60, stop=signal.SIGTERM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Campaign stopped following" in result.stdout, result.stdout
    made = Counter(int(line[0]) for line in ledger_lines(tmp_path / "ledger.txt"))
    assert made == Counter({0: 1, 1: 2, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1}), made
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry").get("reserved", 0) == 0
    print(
        f"{server.backend}: insert to last downstream row {[round(x, 1) for x in latencies]} s (interval {INTERVAL} s)"
    )


@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_djdask_cancel_ends_a_following_campaign_with_exit_0(server, djdask, sql, prefix, tmp_path):
    """`djdask cancel ID` stops a following campaign while it is idle: exit 0, its record
    finished, nothing reserved."""
    seed_ledger(djdask, 1)
    run = Said(djdask, follow_env(djdask, tmp_path), "populate", "ledger", "--follow", "--workers", "1")
    try:
        until(lambda: rows(sql, prefix) == 1, 120, "the first key")
        campaign = re.search(r"Campaign:\s+(\S+)", run.stdout).group(1)
        cancelled = djdask("cancel", campaign, "ledger", timeout=120)
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    finally:
        result = run.finish(60, stop=None)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = djdask("campaigns", "ledger", "--json")
    record = next(r for r in json.loads(listed.stdout) if r["campaign"].startswith(campaign))
    assert record["state"] == "finished", record
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry").get("reserved", 0) == 0
    assert re.search(r"Campaign stopped following", result.stdout), result.stdout


#: The follow interval of the idle test: six looks in its 18-s window.
IDLE_INTERVAL = 3.0
IDLE_WINDOW = 18.0


def idle_statements(
    djdask, sql, statements, tmp_path, schema_prefix: str, tables: int, window: float
) -> tuple[int, list[str]]:
    """Statements a following campaign on the `many` pipeline of ``tables`` tables sends in
    ``window`` seconds once idle (its one key made in every table, and the server's counters
    showing it), and what its looks in that window found (its -vv log)."""
    env = djdask.env(
        DASK_DJDASK__DEMO__SCHEMA_PREFIX=schema_prefix,
        DJDASK_TEST_MANY_TABLES=str(tables),
        DASK_DJDASK__CAMPAIGN__FOLLOW_INTERVAL=f"{IDLE_INTERVAL}s",
    )
    seeded = djdask.python("import many; many.Session.insert1({'session': 0})", env=env)
    assert seeded.returncode == 0, seeded.stderr
    names = [sql.table(f"{schema_prefix}_many_{i * 4 // tables}", f"__step{i:03d}") for i in range(tables)]
    run = Said(djdask, env, "-vv", "populate", "many", "--follow", "--workers", "2")
    try:
        until(lambda: all(_count(sql, name) == 1 for name in names), 240, f"the {tables}-table pipeline made")
        # The look right after the work sweeps below all the campaign made, and a later one below
        # what the server's counters reported late (PostgreSQL: a worker's session reports its
        # counts 10 s after its last statement, up to a minute under load): idle once they show
        # every insert and two looks in a row after that found nothing.
        wait_for(lambda: _counts_late(sql, schema_prefix) == 0, 90, "the server's counters", poll=1.0)
        quiet = len(run.when(r"Follow look \d+: "))
        until(lambda: _quiet_looks(run) >= 2 and len(run.when(r"Follow look \d+: ")) >= quiet + 2, 90, "quiet")
        mark, began = statements.mark(), time.time()
        time.sleep(window)
        count = statements.since(mark)
        assert run.proc.poll() is None, run.stderr
        looks = [found.group(0) for at, found in run.when(r"Follow look \d+: .*") if at >= began]
    finally:
        result = run.finish(60, stop=signal.SIGTERM)
    assert result.returncode == 0, result.stdout + result.stderr
    return count, looks


def _counts_late(sql, schema_prefix: str) -> int:
    """PostgreSQL: how many of the pipeline's step tables and parts hold rows that its
    statistics (the counters a following campaign probes, late by up to a minute) do not show
    yet; MariaDB: none (its tables' update times, which the campaign probes there, change at
    commit)."""
    if sql.backend != "postgresql":
        return 0
    pattern = schema_prefix.replace("_", "\\_") + "\\_many\\_%"
    unseen = sql.query(
        "SELECT schemaname, relname FROM pg_stat_user_tables WHERE n_tup_ins = 0 "
        f"AND schemaname LIKE '{pattern}' AND relname LIKE '\\_\\_step%'"
    )
    return sum(1 for schema, table in unseen if sql.query(f"SELECT 1 FROM {sql.table(schema, table)} LIMIT 1"))


def _quiet_looks(run: Said) -> int:
    """How many of the campaign's last looks in a row found nothing changed (its -vv log)."""
    quiet = 0
    for _, found in run.when(r"Follow look \d+: (.*)"):
        quiet = quiet + 1 if found.group(1).startswith("nothing changed") else 0
    return quiet


def _count(sql, table: str) -> int:
    try:
        return sql.scalar(f"SELECT COUNT(*) FROM {table}")
    except Exception:  # not declared yet
        return 0


@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_idle_statements_do_not_grow_with_the_number_of_tables(server, djdask, sql, prefix, tmp_path):
    """Idle, a following campaign sends as many statements on a 200-table pipeline as on a
    3-table one (within 10%, and the noise of where an 18-s window falls), and no more than
    24 in 18 s even looking every 3 s (the issue asks 60 a minute at the default 30 s; the
    benchmark measures that): each look is one statement whatever the tables, and nothing
    else it does idle counts tables.  Failing, some idle work would be per table (a lease
    renewal or a sweep of every table)."""
    statements = StatementCounter(server.env, sql)
    try:
        few = idle_statements(djdask, sql, statements, tmp_path, prefix + "a", 3, IDLE_WINDOW)
        many = idle_statements(djdask, sql, statements, tmp_path, prefix + "b", 200, IDLE_WINDOW)
    finally:
        statements.close()
    (few, few_looks), (many, many_looks) = few, many
    print(f"{server.backend}: idle statements in 18 s, looking every 3 s: 3 tables {few}, 200 tables {many}")
    assert 0 < few <= 24, (few, few_looks)
    assert many <= few * 1.1 + 3, (few, many, many_looks)


@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_a_second_following_campaign_is_refused_and_datajoints_workers_share_the_keys(
    server, djdask, sql, prefix, tmp_path
):
    """While one campaign follows the pipeline, a second `--follow` is refused (exit 2) naming
    the first and how to stop it, before it claims anything; `djdask campaigns` shows the first
    as following.  New rows then made beside two DataJoint `populate(reserve_jobs=True)`
    processes: every key made exactly once (the ledger), none left reserved."""
    seed_ledger(djdask, 1)
    env = follow_env(djdask, tmp_path)
    first = Said(djdask, env, "populate", "ledger", "--follow", "--workers", "2")
    try:
        until(lambda: rows(sql, prefix) == 1, 120, "the first key")
        campaign = re.search(r"Campaign:\s+(\S+)", first.stdout).group(1)
        second = djdask("populate", "ledger", "--follow", "--workers", "1", env=env, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"Campaign {campaign} already follows ledger" in second.stderr, second.stderr
        assert f"djdask cancel {campaign}" in second.stderr and "Traceback" not in second.stderr
        listed = djdask("campaigns", "ledger", env=env)
        assert re.search(rf"{campaign}\s+following", listed.stdout), listed.stdout

        source = sql.table(prefix + "_ledger", "source")
        sql.query(f"INSERT INTO {source} (source_id) VALUES " + ", ".join(f"({k})" for k in range(1, 41)))
        populate = "import ledger; ledger.Entry.populate(reserve_jobs=True, suppress_errors=True)"
        beside = [
            subprocess.Popen([sys.executable, "-c", populate], env={**env, "DJDASK_TEST_MAKE_SECONDS": "0.1"},
                             cwd=djdask.cwd, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]  # fmt: skip
        for proc in beside:
            assert proc.wait(120) == 0, proc.stderr.read()
        until(lambda: rows(sql, prefix) == 41, 60, "the new keys")
    finally:
        result = first.finish(60, stop=signal.SIGTERM)
    assert result.returncode == 0, result.stdout + result.stderr
    made = Counter(int(line[0]) for line in ledger_lines(tmp_path / "ledger.txt"))
    assert made == Counter(range(41)), {k: n for k, n in made.items() if n != 1}
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry").get("reserved", 0) == 0


@pytest.mark.parametrize("server", ["postgres", "mariadb"], indirect=True)
def test_new_data_never_yields_a_summary_of_part_of_its_inputs(server, djdask, sql, prefix, tmp_path):
    """`hidden`'s MouseSummary (key_source `Mouse & Behavior`) while following: a new mouse
    arrives with 4 sessions, one of whose Behavior takes 3 s.  Its summary appears only once
    all 4 Behavior rows exist: the ledger shows it saw 4 inputs.  A failure means new data
    yielded a summary of part of its inputs."""
    ledger = tmp_path / "summaries.jsonl"
    env = djdask.env(
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_SLOW="9-3",
        DJDASK_TEST_SLOW_SECONDS="3",
        DASK_DJDASK__CAMPAIGN__FOLLOW_INTERVAL=f"{INTERVAL}s",
    )
    seeded = djdask.python("import hidden as m; m.Mouse.insert1({'mouse_id': 0})", env=env)
    assert seeded.returncode == 0, seeded.stderr
    run = Said(djdask, env, "populate", "hidden", "--follow", "--workers", "2")
    summary = sql.table(prefix + "_hidden", "__mouse_summary")
    try:
        time.sleep(8)  # started, idle
        arrived = djdask.python(
            "import hidden as m; m.Mouse.insert1({'mouse_id': 9}); "
            "m.Session.insert([{'mouse_id': 9, 'session_id': s} for s in range(4)])",
            env=env,
        )
        assert arrived.returncode == 0, arrived.stderr
        until(lambda: sql.scalar(f"SELECT COUNT(*) FROM {summary} WHERE mouse_id = 9") == 1, 60, "mouse 9's summary")
        assert run.proc.poll() is None, run.stderr
    finally:
        result = run.finish(60, stop=signal.SIGTERM)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    made = [line for line in lines if line["table"] == "MouseSummary" and line["mouse_id"] == 9]
    assert made == [{"table": "MouseSummary", "mouse_id": 9, "inputs": 4}], lines
