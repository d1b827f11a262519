#include <vector>

#include "check.h"
#include "index.h"

using namespace lmcache;

static ChunkKey K(uint64_t i) { return ChunkKey{i, ~i}; }

static Entry E(int64_t loc) {
  Entry e;
  e.location = loc;
  e.bytes = 100;
  e.num_tokens = 256;
  return e;
}

static void Put(Index& idx, uint64_t i) {
  CHECK(idx.Reserve(K(i), E(int64_t(i))));
  CHECK_OK(idx.Commit(K(i)));
}

static void TestLifecycle() {
  Index idx(MakeEvictionPolicy("lru"));
  CHECK(idx.Reserve(K(1), E(1)));
  CHECK(!idx.Reserve(K(1), E(2)));  // a second writer backs off
  CHECK(!idx.ContainsReady(K(1)));  // invisible while being written
  Entry got;
  CHECK(!idx.Acquire(K(1), &got));
  ChunkKey victim;
  CHECK(!idx.EvictOne(&victim, &got));  // a write in progress is never evicted
  CHECK_OK(idx.Commit(K(1)));
  CHECK(idx.ContainsReady(K(1)));
  CHECK(idx.Acquire(K(1), &got) && got.location == 1 && got.ref_count == 1);
  CHECK(!idx.EvictOne(&victim, &got));  // in use
  CHECK_OK(idx.Release(K(1)));
  CHECK_CODE(idx.Release(K(1)), StatusCode::kInternal);
  CHECK(idx.EvictOne(&victim, &got) && victim == K(1));
  CHECK(idx.size() == 0);
  // Abort hands the entry back and leaves nothing.
  CHECK(idx.Reserve(K(2), E(7)));
  CHECK_OK(idx.Abort(K(2), &got));
  CHECK(got.location == 7 && idx.size() == 0);
  CHECK_CODE(idx.Commit(K(2)), StatusCode::kInternal);
}

static void TestPrefixHits() {
  Index idx(MakeEvictionPolicy("lru"));
  Put(idx, 1);
  Put(idx, 2);
  Put(idx, 4);
  const ChunkKey keys[] = {K(1), K(2), K(3), K(4)};
  CHECK(idx.CountPrefixHits(keys, 4) == 2);  // stops at the first miss
  CHECK(idx.CountPrefixHits(keys + 3, 1) == 1);
  CHECK(idx.CountPrefixHits(keys, 0) == 0);
}

static void TestLruOrderAndPins() {
  Index idx(MakeEvictionPolicy("lru"));
  for (uint64_t i = 1; i <= 5; ++i) Put(idx, i);
  Entry got;
  CHECK(idx.Acquire(K(1), &got));  // touch 1: now most recent
  CHECK_OK(idx.Release(K(1)));
  CHECK_OK(idx.Pin(K(2)));
  CHECK_CODE(idx.Pin(K(99)), StatusCode::kNotFound);
  std::vector<uint64_t> order;
  ChunkKey victim;
  while (idx.EvictOne(&victim, &got)) order.push_back(victim.lo);
  // 2 is pinned; the rest go oldest first, 1 last because it was touched.
  CHECK((order == std::vector<uint64_t>{3, 4, 5, 1}));
  CHECK(idx.size() == 1);
  CHECK_OK(idx.Unpin(K(2)));
  CHECK_CODE(idx.Unpin(K(2)), StatusCode::kNotFound);
  CHECK(idx.EvictOne(&victim, &got) && victim == K(2));
}

static void TestRemoveAllIdle() {
  Index idx(MakeEvictionPolicy("lru"));
  for (uint64_t i = 1; i <= 4; ++i) Put(idx, i);
  Entry got;
  CHECK(idx.Acquire(K(1), &got));
  CHECK_OK(idx.Pin(K(2)));
  CHECK(idx.RemoveAllIdle().size() == 2);
  CHECK(idx.size() == 2);
  CHECK(!idx.RemoveIfIdle(K(1), &got));
  CHECK_OK(idx.Release(K(1)));
  CHECK(idx.RemoveIfIdle(K(1), &got) && got.location == 1);
  CHECK(MakeEvictionPolicy("fifo-of-doom") == nullptr);
}

int main() {
  TestLifecycle();
  TestPrefixHits();
  TestLruOrderAndPins();
  TestRemoveAllIdle();
  std::puts("test_index: ok");
  return 0;
}
