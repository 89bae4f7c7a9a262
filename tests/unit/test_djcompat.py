"""The private DataJoint API djdask uses must still be there."""

from orchestrator import djcompat


def test_installed_datajoint_has_what_djdask_uses():
    """If this fails, DataJoint changed AutoPopulate._populate1 or the job version helper:
    adapt orchestrator/djcompat.py before anything else."""
    djcompat.check_compatibility()
