# Thin wrapper over CMake so that each everyday job is one command.
#   make demo   install what is missing, build, run the main job (lmdb: in ./fbk-demo-store)
#   make test   install what is missing, build, run the whole test suite
#   make ci     what .ci/run does: test + ASan/UBSan suite + TSan concurrency suite + fuzz replay
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: deps build demo test test-asan test-tsan install-check fuzz-replay bench ci clean

deps:
	@tools/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/examples/fbk_demo lmdb:./fbk-demo-store

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DFBK_SANITIZE=address,undefined -DFBK_BUILD_BENCH=OFF >/dev/null
	cmake --build build-asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir build-asan --output-on-failure -j $(JOBS)

# ThreadSanitizer needs a fixed address-space layout on kernels with high
# mmap randomisation: run under setarch -R when it is available.
test-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DFBK_SANITIZE=thread -DFBK_BUILD_BENCH=OFF -DFBK_BUILD_FUZZ=OFF >/dev/null
	cmake --build build-tsan -j $(JOBS)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  $$(command -v setarch >/dev/null && echo "setarch $$(uname -m) -R") \
	  ctest --test-dir build-tsan --output-on-failure -L concurrency

# cmake --install, then a user's project built with find_package(fbk) and with pkg-config.
install-check: build
	rm -rf $(BUILD)/stage $(BUILD)/consumer
	cmake --install $(BUILD) --prefix $(CURDIR)/$(BUILD)/stage >/dev/null
	cmake -S tests/install_consumer -B $(BUILD)/consumer -DCMAKE_PREFIX_PATH=$(CURDIR)/$(BUILD)/stage >/dev/null
	cmake --build $(BUILD)/consumer >/dev/null
	$(BUILD)/consumer/consumer
	PKG_CONFIG_PATH=$(CURDIR)/$(BUILD)/stage/lib/pkgconfig sh -c \
	  'cc -o $(BUILD)/consumer/consumer-pc tests/install_consumer/consumer.c $$(pkg-config --cflags --libs --static fbk)'
	$(BUILD)/consumer/consumer-pc

fuzz-replay: build
	ctest --test-dir $(BUILD) --output-on-failure -L fuzz

bench: build
	$(BUILD)/bench/bench_core

ci: test install-check test-asan test-tsan

clean:
	rm -rf build build-asan build-tsan fbk-demo-store
