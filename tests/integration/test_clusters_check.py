"""`djdask clusters check PROFILE [MODULE]` on a real single-node SLURM and Grid Engine: one
probe job, each step reported with its time; exit 0 when all pass, exit 2 at the step that
failed, in the words of the batch system or of the node.  (The multi-node cluster's tests add
the failures only separate nodes can have: a path or route the node lacks.)"""

from __future__ import annotations

import json

import pytest

from tests.integration.batch_campaigns import queue_empties, write_profile

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server", ["postgres"], indirect=True)]

SLURM = pytest.mark.xdist_group("slurm")
SGE = pytest.mark.xdist_group("sge")


def run_check(djdask, system, tmp_path, *args, **settings):
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = djdask.env(**system.env, **write_profile(tmp_path, system.kind, **settings))
    result = djdask("clusters", "check", f"test{system.kind}", *args, env=env, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    assert queue_empties(system, timeout=15), f"the probe job was left in the queue: {system.queue()}"
    return result


@SLURM
def test_check_passes_on_slurm_with_every_step_timed(server, djdask, sql, prefix, slurm, tmp_path):
    """Every step passes with the ledger pipeline; the JSON names each with its seconds; the
    node is the job's, the scheduler reached over TLS, the walltime SLURM granted the profile's."""
    result = run_check(djdask, slurm, tmp_path, "ledger", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    steps = {s["step"]: s for s in report["steps"]}
    assert report["ok"] and list(steps) == [
        "submitted",
        "started",
        "versions",
        "paths",
        "database",
        "imports",
        "store",
        "scheduler",
        "granted",
    ], steps
    assert all(s["result"] == "ok" for s in steps.values()), steps
    assert steps["submitted"]["detail"].startswith("job ") and " on " in steps["started"]["detail"]
    assert "over TLS" in steps["scheduler"]["detail"] and "walltime 00:10:00" in steps["granted"]["detail"]
    assert all(s["seconds"] >= 0 for s in report["steps"]) and steps["started"]["seconds"] > 0
    plain = run_check(djdask, slurm, tmp_path)  # without MODULE: the import is skipped, the rest passes
    assert plain.returncode == 0 and "skipped imports" in " ".join(plain.stdout.split()), plain.stdout
    print(result.stdout)


@SLURM
def test_check_fails_at_the_step_that_is_wrong(server, djdask, sql, prefix, slurm, tmp_path):
    """A python the node lacks fails `started` with the job's own words; a module the node
    cannot import fails `imports`; a database port the node cannot reach fails `database`;
    a job held pending fails `started` at --timeout with SLURM's reason.  Each exit 2."""
    python = run_check(djdask, slurm, tmp_path / "python", python="/nonexistent/env/bin/python3")
    assert python.returncode == 2, python.stdout + python.stderr
    assert "fail    started" in python.stdout and "/nonexistent/env/bin/python3: No such file" in python.stderr
    assert "`djdask.clusters.testslurm.python`" in python.stderr

    module = run_check(djdask, slurm, tmp_path / "module", "nosuch_pipeline")
    assert module.returncode == 2 and "fail    imports" in module.stdout, module.stdout + module.stderr
    assert "No module named 'nosuch_pipeline'" in module.stderr

    (tmp_path / "db").mkdir()
    env = djdask.env(**slurm.env, **write_profile(tmp_path / "db", "slurm"), DJ_PORT="1")
    database = djdask("clusters", "check", "testslurm", env=env, timeout=300)
    assert database.returncode == 2 and "fail    database" in database.stdout, database.stdout + database.stderr
    assert "Traceback" not in database.stderr and queue_empties(slurm, timeout=15)

    pending = run_check(
        djdask,
        slurm,
        tmp_path / "pending",
        "--timeout",
        "15s",
        **{"job-extra-directives": ["--begin=now+2hours"], "report-pending-after": "5s"},
    )
    assert pending.returncode == 2 and "fail    started" in pending.stdout, pending.stdout + pending.stderr
    assert "BeginTime" in pending.stderr and "did not join within 15 s" in pending.stderr


@SGE
def test_check_on_grid_engine_passes_and_fails_at_started(server, djdask, sql, prefix, gridengine, tmp_path):
    """As on SLURM: a good profile passes (h_rt granted), a missing python fails `started`."""
    good = run_check(djdask, gridengine, tmp_path / "good", "ledger")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "passed every check" in good.stdout
    bad = run_check(djdask, gridengine, tmp_path / "bad", python="/nonexistent/env/bin/python3")
    assert bad.returncode == 2 and "fail    started" in bad.stdout, bad.stdout + bad.stderr
    assert "`djdask.clusters.testsge.python`" in bad.stderr
    print(good.stdout)
