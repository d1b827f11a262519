// DeviceCopier on the kernels of kv_transfer.cu. Prepare writes a batch's
// per-chunk arrays (payload device pointers, slots, token counts) and the
// layer bases into a pinned scratch buffer and uploads them in one copy;
// each Launch is then one kernel over every chunk of the batch and the
// layers asked for. Scratch buffers are reused through a free list: a
// cudaMallocHost per call would cost more than the copy of a small batch.
#include <cuda_runtime_api.h>

#include <algorithm>
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

// Makes `device` current for one call and restores the caller's device
// after it: the engine's thread has its own notion of the current device.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    status_ = previous_ == device ? cudaSuccess : cudaSetDevice(device);
  }
  ~DeviceGuard() {
    if (previous_ >= 0 && status_ == cudaSuccess) cudaSetDevice(previous_);
  }
  cudaError_t status() const { return status_; }

 private:
  int previous_ = -1;
  cudaError_t status_ = cudaSuccess;
};

struct Scratch {
  void* host = nullptr;  // pinned
  void* dev = nullptr;
  size_t cap = 0;
  int device = -1;
};

class CudaCopier;

class CudaBatch final : public DeviceBatch {
 public:
  CudaBatch(CudaCopier* owner, Scratch s) : owner_(owner), scratch_(s) {}
  ~CudaBatch() override;
  int device = -1;
  cuda::DeviceLayout layout{};
  cuda::TransferBatch transfers{};

 private:
  CudaCopier* owner_;
  Scratch scratch_;
};

class CudaCopier final : public DeviceCopier {
 public:
  ~CudaCopier() override {
    for (Scratch& s : free_) Destroy(s);
  }

  Status Prepare(const KVLayout& l, const std::vector<ChunkTransfer>& chunks, uint64_t stream_handle,
                 std::unique_ptr<DeviceBatch>* out) override {
    if (chunks.empty()) return Status::InvalidArgument("an empty batch");
    DeviceGuard guard(l.device);
    cudaError_t e = guard.status();
    if (e != cudaSuccess) return CudaError("set device", e);
    const uint32_t n = uint32_t(chunks.size()), pt = chunks[0].payload_tokens;
    // Scratch layout: [layer bases | payload pointers | token counts | slots].
    const size_t bases_b = l.num_layers * 8, ptrs_b = size_t(n) * 8, counts_b = (size_t(n) * 4 + 7) / 8 * 8,
                 slots_b = size_t(n) * pt * 8, total = bases_b + ptrs_b + counts_b + slots_b;
    Scratch s;
    LMC_RETURN_IF_ERROR(Take(total, l.device, &s));
    auto batch = std::make_unique<CudaBatch>(this, s);  // gives the scratch back on any return below
    uint8_t* h = static_cast<uint8_t*>(s.host);
    std::memcpy(h, l.layer_base.data(), bases_b);
    for (uint32_t i = 0; i < n; ++i) {
      void* dptr = nullptr;
      e = cudaHostGetDevicePointer(&dptr, chunks[i].payload, 0);
      if (e != cudaSuccess) return CudaError("payload is not registered host memory", e);
      std::memcpy(h + bases_b + i * 8, &dptr, 8);
      const uint32_t tokens = chunks[i].num_tokens;
      std::memcpy(h + bases_b + ptrs_b + i * 4, &tokens, 4);
      int64_t* slots = reinterpret_cast<int64_t*>(h + bases_b + ptrs_b + counts_b) + size_t(i) * pt;
      std::memcpy(slots, chunks[i].slots, tokens * 8);
      for (uint32_t t = tokens; t < pt; ++t) slots[t] = -1;
    }
    e = cudaMemcpyAsync(s.dev, s.host, total, cudaMemcpyHostToDevice, reinterpret_cast<cudaStream_t>(stream_handle));
    if (e != cudaSuccess) return CudaError("upload", e);
    uint8_t* d = static_cast<uint8_t*>(s.dev);
    batch->device = l.device;
    batch->layout = cuda::DeviceLayout{l.num_layers, l.num_planes, l.num_heads, l.head_dim, l.elem_size(),
                                       l.block_size, l.stride_plane, l.stride_block, l.stride_token, l.stride_head,
                                       l.opaque_block_bytes, reinterpret_cast<const uint64_t*>(d)};
    batch->transfers = cuda::TransferBatch{reinterpret_cast<uint8_t* const*>(d + bases_b),
                                           reinterpret_cast<const int64_t*>(d + bases_b + ptrs_b + counts_b),
                                           reinterpret_cast<const uint32_t*>(d + bases_b + ptrs_b), n, pt, 0, 0};
    *out = std::move(batch);
    return Status::Ok();
  }

  Status Launch(const DeviceBatch& batch, bool gather, uint32_t first_layer, uint32_t layer_count,
                uint64_t stream_handle) override {
    const auto& b = static_cast<const CudaBatch&>(batch);
    DeviceGuard guard(b.device);
    cudaError_t e = guard.status();
    if (e != cudaSuccess) return CudaError("set device", e);
    cuda::TransferBatch t = b.transfers;
    t.first_layer = first_layer;
    t.layer_count = layer_count;
    cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
    e = gather ? cuda::Gather(b.layout, t, stream) : cuda::Scatter(b.layout, t, stream);
    if (e != cudaSuccess) return CudaError("launch", e);
    return Status::Ok();
  }

  Status Synchronize(int device, uint64_t stream_handle) override {
    DeviceGuard guard(device);
    cudaError_t e = guard.status();
    if (e != cudaSuccess) return CudaError("set device", e);
    e = cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream_handle));
    if (e != cudaSuccess) return CudaError("copy", e);
    return Status::Ok();
  }

  void Give(Scratch s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kMaxFree) {
      free_.push_back(s);
      return;
    }
    Destroy(s);
  }

 private:
  static constexpr size_t kMaxFree = 8;

  Status Take(size_t bytes, int device, Scratch* out) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < free_.size(); ++i) {
        if (free_[i].cap >= bytes && free_[i].device == device) {
          *out = free_[i];
          free_.erase(free_.begin() + i);
          return Status::Ok();
        }
      }
    }
    Scratch s;
    s.device = device;
    s.cap = std::max<size_t>(bytes, 64 << 10);
    cudaError_t e = cudaMallocHost(&s.host, s.cap);
    if (e != cudaSuccess) return CudaError("pinned scratch", e);
    e = cudaMalloc(&s.dev, s.cap);
    if (e != cudaSuccess) {
      cudaFreeHost(s.host);
      return CudaError("device scratch", e);
    }
    *out = s;
    return Status::Ok();
  }

  static void Destroy(Scratch& s) {
    if (s.host) cudaFreeHost(s.host);
    if (s.dev) cudaFree(s.dev);
    s = Scratch{};
  }

  std::mutex mu_;
  std::vector<Scratch> free_;
};

CudaBatch::~CudaBatch() { owner_->Give(scratch_); }

}  // namespace

std::unique_ptr<DeviceCopier> MakeDeviceCopier() { return std::make_unique<CudaCopier>(); }

}  // namespace lmcache
