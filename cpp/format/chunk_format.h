// Stored chunk format, the same in memory, on disk and on the wire:
//
//   [ChunkHeader, 128 bytes][payload]
//   payload = layer-major: for each layer, for each plane (K, V), for each
//             token, for each head: head_dim elements.
//
// Layer-major lets one layer of a chunk move on its own (layer-wise loading).
// With opaque blocks (kv_layout.h) each layer holds whole engine blocks in the
// engine's own arrangement instead of tokens; the size is the same.
// The checksum is XXH3-64 over the per-layer XXH3-64 digests, so the copy
// threads hash each layer while it is still in cache: every record gets it
// when it is made, and it is checked again before the record leaves host
// memory. A record that leaves for the disk tier is also sealed (record_seal.h:
// a keyed MAC, optionally encryption) in the second half of the header.
#pragma once

#include <cstddef>
#include <cstdint>

#include "chunk_key.h"
#include "kv_layout.h"
#include "status.h"

namespace lmcache {

constexpr uint32_t kChunkMagic = 0x4B434D4Cu;  // "LMCK" in little-endian memory
constexpr uint16_t kChunkFormatVersion = 3;
// ChunkHeader::flags: the checksum field holds the payload's checksum (set on
// every record this version makes; a record without it is refused).
constexpr uint8_t kChecksumValid = 1;
// ChunkHeader::seal_flags.
constexpr uint8_t kSealed = 1;         // seal_key_id, seal_nonce and seal_tag are set
constexpr uint8_t kSealEncrypted = 2;  // the payload is ciphertext

struct ChunkHeader {
  uint32_t magic;
  uint16_t version;
  uint8_t num_planes;
  uint8_t dtype;
  uint32_t num_layers;
  uint32_t num_tokens;
  uint32_t num_heads;
  uint32_t head_dim;
  uint64_t payload_bytes;
  uint64_t checksum;
  uint64_t key_lo;
  uint64_t key_hi;
  uint32_t opaque_block_size;  // 0: token-major payload; N: whole engine blocks of N tokens
  uint8_t flags;               // kChecksumValid
  uint8_t reserved[3];
  // The seal (record_seal.h); all zero on a record in host memory.
  uint64_t seal_key_id;
  uint8_t seal_nonce[12];
  uint8_t seal_flags;  // kSealed, kSealEncrypted
  uint8_t reserved2[3];
  uint8_t seal_tag[16];
  uint8_t reserved3[24];
};
static_assert(sizeof(ChunkHeader) == 128, "the header is part of the on-disk format");

// The shape of a stored chunk (what must match between store and load).
struct ChunkShape {
  uint32_t num_layers;
  uint32_t num_planes;
  uint32_t num_heads;
  uint32_t head_dim;
  DType dtype;
  uint32_t num_tokens;
  uint32_t opaque_block_size = 0;

  static ChunkShape FromLayout(const KVLayout& layout, uint32_t num_tokens) {
    return {layout.num_layers, layout.num_planes, layout.num_heads, layout.head_dim, layout.dtype, num_tokens,
            layout.opaque_blocks() ? layout.block_size : 0};
  }
  uint64_t layer_bytes() const {
    return uint64_t(num_planes) * num_tokens * num_heads * head_dim * DTypeSize(dtype);
  }
  uint64_t payload_bytes() const { return layer_bytes() * num_layers; }
  uint64_t record_bytes() const { return sizeof(ChunkHeader) + payload_bytes(); }
};

ChunkHeader MakeHeader(const ChunkShape& shape, const ChunkKey& key, uint64_t checksum);
// Checks that a whole record's payload matches the checksum in its header.
Status VerifyChecksum(const uint8_t* record, const ChunkShape& shape);

// Checks magic, version, shape and key against what the reader expects.
// Does not read the payload.
Status ValidateHeader(const ChunkHeader& header, const ChunkShape& expected, const ChunkKey& key);

uint64_t LayerChecksum(const uint8_t* data, size_t bytes);

// LayerChecksum of a layer fed in pieces, in order (same result): the copy
// engine hashes each run right after copying it, while it is in L1 cache.
class LayerHasher {
 public:
  LayerHasher();
  ~LayerHasher();
  LayerHasher(const LayerHasher&) = delete;
  LayerHasher& operator=(const LayerHasher&) = delete;
  void Update(const uint8_t* data, size_t bytes);
  uint64_t Digest() const;

 private:
  void* state_;  // XXH3_state_t
};
uint64_t CombineLayerChecksums(const uint64_t* layer_sums, size_t num_layers);
// Full payload checksum (hashes each layer, then combines): what a reader uses
// to verify a record it did not write.
uint64_t PayloadChecksum(const uint8_t* payload, const ChunkShape& shape);

}  // namespace lmcache
