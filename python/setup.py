"""Builds fbk._fbk for `pip install ./python --no-build-isolation` (Debian:
python3-setuptools, python3-dev, and libfbk's own build dependencies
liblmdb-dev, libxxhash-dev, uuid-dev).

Inside the libfbk repository the extension is compiled together with the
library's sources (../src, ../backends), all with hidden visibility, so the
module is self-contained like the one CMake builds (which links libfbk.a).
Elsewhere it links an installed libfbk.a found through pkg-config
(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig)."""
import ctypes.util
import glob
import os
import shlex
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def rel(path):
    return os.path.relpath(path, HERE)


def pkg_config(*args):
    out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True).stdout
    return shlex.split(out)


# The extension's own files (python/src; fbkpy.h is their private header).
MODULE_SOURCES = [os.path.join("src", f) for f in
                  ("fbkmodule.c", "store.c", "map.c", "view.c", "memoize.c")]
MODULE_HEADERS = [os.path.join("src", "fbkpy.h")]

def have_rados():
    """librados's header and library, where CMake's find_path/find_library look."""
    header = any(os.path.exists(os.path.join(d, "rados", "librados.h"))
                 for d in ("/usr/include", "/usr/local/include"))
    return header and ctypes.util.find_library("rados") is not None


common = dict(
    define_macros=[("_GNU_SOURCE", None)],
    extra_compile_args=["-std=c11", "-fvisibility=hidden"],
)
if os.path.exists(os.path.join(ROOT, "src", "map.c")) and os.path.exists(os.path.join(ROOT, "include", "fbk.h")):
    # The backends as CMake builds them: backends/common's helpers for all,
    # rados: only when librados (librados-dev) is there.
    with_rados = have_rados()
    lib_sources = sorted(glob.glob(os.path.join(ROOT, "src", "*.c")) +
                         [p for p in glob.glob(os.path.join(ROOT, "backends", "*", "*.c"))
                          if with_rados or os.path.basename(os.path.dirname(p)) != "rados"])
    ext = Extension(
        "fbk._fbk",
        depends=MODULE_HEADERS,
        sources=MODULE_SOURCES + [rel(p) for p in lib_sources],
        include_dirs=[rel(os.path.join(ROOT, d)) for d in ("include", "src", "backends/common")],
        libraries=["lmdb", "xxhash", "uuid", "pthread"] + (["rados"] if with_rados else []),
        define_macros=common["define_macros"] + ([("FBK_WITH_RADOS", "1")] if with_rados else []),
        extra_compile_args=common["extra_compile_args"],
    )
else:
    cflags = pkg_config("--cflags", "fbk")
    libs = [("-l:libfbk.a" if a == "-lfbk" else a) for a in pkg_config("--libs", "--static", "fbk")]
    ext = Extension(
        "fbk._fbk",
        depends=MODULE_HEADERS,
        sources=MODULE_SOURCES,
        extra_compile_args=common["extra_compile_args"] + cflags,
        extra_link_args=libs + ["-lxxhash", "-Wl,--exclude-libs,ALL"],
        define_macros=common["define_macros"],
    )

setup(ext_modules=[ext])
