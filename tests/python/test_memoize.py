"""fbk.memoize: results persist, equal arguments compute once across
threads, exceptions bind nothing, cache_info/cache_clear."""
import threading

import pytest

import fbk
from conftest import run_python


@pytest.fixture
def m(store):
    return store.map("memo")


def test_computes_once_then_hits(m):
    calls = []

    @fbk.memoize(m)
    def f(x, y=1):
        calls.append((x, y))
        return {"sum": x + y, "list": [x] * 3}

    assert f(1) == {"sum": 2, "list": [1, 1, 1]}
    assert f(1) == {"sum": 2, "list": [1, 1, 1]}
    assert f(1, y=2)["sum"] == 3
    assert f(1, y=2)["sum"] == 3
    assert calls == [(1, 1), (1, 2)]
    info = f.cache_info()
    assert (info.hits, info.misses, info.maxsize, info.currsize) == (2, 2, None, 2)
    assert f.__name__ == "f" and f.__wrapped__


def test_keyword_order_does_not_matter(m):
    calls = []

    @fbk.memoize(m)
    def f(**kw):
        calls.append(kw)
        return sorted(kw)

    assert f(a=1, b=2) == ["a", "b"]
    assert f(b=2, a=1) == ["a", "b"]
    assert len(calls) == 1


def test_functions_are_kept_apart(m):
    @fbk.memoize(m)
    def f(x):
        return "f"

    @fbk.memoize(m)
    def g(x):
        return "g"

    assert f(1) == "f" and g(1) == "g" and f(1) == "f"
    assert f.cache_prefix != g.cache_prefix


def test_exception_binds_nothing(m):
    calls = []

    @fbk.memoize(m)
    def f(x):
        calls.append(x)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return x

    with pytest.raises(RuntimeError, match="first call fails"):
        f(5)
    assert len(m) == 0
    assert f(5) == 5 and f(5) == 5
    assert calls == [5, 5]


def test_unpicklable_result_raises(m):
    @fbk.memoize(m)
    def f():
        return threading.Lock()

    with pytest.raises(TypeError):
        f()
    assert len(m) == 0


def test_cache_clear(m):
    m[b"other"] = b"kept"

    @fbk.memoize(m)
    def f(x):
        return x

    for i in range(5):
        f(i)
    assert f.cache_info().currsize == 5
    f.cache_clear()
    info = f.cache_info()
    assert info.currsize == 0 and info.hits == 0 and info.misses == 0
    assert m[b"other"] == b"kept"


def test_maxsize_is_the_size_limit(store):
    m = store.map("limited", size_limit=1 << 20)

    @fbk.memoize(m)
    def f(x):
        return x

    assert f.cache_info().maxsize == 1 << 20


def test_equal_arguments_compute_once_across_threads(m):
    """16 threads call f(42) together: one computes, the others wait in
    fbk_map_get_or_compute (with the GIL released: the computing thread needs
    it) or find the result bound."""
    n = 16
    calls = []
    start = threading.Barrier(n)

    @fbk.memoize(m)
    def f(x):
        calls.append(x)
        return ("result", x)

    results = [None] * n

    def run(i):
        start.wait()
        results[i] = f(42)

    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
        assert not t.is_alive(), "memoized call hung"
    assert calls == [42]
    assert results == [("result", 42)] * n
    info = f.cache_info()
    assert info.misses == 1 and info.hits == n - 1


def test_waiter_blocks_without_the_gil(m, switch_rarely):
    """Thread B calls f(1) while thread A is inside f(1): B waits for A's
    computation in fbk_map_get_or_compute.  A then runs Python code (counts
    to 1000): possible only if B released the GIL while waiting.  The switch
    interval is made huge, so the GIL changes hands only when a thread gives
    it up itself (else B, holding it while blocked, would deadlock A)."""
    a_inside = threading.Event()
    b_calling = threading.Event()
    progress = []

    @fbk.memoize(m)
    def f(x):
        a_inside.set()
        b_calling.wait(timeout=60)
        for i in range(1000):
            progress.append(i)
        return "done"

    out = {}
    a = threading.Thread(target=lambda: out.setdefault("a", f(1)), daemon=True)
    a.start()
    assert a_inside.wait(timeout=60)

    def b_run():
        b_calling.set()
        out["b"] = f(1)

    b = threading.Thread(target=b_run, daemon=True)
    b.start()
    a.join(timeout=120)
    b.join(timeout=120)
    assert not a.is_alive() and not b.is_alive()
    assert out == {"a": "done", "b": "done"} and len(progress) == 1000
    assert f.cache_info().misses == 1


def test_results_persist_across_processes(tmp_path):
    uri = "lmdb:%s" % tmp_path
    code = """
import sys, fbk
import fbk_test_workers as w
s = fbk.Store(sys.argv[1])
f = fbk.memoize(s.map("memo"))(w.square)
print([f(x) for x in range(5)], f.cache_info().misses)
"""
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    code = "import sys; sys.path.insert(0, %r)\n" % here + code
    assert run_python(code, uri).stdout.split("] ")[1].strip() == "5"
    assert run_python(code, uri).stdout.strip() == "[0, 1, 4, 9, 16] 0"
