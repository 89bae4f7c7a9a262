"""Campaigns through PBS's commands: ``qsub``, ``qstat`` and ``qdel`` in Torque's syntax,
as SchedMD's wrappers (Debian's slurm-wlm-torque) give them on top of the test SLURM.

dask-jobqueue's ``PBSCluster`` writes ``#PBS`` directives (``select=1:ncpus=..:mem=..``,
``walltime``) and submits with ``qsub``; the wrappers turn them into a SLURM job.
No PBS server can be had here (OpenPBS and Torque are not in Debian 12): this proves
the job scripts, directives and the job's environment, not a PBS server's scheduling.
"""

from __future__ import annotations

import pytest

from tests.integration.batch_campaigns import submitted_campaign_hands_over
from tests.integration.test_jobs_engine import seed_ledger as seed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("pbs"),  # on a SLURM of its own, beside the SLURM tests
    pytest.mark.parametrize("server", ["postgres"], indirect=True),
]


def test_a_submitted_campaign_runs_as_pbs_jobs_and_hands_over_to_its_successors(
    server, djdask, sql, prefix, pbs, tmp_path
):
    """`djdask submit --resubmit` on the `pbs` kind: controllers and workers are jobs that
    PBS's qsub submitted and qstat showed running; every key made once in a worker job,
    nothing left queued (batch_campaigns.submitted_campaign_hands_over)."""
    seed(djdask, 8)
    print(submitted_campaign_hands_over(djdask, pbs, tmp_path, n=8))
