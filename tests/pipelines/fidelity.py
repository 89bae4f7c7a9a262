"""A fidelity test pipeline in the styles DataJoint's documentation shows: Manual and
Lookup tables, a custom ``key_source``, a master with a Part table, aliased foreign
keys (``proj`` renames), a tripartite ``make`` (``make_fetch`` / ``make_compute`` /
``make_insert``), blobs (numpy arrays, dicts) and a chain of four Computed levels.

Everything here is deterministic: populated by DataJoint's own ``populate()`` or by
``djdask populate``, every auto-populated table and part must hold the same rows.
``seed()`` inserts the manual data.

    Subject ── Session ─┬─ Preprocessed ── Segmentation(+Cell) ── Traces ── Summary
                        │        └─────────┬──────────────────────────┘
    Filter (Lookup) ────┴─ Filtered (key_source: restricted join)
    Subject × Subject ──── Pairing (aliased FKs first_id, second_id)
"""

import datajoint as dj
import numpy as np

from djdask.config import namespace as config

schema = dj.Schema(f"{config.get('demo.schema-prefix')}_fidelity")


@schema
class Subject(dj.Manual):
    definition = """
    subject_id : int32
    ---
    species : varchar(32)
    weight : float64       # grams
    """


@schema
class Session(dj.Manual):
    definition = """
    -> Subject
    session_id : int16
    ---
    quality : varchar(8)   # 'good' or 'bad'
    n_samples : int32
    """


@schema
class Filter(dj.Lookup):
    definition = """
    filter_id : int16
    ---
    cutoff : float64
    kind : varchar(16)
    """
    contents = [(1, 0.25, "lowpass"), (2, 0.5, "lowpass"), (3, 0.75, "highpass")]


@schema
class Preprocessed(dj.Computed):
    definition = """
    -> Session
    ---
    signal : <blob>        # numpy float64 array
    info : <blob>          # a dict with nested values
    mean : float64
    """

    def make(self, key):
        n = (Session & key).fetch1("n_samples")
        weight = (Subject & key).fetch1("weight")
        t = np.arange(n, dtype=np.float64)
        signal = np.sin(t * (key["session_id"] + 1) / 7.0) * weight + key["subject_id"]
        info = {
            "n": int(n),
            "peaks": np.flatnonzero(signal > signal.mean()).astype(np.int32),
            "label": f"s{key['subject_id']}-{key['session_id']}",
            "nested": {"w": float(weight)},
        }
        self.insert1({**key, "signal": signal, "info": info, "mean": float(signal.mean())})


@schema
class Filtered(dj.Computed):
    """A custom key_source: only good sessions, only lowpass filters."""

    definition = """
    -> Preprocessed
    -> Filter
    ---
    filtered : <blob>
    energy : float64
    """

    @property
    def key_source(self):
        return (Preprocessed * Session & "quality = 'good'").proj() * (Filter & "kind = 'lowpass'").proj()

    def make(self, key):
        signal = (Preprocessed & key).fetch1("signal")
        cutoff = (Filter & key).fetch1("cutoff")
        kernel = np.ones(max(1, int(cutoff * 8))) / max(1, int(cutoff * 8))
        filtered = np.convolve(signal, kernel, mode="same")
        self.insert1({**key, "filtered": filtered, "energy": float(np.sum(filtered**2))})


@schema
class Segmentation(dj.Computed):
    """A master with a Part table."""

    definition = """
    -> Preprocessed
    ---
    n_cells : int16
    """

    class Cell(dj.Part):
        definition = """
        -> master
        cell_id : int16
        ---
        center : float64
        mask : <blob>
        """

    def make(self, key):
        signal = (Preprocessed & key).fetch1("signal")
        n_cells = 2 + (key["subject_id"] + key["session_id"]) % 3
        self.insert1({**key, "n_cells": n_cells})
        self.Cell.insert(
            {**key, "cell_id": c, "center": float(signal[c % len(signal)]), "mask": (np.arange(8) % (c + 2) == 0)}
            for c in range(n_cells)
        )


@schema
class Traces(dj.Computed):
    """A tripartite make without arrays: fetch outside, compute, insert in a transaction."""

    definition = """
    -> Segmentation
    ---
    traces : <blob>        # cells x samples
    stats : <blob>         # dict of per-cell values
    """

    def make_fetch(self, key):
        signal = (Preprocessed & key).fetch1("signal")
        centers = (Segmentation.Cell & key).to_arrays("center", order_by="cell_id")
        return signal, centers

    def make_compute(self, key, signal, centers):
        traces = np.stack([signal * c for c in centers])
        stats = {"max": traces.max(axis=1).tolist(), "min": traces.min(axis=1).tolist()}
        return traces, stats

    def make_insert(self, key, traces, stats):
        self.insert1({**key, "traces": traces, "stats": stats})


@schema
class Summary(dj.Computed):
    """The fourth Computed level: Preprocessed -> Segmentation -> Traces -> Summary."""

    definition = """
    -> Traces
    ---
    peak : float64
    per_cell : <blob>
    """

    def make(self, key):
        traces = (Traces & key).fetch1("traces")
        n_cells = (Segmentation & key).fetch1("n_cells")
        self.insert1({**key, "peak": float(np.abs(traces).max()), "per_cell": traces.sum(axis=1) / n_cells})


@schema
class Pairing(dj.Computed):
    """Aliased foreign keys: two renamed references to the same parent."""

    definition = """
    -> Subject.proj(first_id='subject_id')
    -> Subject.proj(second_id='subject_id')
    ---
    weight_ratio : float64
    same_species : bool
    """

    def make(self, key):
        first = (Subject & {"subject_id": key["first_id"]}).fetch1()
        second = (Subject & {"subject_id": key["second_id"]}).fetch1()
        self.insert1(
            {
                **key,
                "weight_ratio": first["weight"] / second["weight"],
                "same_species": first["species"] == second["species"],
            }
        )


#: The auto-populated tables in dependency order, as a sequential populate() runs them.
AUTO = (Preprocessed, Filtered, Segmentation, Traces, Summary, Pairing)


def seed(subjects: int = 4, sessions: int = 3) -> None:
    """The manual data: ``subjects`` subjects with ``sessions`` sessions each."""
    Subject.insert(
        [
            {"subject_id": s, "species": "mouse" if s % 2 else "rat", "weight": 20.0 + 3.5 * s}
            for s in range(1, subjects + 1)
        ]
    )
    Session.insert(
        [
            {
                "subject_id": s,
                "session_id": k,
                "quality": "bad" if (s + k) % 4 == 0 else "good",
                "n_samples": 30 + 5 * k,
            }
            for s in range(1, subjects + 1)
            for k in range(1, sessions + 1)
        ]
    )
