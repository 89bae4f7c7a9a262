"""Campaigns on a real single-node SLURM (started by the ``slurm`` fixture).

Workers are SLURM jobs submitted by dask-jobqueue; the ledger pipeline writes
each make()'s SLURM job id, so the tests see where every key ran.  SLURM
behaves the same under either database, so these run on PostgreSQL only.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

from tests.conftest import DASK_DASHBOARD
from tests.integration.batch_campaigns import (
    Watch,
    campaign_records,
    ledger_lines,
    queue_empties,
    submitted_campaign_hands_over,
    write_profile,
)
from tests.integration.test_dashboard import answer, read_until, unanswered
from tests.integration.test_jobs_engine import ledger_lines as raw_ledger_lines
from tests.integration.test_jobs_engine import seed_ledger as seed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("slurm"),
    pytest.mark.parametrize("server", ["postgres"], indirect=True),
]


def test_workers_are_slurm_jobs_and_leave_no_job_behind(server, djdask, sql, prefix, slurm, tmp_path):
    """Every make() runs inside a SLURM job that squeue showed running; the campaign asks for
    no more jobs than its keys can use (3 keys, cap 6), and cancels its jobs at the end."""
    seed(djdask, 3)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        **slurm.env,
        **write_profile(tmp_path, **{"max-jobs": 6}),
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="1",
    )
    watch = Watch(djdask, slurm, env)
    code, out, err = watch.wait(180)
    assert code == 0, out + err
    lines = ledger_lines(ledger)
    assert sorted(k for k, _, _ in lines) == [0, 1, 2]
    jobs = {job for _, _, job in lines}
    assert "-" not in jobs, "a make() ran outside SLURM"
    assert jobs <= {j for j, states in watch.seen.items() if "RUNNING" in states}
    assert 1 <= watch.most_jobs <= 3, f"asked for {watch.most_jobs} jobs for 3 keys"
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_ledger', '__entry')}") == 3
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry") == {}
    assert queue_empties(slurm), f"jobs left in the queue: {slurm.queue()}"


def test_a_cancelled_worker_job_is_replaced(server, djdask, sql, prefix, slurm, tmp_path):
    """scancel one of the two worker jobs mid-campaign: a new job replaces it, every key is
    made, none is left reserved or in error.  The keys the job took with it are charged no
    attempt (with max-attempts 1, a charged key would be an error row): the job was ended
    from outside, as by a walltime, a preemption or a node failure."""
    n = 30
    seed(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        **slurm.env,
        **write_profile(tmp_path),
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="0.5",
        DASK_DJDASK__CAMPAIGN__MAX_ATTEMPTS="1",
    )
    watch = Watch(djdask, slurm, env)
    deadline = time.monotonic() + 120
    while len(watch.running()) < 2 or len(ledger_lines(ledger)) < 4:
        assert watch.proc.poll() is None and time.monotonic() < deadline, "two workers never ran"
        time.sleep(0.3)
    victim = watch.running()[0]
    slurm.run("scancel", victim)
    code, out, err = watch.wait(240)
    assert code == 0, out + err
    made = sql.query(f"SELECT source_id FROM {sql.table(prefix + '_ledger', '__entry')}")
    assert sorted(r[0] for r in made) == list(range(n))
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry") == {}
    after = {job for _, _, job in ledger_lines(ledger)}
    assert after - set(watch.seen) == set()
    replacements = [j for j in watch.seen if int(j) > max(int(v) for v in watch.seen if v == victim)]
    assert replacements and after & set(replacements), "no replacement job made keys"
    assert queue_empties(slurm), f"jobs left in the queue: {slurm.queue()}"


def test_walltime_workers_retire_and_are_replaced(server, djdask, sql, prefix, slurm, tmp_path):
    """Workers with a 20 s lifetime (a one-minute walltime; the lifetime derived from a
    walltime is checked in the job scripts' unit tests) and about 31 s of work for one
    job at a time: workers retire before SLURM's limit (no job killed for time), new
    jobs take over, and no make() is interrupted or repeated.  Walltime-aware dispatch:
    once make()'s duration is measured, no key starts on a worker whose lifetime would end
    before the key does (else it would run past the lifetime, toward the walltime)."""
    n = 24
    seed(djdask, n)
    ledger = tmp_path / "ledger.txt"
    env = djdask.env(
        **slurm.env,
        **write_profile(tmp_path, walltime="00:01:00", lifetime="20s", **{"max-jobs": 1, "lifetime-stagger": "2s"}),
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="1.3",
    )
    watch = Watch(djdask, slurm, env)
    code, out, err = watch.wait(300)
    assert code == 0, out + err
    lines = ledger_lines(ledger)
    counts = Counter(k for k, _, _ in lines)
    assert set(counts) == set(range(n)) and max(counts.values()) == 1, "a make() ran twice"
    assert len({job for _, _, job in lines}) >= 2, "no replacement worker made keys"
    assert sql.scalar(f"SELECT COUNT(*) FROM {sql.table(prefix + '_ledger', '__entry')}") == n
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry") == {}
    late = [
        (key, round(float(deadline) - float(start), 2))
        for key, _, _, start, deadline in raw_ledger_lines(ledger)
        if deadline != "-" and float(start) + 1.3 > float(deadline)
    ]
    assert not late, f"keys started with less lifetime left than their make() takes: {late}"
    logs = "".join(p.read_text() for p in (tmp_path / "slurm-logs").glob("*"))
    assert "TIME LIMIT" not in logs, "a worker job hit SLURM's walltime"
    assert queue_empties(slurm), f"jobs left in the queue: {slurm.queue()}"


def test_a_refused_job_submission_stops_the_campaign(server, djdask, sql, prefix, slurm, tmp_path):
    """A partition that does not exist: sbatch refuses every job. The campaign must not wait
    forever: exit 2 with sbatch's reason and the profile key to fix; nothing left reserved
    or queued."""
    seed(djdask, 3)
    env = djdask.env(
        **slurm.env, **write_profile(tmp_path, queue="nosuch"), DJDASK_TEST_LEDGER=str(tmp_path / "ledger.txt")
    )
    result = djdask("populate", "ledger", "--cluster", "testslurm", env=env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Profile 'testslurm' could not submit a worker job" in result.stderr
    assert "invalid partition" in result.stderr.lower() and "djdask.clusters.testslurm" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert sql.jobs_counts(f"{prefix}_ledger", "__entry").get("reserved", 0) == 0
    assert queue_empties(slurm, timeout=5)


def test_two_pools_route_tables_by_their_resources(server, djdask, sql, prefix, slurm, tmp_path):
    """`--cluster default=local --cluster gpu=testslurm`, the SLURM profile offering GPU: 1.
    OnGpu (declares GPU: 1) must run only on SLURM workers, OnAny only on the local pool."""
    assert djdask.python("import gpu; gpu.Frame.insert({'frame_id': i} for i in range(6))").returncode == 0
    env = djdask.env(**slurm.env, **write_profile(tmp_path, resources={"GPU": 1}))
    result = djdask(
        "populate",
        "gpu",
        "--cluster",
        "default=local",
        "--cluster",
        "gpu=testslurm",
        "--workers",
        "1",
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    schema = f"{prefix}_gpu"
    on_gpu = [w for (w,) in sql.query(f"SELECT worker FROM {sql.table(schema, '__on_gpu')}")]
    on_any = [w for (w,) in sql.query(f"SELECT worker FROM {sql.table(schema, '__on_any')}")]
    assert len(on_gpu) == 6 and all(w.startswith("SLURMCluster") for w in on_gpu), (
        on_gpu,
        result.stdout + result.stderr,
    )
    assert len(on_any) == 6 and not any(w.startswith("SLURMCluster") for w in on_any), on_any
    assert queue_empties(slurm), f"jobs left in the queue: {slurm.queue()}"


PROBE = """
import sys
from distributed import Client
from distributed.security import Security
address, files = sys.argv[1], sys.argv[2:]
security = Security(tls_ca_file=files[0], tls_client_cert=files[1], tls_client_key=files[2],
                    require_encryption=True) if files else None
try:
    with Client(address, security=security, timeout=5) as client:
        print("accepted", len(client.scheduler_info()["workers"]))
except Exception as err:
    print("refused", type(err).__name__)
"""


def probes(*clients: tuple[str, ...]) -> list[str]:
    """Each client ``(address, *tls files)`` tries the scheduler, all at once: "accepted N" or "refused ..."."""
    running = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE, *map(str, client)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for client in clients
    ]
    results = []
    for process in running:
        out, err = process.communicate(timeout=60)
        results.append(out.strip() or err)
    return results


def test_only_the_campaigns_credentials_drive_its_scheduler(server, djdask, sql, prefix, slurm, tmp_path):
    """On a cluster the scheduler talks TLS with credentials made for the campaign: a plain-TCP
    client is refused, and so is a TLS client without them; a client with them is accepted and
    sees the workers, which SLURM started and which connected with the copies the campaign
    wrote (owner-only) to shared-temp-directory, removed at the end.  The dashboard listens on
    loopback."""
    n = 12
    seed(djdask, n)
    ledger, shared = tmp_path / "ledger.txt", tmp_path / "tls"
    env = djdask.env(
        **slurm.env,
        **write_profile(tmp_path, **{"shared-temp-directory": str(shared)}),
        DJDASK_TEST_LEDGER=str(ledger),
        DJDASK_TEST_MAKE_SECONDS="2.5",  # 15 s of work left for the three clients to try the scheduler
        PYTHONUNBUFFERED="1",
        **DASK_DASHBOARD,
    )
    watch = Watch(djdask, slurm, env)
    address = dashboard = None
    while address is None or dashboard is None:
        line = watch.proc.stdout.readline()
        assert line, "the campaign ended before it named its scheduler: " + watch.proc.communicate()[1]
        if line.startswith("Scheduler:"):
            address = line.split()[1]
            assert "TLS" in line, line
        if line.startswith("Dask dashboard:"):
            dashboard = line.split()[2]
    assert address.startswith("tls://"), address
    assert dashboard.startswith("http://127.0.0.1:"), dashboard
    deadline = time.monotonic() + 120
    while not ledger_lines(ledger):  # a worker (a SLURM job) connected over TLS and made a key
        assert watch.proc.poll() is None and time.monotonic() < deadline, "no worker ever ran"
        time.sleep(0.3)
    files = {key: next(shared.glob(f".dask-jobqueue.worker.{key}.*")) for key in ("ca_file", "cert", "key")}
    assert oct(files["key"].stat().st_mode & 0o777) == "0o600"

    plain, stranger, accepted = probes(
        (address.replace("tls://", "tcp://"),), (address,), (address, files["ca_file"], files["cert"], files["key"])
    )
    assert watch.proc.poll() is None, "the campaign ended before the clients tried it: their refusals prove nothing"
    assert plain.startswith("refused"), "a plain-TCP client was accepted"
    assert stranger.startswith("refused"), "a TLS client without the campaign's credentials was accepted"
    assert accepted.startswith("accepted") and int(accepted.split()[1]) >= 1, accepted

    code, out, err = watch.wait(240)
    assert code == 0, out + err
    assert sorted(k for k, _, _ in ledger_lines(ledger)) == list(range(n))
    assert not list(shared.glob(".dask-jobqueue.*")), "the workers' credentials outlived the campaign"
    assert queue_empties(slurm), f"jobs left in the queue: {slurm.queue()}"


@pytest.mark.parametrize(
    "plots, address",
    [(True, None), (False, None), (True, "0.0.0.0:0")],
    ids=["dashboard-on-loopback", "headless-on-loopback", "dashboard-on-every-address"],
)
def test_every_link_the_campaign_prints_answers(server, djdask, sql, prefix, slurm, tmp_path, plots, address):
    """A profile as a user writes it names no scheduler host, so the scheduler takes this host's
    network address, while its web server listens where `dashboard-address` says: loopback by
    default (the Security section's promise), every address when opened wider.  While the
    campaign runs, every http link it prints, and the one its record keeps, answers 200;
    on loopback the campaign also prints the SSH tunnel to this host and the links' port.
    Wrong if this fails: a link naming an address the server does not listen on (refused),
    /status with Dask's dashboard off (404), or a tunnel to another port or host."""
    seed(djdask, 6)  # 12 s of work in one job: the links are tried while it runs
    settings = {"scheduler-options": {}, "max-jobs": 1}
    if address:
        settings["dashboard-address"] = address
    env = djdask.env(
        **slurm.env,
        **write_profile(tmp_path, **settings),
        DJDASK_TEST_LEDGER=str(tmp_path / "ledger.txt"),
        DJDASK_TEST_MAKE_SECONDS="2",
        PYTHONUNBUFFERED="1",
        DASK_DJDASK__CAMPAIGN__DASK_DASHBOARD=str(plots).lower(),
    )
    watch = Watch(djdask, slurm, env)
    printed = read_until(watch.proc, "Campaign page:")
    assert not unanswered(printed), (unanswered(printed), printed)
    if address is None:
        printed += read_until(watch.proc, "From elsewhere:")
    assert ("Dask dashboard:" in printed) == plots, printed
    links = [
        line.split()[-1] for line in printed.splitlines() if line.startswith(("Dask dashboard:", "Campaign page:"))
    ]
    scheduler = urlsplit(next(line.split()[1] for line in printed.splitlines() if line.startswith("Scheduler:")))
    hosts = {urlsplit(link).hostname for link in links}
    ports = {urlsplit(link).port for link in links}
    assert scheduler.hostname != "127.0.0.1", f"the scheduler took loopback: this test shows nothing ({printed})"
    if address is None:
        assert hosts == {"127.0.0.1"}, printed
        (tunnel,) = [line for line in printed.splitlines() if line.startswith("From elsewhere:")]
        forward, login = tunnel.split("ssh -L ", 1)[1].split()[:2]
        (port,) = ports
        assert forward == f"{port}:127.0.0.1:{port}", tunnel
        assert socket.gethostbyname(login), tunnel  # a name this machine resolves
    else:
        assert hosts == {scheduler.hostname}, printed
    deadline = time.monotonic() + 30
    while not (record := campaign_records(djdask, env)[0])["dashboard"]:
        assert time.monotonic() < deadline, f"the record keeps no link: {record}"
        time.sleep(0.3)
    recorded = answer(record["dashboard"])
    assert watch.proc.poll() is None, "the campaign ended before its links were tried: their answers prove nothing"
    assert recorded == 200, (record["dashboard"], recorded)
    assert record["dashboard"] == links[0], (record["dashboard"], links)
    code, out, err = watch.wait(240)
    assert code == 0, printed + out + err
    assert ("From elsewhere:" in printed + out) == (address is None), "a tunnel where none is needed: " + out
    assert queue_empties(slurm), f"jobs left in the queue: {slurm.queue()}"


def test_a_submitted_campaign_runs_as_slurm_jobs_and_hands_over_to_its_successors(
    server, djdask, sql, prefix, slurm, tmp_path
):
    """`djdask submit --resubmit` with SLURM jobs for the controllers and the workers
    (batch_campaigns.submitted_campaign_hands_over says what is checked)."""
    seed(djdask, 8)
    print(submitted_campaign_hands_over(djdask, slurm, tmp_path, n=8))
