#!/usr/bin/env bash
# Every test: set-up, C++ unit tests (release build with the CUDA path linked
# when the toolkit is present, and an ASan+UBSan build), then pytest.
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

echo "== Python and integration tests"
# Run from tests/ so that `import lmcache` is the installed package, not the source tree.
cd tests
python3 -m pytest python -q -p no:cacheprovider --ignore=python/sglang "$@"

echo "== SGLang backend tests (in SGLang's own virtual environment)"
SGLANG_VENV=${LMCACHE_SGLANG_VENV:-/opt/sglang-venv}
"$SGLANG_VENV/bin/python" -m pytest python/sglang -q -p no:cacheprovider "$@"
