// CPU copy engine: moves chunks between an engine's paged KV cache (described
// by a KVLayout) and stored chunk payloads. One call moves a whole batch of
// chunks; work is split by (chunk, layer) over the thread pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kv_layout.h"
#include "thread_pool.h"

namespace lmcache {

// One chunk to move. The payload holds `payload_tokens` tokens; the first
// `num_tokens` of them move, token t to or from engine slot `slots[t]`.
struct ChunkTransfer {
  uint8_t* payload = nullptr;
  const int64_t* slots = nullptr;
  uint32_t payload_tokens = 0;
  uint32_t num_tokens = 0;
  // Gather only: receives the payload checksum (see chunk_format.h); null: not computed.
  uint64_t* checksum_out = nullptr;
};

// Opaque-block layouts move whole blocks, so the slots of the tokens that one
// block of a chunk covers must name one engine block, in order: slot t is
// block*bs + (t % bs). Negative slots (skipped tokens) are allowed when
// allow_negative.
bool BlockSlotsConsistent(const int64_t* slots, uint32_t num_tokens, uint32_t block_size, bool allow_negative);

class CopyEngine {
 public:
  explicit CopyEngine(ThreadPool* pool) : pool_(pool) {}

  // Engine cache -> payloads. Every slot must be valid (checked by the caller),
  // and with opaque blocks each block's slots must agree (BlockSlotsConsistent).
  void Gather(const KVLayout& layout, std::vector<ChunkTransfer>& chunks);

  // Payloads -> engine cache, layers [first_layer, first_layer + layer_count)
  // (by default all). Tokens whose slot is negative are skipped (the engine
  // already has them or does not want them).
  void Scatter(const KVLayout& layout, const std::vector<ChunkTransfer>& chunks, uint32_t first_layer = 0,
               uint32_t layer_count = UINT32_MAX);

 private:
  ThreadPool* pool_;
};

}  // namespace lmcache
