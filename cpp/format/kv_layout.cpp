#include "kv_layout.h"

#include <cstdint>

#include <string>

namespace lmcache {

uint32_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat8E4M3:
    case DType::kFloat8E5M2:
    case DType::kUInt8: return 1;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat8E4M3: return "float8_e4m3fn";
    case DType::kFloat8E5M2: return "float8_e5m2";
    case DType::kUInt8: return "uint8";
  }
  return "unknown";
}

Status KVLayout::Validate() const {
  auto bad = [](const std::string& what) { return Status::InvalidArgument("KV layout: " + what); };
  if (DTypeSize(dtype) == 0) return bad("unknown dtype code " + std::to_string(uint32_t(dtype)));
  if (num_layers == 0) return bad("num_layers must be positive");
  if (num_planes != 1 && num_planes != 2) {
    return bad("num_planes must be 1 (MLA) or 2 (K and V), got " + std::to_string(num_planes));
  }
  if (num_heads == 0 || head_dim == 0) return bad("num_heads and head_dim must be positive");
  if (block_size == 0 || num_blocks == 0) return bad("block_size and num_blocks must be positive");
  if (num_blocks > uint64_t(INT64_MAX) / block_size) return bad("num_blocks * block_size does not fit in int64");
  if (layer_base.size() != num_layers) {
    return bad("expected " + std::to_string(num_layers) + " layer base addresses, got " +
               std::to_string(layer_base.size()));
  }
  for (uint64_t base : layer_base) {
    if (base == 0) return bad("a layer base address is null");
  }
  if (opaque_blocks()) {
    const uint64_t expected = uint64_t(num_planes) * block_size * token_bytes();
    if (opaque_block_bytes != expected) {
      return bad("opaque_block_bytes " + std::to_string(opaque_block_bytes) + " != planes*block_size*heads*head_dim*elem (" +
                 std::to_string(expected) + ")");
    }
    if (num_blocks > 1 && stride_block == 0) return bad("stride_block is 0");
    return Status::Ok();
  }
  if (num_planes == 2 && stride_plane == 0) return bad("stride_plane is 0 with two planes");
  if (num_blocks > 1 && stride_block == 0) return bad("stride_block is 0");
  if (block_size > 1 && stride_token == 0) return bad("stride_token is 0");
  if (num_heads > 1 && stride_head == 0) return bad("stride_head is 0");
  return Status::Ok();
}

}  // namespace lmcache
