"""Cluster profiles: where a campaign's Dask workers run."""

from __future__ import annotations

from .profiles import local_cluster

__all__ = ["local_cluster"]
