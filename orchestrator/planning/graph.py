"""The DAG of a pipeline's auto-populated tables, read from the database.

Foreign keys come from DataJoint's dependency loader.  Part tables are folded
into their masters, with their parents: a master depends on everything its
parts depend on, since its ``make()`` fills them.  The result keeps only
Imported and Computed tables; an edge ``A -> B`` means that ``B`` depends on
``A`` directly or through tables that are not auto-populated.

A table may also depend on tables its foreign keys do not name: those its
``key_source`` names (``Mouse & Behavior``), and those a user declares
(``djdask_after``, ``djdask.campaign.after``; see :mod:`djdask.planning.inputs`).  They
are edges of the DAG too, and :attr:`PipelineGraph.inputs` keeps them apart:
a key of such a table is ready only when its inputs have nothing left to make
for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import networkx as nx

from djdask.errors import InvalidInputError, UnknownTableError

__all__ = ["PipelineGraph", "TableInfo", "build_graph", "master_name", "split_name", "table_tier"]

_NAME = re.compile(r'^(?P<q>[`"])(?P<schema>[^`"]+)(?P=q)\.(?P=q)(?P<table>[^`"]+)(?P=q)$')


def split_name(full_name: str) -> tuple[str, str]:
    """``(schema, table)`` of a full table name quoted for either backend (`a`.`b`, "a"."b")."""
    match = _NAME.match(full_name)
    if not match:
        raise ValueError(f"not a full table name: {full_name!r}")
    return match["schema"], match["table"]


def table_tier(full_name: str) -> str:
    """The DataJoint tier encoded in a table name: manual, lookup, imported, computed or part."""
    _, table = split_name(full_name)
    if "__" in table.lstrip("_#"):
        return "part"
    if table.startswith("__"):
        return "computed"
    if table.startswith("_"):
        return "imported"
    if table.startswith("#"):
        return "lookup"
    return "manual"


def master_name(full_name: str) -> str:
    """The full name of the master of part table ``full_name``; a table that is no part is its
    own master."""
    schema, table = split_name(full_name)
    prefix = len(table) - len(table.lstrip("_#"))
    head, sep, _ = table[prefix:].partition("__")
    if not sep:
        return full_name
    q = full_name[0]
    return f"{q}{schema}{q}.{q}{table[:prefix]}{head}{q}"


@dataclass(frozen=True)
class TableInfo:
    """One auto-populated table of the DAG."""

    full_name: str
    class_name: str
    tier: str
    depth: int


class PipelineGraph:
    """Auto-populated tables in dependency order.

    Parameters
    ----------
    dag : networkx.DiGraph
        Nodes are full table names of auto-populated master tables.
    class_names : dict
        Full table name -> the class name users know the table by.
    inputs : dict, optional
        Full table name -> the tables it depends on beyond its foreign keys (edges of
        ``dag`` too): what its ``key_source`` names, and what the user declared.
    """

    def __init__(
        self, dag: nx.DiGraph, class_names: dict[str, str], inputs: dict[str, frozenset[str]] | None = None
    ) -> None:
        self.dag = dag
        self.class_names = class_names
        self.inputs = {t: frozenset(p for p in ps if p in dag) for t, ps in (inputs or {}).items() if t in dag}
        self.inputs = {t: ps for t, ps in self.inputs.items() if ps}
        depth: dict[str, int] = {}
        self.order: list[str] = list(nx.lexicographical_topological_sort(dag, key=lambda n: class_names.get(n, n)))
        for node in self.order:
            depth[node] = max((depth[p] + 1 for p in dag.predecessors(node)), default=0)
        self.info = {n: TableInfo(n, class_names.get(n, n), table_tier(n), depth[n]) for n in self.order}

    def __iter__(self):
        return iter(self.info[n] for n in self.order)

    def __len__(self) -> int:
        return len(self.order)

    def resolve(self, name: str) -> str:
        """The full table name of a table given by class name, ``Module.Class`` or full name."""
        if name in self.info:
            return name
        leaf = name.rsplit(".", 1)[-1]
        matches = [n for n, cls in self.class_names.items() if cls == leaf and n in self.info]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(sorted(self.class_names[n] for n in self.order)) or "(none)"
        if len(matches) > 1:
            raise UnknownTableError(
                f"Target {name!r} matches several tables ({', '.join(matches)}). Give its full table name instead."
            )
        other = [n for n, cls in self.class_names.items() if cls == leaf and n not in self.info]
        if other:
            raise UnknownTableError(
                f"Target {name!r} is a {table_tier(other[0])} table: it has no make() to run. "
                f"Choose an Imported or Computed table: {known}."
            )
        raise UnknownTableError(
            f"Unknown target table {name!r}. The pipeline's auto-populated tables are: {known}. "
            "Use one of these class names with --target."
        )

    def cut(self, targets: list[str]) -> PipelineGraph:
        """The subgraph of ``targets`` (any accepted name) and their auto-populated ancestors."""
        if not targets:
            return self
        keep: set[str] = set()
        for target in targets:
            full = self.resolve(target)
            keep |= {full} | nx.ancestors(self.dag, full)
        return PipelineGraph(self.dag.subgraph(keep).copy(), self.class_names, self.inputs)

    def with_inputs(self, inputs: dict[str, set[str]], why: dict[tuple[str, str], str] | None = None) -> PipelineGraph:
        """This graph with the edges ``parent -> table`` of ``inputs`` (table -> parents) added.

        An input that is already an ancestor through foreign keys adds nothing: its keys
        stream to the table as any parent's do.  An input that would close a cycle is an
        error naming it (``why``: how each edge was declared, for the message).
        """
        dag = self.dag.copy()
        added: dict[str, set[str]] = {}
        for table, parents in inputs.items():
            for parent in parents:
                if table not in dag or parent not in dag or parent == table or parent in nx.ancestors(self.dag, table):
                    continue
                dag.add_edge(parent, table)
                added.setdefault(table, set()).add(parent)
        if not nx.is_directed_acyclic_graph(dag):
            cycle = nx.find_cycle(dag)
            steps = "; ".join(
                f"{self.class_names.get(b, b)} after {self.class_names.get(a, a)}"
                + (f" ({why[(b, a)]})" if why and (b, a) in why else "")
                for a, b in cycle
            )
            raise InvalidInputError(
                f"The tables' dependencies form a cycle: {steps}. A table cannot wait for its own "
                "descendants: remove one of these (djdask_after, djdask.campaign.after, or the key_source)."
            )
        merged = {t: set(ps) for t, ps in self.inputs.items()}
        for table, parents in added.items():
            merged.setdefault(table, set()).update(parents)
        return PipelineGraph(dag, self.class_names, {t: frozenset(ps) for t, ps in merged.items()})

    def blockers(self, table: str) -> list[str]:
        """The tables whose keys still to make hold back keys of ``table``: its inputs beyond
        foreign keys and all their ancestors (an input's keys appear only as its own parents'
        are made), in dependency order; empty for a table whose foreign keys are the whole story."""
        inputs = self.inputs.get(table)
        if not inputs:
            return []
        found: set[str] = set()
        for parent in inputs:
            found |= {parent} | nx.ancestors(self.dag, parent)
        found.discard(table)
        return [n for n in self.order if n in found]


def build_graph(connection, schemas: set[str], class_names: dict[str, str]) -> PipelineGraph:
    """Read the foreign keys of ``schemas`` and return the DAG of their auto-populated tables.

    Parameters
    ----------
    connection : datajoint.Connection
    schemas : set of str
        Schema names whose tables form the pipeline.
    class_names : dict
        Full table name -> class name, for tables the pipeline module defines.
        Auto-populated tables of these schemas without a class are left out:
        nothing could run their ``make()``.
    """
    deps = connection.dependencies
    deps.load(schema_names=set(schemas))
    folded = nx.DiGraph()
    for node in deps.nodes:
        if not node.startswith(("`", '"')):
            continue
        folded.add_node(master_name(node))
    for parent, child in deps.edges():
        a, b = master_name(parent), master_name(child)
        if a != b:
            folded.add_edge(a, b)

    def runnable(node: str) -> bool:
        return table_tier(node) in ("imported", "computed") and node in class_names

    dag = nx.DiGraph()
    dag.add_nodes_from(n for n in folded if runnable(n))
    for source in list(dag.nodes):
        stack, seen = list(folded.successors(source)), set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if runnable(node):
                dag.add_edge(source, node)
            else:
                stack.extend(folded.successors(node))
    return PipelineGraph(dag, class_names)
