"""Cluster profiles: where a campaign's Dask workers run."""

from __future__ import annotations

from .profiles import KINDS, Profile, local_cluster, profile_names, resolve

__all__ = ["KINDS", "Profile", "local_cluster", "profile_names", "resolve"]
