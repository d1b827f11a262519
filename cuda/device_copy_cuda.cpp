// DeviceCopier on the kernels of kv_transfer.cu. Per call: the per-chunk
// arrays (payload device pointers, slots, token counts) and the layer bases
// go to the device in one copy from a pinned scratch buffer, one kernel
// launch moves every chunk and layer, and the stream is synchronized before
// returning (the host pool entries are released right after).
#include <cuda_runtime_api.h>

#include <cstring>
#include <mutex>
#include <string>

#include "device_copy.h"
#include "kv_transfer.h"

namespace lmcache {

namespace {

Status CudaError(const char* what, cudaError_t e) {
  return Status::IoError(std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}

class CudaCopier final : public DeviceCopier {
 public:
  ~CudaCopier() override {
    if (host_) cudaFreeHost(host_);
    if (dev_) cudaFree(dev_);
  }

  Status Gather(const KVLayout& l, const std::vector<ChunkTransfer>& c, uint64_t stream) override {
    return Run(l, c, stream, /*gather=*/true);
  }
  Status Scatter(const KVLayout& l, const std::vector<ChunkTransfer>& c, uint64_t stream) override {
    return Run(l, c, stream, /*gather=*/false);
  }

 private:
  Status Run(const KVLayout& l, const std::vector<ChunkTransfer>& chunks, uint64_t stream_handle, bool gather) {
    if (chunks.empty()) return Status::Ok();
    cudaError_t e = cudaSetDevice(l.device);
    if (e != cudaSuccess) return CudaError("set device", e);
    const uint32_t n = uint32_t(chunks.size()), pt = chunks[0].payload_tokens;
    // Scratch layout: [layer bases | payload pointers | token counts | slots].
    const size_t bases_b = l.num_layers * 8, ptrs_b = n * 8, counts_b = (n * 4 + 7) / 8 * 8,
                 slots_b = size_t(n) * pt * 8, total = bases_b + ptrs_b + counts_b + slots_b;
    std::lock_guard<std::mutex> lock(mu_);  // one scratch buffer per copier
    Status st = Reserve(total);
    if (!st.ok()) return st;
    uint8_t* h = static_cast<uint8_t*>(host_);
    std::memcpy(h, l.layer_base.data(), bases_b);
    for (uint32_t i = 0; i < n; ++i) {
      void* dptr = nullptr;
      e = cudaHostGetDevicePointer(&dptr, chunks[i].payload, 0);
      if (e != cudaSuccess) return CudaError("payload is not registered host memory", e);
      std::memcpy(h + bases_b + i * 8, &dptr, 8);
      const uint32_t tokens = chunks[i].num_tokens;
      std::memcpy(h + bases_b + ptrs_b + i * 4, &tokens, 4);
      int64_t* s = reinterpret_cast<int64_t*>(h + bases_b + ptrs_b + counts_b) + size_t(i) * pt;
      std::memcpy(s, chunks[i].slots, tokens * 8);
      for (uint32_t t = tokens; t < pt; ++t) s[t] = -1;
    }
    cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
    e = cudaMemcpyAsync(dev_, host_, total, cudaMemcpyHostToDevice, stream);
    if (e != cudaSuccess) return CudaError("upload", e);
    uint8_t* d = static_cast<uint8_t*>(dev_);
    cuda::DeviceLayout dl{l.num_layers, l.num_planes, l.num_heads, l.head_dim, l.elem_size(), l.block_size,
                          l.stride_plane, l.stride_block, l.stride_token, l.stride_head, l.opaque_block_bytes,
                          reinterpret_cast<const uint64_t*>(d)};
    cuda::TransferBatch b{reinterpret_cast<uint8_t* const*>(d + bases_b),
                          reinterpret_cast<const int64_t*>(d + bases_b + ptrs_b + counts_b),
                          reinterpret_cast<const uint32_t*>(d + bases_b + ptrs_b), n, pt, 0, l.num_layers};
    e = gather ? cuda::Gather(dl, b, stream) : cuda::Scatter(dl, b, stream);
    if (e != cudaSuccess) return CudaError("launch", e);
    e = cudaStreamSynchronize(stream);  // the scratch buffer and the pool entries are reused after this
    if (e != cudaSuccess) return CudaError("copy", e);
    return Status::Ok();
  }

  Status Reserve(size_t bytes) {
    if (bytes <= cap_) return Status::Ok();
    if (host_) cudaFreeHost(host_);
    if (dev_) cudaFree(dev_);
    host_ = dev_ = nullptr;
    cap_ = 0;
    cudaError_t e = cudaMallocHost(&host_, bytes);
    if (e != cudaSuccess) return CudaError("pinned scratch", e);
    e = cudaMalloc(&dev_, bytes);
    if (e != cudaSuccess) return CudaError("device scratch", e);
    cap_ = bytes;
    return Status::Ok();
  }

  std::mutex mu_;
  void* host_ = nullptr;
  void* dev_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace

std::unique_ptr<DeviceCopier> MakeDeviceCopier() { return std::make_unique<CudaCopier>(); }

}  // namespace lmcache
