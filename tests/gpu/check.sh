#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and nvcc (no package registry
# needed): builds the CUDA kernels with the CPU copy engine, checks them
# bit-exact for every layout and dtype, prints D2H/H2D bandwidth next to a
# plain cudaMemcpyAsync and the layer-wise overlap. Then, if libxxhash is
# there, builds the runtime with CUDA and runs CTest, whose test_cuda_runtime
# stores and loads through the runtime's GPU path and compares with the CPU path.
# Expected to take well under 8 minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/../.."
arch=${CUDA_ARCH:-90}
cmake -S tests/gpu -B build/gpu-check -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" >/dev/null
cmake --build build/gpu-check -j "$(nproc)"
./build/gpu-check/gpu_check
if pkg-config --exists libxxhash 2>/dev/null; then
  echo "== runtime build with CUDA, CTest (test_cuda_runtime runs on the GPU)"
  cmake -S . -B build/gpu-full -DLMCACHE_CUDA=ON -DLMCACHE_BUILD_TESTS=ON -DLMCACHE_BUILD_PYTHON=OFF >/dev/null
  cmake --build build/gpu-full -j "$(nproc)" && ctest --test-dir build/gpu-full --output-on-failure
else
  echo "(runtime build skipped: libxxhash is not installed here)"
fi
