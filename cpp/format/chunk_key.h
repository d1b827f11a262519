// Chunk keys: the 128-bit hash chain of DESIGN.md.
//
//   seed   = XXH3-128(namespace description)
//   key_0  = XXH3-128(seed  || tokens[0 .. C))
//   key_i  = XXH3-128(key_{i-1} || tokens[i*C .. (i+1)*C))
//
// Tokens are hashed as little-endian uint32, so the same text, model and shard
// give the same keys in every process on every (little-endian) machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lmcache {

struct ChunkKey {
  uint64_t lo = 0;
  uint64_t hi = 0;
  bool operator==(const ChunkKey& o) const { return lo == o.lo && hi == o.hi; }
  bool operator!=(const ChunkKey& o) const { return !(*this == o); }
  // 32 lowercase hex digits, hi first: the name of the key in files and on the wire.
  std::string Hex() const;
};

struct ChunkKeyHasher {
  size_t operator()(const ChunkKey& k) const { return static_cast<size_t>(k.lo ^ (k.hi * 0x9E3779B97F4A7C15ull)); }
};

// Everything that makes KV bytes of the same tokens differ. Two caches may
// share entries only if every field is equal.
struct NamespaceSpec {
  std::string model_id;
  uint32_t num_layers = 0;
  uint32_t num_planes = 2;  // 2: separate K and V; 1: MLA latent
  uint32_t num_heads = 0;   // KV heads held by this shard
  uint32_t head_dim = 0;
  uint32_t dtype = 0;       // DType value
  uint32_t layout_version = 1;  // stored chunk format version
  uint32_t opaque_block_size = 0;  // payload arrangement: 0 token-major, N whole engine blocks
  uint32_t tp_rank = 0;     // ignored for MLA: every rank holds the same latent
  uint32_t tp_size = 1;
  std::string tenant_salt;  // empty: no tenant isolation
};

ChunkKey NamespaceSeed(const NamespaceSpec& spec);

// The key of a chunk an engine names itself (e.g. SGLang's page hash), in
// the namespace of `seed`: XXH3-128(seed || "ext:" || id).
ChunkKey ExternalKey(ChunkKey seed, const std::string& id);

// Appends one key per *whole* chunk of `tokens` to `out` (a trailing partial
// chunk gets no key). One native call per request; no allocation per chunk.
void HashChunks(ChunkKey seed, const uint32_t* tokens, size_t num_tokens, size_t chunk_size,
                std::vector<ChunkKey>* out);

}  // namespace lmcache
