"""The ``<xarray@>`` codec (arrays as Zarr in a DataJoint store), its content hash and gc, and
the store of a campaign.

Public names are imported from their modules when first used.
"""

from __future__ import annotations

from djdask.lazy import lazy_exports

# Imported with the package, on purpose: defining XarrayCodec registers <xarray@> with
# DataJoint, which pipelines rely on when they `from djdask import storage`.
from djdask.storage import codec as _codec  # noqa: F401

__all__ = [
    "XarrayCodec",
    "checksum",
    "collect_garbage",
    "configure_store",
    "default_chunks",
    "install_deephash",
    "probe_store",
    "verify",
]

_WHERE = {
    "XarrayCodec": "codec",
    "checksum": "codec",
    "collect_garbage": "codec",
    "configure_store": "stores",
    "default_chunks": "codec",
    "install_deephash": "codec",
    "probe_store": "stores",
    "verify": "codec",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
