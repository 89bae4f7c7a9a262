"""The <xarray@> codec: chunking, checksum, and how decoded values hash (a file store in tmp_path)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from djdask.storage.codec import XarrayCodec, checksum, default_chunks


def test_default_chunks_split_the_leading_dimension_first():
    # 1000 frames of 512x512 float32 (1 MiB each): about 16 frames per 16 MiB chunk, frames whole
    chunks = default_chunks((1000, 512, 512), np.float32, limit=16 * 2**20)
    assert chunks[1:] == (512, 512) and 8 <= chunks[0] <= 16
    # a slice larger than the limit: every dimension is split
    big = default_chunks((10, 8192, 8192), np.float64, limit=16 * 2**20)
    assert all(c < n for c, n in zip(big[1:], (8192, 8192)))
    assert np.prod(big) * 8 <= 16 * 2**20
    assert default_chunks((5,), np.int16) == (5,)


def test_chunks_per_value_and_per_attribute():
    codec = XarrayCodec()
    ds = xr.Dataset({"movie": (("time", "y", "x"), np.zeros((100, 4, 4), np.float32))})
    assert codec._chunked(ds, "movie")["movie"].encoding["chunks"] == (100, 4, 4)
    lazy = xr.Dataset({"movie": (("time", "y", "x"), da.zeros((100, 4, 4), chunks=(10, 4, 4)))})
    assert codec._chunked(lazy, "movie")["movie"].encoding["chunks"] == (10, 4, 4)  # the value's own
    ds["movie"].encoding["chunks"] = (25, 2, 2)
    assert codec._chunked(ds, "movie")["movie"].encoding["chunks"] == (25, 2, 2)
    with dask.config.set({"djdask.storage.chunks": {"movie": {"time": 7}}}):
        assert codec._chunked(ds, "movie")["movie"].encoding["chunks"] == (7, 2, 2)
        assert codec._chunked(ds, "other")["movie"].encoding["chunks"] == (25, 2, 2)


def test_checksum_is_of_the_content_and_the_same_lazily():
    values = np.random.default_rng(0).standard_normal((50, 6, 6)).astype(np.float32)
    eager = xr.Dataset({"m": (("t", "y", "x"), values)})
    lazy = xr.Dataset({"m": (("t", "y", "x"), da.from_array(values, chunks=(7, 6, 6)))})
    assert checksum(eager) == checksum(lazy)
    changed = values.copy()
    changed[49, 5, 5] += 1
    assert checksum(xr.Dataset({"m": (("t", "y", "x"), changed)})) != checksum(eager)
    assert checksum(eager.rename({"t": "time"})) != checksum(eager)  # dims are part of it


# --- DeepHash of decoded values: DataJoint's tripartite make() compares two fetches with
# deepdiff.DeepHash(fetched, ignore_iterable_order=False)[fetched] (AutoPopulate._populate1).


def _deephash(value):
    import deepdiff

    return deepdiff.DeepHash(value, ignore_iterable_order=False)[value]


@pytest.fixture
def store(tmp_path):
    """A codec, a DataJoint config with a file store in tmp_path, and encode/decode through them."""
    from datajoint.settings import Config

    cfg = Config()
    cfg.stores = {"default": "local", "local": {"protocol": "file", "location": str(tmp_path)}}
    codec = XarrayCodec()

    def encode(value, key):
        return codec.encode(value, key=key, context={"schema": "s", "table": "t", "field": "result", "config": cfg})

    def decode(stored):
        return codec.decode(stored, key={"_config": cfg}, context={"config": cfg})

    return encode, decode


def _movie(offset=0.0, name=None):
    values = np.arange(60, dtype=np.float32).reshape(5, 3, 4) + offset
    return xr.DataArray(values, dims=("time", "y", "x"), coords={"time": np.arange(5)}, name=name)


def test_deephash_of_decoded_dataarray_is_of_the_stored_row(store):
    encode, decode = store
    row1, row2 = encode(_movie(), {"id": 1}), encode(_movie(1.0), {"id": 2})
    same_content = encode(_movie(), {"id": 3})  # another row, another path
    first, again = decode(row1), decode(row1)
    assert first is not again
    assert _deephash(first) == _deephash(again)  # raised TypeError before
    assert _deephash(first) != _deephash(decode(row2))
    assert _deephash(first) != _deephash(decode(same_content))
    replaced = dict(row1, checksum="0" * 64)  # the row rewritten at the same path
    assert _deephash(first) != _deephash(decode(replaced))
    named = encode(_movie(name="movie"), {"id": 4})
    assert _deephash(decode(named)) == _deephash(decode(named)) != _deephash(first)


def test_deephash_of_decoded_dataset_is_of_the_stored_row(store):
    encode, decode = store
    row1 = encode(xr.Dataset({"m": _movie()}), {"id": 1})
    row2 = encode(xr.Dataset({"m": _movie(1.0)}), {"id": 2})
    assert _deephash(decode(row1)) == _deephash(decode(row1))
    assert _deephash(decode(row1)) != _deephash(decode(row2))  # were equal: variable names only


def test_deephash_of_decoded_values_nested_as_make_fetch_returns_them(store):
    encode, decode = store
    a, b = encode(_movie(), {"id": 1}), encode(xr.Dataset({"m": _movie(2.0)}), {"id": 2})
    b_other = encode(xr.Dataset({"m": _movie(3.0)}), {"id": 3})
    fetched = (decode(a), {"ds": decode(b), "n": 5})
    assert _deephash(fetched) == _deephash((decode(a), {"ds": decode(b), "n": 5}))
    assert _deephash(fetched) != _deephash((decode(a), {"ds": decode(b_other), "n": 5}))


def test_decoded_value_changed_in_place_hashes_by_content(store):
    encode, decode = store
    row, other = encode(xr.Dataset({"m": _movie()}), {"id": 1}), encode(_movie(7.0), {"id": 2})
    as_stored = _deephash(decode(row))

    def combined(extra):
        ds = decode(row)
        ds["extra"] = extra  # data from another row, folded into this one
        return _deephash(ds)

    assert combined(decode(other)) != as_stored
    assert combined(decode(other)) == combined(decode(other))
    assert combined(decode(other)) != combined(_movie(8.0))
    loaded = decode(row).load()  # values read in place: still the stored row
    assert _deephash(loaded) == as_stored


def test_deephash_of_an_in_memory_value_is_of_its_content():
    from djdask.storage.codec import install_deephash

    install_deephash()  # done by the first decode; this test may run in a process that has none
    assert _deephash(_movie()) == _deephash(_movie())
    assert _deephash(_movie()) != _deephash(_movie(1.0))
    assert _deephash(_movie()) != _deephash(_movie(name="movie"))
    changed = _movie()
    changed[4, 2, 3] = -1
    assert _deephash(changed) != _deephash(_movie())
    ds = xr.Dataset({"m": _movie()})
    assert _deephash(ds) == _deephash(xr.Dataset({"m": _movie()}))
    assert _deephash(ds) != _deephash(xr.Dataset({"m": changed}))
    assert _deephash(ds) != _deephash(ds.rename({"time": "t"}))
    lazy = xr.Dataset({"m": _movie().chunk({"time": 2})})
    assert _deephash(lazy) == _deephash(ds)
    assert _deephash(_movie().variable) != _deephash(changed.variable)
    assert _deephash((ds, 1)) != _deephash((xr.Dataset({"m": changed}), 1))


def _stable(hashes) -> dict:
    from deepdiff.helper import ID_PREFIX

    return {k: v for k, v in hashes.items() if not (isinstance(k, str) and k.startswith(ID_PREFIX))}


def test_deephash_of_other_values_is_deepdiffs_own(store, monkeypatch):
    import deepdiff
    import pandas as pd
    from deepdiff.deephash import DeepHash as original

    encode, decode = store
    monkeypatch.setattr(deepdiff, "DeepHash", original)  # as in a process that has decoded nothing
    row = encode(_movie(), {"id": 1})
    assert deepdiff.DeepHash is original  # encoding, or importing the codec, changes nothing
    decode(row)  # the first decode puts the xarray-aware DeepHash in place
    assert deepdiff.DeepHash is not original and issubclass(deepdiff.DeepHash, original)
    values = [
        None,
        1,
        1.0,
        True,
        "text",
        b"bytes",
        (1, "a", 2.5),
        [3, 1, 2],
        {"a": [1, 2], "b": {"c": None}},
        np.arange(12).reshape(3, 4),
        np.float32(1.5),
        ({"id": 1}, np.zeros(3), ["x"]),
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
        {1, 2, 3},
    ]
    for value in values:
        for options in ({"ignore_iterable_order": False}, {}, {"apply_hash": False}):
            ours, theirs = deepdiff.DeepHash(value, **options), original(value, **options)
            assert ours[value] == theirs[value]
            # every entry but those under an id: of temporaries (an ndarray's rows, a DataFrame's
            # columns), which differ from run to run and may be reused within one
            assert _stable(ours.hashes) == _stable(theirs.hashes)


def test_deephash_install_is_once_and_deepdiffs_hook_is_as_relied_on():
    import inspect

    import deepdiff
    from datajoint.autopopulate import AutoPopulate
    from deepdiff.deephash import DeepHash as original

    from djdask.storage.codec import install_deephash

    # the private method overridden: a deepdiff that changes it must fail here
    assert tuple(inspect.signature(original._hash).parameters) == ("self", "obj", "parent", "parents_ids")
    # DataJoint must look DeepHash up on the module at call time for the override to reach it
    source = inspect.getsource(AutoPopulate._populate1)
    assert "import deepdiff" in source and "deepdiff.DeepHash(fetched_data" in source
    assert install_deephash() and install_deephash()
    installed = deepdiff.DeepHash
    assert install_deephash() and deepdiff.DeepHash is installed and installed.__mro__[1] is original
