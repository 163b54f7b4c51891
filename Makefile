# Thin wrapper over CMake so that each everyday job is one command.
#   make demo   install what is missing, build, run the main job (lmdb: in ./fbk-demo-store)
#   make test   install what is missing, build, run the whole test suite
#   make ci     what .ci/run does: test + ASan/UBSan suite + TSan concurrency suite + fuzz replay
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# Our builds treat warnings as errors (a user's plain cmake build does not).
WERROR = -DFBK_WERROR=ON

.PHONY: deps build demo test test-rados test-asan test-tsan install-check release-check fuzz-replay bench ci clean

deps:
	@tools/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(WERROR) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/examples/fbk_demo lmdb:./fbk-demo-store

# Each suite's files (tests/tmp of its build directory: several GiB, the
# big-object and python suites) are removed after it ran, passed or not, so
# that the three suites of a CI run never hold the disk at once.
CLEAN_TMP = rc=$$?; rm -rf $(1)/tests/tmp; exit $$rc

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS); $(call CLEAN_TMP,$(BUILD))

# The rados: suites alone (label "rados": CTest starts a throw-away Ceph
# cluster first, tests/cluster/ceph-up.sh, and stops it after).  `make test`
# runs them too; they skip when the Ceph daemons are not installed.
test-rados: build
	ctest --test-dir $(BUILD) --output-on-failure -L rados

test-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug $(WERROR) -DFBK_SANITIZE=address,undefined -DFBK_BUILD_BENCH=OFF >/dev/null
	cmake --build build-asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir build-asan --output-on-failure -j $(JOBS); $(call CLEAN_TMP,build-asan)

# ThreadSanitizer needs a fixed address-space layout on kernels with high
# mmap randomisation: run under setarch -R when it is available.  The
# lock-free item suite and the stress suite then run 6 times more (each run
# interleaves differently; about 40 s).
test-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug $(WERROR) -DFBK_SANITIZE=thread -DFBK_BUILD_BENCH=OFF -DFBK_BUILD_FUZZ=OFF >/dev/null
	cmake --build build-tsan -j $(JOBS)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  $$(command -v setarch >/dev/null && echo "setarch $$(uname -m) -R") \
	  sh -c 'ctest --test-dir build-tsan --output-on-failure -L concurrency && \
	    ctest --test-dir build-tsan --output-on-failure -R "^(test_concurrency_item|test_stress)$$" \
	      --repeat until-fail:6'; $(call CLEAN_TMP,build-tsan)

# cmake --install, then a user's program built against the installed copy
# three ways, each run: find_package(fbk) (fbk::fbk = libfbk.so, and
# fbk::fbk_static), `pkg-config --static` linking libfbk.a (-l:libfbk.a: the
# archive even where libfbk.so lies beside it) with the dependencies the .pc
# file lists, and the plain `pkg-config --cflags --libs fbk` (libfbk.so,
# found at run time through LD_LIBRARY_PATH).  Then: libfbk.so exports no
# internal fbk__ symbol.
STAGE = $(CURDIR)/$(BUILD)/stage
install-check: build
	rm -rf $(BUILD)/stage $(BUILD)/consumer
	cmake --install $(BUILD) --prefix $(STAGE) >/dev/null
	cmake -S tests/install_consumer -B $(BUILD)/consumer -DCMAKE_PREFIX_PATH=$(STAGE) >/dev/null
	cmake --build $(BUILD)/consumer >/dev/null
	$(BUILD)/consumer/consumer
	$(BUILD)/consumer/consumer_static
	PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig sh -ec '\
	  cc -o $(BUILD)/consumer/consumer-pc-static tests/install_consumer/consumer.c \
	    $$(pkg-config --cflags --libs --static fbk | sed "s/-lfbk\b/-l:libfbk.a/"); \
	  cc -o $(BUILD)/consumer/consumer-pc tests/install_consumer/consumer.c $$(pkg-config --cflags --libs fbk)'
	$(BUILD)/consumer/consumer-pc-static
	LD_LIBRARY_PATH=$(STAGE)/lib $(BUILD)/consumer/consumer-pc
	@! nm -D --defined-only $(STAGE)/lib/libfbk.so | grep -w 'fbk__[a-z_0-9]*' \
	  || { echo "install-check: libfbk.so exports internal fbk__ symbols" >&2; exit 1; }
	# the Python package as pip builds it from the source tree (docs/python.md)
	rm -rf $(BUILD)/pip-venv
	/usr/bin/python3 -m venv --system-site-packages $(BUILD)/pip-venv
	$(BUILD)/pip-venv/bin/pip install -q --no-index --no-build-isolation ./python
	rm -rf python/build python/fbk.egg-info
	cd $(BUILD) && pip-venv/bin/python -c 'import fbk, tempfile; d = tempfile.mkdtemp(); \
	  s = fbk.Store("lmdb:" + d); m = s.map("m"); m[b"k"] = b"v"; assert m[b"k"] == b"v"; \
	  s.close(); print("install-check: the pip-installed fbk works")'

# Everything built as a user's -DCMAKE_BUILD_TYPE=Release (-O3) build, with
# warnings as errors: -O3 inlines more and so warns where -O2 does not.
release-check: deps
	cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release $(WERROR) >/dev/null
	cmake --build build-release -j $(JOBS)

fuzz-replay: build
	ctest --test-dir $(BUILD) --output-on-failure -L fuzz

bench: build
	$(BUILD)/bench/bench_core

ci: test install-check release-check test-asan test-tsan

clean:
	rm -rf build build-asan build-tsan build-release fbk-demo-store
