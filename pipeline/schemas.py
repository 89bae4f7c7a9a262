"""The reference pipeline's schema objects, named from one configurable prefix."""

from __future__ import annotations

from djdask import storage  # noqa: F401  (storage registers the <xarray@> codec)
from djdask.config import namespace as config
from djdask.db.connect import import_datajoint

dj = import_datajoint()

PREFIX: str = str(config.get("demo.schema-prefix"))

acquisition = dj.Schema(f"{PREFIX}_acquisition")
imaging = dj.Schema(f"{PREFIX}_imaging")

__all__ = ["PREFIX", "acquisition", "imaging"]
