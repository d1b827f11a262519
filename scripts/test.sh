#!/usr/bin/env bash
# Every test: set-up, C++ unit tests (release build with the CUDA path linked
# when the toolkit is present, an ASan+UBSan build and a ThreadSanitizer
# build), bounded fuzzing of every parser of outside bytes, then pytest
# (which includes a soak of a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

jobs=$(nproc)
echo "== C++ tests (release; CUDA path linked when the toolkit is found)"
cmake -S . -B build/ctest -G Ninja -DLMCACHE_BUILD_TESTS=ON -DLMCACHE_BUILD_PYTHON=OFF >/dev/null
cmake --build build/ctest -j "$jobs"
ctest --test-dir build/ctest --output-on-failure -j "$jobs"

echo "== C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (built without CUDA and liburing: the fallbacks)"
cmake -S . -B build/asan -G Ninja -DLMCACHE_BUILD_TESTS=ON -DLMCACHE_BUILD_PYTHON=OFF -DLMCACHE_CUDA=OFF -DLMCACHE_URING=OFF \
  -DLMCACHE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build/asan --output-on-failure -j "$jobs"

echo "== C++ tests under ThreadSanitizer"
cmake -S . -B build/tsan -G Ninja -DLMCACHE_BUILD_TESTS=ON -DLMCACHE_BUILD_PYTHON=OFF -DLMCACHE_CUDA=OFF \
  -DLMCACHE_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/tsan -j "$jobs"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --test-dir build/tsan --output-on-failure -j 1

echo "== Fuzzing, bounded (FUZZ_SECONDS each, default 60)"
bash scripts/fuzz.sh

echo "== Python and integration tests"
# Run from tests/ so that `import lmcache` is the installed package, not the source tree.
cd tests
python3 -m pytest python -q -p no:cacheprovider --ignore=python/integrations/sglang "$@"

echo "== SGLang backend tests (in SGLang's own virtual environment)"
SGLANG_VENV=${LMCACHE_SGLANG_VENV:-/opt/sglang-venv}
"$SGLANG_VENV/bin/python" -m pytest python/integrations/sglang -q -p no:cacheprovider "$@"
