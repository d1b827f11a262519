// Moving chunks between host-memory payloads and a KV cache in GPU memory.
// The runtime calls this for layouts whose layer_base points into a CUDA
// device (KVLayout::device >= 0). Two implementations, chosen by CMake:
// cuda/device_copy_cuda.cpp (the kernels of cuda/kv_transfer.cu) and
// device_copy_none.cpp (a CPU-only build: a clear error).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "copy_engine.h"
#include "kv_layout.h"
#include "status.h"

namespace lmcache {

// The per-chunk arrays of one batch (payload pointers, slots, token counts,
// layer bases), uploaded to the device once, so the batch can then move in
// several launches (a layer-wise load). Destroy it only after the stream
// has finished every launch that uses it (DeviceCopier::Synchronize).
class DeviceBatch {
 public:
  virtual ~DeviceBatch() = default;
};

class DeviceCopier {
 public:
  virtual ~DeviceCopier() = default;

  // Payloads are in host memory registered with CUDA (the host pool). The
  // upload runs on `stream` (a cudaStream_t; 0: the legacy default stream).
  // The chunks' slots are copied, so the caller's arrays may go after this.
  virtual Status Prepare(const KVLayout& layout, const std::vector<ChunkTransfer>& chunks, uint64_t stream,
                         std::unique_ptr<DeviceBatch>* out) = 0;
  // Enqueues the copy of layers [first_layer, first_layer + layer_count) of
  // every chunk of the batch on `stream` (the stream of Prepare, or one
  // ordered after it) and returns without waiting.
  virtual Status Launch(const DeviceBatch& batch, bool gather, uint32_t first_layer, uint32_t layer_count,
                        uint64_t stream) = 0;
  // Waits until everything enqueued on `stream` of CUDA device `device` is
  // done (the device matters for stream 0, the legacy default stream, which
  // is per device).
  virtual Status Synchronize(int device, uint64_t stream) = 0;

  // The whole batch, every layer, returning once the copy is complete. A
  // caller that wants the engine's compute stream never to wait passes a
  // side stream that waits on an event of the compute stream.
  Status Gather(const KVLayout& layout, const std::vector<ChunkTransfer>& chunks, uint64_t stream) {
    return CopyAll(layout, chunks, stream, /*gather=*/true);
  }
  Status Scatter(const KVLayout& layout, const std::vector<ChunkTransfer>& chunks, uint64_t stream) {
    return CopyAll(layout, chunks, stream, /*gather=*/false);
  }

 private:
  Status CopyAll(const KVLayout& layout, const std::vector<ChunkTransfer>& chunks, uint64_t stream, bool gather) {
    if (chunks.empty()) return Status::Ok();
    std::unique_ptr<DeviceBatch> batch;
    LMC_RETURN_IF_ERROR(Prepare(layout, chunks, stream, &batch));
    const Status launched = Launch(*batch, gather, 0, layout.num_layers, stream);
    const Status done = Synchronize(layout.device, stream);  // even after a failed launch: the upload may be in flight
    return launched.ok() ? done : launched;
  }
};

// nullptr in a CPU-only build.
std::unique_ptr<DeviceCopier> MakeDeviceCopier();

}  // namespace lmcache
