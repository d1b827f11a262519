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

class DeviceCopier {
 public:
  virtual ~DeviceCopier() = default;
  // Payloads are in host memory registered with CUDA (the host pool). Both
  // calls run on `stream` (a cudaStream_t; 0: the legacy default stream) and
  // return once the copy is complete; a caller that wants the engine's
  // compute stream never to wait passes a side stream that waits on an event
  // of the compute stream.
  virtual Status Gather(const KVLayout& layout, const std::vector<ChunkTransfer>& chunks, uint64_t stream) = 0;
  virtual Status Scatter(const KVLayout& layout, const std::vector<ChunkTransfer>& chunks, uint64_t stream) = 0;
};

// nullptr in a CPU-only build.
std::unique_ptr<DeviceCopier> MakeDeviceCopier();

}  // namespace lmcache
