"""Worker jobs that never join (djdask.clusters.jobwatch): what each batch system's status
commands print, read as one job status; the likely fix read from a job's last words; and the
watch's rules (ended jobs said and forgotten, the pool given up after max-failed-starts in a
row, pending jobs said once per reason, a job no command knows counted as ended).  The
integration tests run the SLURM and Grid Engine cases for real (test_jobs_that_never_join)."""

from __future__ import annotations

import time

import pytest

from djdask.clusters.htcondor import parse_condor_attributes
from djdask.clusters.jobwatch import (
    ACCOUNTING_WAIT,
    GONE_AFTER,
    REPEAT_PENDING,
    JobStatus,
    JobWatch,
    SubmittedJob,
    likely_fix,
    tail,
)
from djdask.clusters.kubernetes import pod_status
from djdask.clusters.lsf import parse_bjobs_l
from djdask.clusters.pbs import parse_qstat_f
from djdask.clusters.sge import parse_qacct, parse_qstat_line, pending_reason
from djdask.clusters.slurm import parse_scontrol

SCONTROL_FAILED = (
    "JobId=7 JobName=djdask-test UserId=ana(1000) GroupId=lab(1000) Priority=1 JobState=FAILED "
    "Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 ExitCode=127:0 "
    "RunTime=00:00:01 NodeList=node07 BatchHost=node07 StdErr=/home/ana/logs/djdask-test-7.err "
    "StdIn=/dev/null StdOut=/home/ana/logs/djdask-test-7.out"
)
SCONTROL_PENDING = (
    "JobId=8 JobName=djdask-test JobState=PENDING Reason=QOSMaxJobsPerUserLimit Dependency=(null) "
    "ExitCode=0:0 NodeList=(null) StdErr=/home/ana/slurm-8.out StdOut=/home/ana/slurm-8.out"
)


def test_slurm_scontrol_reads_as_a_job_status():
    """A failed job must read as ended with its exit code, node and both output files; a pending
    one as pending with SLURM's reason and no node."""
    failed = parse_scontrol(SCONTROL_FAILED)
    assert (failed.state, failed.said, failed.reason, failed.exit_code, failed.node) == (
        "ended",
        "FAILED",
        "NonZeroExitCode",
        "127:0",
        "node07",
    )
    assert failed.outputs == ["/home/ana/logs/djdask-test-7.err", "/home/ana/logs/djdask-test-7.out"]
    pending = parse_scontrol(SCONTROL_PENDING)
    assert (pending.state, pending.reason, pending.exit_code, pending.node) == (
        "pending",
        "QOSMaxJobsPerUserLimit",
        None,
        "",
    )
    assert parse_scontrol("slurm_load_jobs error: Invalid job id specified") is None


QSTAT_SGE = """\
job-ID  prior   name       user         state submit/start at     queue                          slots ja-task-ID
-----------------------------------------------------------------------------------------------------------------
     41 0.55500 djdask-tes ana          r     12/07/2026 10:01:02 all.q@node03                       1
     42 0.00000 djdask-tes ana          qw    12/07/2026 10:01:05                                    1
     43 0.00000 djdask-tes ana          Eqw   12/07/2026 10:01:05                                    1
"""
QACCT = """\
==============================================================
qname        all.q
hostname     node03
jobname      djdask-test
jobnumber    44
failed       0
exit_status  127
"""


def test_grid_engine_qstat_and_qacct_read_as_a_job_status():
    """Running with its node from the queue instance, qw and Eqw pending, an unlisted job
    None (then its accounting says how it ended)."""
    running = parse_qstat_line(QSTAT_SGE, "41")
    assert (running.state, running.said, running.node) == ("running", "r", "node03")
    assert parse_qstat_line(QSTAT_SGE, "42").state == "pending"
    assert (parse_qstat_line(QSTAT_SGE, "43").state, parse_qstat_line(QSTAT_SGE, "43").said) == ("pending", "Eqw")
    assert parse_qstat_line(QSTAT_SGE, "4") is None  # 41 is not 4
    ended = parse_qacct(QACCT)
    assert (ended.state, ended.exit_code, ended.node, ended.said) == ("ended", "127", "node03", "ended")
    assert parse_qacct("error: job id 45 not found") is None


# `qstat -j` of a held job and of one submitted with `-a` (its start time), as Grid Engine 8.1
# prints them with schedd_job_info true; a site with it false prints no scheduling info line.
QSTAT_J_HELD = "job_number:                 1\njob_name:                   djdask-test\nscheduling info:            Job is in hold state\n"
QSTAT_J_LATER = "job_number:                 2\nexecution_time:             Tue Jan  1 00:00:00 2030\njob_name:                   djdask-test\n"


def test_grid_engine_says_why_a_job_waits_with_or_without_scheduling_info():
    assert pending_reason(QSTAT_J_HELD, "hqw") == "Job is in hold state"
    assert pending_reason(QSTAT_J_HELD.replace("scheduling info", "no"), "hqw") == "held; qrls releases it"
    assert pending_reason(QSTAT_J_LATER, "qw") == "its start time is Tue Jan  1 00:00:00 2030"
    assert pending_reason(QSTAT_J_LATER + "scheduling info:            execution time not reached\n", "qw") == (
        "execution time not reached"
    )
    assert pending_reason("job_number: 3\n", "qw") == ""


QSTAT_F_QUEUED = """\
Job Id: 1023.pbs01
    Job_Name = djdask-test
    job_state = Q
    comment = Not Running: Insufficient amount of resource: ncpus (R: 8 A: 4 T
\t: 4)
    Error_Path = login01:/home/ana/logs/djdask-test.e1023
    Output_Path = login01:/home/ana/logs/djdask-test.o1023
"""
QSTAT_F_FINISHED = """\
Job Id: 1024.pbs01
    job_state = F
    exec_host = node11/0*8
    exit_status = 1
    Output_Path = login01:/home/ana/logs/djdask-test.o1024
"""


def test_pbs_qstat_f_reads_as_a_job_status():
    """A queued job's comment (continued on a tab-indented line) is its reason; a finished
    one ends with its exit status and node."""
    queued = parse_qstat_f(QSTAT_F_QUEUED)
    assert queued.state == "pending" and queued.reason.endswith("(R: 8 A: 4 T: 4)"), queued
    assert queued.outputs == ["login01:/home/ana/logs/djdask-test.e1023", "login01:/home/ana/logs/djdask-test.o1023"]
    finished = parse_qstat_f(QSTAT_F_FINISHED)
    assert (finished.state, finished.exit_code, finished.node) == ("ended", "1", "node11")
    assert parse_qstat_f("qstat: Unknown Job Id 1025.pbs01") is None


BJOBS_PENDING = """\
Job <501>, Job Name <djdask-test>, User <ana>, Project <default>, Status <PEND>, Queue
                      <normal>, Command <#!/usr/bin/env bash>
Mon Dec  7 10:00:00: Submitted from host <login1>, CWD <$HOME>, Output File </home/ana/l
                     ogs/djdask-test-501.out>, Error File </home/ana/logs/djdask-test-501.err>;

 PENDING REASONS:
 Job's requirements for reserving resource (mem) not satisfied: 2 hosts;

 SCHEDULING PARAMETERS:
"""
BJOBS_EXITED = """\
Job <502>, Job Name <djdask-test>, User <ana>, Project <default>, Status <EXIT>, Queue <normal>
Mon Dec  7 10:00:05: Started 1 Task(s) on Host(s) <node2>, Allocated 1 Slot(s) on Host(s) <node2>;
Mon Dec  7 10:00:06: Exited with exit code 127. The CPU time used is 0.1 seconds.
"""


def test_lsf_bjobs_l_reads_as_a_job_status():
    """bjobs wraps long values onto lines of 21 spaces: the output path must come out whole,
    the pending reasons joined, the exit code and node of an exited job read."""
    pending = parse_bjobs_l(BJOBS_PENDING)
    assert pending.state == "pending" and pending.reason.startswith("Job's requirements for reserving resource")
    assert pending.outputs == ["/home/ana/logs/djdask-test-501.out", "/home/ana/logs/djdask-test-501.err"]
    exited = parse_bjobs_l(BJOBS_EXITED)
    assert (exited.state, exited.said, exited.exit_code, exited.node) == ("ended", "EXIT", "127", "node2")
    assert parse_bjobs_l("Job <503> is not found") is None


def test_htcondor_attributes_read_as_a_job_status():
    """Idle with the negotiator's reason, held with its hold reason (it never runs until
    released), completed with its exit code and the node it ran on."""
    idle = parse_condor_attributes("1\tundefined\tundefined\tno match found\tundefined\tundefined\t/l/e\t/l/o\n")
    assert (idle.state, idle.said, idle.reason, idle.outputs) == ("pending", "Idle", "no match found", ["/l/e", "/l/o"])
    held = parse_condor_attributes(
        "5\tundefined\tError from slot1@node4: SHADOW failed\tundefined\tundefined\tundefined\t/l/e\t/l/o"
    )
    assert (held.state, held.said, held.reason) == ("pending", "Held", "Error from slot1@node4: SHADOW failed")
    done = parse_condor_attributes("4\t1\tundefined\tundefined\tundefined\tslot1@node4\t/l/e\t/l/o")
    assert (done.state, done.exit_code, done.node) == ("ended", "1", "node4")
    assert parse_condor_attributes("") is None


def test_kubernetes_pod_statuses_read_as_job_statuses():
    """Pod statuses as the API returns them (Kubernetes' pod-lifecycle documentation): an
    unschedulable pod with the scheduler's message, an image that cannot be pulled, a
    worker killed for memory, a crash loop (ended for good), a running pod."""
    unschedulable = pod_status(
        {
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient memory.",
                    }
                ],
            }
        }
    )
    assert (unschedulable.state, unschedulable.said, unschedulable.reason) == (
        "pending",
        "Unschedulable",
        "0/3 nodes are available: 3 Insufficient memory.",
    )
    image = pod_status(
        {
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "lab/x:1"'}
                        }
                    }
                ],
            }
        }
    )
    assert (image.state, image.said) == ("pending", "ImagePullBackOff") and "lab/x:1" in image.reason
    oom = pod_status(
        {
            "spec": {"nodeName": "k8s-node-2"},
            "status": {
                "phase": "Failed",
                "containerStatuses": [{"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}],
            },
        }
    )
    assert (oom.state, oom.exit_code, oom.reason, oom.node) == ("ended", "137", "OOMKilled", "k8s-node-2")
    crash = pod_status(
        {
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                    }
                ],
            }
        }
    )
    assert (crash.state, crash.said, crash.exit_code, crash.reason) == ("ended", "CrashLoopBackOff", "1", "Error")
    assert (
        pod_status({"status": {"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}}).state
        == "running"
    )


@pytest.mark.parametrize(
    ("words", "setting"),
    [
        (["slurm_script: line 13: /opt/env/bin/python3: No such file or directory"], ".python` to a path"),
        (["ModuleNotFoundError: No module named 'distributed'"], "lacks djdask or Dask"),
        (
            ["Error: Invalid value for '--tls-ca-file': Path '/home/u/.djdask/tls/ca.pem' does not exist."],
            ".shared-temp-directory`",
        ),
        (["distributed.dask_worker - INFO - Timed out starting worker"], ".interface`"),
        (["ERROR: Unable to locate a modulefile for lab-env/2.1"], ".job-script-prologue`"),
    ],
)
def test_the_likely_fix_is_read_from_the_jobs_last_words(words, setting):
    """Each failure names its own setting; a wrong one sends a user to the wrong fix."""
    assert setting in likely_fix("lab", words, {"python": "/opt/env/bin/python3"})


def test_tail_quotes_the_error_file_first(tmp_path):
    (tmp_path / "w-9.out").write_text("started\n")
    (tmp_path / "w-9.err").write_text("\n".join(f"line {i}" for i in range(20)) + "\n\n")
    path, lines = tail([str(tmp_path / "w-9.out"), str(tmp_path / "w-9.err"), str(tmp_path / "missing")])
    assert path.endswith("w-9.err") and lines == [f"line {i}" for i in range(12, 20)]
    assert tail([str(tmp_path / "missing")]) == (None, [])


class Kind:
    """A stand-in batch kind: the status each job id has now."""

    name = "slurm"

    def __init__(self) -> None:
        self.statuses: dict[str, JobStatus | None] = {}

    def job_status(self, job_id, env=None):
        return self.statuses.get(job_id)


def watch_of(kind, jobs, workers, **options):
    """A watch that looks at every job at each check (interval 0)."""
    options.setdefault("interval", 0.0)
    said, forgotten, fatal = [], [], []
    watch = JobWatch(
        kind,
        "lab",
        {},
        jobs,
        lambda: workers,
        lambda: set(jobs),
        forgotten.append,
        said.append,
        fatal.append,
        **options,
    )
    return watch, said, forgotten, fatal


def test_the_watch_gives_up_after_max_failed_starts_in_a_row_and_never_once_a_worker_joined(tmp_path):
    """Two ended jobs are said and forgotten (so the cluster submits others); the third in a
    row gives up the pool.  Had one worker joined, jobs that end are said but never give up
    the pool: those are the campaign's usual worker losses."""
    kind = Kind()
    jobs = {f"c-{i}": SubmittedJob(str(i), f"c-{i}", time.monotonic(), str(tmp_path)) for i in range(3)}
    (tmp_path / "djdask-test-2.err").write_text("boom: exit 1\n")
    watch, said, forgotten, fatal = watch_of(kind, jobs, [], max_failed_starts=3)
    kind.statuses = {
        "0": JobStatus("ended", "FAILED", exit_code="1:0"),
        "1": JobStatus("ended", "FAILED", exit_code="1:0"),
    }
    watch.check()
    assert forgotten == ["c-0", "c-1"] and len(said) == 2 and not fatal
    kind.statuses["2"] = JobStatus("ended", "FAILED", exit_code="1:0", node="n1")
    watch.check()
    assert len(fatal) == 1 and "3 worker jobs in a row" in fatal[0] and "    boom: exit 1" in fatal[0], fatal
    assert "job 2 on n1: slurm says FAILED, exit code 1:0" in fatal[0]

    jobs = {"a-0": SubmittedJob("10", "a-0", time.monotonic()), "b-0": SubmittedJob("11", "b-0", time.monotonic())}
    watch, said, forgotten, fatal = watch_of(kind, jobs, ["a-0-1"], max_failed_starts=1)
    kind.statuses = {"11": JobStatus("ended", "FAILED")}
    watch.check()
    assert jobs["a-0"].joined and forgotten == ["b-0"] and not fatal


def test_pending_jobs_are_said_once_per_reason_and_again_only_after_ten_minutes():
    kind = Kind()
    long_ago = time.monotonic() - 120
    jobs = {f"c-{i}": SubmittedJob(str(i), f"c-{i}", long_ago) for i in range(3)}
    kind.statuses = {
        "0": JobStatus("pending", "PENDING", "Priority"),
        "1": JobStatus("pending", "PENDING", "Priority"),
        "2": JobStatus("pending", "PENDING", "BeginTime"),
    }
    watch, said, _, _ = watch_of(kind, jobs, [], pending_after=60)
    watch.check()
    assert len(said) == 2 and said[0].startswith(
        "Worker jobs 0, 1 have waited 120 s in the queue: slurm says PENDING (Priority)"
    )
    watch.check()
    assert len(said) == 2  # not at every look
    for job in jobs.values():
        job.pending_said -= REPEAT_PENDING
        job.looked = 0.0
    watch.check()
    assert len(said) == 4


def test_a_job_no_command_knows_counts_as_ended_only_after_a_while():
    """Just submitted, a job may not be listed yet; answered in words not read here, it is
    left be (a batch system whose answers are not read right must not have its jobs
    cancelled); known, then gone, its record expired: it ended; never seen and still unknown
    after GONE_AFTER (a job that failed at once, purged before the first look: the test
    SLURM's MinJobAge is 2 s), it ended too."""
    kind = Kind()
    jobs = {"c-0": SubmittedJob("5", "c-0", time.monotonic()), "c-1": SubmittedJob("6", "c-1", time.monotonic())}
    watch, said, forgotten, _ = watch_of(kind, jobs, [])
    kind.statuses["5"] = JobStatus("unknown")
    watch.check()
    assert not said and not forgotten
    jobs["c-0"].submitted -= GONE_AFTER
    watch.check()
    assert not said and not forgotten
    kind.statuses["5"] = JobStatus("running", "RUNNING")
    watch.check()
    del kind.statuses["5"]
    watch.check()
    assert not forgotten  # its accounting may not be written yet: ACCOUNTING_WAIT
    jobs["c-0"].missing_since -= ACCOUNTING_WAIT
    watch.check()
    assert forgotten == ["c-0"] and "no record of it any more" in said[0]
    jobs["c-1"].submitted -= GONE_AFTER
    watch.check()
    assert forgotten == ["c-0", "c-1"]


def test_a_job_the_cluster_cancelled_itself_is_no_failed_start():
    """Scaling down cancels jobs still pending: SLURM then says CANCELLED, which must not count
    toward giving up the pool."""
    kind = Kind()
    jobs = {"c-0": SubmittedJob("5", "c-0", time.monotonic())}
    said, forgotten, fatal = [], [], []
    watch = JobWatch(
        kind, "lab", {}, jobs, list, set, forgotten.append, said.append, fatal.append, max_failed_starts=1, interval=0.0
    )
    kind.statuses["5"] = JobStatus("ended", "CANCELLED")
    watch.check()
    assert not said and not forgotten and not fatal and jobs["c-0"].ended is not None
