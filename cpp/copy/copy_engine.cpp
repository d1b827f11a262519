#include "copy_engine.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "chunk_format.h"

namespace lmcache {

namespace {

enum class Direction { kGather, kScatter };

// Moves one layer of one chunk. Runs of consecutive slots inside one block are
// moved with one memcpy when the layout keeps a block's tokens back to back.
template <Direction dir>
void CopyLayer(const KVLayout& layout, const ChunkTransfer& chunk, uint32_t layer, uint8_t* layer_payload,
               LayerHasher* hasher) {
  const uint64_t token_bytes = layout.token_bytes();
  const bool tokens_contiguous = layout.tokens_contiguous();
  const bool heads_contiguous = layout.heads_contiguous();
  const uint64_t head_bytes = uint64_t(layout.head_dim) * layout.elem_size();
  const uint64_t bs = layout.block_size;
  const uint32_t n = chunk.num_tokens;

  for (uint32_t plane = 0; plane < layout.num_planes; ++plane) {
    uint8_t* plane_payload = layer_payload + uint64_t(plane) * chunk.payload_tokens * token_bytes;
    uint32_t t = 0;
    while (t < n) {
      const int64_t slot = chunk.slots[t];
      if (slot < 0) {  // scatter only: skip
        ++t;
        continue;
      }
      uint32_t run = 1;
      if (tokens_contiguous) {
        while (t + run < n && chunk.slots[t + run] == slot + run && uint64_t(slot) / bs == uint64_t(slot + run) / bs) {
          ++run;
        }
      }
      uint8_t* engine = layout.TokenAddress(layer, plane, uint64_t(slot));
      uint8_t* stored = plane_payload + uint64_t(t) * token_bytes;
      if (heads_contiguous) {
        if constexpr (dir == Direction::kGather) {
          std::memcpy(stored, engine, run * token_bytes);
          if (hasher) hasher->Update(stored, run * token_bytes);
        } else {
          std::memcpy(engine, stored, run * token_bytes);
        }
      } else {  // run == 1 here: heads are strided
        for (uint32_t h = 0; h < layout.num_heads; ++h) {
          uint8_t* e = engine + int64_t(h) * layout.stride_head;
          uint8_t* s = stored + h * head_bytes;
          if constexpr (dir == Direction::kGather) {
            std::memcpy(s, e, head_bytes);
            if (hasher) hasher->Update(s, head_bytes);
          } else {
            std::memcpy(e, s, head_bytes);
          }
        }
      }
      t += run;
    }
  }
}

// Opaque blocks: block j of the chunk covers tokens [j*bs, (j+1)*bs); it moves
// whole if any of its tokens wants moving (the caller checked that the slots
// of one block agree on the block and on the offsets).
template <Direction dir>
void CopyLayerBlocks(const KVLayout& layout, const ChunkTransfer& chunk, uint32_t layer, uint8_t* layer_payload,
                     LayerHasher* hasher) {
  const uint32_t bs = layout.block_size;
  const uint64_t bytes = layout.opaque_block_bytes;
  for (uint32_t first = 0, j = 0; first < chunk.num_tokens; first += bs, ++j) {
    const uint32_t end = std::min(first + bs, chunk.num_tokens);
    int64_t slot = -1;
    for (uint32_t t = first; t < end && slot < 0; ++t) slot = chunk.slots[t];
    if (slot < 0) continue;
    uint8_t* engine = reinterpret_cast<uint8_t*>(layout.layer_base[layer]) + int64_t(slot / bs) * layout.stride_block;
    uint8_t* stored = layer_payload + uint64_t(j) * bytes;
    if constexpr (dir == Direction::kGather) {
      std::memcpy(stored, engine, bytes);
      if (hasher) hasher->Update(stored, bytes);
    } else {
      std::memcpy(engine, stored, bytes);
    }
  }
}

template <Direction dir>
void CopyChunkLayer(const KVLayout& layout, const ChunkTransfer& chunk, uint32_t layer, uint8_t* layer_payload,
                    LayerHasher* hasher = nullptr) {
  if (layout.opaque_blocks()) {
    CopyLayerBlocks<dir>(layout, chunk, layer, layer_payload, hasher);
  } else {
    CopyLayer<dir>(layout, chunk, layer, layer_payload, hasher);
  }
}

}  // namespace

bool BlockSlotsConsistent(const int64_t* slots, uint32_t n, uint32_t bs, bool allow_negative) {
  for (uint32_t first = 0; first < n; first += bs) {
    const uint32_t end = std::min(first + bs, n);
    int64_t block = -1;
    for (uint32_t t = first; t < end; ++t) {
      if (slots[t] < 0) {
        if (!allow_negative) return false;
        continue;
      }
      if (uint64_t(slots[t]) % bs != t - first) return false;
      if (block >= 0 && slots[t] / bs != block) return false;
      block = slots[t] / bs;
    }
  }
  return true;
}

void CopyEngine::Gather(const KVLayout& layout, std::vector<ChunkTransfer>& chunks) {
  const uint32_t layers = layout.num_layers;
  const size_t items = chunks.size() * layers;
  // Per-(chunk, layer) digests, combined per chunk once all layers are done.
  std::unique_ptr<uint64_t[]> layer_sums(new uint64_t[items]);
  pool_->ParallelFor(items, [&](size_t i) {
    const ChunkTransfer& c = chunks[i / layers];
    const uint32_t layer = static_cast<uint32_t>(i % layers);
    const uint64_t layer_bytes = uint64_t(layout.num_planes) * c.payload_tokens * layout.token_bytes();
    uint8_t* dst = c.payload + layer * layer_bytes;
    if (c.checksum_out == nullptr) {  // no checksum wanted now (see chunk_format.h)
      CopyChunkLayer<Direction::kGather>(layout, c, layer, dst);
      return;
    }
    // Each run is hashed right after it is copied, while it is in this core's L1.
    LayerHasher hasher;
    CopyChunkLayer<Direction::kGather>(layout, c, layer, dst, &hasher);
    layer_sums[i] = hasher.Digest();
  });
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (chunks[c].checksum_out) *chunks[c].checksum_out = CombineLayerChecksums(&layer_sums[c * layers], layers);
  }
}

void CopyEngine::Scatter(const KVLayout& layout, const std::vector<ChunkTransfer>& chunks, uint32_t first_layer,
                         uint32_t layer_count) {
  if (first_layer >= layout.num_layers) return;
  const uint32_t layers = std::min(layer_count, layout.num_layers - first_layer);
  pool_->ParallelFor(chunks.size() * layers, [&](size_t i) {
    const ChunkTransfer& c = chunks[i / layers];
    const uint32_t layer = first_layer + static_cast<uint32_t>(i % layers);
    const uint64_t layer_bytes = uint64_t(layout.num_planes) * c.payload_tokens * layout.token_bytes();
    CopyChunkLayer<Direction::kScatter>(layout, c, layer, c.payload + layer * layer_bytes);
  });
}

}  // namespace lmcache
