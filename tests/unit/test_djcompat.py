"""The private DataJoint API djdask uses must still be there."""

from djdask import djcompat


def test_installed_datajoint_has_what_djdask_uses():
    """If this fails, DataJoint changed AutoPopulate._populate1 or the job version helper:
    adapt orchestrator/djcompat.py before anything else."""
    djcompat.check_compatibility()


def test_quiet_make_errors_drops_only_populate1_errors():
    """The worker's DataJoint logger must lose the key-less copy of a make() failure that
    `_populate1` logs, and keep everything else it says (warnings, other errors)."""
    import logging

    def record(level, func):
        return logging.makeLogRecord({"name": "datajoint", "levelno": level, "funcName": func, "msg": "m"})

    djcompat.quiet_make_errors()
    dj_logger = logging.getLogger("datajoint")
    filters = list(dj_logger.filters)
    djcompat.quiet_make_errors()  # a second plugin setup adds no second filter
    assert dj_logger.filters == filters
    assert sum(not f.filter(record(logging.ERROR, "_populate1")) for f in filters) == 1

    assert not dj_logger.filter(record(logging.ERROR, "_populate1"))
    assert dj_logger.filter(record(logging.ERROR, "insert"))
    assert dj_logger.filter(record(logging.WARNING, "_populate1"))


def test_a_missing_private_name_fails_loudly_with_djdasks_error(monkeypatch):
    """A DataJoint upgrade that drops a private name djdask uses must fail this one check,
    with djdask's error naming the name, not somewhere deep in a campaign."""
    import datajoint.jobs

    from djdask.errors import DataJointCompatibilityError, DjdaskError

    monkeypatch.delattr(datajoint.jobs, "_get_job_version")
    try:
        djcompat.check_compatibility()
    except DataJointCompatibilityError as err:
        assert isinstance(err, DjdaskError)
        assert "_get_job_version" in str(err) and "pip install" in str(err)
    else:
        raise AssertionError("check_compatibility() passed without datajoint.jobs._get_job_version")


#: Private DataJoint names djdask relies on (as attributes or imports); only djcompat may use them.
PRIVATE = (
    r"(\.|import |, )(_populate1|_update_job_metadata|_get_job_version|_full_path|_config|_conn|"
    r"_load_thread_safe|_create_config|_has_job_metadata_attrs|_jobs_to_do)\b|datajoint\.table\.FreeTable"
)


def test_private_datajoint_names_are_used_only_in_djcompat():
    """Every private DataJoint name goes through orchestrator/djcompat.py, so that its check
    covers them all; a use elsewhere would break silently on a DataJoint upgrade."""
    import re
    from pathlib import Path

    root = Path(djcompat.__file__).resolve().parents[1]
    offenders = []
    for path in [*root.glob("orchestrator/*.py"), *root.glob("clusters/*.py"), *root.glob("pipeline/*.py")]:
        if path.name == "djcompat.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            code = re.sub(r"(\"[^\"]*\"|'[^']*'|``[^`]*``)", "", code)  # not in strings or docs
            if re.search(PRIVATE, code) or re.search(r"from datajoint[\w.]* import _", code):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
