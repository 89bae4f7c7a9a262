"""Checks of a campaign's arguments, made before anything reaches the database."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from djdask.errors import InvalidInputError

__all__ = [
    "PRIORITY_RANGE",
    "check_count",
    "check_duration",
    "check_make_kwargs",
    "check_priority",
    "group_commits",
    "make_kwargs_arg",
    "pools_arg",
    "table_timeout",
]

#: Priorities both backends store alike: DataJoint's ``int8`` is MySQL's signed
#: ``tinyint`` (-128..127) and PostgreSQL's ``smallint``; DataJoint's own setting
#: (``jobs.default_priority``) starts at 0.
PRIORITY_RANGE = (0, 127)


def check_priority(priority: Any, what: str = "--priority") -> int | None:
    """``priority`` as an int in :data:`PRIORITY_RANGE` (None stays None), else a clear error."""
    if priority is None:
        return None
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise InvalidInputError(
            f"{what} {priority!r} is outside {low}..{high}, the priorities DataJoint's jobs tables hold alike on "
            f"MySQL and PostgreSQL (lower runs first; DataJoint's default is 5). Give a whole number from {low} "
            f"to {high}, e.g. {what} 3."
        )
    return priority


def check_count(value: Any, what: str) -> int | None:
    """``value`` as a whole number of at least 1 (None stays None), else a clear error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{what} is {value!r}: give a whole number of 1 or more, e.g. {what}=4.")
    return value


def check_duration(value: Any, what: str) -> float | None:
    """``value`` (seconds, or "5s", "2h") as positive seconds (None stays None), else a clear error."""
    if value is None:
        return None
    from dask.utils import parse_timedelta

    try:
        seconds = float(parse_timedelta(value))
    except (ValueError, KeyError, TypeError, IndexError):
        seconds = float("nan")
    if isinstance(value, bool) or not seconds > 0:
        raise InvalidInputError(
            f'{what} is {value!r}, which is not a positive duration: write it like "5s", "2h" or 30 (seconds).'
        )
    return seconds


def check_make_kwargs(make_kwargs: Any, what: str = "make_kwargs") -> dict | None:
    """``make_kwargs`` as a dict of keyword arguments for ``make()`` (None stays None), else a clear error."""
    if make_kwargs is None:
        return None
    if not isinstance(make_kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in make_kwargs):
        raise InvalidInputError(
            f"{what} must map argument names to values, like populate(make_kwargs={{'scale': 3}}); got "
            f"{make_kwargs!r}. On the command line: --make-kwargs '{{\"scale\": 3}}'."
        )
    try:
        import cloudpickle

        cloudpickle.dumps(make_kwargs)
    except Exception as err:
        raise InvalidInputError(
            f"{what} must be picklable to reach the workers: {type(err).__name__}: {err}. Pass plain values "
            "(numbers, strings, lists, dicts, numpy arrays)."
        ) from None
    return dict(make_kwargs)


def table_timeout(cls: type) -> float | None:
    """Seconds one ``make()`` of table ``cls`` may run: ``djdask.campaign.timeouts.<Class>``,
    else the class attribute ``djdask_timeout`` (``"2h"``, ``"90s"``, seconds); None: no limit."""
    from dask.utils import parse_timedelta

    from djdask.config import namespace as config

    configured = (config.get("campaign.timeouts") or {}).get(cls.__name__)
    value = configured if configured is not None else getattr(cls, "djdask_timeout", None)
    if value is None:
        return None
    where = f"djdask.campaign.timeouts.{cls.__name__}" if configured is not None else f"{cls.__name__}.djdask_timeout"
    try:
        seconds = float(parse_timedelta(value))
    except (TypeError, ValueError, KeyError):
        seconds = -1.0
    if isinstance(value, bool) or seconds <= 0:
        raise InvalidInputError(
            f'{where} is {value!r}, which is not a positive duration. Write it like "2h", "90s" or 600 '
            "(seconds), or remove it for no limit."
        )
    return seconds


def group_commits(tables: Mapping[str, type]) -> dict[str, tuple[int, float]]:
    """The tables of a pipeline (``tables``: its auto-populated classes) that run with group
    commit, by class name, each with its group's most keys and seconds of make().

    A table opts in with ``djdask.campaign.group-commit: [Class, ...]`` or the class
    attribute ``djdask_group_commit = True``.  A name that is no auto-populated table of
    the pipeline, and a tripartite make(), are clear errors."""
    from dask.utils import parse_timedelta

    from djdask import djcompat
    from djdask.config import namespace as config

    listed = list(config.get("campaign.group-commit") or [])
    by_name = {cls.__name__: cls for cls in tables.values()}
    unknown = sorted(set(listed) - set(by_name))
    if unknown:
        raise InvalidInputError(
            f"djdask.campaign.group-commit names {', '.join(unknown)}, which this pipeline has no Imported or "
            f"Computed table of; it has {', '.join(sorted(by_name)) or 'none'}. Fix the name or remove it."
        )
    chosen = {}
    for name, cls in by_name.items():
        flag = getattr(cls, "djdask_group_commit", False)
        if not isinstance(flag, bool):
            raise InvalidInputError(f"{name}.djdask_group_commit is {flag!r}: set it to True or False.")
        if name not in listed and not flag:
            continue
        if djcompat.is_tripartite(cls):
            where = "djdask.campaign.group-commit" if name in listed else f"{name}.djdask_group_commit"
            raise InvalidInputError(
                f"{name} cannot run with group commit ({where}): its make() is tripartite (make_fetch, "
                "make_compute, make_insert, or a generator), which DataJoint runs in a transaction of its own, "
                f"opened after the computation. Remove {name} from {where}; group commit is for make()s "
                "that insert quickly in one transaction."
            )
        chosen[name] = cls
    if not chosen:
        return {}
    keys = int(config.get("campaign.group-commit-keys"))
    window = float(parse_timedelta(config.get("campaign.group-commit-window")))
    return {name: (keys, window) for name in chosen}


def pools_arg(values: list[str] | None) -> dict[str, str] | None:
    """``--cluster PROFILE`` or ``--cluster POOL=PROFILE`` (repeated) as ``{pool: profile}``."""
    if not values:
        return None
    pools: dict[str, str] = {}
    for value in values:
        pool, _, profile = value.rpartition("=")
        pool = pool or "default"
        if not profile or pool in pools:
            raise InvalidInputError(
                f"--cluster {value!r}: give each pool once, as --cluster PROFILE (the default pool) or "
                "--cluster POOL=PROFILE, e.g. --cluster default=slurm --cluster gpu=gpu."
            )
        pools[pool] = profile
    return pools


def make_kwargs_arg(value: str | None) -> dict | None:
    """``--make-kwargs JSON``: a JSON object of keyword arguments for every make()."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise InvalidInputError(
            f"--make-kwargs {value!r} is not JSON ({err.msg} at character {err.pos}). Give a JSON object, "
            "e.g. --make-kwargs '{\"scale\": 3}'."
        ) from None
    return check_make_kwargs(parsed, "--make-kwargs")
