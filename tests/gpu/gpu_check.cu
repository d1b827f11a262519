// GPU check: (1) the CUDA gather/scatter kernels are bit-exact against the CPU
// copy engine for every layout and element size; (2) D2H/H2D bandwidth for
// 256-token Llama-3.1-8B-shaped chunks (32 MiB) next to a plain
// cudaMemcpyAsync of the same bytes, writing straight into mapped pinned
// memory and staging on the device; (3) overlap of a layer-wise load with
// compute, and what a store costs the compute stream. Exit code 0 = all
// correctness checks passed (bandwidth and overlap are reported, not judged).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "copy_engine.h"
#include "kv_test_cache.h"
#include "kv_transfer.h"

using namespace lmcache;
using namespace lmcache::testing;

#define CUDA_OK(x)                                                                              \
  do {                                                                                          \
    cudaError_t _cuda_err = (x);                                                                        \
    if (_cuda_err != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(_cuda_err));  \
      std::exit(2);                                                                             \
    }                                                                                           \
  } while (0)

namespace {

struct DeviceCache {  // a TestCache mirrored in GPU memory
  std::vector<uint8_t*> bufs;
  uint64_t* layer_base = nullptr;
  cuda::DeviceLayout layout{};
};

DeviceCache Upload(TestCache& c, const KVLayout& host_layout, size_t bytes_per_buffer, size_t num_buffers) {
  DeviceCache d;
  std::vector<uint64_t> bases(host_layout.num_layers);
  for (size_t b = 0; b < num_buffers; ++b) {
    uint8_t* p;
    CUDA_OK(cudaMalloc(&p, bytes_per_buffer));
    d.bufs.push_back(p);
  }
  // Same offsets as the host buffers, rebased onto the device buffers.
  const uint64_t host0 = host_layout.layer_base[0];
  for (uint32_t l = 0; l < host_layout.num_layers; ++l) {
    const uint64_t off = num_buffers == 1 ? host_layout.layer_base[l] - host0 : 0;
    bases[l] = reinterpret_cast<uint64_t>(d.bufs[num_buffers == 1 ? 0 : l]) + off;
  }
  CUDA_OK(cudaMalloc(&d.layer_base, bases.size() * 8));
  CUDA_OK(cudaMemcpy(d.layer_base, bases.data(), bases.size() * 8, cudaMemcpyHostToDevice));
  const KVLayout& h = host_layout;
  d.layout = {h.num_layers, h.num_planes, h.num_heads, h.head_dim, h.elem_size(), h.block_size, h.stride_plane,
              h.stride_block, h.stride_token, h.stride_head, h.opaque_block_bytes, d.layer_base};
  return d;
}

int failures = 0;

void CheckLayout(const char* name, const std::string& order, DType dtype, bool opaque) {
  CacheDims dims;
  dims.layers = 3;
  dims.planes = opaque ? 1 : (order.find('P') != std::string::npos ? 2 : 1);
  dims.heads = (dims.planes == 1 && !opaque) ? 1 : 4;  // MLA: one latent "head"
  dims.head_dim = opaque ? 2 * 32 : 32;
  dims.block_size = 16;
  dims.blocks = 24;
  dims.dtype = dtype;
  TestCache src(order, dims), cpu_dst(order, dims);
  src.FillRandom(7);
  KVLayout hl = src.Layout();
  if (opaque) {  // vLLM CPU-style: (blocks, heads, block_size, 2*dim), moved whole
    hl.num_planes = 2;
    hl.head_dim = 32;
    hl.opaque_block_bytes = uint64_t(2) * dims.block_size * dims.heads * 32 * DTypeSize(dtype);
    hl.stride_plane = hl.stride_head = hl.stride_token = 0;
  }
  const uint32_t chunk = 32, chunks = 3;
  std::vector<uint32_t> blocks(dims.blocks);
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin(), blocks.end(), std::mt19937(3));
  const auto slots = SlotsFromBlocks(blocks, dims.block_size, chunk * chunks);
  const uint64_t payload_bytes = uint64_t(hl.num_layers) * hl.num_planes * chunk * hl.token_bytes();

  // CPU reference.
  ThreadPool pool(2);
  CopyEngine cpu(&pool);
  std::vector<std::vector<uint8_t>> ref(chunks, std::vector<uint8_t>(payload_bytes));
  std::vector<ChunkTransfer> tr(chunks);
  for (uint32_t c = 0; c < chunks; ++c) tr[c] = {ref[c].data(), slots.data() + c * chunk, chunk, chunk, nullptr};
  cpu.Gather(hl, tr);

  // GPU: device cache, payloads in device memory.
  const size_t nbuf = order.find('L') != std::string::npos ? 1 : dims.layers;
  // Buffer sizes: the TestCache constructor's formula.
  size_t bytes = DTypeSize(dtype);
  for (char ch : order) {
    const std::map<char, uint64_t> size = {{'L', dims.layers}, {'P', dims.planes}, {'B', dims.blocks},
                                           {'T', dims.block_size}, {'S', uint64_t(dims.blocks) * dims.block_size},
                                           {'H', dims.heads}, {'D', dims.head_dim}};
    if (ch != 'L' || nbuf == 1) bytes *= size.at(ch);
  }
  DeviceCache dev = Upload(src, hl, bytes, nbuf);
  for (size_t b = 0; b < nbuf; ++b) {
    CUDA_OK(cudaMemcpy(dev.bufs[b], reinterpret_cast<void*>(nbuf == 1 ? hl.layer_base[0] : hl.layer_base[b]), bytes,
                       cudaMemcpyHostToDevice));
  }
  std::vector<uint8_t*> payload_ptrs(chunks);
  for (auto& p : payload_ptrs) CUDA_OK(cudaMalloc(&p, payload_bytes));
  uint8_t** d_payloads;
  int64_t* d_slots;
  uint32_t* d_n;
  std::vector<uint32_t> ns(chunks, chunk);
  CUDA_OK(cudaMalloc(&d_payloads, chunks * sizeof(void*)));
  CUDA_OK(cudaMalloc(&d_slots, slots.size() * 8));
  CUDA_OK(cudaMalloc(&d_n, chunks * 4));
  CUDA_OK(cudaMemcpy(d_payloads, payload_ptrs.data(), chunks * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_slots, slots.data(), slots.size() * 8, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_n, ns.data(), chunks * 4, cudaMemcpyHostToDevice));
  cuda::TransferBatch batch{d_payloads, d_slots, d_n, chunks, chunk, 0, hl.num_layers};
  CUDA_OK(cuda::Gather(dev.layout, batch, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  bool ok = true;
  std::vector<uint8_t> got(payload_bytes);
  for (uint32_t c = 0; c < chunks; ++c) {
    CUDA_OK(cudaMemcpy(got.data(), payload_ptrs[c], payload_bytes, cudaMemcpyDeviceToHost));
    ok = ok && got == ref[c];
  }
  // Scatter the reference payloads into a zeroed device cache, layer by layer;
  // compare with the CPU scatter into a zeroed host cache.
  cpu_dst.Zero();
  KVLayout dl = cpu_dst.Layout();
  if (opaque) {
    dl.num_planes = 2;
    dl.head_dim = 32;
    dl.opaque_block_bytes = hl.opaque_block_bytes;
    dl.stride_plane = dl.stride_head = dl.stride_token = 0;
  }
  cpu.Scatter(dl, tr);
  for (size_t b = 0; b < nbuf; ++b) CUDA_OK(cudaMemset(dev.bufs[b], 0, bytes));
  for (uint32_t c = 0; c < chunks; ++c) {
    CUDA_OK(cudaMemcpy(payload_ptrs[c], ref[c].data(), payload_bytes, cudaMemcpyHostToDevice));
  }
  for (uint32_t l = 0; l < hl.num_layers; ++l) {
    cuda::TransferBatch one = batch;
    one.first_layer = l;
    one.layer_count = 1;
    CUDA_OK(cuda::Scatter(dev.layout, one, nullptr));
  }
  CUDA_OK(cudaDeviceSynchronize());
  for (size_t b = 0; b < nbuf; ++b) {
    std::vector<uint8_t> host(bytes);
    CUDA_OK(cudaMemcpy(host.data(), dev.bufs[b], bytes, cudaMemcpyDeviceToHost));
    const uint8_t* want = reinterpret_cast<const uint8_t*>(nbuf == 1 ? dl.layer_base[0] : dl.layer_base[b]);
    ok = ok && std::memcmp(host.data(), want, bytes) == 0;
  }
  std::printf("  %-6s %-46s %-8s\n", ok ? "ok" : "FAILED", name, DTypeName(dtype));
  failures += !ok;
  for (auto p : payload_ptrs) cudaFree(p);
  for (auto p : dev.bufs) cudaFree(p);
  cudaFree(dev.layer_base);
  cudaFree(d_payloads);
  cudaFree(d_slots);
  cudaFree(d_n);
}

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

__global__ void Busy(float* x, int iters) {  // stands in for one layer's compute
  float v = x[threadIdx.x];
  for (int i = 0; i < iters; ++i) v = v * 1.0000001f + 0.5f;
  x[threadIdx.x] = v;
}

void Bandwidth() {
  // Llama-3.1-8B shape: 32 layers, 8 KV heads, head dim 128, bf16, vLLM flash-attention layout.
  const uint32_t layers = 32, heads = 8, dim = 128, bs = 16, chunk = 256, chunks = 8;
  const uint32_t blocks = chunks * chunk / bs;
  const uint64_t token_bytes = uint64_t(heads) * dim * 2, layer_bytes = 2ull * blocks * bs * token_bytes;
  const uint64_t payload_bytes = uint64_t(layers) * 2 * chunk * token_bytes;  // 32 MiB
  std::vector<uint8_t*> layer_ptrs(layers);
  std::vector<uint64_t> bases(layers);
  for (uint32_t l = 0; l < layers; ++l) {
    CUDA_OK(cudaMalloc(&layer_ptrs[l], layer_bytes));
    CUDA_OK(cudaMemset(layer_ptrs[l], l, layer_bytes));
    bases[l] = reinterpret_cast<uint64_t>(layer_ptrs[l]);
  }
  uint64_t* d_bases;
  CUDA_OK(cudaMalloc(&d_bases, layers * 8));
  CUDA_OK(cudaMemcpy(d_bases, bases.data(), layers * 8, cudaMemcpyHostToDevice));
  cuda::DeviceLayout L{layers, 2, heads, dim, 2, bs, int64_t(blocks) * bs * token_bytes, int64_t(bs) * token_bytes,
                       int64_t(token_bytes), int64_t(dim) * 2, 0, d_bases};
  std::vector<uint32_t> order(blocks);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(1));
  const auto slots = SlotsFromBlocks(order, bs, chunks * chunk);
  int64_t* d_slots;
  uint32_t* d_n;
  std::vector<uint32_t> ns(chunks, chunk);
  CUDA_OK(cudaMalloc(&d_slots, slots.size() * 8));
  CUDA_OK(cudaMemcpy(d_slots, slots.data(), slots.size() * 8, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMalloc(&d_n, chunks * 4));
  CUDA_OK(cudaMemcpy(d_n, ns.data(), chunks * 4, cudaMemcpyHostToDevice));

  uint8_t *pinned, *mapped, *staging;
  CUDA_OK(cudaHostAlloc(&pinned, chunks * payload_bytes, cudaHostAllocMapped));
  CUDA_OK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&mapped), pinned, 0));
  CUDA_OK(cudaMalloc(&staging, chunks * payload_bytes));
  std::vector<uint8_t*> to_mapped(chunks), to_staging(chunks);
  for (uint32_t c = 0; c < chunks; ++c) {
    to_mapped[c] = mapped + c * payload_bytes;
    to_staging[c] = staging + c * payload_bytes;
  }
  uint8_t **d_mapped, **d_staging;
  CUDA_OK(cudaMalloc(&d_mapped, chunks * sizeof(void*)));
  CUDA_OK(cudaMalloc(&d_staging, chunks * sizeof(void*)));
  CUDA_OK(cudaMemcpy(d_mapped, to_mapped.data(), chunks * sizeof(void*), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_staging, to_staging.data(), chunks * sizeof(void*), cudaMemcpyHostToDevice));
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  const double gb = double(chunks) * payload_bytes / 1e9;
  auto time = [&](auto&& fn) {
    std::vector<float> ms;
    for (int r = 0; r < 12; ++r) {
      CUDA_OK(cudaEventRecord(a, s));
      fn();
      CUDA_OK(cudaEventRecord(b, s));
      CUDA_OK(cudaEventSynchronize(b));
      float t;
      CUDA_OK(cudaEventElapsedTime(&t, a, b));
      if (r >= 2) ms.push_back(t);
    }
    return gb / (Median(ms) / 1e3);
  };
  cuda::TransferBatch bm{d_mapped, d_slots, d_n, chunks, chunk, 0, layers};
  cuda::TransferBatch bstg{d_staging, d_slots, d_n, chunks, chunk, 0, layers};
  const double memcpy_d2h = time([&] { CUDA_OK(cudaMemcpyAsync(pinned, staging, chunks * payload_bytes, cudaMemcpyDeviceToHost, s)); });
  const double memcpy_h2d = time([&] { CUDA_OK(cudaMemcpyAsync(staging, pinned, chunks * payload_bytes, cudaMemcpyHostToDevice, s)); });
  const double d2h_mapped = time([&] { CUDA_OK(cuda::Gather(L, bm, s)); });
  const double d2h_staged = time([&] {
    CUDA_OK(cuda::Gather(L, bstg, s));
    CUDA_OK(cudaMemcpyAsync(pinned, staging, chunks * payload_bytes, cudaMemcpyDeviceToHost, s));
  });
  const double h2d_mapped = time([&] { CUDA_OK(cuda::Scatter(L, bm, s)); });
  const double h2d_staged = time([&] {
    CUDA_OK(cudaMemcpyAsync(staging, pinned, chunks * payload_bytes, cudaMemcpyHostToDevice, s));
    CUDA_OK(cuda::Scatter(L, bstg, s));
  });
  std::printf("\nbandwidth, %u chunks of 32 MiB (Llama-3.1-8B shape, scattered blocks), GB/s:\n", chunks);
  std::printf("  %-34s %8s %8s\n", "", "D2H", "H2D");
  std::printf("  %-34s %8.1f %8.1f\n", "cudaMemcpyAsync (pinned, baseline)", memcpy_d2h, memcpy_h2d);
  std::printf("  %-34s %8.1f %8.1f  (%.2fx, %.2fx)\n", "kernel on mapped pinned memory", d2h_mapped, h2d_mapped,
              d2h_mapped / memcpy_d2h, h2d_mapped / memcpy_h2d);
  std::printf("  %-34s %8.1f %8.1f  (%.2fx, %.2fx)\n", "kernel + device staging + memcpy", d2h_staged, h2d_staged,
              d2h_staged / memcpy_d2h, h2d_staged / memcpy_h2d);

  // Layer-wise load overlapping compute: layer l+1 loads while layer l computes.
  cudaStream_t compute;
  CUDA_OK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  float* x;
  CUDA_OK(cudaMalloc(&x, 1024 * 4));
  std::vector<cudaEvent_t> loaded(layers);
  for (auto& e : loaded) CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  const int iters = 20000;
  auto serial = [&] {
    for (uint32_t l = 0; l < layers; ++l) {
      cuda::TransferBatch one = bm;
      one.first_layer = l;
      one.layer_count = 1;
      CUDA_OK(cuda::Scatter(L, one, s));
      Busy<<<1, 256, 0, s>>>(x, iters);
    }
  };
  const double serial_gbps = time(serial);
  auto overlapped = [&] {
    for (uint32_t l = 0; l < layers; ++l) {
      cuda::TransferBatch one = bm;
      one.first_layer = l;
      one.layer_count = 1;
      CUDA_OK(cuda::Scatter(L, one, s));
      CUDA_OK(cudaEventRecord(loaded[l], s));
    }
    for (uint32_t l = 0; l < layers; ++l) {
      CUDA_OK(cudaStreamWaitEvent(compute, loaded[l]));  // what vLLM's wait_for_layer_load does
      Busy<<<1, 256, 0, compute>>>(x, iters);
    }
    cudaEvent_t done;
    CUDA_OK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    CUDA_OK(cudaEventRecord(done, compute));
    CUDA_OK(cudaStreamWaitEvent(s, done));
    CUDA_OK(cudaEventDestroy(done));
  };
  const double overlap_gbps = time(overlapped);
  std::printf("\nlayer-wise load with compute: serial %.1f ms, overlapped %.1f ms (%.0f%% of the serial time saved)\n",
              gb / serial_gbps * 1e3, gb / overlap_gbps * 1e3, 100.0 * (1.0 - serial_gbps / overlap_gbps));

  // A store on its side stream: the compute stream only records an event.
  cudaEvent_t ready;
  CUDA_OK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  auto compute_only = [&] {
    for (int i = 0; i < 8; ++i) Busy<<<1, 256, 0, s>>>(x, iters);
  };
  const double alone = time(compute_only);
  auto with_store = [&] {
    CUDA_OK(cudaEventRecord(ready, s));  // the compute stream's whole cost of a store
    CUDA_OK(cudaStreamWaitEvent(compute, ready));
    CUDA_OK(cuda::Gather(L, bm, compute));
    for (int i = 0; i < 8; ++i) Busy<<<1, 256, 0, s>>>(x, iters);
  };
  const double with = time(with_store);
  std::printf("compute stream time: alone %.2f ms, with a concurrent 256 MiB store on a side stream %.2f ms\n",
              gb / alone * 1e3, gb / with * 1e3);
  CUDA_OK(cudaDeviceSynchronize());
}

}  // namespace

int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: nothing to check\n");
    return 3;
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s\ncorrectness against the CPU copy engine:\n", prop.name);
  const struct {
    const char* name;
    const char* order;
    bool opaque;
  } cases[] = {
      {"vLLM flash-attention (2,B,T,H,D)", "PBTHD", false},
      {"FlashInfer NHD (B,2,T,H,D)", "BPTHD", false},
      {"FlashInfer HND (B,2,H,T,D)", "BPHTD", false},
      {"SGLang layer_first (2,L,S,H,D)", "PLSHD", false},
      {"SGLang page_first (2,S,L,H,D)", "PSLHD", false},
      {"SGLang page_first_direct (2,B,L,T,H,D)", "PBLTHD", false},
      {"MLA (B,T,D)", "BTHD", false},
      {"opaque blocks (B,H,T,2D)", "BHTD", true},
  };
  for (DType dt : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    for (const auto& c : cases) CheckLayout(c.name, c.order, dt, c.opaque);
  }
  Bandwidth();
  std::printf("\n%s\n", failures ? "GPU CHECK FAILED" : "gpu check: all layouts bit-exact");
  return failures ? 1 : 0;
}
