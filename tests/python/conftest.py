"""Shared fixtures of the fbk Python tests (run by ctest as python_fbk with
PYTHONPATH pointing at build/python; see python/CMakeLists.txt)."""
import os
import subprocess
import sys
import uuid

import pytest

import fbk


@pytest.fixture
def tmpdir_path(tmp_path):
    return str(tmp_path)


@pytest.fixture(params=["mem", "lmdb", "file"])
def uri(request, tmp_path):
    """A fresh store URI of each backend."""
    if request.param == "mem":
        return "mem:" + uuid.uuid4().hex
    return "%s:%s" % (request.param, tmp_path / "store")


@pytest.fixture
def store(uri):
    s = fbk.Store(uri)
    yield s
    s.close()


def run_python(code, *args, check=True):
    """Runs `code` in a new interpreter (the same one, same PYTHONPATH);
    returns its standard output."""
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       env=dict(os.environ), timeout=300)
    if check and r.returncode != 0:
        raise AssertionError("child failed (%d):\n%s\n%s" % (r.returncode, r.stdout, r.stderr))
    return r


@pytest.fixture
def switch_rarely():
    """A 30 s switch interval for the test: the GIL changes hands only when
    the thread holding it gives it up (a blocking call that releases it,
    time.sleep, a lock wait), not on a timer."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    yield
    sys.setswitchinterval(old)
