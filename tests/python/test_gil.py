"""Blocking calls release the GIL: shown by a counter that another thread
advances only while this one is inside the call."""
import threading
import time

import fbk


def spinner(counter, stop):
    while not stop.is_set():
        counter[0] += 1
        if counter[0] % 1000 == 0:
            time.sleep(0)        # gives the GIL up, so the main thread gets it back


def advances_during(call, attempts=50):
    """Runs call(i) until the spinner advanced during one; returns whether it
    did.  With the 30 s switch interval the main thread keeps the GIL between
    reading the counter and the call, so the counter can only move while the
    call itself has released the GIL."""
    counter, stop = [0], threading.Event()
    t = threading.Thread(target=spinner, args=(counter, stop), daemon=True)
    t.start()
    try:
        for i in range(attempts):
            before = counter[0]
            call(i)
            if counter[0] != before:
                return True
        return False
    finally:
        stop.set()
        t.join()


def test_put_releases_the_gil(tmp_path, switch_rarely):
    with fbk.Store("lmdb:%s" % tmp_path) as s:
        m = s.map("m")                      # sync=True: each put ends with an fsync
        value = b"v" * (5 << 20)

        def put(i):
            m[b"k%d" % i] = value

        assert advances_during(put)


def test_get_releases_the_gil(tmp_path, switch_rarely):
    with fbk.Store("file:%s" % tmp_path) as s:
        m = s.map("m")
        m[b"k"] = b"v" * (5 << 20)
        assert advances_during(lambda i: m[b"k"])


def test_counter_does_not_move_without_a_release(switch_rarely):
    """The control: a call that keeps the GIL never lets the spinner run."""
    assert not advances_during(lambda i: sum(range(20000)), attempts=20)
