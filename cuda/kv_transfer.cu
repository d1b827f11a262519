#include "kv_transfer.h"

namespace lmcache::cuda {

namespace {

// Copies `bytes` with the widest access both sides' alignment allows.
__device__ __forceinline__ void CopyRun(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src, uint64_t bytes,
                                        unsigned lane, unsigned lanes) {
  const uintptr_t align = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src) | bytes;
  if ((align & 15) == 0) {
    const uint64_t n = bytes / 16;
    auto* d = reinterpret_cast<int4*>(dst);
    auto* s = reinterpret_cast<const int4*>(src);
    for (uint64_t i = lane; i < n; i += lanes) d[i] = s[i];
  } else if ((align & 3) == 0) {
    const uint64_t n = bytes / 4;
    auto* d = reinterpret_cast<uint32_t*>(dst);
    auto* s = reinterpret_cast<const uint32_t*>(src);
    for (uint64_t i = lane; i < n; i += lanes) d[i] = s[i];
  } else {
    for (uint64_t i = lane; i < bytes; i += lanes) dst[i] = src[i];
  }
}

// grid.x: token (or block, for opaque layouts) within the chunk; grid.y:
// plane x layer; grid.z: chunk. One thread block moves one token's vectors of
// one layer and plane (all heads).
template <bool kGather>
__global__ void TransferKernel(DeviceLayout L, TransferBatch B) {
  const uint32_t chunk = blockIdx.z;
  const uint32_t layer = B.first_layer + blockIdx.y / L.num_planes;
  const uint32_t plane = blockIdx.y % L.num_planes;
  const uint32_t n = B.num_tokens[chunk];
  const int64_t* slots = B.slots + uint64_t(chunk) * B.payload_tokens;
  const uint64_t token_bytes = uint64_t(L.num_heads) * L.head_dim * L.elem_size;
  uint8_t* layer_payload = B.payloads[chunk] + uint64_t(layer) * L.num_planes * B.payload_tokens * token_bytes;
  const uint8_t* base = reinterpret_cast<const uint8_t*>(L.layer_base[layer]);

  if (L.opaque_block_bytes > 0) {  // blockIdx.x: engine block j of the chunk; plane 0 only
    if (plane != 0) return;
    const uint32_t j = blockIdx.x;
    const uint32_t first = j * L.block_size;
    if (first >= n) return;
    int64_t slot = -1;
    for (uint32_t t = first; t < min(first + L.block_size, n) && slot < 0; ++t) slot = slots[t];
    if (slot < 0) return;
    uint8_t* engine = const_cast<uint8_t*>(base) + (slot / L.block_size) * L.stride_block;
    uint8_t* stored = layer_payload + uint64_t(j) * L.opaque_block_bytes;
    if (kGather) CopyRun(stored, engine, L.opaque_block_bytes, threadIdx.x, blockDim.x);
    else CopyRun(engine, stored, L.opaque_block_bytes, threadIdx.x, blockDim.x);
    return;
  }
  const uint32_t t = blockIdx.x;
  if (t >= n) return;
  const int64_t slot = slots[t];
  if (slot < 0) return;
  uint8_t* engine = const_cast<uint8_t*>(base) + plane * L.stride_plane + (slot / L.block_size) * L.stride_block +
                    (slot % L.block_size) * L.stride_token;
  uint8_t* stored = layer_payload + (uint64_t(plane) * B.payload_tokens + t) * token_bytes;
  const uint64_t head_bytes = uint64_t(L.head_dim) * L.elem_size;
  if (L.num_heads == 1 || L.stride_head == int64_t(head_bytes)) {
    if (kGather) CopyRun(stored, engine, token_bytes, threadIdx.x, blockDim.x);
    else CopyRun(engine, stored, token_bytes, threadIdx.x, blockDim.x);
    return;
  }
  // Strided heads (HND): one warp per head.
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (uint32_t h = warp; h < L.num_heads; h += warps) {
    uint8_t* e = engine + h * L.stride_head;
    uint8_t* s = stored + h * head_bytes;
    if (kGather) CopyRun(s, e, head_bytes, lane, 32);
    else CopyRun(e, s, head_bytes, lane, 32);
  }
}

template <bool kGather>
cudaError_t Launch(const DeviceLayout& L, const TransferBatch& B, cudaStream_t stream) {
  if (B.num_chunks == 0 || B.layer_count == 0) return cudaSuccess;
  if (B.first_layer + B.layer_count > L.num_layers || L.num_planes == 0) return cudaErrorInvalidValue;
  const uint32_t per_chunk = L.opaque_block_bytes > 0 ? (B.payload_tokens + L.block_size - 1) / L.block_size
                                                      : B.payload_tokens;
  if (B.num_chunks > 65535 || B.layer_count * L.num_planes > 65535) return cudaErrorInvalidValue;
  const dim3 grid(per_chunk, B.layer_count * L.num_planes, B.num_chunks);
  TransferKernel<kGather><<<grid, 128, 0, stream>>>(L, B);
  return cudaGetLastError();
}

}  // namespace

cudaError_t Gather(const DeviceLayout& layout, const TransferBatch& batch, cudaStream_t stream) {
  return Launch<true>(layout, batch, stream);
}

cudaError_t Scatter(const DeviceLayout& layout, const TransferBatch& batch, cudaStream_t stream) {
  return Launch<false>(layout, batch, stream);
}

}  // namespace lmcache::cuda
