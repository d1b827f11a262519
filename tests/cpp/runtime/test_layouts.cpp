// Layout round trips: store from one paged cache, load into a zeroed cache
// (same or another layout, other blocks), and compare every byte with what
// plain index arithmetic says must be there.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cache_runtime.h"
#include "token_calls.h"
#include "check.h"
#include "kv_test_cache.h"

using namespace lmcache;
using namespace lmcache::testing;

namespace {

constexpr uint32_t kChunk = 16;

std::unique_ptr<CacheRuntime> NewRuntime(uint32_t chunk = kChunk) {
  RuntimeOptions o;
  o.chunk_size = chunk;
  o.l1_capacity_bytes = 64 << 20;
  o.num_threads = 4;
  o.model_id = "test-model";
  o.verify_l1_checksums = true;
  std::unique_ptr<CacheRuntime> rt;
  CHECK_OK(CacheRuntime::Create(o, &rt));
  return rt;
}

std::vector<uint32_t> ShuffledBlocks(uint32_t n, uint32_t seed) {
  std::vector<uint32_t> b(n);
  std::iota(b.begin(), b.end(), 0);
  std::shuffle(b.begin(), b.end(), std::mt19937(seed));
  return b;
}

// Store 53 tokens from `src_order`, load them into `dst_order`, check bytes.
void RoundTrip(const std::string& src_order, const std::string& dst_order, const CacheDims& dims,
               size_t num_load_slots, bool skip_some) {
  TestCache src(src_order, dims), dst(dst_order, dims), expected(dst_order, dims);
  src.FillRandom(42);
  const size_t n = 3 * kChunk + 5;  // a trailing partial chunk is never stored
  std::vector<uint32_t> tokens(n);
  for (size_t i = 0; i < n; ++i) tokens[i] = uint32_t(i * 7 + 3);
  const auto src_slots = SlotsFromBlocks(ShuffledBlocks(dims.blocks, 1), dims.block_size, n);
  auto dst_slots = SlotsFromBlocks(ShuffledBlocks(dims.blocks, 2), dims.block_size, num_load_slots);
  if (skip_some) {
    for (size_t i = 0; i < num_load_slots; i += 5) dst_slots[i] = -1;  // the engine already has these
  }

  auto rt = NewRuntime();
  const KVLayout src_layout = src.Layout(), dst_layout = dst.Layout();
  CHECK_OK(rt->RegisterLayout(src_layout));
  size_t stored = 0, loaded = 0, hit = 0;
  CHECK_OK(StoreTokens(*rt, tokens.data(), n, src_layout, src_slots.data(), n, &stored));
  CHECK(stored == 3 * kChunk);
  CHECK_OK(LookupTokens(*rt, tokens.data(), n, &hit));
  CHECK(hit == 3 * kChunk);
  CHECK_OK(LoadTokens(*rt, tokens.data(), n, dst_layout, dst_slots.data(), num_load_slots, &loaded));
  const size_t want = std::min<size_t>(num_load_slots, 3 * kChunk);
  CHECK(loaded == want);

  for (size_t i = 0; i < want; ++i) {
    if (dst_slots[i] < 0) continue;
    for (uint32_t l = 0; l < dims.layers; ++l)
      for (uint32_t p = 0; p < dims.planes; ++p)
        for (uint32_t h = 0; h < dims.heads; ++h)
          std::memcpy(expected.Vec(l, p, dst_slots[i], h), src.Vec(l, p, src_slots[i], h), src.vec_bytes());
  }
  CHECK(dst.SameBytes(expected));  // right bytes in the right places, nothing else touched
}

void TestAllLayouts() {
  struct Case {
    const char* name;
    const char* order;
    uint32_t planes, heads;
  };
  const Case cases[] = {
      {"vLLM flash-attention (2, blocks, block_size, heads, dim)", "PBTHD", 2, 4},
      {"FlashInfer NHD (blocks, 2, block_size, heads, dim)", "BPTHD", 2, 4},
      {"FlashInfer HND / permuted view (blocks, 2, heads, block_size, dim)", "BPHTD", 2, 4},
      {"SGLang layer_first (2, layers, slots, heads, dim)", "PLSHD", 2, 4},
      {"SGLang page_first (2, slots, layers, heads, dim)", "PSLHD", 2, 4},
      {"SGLang page_first_direct (2, pages, layers, page_size, heads, dim)", "PBLTHD", 2, 4},
      {"MLA single plane, vLLM (blocks, block_size, dim)", "BTHD", 1, 1},
      {"MLA single plane, SGLang layer_first (layers, slots, 1, dim)", "LSHD", 1, 1},
  };
  for (DType dtype : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    for (const Case& c : cases) {
      CacheDims d;
      d.layers = 3;
      d.planes = c.planes;
      d.heads = c.heads;
      d.head_dim = 32;
      d.block_size = 8;
      d.blocks = 16;
      d.dtype = dtype;
      RoundTrip(c.order, c.order, d, 3 * kChunk + 5, false);  // full load
      RoundTrip(c.order, c.order, d, 2 * kChunk + 3, true);   // partial load, some tokens skipped
      std::printf("  ok: %s, %s\n", c.name, DTypeName(dtype));
    }
  }
}

void TestAcrossLayouts() {
  // Token-major payloads do not depend on the engine's arrangement: a chunk
  // stored from vLLM's layout loads into FlashInfer's or SGLang's.
  CacheDims d;
  d.heads = 4;
  d.head_dim = 64;
  RoundTrip("PBTHD", "BPHTD", d, 3 * kChunk, false);
  RoundTrip("BPTHD", "PLSHD", d, 3 * kChunk, false);
  RoundTrip("PSLHD", "PBTHD", d, 3 * kChunk, true);
  std::printf("  ok: across layouts\n");
}

// Opaque blocks (vLLM CPU attention): blocks move whole, in the engine's own arrangement.
void TestOpaqueBlocks() {
  CacheDims d;
  d.layers = 2;
  d.heads = 2;
  d.head_dim = 32;
  d.block_size = 8;
  d.blocks = 12;
  d.dtype = DType::kFloat32;
  // One buffer per layer of (blocks, heads, block_size, 2*head_dim): "BTHD" with
  // planes folded into D is enough to get the byte sizes right.
  TestCache src("BHTD", CacheDims{d.layers, 1, d.blocks, d.block_size, d.heads, 2 * d.head_dim, d.dtype});
  TestCache dst("BHTD", CacheDims{d.layers, 1, d.blocks, d.block_size, d.heads, 2 * d.head_dim, d.dtype});
  src.FillRandom(9);
  auto opaque = [&](TestCache& c) {
    KVLayout l = c.Layout();
    l.num_planes = 2;
    l.head_dim = d.head_dim;
    l.opaque_block_bytes = uint64_t(2) * d.block_size * d.heads * d.head_dim * 4;
    l.stride_plane = l.stride_head = l.stride_token = 0;
    return l;
  };
  auto rt = NewRuntime();
  const KVLayout sl = opaque(src), dl = opaque(dst);
  CHECK_OK(rt->RegisterLayout(sl));
  const size_t n = 2 * kChunk;
  std::vector<uint32_t> tokens(n, 5);
  const std::vector<uint32_t> src_blocks = {3, 7, 1, 10}, dst_blocks = {0, 2, 11, 4};
  const auto ss = SlotsFromBlocks(src_blocks, d.block_size, n), ds = SlotsFromBlocks(dst_blocks, d.block_size, n);
  size_t stored = 0, loaded = 0;
  CHECK_OK(StoreTokens(*rt, tokens.data(), n, sl, ss.data(), n, &stored));
  CHECK(stored == n);
  // Load all but the last token: the last block still moves whole.
  CHECK_OK(LoadTokens(*rt, tokens.data(), n, dl, ds.data(), n - 1, &loaded));
  CHECK(loaded == n - 1);
  const uint64_t block_bytes = sl.opaque_block_bytes;
  for (size_t j = 0; j < src_blocks.size(); ++j) {
    for (uint32_t l = 0; l < d.layers; ++l) {
      CHECK(std::memcmp(dst.Vec(l, 0, uint64_t(dst_blocks[j]) * d.block_size, 0),
                        src.Vec(l, 0, uint64_t(src_blocks[j]) * d.block_size, 0), block_bytes) == 0);
    }
  }
  // Slots that do not cover whole blocks in order are refused, and leave nothing behind.
  auto bad = ss;
  std::swap(bad[0], bad[1]);
  std::vector<uint32_t> other(n, 6);
  CHECK_CODE(StoreTokens(*rt, other.data(), n, sl, bad.data(), n, &stored), StatusCode::kInvalidArgument);
  size_t hit = 1;
  CHECK_OK(LookupTokens(*rt, other.data(), n, &hit));
  CHECK(hit == 0);
  // A chunk size that is not a multiple of the block size is refused up front.
  auto rt2 = NewRuntime(12);
  CHECK_CODE(rt2->RegisterLayout(sl), StatusCode::kInvalidArgument);
  std::printf("  ok: opaque blocks\n");
}

void TestBadInput() {
  CacheDims d;
  TestCache c("PBTHD", d);
  auto rt = NewRuntime();
  const KVLayout layout = c.Layout();
  std::vector<uint32_t> tokens(kChunk, 1);
  std::vector<int64_t> slots(kChunk, 0);
  size_t out = 0;
  // Before the shape is known.
  CHECK_CODE(LookupTokens(*rt, tokens.data(), kChunk, &out), StatusCode::kInvalidState);
  CHECK_OK(rt->RegisterLayout(layout));
  // A slot past the end of the cache.
  slots[3] = int64_t(d.blocks) * d.block_size;
  CHECK_CODE(StoreTokens(*rt, tokens.data(), kChunk, layout, slots.data(), kChunk, &out), StatusCode::kInvalidArgument);
  CHECK_CODE(LoadTokens(*rt, tokens.data(), kChunk, layout, slots.data(), kChunk, &out), StatusCode::kInvalidArgument);
  slots[3] = 0;
  // More slots than tokens.
  CHECK_CODE(StoreTokens(*rt, tokens.data(), kChunk - 1, layout, slots.data(), kChunk, &out), StatusCode::kInvalidArgument);
  // A layout of another shape.
  CacheDims other = d;
  other.heads = 3;
  TestCache c2("PBTHD", other);
  CHECK_CODE(StoreTokens(*rt, tokens.data(), kChunk, c2.Layout(), slots.data(), kChunk, &out), StatusCode::kInvalidArgument);
  KVLayout broken = layout;
  broken.layer_base.pop_back();
  CHECK_CODE(LoadTokens(*rt, tokens.data(), kChunk, broken, slots.data(), kChunk, &out), StatusCode::kInvalidArgument);
  broken = layout;
  broken.dtype = static_cast<DType>(77);
  CHECK_CODE(broken.Validate(), StatusCode::kInvalidArgument);
  // Closed.
  rt->Close();
  CHECK_CODE(LookupTokens(*rt, tokens.data(), kChunk, &out), StatusCode::kClosed);
  std::printf("  ok: bad input\n");
}

void TestCorruptionIsAMiss() {
  CacheDims d;
  TestCache src("PBTHD", d), dst("PBTHD", d);
  src.FillRandom(3);
  auto rt = NewRuntime();
  const KVLayout sl = src.Layout(), dl = dst.Layout();
  CHECK_OK(rt->RegisterLayout(sl));
  const size_t n = 2 * kChunk;
  std::vector<uint32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), 100);
  const auto slots = SlotsFromBlocks(ShuffledBlocks(d.blocks, 5), d.block_size, n);
  size_t out = 0;
  CHECK_OK(StoreTokens(*rt, tokens.data(), n, sl, slots.data(), n, &out));
  std::vector<ChunkKey> keys;
  CHECK_OK(rt->ComputeKeys(tokens.data(), n, &keys));
  CHECK_OK(rt->CorruptChunkForTesting(keys[1]));
  CHECK_OK(LoadTokens(*rt, tokens.data(), n, dl, slots.data(), n, &out));
  CHECK(out == kChunk);  // chunk 0 loads, the corrupt chunk 1 does not
  CHECK(rt->Stats().load_errors == 1);
  CHECK_OK(LookupTokens(*rt, tokens.data(), n, &out));
  CHECK(out == kChunk);  // and it was dropped
  std::printf("  ok: corruption is a miss\n");
}

}  // namespace

int main() {
  TestAllLayouts();
  TestAcrossLayouts();
  TestOpaqueBlocks();
  TestBadInput();
  TestCorruptionIsAMiss();
  std::puts("test_layouts: ok");
  return 0;
}
