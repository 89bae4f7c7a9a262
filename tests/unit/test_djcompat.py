"""The private DataJoint API djdask uses must still be there."""

from orchestrator import djcompat


def test_installed_datajoint_has_what_djdask_uses():
    """If this fails, DataJoint changed AutoPopulate._populate1 or the job version helper:
    adapt orchestrator/djcompat.py before anything else."""
    djcompat.check_compatibility()


def test_quiet_make_errors_drops_only_populate1_errors():
    """The worker's DataJoint logger must lose the key-less copy of a make() failure that
    `_populate1` logs, and keep everything else it says (warnings, other errors)."""
    import logging

    djcompat.quiet_make_errors()
    djcompat.quiet_make_errors()  # a second plugin setup adds no second filter
    dj_logger = logging.getLogger("datajoint")
    assert sum(isinstance(f, djcompat._MakeErrorFilter) for f in dj_logger.filters) == 1

    def record(level, func):
        return logging.makeLogRecord({"name": "datajoint", "levelno": level, "funcName": func, "msg": "m"})

    assert not dj_logger.filter(record(logging.ERROR, "_populate1"))
    assert dj_logger.filter(record(logging.ERROR, "insert"))
    assert dj_logger.filter(record(logging.WARNING, "_populate1"))
