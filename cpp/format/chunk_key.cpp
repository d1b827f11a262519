#include "chunk_key.h"

#include <xxhash.h>
#if LMCACHE_XXH_DISPATCH
#include <xxh_x86dispatch.h>  // the same functions, vectorised for this CPU at run time
#endif

#include <cstdio>
#include <cstring>
#include <vector>

namespace lmcache {

std::string ChunkKey::Hex() const {
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return std::string(buf, 32);
}

namespace {

void AppendField(std::string* out, const char* name, const std::string& value) {
  // Length-prefixed so that ("ab","c") and ("a","bc") never serialise alike.
  out->append(name);
  out->push_back('=');
  out->append(std::to_string(value.size()));
  out->push_back(':');
  out->append(value);
  out->push_back(';');
}

void AppendField(std::string* out, const char* name, uint64_t value) {
  AppendField(out, name, std::to_string(value));
}

}  // namespace

ChunkKey NamespaceSeed(const NamespaceSpec& spec) {
  const bool is_mla = spec.num_planes == 1;
  std::string desc = "lmcache-namespace-v1;";
  AppendField(&desc, "model", spec.model_id);
  AppendField(&desc, "layers", spec.num_layers);
  AppendField(&desc, "planes", spec.num_planes);
  AppendField(&desc, "heads", spec.num_heads);
  AppendField(&desc, "head_dim", spec.head_dim);
  AppendField(&desc, "dtype", spec.dtype);
  AppendField(&desc, "layout", spec.layout_version);
  AppendField(&desc, "opaque_block", spec.opaque_block_size);
  // MLA caches are identical on every TP rank, so the shard is not part of the key.
  AppendField(&desc, "tp_rank", is_mla ? 0 : spec.tp_rank);
  AppendField(&desc, "tp_size", is_mla ? 1 : spec.tp_size);
  AppendField(&desc, "tenant", spec.tenant_salt);
  XXH128_hash_t h = XXH3_128bits(desc.data(), desc.size());
  return ChunkKey{h.low64, h.high64};
}

ChunkKey ExternalKey(ChunkKey seed, const std::string& id) {
  std::string buf(16, '\0');
  std::memcpy(buf.data(), &seed.lo, 8);
  std::memcpy(buf.data() + 8, &seed.hi, 8);
  buf += "ext:";
  buf += id;
  const XXH128_hash_t h = XXH3_128bits(buf.data(), buf.size());
  return ChunkKey{h.low64, h.high64};
}

void HashChunks(ChunkKey seed, const uint32_t* tokens, size_t num_tokens, size_t chunk_size,
                std::vector<ChunkKey>* out) {
  if (chunk_size == 0) return;
  const size_t num_chunks = num_tokens / chunk_size;
  out->reserve(out->size() + num_chunks);
  // One contiguous buffer [previous key | chunk tokens], reused for every chunk.
  std::vector<uint8_t> buf(16 + chunk_size * sizeof(uint32_t));
  ChunkKey prev = seed;
  for (size_t c = 0; c < num_chunks; ++c) {
    std::memcpy(buf.data(), &prev.lo, 8);
    std::memcpy(buf.data() + 8, &prev.hi, 8);
    std::memcpy(buf.data() + 16, tokens + c * chunk_size, chunk_size * sizeof(uint32_t));
    const XXH128_hash_t h = XXH3_128bits(buf.data(), buf.size());
    prev = ChunkKey{h.low64, h.high64};
    out->push_back(prev);
  }
}

}  // namespace lmcache
