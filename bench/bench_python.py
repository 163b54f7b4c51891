#!/usr/bin/env python3
"""fbk (Python) against diskcache.Cache and joblib.Memory, in one run on the
same data.

    PYTHONPATH=build/python /usr/bin/python3 bench/bench_python.py [--dir DIR] [--quick]

For each value size (16 KiB, 1 MiB): set N values, then get them all in a
shuffled order, in 1 process and in 8 processes (each its own share of the
names); latencies per operation, throughput over the operations of the
phase.  Both stores are measured the same way: each process opens the store
(timed apart: the "open ms" column, mean per process, set phase / get
phase), makes its names and values, waits at a barrier for the other
processes, then runs its operations and, in the set phase, the store's
final flush (also shown apart: "flush ms", mean per process); the phase's
time runs from the first process's start to the last one's end.  fbk runs on lmdb: with sync=False (changes durable at the
final Map.sync(), which is timed as part of the set phase: neither it nor
diskcache's SQLite in WAL mode with synchronous=NORMAL fsyncs each set)
and with sync=True (every set durable on return).  Memoize: a function returning 16 KiB, first call
(miss) and repeated calls (hits) through fbk.memoize, diskcache's
Cache.memoize and joblib.Memory.cache.

The 8-process rows of fbk need several processes to open one store
directory; while libfbk refuses a second process (FBK_EBUSY) they are
skipped with a note.  Requires: python3-diskcache (python3-joblib optional).
"""
import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import fbk

try:
    import diskcache
except ImportError:  # pragma: no cover
    sys.exit("bench_python: needs diskcache (apt-get install python3-diskcache)")
try:
    import joblib
except ImportError:
    joblib = None

KIB = 1024
MIB = 1024 * KIB


def values(size, n, seed=1):
    """n distinct values of `size` bytes (a random block with the index in front)."""
    rnd = random.Random(seed)
    block = rnd.randbytes(size)
    return [(b"%08d" % i + block[8:]) if size >= 8 else block for i in range(n)]


def names(n, tag=b""):
    return [b"key-%s-%08d" % (tag, i) for i in range(n)]


def pct(lat, q):
    lat = sorted(lat)
    return lat[min(len(lat) - 1, int(q * len(lat)))]


# ---------------------------------------------------------------- backends

class FbkKV:
    label = "fbk"

    def __init__(self, path, sync):
        self.store = fbk.Store("lmdb:" + path)
        self.m = self.store.map("bench", sync=sync)
        self.sync = sync

    def set(self, k, v):
        self.m[k] = v

    def get(self, k):
        return self.m[k]

    def flush(self):
        if not self.sync:
            self.m.sync()

    def close(self):
        self.store.close()


class DiskcacheKV:
    label = "diskcache"

    def __init__(self, path, sync=None):
        self.c = diskcache.Cache(path, size_limit=1 << 40)

    def set(self, k, v):
        self.c.set(k, v)

    def get(self, k):
        return self.c.get(k)

    def flush(self):
        pass

    def close(self):
        self.c.close()


def make(kind, path, sync):
    return FbkKV(path, sync) if kind == "fbk" else DiskcacheKV(path)


def run_ops(kv, op, ks, vs=None):
    """Times each call; returns the latencies and the flush time in s.  A set
    phase ends with the store's flush (fbk sync=False: Map.sync(); diskcache:
    nothing to do)."""
    lat = []
    clock = time.perf_counter
    flush = 0.0
    if op == "set":
        for k, v in zip(ks, vs):
            a = clock()
            kv.set(k, v)
            lat.append(clock() - a)
        a = clock()
        kv.flush()
        flush = clock() - a
    else:
        for k in ks:
            a = clock()
            v = kv.get(k)
            lat.append(clock() - a)
            assert v is not None
    return lat, flush


_barrier = None


def _init_worker(barrier):
    global _barrier
    _barrier = barrier


def worker(args):
    """One process's share of a phase: opens the store (timed apart), makes
    its names and values, waits for the other workers (a barrier), then the
    timed operations plus the final flush.  perf_counter is CLOCK_MONOTONIC,
    one clock for every process of the machine, so the phase's wall time is
    the latest end minus the earliest start."""
    kind, path, sync, size, n, tag, op = args
    ks = names(n, tag)
    vs = values(size, n, seed=int(tag[1:]) + 1) if op == "set" else None
    if op == "get":
        random.Random(7).shuffle(ks)
    t = time.perf_counter()
    kv = make(kind, path, sync)
    opened = time.perf_counter() - t
    if _barrier is not None:
        _barrier.wait()
    t0 = time.perf_counter()
    lat, flush = run_ops(kv, op, ks, vs)
    t1 = time.perf_counter()
    kv.close()
    return lat, opened, t0, t1, flush


def fbk_can_share(path):
    """Whether a second process may open the fbk store at path while this one has it."""
    s = fbk.Store("lmdb:" + path)
    try:
        with multiprocessing.get_context("spawn").Pool(1) as p:
            return p.apply(_try_open, (path,))
    finally:
        s.close()


def _try_open(path):
    try:
        fbk.Store("lmdb:" + path).close()
        return True
    except fbk.BusyError:
        return False


def bench_kv(kind, sync, size, n, procs, root):
    """Per phase: ops/s over the operations plus the final flush (not the
    open), latencies, and the mean time a process took to open the store."""
    path = tempfile.mkdtemp(prefix="%s-" % kind, dir=root)
    try:
        rows = {}
        for op in ("set", "get"):
            jobs = [(kind, path, sync, size, n // procs, b"p%d" % i, op) for i in range(procs)]
            if procs == 1:
                res = [worker(jobs[0])]
            else:
                ctx = multiprocessing.get_context("spawn")
                with ctx.Pool(procs, initializer=_init_worker,
                              initargs=(ctx.Barrier(procs),)) as p:
                    res = p.map(worker, jobs, chunksize=1)
            lat = [x for r in res for x in r[0]]
            wall = max(r[3] for r in res) - min(r[2] for r in res)
            rows[op] = dict(ops=len(lat) / wall, p50=pct(lat, 0.50), p99=pct(lat, 0.99),
                            mbs=len(lat) * size / wall / MIB,
                            open=statistics.mean(r[1] for r in res),
                            flush=statistics.mean(r[4] for r in res))
        return rows
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------- memoize

def bench_memoize(root, n):
    payload = random.Random(3).randbytes(16 * KIB)

    def compute(i):
        return payload[:-8] + b"%08d" % i

    out = {}

    def measure(label, f, close=None):
        t0 = time.perf_counter()
        for i in range(n):
            f(i)
        miss = (time.perf_counter() - t0) / n
        lat = []
        for _ in range(3):
            for i in range(n):
                a = time.perf_counter()
                f(i)
                lat.append(time.perf_counter() - a)
        out[label] = dict(miss=miss, hit=statistics.mean(lat), p99=pct(lat, 0.99))
        if close:
            close()

    d = tempfile.mkdtemp(dir=root)
    st = fbk.Store("lmdb:" + d)
    f = fbk.memoize(st.map("memo", sync=False))(compute)
    measure("fbk.memoize (sync=False)", f, st.close)
    d = tempfile.mkdtemp(dir=root)
    st = fbk.Store("lmdb:" + d)
    f = fbk.memoize(st.map("memo"))(compute)
    measure("fbk.memoize (sync=True)", f, st.close)
    c = diskcache.Cache(tempfile.mkdtemp(dir=root))
    measure("diskcache Cache.memoize", c.memoize()(compute), c.close)
    if joblib:
        mem = joblib.Memory(tempfile.mkdtemp(dir=root), verbose=0)
        measure("joblib.Memory.cache", mem.cache(compute))
    return out


# -------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="where the stores go (default: a temporary directory)")
    ap.add_argument("--quick", action="store_true", help="fewer operations")
    a = ap.parse_args()
    root = a.dir or tempfile.mkdtemp(prefix="bench-python-")
    os.makedirs(root, exist_ok=True)
    scale = 4 if a.quick else 1
    plan = [(16 * KIB, 4000 // scale), (1 * MIB, 400 // scale)]
    print("# bench_python: fbk %s, diskcache %s, joblib %s, Python %s, %d CPUs, in %s\n" % (
        fbk.__version__, diskcache.__version__, joblib.__version__ if joblib else "-",
        sys.version.split()[0], os.cpu_count(), root))
    share_dir = tempfile.mkdtemp(dir=root)
    sharing = fbk_can_share(share_dir)
    shutil.rmtree(share_dir, ignore_errors=True)

    print("| value | procs | store | open ms (set/get) | set ops/s | set p50 µs | set p99 µs "
          "| flush ms | get ops/s | get p50 µs | get p99 µs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    summary = {}
    for size, n in plan:
        for procs in (1, 8):
            for kind, sync in (("fbk", False), ("fbk", True), ("diskcache", None)):
                label = kind if sync is None else "fbk sync=%s" % sync
                if kind == "fbk" and procs > 1 and not sharing:
                    if sync:
                        continue
                    notes.append("fbk, %d processes, %s values: skipped -- a second process "
                                 "opening one store gets FBK_EBUSY (multi-process sharing not in "
                                 "libfbk yet)" % (procs, "16 KiB" if size < MIB else "1 MiB"))
                    continue
                r = bench_kv(kind, sync, size, n, procs, root)
                summary[(size, procs, label)] = r
                print("| %s | %d | %s | %.1f / %.1f | %.0f | %.0f | %.0f | %.1f | %.0f | %.0f | %.0f |" % (
                    "16 KiB" if size < MIB else "1 MiB", procs, label,
                    r["set"]["open"] * 1e3, r["get"]["open"] * 1e3,
                    r["set"]["ops"], r["set"]["p50"] * 1e6, r["set"]["p99"] * 1e6,
                    r["set"]["flush"] * 1e3,
                    r["get"]["ops"], r["get"]["p50"] * 1e6, r["get"]["p99"] * 1e6), flush=True)
    print()
    for size, n in plan:
        for procs in (1, 8):
            dc = summary.get((size, procs, "diskcache"))
            fb = summary.get((size, procs, "fbk sync=False"))
            if not dc or not fb:
                continue
            print("ratio fbk(sync=False)/diskcache, %s, %d proc: get %.1fx, set %.1fx, set p99 %.1fx better" % (
                "16 KiB" if size < MIB else "1 MiB", procs, fb["get"]["ops"] / dc["get"]["ops"],
                fb["set"]["ops"] / dc["set"]["ops"], dc["set"]["p99"] / fb["set"]["p99"]))
    for note in notes:
        print("note:", note)
    print("\n| memoize, 16 KiB results | first call µs | hit µs (mean) | hit p99 µs |")
    print("|---|---|---|---|")
    for label, r in bench_memoize(root, 500 // scale).items():
        print("| %s | %.0f | %.1f | %.1f |" % (label, r["miss"] * 1e6, r["hit"] * 1e6, r["p99"] * 1e6))
    if not a.dir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
