#!/usr/bin/env bash
# Bounded fuzzing of every parser that reads bytes from outside the process:
# the native record parser (disk and wire imports) and the native remote
# client's RESP and wire decoders (libFuzzer), the Python remote tier's wire
# decoder, the vLLM lookup socket's frames and the config loader (atheris). Each runs FUZZ_SECONDS (default 60) from the seeds in
# tests/fuzz/corpus/<target>; new inputs go to a scratch copy, never into the
# repository. A crash leaves its input in build/fuzz/crashes and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
root=$PWD
out=$root/build/fuzz
mkdir -p "$out/crashes"

echo "== libFuzzer: native record parser, native remote client (${seconds}s each)"
CC=clang CXX=clang++ cmake -S . -B "$out/native" -G Ninja -DLMCACHE_FUZZ=ON -DLMCACHE_BUILD_PYTHON=OFF \
  -DLMCACHE_BUILD_TESTS=OFF -DLMCACHE_CUDA=OFF -DLMCACHE_URING=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$out/native" -j "$(nproc)" --target fuzz_record fuzz_remote
run_fuzzer() {  # name, command...
  local name=$1; shift
  local scratch="$out/corpus-$name"
  rm -rf "$scratch" && mkdir -p "$scratch"
  rm -f "$out/crashes/$name-"*  # a crash of an earlier run is judged again by this one
  "$@" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$out/crashes/$name-" \
    "$scratch" "$root/tests/fuzz/corpus/$name" 2>&1 |
    grep -a -A3 -E "^(stat::number_of_executed_units|Done|==[0-9]+==ERROR)|Uncaught" || true
  # Crashes, time-outs, memory blow-ups and leaks fail the run; a merely slow
  # unit (libFuzzer's slow-unit-*, e.g. a first import on a busy machine) does not.
  if ls "$out/crashes/$name-"{crash,timeout,oom,leak}-* >/dev/null 2>&1; then
    echo "fuzz: $name found a crash: $(ls "$out/crashes/$name-"{crash,timeout,oom,leak}-* 2>/dev/null)"
    return 1
  fi
}
status=0
run_fuzzer record "$out/native/tests/fuzz/fuzz_record" || status=1
run_fuzzer remote "$out/native/tests/fuzz/fuzz_remote" || status=1
# The Python targets import the installed lmcache (run from tests/, not the source tree).
for name in wire lookup_frames config; do
  echo "== atheris: $name (${seconds}s)"
  (cd tests && run_fuzzer "$name" python3 "fuzz/fuzz_$name.py") || status=1
done
exit $status
