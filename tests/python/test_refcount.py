"""No reference or memory leaks over 100k operations."""
import gc
import sys
import tracemalloc

import pytest

import fbk


def workload(m, f, name, value, missing, rounds):
    for _ in range(rounds):
        m[name] = value                      # 1
        assert m[name] == value              # 2
        assert name in m                     # 3
        assert m.get(missing) is None        # 4
        try:                                 # 5: the KeyError path
            m[missing]
        except KeyError:
            pass
        with m.view(name) as mv:             # 6
            assert mv.nbytes == len(value)
        assert f(3) == 9                     # 7: a memoize hit
        try:                                 # 8: an fbk.Error
            m[b""] = value
        except fbk.InvalidArgumentError:
            pass
        del m[name]                          # 9
        assert len(m) >= 1                   # 10
        list(m)                              # 11


def test_no_leaks_over_100k_operations():
    with fbk.Store("mem:refcount") as s:
        m = s.map("m", sync=False)
        f = fbk.memoize(m)(lambda x: x * x)
        name, value, missing = b"name", b"value" * 100, b"missing"
        counts = [sys.getrefcount(o) for o in (name, value, missing, m, f)]
        workload(m, f, name, value, missing, 100)          # warm up caches
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        workload(m, f, name, value, missing, 100_000 // 11)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert [sys.getrefcount(o) for o in (name, value, missing, m, f)] == counts
        assert grown < 64 * 1024, "%d bytes more after 100k operations" % grown


def test_total_refcount_is_stable():
    if not hasattr(sys, "gettotalrefcount"):
        pytest.skip("sys.gettotalrefcount needs a debug build of Python")
    with fbk.Store("mem:refcount2") as s:
        m = s.map("m", sync=False)
        f = fbk.memoize(m)(lambda x: x * x)
        workload(m, f, b"n", b"v", b"x", 100)
        gc.collect()
        before = sys.gettotalrefcount()
        workload(m, f, b"n", b"v", b"x", 1000)
        gc.collect()
        assert sys.gettotalrefcount() - before < 100
