// CUDA gather/scatter between an engine's paged KV cache in GPU memory and
// stored chunk payloads (layer-major, token-major: see cpp/chunk_format.h),
// for every layout the descriptor describes (cpp/kv_layout.h), batched over
// chunks and layers in one launch. Framework-free: raw pointers and a
// cudaStream_t in, a cudaError_t out.
//
// The payload pointers may be device memory (staging, then cudaMemcpyAsync)
// or mapped pinned host memory (the kernel writes over PCIe directly); which
// is faster is measured by tests/gpu/gpu_check.cu.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace lmcache::cuda {

struct DeviceLayout {
  uint32_t num_layers;
  uint32_t num_planes;
  uint32_t num_heads;
  uint32_t head_dim;
  uint32_t elem_size;
  uint32_t block_size;
  int64_t stride_plane, stride_block, stride_token, stride_head;  // bytes
  uint64_t opaque_block_bytes;                                    // > 0: blocks move whole
  const uint64_t* layer_base;                                     // device array, num_layers entries
};

// One launch moves `num_chunks` chunks: chunk c's payload is payloads[c]
// (device-accessible), holding payload_tokens tokens, of which the first
// num_tokens[c] move to or from slots[c * payload_tokens + t] (negative:
// skipped). Only layers [first_layer, first_layer + layer_count) move, so a
// load can go layer by layer on its own stream.
struct TransferBatch {
  uint8_t* const* payloads;    // device array of num_chunks pointers
  const int64_t* slots;        // device array, num_chunks * payload_tokens
  const uint32_t* num_tokens;  // device array, num_chunks
  uint32_t num_chunks;
  uint32_t payload_tokens;
  uint32_t first_layer;
  uint32_t layer_count;
};

cudaError_t Gather(const DeviceLayout& layout, const TransferBatch& batch, cudaStream_t stream);
cudaError_t Scatter(const DeviceLayout& layout, const TransferBatch& batch, cudaStream_t stream);

}  // namespace lmcache::cuda
