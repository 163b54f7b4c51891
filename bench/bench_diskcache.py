#!/usr/bin/env python3
"""bench_diskcache.py DIR N SIZE -- python diskcache's Cache.set/get on the
phases of bench_map (same counts, same value size), for bench/bench_map.sh.
Prints lines in bench_map's format with scheme "dc"."""
import os
import shutil
import sys
import threading
import time

import diskcache

WRITERS = 16


def report(size, phase, secs, n):
    print(f"{'dc':<5} {size:8d} {phase:<14} {secs * 1e6 / n:10.1f}", flush=True)


def main():
    base, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0)
    path = os.path.join(base, f"dc-{size}")
    shutil.rmtree(path, ignore_errors=True)
    value = bytes((i * 131 + 7) & 0xFF for i in range(size))
    # diskcache's defaults: SQLite in WAL mode with synchronous=NORMAL (a
    # commit is not fsynced), values above 32 KiB in files of their own
    cache = diskcache.Cache(path, size_limit=1 << 40)
    t = time.perf_counter()
    for i in range(n):
        cache.set(f"s-{i}", value)
    report(size, "set", time.perf_counter() - t, n)
    t = time.perf_counter()
    for i in range(n):
        got = cache.get(f"s-{i}")
        if len(got) != size:
            raise SystemExit("diskcache returned a wrong value")
    report(size, "get", time.perf_counter() - t, n)
    per = max(n // WRITERS, 1)

    def writer(k):
        for i in range(per):
            cache.set(f"w{k}-{i}", value)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(WRITERS)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    report(size, "set-x16", time.perf_counter() - t, per * WRITERS)
    cache.close()
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
