"""The reference pipeline's schema objects, named from one configurable prefix."""

from __future__ import annotations

from djdask import storage  # noqa: F401  (storage registers the <xarray@> codec)
from djdask.config import namespace as config
from djdask.db.connect import import_datajoint

dj = import_datajoint()

PREFIX: str = str(config.get("demo.schema-prefix"))
#: The Computed tables' make() is DataJoint's tripartite driver (``djdask.demo.tripartite``).
TRIPARTITE: bool = bool(config.get("demo.tripartite"))

acquisition = dj.Schema(f"{PREFIX}_acquisition")
imaging = dj.Schema(f"{PREFIX}_imaging")

__all__ = ["PREFIX", "TRIPARTITE", "acquisition", "imaging"]
