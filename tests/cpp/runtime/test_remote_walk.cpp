// The runtime's walk over the remote tier (remote_tier.h), with a client
// that keeps records in this process: lookups continue past host memory,
// loads fetch no more than host memory holds, published stores are written
// by the runtime's writer thread, and Close lets queued writes finish. The
// client in lmcache (Redis, the wire format) is tested in
// tests/python/remote against real servers; here the runtime's side.
// Also: keys computed once per request (hash_passes) in both key schemes.
#include <cstring>
#include <map>
#include <mutex>
#include <numeric>
#include <vector>

#include "cache_runtime.h"
#include "check.h"
#include "kv_test_cache.h"
#include "sglang_keys.h"
#include "token_calls.h"

using namespace lmcache;
using namespace lmcache::testing;

namespace {

struct KeyLess {
  bool operator()(const ChunkKey& a, const ChunkKey& b) const { return a.hi != b.hi ? a.hi < b.hi : a.lo < b.lo; }
};

// Records shared by every runtime that plugs a client of this store in.
struct SharedStore {
  std::mutex mu;
  std::map<ChunkKey, std::vector<uint8_t>, KeyLess> records;
  size_t puts = 0;
};

class InProcessRemote : public RemoteTier {
 public:
  InProcessRemote(SharedStore* store, CacheRuntime** rt) : store_(store), rt_(rt) {}
  size_t CountPrefix(const std::vector<ChunkKey>& keys) override {
    std::lock_guard<std::mutex> lock(store_->mu);
    size_t n = 0;
    while (n < keys.size() && store_->records.count(keys[n])) ++n;
    return n;
  }
  size_t Fetch(const std::vector<ChunkKey>& keys) override {
    size_t n = 0;
    for (; n < keys.size(); ++n) {
      std::vector<uint8_t> record;
      {
        std::lock_guard<std::mutex> lock(store_->mu);
        auto it = store_->records.find(keys[n]);
        if (it == store_->records.end()) break;
        record = it->second;
      }
      if (!(*rt_)->ImportRecord(keys[n], record.data(), record.size()).ok()) break;
    }
    return n;
  }
  void Put(const std::vector<ChunkKey>& keys) override {
    for (const ChunkKey& k : keys) {
      std::vector<uint8_t> record((*rt_)->RecordBytes());
      size_t bytes = 0;
      if (!(*rt_)->ExportRecord(k, record.data(), record.size(), &bytes).ok()) continue;
      std::lock_guard<std::mutex> lock(store_->mu);
      store_->records[k] = std::move(record);
      store_->puts++;
    }
  }

 private:
  SharedStore* store_;
  CacheRuntime** rt_;
};

CacheDims Dims() {
  CacheDims d;
  d.layers = 2;
  d.blocks = 16;
  d.block_size = 8;
  return d;
}

struct Node {
  std::unique_ptr<CacheRuntime> rt;
  CacheRuntime* raw = nullptr;
};

// A runtime of `slabs` chunks of host memory with a client of `store`.
void MakeNode(Node* n, SharedStore* store, const KVLayout& layout, size_t slabs, uint32_t queue = 64,
              const char* scheme = "lmcache") {
  RuntimeOptions o;
  o.chunk_size = 16;
  o.num_threads = 2;
  o.key_scheme = scheme;
  std::unique_ptr<CacheRuntime> probe;
  CHECK_OK(CacheRuntime::Create(o, &probe));
  CHECK_OK(probe->RegisterLayout(layout));
  o.l1_capacity_bytes = slabs * ((probe->RecordBytes() + 4095) / 4096 * 4096);
  CHECK_OK(CacheRuntime::Create(o, &n->rt));
  n->raw = n->rt.get();
  CHECK_OK(n->rt->RegisterLayout(layout));
  CHECK_OK(n->rt->SetRemoteTier(std::make_shared<InProcessRemote>(store, &n->raw), queue));
}

std::vector<uint32_t> Tokens(size_t n) {
  std::vector<uint32_t> t(n);
  std::iota(t.begin(), t.end(), 100);
  return t;
}

void TestSharedThroughTheRemoteTier() {
  SharedStore store;
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(3);
  const auto tokens = Tokens(64);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3, 4, 5, 6, 7}, 8, 64);
  Node a, b;
  MakeNode(&a, &store, src.Layout(), 16);
  size_t stored = 0, hit = 0, loaded = 0;
  CHECK_OK(StoreTokens(*a.rt, tokens.data(), 64, src.Layout(), slots.data(), 64, &stored));
  CHECK(stored == 64);
  a.rt->FlushWrites();  // the writer thread has put every chunk
  CHECK(store.records.size() == 4 && a.rt->Stats().remote_put_dropped == 0);

  MakeNode(&b, &store, dst.Layout(), 16);  // empty host memory: everything comes from the store
  CHECK_OK(LookupTokens(*b.rt, tokens.data(), 64, &hit));
  CHECK(hit == 64 && b.rt->Stats().remote_lookup_hit_chunks == 4 && b.rt->Stats().lookup_hit_tokens == 0);
  CHECK_OK(LoadTokens(*b.rt, tokens.data(), 64, dst.Layout(), slots.data(), 64, &loaded));
  CHECK(loaded == 64 && b.rt->Stats().remote_fetched_chunks == 4 && b.rt->Stats().imported_chunks == 4);
  CHECK(SameSlots(dst, src, 64));
  CHECK(b.rt->Stats().remote_enabled);
}

void TestFetchIsBoundedByHostMemory() {
  SharedStore store;
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(5);
  const auto tokens = Tokens(96);
  std::vector<uint32_t> blocks(12);
  std::iota(blocks.begin(), blocks.end(), 0);
  const auto slots = SlotsFromBlocks(blocks, 8, 96);
  Node a, b;
  MakeNode(&a, &store, src.Layout(), 16);
  size_t stored = 0, loaded = 0;
  CHECK_OK(StoreTokens(*a.rt, tokens.data(), 96, src.Layout(), slots.data(), 96, &stored));
  a.rt->FlushWrites();
  CHECK(store.records.size() == 6);
  MakeNode(&b, &store, dst.Layout(), 4);  // room for 4 of the 6 chunks
  CHECK_OK(LoadTokens(*b.rt, tokens.data(), 96, dst.Layout(), slots.data(), 96, &loaded));
  const RuntimeStats s = b.rt->Stats();
  CHECK(loaded == 64 && s.remote_fetched_chunks == 4 && s.remote_get_beyond_l1 == 2 && s.evicted_chunks == 0);
}

void TestCloseWritesWhatIsQueued() {
  SharedStore store;
  TestCache src("PBTHD", Dims());
  src.FillRandom(7);
  const auto tokens = Tokens(128);
  std::vector<uint32_t> blocks(16);
  std::iota(blocks.begin(), blocks.end(), 0);
  const auto slots = SlotsFromBlocks(blocks, 8, 128);
  Node a;
  MakeNode(&a, &store, src.Layout(), 16);
  size_t stored = 0;
  CHECK_OK(StoreTokens(*a.rt, tokens.data(), 128, src.Layout(), slots.data(), 128, &stored));
  a.rt->Close();  // no flush first: Close lets the writer finish the queue
  CHECK(store.puts == 8);
  size_t hit = 0;
  CHECK_CODE(LookupTokens(*a.rt, tokens.data(), 128, &hit), StatusCode::kClosed);
}

void TestTheRemoteTierIsSetOnce() {
  SharedStore store;
  TestCache src("PBTHD", Dims());
  Node a;
  MakeNode(&a, &store, src.Layout(), 4);
  CHECK_CODE(a.rt->SetRemoteTier(std::make_shared<InProcessRemote>(&store, &a.raw), 8), StatusCode::kInvalidState);
  CHECK_CODE(a.rt->SetRemoteTier(nullptr, 8), StatusCode::kInvalidArgument);
  CHECK_OK(a.rt->CountRemote("remote_bad_values", 2));
  CHECK(a.rt->Stats().remote_bad_values == 2);
  CHECK_CODE(a.rt->CountRemote("stored_chunks", 1), StatusCode::kInvalidArgument);  // not the client's to count
}

void TestKeysOncePerRequest(const char* scheme) {
  SharedStore store;
  TestCache src("PBTHD", Dims());
  src.FillRandom(9);
  Node a;
  MakeNode(&a, &store, src.Layout(), 16, 64, scheme);
  const auto tokens = Tokens(64);
  const auto slots = SlotsFromBlocks({0, 1, 2, 3, 4, 5, 6, 7}, 8, 64);
  std::vector<ChunkKey> keys;
  CHECK_OK(a.rt->ComputeKeys(tokens.data(), 64, &keys));
  size_t hit = 0, stored = 0, loaded = 0;
  CHECK_OK(a.rt->Lookup(keys, &hit));
  CHECK_OK(StoreKeys(*a.rt, keys, src.Layout(), slots.data(), 64, &stored));
  CHECK_OK(LoadKeys(*a.rt, keys, src.Layout(), slots.data(), 64, &loaded));
  CHECK(hit == 0 && stored == 64 && loaded == 64);
  const RuntimeStats s = a.rt->Stats();
  CHECK(s.hash_passes == 1 && s.hashed_tokens == 64);
}

void TestSglangPageNames() {
  if (!SglangKeysAvailable()) return;  // a build without libcrypto refuses the scheme (tested in Python)
  const uint32_t tokens[] = {1, 2, 3, 4, 5};
  std::vector<std::string> names;
  SglangPageNames(tokens, 5, 2, &names);  // two whole pages; the fifth token is no page
  CHECK(names.size() == 2);
  // sha256(u32le 1, 2), then sha256(that digest || u32le 3, 4): SGLang's chain.
  CHECK(names[0] == "34fb5c825de7ca4aea6e712f19d439c1da0c92c37b423936c5f618545ca4fa1f");
  CHECK(names[1] == "c57b445f90651b9a650e516ab2238c965b21af35608a31c303e6d9e407f2915c");
}

}  // namespace

int main() {
  TestSharedThroughTheRemoteTier();
  TestFetchIsBoundedByHostMemory();
  TestCloseWritesWhatIsQueued();
  TestTheRemoteTierIsSetOnce();
  TestKeysOncePerRequest("lmcache");
  if (SglangKeysAvailable()) TestKeysOncePerRequest("sglang");
  TestSglangPageNames();
  std::printf("test_remote_walk: ok\n");
  return 0;
}
