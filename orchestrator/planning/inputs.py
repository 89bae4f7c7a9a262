"""What a table's ``make()`` depends on beyond its foreign keys.

Pipelines written for DataJoint's sequential ``populate()`` (table by table, in
the order the module declares them) rely on that order in two shapes that their
foreign keys do not show:

- a ``key_source`` that names other tables, the usual way to write a summary
  (``key_source = Mouse & Behavior``, or an aggregation over a computed table):
  its keys appear as soon as one matching input row exists, and its ``make()``
  reads all of them;
- a ``make()`` that reads a table outside its foreign-key ancestry (a quality
  check that fetches ``SessionSummary & key``).

The first shape is read from the pipeline (:func:`key_source_inputs`); the
second is declared by the user, once djdask has named it at the end of a
campaign (:func:`declared_inputs`: the class attribute ``djdask_after = [...]``
or ``djdask.campaign.after: {Table: [...]}``).  Both become edges of the
campaign's DAG (:meth:`djdask.planning.graph.PipelineGraph.with_inputs`), and
:func:`gate` writes the SQL that keeps a key of such a table back while its
inputs still have keys to make that match it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from djdask.config import namespace as config
from djdask.errors import InvalidInputError

if TYPE_CHECKING:
    from djdask.jobs.queue import JobQueue
    from djdask.jobs.unreserved import UnreservedQueue

__all__ = ["declared_inputs", "gate", "hidden_inputs", "key_source_inputs", "still_to_make"]

logger = logging.getLogger(__name__)


def key_source_inputs(cls: type, candidates: Sequence[str]) -> set[str]:
    """The tables of ``candidates`` (full names) that ``cls``'s ``key_source`` reads.

    The key source's SQL names every table it joins, restricts by or aggregates, quoted
    as DataJoint quotes full table names; a table's own foreign-key parents are among
    them (the graph already has those edges)."""
    source = cls().key_source
    if isinstance(source, type):  # `key_source = Topic`: DataJoint accepts a table class too
        source = source()
    sql = source.make_sql()
    own = cls.full_table_name
    return {name for name in candidates if name != own and name in sql}


def declared_inputs(classes: Mapping[str, type]) -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """The dependencies users declared, as ``{table: {input, ...}}`` by full name, with where
    each was declared.

    ``djdask_after = [SessionSummary]`` on a class (classes or class names), and
    ``djdask.campaign.after: {QualityCheck: [SessionSummary]}``.  A name that is no
    auto-populated table of the pipeline is an error that lists the known ones."""
    by_name = {cls.__name__: full for full, cls in classes.items()}

    def resolve(value: Any, where: str) -> str:
        name = value if isinstance(value, str) else getattr(value, "__name__", None)
        if name not in by_name:
            raise InvalidInputError(
                f"{where} names {value!r}, which is no Imported or Computed table of this pipeline; it has "
                f"{', '.join(sorted(by_name)) or 'none'}. Fix the name or remove it."
            )
        return by_name[name]

    edges: dict[str, set[str]] = {}
    why: dict[tuple[str, str], str] = {}
    configured = config.get("campaign.after") or {}
    if not isinstance(configured, Mapping):
        raise InvalidInputError(
            f"djdask.campaign.after is {configured!r}: give it as a mapping of table to the tables it waits for, "
            "e.g. {QualityCheck: [SessionSummary]}."
        )
    for table, inputs in configured.items():
        full = resolve(table, "djdask.campaign.after")
        for value in [inputs] if isinstance(inputs, str) else list(inputs or []):
            parent = resolve(value, f"djdask.campaign.after.{table}")
            edges.setdefault(full, set()).add(parent)
            why[(full, parent)] = "djdask.campaign.after"
    for full, cls in classes.items():
        after = getattr(cls, "djdask_after", None)
        if after is None:
            continue
        if isinstance(after, (str, type)):
            after = [after]
        if not isinstance(after, (list, tuple, set, frozenset)):
            raise InvalidInputError(
                f"{cls.__name__}.djdask_after is {after!r}: give a list of the tables its make() reads, "
                f"e.g. djdask_after = [SessionSummary]."
            )
        for value in after:
            parent = resolve(value, f"{cls.__name__}.djdask_after")
            edges.setdefault(full, set()).add(parent)
            why[(full, parent)] = f"{cls.__name__}.djdask_after"
    return edges, why


def hidden_inputs(classes: Mapping[str, type]) -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """Every dependency beyond foreign keys of the auto-populated ``classes`` (full name ->
    class): what their key sources read, and what users declared; with where each came from."""
    edges, why = declared_inputs(classes)
    names = list(classes)
    for full, cls in classes.items():
        for parent in key_source_inputs(cls, names):
            edges.setdefault(full, set()).add(parent)
            why.setdefault((full, parent), f"{cls.__name__}.key_source")
    return edges, why


def still_to_make(queue: JobQueue | UnreservedQueue) -> str:
    """SQL of the keys ``queue``'s table still has to make in this campaign: missing from the
    table and in its (restricted) key source, less those its jobs table holds as ``error``
    or ``ignore`` (no campaign makes them unless asked).  Pending, reserved and in-flight
    keys are all among them."""
    q = queue.connection.adapter.quote_identifier
    missing = (queue.key_source.proj() - queue.table.proj()).make_sql()
    if not queue.reserved:
        return missing
    pk = queue.pk
    match = " AND ".join(f"{q('_done')}.{q(k)} = {q('_todo')}.{q(k)}" for k in pk)
    return (
        f"SELECT * FROM ({missing}) AS {q('_todo')} WHERE NOT EXISTS (SELECT 1 FROM {queue.name} AS {q('_done')} "
        f"WHERE {q('_done')}.{q('status')} IN ('error', 'ignore') AND {match})"
    )


def gate(alias: str, names: Sequence[str], blockers: Sequence[JobQueue | UnreservedQueue], quote: Any) -> str:
    """A WHERE condition on the rows of ``alias`` (key attributes ``names``): true for keys no
    ``blockers``' key still to make matches.  Keys match on the attributes they share; a
    blocker that shares none holds back every key while it has anything to make."""
    conditions = []
    for blocker in blockers:
        shared = [n for n in names if n in blocker.key_source.primary_key]
        match = " AND ".join(f"{quote('_input')}.{quote(n)} = {alias}.{quote(n)}" for n in shared) or "1=1"
        conditions.append(f"NOT EXISTS (SELECT 1 FROM ({still_to_make(blocker)}) AS {quote('_input')} WHERE {match})")
    return " AND ".join(conditions) or "1=1"
