from collections.abc import MutableMapping
from typing import Any, Callable, Generic, NamedTuple, ParamSpec, TypeVar

from . import _fbk
from ._fbk import (
    BackendIOError as BackendIOError,
    BusyError as BusyError,
    ClosedError as ClosedError,
    CodecError as CodecError,
    CorruptError as CorruptError,
    Error as Error,
    InvalidArgumentError as InvalidArgumentError,
    NoSpaceError as NoSpaceError,
    NotFoundError as NotFoundError,
    NotSupportedError as NotSupportedError,
    OutOfMemoryError as OutOfMemoryError,
    ReadOnlyError as ReadOnlyError,
    TimedOutError as TimedOutError,
    View as View,
    WouldBlockError as WouldBlockError,
    xxh128 as xxh128,
)

__version__: str
NAME_MAX: int

class Map(_fbk.Map, MutableMapping[bytes, bytes]):  # type: ignore[misc]
    def clear(self) -> None: ...

class Store(_fbk.Store):
    def __init__(self, uri: str, *, readonly: bool = ..., threads: int = ...) -> None: ...
    def map(self, name: str, size_limit: int = ..., sync: bool = ...) -> Map: ...
    def __enter__(self) -> Store: ...

class CacheInfo(NamedTuple):
    hits: int
    misses: int
    maxsize: int | None
    currsize: int

_P = ParamSpec("_P")
_R = TypeVar("_R")

class _Memoized(Generic[_P, _R]):
    cache_map: Map
    cache_prefix: bytes
    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R: ...
    def cache_info(self) -> CacheInfo: ...
    def cache_clear(self) -> None: ...

def memoize(m: _fbk.Map, *, protocol: int = ...) -> Callable[[Callable[_P, _R]], _Memoized[_P, _R]]: ...
