#include "token_calls.h"

#include <vector>

namespace lmcache {

Status LookupTokens(CacheRuntime& rt, const uint32_t* tokens, size_t n, size_t* hit_tokens) {
  *hit_tokens = 0;
  std::vector<ChunkKey> keys;
  LMC_RETURN_IF_ERROR(rt.ComputeKeys(tokens, n, &keys));
  size_t hit_chunks = 0;
  LMC_RETURN_IF_ERROR(rt.Lookup(keys, &hit_chunks));
  *hit_tokens = hit_chunks * rt.chunk_size();
  return Status::Ok();
}

namespace {
// The keys of a call on the first num_slots of num_tokens tokens: of the
// tokens the slots cover for a store, of all of them for a load.
Status KeysFor(CacheRuntime& rt, const uint32_t* tokens, size_t num_tokens, size_t num_slots, bool store,
               std::vector<ChunkKey>* keys) {
  if (num_slots > num_tokens) return Status::InvalidArgument("more slots than tokens");
  return rt.ComputeKeys(tokens, store ? num_slots : num_tokens, keys);
}
}  // namespace

Status BeginStoreTokens(CacheRuntime& rt, const uint32_t* tokens, size_t num_tokens, const KVLayout& layout,
                        const int64_t* slots, size_t num_slots, uint64_t stream, std::unique_ptr<PendingStore>* out) {
  std::vector<ChunkKey> keys;
  LMC_RETURN_IF_ERROR(KeysFor(rt, tokens, num_tokens, num_slots, /*store=*/true, &keys));
  return rt.BeginStore(keys, layout, slots, num_slots, stream, out);
}

Status StoreKeys(CacheRuntime& rt, const std::vector<ChunkKey>& keys, const KVLayout& layout, const int64_t* slots,
                 size_t num_slots, size_t* stored_tokens, uint64_t stream) {
  *stored_tokens = 0;
  std::unique_ptr<PendingStore> store;
  LMC_RETURN_IF_ERROR(rt.BeginStore(keys, layout, slots, num_slots, stream, &store));
  LMC_RETURN_IF_ERROR(store->Finish());
  *stored_tokens = store->tokens();
  return Status::Ok();
}

Status StoreTokens(CacheRuntime& rt, const uint32_t* tokens, size_t num_tokens, const KVLayout& layout,
                   const int64_t* slots, size_t num_slots, size_t* stored_tokens, uint64_t stream) {
  *stored_tokens = 0;
  std::vector<ChunkKey> keys;
  LMC_RETURN_IF_ERROR(KeysFor(rt, tokens, num_tokens, num_slots, /*store=*/true, &keys));
  return StoreKeys(rt, keys, layout, slots, num_slots, stored_tokens, stream);
}

Status BeginLoadTokens(CacheRuntime& rt, const uint32_t* tokens, size_t num_tokens, const KVLayout& layout,
                       const int64_t* slots, size_t num_slots, uint64_t stream, std::unique_ptr<PendingLoad>* out) {
  std::vector<ChunkKey> keys;
  LMC_RETURN_IF_ERROR(KeysFor(rt, tokens, num_tokens, num_slots, /*store=*/false, &keys));
  return rt.BeginLoad(keys, layout, slots, num_slots, stream, out);
}

Status LoadKeys(CacheRuntime& rt, const std::vector<ChunkKey>& keys, const KVLayout& layout, const int64_t* slots,
                size_t num_slots, size_t* loaded_tokens, uint64_t stream) {
  *loaded_tokens = 0;
  std::unique_ptr<PendingLoad> load;
  LMC_RETURN_IF_ERROR(rt.BeginLoad(keys, layout, slots, num_slots, stream, &load));
  const Status moved = load->LoadLayers(load->num_layers());
  const Status released = load->Finish();  // also when the copy failed: the references go back
  LMC_RETURN_IF_ERROR(moved);
  LMC_RETURN_IF_ERROR(released);
  *loaded_tokens = load->tokens();
  return Status::Ok();
}

Status LoadTokens(CacheRuntime& rt, const uint32_t* tokens, size_t num_tokens, const KVLayout& layout,
                  const int64_t* slots, size_t num_slots, size_t* loaded_tokens, uint64_t stream) {
  *loaded_tokens = 0;
  std::vector<ChunkKey> keys;
  LMC_RETURN_IF_ERROR(KeysFor(rt, tokens, num_tokens, num_slots, /*store=*/false, &keys));
  return LoadKeys(rt, keys, layout, slots, num_slots, loaded_tokens, stream);
}

Status PinTokens(CacheRuntime& rt, const uint32_t* tokens, size_t n, size_t* count) {
  *count = 0;
  std::vector<ChunkKey> keys;
  LMC_RETURN_IF_ERROR(rt.ComputeKeys(tokens, n, &keys));
  return rt.Pin(keys, count);
}

Status UnpinTokens(CacheRuntime& rt, const uint32_t* tokens, size_t n, size_t* count) {
  *count = 0;
  std::vector<ChunkKey> keys;
  LMC_RETURN_IF_ERROR(rt.ComputeKeys(tokens, n, &keys));
  return rt.Unpin(keys, count);
}

}  // namespace lmcache
