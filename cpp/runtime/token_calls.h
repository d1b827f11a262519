// Token-addressed calls, for callers that hold a request's tokens and make a
// single call with them (the C API's one-shot calls, tests, tools): each
// computes the keys once (CacheRuntime::ComputeKeys) and makes the
// key-addressed call. An engine that looks up, loads and stores the same
// request computes its keys once itself and keeps them instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "cache_runtime.h"

namespace lmcache {

// *hit_tokens: leading tokens of tokens[0, n) cached (a multiple of chunk_size).
Status LookupTokens(CacheRuntime& rt, const uint32_t* tokens, size_t n, size_t* hit_tokens);

// Stores the whole chunks of tokens[0, num_slots) (num_slots <= num_tokens).
Status BeginStoreTokens(CacheRuntime& rt, const uint32_t* tokens, size_t num_tokens, const KVLayout& layout,
                        const int64_t* slots, size_t num_slots, uint64_t stream, std::unique_ptr<PendingStore>* out);
Status StoreTokens(CacheRuntime& rt, const uint32_t* tokens, size_t num_tokens, const KVLayout& layout,
                   const int64_t* slots, size_t num_slots, size_t* stored_tokens, uint64_t stream = 0);

// Loads the cached prefix of tokens[0, num_tokens) into the first num_slots tokens' slots.
Status BeginLoadTokens(CacheRuntime& rt, const uint32_t* tokens, size_t num_tokens, const KVLayout& layout,
                       const int64_t* slots, size_t num_slots, uint64_t stream, std::unique_ptr<PendingLoad>* out);
Status LoadTokens(CacheRuntime& rt, const uint32_t* tokens, size_t num_tokens, const KVLayout& layout,
                  const int64_t* slots, size_t num_slots, size_t* loaded_tokens, uint64_t stream = 0);

// One-shot calls on keys: BeginStore + Finish, BeginLoad + every layer + Finish.
Status StoreKeys(CacheRuntime& rt, const std::vector<ChunkKey>& keys, const KVLayout& layout, const int64_t* slots,
                 size_t num_slots, size_t* stored_tokens, uint64_t stream = 0);
Status LoadKeys(CacheRuntime& rt, const std::vector<ChunkKey>& keys, const KVLayout& layout, const int64_t* slots,
                size_t num_slots, size_t* loaded_tokens, uint64_t stream = 0);

Status PinTokens(CacheRuntime& rt, const uint32_t* tokens, size_t n, size_t* count);
Status UnpinTokens(CacheRuntime& rt, const uint32_t* tokens, size_t n, size_t* count);

}  // namespace lmcache
