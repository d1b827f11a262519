// One descriptor for every paged KV cache (see DESIGN.md "Layouts").
//
// A token's vector for (layer l, plane p, slot s, head h) starts at
//   layer_base[l] + p*stride_plane + (s / block_size)*stride_block
//                 + (s % block_size)*stride_token + h*stride_head
// and holds head_dim contiguous elements. vLLM's flash-attention and FlashInfer
// layouts, HND views, SGLang's host layouts and MLA's single plane differ only
// in these numbers; the adapters fill them in from the engine's tensors.
//
// Opaque blocks: some kernels arrange a block internally in a way that is not
// per token (vLLM's CPU attention stores K transposed inside a block). Such a
// cache sets opaque_block_bytes: one layer of block b is then the contiguous
// run [layer_base[l] + b*stride_block, + opaque_block_bytes), moved whole.
// Chunks must then consist of whole blocks, and the stored payload keeps the
// engine's block arrangement (so the key namespace records it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "status.h"

namespace lmcache {

// Values are part of the C ABI and of the stored chunk format.
enum class DType : uint32_t {
  kFloat32 = 1,
  kFloat16 = 2,
  kBFloat16 = 3,
  kFloat8E4M3 = 4,
  kFloat8E5M2 = 5,
  kUInt8 = 6,
};

// Bytes per element, or 0 for an unknown value.
uint32_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);

struct KVLayout {
  uint32_t num_layers = 0;
  uint32_t num_planes = 2;  // 2: K and V; 1: MLA latent (one plane)
  uint32_t num_heads = 0;   // KV heads in this cache (1 for MLA)
  uint32_t head_dim = 0;    // elements per head vector (contiguous)
  DType dtype = DType::kBFloat16;
  uint32_t block_size = 0;  // tokens per block (page)
  uint64_t num_blocks = 0;  // slots valid: [0, num_blocks * block_size)
  // Byte strides; may be any value the engine's tensor has (permuted views).
  int64_t stride_plane = 0;
  int64_t stride_block = 0;
  int64_t stride_token = 0;
  int64_t stride_head = 0;
  std::vector<uint64_t> layer_base;  // one address per layer
  uint64_t opaque_block_bytes = 0;   // > 0: blocks move whole (see above)
  int32_t device = -1;               // CUDA device of layer_base; -1: host memory

  Status Validate() const;

  uint32_t elem_size() const { return DTypeSize(dtype); }
  bool opaque_blocks() const { return opaque_block_bytes > 0; }
  uint64_t num_slots() const { return num_blocks * block_size; }
  // Bytes of one token's vectors in one layer and plane (all heads).
  uint64_t token_bytes() const { return uint64_t(num_heads) * head_dim * elem_size(); }
  // Heads of one token are back to back, so a token copies as one run.
  bool heads_contiguous() const {
    return num_heads == 1 || stride_head == int64_t(head_dim) * elem_size();
  }
  // Consecutive slots of one block are back to back (given contiguous heads).
  bool tokens_contiguous() const {
    return heads_contiguous() && (block_size == 1 || stride_token == int64_t(token_bytes()));
  }
  uint8_t* TokenAddress(uint32_t layer, uint32_t plane, uint64_t slot) const {
    const uint64_t block = slot / block_size, offset = slot % block_size;
    return reinterpret_cast<uint8_t*>(layer_base[layer]) + int64_t(plane) * stride_plane +
           int64_t(block) * stride_block + int64_t(offset) * stride_token;
  }
  // True when `other` stores the same bytes per token (pointers and strides may differ).
};

}  // namespace lmcache
