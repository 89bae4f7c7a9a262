"""Whether DataJoint can keep a jobs table for a table, and why not."""

from __future__ import annotations

from typing import Any

from djdask.djcompat import jobs_declaration_error

__all__ = ["NO_FK_KEY", "has_jobs_table", "why_unreserved"]

#: Full table name -> None when DataJoint can keep a jobs table for it, else why not.
_no_jobs_table: dict[str, str | None] = {}

NO_FK_KEY = "no primary-key attribute comes from a foreign key"


def why_unreserved(table: Any) -> str | None:
    """Why DataJoint cannot keep a jobs table for ``table`` (an instance or class), or None
    when it can: no primary-key attribute of it comes from a foreign key, or DataJoint
    cannot declare the jobs table its key needs (:func:`djdask.djcompat.jobs_declaration_error`)."""
    # lazy: DataJoint (1 s; warns unless import_datajoint loads it)
    from datajoint.errors import DataJointError
    from datajoint.jobs import Job

    table = table() if isinstance(table, type) else table
    name = table.full_table_name
    if name not in _no_jobs_table:
        try:
            jobs = Job(table)
        except DataJointError as err:
            if "no FK-derived primary key" not in str(err):
                raise
            _no_jobs_table[name] = NO_FK_KEY
        else:
            error = None if jobs.is_declared else jobs_declaration_error(jobs)
            _no_jobs_table[name] = (
                None
                if error is None
                else f"DataJoint cannot declare its jobs table ({error}); its populate(reserve_jobs=True) fails alike"
            )
    return _no_jobs_table[name]


def has_jobs_table(table: Any) -> bool:
    """Whether DataJoint can keep a jobs table for ``table`` (an instance or class)."""
    return why_unreserved(table) is None
