#include "chunk_format.h"

#include <xxhash.h>
#if LMCACHE_XXH_DISPATCH
#include <xxh_x86dispatch.h>  // the same functions, vectorised for this CPU at run time
#endif

#include <cstring>
#include <string>
#include <vector>

namespace lmcache {

ChunkHeader MakeHeader(const ChunkShape& shape, const ChunkKey& key, uint64_t checksum) {
  ChunkHeader h;
  std::memset(&h, 0, sizeof(h));
  h.magic = kChunkMagic;
  h.version = kChunkFormatVersion;
  h.num_planes = static_cast<uint8_t>(shape.num_planes);
  h.dtype = static_cast<uint8_t>(shape.dtype);
  h.num_layers = shape.num_layers;
  h.num_tokens = shape.num_tokens;
  h.num_heads = shape.num_heads;
  h.head_dim = shape.head_dim;
  h.payload_bytes = shape.payload_bytes();
  h.checksum = checksum;
  h.key_lo = key.lo;
  h.key_hi = key.hi;
  h.opaque_block_size = shape.opaque_block_size;
  h.flags = kChecksumValid;
  return h;
}

Status ValidateHeader(const ChunkHeader& h, const ChunkShape& expected, const ChunkKey& key) {
  if (h.magic != kChunkMagic) return Status::Corrupt("bad chunk magic");
  if (h.version != kChunkFormatVersion) {
    return Status::Corrupt("chunk format version " + std::to_string(h.version) + ", expected " +
                           std::to_string(kChunkFormatVersion));
  }
  if (h.key_lo != key.lo || h.key_hi != key.hi) return Status::Corrupt("chunk holds a different key");
  if (h.num_layers != expected.num_layers || h.num_planes != expected.num_planes ||
      h.num_heads != expected.num_heads || h.head_dim != expected.head_dim ||
      h.dtype != static_cast<uint8_t>(expected.dtype) || h.num_tokens != expected.num_tokens ||
      h.opaque_block_size != expected.opaque_block_size ||
      h.payload_bytes != expected.payload_bytes()) {
    return Status::Corrupt("chunk shape does not match the KV cache");
  }
  return Status::Ok();
}

Status VerifyChecksum(const uint8_t* record, const ChunkShape& shape) {
  ChunkHeader h;
  std::memcpy(&h, record, sizeof(h));
  if (!(h.flags & kChecksumValid)) return Status::Corrupt("record without a checksum");
  if (PayloadChecksum(record + sizeof(ChunkHeader), shape) != h.checksum) {
    return Status::Corrupt("payload checksum mismatch");
  }
  return Status::Ok();
}

uint64_t LayerChecksum(const uint8_t* data, size_t bytes) { return XXH3_64bits(data, bytes); }

LayerHasher::LayerHasher() : state_(XXH3_createState()) { XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_)); }
LayerHasher::~LayerHasher() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }
void LayerHasher::Update(const uint8_t* data, size_t bytes) {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), data, bytes);
}
uint64_t LayerHasher::Digest() const { return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_)); }

uint64_t CombineLayerChecksums(const uint64_t* layer_sums, size_t num_layers) {
  return XXH3_64bits(layer_sums, num_layers * sizeof(uint64_t));
}

uint64_t PayloadChecksum(const uint8_t* payload, const ChunkShape& shape) {
  const uint64_t layer_bytes = shape.layer_bytes();
  std::vector<uint64_t> sums(shape.num_layers);
  for (uint32_t l = 0; l < shape.num_layers; ++l) sums[l] = LayerChecksum(payload + l * layer_bytes, layer_bytes);
  return CombineLayerChecksums(sums.data(), shape.num_layers);
}

}  // namespace lmcache
