"""fbk: libfbk from Python -- a persistent dict and a memoize decorator.

    import fbk
    with fbk.Store("lmdb:/tmp/cache") as store:
        m = store.map("results")          # a MutableMapping: names -> bytes
        m[b"k"] = b"v"
        with m.view(b"k") as mv: ...      # zero-copy, pinned meanwhile

        @fbk.memoize(m)
        def f(x): ...

See docs/python.md.
"""

import atexit as _atexit
import collections as _collections
import functools as _functools
import pickle as _pickle
import threading as _threading
import weakref as _weakref
from collections.abc import MutableMapping as _MutableMapping

from . import _fbk
from ._fbk import (  # noqa: F401  (re-exported)
    BackendIOError,
    BusyError,
    ClosedError,
    CodecError,
    CorruptError,
    Error,
    InvalidArgumentError,
    NoSpaceError,
    NotFoundError,
    NotSupportedError,
    OutOfMemoryError,
    ReadOnlyError,
    TimedOutError,
    View,
    WouldBlockError,
    xxh128,
)

__all__ = [
    "Store", "Map", "View", "memoize", "CacheInfo", "xxh128", "NAME_MAX",
    "Error", "InvalidArgumentError", "OutOfMemoryError", "BackendIOError", "NoSpaceError",
    "NotFoundError", "CorruptError", "WouldBlockError", "BusyError", "CodecError",
    "ClosedError", "ReadOnlyError", "NotSupportedError", "TimedOutError",
]

__version__ = _fbk.version()
NAME_MAX = _fbk.NAME_MAX

# Stores still open at interpreter exit are closed (syncing their maps'
# pending sync=False changes), newest first.
_open_stores = _weakref.WeakSet()


@_atexit.register
def _close_open_stores():
    for s in list(_open_stores):
        try:
            s.close()
        except Error:
            pass


class Map(_fbk.Map, _MutableMapping):
    """Names (bytes; str is taken as UTF-8) bound to values (bytes) in one
    location of a Store.  Values are stored as given (any bytes-like object)
    and come back as bytes; names come back as bytes.  A missing name raises
    KeyError.  With sync=True (the default) each change is durable when it
    returns; with sync=False at the next sync() or close()."""

    __slots__ = ()

    def __repr__(self):
        state = "closed" if self.closed else "%d names" % len(self)
        return "<fbk.Map %r of %r: %s>" % (self.name, self.store.uri, state)

    def clear(self):
        for name in self.names():
            try:
                del self[name]
            except KeyError:
                pass


class Store(_fbk.Store):
    """Store(uri, *, readonly=False, threads=0): "lmdb:DIR", "file:DIR",
    "mem:NAME" (a bare path means lmdb:).  A context manager; close() closes
    the maps opened on it too."""

    def __init__(self, uri, *, readonly=False, threads=0):
        super().__init__(uri, readonly=readonly, threads=threads)
        _open_stores.add(self)

    def map(self, name, size_limit=0, sync=True):
        """The map of location `name` (created unless the store is read-only)."""
        return Map(self, name, size_limit, sync=sync)

    def __repr__(self):
        return "<fbk.Store %r%s%s>" % (self.uri, " readonly" if self.readonly else "",
                                       " closed" if self.closed else "")


CacheInfo = _collections.namedtuple("CacheInfo", ["hits", "misses", "maxsize", "currsize"])


def memoize(m, *, protocol=_pickle.HIGHEST_PROTOCOL):
    """Decorator: results of the function persist in map `m` (a fbk.Map)
    under a name made of the function's module and qualified name and the
    XXH3-128 of its pickled arguments.  Concurrent calls with equal arguments
    in one process compute once (the others wait and get the stored result);
    calls in other processes find what was synced.  Arguments and results
    must be picklable.  The wrapper has cache_info() (hits, misses: calls of
    this process; maxsize: the map's size limit or None; currsize: names of
    this function in the map) and cache_clear() (removes them)."""
    if not isinstance(m, _fbk.Map):
        raise TypeError("fbk.memoize: expected an fbk.Map, not %s" % type(m).__name__)

    def decorate(func):
        ident = "%s.%s" % (func.__module__, func.__qualname__)
        prefix = b"fbk.memoize:" + ident.encode("utf-8") + b"\0"
        if len(prefix) + 16 > NAME_MAX:
            raise ValueError("fbk.memoize: the function's name is too long")
        dumps = _functools.partial(_pickle.dumps, protocol=protocol)
        loads = _pickle.loads
        memo = m._memo
        counts = [0, 0]  # hits, misses
        lock = _threading.Lock()

        @_functools.wraps(func)
        def wrapper(*args, **kwargs):
            key = dumps((args, sorted(kwargs.items())) if kwargs else args)
            computed, value = memo(prefix + xxh128(key), func, args, kwargs, dumps)
            with lock:
                counts[computed] += 1
            return value if computed else loads(value)

        def cache_info():
            n = sum(1 for name in m.names() if name.startswith(prefix))
            limit = m.size_limit or None
            with lock:
                return CacheInfo(counts[0], counts[1], limit, n)

        def cache_clear():
            for name in m.names():
                if name.startswith(prefix):
                    try:
                        del m[name]
                    except KeyError:
                        pass
            with lock:
                counts[0] = counts[1] = 0

        wrapper.cache_info = cache_info
        wrapper.cache_clear = cache_clear
        wrapper.cache_map = m
        wrapper.cache_prefix = prefix
        return wrapper

    return decorate
