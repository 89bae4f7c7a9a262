"""Who is charged when a task fails as a whole (djdask.campaign.losses.judge), and how a worker's
exit reads (djdask.worker.watchdog): pure, no database, no cluster."""

from __future__ import annotations

import signal

from djdask.campaign.losses import Verdict, duration_text, judge
from djdask.worker.watchdog import Beacon, beacon_path, describe_exit, read_beacon

KEYS = [{"k": i} for i in range(5)]
MiB = 2**20


def report(index=2, task="run_batch-1", exitcode=-15, peak=0, limit=512 * MiB, timed_out=False, timeout=None):
    return {
        "worker": "tcp://127.0.0.1:1",
        "pid": 42,
        "exitcode": exitcode,
        "peak": peak,
        "memory_limit": limit,
        "beacon": {"task": task, "index": index, "timeout": timeout},
        "timed_out": timed_out,
    }


def test_memory_kill_charges_only_the_running_key_and_says_why():
    """The nanny restarted the worker for memory while key 2 ran: only key 2 is charged, with
    the limit and the peak in words; the keys before it (committed or not) and after it run again."""
    verdict = judge(KEYS, "run_batch-1", "KilledWorker: ...", died=True, report=report(), memory_rss=1536 * MiB)
    assert verdict.culprit == {"k": 2}
    assert verdict.reason == "killed: memory limit 512.00 MiB exceeded (peak ~1.50 GiB)"
    assert verdict.requeue == [{"k": 0}, {"k": 1}, {"k": 3}, {"k": 4}]
    assert not verdict.lost and not verdict.final and "KilledWorker" not in verdict.reason


def test_memory_seen_by_the_watchdog_alone_is_enough():
    """Without the nanny's memory event, a peak near the limit still names memory."""
    verdict = judge(KEYS, "run_batch-1", "x", died=True, report=report(exitcode=-9, peak=500 * MiB))
    assert verdict.reason.startswith("killed: memory limit 512.00 MiB exceeded")


def test_a_segfault_names_its_signal():
    verdict = judge(KEYS, "run_batch-1", "x", died=True, report=report(index=0, exitcode=-signal.SIGSEGV))
    assert verdict.culprit == {"k": 0}
    assert verdict.reason == "killed by signal 11 (SIGSEGV) while running this key"


def test_a_time_limit_fails_the_key_now():
    verdict = judge(KEYS, "run_batch-1", "x", died=True, report=report(index=4, timed_out=True, timeout=7200))
    assert (verdict.culprit, verdict.final) == ({"k": 4}, True)
    assert verdict.reason == "timed out after 2h"
    assert verdict.requeue == KEYS[:4]


def test_a_batch_that_waited_on_a_dead_worker_is_not_charged():
    """The worker died running another task: this batch had not started; nobody in it is to blame."""
    verdict = judge(KEYS, "run_batch-1", "x", died=True, report=report(task="run_batch-2", exitcode=-11))
    assert verdict.culprit is None and verdict.requeue == KEYS and verdict.lost


def test_a_worker_stopped_from_outside_or_vanished_charges_nobody():
    """SIGTERM without a memory peak (walltime, preemption), or no report at all (the job and
    its nanny gone): the keys run again with no attempt charged."""
    stopped = judge(KEYS, "run_batch-1", "x", died=True, report=report(exitcode=-15, peak=10 * MiB))
    vanished = judge(KEYS, "run_batch-1", "KilledWorker: gone", died=True, report=None)
    for verdict in (stopped, vanished):
        assert verdict.culprit is None and verdict.requeue == KEYS and verdict.lost
    assert vanished.split  # unexplained: halves, so that a key that kills workers ends up alone


def test_a_failure_outside_make_splits_the_batch_down_to_one_key():
    """Something outside make() raised: halves run again uncharged; a single key is charged."""
    assert judge(KEYS, "t", "TypeError: x", died=False) == Verdict(requeue=KEYS, split=True, reason="TypeError: x")
    single = judge(KEYS[:1], "t", "TypeError: x", died=False)
    assert single.culprit == {"k": 0} and single.reason == "TypeError: x" and not single.requeue


def test_durations_read_as_written():
    assert [duration_text(s) for s in (7200, 5400, 2700, 90, 1.5)] == ["2h", "1h 30m", "45m", "90s", "1.5s"]


def test_exit_descriptions():
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(-200) == "killed by signal 200"


def test_beacon_written_by_the_worker_is_read_by_its_nanny(tmp_path, monkeypatch):
    """The worker finds its nanny's beacon by the nanny's address and overwrites it per key."""
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    nanny = "tcp://127.0.0.1:40123"
    path = beacon_path(nanny)
    assert path.name == "beacon-tcp-127.0.0.1-40123.json"
    assert Beacon.open(nanny) is None and Beacon.open(None) is None  # no nanny made it: no beacon
    path.parent.mkdir()
    path.write_text("")
    beacon = Beacon.open(nanny, "tcp://127.0.0.1:40999")
    beacon.running("task-1", "Trace", 3, {"session": 7, "name": "a longer value " * 5}, timeout=60)
    beacon.running("task-1", "Trace", 4, {"session": 8}, timeout=60)
    record = read_beacon(path)
    assert (record["task"], record["index"], record["key"]) == ("task-1", 4, {"session": 8})
    assert record["deadline"] - record["started"] == 60
    # The worker names itself: a worker that dies before its nanny learnt its address is still found.
    assert record["worker"] == "tcp://127.0.0.1:40999"
    beacon.idle()
    assert read_beacon(path) == {}
    beacon.close()


def test_a_result_lost_with_its_worker_charges_nobody():
    """A future that is done without an exception (its task had finished; the worker holding
    the result died before the campaign fetched it): its keys run again, uncharged (DataJoint's
    check skips those already committed), never an error row "NoneType: None"."""
    from types import SimpleNamespace

    from djdask.campaign.losses import Losses

    losses = Losses(wait=0.0)
    batch = SimpleNamespace(keys=[KEYS[0]])
    losses.hold(batch, SimpleNamespace(key="run_batch-9", exception=lambda: None))
    [(held, verdict)] = losses.ready()
    assert held is batch and verdict.culprit is None and verdict.requeue == [KEYS[0]] and verdict.lost
    assert "result was lost with its worker" in verdict.reason
