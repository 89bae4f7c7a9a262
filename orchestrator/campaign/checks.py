"""Checks of a campaign's arguments, made before anything reaches the database.

One definition of each check serves both callers: the Python API (:class:`djdask.Campaign`)
calls ``check_*`` with the argument's name, the command line's parser calls the ``*_arg``
forms with the option's (its ``type=`` callables), so a mistake reads the same either way:
``workers=0`` or ``--workers 0``, what was wrong, and how to write it.

The parser imports this module for every command, ``djdask --help`` too: what a check needs
beyond the standard library (Dask, cloudpickle, djdask's config) is imported when it runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from djdask.errors import InvalidInputError

__all__ = [
    "PRIORITY_RANGE",
    "check_count",
    "check_duration",
    "check_make_kwargs",
    "check_output_file",
    "check_priority",
    "count_arg",
    "group_commits",
    "make_kwargs_arg",
    "pools_arg",
    "priority_arg",
    "table_timeout",
]

#: Priorities both backends store alike: DataJoint's ``int8`` is MySQL's signed
#: ``tinyint`` (-128..127) and PostgreSQL's ``smallint``; DataJoint's own setting
#: (``jobs.default_priority``) starts at 0.
PRIORITY_RANGE = (0, 127)


def _as_written(what: str, value: str) -> str:
    """``what`` given ``value`` as the user writes it: ``--workers 4`` on the command line (an
    option's name starts with ``-``), ``workers=4`` in Python."""
    return f"{what} {value}" if what.startswith("-") else f"{what}={value}"


def _whole(text: str) -> int | str:
    """The command line's text of a whole number as that number; other text unchanged, for the
    check to refuse as it is."""
    try:
        return int(text)
    except ValueError:
        return text


def _seconds(value: Any) -> float:
    """``value`` (``"5s"``, ``"2h"``, a number of seconds) in seconds; NaN when it is no duration."""
    # lazy: the parser imports this module; Dask, which reads its config files, loads after parsing
    from dask.utils import parse_timedelta

    try:
        return float(parse_timedelta(value))
    except (ValueError, KeyError, TypeError, IndexError):
        return float("nan")


def check_priority(priority: Any, what: str = "--priority") -> int | None:
    """``priority`` as an int in :data:`PRIORITY_RANGE` (None stays None), else a clear error."""
    if priority is None:
        return None
    low, high = PRIORITY_RANGE
    whole = isinstance(priority, int) and not isinstance(priority, bool)
    if not whole or not low <= priority <= high:
        problem = "is outside" if whole else "is not a whole number in"
        raise InvalidInputError(
            f"{_as_written(what, repr(priority))} {problem} {low}..{high}, the priorities DataJoint's jobs "
            "tables hold alike on MySQL and PostgreSQL (lower runs first; DataJoint's default is 5). Give a "
            f"whole number from {low} to {high}, e.g. {_as_written(what, '3')}."
        )
    return priority


def priority_arg(text: str, what: str = "--priority") -> int:
    """``--priority P``: the command line's text, checked as :func:`check_priority` checks a priority."""
    return check_priority(_whole(text), what)


def check_count(value: Any, what: str) -> int | None:
    """``value`` as a whole number of at least 1 (None stays None), else a clear error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(
            f"{_as_written(what, repr(value))} is not a whole number of 1 or more: give one, e.g. "
            f"{_as_written(what, '4')}."
        )
    return value


def count_arg(text: str, what: str) -> int:
    """``--workers N`` and the like: the command line's text, checked as :func:`check_count` checks a count."""
    return check_count(_whole(text), what)


def check_duration(value: Any, what: str, *, zero: bool = False) -> float | None:
    """``value`` (seconds, or "5s", "2h"; the command line's text too) as positive seconds, or 0
    or more with ``zero`` (None stays None), else a clear error."""
    if value is None:
        return None
    seconds = _seconds(value)
    if isinstance(value, bool) or not (seconds > 0 or (zero and seconds == 0)):
        kind = "a duration of 0 or more" if zero else "a positive duration"
        raise InvalidInputError(
            f"{_as_written(what, repr(value))} is not {kind}: write it like 5s, 10m, 2h or 30 (seconds)."
        )
    return seconds


def check_output_file(value: str, what: str) -> str:
    """``value``, a file written at the end (``--json-summary``): its folder must exist and be
    writable now, not after the campaign."""
    path = os.path.abspath(os.path.expanduser(value))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise InvalidInputError(f"{_as_written(what, repr(value))} is a directory: give the name of a file in it.")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise InvalidInputError(
            f"{_as_written(what, repr(value))} cannot be written: {folder} is not a folder you may write to. "
            "Create it, or give a file in a folder of yours."
        )
    return value


def check_make_kwargs(make_kwargs: Any, what: str = "make_kwargs") -> dict | None:
    """``make_kwargs`` as a dict of keyword arguments for ``make()`` (None stays None), else a clear error."""
    if make_kwargs is None:
        return None
    if not isinstance(make_kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in make_kwargs):
        raise InvalidInputError(
            f"{what} must map argument names to values, like populate(make_kwargs={{'scale': 3}}); got "
            f"{make_kwargs!r}. On the command line: --make-kwargs '{{\"scale\": 3}}'."
        )
    # lazy: the parser imports this module; cloudpickle (20 ms) only when make_kwargs are given
    import cloudpickle

    try:
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
    # lazy: the parser imports this module; Dask, which reads its config files, loads after parsing
    from djdask.config import namespace as config

    configured = (config.get("campaign.timeouts") or {}).get(cls.__name__)
    value = configured if configured is not None else getattr(cls, "djdask_timeout", None)
    if value is None:
        return None
    where = f"djdask.campaign.timeouts.{cls.__name__}" if configured is not None else f"{cls.__name__}.djdask_timeout"
    seconds = _seconds(value)
    if isinstance(value, bool) or not seconds > 0:
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
    # lazy: the parser imports this module; Dask, which reads its config files, loads after parsing
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
