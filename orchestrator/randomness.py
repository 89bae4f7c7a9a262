"""The global random generators of a worker process belong to the ``make()`` it runs.

Pipelines often seed Python's or NumPy's global generator at the top of
``make()`` (``random.seed(str(key))``, ``numpy.random.seed(...)``) and draw
from it afterwards.  In a plain DataJoint process nothing else draws between
those calls.  In a Dask worker other threads do while ``make()`` waits on the
database: the worker's event loop sizes incoming task arguments
(``dask.sizeof`` samples long lists with ``random.sample`` and object arrays
with ``numpy.random.choice``) and samples frames before compressing them
(``distributed.protocol.compression`` imported ``random.randint``).  Each such
draw advances the sequence ``make()`` seeded, so its numbers differ from the
ones ``populate()`` would give.

:func:`isolate` (called once per worker process, before the pipeline is
imported) replaces every function bound to the global generators, wherever a
loaded module holds one (``random.random``, ``numpy.random.choice``, a name
imported with ``from random import randint``), by one that draws from the
global generator in the thread that runs ``make()`` and from a private
generator of its own in every other thread.  :func:`owned_by_this_thread`
marks the thread that runs a batch.  The global generator objects themselves
are untouched, so a library that holds them directly (scikit-learn's
``check_random_state(None)`` returns ``numpy.random.mtrand._rand``) sees what
``make()`` seeded, as it would under ``populate()``.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["isolate", "is_isolated", "owned_by_this_thread"]

_owner: int | None = None  # threading.get_ident() of the thread running make(), while it does
_isolated: list[Any] = []  # the global generators whose functions are dispatched


def _dispatcher(name: str, shared: Any, private: Any, original: Callable) -> Callable:
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        generator = shared if threading.get_ident() == _owner else private
        return getattr(generator, name)(*args, **kwargs)

    dispatch.__name__ = getattr(original, "__name__", name)
    dispatch.__qualname__ = getattr(original, "__qualname__", name)
    dispatch.__doc__ = getattr(original, "__doc__", None)
    dispatch.__wrapped__ = original  # type: ignore[attr-defined]
    dispatch.djdask_dispatches = shared  # type: ignore[attr-defined]
    return dispatch


def _rebind(shared: Any, private: Any) -> int:
    """Replace, in every loaded module, the functions bound to ``shared``; return how many."""
    replaced = 0
    dispatchers: dict[str, Callable] = {}
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            try:
                bound_to = getattr(value, "__self__", None)
            except Exception:  # a proxy that refuses every attribute (DataJoint's config in thread-safe mode)
                continue
            if bound_to is not shared or not callable(value):
                continue
            name = getattr(value, "__name__", attr)
            if name not in dispatchers:
                dispatchers[name] = _dispatcher(name, shared, private, value)
            namespace[attr] = dispatchers[name]
            replaced += 1
    return replaced


def isolate() -> None:
    """Give the global generators of this process to the thread that runs ``make()``.

    Idempotent.  Modules imported later take the replaced functions when they
    import them from ``random`` or ``numpy.random``.
    """
    if not any(g is random._inst for g in _isolated):  # behind random.random() and friends
        _rebind(random._inst, random.Random())
        _isolated.append(random._inst)
    numpy = sys.modules.get("numpy")
    if numpy is None:
        try:
            import numpy
        except ImportError:  # pragma: no cover - numpy is a dependency
            return
    legacy = numpy.random.mtrand._rand  # the RandomState behind numpy.random.seed() and friends
    if not any(g is legacy for g in _isolated):
        _rebind(legacy, numpy.random.RandomState())
        _isolated.append(legacy)


def is_isolated() -> bool:
    return bool(_isolated)


@contextlib.contextmanager
def owned_by_this_thread() -> Iterator[None]:
    """While inside, this thread draws from the global generators; others from their own."""
    global _owner
    previous, _owner = _owner, threading.get_ident()
    try:
        yield
    finally:
        _owner = previous
