// The node server's data path without the server process: a runtime with a
// shared host pool hands out slabs (HoldPrefix, ReserveForWrite), a
// SharedMover that mapped the pool's memory file copies records the way an
// engine in another process does, and CommitWritten publishes only records
// that check out. Also Locate / Prefetch / Evict, the operator calls.
#include <sys/mman.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "cache_runtime.h"
#include "check.h"
#include "kv_test_cache.h"
#include "shared_mover.h"
#include "token_calls.h"

using namespace lmcache;
using namespace lmcache::testing;

namespace {

CacheDims Dims() {
  CacheDims d;
  d.layers = 2;
  d.blocks = 16;
  d.block_size = 8;
  return d;
}

std::unique_ptr<CacheRuntime> MakeRuntime(const KVLayout& layout, bool shared, size_t slabs) {
  RuntimeOptions o;
  o.chunk_size = 16;
  o.num_threads = 2;
  o.l1_shared_memory = shared;
  std::unique_ptr<CacheRuntime> probe, rt;
  CHECK_OK(CacheRuntime::Create(o, &probe));
  CHECK_OK(probe->RegisterLayout(layout));
  o.l1_capacity_bytes = slabs * ((probe->RecordBytes() + 4095) / 4096 * 4096);
  CHECK_OK(CacheRuntime::Create(o, &rt));
  CHECK_OK(rt->RegisterLayout(layout));
  return rt;
}

// The pool's memory file, mapped by a mover as an engine in another process would.
struct MappedPool {
  int fd = -1;
  size_t region = 0, slab = 0;
  SharedMover mover{2};
  explicit MappedPool(CacheRuntime& rt) {
    CHECK_OK(rt.SharedPool(&fd, &region, &slab));
    CHECK_OK(mover.Map(fd, region, slab));
  }
};

std::vector<ChunkKey> Keys(CacheRuntime& rt, size_t tokens) {
  std::vector<uint32_t> t(tokens);
  std::iota(t.begin(), t.end(), 500);
  std::vector<ChunkKey> keys;
  CHECK_OK(rt.ComputeKeys(t.data(), t.size(), &keys));
  return keys;
}

void TestStoreThenLoadThroughTheSharedPool() {
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(7);
  auto rt = MakeRuntime(src.Layout(), true, 8);
  MappedPool pool(*rt);
  SharedMover& mover = pool.mover;
  const auto keys = Keys(*rt, 64);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3, 4, 5, 6, 7}, 8, 64);

  std::vector<int64_t> slabs;
  CHECK_OK(rt->ReserveForWrite(keys, &slabs));
  CHECK(slabs.size() == 4 && slabs[0] >= 0 && slabs[3] >= 0);
  CHECK_OK(mover.Store(src.Layout(), 16, slots.data(), 64, keys, slabs));
  size_t published = 0;
  CHECK_OK(rt->CommitWritten(keys, slabs, &published));
  CHECK(published == 4 && rt->Stats().stored_chunks == 4);
  size_t hit = 0;
  CHECK_OK(rt->Lookup(keys, &hit));
  CHECK(hit == 4);

  std::vector<int64_t> held;
  CHECK_OK(rt->HoldPrefix(keys, 4, &held));
  CHECK(held.size() == 4);
  size_t removed = 0;
  CHECK_OK(rt->Evict(keys, false, &removed));
  CHECK(removed == 0);  // held chunks stay
  size_t tokens = 0;
  CHECK_OK(mover.Load(dst.Layout(), 16, slots.data(), 64, keys, held, /*verify=*/true, &tokens));
  CHECK(tokens == 64 && SameSlots(dst, src, 64));
  CHECK_OK(rt->ReleaseHeld(keys));
  CHECK_OK(rt->Evict(keys, false, &removed));
  CHECK(removed == 4);
}

void TestABadRecordIsNeverPublished() {
  TestCache src("PBTHD", Dims());
  src.FillRandom(9);
  auto rt = MakeRuntime(src.Layout(), true, 8);
  MappedPool pool(*rt);
  SharedMover& mover = pool.mover;
  const auto keys = Keys(*rt, 32);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3}, 8, 32);
  std::vector<int64_t> slabs;
  CHECK_OK(rt->ReserveForWrite(keys, &slabs));
  CHECK_OK(mover.Store(src.Layout(), 16, slots.data(), 32, keys, slabs));
  // A writer (or a stray write) corrupts one payload byte after the copy.
  uint8_t* map = static_cast<uint8_t*>(mmap(nullptr, pool.region, PROT_READ | PROT_WRITE, MAP_SHARED, pool.fd, 0));
  CHECK(map != MAP_FAILED);
  map[size_t(slabs[1]) * pool.slab + sizeof(ChunkHeader) + 5] ^= 0x40;
  munmap(map, pool.region);
  size_t published = 0;
  CHECK_OK(rt->CommitWritten(keys, slabs, &published));
  CHECK(published == 1 && rt->Stats().load_errors == 1);
  size_t hit = 0;
  CHECK_OK(rt->Lookup(keys, &hit));
  CHECK(hit == 1);
  // Someone else's slab numbers commit nothing; an abort gives reservations back.
  std::vector<int64_t> again;
  CHECK_OK(rt->ReserveForWrite(keys, &again));
  CHECK(again[0] == -1 && again[1] >= 0);
  std::vector<int64_t> wrong = again;
  wrong[1] = (again[1] + 1) % 8;
  CHECK_OK(rt->CommitWritten(keys, wrong, &published));
  CHECK(published == 0);
  const size_t free_before = rt->Stats().l1_used_bytes;
  CHECK_OK(rt->AbortWritten(keys, again));
  CHECK(rt->Stats().l1_used_bytes < free_before);
}

void TestMoverRefusesSlabsOutsideThePool() {
  TestCache dst("PBTHD", Dims());
  auto rt = MakeRuntime(dst.Layout(), true, 4);
  MappedPool pool(*rt);
  SharedMover& mover = pool.mover;
  const auto keys = Keys(*rt, 16);
  const auto slots = SlotsFromBlocks({0, 1}, 8, 16);
  size_t tokens = 0;
  CHECK(mover.Load(dst.Layout(), 16, slots.data(), 16, keys, {4}, false, &tokens).code() ==
        StatusCode::kInvalidArgument);
  CHECK(mover.Load(dst.Layout(), 16, slots.data(), 16, keys, {-3}, false, &tokens).code() ==
        StatusCode::kInvalidArgument);
  // An empty slab (no record there) ends the prefix: nothing reaches the cache.
  CHECK_OK(mover.Load(dst.Layout(), 16, slots.data(), 16, keys, {0}, false, &tokens));
  CHECK(tokens == 0);
  // A private pool is not shared.
  auto priv = MakeRuntime(dst.Layout(), false, 4);
  int fd = -1;
  size_t region = 0, slab = 0;
  CHECK(priv->SharedPool(&fd, &region, &slab).code() == StatusCode::kInvalidState);
}

void TestLocatePrefetchEvict() {
  TestCache src("PBTHD", Dims());
  src.FillRandom(11);
  auto rt = MakeRuntime(src.Layout(), false, 8);
  const auto keys = Keys(*rt, 64);
  std::vector<uint32_t> t(64);
  std::iota(t.begin(), t.end(), 500);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3, 4, 5, 6, 7}, 8, 64);
  size_t stored = 0;
  CHECK_OK(StoreTokens(*rt, t.data(), 48, src.Layout(), slots.data(), 48, &stored));
  CacheRuntime::TierPrefixes where;
  CHECK_OK(rt->Locate(keys, &where));
  CHECK(where.host == 3 && where.disk == 0 && where.remote == 0 && where.any == 3);
  CHECK(rt->Stats().lookups == 0);  // locating is not a lookup
  size_t removed = 0, host = 0;
  CHECK_OK(rt->Evict({keys[1]}, false, &removed));
  CHECK(removed == 1);
  CHECK_OK(rt->Locate(keys, &where));
  CHECK(where.host == 1 && where.any == 1);
  CHECK_OK(rt->Prefetch(keys, &host));  // nothing on disk: nothing comes back
  CHECK(host == 1);
}

}  // namespace

int main() {
  TestStoreThenLoadThroughTheSharedPool();
  TestABadRecordIsNeverPublished();
  TestMoverRefusesSlabsOutsideThePool();
  TestLocatePrefetchEvict();
  return 0;
}
