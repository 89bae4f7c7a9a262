"""Table names, tiers, part folding and the DAG cut, without a database."""

from __future__ import annotations

import networkx as nx
import pytest

from djdask.errors import UnknownTableError
from djdask.planning.graph import PipelineGraph, master_name, table_tier


@pytest.mark.parametrize("q", ['"', "`"])
def test_tiers_and_masters_for_both_quoting_styles(q):
    name = lambda t: f"{q}s{q}.{q}{t}{q}"  # noqa: E731
    assert table_tier(name("mouse")) == "manual"
    assert table_tier(name("#params")) == "lookup"
    assert table_tier(name("_scan_movie")) == "imported"
    assert table_tier(name("__motion_correction")) == "computed"
    assert table_tier(name("__segmentation__cell")) == "part"
    assert table_tier(name("session__note")) == "part"
    assert master_name(name("__segmentation__cell")) == name("__segmentation")
    assert master_name(name("_scan__frame_info")) == name("_scan")
    assert master_name(name("__traces")) == name("__traces")


def n(table):
    return f'"s"."{table}"'


A, B, C, D = n("_a"), n("__b"), n("__c"), n("__d")


def graph():
    dag = nx.DiGraph([(A, B), (B, C), (A, D)])
    return PipelineGraph(dag, {A: "A", B: "B", C: "C", D: "D", n("manual"): "Manual"})


def test_order_depth_and_cut():
    g = graph()
    assert g.order == [A, B, C, D]  # ties broken by class name
    assert {i.class_name: i.depth for i in g} == {"A": 0, "B": 1, "C": 2, "D": 1}
    cut = g.cut(["C"])
    assert cut.order == [A, B, C]
    assert g.cut([]).order == g.order


def test_resolve_errors_name_the_known_tables():
    g = graph()
    with pytest.raises(UnknownTableError, match="Unknown target table 'Nope'.*A, B, C, D"):
        g.resolve("Nope")
    assert g.resolve("mymodule.C") == C
    with pytest.raises(UnknownTableError, match="manual table"):
        g.resolve("Manual")
