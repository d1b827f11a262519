// Stress: 6 threads storing, looking up, loading, pinning and clearing at
// once on a host tier far smaller than the working set, so eviction runs all
// the time. Every loaded byte is checked against the pattern its document
// was stored with.
#include <atomic>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "cache_runtime.h"
#include "token_calls.h"
#include "check.h"
#include "kv_test_cache.h"

using namespace lmcache;
using namespace lmcache::testing;

namespace {

constexpr uint32_t kChunk = 32;
constexpr uint32_t kChunksPerDoc = 4;
constexpr uint32_t kDocs = 24;
constexpr size_t kDocTokens = kChunk * kChunksPerDoc;

uint64_t Pattern(uint32_t doc, size_t token, uint32_t layer, uint32_t plane, uint32_t head) {
  uint64_t x = (uint64_t(doc) << 40) ^ (uint64_t(token) << 20) ^ (layer << 8) ^ (plane << 4) ^ head;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x | 1;
}

std::vector<uint32_t> DocTokens(uint32_t doc) {
  std::vector<uint32_t> t(kDocTokens);
  for (size_t i = 0; i < kDocTokens; ++i) t[i] = doc * 100000 + uint32_t(i);
  return t;
}

void WriteDoc(TestCache& c, uint32_t doc, const std::vector<int64_t>& slots) {
  const CacheDims& d = c.dims();
  for (size_t i = 0; i < slots.size(); ++i)
    for (uint32_t l = 0; l < d.layers; ++l)
      for (uint32_t p = 0; p < d.planes; ++p)
        for (uint32_t h = 0; h < d.heads; ++h) {
          uint64_t* v = reinterpret_cast<uint64_t*>(c.Vec(l, p, uint64_t(slots[i]), h));
          const uint64_t pat = Pattern(doc, i, l, p, h);
          for (size_t w = 0; w < c.vec_bytes() / 8; ++w) v[w] = pat + w;
        }
}

bool CheckDoc(TestCache& c, uint32_t doc, const std::vector<int64_t>& slots, size_t n) {
  const CacheDims& d = c.dims();
  for (size_t i = 0; i < n; ++i)
    for (uint32_t l = 0; l < d.layers; ++l)
      for (uint32_t p = 0; p < d.planes; ++p)
        for (uint32_t h = 0; h < d.heads; ++h) {
          const uint64_t* v = reinterpret_cast<const uint64_t*>(c.Vec(l, p, uint64_t(slots[i]), h));
          const uint64_t pat = Pattern(doc, i, l, p, h);
          for (size_t w = 0; w < c.vec_bytes() / 8; ++w)
            if (v[w] != pat + w) return false;
        }
  return true;
}

}  // namespace

int main() {
  RuntimeOptions o;
  o.chunk_size = kChunk;
  o.num_threads = 3;
  o.model_id = "stress";
  CacheDims dims;
  dims.layers = 4;
  dims.heads = 2;
  dims.head_dim = 32;
  dims.block_size = 16;
  dims.blocks = 2 * kDocTokens / 16;  // room for one document to store from and one to load into
  dims.dtype = DType::kBFloat16;
  const uint64_t chunk_bytes = uint64_t(dims.layers) * 2 * kChunk * dims.heads * dims.head_dim * 2 + 64;
  o.l1_capacity_bytes = 20 * ((chunk_bytes + 4095) / 4096 * 4096);  // 20 slabs for 96 chunks of working set
  std::unique_ptr<CacheRuntime> rt;
  CHECK_OK(CacheRuntime::Create(o, &rt));
  {
    TestCache probe("PBTHD", dims);
    CHECK_OK(rt->RegisterLayout(probe.Layout()));
  }

  std::atomic<uint64_t> checked_loads{0}, bad{0}, ops{0};
  auto worker = [&](uint32_t id) {
    std::mt19937 rng(id);
    TestCache cache("PBTHD", dims);  // this thread's own "engine"
    const KVLayout layout = cache.Layout();
    std::vector<uint32_t> store_blocks, load_blocks;
    for (uint32_t b = 0; b < dims.blocks / 2; ++b) store_blocks.push_back(b);
    for (uint32_t b = dims.blocks / 2; b < dims.blocks; ++b) load_blocks.push_back(b);
    const auto store_slots = SlotsFromBlocks(store_blocks, dims.block_size, kDocTokens);
    const auto load_slots = SlotsFromBlocks(load_blocks, dims.block_size, kDocTokens);
    for (int iter = 0; iter < 400; ++iter) {
      const uint32_t doc = rng() % kDocs;
      const auto tokens = DocTokens(doc);
      size_t out = 0;
      switch (rng() % 6) {
        case 0:
        case 1: {
          WriteDoc(cache, doc, store_slots);
          if (!StoreTokens(*rt, tokens.data(), kDocTokens, layout, store_slots.data(), kDocTokens, &out).ok()) bad++;
          break;
        }
        case 2: {
          if (!LookupTokens(*rt, tokens.data(), kDocTokens, &out).ok() || out % kChunk != 0) bad++;
          break;
        }
        case 3:
        case 4: {
          cache.Zero();
          if (!LoadTokens(*rt, tokens.data(), kDocTokens, layout, load_slots.data(), kDocTokens, &out).ok()) bad++;
          if (!CheckDoc(cache, doc, load_slots, out)) bad++;
          checked_loads += out > 0;
          break;
        }
        case 5: {
          size_t pinned = 0, unpinned = 0;
          if (!PinTokens(*rt, tokens.data(), kChunk, &pinned).ok()) bad++;
          if (!UnpinTokens(*rt, tokens.data(), kChunk, &unpinned).ok()) bad++;
          if (id == 0 && iter % 50 == 0 && !rt->Clear(&out).ok()) bad++;
          break;
        }
      }
      ops++;
    }
  };
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < 6; ++t) threads.emplace_back(worker, t);
  for (auto& t : threads) t.join();

  const RuntimeStats s = rt->Stats();
  std::printf("ops=%llu checked_loads=%llu stored=%llu evicted=%llu dropped=%llu chunks=%llu\n",
              (unsigned long long)ops.load(), (unsigned long long)checked_loads.load(),
              (unsigned long long)s.stored_chunks, (unsigned long long)s.evicted_chunks,
              (unsigned long long)s.store_dropped_chunks, (unsigned long long)s.l1_chunks);
  CHECK(bad.load() == 0);
  // The test really exercised hits (how many depends on how the threads interleave:
  // 40 to 60 of 800 loads are typical, so the bound leaves room).
  CHECK(checked_loads.load() > 10);
  CHECK(s.evicted_chunks > 0);       // and eviction
  CHECK(s.l1_chunks <= 20);
  CHECK(s.load_errors == 0);
  rt->Close();
  std::puts("test_stress: ok");
  return 0;
}
