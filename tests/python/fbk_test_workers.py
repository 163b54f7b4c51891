"""Worker functions for the multiprocessing tests (importable by name in
spawned children)."""
import fbk

CALLS = []


def square(x):
    CALLS.append(x)
    return x * x


def memo_worker(args):
    """Opens the store, memoizes square over xs into map "memo"; returns
    (results, computed here)."""
    uri, xs = args
    with fbk.Store(uri) as s:
        m = s.map("memo")
        f = fbk.memoize(m)(square)
        results = [f(x) for x in xs]
        return results, f.cache_info().misses


def try_open(uri):
    """"busy" if a second process cannot open the store yet, else "ok"."""
    try:
        with fbk.Store(uri):
            return "ok"
    except fbk.BusyError:
        return "busy"
