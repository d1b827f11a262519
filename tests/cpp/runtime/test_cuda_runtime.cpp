// The runtime's GPU path (layout.device >= 0): store from a paged cache in
// GPU memory, load into another, and compare with the CPU path byte for byte,
// records included; then the same load layer by layer on a stream of its
// own (PendingLoad), and a store in two steps (PendingStore). Needs a CUDA device: exits 77 (CTest: skipped) without one.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <numeric>
#include <vector>

#include "cache_runtime.h"
#include "token_calls.h"
#include "check.h"
#include "device_memory.h"
#include "kv_test_cache.h"

using namespace lmcache;
using namespace lmcache::testing;

int main() {
  if (!CudaDeviceAvailable()) {
    std::puts("test_cuda_runtime: no CUDA device, skipped");
    return 77;
  }
  for (const char* order : {"PBTHD", "BPHTD", "PLSHD"}) {
    CacheDims d;
    d.layers = 4;
    d.heads = 4;
    d.head_dim = 64;
    d.block_size = 16;
    d.blocks = 32;
    TestCache host(order, d), back(order, d);
    host.FillRandom(1);
    const KVLayout hl = host.Layout();
    // Mirror the cache into GPU memory with the same offsets.
    const bool shared = std::string(order).find('L') != std::string::npos;
    const size_t nbuf = shared ? 1 : d.layers;
    size_t per = DTypeSize(d.dtype);
    for (char c : std::string(order)) {
      const uint64_t s = c == 'L' ? d.layers : c == 'P' ? d.planes : c == 'B' ? d.blocks : c == 'T' ? d.block_size
                         : c == 'S' ? uint64_t(d.blocks) * d.block_size : c == 'H' ? d.heads : d.head_dim;
      per *= s;
    }
    std::vector<void*> dev(nbuf), dev2(nbuf);
    KVLayout gl = hl, gl2 = hl;
    for (size_t b = 0; b < nbuf; ++b) {
      CHECK(cudaMalloc(&dev[b], per) == cudaSuccess && cudaMalloc(&dev2[b], per) == cudaSuccess);
      CHECK(cudaMemset(dev2[b], 0, per) == cudaSuccess);
      CHECK(cudaMemcpy(dev[b], reinterpret_cast<void*>(hl.layer_base[shared ? 0 : b]), per, cudaMemcpyHostToDevice) ==
            cudaSuccess);
    }
    for (uint32_t l = 0; l < d.layers; ++l) {
      const uint64_t off = shared ? hl.layer_base[l] - hl.layer_base[0] : 0;
      gl.layer_base[l] = reinterpret_cast<uint64_t>(dev[shared ? 0 : l]) + off;
      gl2.layer_base[l] = reinterpret_cast<uint64_t>(dev2[shared ? 0 : l]) + off;
    }
    gl.device = gl2.device = 0;

    RuntimeOptions o;
    o.chunk_size = 64;
    o.l1_capacity_bytes = 64 << 20;
    std::unique_ptr<CacheRuntime> gpu, cpu;
    CHECK_OK(CacheRuntime::Create(o, &gpu));
    CHECK_OK(CacheRuntime::Create(o, &cpu));
    CHECK_OK(gpu->RegisterLayout(gl));
    CHECK_OK(cpu->RegisterLayout(hl));
    const size_t n = 256;
    std::vector<uint32_t> tokens(n);
    std::iota(tokens.begin(), tokens.end(), 7);
    std::vector<uint32_t> blocks = {3, 9, 1, 30, 12, 5, 22, 17, 0, 8, 11, 2, 29, 4, 6, 10};
    const auto slots = SlotsFromBlocks(blocks, d.block_size, n);
    size_t out = 0;
    CHECK_OK(StoreTokens(*gpu, tokens.data(), n, gl, slots.data(), n, &out));
    CHECK(out == n);
    CHECK_OK(StoreTokens(*cpu, tokens.data(), n, hl, slots.data(), n, &out));
    // Same records (header with checksum, payload) from both paths.
    std::vector<ChunkKey> keys;
    CHECK_OK(gpu->ComputeKeys(tokens.data(), n, &keys));
    std::vector<uint8_t> a(gpu->RecordBytes()), b(cpu->RecordBytes());
    for (const ChunkKey& k : keys) {
      size_t ga = 0, gb = 0;
      CHECK_OK(gpu->ExportRecord(k, a.data(), a.size(), &ga));
      CHECK_OK(cpu->ExportRecord(k, b.data(), b.size(), &gb));
      CHECK(ga == gb && a == b);
    }
    // The same store in two steps on a stream of its own (PendingStore): the
    // chunks appear only after Finish, with the same records.
    {
      std::unique_ptr<CacheRuntime> gpu2;
      o.verify_l1_checksums = true;  // checksums taken by Finish, after the kernels
      CHECK_OK(CacheRuntime::Create(o, &gpu2));
      o.verify_l1_checksums = false;
      CHECK_OK(gpu2->RegisterLayout(gl));
      cudaStream_t side;
      CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking) == cudaSuccess);
      std::unique_ptr<PendingStore> store;
      CHECK_OK(BeginStoreTokens(*gpu2, tokens.data(), n, gl, slots.data(), n, reinterpret_cast<uint64_t>(side), &store));
      CHECK(store->tokens() == n);
      size_t hit = 1;
      CHECK_OK(LookupTokens(*gpu2, tokens.data(), n, &hit));
      CHECK(hit == 0);
      CHECK_OK(store->Finish());
      CHECK_OK(LookupTokens(*gpu2, tokens.data(), n, &hit));
      CHECK(hit == n);
      for (const ChunkKey& k : keys) {
        size_t ga = 0, gb = 0;
        CHECK_OK(gpu2->ExportRecord(k, a.data(), a.size(), &ga));
        CHECK_OK(cpu->ExportRecord(k, b.data(), b.size(), &gb));
        CHECK(ga == gb && a == b);
      }
      cudaStreamDestroy(side);
    }
    // Load into the zeroed GPU cache at other blocks, all but the last token.
    std::vector<uint32_t> other(blocks.rbegin(), blocks.rend());
    const auto slots2 = SlotsFromBlocks(other, d.block_size, n);
    CHECK_OK(LoadTokens(*gpu, tokens.data(), n, gl2, slots2.data(), n - 1, &out));
    CHECK(out == n - 1);
    back.Zero();
    const KVLayout bl = back.Layout();
    CHECK_OK(LoadTokens(*cpu, tokens.data(), n, bl, slots2.data(), n - 1, &out));
    for (size_t b2 = 0; b2 < nbuf; ++b2) {
      std::vector<uint8_t> got(per);
      CHECK(cudaMemcpy(got.data(), dev2[b2], per, cudaMemcpyDeviceToHost) == cudaSuccess);
      CHECK(std::memcmp(got.data(), reinterpret_cast<void*>(bl.layer_base[shared ? 0 : b2]), per) == 0);
    }
    // The same load layer by layer on a stream of its own: after layer 0 is
    // enqueued and the stream drained, layer 0 is there and layer 1 is not.
    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    for (size_t b2 = 0; b2 < nbuf; ++b2) CHECK(cudaMemset(dev2[b2], 0, per) == cudaSuccess);
    std::unique_ptr<PendingLoad> load;
    CHECK_OK(BeginLoadTokens(*gpu, tokens.data(), n, gl2, slots2.data(), n - 1, reinterpret_cast<uint64_t>(stream), &load));
    CHECK(load->tokens() == n - 1);
    CHECK_OK(load->LoadLayers(1));
    CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
    TestCache partial(order, d);
    const KVLayout pl = partial.Layout();
    for (size_t b2 = 0; b2 < nbuf; ++b2) {
      CHECK(cudaMemcpy(reinterpret_cast<void*>(pl.layer_base[shared ? 0 : b2]), dev2[b2], per,
                       cudaMemcpyDeviceToHost) == cudaSuccess);
    }
    std::vector<uint8_t> zero(partial.vec_bytes(), 0);
    for (size_t t = 0; t + 1 < n; ++t) {
      CHECK(std::memcmp(partial.Vec(0, 0, slots2[t], 0), back.Vec(0, 0, slots2[t], 0), partial.vec_bytes()) == 0);
      CHECK(std::memcmp(partial.Vec(1, 0, slots2[t], 0), zero.data(), zero.size()) == 0);
    }
    CHECK_OK(load->LoadLayers(d.layers));
    CHECK_OK(load->Finish());
    for (size_t b2 = 0; b2 < nbuf; ++b2) {
      std::vector<uint8_t> got(per);
      CHECK(cudaMemcpy(got.data(), dev2[b2], per, cudaMemcpyDeviceToHost) == cudaSuccess);
      CHECK(std::memcmp(got.data(), reinterpret_cast<void*>(bl.layer_base[shared ? 0 : b2]), per) == 0);
    }
    cudaStreamDestroy(stream);
    for (size_t b3 = 0; b3 < nbuf; ++b3) {
      cudaFree(dev[b3]);
      cudaFree(dev2[b3]);
    }
    std::printf("  ok: %s through the GPU path, whole and layer by layer\n", order);
  }
  std::puts("test_cuda_runtime: ok");
  return 0;
}
