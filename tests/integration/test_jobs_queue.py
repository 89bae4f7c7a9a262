"""JobQueue's SQL in this process, on both backends, through DataJoint Instances."""

from __future__ import annotations

import types

import pytest

from djdask.errors import JobsTableError
from djdask.jobs.leases import recover_orphans
from djdask.jobs.queue import JobQueue
from tests.pipelines.simple import declare

pytestmark = pytest.mark.integration


def count_statements(connection):
    """Count the statements a connection sends (instrumentation; the server still runs them)."""
    calls = []
    original = connection.query

    def counting(sql, *args, **kwargs):
        calls.append(sql)
        return original(sql, *args, **kwargs)

    connection.query = counting
    return calls, lambda: setattr(connection, "query", original)


@pytest.mark.parametrize("n", [100, 100_000])
def test_enqueue_uses_a_constant_number_of_statements(dj_instance, prefix, n):
    """Enqueueing must not issue one statement per key: the count for 100 keys and for
    100,000 keys is the same small number, and every key arrives as pending."""
    Key, Result = declare(dj_instance, prefix + "_enq")
    Key.insert({"k": i} for i in range(n))
    queue = JobQueue(Result())
    calls, undo = count_statements(dj_instance.connection)
    try:
        added = queue.enqueue()
    finally:
        undo()
    assert added == n
    # A look whether the jobs table is empty, the INSERT ... SELECT, and on MariaDB the
    # bulk-load session settings set and restored around it; on PostgreSQL an ANALYZE
    # after a large one (else its planner sorts every pending row for each claim).
    postgres = dj_instance.connection.adapter.backend == "postgresql"
    assert len(calls) <= ((3 if n >= 10_000 else 2) if postgres else 4), calls
    assert postgres and n >= 10_000 or not any(c.startswith("ANALYZE") for c in calls), calls
    assert not (postgres and n >= 10_000) or calls[-1].startswith("ANALYZE"), calls
    assert queue.counts()["pending"] == n
    # A second enqueue adds nothing and disturbs nothing.
    assert queue.enqueue() == 0


def test_enqueue_keeps_existing_rows(dj_instance, prefix):
    """Reserved, error and ignore rows must survive an enqueue untouched."""
    Key, Result = declare(dj_instance, prefix + "_keep")
    Key.insert({"k": i} for i in range(10))
    queue = JobQueue(Result())
    Result.jobs.ignore({"k": 9})
    queue.enqueue()
    claimed = queue.claim(3)
    queue.fail([(claimed[0], "ValueError: boom", "Traceback ...")])
    queue.enqueue()
    counts = queue.counts()
    assert (counts["reserved"], counts["error"], counts["ignore"], counts["pending"]) == (2, 1, 1, 6)
    errors = Result.jobs.errors.to_dicts()
    assert errors[0]["error_message"] == "ValueError: boom" and errors[0]["error_stack"] == "Traceback ..."


def test_enqueue_gives_way_to_keys_enqueued_meanwhile(dj_instance, prefix, monkeypatch):
    """Into a jobs table seen empty, enqueue bulk-loads (no ON CONFLICT, no INSERT IGNORE);
    when another process enqueued keys in between, it must fall back: each key once, the
    other process's rows untouched."""
    Key, Result = declare(dj_instance, prefix + "_race")
    Key.insert({"k": i} for i in range(10))
    queue = JobQueue(Result())
    look, query = f"SELECT 1 FROM {queue.name} LIMIT 1", queue.connection.query
    seen = []

    def look_then_another_writes(sql, *args, **kwargs):
        result = query(sql, *args, **kwargs)
        if sql != look:
            return result
        seen.append(result.fetchall())  # the look sees an empty table; then another process writes:
        Result.jobs.ignore({"k": 3})
        return types.SimpleNamespace(fetchall=lambda: seen[-1])

    monkeypatch.setattr(queue.connection, "query", look_then_another_writes)
    assert queue.enqueue() == 9
    monkeypatch.undo()
    assert len(seen) == 1 and not seen[0]  # enqueue looked once, at an empty table: it took the bulk load
    counts = queue.counts()
    assert (counts["pending"], counts["ignore"]) == (9, 1)
    if dj_instance.connection.adapter.backend == "mysql":
        # The bulk load's session settings are the session's own again, after the
        # duplicate key too: the user's inserts on this connection stay checked.
        checks = dj_instance.connection.query("SELECT @@SESSION.unique_checks, @@SESSION.foreign_key_checks")
        assert tuple(checks.fetchone()) == (1, 1)


def test_concurrent_enqueues_into_an_empty_jobs_table_add_each_key_once(dj_instance, server, prefix, sql):
    """Two campaigns starting at once both find the jobs table empty and both bulk-load
    it: one statement wins, the other must fall back without an error, and every key is
    pending exactly once."""
    import threading

    n = 50_000
    Key, Result = declare(dj_instance, prefix + "_both")
    sql.fill_integers(prefix + "_both", "key", "k", n)
    others = [server.instance() for _ in range(2)]
    try:
        queues = [JobQueue(declare(inst, prefix + "_both")[1]()) for inst in others]
        barrier, added, failures = threading.Barrier(2), [], []

        def enqueue(queue):
            barrier.wait()
            try:
                added.append(queue.enqueue())
            except Exception as err:  # the test's subject: no enqueue may fail
                failures.append(err)

        threads = [threading.Thread(target=enqueue, args=(q,)) for q in queues]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        assert sum(added) == n, added
        counts = JobQueue(Result()).counts()
        assert (counts["pending"], counts["total"]) == (n, n)
    finally:
        for inst in others:
            inst.connection.close()


def test_concurrent_claims_are_disjoint_and_do_not_wait(dj_instance, server, prefix):
    """While one claimer holds locks on a batch, a second claimer must get a different,
    full batch at once (SKIP LOCKED on the status index), not an empty one, not the same."""
    Key, Result = declare(dj_instance, prefix + "_claim")
    Key.insert({"k": i} for i in range(50))
    first = JobQueue(Result())
    first.enqueue()

    other = server.instance()
    try:
        if server.backend == "mysql":  # fail in seconds, not InnoDB's default 50 s
            other.connection.query("SET SESSION innodb_lock_wait_timeout = 5")
        OtherResult = declare(other, prefix + "_claim")[1]
        second = JobQueue(OtherResult())
        conn = dj_instance.connection
        q = conn.adapter.quote_identifier
        conn.start_transaction()
        held = conn.query(
            f"SELECT {q('k')} FROM {first.name} WHERE {q('status')} = 'pending' ORDER BY {q('priority')}, "
            f"{q('scheduled_time')} LIMIT 10 FOR UPDATE SKIP LOCKED"
        ).fetchall()
        try:
            got = second.claim(10)
        finally:
            conn.cancel_transaction()
        assert len(held) == 10 and len(got) == 10
        assert not {r[0] for r in held} & {k["k"] for k in got}
        rows = (OtherResult.jobs & "status='reserved'").to_dicts()
        assert {r["k"] for r in rows} == {k["k"] for k in got}
        assert all(r["connection_id"] and r["host"] and r["pid"] and r["user"] for r in rows)
    finally:
        other.connection.close()


def test_claim_order_follows_priority(dj_instance, prefix):
    Key, Result = declare(dj_instance, prefix + "_prio")
    Key.insert({"k": i} for i in range(6))
    queue = JobQueue(Result())
    queue.enqueue(priority=5)
    Result.jobs.update1({"k": 4, "priority": 1})
    assert queue.claim(1) == [{"k": 4}]


def test_release_and_orphan_recovery(dj_instance, prefix):
    """Held keys go back to pending on release; reservations whose session is gone are
    orphans; reservations of a live session are left alone."""
    Key, Result = declare(dj_instance, prefix + "_orph")
    Key.insert({"k": i} for i in range(6))
    queue = JobQueue(Result())
    queue.enqueue()
    held = queue.claim(4)
    assert queue.release(held[:1]) == 1
    conn = dj_instance.connection
    q = conn.adapter.quote_identifier
    # Two reservations by a session that does not exist, made a while ago.
    conn.query(
        f"UPDATE {queue.name} SET {q('connection_id')} = 987654, "
        f"{q('reserved_time')} = CURRENT_TIMESTAMP(3) - {conn.adapter.interval_expr(30, 'second')} "
        f"WHERE {q('k')} IN (%s, %s)",
        args=(held[1]["k"], held[2]["k"]),
    )
    freed = recover_orphans(conn, [queue.name])
    assert freed == {queue.name: 2}
    counts = queue.counts()
    assert (counts["reserved"], counts["pending"]) == (1, 5)  # held[3] is live: ours


def test_missing_jobs_table_is_created_the_datajoint_way(dj_instance, prefix):
    Key, Result = declare(dj_instance, prefix + "_mk")
    Key.insert({"k": i} for i in range(3))
    Result.jobs.drop()
    Result._jobs = None
    queue = JobQueue(Result())
    assert queue.jobs.is_declared
    assert queue.enqueue() == 3
    # DataJoint itself works with the table djdask had it create.
    Result.populate(reserve_jobs=True)
    assert len(Result()) == 3


def test_jobs_table_of_another_layout_is_refused_untouched(dj_instance, prefix):
    """A ~~ table lacking DataJoint 2.x columns must be reported, not written to."""
    Key, Result = declare(dj_instance, prefix + "_old")
    conn = dj_instance.connection
    q = conn.adapter.quote_identifier
    name = f"{q(prefix + '_old')}.{q('~~result')}"
    conn.query(f"DROP TABLE IF EXISTS {name}")
    conn.query(f"CREATE TABLE {name} ({q('k')} INTEGER PRIMARY KEY, {q('status')} VARCHAR(16))")
    conn.query(f"INSERT INTO {name} VALUES (1, 'reserved')")
    Result._jobs = None
    with pytest.raises(JobsTableError, match="lacks the columns .*priority"):
        JobQueue(Result())
    assert conn.query(f"SELECT * FROM {name}").fetchall() == ((1, "reserved"),) or conn.query(
        f"SELECT * FROM {name}"
    ).fetchall() == [(1, "reserved")]


def test_heartbeat_restamps_after_reconnect(dj_instance, prefix):
    """After the campaign's session is lost and re-established, its keys must carry the new
    session id at the next renewal, or they would look orphaned and be taken."""
    from djdask import djcompat
    from djdask.jobs.leases import renew_leases

    Key, Result = declare(dj_instance, prefix + "_hb")
    Key.insert({"k": i} for i in range(4))
    queue = JobQueue(Result())
    queue.enqueue()
    held = queue.claim(4)
    conn = dj_instance.connection
    old_id = djcompat.live_connection_id(conn)
    helper = djcompat.clone_connection(conn)
    try:
        if conn.adapter.backend == "postgresql":
            helper.query("SELECT pg_terminate_backend(%s)", args=(old_id,))
        else:
            helper.query(f"KILL {int(old_id)}")
        conn.connect()  # re-established, as after a network blip
        conn.query("SELECT 1")
        new_id = djcompat.live_connection_id(conn)
        assert new_id != old_id
        assert renew_leases(helper, [queue.name], queue.owner, new_id) == len(held)
        ids = {r["connection_id"] for r in (Result.jobs & "status='reserved'").to_dicts()}
        assert ids == {new_id}
        assert recover_orphans(helper, [queue.name]) == {queue.name: 0}
    finally:
        helper.close()


def test_a_huge_table_is_not_counted_at_the_start(dj_instance, prefix, sql, monkeypatch):
    """A table the server's statistics put past the limit is not counted (no COUNT(*) over
    millions of rows as a campaign starts): its rows are the estimate, marked as one; a
    table under it is counted exactly."""
    from djdask.campaign import tables

    Key, Result = declare(dj_instance, prefix + "_big")
    Key.insert([{"k": i} for i in range(3000)])
    name = sql.table(prefix + "_big", "key")
    sql.query(f"ANALYZE {name}" if sql.backend == "postgresql" else f"ANALYZE TABLE {name}")
    assert tables.starting_rows(Key()) == (3000, False)
    monkeypatch.setattr(tables, "EXACT_COUNT_LIMIT", 1000)
    calls, undo = count_statements(dj_instance.connection)
    try:
        rows, estimated = tables.starting_rows(Key())
    finally:
        undo()
    assert estimated and 1000 < rows <= 6000, rows  # InnoDB's estimate may be off by half
    assert not any("count(" in call.lower() for call in calls), calls
