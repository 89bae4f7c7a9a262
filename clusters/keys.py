"""The keys a profile may hold, checked whenever a command reads the profile.

A key no part of its kind reads is either handed on (a batch profile's rest
goes to dask-jobqueue, which stops the campaign with a ``TypeError`` once the
scheduler is up) or silently ignored (``workrs: 4`` on a ``local`` profile).
So each kind names the keys it takes (:meth:`accepted_keys`): a batch kind
those of dask-jobqueue's cluster class and job classes, read from their
signatures, and djdask's own; the other kinds djdask's own. A key outside them
is refused with where it was set (the config file and line, or the
environment variable) and the nearest key the kind takes.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import dask.config

from djdask.config import source
from djdask.errors import ProfileError

__all__ = ["check_keys", "signature_keys"]

#: Keywords of dask-jobqueue's classes that take Python objects or are djdask's to give
#: (the job's scheduler address), not settings a profile can write.
_NOT_SETTINGS = frozenset({"self", "loop", "asynchronous", "job_cls", "scheduler_cls", "scheduler"})


def _named(init: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword names ``init`` takes, and whether it takes ``**kwargs`` besides."""
    parameters = inspect.signature(init).parameters.values()
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def signature_keys(cluster_class: type, job_class: type) -> frozenset[str]:
    """The profile keys (dashed) a dask-jobqueue cluster of ``cluster_class`` takes: the
    keywords of its ``__init__``, whose ``**job_kwargs`` go to ``job_class``, whose own
    ``**kwargs`` go up its base classes' ``__init__`` (``SLURMJob`` to ``Job``)."""
    names, _ = _named(cluster_class.__init__)
    for base in job_class.__mro__:
        if "__init__" not in vars(base):
            continue
        more, forwards = _named(base.__init__)
        names |= more
        if not forwards:
            break
    return frozenset(n.replace("_", "-") for n in names - _NOT_SETTINGS)


def _canonical(key: Any) -> str:
    return str(key).replace("_", "-")  # DASK_ environment variables spell max-jobs max_jobs


def _unknown(values: Mapping[str, Any], accepted: Iterable[str], at: str) -> list[str]:
    """One phrase per key of ``values`` (the mapping at config path ``at``) outside ``accepted``."""
    accepted = sorted(accepted)
    out = []
    for key in sorted(_canonical(k) for k in values):
        if key in accepted:
            continue
        notes = [f"set in {where}"] if (where := source(f"{at}.{key}")) else []
        notes += [f"did you mean {close}?" for close in difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)]
        out.append(f"`{at}.{key}`" + (f" ({'; '.join(notes)})" if notes else ""))
    return out


def check_keys(profile: str, kind: Any, raw: Mapping[str, Any]) -> None:
    """Refuse a profile holding a key its kind does not take; for a batch profile reusing a
    ``jobqueue.<name>`` section, the section's keys (those with a value) too.

    Parameters
    ----------
    profile : str
        The profile's name.
    kind : object
        Its kind object; ``accepted_keys()`` names the keys it takes, and a batch kind's
        ``jobqueue_keys()`` those of dask-jobqueue alone.
    raw : mapping
        The profile's settings, keys dashed.
    """
    accepted = kind.accepted_keys()
    unknown = _unknown(raw, accepted, f"djdask.clusters.{profile}")
    section_name = raw.get("jobqueue")
    if section_name and hasattr(kind, "jobqueue_keys"):
        section = dask.config.get(f"jobqueue.{section_name}", None) or {}
        given = {k: v for k, v in section.items() if v is not None}  # dask-jobqueue's nulls are defaults
        unknown += _unknown(given, kind.jobqueue_keys(), f"jobqueue.{section_name}")
    if not unknown:
        return
    several = len(unknown) > 1
    takes = (
        ""
        if all("did you mean" in u for u in unknown)
        else f" A {kind.name} profile takes: {', '.join(sorted(accepted))}."
    )
    raise ProfileError(
        f"Profile {profile!r} ({kind.name}) has {'keys' if several else 'a key'} no {kind.name} profile takes: "
        + "; ".join(unknown)
        + f".{takes} Rename or remove {'them' if several else 'it'} where {'they are' if several else 'it is'} set; "
        f"`djdask clusters show {profile}` checks the profile again."
    )
