"""fbk.Map: MutableMapping semantics, names and values, view(), sync,
size_limit, closing -- on mem:, lmdb: and file:."""
import collections.abc
import gc

import pytest

import fbk
from conftest import run_python


def test_is_a_mutable_mapping(store):
    m = store.map("m")
    assert isinstance(m, collections.abc.MutableMapping)
    assert isinstance(m, fbk.Map)
    assert len(m) == 0 and list(m) == [] and dict(m) == {}


def test_set_get_delete_contains(store):
    m = store.map("m")
    m[b"a"] = b"1"
    m["b"] = bytearray(b"22")         # str names are UTF-8; any bytes-like value
    m[memoryview(b"c")] = memoryview(b"333")
    assert m[b"a"] == b"1" and m[b"b"] == b"22" and m["c"] == b"333"
    assert type(m[b"b"]) is bytes
    assert b"a" in m and "a" in m and b"zz" not in m
    assert len(m) == 3
    assert sorted(m) == [b"a", b"b", b"c"]           # names come back as bytes
    assert sorted(m.keys()) == [b"a", b"b", b"c"]
    assert sorted(m.items()) == [(b"a", b"1"), (b"b", b"22"), (b"c", b"333")]
    m[b"a"] = b"one"                                 # rebinding replaces
    assert m[b"a"] == b"one" and len(m) == 3
    del m[b"a"]
    assert b"a" not in m and len(m) == 2
    with pytest.raises(KeyError):
        m[b"a"]
    with pytest.raises(KeyError):
        del m[b"a"]


def test_mixin_methods(store):
    m = store.map("m")
    m.update({b"x": b"1", b"y": b"2"}, z=b"3")
    assert m.get(b"x") == b"1" and m.get(b"nope") is None and m.get(b"nope", 7) == 7
    assert m.pop(b"x") == b"1" and m.pop(b"x", None) is None
    assert m.setdefault(b"w", b"4") == b"4" and m.setdefault(b"w", b"5") == b"4"
    assert m == {b"y": b"2", b"z": b"3", b"w": b"4"}
    name, value = m.popitem()
    assert name not in m and len(m) == 2
    m.clear()
    assert len(m) == 0 and list(m) == []


def test_unicode_name_is_utf8(store):
    m = store.map("m")
    m["héllo"] = b"v"
    assert m["héllo".encode()] == b"v"
    assert list(m) == ["héllo".encode()]


@pytest.mark.parametrize("size", [0, 1, 5 << 20])
def test_value_sizes(store, size):
    m = store.map("m")
    value = bytes((i * 7 + 3) & 0xFF for i in range(min(size, 4096))) * (size // 4096 or 1)
    value = value[:size] if size else b""
    m[b"v"] = value
    got = m[b"v"]
    assert len(got) == size and got == value
    with m.view(b"v") as mv:
        assert mv.nbytes == size and mv == value


def test_name_limits(store):
    m = store.map("m")
    m[b"n" * fbk.NAME_MAX] = b"max"
    assert m[b"n" * fbk.NAME_MAX] == b"max"
    with pytest.raises(fbk.InvalidArgumentError):
        m[b""] = b"x"
    with pytest.raises(ValueError):                  # InvalidArgumentError is a ValueError
        m[b"n" * (fbk.NAME_MAX + 1)] = b"x"
    with pytest.raises(KeyError):
        m[b""]
    assert b"" not in m and b"n" * (fbk.NAME_MAX + 1) not in m
    with pytest.raises(TypeError):
        m[1] = b"x"
    with pytest.raises(TypeError):
        m[b"x"] = "not bytes"
    with pytest.raises(TypeError):
        1 in m


def test_view_is_zero_copy_and_pinned(store):
    m = store.map("m")
    m[b"k"] = b"abcdef" * 1000
    v = m.view(b"k")
    assert v.pinned and len(v) == 6000
    with v as mv:
        assert isinstance(mv, memoryview) and mv.readonly
        assert mv[:6] == b"abcdef"
        with pytest.raises(TypeError):
            mv[0] = 1
        two = memoryview(v)                          # the same bytes, not a copy
        assert two.tobytes() == mv.tobytes()
        two.release()
    assert not v.pinned
    with pytest.raises(BufferError):
        memoryview(v)
    with pytest.raises(KeyError):
        m.view(b"missing")


def test_view_stays_pinned_while_a_slice_lives(store):
    m = store.map("m")
    m[b"k"] = b"0123456789"
    v = m.view(b"k")
    with v as mv:
        part = mv[2:5]                               # a second export of the view
    assert v.pinned                                  # ... keeps the value pinned
    assert part == b"234"
    part.release()
    assert not v.pinned


def test_view_dropped_without_exit_unpins(store):
    m = store.map("m")
    m[b"k"] = b"x"
    v = m.view(b"k")
    mv = v.__enter__()
    del v, mv                                        # a cycle view <-> memoryview
    gc.collect()
    assert m[b"k"] == b"x"


def test_sync_false_then_sync(store):
    m = store.map("m", sync=False)
    for i in range(50):
        m[b"%d" % i] = b"v%d" % i
    m.sync()
    assert len(m) == 50 and m[b"7"] == b"v7"


def test_size_limit_evicts_least_recently_used(store):
    m = store.map("m", size_limit=3000)
    assert m.size_limit == 3000
    m[b"a"] = b"a" * 1000
    m[b"b"] = b"b" * 1000
    m[b"c"] = b"c" * 1000
    assert m[b"a"]                                   # a use: "b" is now the oldest
    m[b"d"] = b"d" * 1000
    assert b"b" not in m and b"a" in m and b"d" in m
    assert m.bytes_used <= 3000


def test_maps_are_separate(store):
    a, b = store.map("a"), store.map("b")
    a[b"k"] = b"A"
    b[b"k"] = b"B"
    assert a[b"k"] == b"A" and b[b"k"] == b"B"


def test_closed_map_and_store(uri):
    s = fbk.Store(uri)
    m = s.map("m")
    m[b"k"] = b"v"
    m.close()
    assert m.closed
    m.close()                                        # twice is harmless
    with pytest.raises(fbk.ClosedError):
        m[b"k"]
    with pytest.raises(fbk.ClosedError):
        m[b"k"] = b"v"
    m2 = s.map("m")
    s.close()                                        # closes its maps too
    assert s.closed and m2.closed
    with pytest.raises(fbk.ClosedError):
        s.map("m")
    with pytest.raises(fbk.ClosedError):
        len(m2)


def test_context_managers(uri):
    with fbk.Store(uri) as s:
        with s.map("m") as m:
            m[b"k"] = b"v"
        assert m.closed
    assert s.closed


def test_sync_false_values_read_before_the_sync(store):
    # [] of a value not synced yet comes from the map's pending copy; view()
    # (an item) runs the batch first; both give the bytes put
    m = store.map("m", sync=False)
    vals = {b"%d" % i: bytes([i % 256]) * (i * 97) for i in range(40)}
    for k, v in vals.items():
        m[k] = v
    assert all(m[k] == v for k, v in vals.items())
    with m.view(b"39") as mv:
        assert bytes(mv) == vals[b"39"]
    m[b"39"] = b"rebound"
    assert m[b"39"] == b"rebound"
    m.sync()
    assert all(m[k] == v for k, v in vals.items() if k != b"39")


def test_sync_false_past_64_mib_pending(tmp_path):
    # more than 64 MiB of unsynced values: the later ones go through the
    # spill area; all of them are there after the sync, in a new process too
    uri = "lmdb:%s" % (tmp_path / "s")
    mib = 1 << 20
    with fbk.Store(uri) as s:
        m = s.map("m", sync=False)
        for i in range(70):
            m[b"%d" % i] = bytes([i]) * mib
        assert m[b"69"] == bytes([69]) * mib and m[b"0"] == bytes([0]) * mib
    out = run_python("import sys, fbk\n"
                     "m = fbk.Store(sys.argv[1]).map('m')\n"
                     "print(all(m[b'%d' % i] == bytes([i]) * (1 << 20) for i in range(70)))",
                     uri)
    assert out.stdout.strip() == "True"


def test_damaged_lmdb_object_raises_corrupt_error(tmp_path):
    # the one-copy read of [] checks the frame's checksum in the same pass
    uri = "lmdb:%s" % (tmp_path / "s")
    value = b"0123456789abcdef" * 4096 + b"precious tail"
    with fbk.Store(uri) as s:
        s.map("m")[b"k"] = value
    data = tmp_path / "s" / "durable" / "data.mdb"
    raw = data.read_bytes()
    at = raw.find(b"precious tail")
    assert at > 0
    with open(data, "r+b") as f:
        f.seek(at)
        f.write(b"Q")
    with fbk.Store(uri) as s:
        m = s.map("m")
        assert b"k" in m
        with pytest.raises(fbk.CorruptError) as e:
            m[b"k"]
        assert "checksum" in str(e.value)
