"""Values outlive the process; read-only stores; damaged bytes raise
CorruptError."""
import os
import re

import pytest

import fbk
from conftest import run_python

WRITE = """
import sys, fbk
s = fbk.Store(sys.argv[1])
m = s.map("m", sync=sys.argv[2] == "sync")
m[b"small"] = b"v"
m[b"empty"] = b""
m[b"big"] = bytes(range(256)) * 20480          # 5 MiB
m[b"gone"] = b"x"
del m[b"gone"]
# no close: sync=True puts are durable on return; sync=False ones are
# synced by the close of every open store at exit
"""

READ = """
import sys, fbk
with fbk.Store(sys.argv[1], readonly=sys.argv[2] == "ro") as s:
    m = s.map("m")
    assert m[b"small"] == b"v" and m[b"empty"] == b""
    assert m[b"big"] == bytes(range(256)) * 20480
    assert b"gone" not in m
    print(sorted(m))
"""


@pytest.mark.parametrize("backend", ["lmdb", "file"])
@pytest.mark.parametrize("mode", ["sync", "nosync"])
def test_written_by_one_process_read_by_another(tmp_path, backend, mode):
    uri = "%s:%s" % (backend, tmp_path / "s")
    run_python(WRITE, uri, mode)
    out = run_python(READ, uri, "rw").stdout
    assert out.strip() == "[b'big', b'empty', b'small']"
    # and in this process
    with fbk.Store(uri) as s:
        assert s.map("m")[b"small"] == b"v"


@pytest.mark.parametrize("backend", ["lmdb", "file"])
def test_readonly_store(tmp_path, backend):
    uri = "%s:%s" % (backend, tmp_path / "s")
    with fbk.Store(uri) as s:
        s.map("m")[b"k"] = b"v"
    with fbk.Store(uri, readonly=True) as s:
        assert s.readonly
        m = s.map("m")
        assert m[b"k"] == b"v" and b"k" in m and len(m) == 1 and list(m) == [b"k"]
        with m.view(b"k") as mv:
            assert mv == b"v"
        with pytest.raises(fbk.ReadOnlyError) as e:
            m[b"k2"] = b"v"
        assert e.value.code == -11 and e.value.name == "FBK_EREADONLY"
        with pytest.raises(fbk.ReadOnlyError):
            del m[b"k"]

        @fbk.memoize(m)
        def f(x):
            return x

        with pytest.raises(fbk.ReadOnlyError):
            f(1)
    # the URI parameter works as well
    with fbk.Store(uri + "?readonly=1") as s:
        with pytest.raises(fbk.ReadOnlyError):
            s.map("m")[b"k3"] = b"v"
    run_python(READ.replace('b"small"] == b"v" and m[b"empty"] == b""', 'b"k"] == b"v"')
               .replace('assert m[b"big"]', '#').replace('print', '#'), uri, "ro")


@pytest.mark.parametrize("backend", ["lmdb", "file"])
def test_readonly_missing_location_is_not_found(tmp_path, backend):
    uri = "%s:%s" % (backend, tmp_path / "s")
    with fbk.Store(uri) as s:
        s.map("m")[b"k"] = b"v"
    with fbk.Store(uri, readonly=True) as s:
        with pytest.raises(fbk.NotFoundError) as e:  # a missing location is not created
            s.map("absent")
        assert isinstance(e.value, KeyError)


def test_damaged_object_raises_corrupt_error(tmp_path):
    uri = "file:%s" % (tmp_path / "s")
    value = b"precious bytes " * 1000
    with fbk.Store(uri) as s:
        s.map("m")[b"k"] = value
    loc = tmp_path / "s" / "m"
    objs = [os.path.join(dp, f) for dp, _, fs in os.walk(loc)
            for f in fs if re.fullmatch(r"[0-9a-f]{32}", f) and os.path.basename(dp) == f[:2]]
    assert len(objs) == 1, objs
    with open(objs[0], "r+b") as f:                  # flip one byte in the middle
        f.seek(os.path.getsize(objs[0]) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))
    with fbk.Store(uri) as s:
        m = s.map("m")
        assert b"k" in m                             # the binding is intact ...
        with pytest.raises(fbk.CorruptError) as e:   # ... its bytes are not
            m[b"k"]
        assert e.value.code == -6 and e.value.name == "FBK_ECORRUPT"
        assert isinstance(e.value, fbk.Error)
        with pytest.raises(fbk.CorruptError):
            m.view(b"k")
