"""What the batch-system tests share: a profile for the test's batch system, a
campaign watched while it runs, and the checks that end each test (every key made
once, inside a job of the batch system, nothing left queued).

A batch system is one of ``tests.batch_systems``: ``kind``, ``env`` (its
commands' environment) and ``queue()`` (id, name, state of each job).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.test_jobs_engine import ledger_lines as raw_ledger_lines

JOB_NAME = "djdask-test"
#: What each kind's queue says of a running job.
RUNNING = {"RUNNING", "r", "R"}
#: The queue a profile of each kind names: SLURM's partition (PBS's -q becomes one), SGE's queue.
QUEUES = {"slurm": "debug", "pbs": "debug", "sge": "all.q"}


def write_profile(tmp_path: Path, kind: str = "slurm", **settings) -> dict[str, str]:
    """A `test<kind>` profile in a dask config directory; the environment that uses it."""
    profile = {
        "kind": kind,
        "queue": QUEUES[kind],
        "cores": 1,
        "memory": "1GB",
        "walltime": "00:10:00",
        "max-jobs": 2,
        "job-name": JOB_NAME,
        "scheduler-options": {"host": "127.0.0.1"},
        "log-directory": str(tmp_path / f"{kind}-logs"),
        **settings,
    }
    config_dir = tmp_path / "dask"
    config_dir.mkdir(exist_ok=True)
    lines = ["djdask:", "  clusters:", f"    test{kind}:"]
    lines += [
        f"      {key}: {value!r}" if isinstance(value, str) else f"      {key}: {value}"
        for key, value in profile.items()
    ]
    (config_dir / "djdask.yaml").write_text("\n".join(lines).replace("'", '"') + "\n")
    return {"DASK_CONFIG": str(config_dir)}


def ledger_lines(path: Path) -> list[tuple[int, str, str]]:
    """The ledger's lines as (key, pid, batch job id)."""
    return [(int(k), pid, job) for k, pid, job, *_ in raw_ledger_lines(path)]


class Watch:
    """Runs `djdask populate` in the background and records the batch queue meanwhile."""

    def __init__(self, djdask, system, env: dict[str, str], *args: str, module: str = "ledger") -> None:
        self.system = system
        self.seen: dict[str, set[str]] = {}  # job id -> states seen
        self.most_jobs = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "djdask.cli", "populate", module, "--cluster", f"test{system.kind}", *args],
            env=env,
            cwd=djdask.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def poll(self) -> list[dict[str, str]]:
        jobs = [j for j in self.system.queue() if j["name"] == JOB_NAME]
        for job in jobs:
            self.seen.setdefault(job["id"], set()).add(job["state"])
        self.most_jobs = max(self.most_jobs, len(jobs))
        return jobs

    def running(self) -> list[str]:
        return [j["id"] for j in self.poll() if j["state"] in RUNNING]

    def ran(self) -> set[str]:
        """Jobs the queue showed running."""
        return {job for job, states in self.seen.items() if states & RUNNING}

    def wait(self, timeout: float) -> tuple[int, str, str]:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                out, err = self.proc.communicate()
                pytest.fail(f"campaign did not finish in {timeout} s\n{out}\n{err}")
            self.poll()
            time.sleep(0.3)
        out, err = self.proc.communicate()
        return self.proc.returncode, out, err


class Said:
    """A djdask command run in the background whose stderr lines are kept with the wall-clock
    time each was printed: how long after its evidence (a job's end, its time in the queue) the
    campaign said something."""

    def __init__(self, djdask, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "djdask.cli", *args],
            env={**env, "PYTHONUNBUFFERED": "1"},
            cwd=djdask.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._out: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, timed: bool) -> None:
        for line in stream:
            if timed:
                self.lines.append((time.time(), line))
            else:
                self._out.append(line)

    def finish(self, timeout: float, stop: int | None = None) -> subprocess.CompletedProcess:
        """Its end (after signal ``stop``, when given), as a CompletedProcess; killed after ``timeout``."""
        if stop is not None:
            self.proc.send_signal(stop)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.proc.args[3:]} did not end in {timeout} s\n{self.stderr}")
        for reader in self._readers:
            reader.join(10)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, self.stdout, self.stderr)

    @property
    def stderr(self) -> str:
        return "".join(line for _, line in self.lines)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    def when(self, pattern: str) -> list[tuple[float, re.Match]]:
        """The time and match of each stderr line that ``pattern`` matches."""
        return [(at, found) for at, line in self.lines if (found := re.search(pattern, line))]

    def after_job_end(self, log_directory: Path) -> dict[str, float]:
        """Seconds from each ended job's last output (its file's mtime, in ``log_directory``) to
        the line that said it ended."""
        delays = {}
        for at, found in self.when(r"Worker job (\d+)\b.* ended before its worker joined"):
            job = found.group(1)
            own = re.compile(rf"(?<!\d){job}(?!\d)")
            files = [p for p in log_directory.glob(f"*{job}*") if own.search(p.name)]
            if files:
                delays[job] = round(at - max(p.stat().st_mtime for p in files), 1)
        return delays


def queue_empties(system, timeout: float = 30, name: str = JOB_NAME) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [j for j in system.queue() if j["name"] == name]:
            return True
        time.sleep(0.5)
    return False


def campaign_records(djdask, env) -> list[dict]:
    listed = djdask("campaigns", "ledger", "--json", env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return json.loads(listed.stdout)


def submitted_campaign_hands_over(djdask, system, tmp_path: Path, *, n: int = 8, handovers: int = 1) -> str:
    """`djdask submit --resubmit` on ``system`` (the ledger seeded with ``n`` keys): the
    command returns at once; the controller is a batch job whose workers are batch jobs;
    each controller claims for 10 s, then submits its successor, which takes the campaign
    over; it finishes by itself, every key made once in a worker job, and its report agrees
    with the jobs tables.  Returns a line of figures for the test to print.

    A make() takes 3 s, so the first controller's two workers cannot make 8 keys in its
    10 s (they join 3-10 s after it starts): there is always a handover.  Each worker
    finishes the key it runs when the time is up, so a controller whose workers join late
    still makes about two keys (with 16 keys of 1 s, CI's loaded machine needed more than
    300 s: its controllers made 0-2 keys each)."""
    kind = system.kind
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        **system.env,
        **write_profile(tmp_path, kind),
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="3",
        DJ_JOBS_KEEP_COMPLETED="true",
        DASK_DJDASK__CAMPAIGN__SUBMIT_DIR=str(tmp_path / "campaigns"),
        DASK_DJDASK__CAMPAIGN__GRACE_PERIOD="10s",
    )
    start = time.monotonic()
    submitted = djdask(
        "submit",
        "ledger",
        "--cluster",
        f"test{kind}",
        "--walltime",
        "00:03:00",
        "--stop-after",
        "10s",
        "--resubmit",
        env=env,
    )
    took = time.monotonic() - start
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert took < 10, f"djdask submit took {took:.1f} s"  # it submits and returns (3 s on an idle machine)
    found = re.search(r"Campaign ([0-9a-f]{8}) submitted: controller job (\d+)", submitted.stdout)
    assert found, submitted.stdout
    campaign, first_job = found.groups()
    log = tmp_path / "campaigns" / f"{campaign}.log"
    assert str(log) in submitted.stdout and f"djdask cancel {campaign}" in submitted.stdout

    controllers: set[str] = set()
    workers_seen: set[str] = set()
    states: list[str] = []
    deadline = time.monotonic() + 300
    while not states or states[-1] not in ("finished", "failed", "cancelled", "lost"):
        assert time.monotonic() < deadline, f"the campaign did not finish: {states}\n{log.read_text()}"
        queue = system.queue()
        controllers |= {j["id"] for j in queue if j["name"] == f"djdask-{campaign}"}
        workers_seen |= {j["id"] for j in queue if j["name"] == JOB_NAME and j["state"] in RUNNING}
        states.append(campaign_records(djdask, env)[0]["state"])
        time.sleep(1)
    [record] = campaign_records(djdask, env)
    assert record["state"] == "finished" and record["exit_code"] == 0, log.read_text()
    assert "running" in states
    assert record["controllers"] >= handovers + 1, f"{record['controllers']} controllers: not {handovers} handovers"
    assert first_job in controllers and len(controllers) >= 2
    lines = ledger_lines(ledger)
    assert Counter(k for k, _, _ in lines) == Counter(range(n)), "a key was made twice or never"
    workers = {job for _, _, job in lines}
    assert "-" not in workers and not workers & controllers, "make() ran outside a worker job"
    # The queue is read once a second: a short worker job may come and go between two reads.
    assert workers & workers_seen, f"make() ran in jobs {workers}, none of which the queue showed running"
    assert record["accounting"]["made"] == n == record["keys_made"]
    report = djdask("report", campaign, "--json", env=env)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["jobs_tables"] == {"Entry": {"success": n}}
    [pool] = record["accounting"]["pools"]
    assert pool["profile"] == f"test{kind}" and pool["jobs_submitted"] >= record["controllers"]
    assert pool["node_hours_requested"] == pytest.approx(pool["jobs_submitted"] * 10 / 60, abs=0.01)
    assert log.read_text().count("== djdask controller of campaign") == record["controllers"]
    assert queue_empties(system, 60), f"jobs left in the queue: {system.queue()}"
    assert queue_empties(system, 10, name=f"djdask-{campaign}"), f"a controller left in the queue: {system.queue()}"
    return (
        f"submit ({kind}): returned in {took:.1f} s; {record['controllers']} controllers (jobs {sorted(controllers)}), "
        f"states seen {sorted(set(states))}; {n} keys made once in worker jobs {sorted(workers)}; "
        f"{pool['jobs_submitted']} worker jobs submitted"
    )
