// Loads and stores in steps (the CPU side; test_cuda_runtime does the GPU).
// PendingLoad, behind layer-by-layer loading: layers arrive in order and
// only when asked for, referenced chunks survive eviction and clears until
// Finish, a record that fails its check ends the load's prefix, and Close
// finishes loads still open. PendingStore, behind stores a GPU engine does
// not wait for: invisible until finished, then published; Close gives
// unfinished reservations back.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <vector>

#include "cache_runtime.h"
#include "token_calls.h"
#include "check.h"
#include "kv_test_cache.h"

using namespace lmcache;
using namespace lmcache::testing;

namespace {

CacheDims Dims() {
  CacheDims d;
  d.layers = 4;
  d.blocks = 32;
  d.block_size = 8;
  return d;
}

std::unique_ptr<CacheRuntime> MakeRuntime(const KVLayout& layout, uint64_t capacity = 8 << 20, bool verify = false) {
  RuntimeOptions o;
  o.chunk_size = 16;
  o.l1_capacity_bytes = capacity;
  o.num_threads = 2;
  o.verify_l1_checksums = verify;
  std::unique_ptr<CacheRuntime> rt;
  CHECK_OK(CacheRuntime::Create(o, &rt));
  CHECK_OK(rt->RegisterLayout(layout));
  return rt;
}

std::vector<uint32_t> Tokens(size_t n, uint32_t first = 11) {
  std::vector<uint32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// True when every token vector of `layer` at slots[0, n) equals the source's.
bool LayerMatches(TestCache& got, TestCache& want, uint32_t layer, const std::vector<int64_t>& got_slots,
                  const std::vector<int64_t>& want_slots, size_t n) {
  const CacheDims& d = got.dims();
  for (size_t t = 0; t < n; ++t)
    for (uint32_t p = 0; p < d.planes; ++p)
      for (uint32_t h = 0; h < d.heads; ++h)
        if (std::memcmp(got.Vec(layer, p, got_slots[t], h), want.Vec(layer, p, want_slots[t], h), got.vec_bytes()))
          return false;
  return true;
}

bool LayerUntouched(TestCache& got, uint32_t layer, const std::vector<int64_t>& slots, size_t n) {
  const CacheDims& d = got.dims();
  std::vector<uint8_t> zero(got.vec_bytes(), 0);
  for (size_t t = 0; t < n; ++t)
    for (uint32_t p = 0; p < d.planes; ++p)
      for (uint32_t h = 0; h < d.heads; ++h)
        if (std::memcmp(got.Vec(layer, p, slots[t], h), zero.data(), zero.size())) return false;
  return true;
}

void TestLayersArriveInOrder() {
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(3);
  auto rt = MakeRuntime(src.Layout());
  const size_t n = 64;
  const auto tokens = Tokens(n);
  const auto slots = SlotsFromBlocks({5, 1, 9, 2, 7, 3, 8, 0}, 8, n);
  size_t stored = 0;
  CHECK_OK(StoreTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, &stored));
  CHECK(stored == n);

  const auto dst_slots = SlotsFromBlocks({20, 21, 22, 23, 24, 25, 26, 27}, 8, n);
  std::unique_ptr<PendingLoad> load;
  {
    std::vector<int64_t> caller_slots = dst_slots;  // the handle keeps its own copy
    CHECK_OK(BeginLoadTokens(*rt, tokens.data(), n, dst.Layout(), caller_slots.data(), n - 3, 0, &load));
  }
  CHECK(load->tokens() == n - 3 && load->num_layers() == 4 && load->layers_done() == 0);
  for (uint32_t l = 0; l < 4; ++l) CHECK(LayerUntouched(dst, l, dst_slots, n));  // Begin moves nothing

  CHECK_OK(load->LoadLayers(1));
  CHECK(LayerMatches(dst, src, 0, dst_slots, slots, n - 3));
  for (uint32_t l = 1; l < 4; ++l) CHECK(LayerUntouched(dst, l, dst_slots, n));
  CHECK_OK(load->LoadLayers(1));  // nothing new: idempotent
  CHECK_OK(load->LoadLayers(3));
  CHECK(LayerMatches(dst, src, 2, dst_slots, slots, n - 3) && LayerUntouched(dst, 3, dst_slots, n));
  CHECK_OK(load->LoadLayers(100));  // clamped
  CHECK(load->layers_done() == 4);
  for (uint32_t l = 0; l < 4; ++l) CHECK(LayerMatches(dst, src, l, dst_slots, slots, n - 3));
  CHECK(LayerUntouched(dst, 0, {dst_slots[n - 1]}, 1));  // past num_slots: not written
  CHECK_OK(load->Finish());
  CHECK_OK(load->Finish());  // idempotent
  CHECK_CODE(load->LoadLayers(4), StatusCode::kInvalidState);
  const RuntimeStats s = rt->Stats();
  CHECK(s.loaded_tokens == n - 3 && s.loaded_chunks == 4 && s.load_calls == 1);
  std::puts("  ok: layers arrive in order, only when asked for");
}

void TestHeldChunksSurviveEvictionAndClear() {
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(4);
  const KVLayout layout = src.Layout();
  // Room for 4 chunks: a later store of 4 others must evict, but not the held ones.
  const uint64_t record = ChunkShape::FromLayout(layout, 16).record_bytes();
  auto rt = MakeRuntime(layout, 4 * ((record + 4095) / 4096 * 4096));
  const size_t n = 64;
  const auto a = Tokens(n, 100), b = Tokens(n, 900);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3, 4, 5, 6, 7}, 8, n);
  size_t out = 0;
  CHECK_OK(StoreTokens(*rt, a.data(), n, layout, slots.data(), n, &out));
  CHECK(out == n);
  std::unique_ptr<PendingLoad> load;
  CHECK_OK(BeginLoadTokens(*rt, a.data(), n, dst.Layout(), slots.data(), n, 0, &load));
  CHECK(load->tokens() == n);
  CHECK_OK(StoreTokens(*rt, b.data(), n, layout, slots.data(), n, &out));
  CHECK(out == 0);  // no room: every slab is held by the load
  size_t removed = 0;
  CHECK_OK(rt->Clear(&removed));
  CHECK(removed == 0);
  CHECK_OK(load->LoadLayers(4));
  for (uint32_t l = 0; l < 4; ++l) CHECK(LayerMatches(dst, src, l, slots, slots, n));
  load.reset();  // the destructor finishes
  CHECK_OK(rt->Clear(&removed));
  CHECK(removed == 4);
  std::puts("  ok: held chunks survive eviction and clear until finished");
}

void TestCorruptRecordEndsThePrefix() {
  TestCache src("BPHTD", Dims()), dst("BPHTD", Dims());
  src.FillRandom(5);
  auto rt = MakeRuntime(src.Layout(), 8 << 20, /*verify=*/true);
  const size_t n = 64;
  const auto tokens = Tokens(n);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3, 4, 5, 6, 7}, 8, n);
  size_t out = 0;
  CHECK_OK(StoreTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, &out));
  std::vector<ChunkKey> keys;
  CHECK_OK(rt->ComputeKeys(tokens.data(), n, &keys));
  CHECK_OK(rt->CorruptChunkForTesting(keys[2]));
  std::unique_ptr<PendingLoad> load;
  CHECK_OK(BeginLoadTokens(*rt, tokens.data(), n, dst.Layout(), slots.data(), n, 0, &load));
  CHECK(load->tokens() == 32);  // chunks 0 and 1
  CHECK_OK(load->LoadLayers(4));
  CHECK_OK(load->Finish());
  CHECK(rt->Stats().load_errors == 1);
  size_t hit = 0;
  CHECK_OK(LookupTokens(*rt, tokens.data(), n, &hit));
  CHECK(hit == 32);  // the bad record was dropped
  // Nothing cached at all: an empty load, which finishes cleanly.
  const auto other = Tokens(n, 5000);
  CHECK_OK(BeginLoadTokens(*rt, other.data(), n, dst.Layout(), slots.data(), n, 0, &load));
  CHECK(load->tokens() == 0);
  CHECK_OK(load->LoadLayers(4));
  CHECK_OK(load->Finish());
  std::puts("  ok: a record that fails its check ends the prefix; an empty load is fine");
}

void TestBadInput() {
  TestCache src("PBTHD", Dims());
  auto rt = MakeRuntime(src.Layout());
  const auto tokens = Tokens(64);
  std::vector<int64_t> slots(64, 1 << 30);  // outside the cache
  std::unique_ptr<PendingLoad> load;
  CHECK_CODE(BeginLoadTokens(*rt, tokens.data(), 64, src.Layout(), slots.data(), 64, 0, &load), StatusCode::kInvalidArgument);
  CHECK(!load);
  CHECK_CODE(BeginLoadTokens(*rt, tokens.data(), 8, src.Layout(), slots.data(), 64, 0, &load), StatusCode::kInvalidArgument);
  TestCache other("PBTHD", [] { CacheDims d = Dims(); d.heads = 3; return d; }());
  slots.assign(64, 0);
  CHECK_CODE(BeginLoadTokens(*rt, tokens.data(), 64, other.Layout(), slots.data(), 64, 0, &load),
             StatusCode::kInvalidArgument);
  std::puts("  ok: bad input is refused before anything is held");
}

void TestCloseFinishesOpenLoads() {
  TestCache src("PBTHD", Dims());
  src.FillRandom(6);
  auto rt = MakeRuntime(src.Layout());
  const size_t n = 32;
  const auto tokens = Tokens(n);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3}, 8, n);
  size_t out = 0;
  CHECK_OK(StoreTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, &out));
  std::unique_ptr<PendingLoad> a, b;
  CHECK_OK(BeginLoadTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, 0, &a));
  CHECK_OK(BeginLoadTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, 0, &b));
  CHECK_OK(a->LoadLayers(2));
  rt->Close();
  CHECK_CODE(a->LoadLayers(4), StatusCode::kClosed);
  CHECK_OK(a->Finish());
  rt.reset();  // the handles outlive the runtime once it has finished them
  a.reset();
  b.reset();
  std::puts("  ok: close finishes open loads; they may outlive the runtime");
}

void TestStoreIsInvisibleUntilFinished() {
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(7);
  auto rt = MakeRuntime(src.Layout(), 8 << 20, /*verify=*/true);
  const size_t n = 64;
  const auto tokens = Tokens(n);
  const auto slots = SlotsFromBlocks({4, 2, 6, 0, 1, 3, 5, 7}, 8, n);
  std::unique_ptr<PendingStore> store;
  {
    std::vector<int64_t> caller_slots = slots;  // not needed after BeginStore
    CHECK_OK(BeginStoreTokens(*rt, tokens.data(), n + 5, src.Layout(), caller_slots.data(), n, 0, &store));
  }
  CHECK(store->tokens() == n);
  size_t hit = 1, out = 1;
  CHECK_OK(LookupTokens(*rt, tokens.data(), n, &hit));
  CHECK(hit == 0);  // reserved, not published
  CHECK_OK(StoreTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, &out));
  CHECK(out == 0 && rt->Stats().store_skipped_chunks == 4);  // being written by the pending store
  CHECK_OK(store->Finish());
  CHECK_OK(store->Finish());  // idempotent
  CHECK_OK(LookupTokens(*rt, tokens.data(), n, &hit));
  CHECK(hit == n);
  CHECK_OK(LoadTokens(*rt, tokens.data(), n, dst.Layout(), slots.data(), n, &out));  // checksums verified
  CHECK(out == n && rt->Stats().load_errors == 0);
  for (uint32_t l = 0; l < 4; ++l) CHECK(LayerMatches(dst, src, l, slots, slots, n));
  CHECK(rt->Stats().stored_chunks == 4);

  // Dropping an unfinished handle finishes it: the chunks are published.
  const auto more = Tokens(n, 7000);
  CHECK_OK(BeginStoreTokens(*rt, more.data(), n, src.Layout(), slots.data(), n, 0, &store));
  store.reset();
  CHECK_OK(LookupTokens(*rt, more.data(), n, &hit));
  CHECK(hit == n);
  std::puts("  ok: a store is invisible until finished, then published whole");
}

void TestCloseGivesBackOpenStores() {
  TestCache src("PBTHD", Dims());
  src.FillRandom(8);
  auto rt = MakeRuntime(src.Layout());
  const size_t n = 32;
  const auto tokens = Tokens(n);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3}, 8, n);
  std::unique_ptr<PendingStore> store;
  CHECK_OK(BeginStoreTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, 0, &store));
  rt->Close();  // gives the reservations back
  CHECK_OK(store->Finish());  // a no-op now
  rt.reset();
  store.reset();
  // Bad input leaves nothing reserved.
  rt = MakeRuntime(src.Layout());
  std::vector<int64_t> bad(n, 1 << 30);
  CHECK_CODE(BeginStoreTokens(*rt, tokens.data(), n, src.Layout(), bad.data(), n, 0, &store), StatusCode::kInvalidArgument);
  size_t out = 0;
  CHECK_OK(StoreTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, &out));
  CHECK(out == n);
  std::puts("  ok: close gives open stores back; bad input reserves nothing");
}

// A store's reservation is never waited for: neither by a load on the thread
// that would finish the store (a miss instead), nor by a prefetch that Close
// must stop. Reusing an output pointer that holds an open handle is fine.
void TestOpenStoreNeverBlocksOthers() {
  namespace fs = std::filesystem;
  const std::string dir = fs::temp_directory_path() / ("lmcache-pending-" + std::to_string(getpid()));
  fs::remove_all(dir);
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(9);
  RuntimeOptions o;
  o.chunk_size = 16;
  o.l1_capacity_bytes = 8 << 20;
  o.num_threads = 2;
  o.disk_dir = dir;
  o.disk_capacity_bytes = 64 << 20;
  std::unique_ptr<CacheRuntime> rt;
  CHECK_OK(CacheRuntime::Create(o, &rt));
  CHECK_OK(rt->RegisterLayout(src.Layout()));
  const size_t n = 32;
  const auto tokens = Tokens(n);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3}, 8, n);
  size_t out = 0, removed = 0;
  CHECK_OK(StoreTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, &out));
  rt->FlushWrites();
  CHECK_OK(rt->Clear(&removed, /*include_disk=*/false));  // on disk only now
  std::unique_ptr<PendingStore> store;
  CHECK_OK(BeginStoreTokens(*rt, tokens.data(), n, src.Layout(), slots.data(), n, 0, &store));
  CHECK(store->tokens() == n);  // reserved in L1 again
  size_t hit = 0;
  CHECK_OK(LookupTokens(*rt, tokens.data(), n, &hit));  // queues prefetches of the reserved chunks
  CHECK(hit == n);
  std::unique_ptr<PendingLoad> load;
  CHECK_OK(BeginLoadTokens(*rt, tokens.data(), n, dst.Layout(), slots.data(), n, 0, &load));
  CHECK(load->tokens() == 0);  // the chunks are being stored: a miss, not a wait for ourselves
  CHECK_OK(BeginLoadTokens(*rt, tokens.data(), n, dst.Layout(), slots.data(), n, 0, &load));  // replaces an open one
  rt->Close();  // must not wait for the prefetch thread, nor it for the store
  store.reset();
  load.reset();
  rt.reset();
  fs::remove_all(dir);
  std::puts("  ok: an open store blocks no load, prefetch or close");
}

}  // namespace

int main() {
  TestLayersArriveInOrder();
  TestHeldChunksSurviveEvictionAndClear();
  TestCorruptRecordEndsThePrefix();
  TestBadInput();
  TestCloseFinishesOpenLoads();
  TestStoreIsInvisibleUntilFinished();
  TestCloseGivesBackOpenStores();
  TestOpenStoreNeverBlocksOthers();
  std::puts("test_pending_ops: ok");
  return 0;
}
