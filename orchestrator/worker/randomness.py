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
import importlib
import random
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy

__all__ = ["isolate", "is_isolated", "owned_by_this_thread", "this_thread_owns"]

_owners: set[int] = set()  # threading.get_ident() of the threads running make(), while they do
_isolated: list[Any] = []  # the global generators whose functions are dispatched


class _Dispatch:
    """Stands for one function of a global generator (``random.random``): the thread that
    runs ``make()`` draws from the global generator, any other from a private one."""

    __slots__ = ("__name__", "__wrapped__", "_shared", "_private", "_module")

    def __init__(self, name: str, shared: Any, private: Any, original: Callable) -> None:
        self.__name__ = getattr(original, "__name__", name)
        self.__wrapped__ = original
        self._shared, self._private = shared, private
        self._module = "random" if isinstance(shared, random.Random) else "numpy.random"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        generator = self._shared if threading.get_ident() in _owners else self._private
        return getattr(generator, self.__name__)(*args, **kwargs)

    def __reduce__(self) -> tuple:
        # Pickled as the module's function by name, as the original pickles.
        return (_module_function, (self._module, self.__name__))

    def __repr__(self) -> str:
        return f"<djdask dispatch of {self._module}.{self.__name__}>"


def _module_function(module: str, name: str) -> Callable:
    return getattr(importlib.import_module(module), name)


def _dispatcher(name: str, shared: Any, private: Any, original: Callable) -> Callable:
    return _Dispatch(name, shared, private, original)


#: What a generator's functions are: bound methods, of a Python class (``random.Random``)
#: or of an extension type (numpy's ``RandomState``).
_BOUND = (types.MethodType, types.BuiltinMethodType)


def _rebind(pairs: dict[int, tuple[Any, Any]]) -> int:
    """Replace, in every loaded module, the functions bound to a shared generator by
    dispatchers (``pairs``: ``id(shared)`` -> ``(shared, private)``), in one pass over
    the modules; return how many."""
    replaced = 0
    dispatchers: dict[tuple[int, str], Callable] = {}
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if type(value) not in _BOUND:  # cheap: most module attributes are nothing of the kind
                continue
            pair = pairs.get(id(getattr(value, "__self__", None)))
            if pair is None:
                continue
            shared, private = pair
            name = getattr(value, "__name__", attr)
            if (id(shared), name) not in dispatchers:
                dispatchers[id(shared), name] = _dispatcher(name, shared, private, value)
            namespace[attr] = dispatchers[id(shared), name]
            replaced += 1
    return replaced


def isolate() -> None:
    """Give the global generators of this process to the thread that runs ``make()``.

    Idempotent.  Modules imported later take the replaced functions when they
    import them from ``random`` or ``numpy.random``.
    """
    shared = [
        random._inst,  # behind random.random() and friends
        numpy.random.mtrand._rand,  # the RandomState behind numpy.random.seed() and friends
    ]
    pairs = {}
    for generator in shared:
        if not any(g is generator for g in _isolated):
            private = random.Random() if generator is random._inst else numpy.random.RandomState()
            pairs[id(generator)] = (generator, private)
    if pairs:
        _rebind(pairs)
        _isolated.extend(shared for shared, _ in pairs.values())


def is_isolated() -> bool:
    return bool(_isolated)


def this_thread_owns() -> bool:
    """Whether this thread draws from the global generators now (it runs ``make()``)."""
    return threading.get_ident() in _owners


@contextlib.contextmanager
def owned_by_this_thread() -> Iterator[None]:
    """While inside, this thread draws from the global generators; threads that run no
    ``make()`` draw from their own.  (A worker runs one ``make()`` at a time; should one
    have several threads, those running ``make()`` share the global ones, as threads of a
    plain process would.)"""
    me = threading.get_ident()
    already = me in _owners
    _owners.add(me)
    try:
        yield
    finally:
        if not already:
            _owners.discard(me)
