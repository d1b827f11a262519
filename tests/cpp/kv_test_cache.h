// Test helper: a paged KV cache laid out by a string of dimensions, with an
// address function computed independently of KVLayout::TokenAddress, so the
// tests check the descriptor against plain index arithmetic.
//
// Dimension letters, outermost first:
//   L layer   P plane (K/V)   B block   T token-in-block   S slot (B*T merged)
//   H head    D head_dim (must be last)
// Without 'L' there is one buffer per layer (vLLM); with 'L' one buffer holds
// every layer (SGLang host pools).
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kv_layout.h"

namespace lmcache::testing {

struct CacheDims {
  uint32_t layers = 2, planes = 2, blocks = 16, block_size = 8, heads = 2, head_dim = 16;
  DType dtype = DType::kBFloat16;
};

class TestCache {
 public:
  TestCache(const std::string& order, const CacheDims& d) : order_(order), d_(d) {
    es_ = DTypeSize(d.dtype);
    std::map<char, uint64_t> size = {{'L', d.layers}, {'P', d.planes}, {'B', d.blocks}, {'T', d.block_size},
                                     {'S', uint64_t(d.blocks) * d.block_size}, {'H', d.heads}, {'D', d.head_dim}};
    uint64_t stride = es_;
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      stride_[*it] = stride;
      stride *= size[*it];
    }
    const bool shared = order.find('L') != std::string::npos;
    buffers_.assign(shared ? 1 : d.layers, std::vector<uint8_t>(stride, 0));
  }

  void FillRandom(uint32_t seed) {
    std::mt19937 rng(seed);
    for (auto& b : buffers_)
      for (auto& x : b) x = static_cast<uint8_t>(rng() | 1);  // never 0: untouched bytes stay visible
  }

  KVLayout Layout() const {
    KVLayout l;
    l.num_layers = d_.layers;
    l.num_planes = d_.planes;
    l.num_heads = d_.heads;
    l.head_dim = d_.head_dim;
    l.dtype = d_.dtype;
    l.block_size = d_.block_size;
    l.num_blocks = d_.blocks;
    l.stride_plane = Stride('P');
    l.stride_head = Stride('H');
    if (Has('S')) {
      l.stride_token = Stride('S');
      l.stride_block = Stride('S') * d_.block_size;
    } else {
      l.stride_token = Stride('T');
      l.stride_block = Stride('B');
    }
    for (uint32_t layer = 0; layer < d_.layers; ++layer) {
      l.layer_base.push_back(Has('L') ? reinterpret_cast<uint64_t>(buffers_[0].data()) + layer * Stride('L')
                                      : reinterpret_cast<uint64_t>(buffers_[layer].data()));
    }
    return l;
  }

  // Address of the head vector (layer, plane, slot, head): plain arithmetic on the dimension order.
  uint8_t* Vec(uint32_t layer, uint32_t plane, uint64_t slot, uint32_t head) {
    const std::map<char, uint64_t> idx = {{'L', layer}, {'P', plane}, {'B', slot / d_.block_size},
                                          {'T', slot % d_.block_size}, {'S', slot}, {'H', head}, {'D', 0}};
    uint64_t off = 0;
    for (char c : order_) off += idx.at(c) * stride_.at(c);
    return buffers_[Has('L') ? 0 : layer].data() + off;
  }

  uint64_t vec_bytes() const { return uint64_t(d_.head_dim) * es_; }
  const CacheDims& dims() const { return d_; }
  bool SameBytes(const TestCache& o) const { return buffers_ == o.buffers_; }
  void Zero() {
    for (auto& b : buffers_) std::memset(b.data(), 0, b.size());
  }

 private:
  bool Has(char c) const { return order_.find(c) != std::string::npos; }
  int64_t Stride(char c) const { return Has(c) ? int64_t(stride_.at(c)) : 0; }

  std::string order_;
  CacheDims d_;
  uint32_t es_;
  std::map<char, uint64_t> stride_;
  std::vector<std::vector<uint8_t>> buffers_;
};

// A vLLM-style slot mapping: token i lives in block table[i / bs] at offset i % bs.
inline std::vector<int64_t> SlotsFromBlocks(const std::vector<uint32_t>& block_table, uint32_t block_size,
                                            size_t num_tokens) {
  std::vector<int64_t> slots(num_tokens);
  for (size_t i = 0; i < num_tokens; ++i) slots[i] = int64_t(block_table[i / block_size]) * block_size + i % block_size;
  return slots;
}

// Slots [0, n) hold the same vectors in both caches.
inline bool SameSlots(TestCache& a, TestCache& b, size_t n) {
  const CacheDims& d = a.dims();
  for (uint32_t l = 0; l < d.layers; ++l)
    for (uint32_t p = 0; p < d.planes; ++p)
      for (size_t s = 0; s < n; ++s)
        for (uint32_t h = 0; h < d.heads; ++h)
          if (std::memcmp(a.Vec(l, p, s, h), b.Vec(l, p, s, h), a.vec_bytes())) return false;
  return true;
}

}  // namespace lmcache::testing
