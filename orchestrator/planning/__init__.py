"""What a campaign would do: the pipeline loaded, its DAG (foreign keys and the inputs beyond
them), restrictions checked, the plan and the status queries.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

__all__ = [
    "LoadedPipeline",
    "NO_FK_KEY",
    "PipelineGraph",
    "PlanRow",
    "Selection",
    "TableInfo",
    "build_graph",
    "declared_inputs",
    "error_groups",
    "existing_jobs",
    "gate",
    "has_jobs_table",
    "hidden_inputs",
    "key_source_inputs",
    "load_offline",
    "load_pipeline",
    "master_name",
    "split_name",
    "parse_restrictions",
    "plan",
    "reservation_holders",
    "restrict",
    "select",
    "still_to_make",
    "table_counts",
    "table_tier",
    "why_unreserved",
]

_WHERE = {
    "LoadedPipeline": "loader",
    "NO_FK_KEY": "reservable",
    "PipelineGraph": "graph",
    "PlanRow": "planner",
    "Selection": "planner",
    "TableInfo": "graph",
    "build_graph": "graph",
    "declared_inputs": "inputs",
    "error_groups": "planner",
    "existing_jobs": "planner",
    "gate": "inputs",
    "has_jobs_table": "reservable",
    "hidden_inputs": "inputs",
    "key_source_inputs": "inputs",
    "load_offline": "loader",
    "load_pipeline": "loader",
    "master_name": "graph",
    "split_name": "graph",
    "parse_restrictions": "planner",
    "plan": "planner",
    "reservation_holders": "planner",
    "restrict": "planner",
    "select": "planner",
    "still_to_make": "inputs",
    "table_counts": "planner",
    "table_tier": "graph",
    "why_unreserved": "reservable",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
