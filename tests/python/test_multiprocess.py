"""Several processes on one store directory: multiprocessing workers
memoizing into one map.  Skipped, with the reason, while a second process
opening the same directory gets FBK_EBUSY (multi-process sharing, issue 11)."""
import multiprocessing

import pytest

import fbk
import fbk_test_workers as w


def pool(n):
    return multiprocessing.get_context("spawn").Pool(n)


@pytest.mark.parametrize("backend", ["lmdb", "file"])
def test_workers_memoize_into_one_directory(tmp_path, backend):
    uri = "%s:%s" % (backend, tmp_path / "s")
    with fbk.Store(uri) as s:            # this process keeps it open meanwhile
        s.map("memo")
        with pool(1) as p:               # several processes share a store
            assert p.apply(w.try_open, (uri,)) != "busy", \
                "a second process opening %s got FBK_EBUSY" % backend
        xs = list(range(40))
        with pool(4) as p:
            rounds = p.map(w.memo_worker, [(uri, xs[i::2] + xs) for i in range(4)])
        for results, computed in rounds:
            assert results[-40:] == [x * x for x in xs]
        assert sum(c for _, c in rounds) >= 40   # each computed somewhere, maybe twice
        with pool(4) as p:                        # now every result is found
            again = p.map(w.memo_worker, [(uri, xs)] * 4)
        assert all(c == 0 and r == [x * x for x in xs] for r, c in again)
        m = s.map("memo")
        assert len(m.names()) == 40
