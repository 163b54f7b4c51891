"""Exceptions: one class per FBK_E* code, with .code and .name."""
import threading

import pytest

import fbk

CODES = {
    "InvalidArgumentError": (-1, "FBK_EINVAL", ValueError),
    "OutOfMemoryError": (-2, "FBK_ENOMEM", MemoryError),
    "BackendIOError": (-3, "FBK_EIO", OSError),
    "NoSpaceError": (-4, "FBK_ENOSPC", OSError),
    "NotFoundError": (-5, "FBK_ENOTFOUND", KeyError),
    "CorruptError": (-6, "FBK_ECORRUPT", None),
    "WouldBlockError": (-7, "FBK_EAGAIN", BlockingIOError),
    "BusyError": (-8, "FBK_EBUSY", None),
    "CodecError": (-9, "FBK_ECODEC", None),
    "ClosedError": (-10, "FBK_ECLOSED", ValueError),
    "ReadOnlyError": (-11, "FBK_EREADONLY", None),
    "NotSupportedError": (-12, "FBK_ENOTSUP", None),
    "TimedOutError": (-13, "FBK_ETIMEDOUT", TimeoutError),
}


@pytest.mark.parametrize("cls_name", sorted(CODES))
def test_class_per_code(cls_name):
    code, name, builtin = CODES[cls_name]
    cls = getattr(fbk, cls_name)
    assert issubclass(cls, fbk.Error) and issubclass(cls, Exception)
    assert cls.code == code and cls.name == name
    if builtin:
        assert issubclass(cls, builtin)
    e = cls("message")
    assert e.code == code and e.name == name and str(e).strip("'") == "message"


def test_every_code_is_covered():
    assert sorted(c for c, _, _ in CODES.values()) == list(range(-13, 0))


def test_raised_errors_carry_code_name_and_message(tmp_path):
    with pytest.raises(fbk.InvalidArgumentError) as e:
        fbk.Store("nosuchscheme:/x")
    assert e.value.code == -1 and e.value.name == "FBK_EINVAL" and str(e.value)
    with pytest.raises(fbk.InvalidArgumentError) as e:
        fbk.Store("lmdb:%s?bogus=1" % tmp_path)
    assert "bogus" in str(e.value)                   # the library's message
    with pytest.raises(TypeError):
        fbk.Store(b"mem:")


def test_close_while_in_use_is_busy(tmp_path):
    """close() refuses while another call runs on the map (here: the
    memoized function, which runs inside fbk_map_get_or_compute)."""
    with fbk.Store("lmdb:%s" % tmp_path) as s:
        m = s.map("m")
        seen = []

        @fbk.memoize(m)
        def f(x):
            with pytest.raises(fbk.BusyError) as e:
                m.close()
            seen.append(e.value.code)
            return x

        assert f(1) == 1 and seen == [-8] and not m.closed
        m.close()


def test_errors_on_other_threads_are_their_own(tmp_path):
    """fbk_errmsg is per thread: each thread's exception has its own message."""
    with fbk.Store("lmdb:%s" % tmp_path) as s:
        m = s.map("m")
        out = {}

        def bad(i):
            try:
                m[b""] = b"x"
            except fbk.InvalidArgumentError as e:
                out[i] = str(e)

        ts = [threading.Thread(target=bad, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(out) == 4 and all(out.values())
