"""Case 9: a pipeline kept populated (``--case follow``): ``djdask populate --follow`` against
the loop labs run today (DataJoint's ``populate(reserve_jobs=True)`` on every table, then a
sleep, as datajoint-utilities' ``DataJointWorker`` does).

- **Idle statements per minute**, counted on the server (:class:`tests.services.StatementCounter`),
  at 3 and at 200 tables (tests/pipelines/many.py), both sides looking every 30 s, once
  everything is made.  Goal: djdask's at 200 tables no more than at 3 (+10%), and at most
  60 a minute.
- **A soak**: new ``Session`` rows every 10 s for 30 minutes (3 with ``--quick``) on the
  3-table chain, djdask following at its default 30-s interval: each arrival's latency to
  its last downstream row (goal: the interval + the chain's make() time + 2 s), and the
  controller's resident memory, the server's open sessions and the statements of the first
  and the last minute (goal: memory within +20 MB, sessions constant).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.cases.common import PYTHON, prefixed_env, row, schema_prefix, sql_client

__all__ = ["case_follow"]

PIPELINES = Path(__file__).resolve().parents[2] / "tests" / "pipelines"
INTERVAL = 30.0
#: DataJoint's side: every table's populate(reserve_jobs=True), then a sleep of the interval.
DJ_LOOP = (
    "import time, many\nimport datajoint as dj\n"
    "tables = [v for v in vars(many).values() if isinstance(v, type) and issubclass(v, dj.Computed)]\n"
    "while True:\n"
    "    for t in tables:\n"
    "        t.populate(reserve_jobs=True, suppress_errors=True)\n"
    f"    time.sleep({INTERVAL})\n"
)


def _env(prefix: str, tables: int) -> dict[str, str]:
    return prefixed_env(
        prefix,
        DJDASK_TEST_MANY_TABLES=str(tables),
        PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(PIPELINES)]),
    )


def _names(sql, prefix: str, tables: int) -> list[str]:
    return [sql.table(f"{prefix}_many_{i * 4 // tables}", f"__step{i:03d}") for i in range(tables)]


#: Statements the benchmark's own checks sent (not the campaign's: taken off the soak's counts).
OWN = [0]


def _made(sql, names: list[str], session: int) -> bool:
    try:
        for name in names:
            OWN[0] += 1
            if not sql.scalar(f"SELECT COUNT(*) FROM {name} WHERE session = %s", (session,)):
                return False
        return True
    except Exception:  # not declared yet
        return False


def _wait(predicate, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"not done within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - start


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "a")  # noqa: SIM115 (closed with the process, in _stop)
    return subprocess.Popen([PYTHON, *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def idle_minute(side: str, tables: int, work: Path) -> int:
    """Statements in one idle minute of ``side`` (``djdask`` or ``datajoint``) on ``tables`` tables."""
    from tests.services import StatementCounter

    prefix = f"{schema_prefix()}{side[:2]}{tables}"
    env = _env(prefix, tables)
    sql = sql_client()
    seed = subprocess.run(
        [PYTHON, "-c", "import many; many.Session.insert1({'session': 0})"], env=env, capture_output=True, text=True
    )
    if seed.returncode:
        raise RuntimeError(seed.stderr)
    if side == "djdask":
        args = ["-m", "djdask.cli", "populate", "many", "--follow", "--workers", "1"]
    else:
        args = ["-c", DJ_LOOP]
    proc = _start(args, env, work / f"follow-idle-{side}-{tables}.log")
    counter = StatementCounter(dict(os.environ), sql)
    try:
        _wait(lambda: _made(sql, _names(sql, prefix, tables), 0), 600)
        time.sleep(INTERVAL + 10)  # past the look after the work and the next (a server's late counters)
        mark = counter.mark()
        time.sleep(60)
        return counter.since(mark)
    finally:
        _stop(proc)
        counter.close()
        sql.close()


def soak(minutes: float, work: Path) -> dict[str, Any]:
    """djdask following the 3-table chain while a Session arrives every 10 s for ``minutes``."""
    import psutil

    from tests.services import StatementCounter

    prefix = f"{schema_prefix()}soak"
    env = _env(prefix, 3)
    sql = sql_client()
    subprocess.run([PYTHON, "-c", "import many; many.Session.insert1({'session': 0})"], env=env, check=True)
    proc = _start(["-m", "djdask.cli", "populate", "many", "--follow", "--workers", "2"], env, work / "soak.log")
    counter = StatementCounter(dict(os.environ), sql)
    controller = psutil.Process(proc.pid)
    session = sql.table(f"{prefix}_many_0", "session")
    try:
        names = _names(sql, prefix, 3)
        _wait(lambda: _made(sql, names, 0), 300)
        arrived: dict[int, float] = {}
        latency: dict[int, float] = {}
        marks: list[tuple[float, int, int, int, int, int]] = []  # time, statements, own so far, RSS, sessions, files
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < minutes * 60:
            k += 1
            if not marks or time.monotonic() - marks[-1][0] >= 60:
                rss, sessions, files = controller.memory_info().rss, counter.connections(), controller.num_fds()
                marks.append((time.monotonic(), counter.mark(), OWN[0], rss, sessions, files))
            sql.query(f"INSERT INTO {session} (session) VALUES (%s)", (k,))
            OWN[0] += 1
            arrived[k] = time.monotonic()
            until = time.monotonic() + 10
            while time.monotonic() < until:
                for j in [j for j in arrived if j not in latency]:
                    if _made(sql, names, j):
                        latency[j] = time.monotonic() - arrived[j]
                time.sleep(0.2)
        _wait(lambda: all(_made(sql, names, j) for j in arrived), INTERVAL + 60)
        for j in [j for j in arrived if j not in latency]:
            latency[j] = time.monotonic() - arrived[j]
        # The campaign's statements (and its workers'), the benchmark's own inserts and checks taken off.
        own, now = OWN[0], time.monotonic()
        first = None
        if len(marks) > 1:
            first = counter.since(marks[0][1]) - counter.since(marks[1][1]) - (marks[1][2] - marks[0][2])
        last = (counter.since(marks[-1][1]) - (own - marks[-1][2])) * 60 / max(1.0, now - marks[-1][0])
        end = (controller.memory_info().rss, counter.connections(), controller.num_fds())
    finally:
        code = _stop(proc)
        counter.close()
        sql.close()
    values = sorted(latency.values())
    return {
        "arrivals": len(arrived),
        "latency_p50": values[len(values) // 2],
        "latency_max": values[-1],
        "rss_start": marks[0][3],
        "rss_end": end[0],
        "sessions_start": marks[0][4],
        "sessions_end": end[1],
        "files_start": marks[0][5],
        "files_end": end[2],
        "statements_first_minute": first,
        "statements_last_minute": round(last),
        "exit_code": code,
    }


def case_follow(quick: bool, work: Path) -> list[dict]:
    """Case 9: idle statements per minute at 3 and 200 tables (djdask vs DataJoint's loop), and
    a soak with arrivals every 10 s."""
    sys.path.insert(0, str(PIPELINES))
    idle = {(side, n): idle_minute(side, n, work) for side in ("djdask", "datajoint") for n in (3, 200)}
    soaked = soak(3 if quick else 30, work)
    mb = 1024 * 1024
    few, many = idle[("djdask", 3)], idle[("djdask", 200)]
    growth = (soaked["rss_end"] - soaked["rss_start"]) / mb
    return [
        row(
            "9 following, idle: statements per minute at 3 and 200 tables (30-s interval)",
            djdask=f"{few} / {many}",
            baseline=f"{idle[('datajoint', 3)]} / {idle[('datajoint', 200)]} (populate loop)",
            ratio=idle[("datajoint", 200)] / max(1, many),
            ratio_text=f"{idle[('datajoint', 200)] / max(1, many):.0f}x fewer at 200 tables",
            goal="200 tables <= 3 tables +10%, <= 60/min",
            met=many <= few * 1.1 + 1 and many <= 60,
            idle=[{"side": s, "tables": n, "statements": v} for (s, n), v in idle.items()],
        ),
        row(
            f"9 following, soak: {soaked['arrivals']} arrivals every 10 s over {3 if quick else 30} min",
            djdask=(
                f"latency p50 {soaked['latency_p50']:.1f} s, max {soaked['latency_max']:.1f} s; RSS "
                f"{growth:+.1f} MB; sessions {soaked['sessions_start']} -> {soaked['sessions_end']}; open files "
                f"{soaked['files_start']} -> {soaked['files_end']}; statements/min "
                f"{soaked['statements_first_minute']} -> {soaked['statements_last_minute']}"
            ),
            baseline="-",
            ratio=None,
            ratio_text="-",
            goal=f"latency <= {INTERVAL:.0f} s + make() + 2 s; RSS within +20 MB; sessions constant",
            met=soaked["latency_max"] <= INTERVAL + 3
            and growth <= 20
            and soaked["sessions_end"] == soaked["sessions_start"],
            soak=soaked,
        ),
    ]
