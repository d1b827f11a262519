// The native Redis client (cpp/remote/redis_remote_tier.h) against a real
// redis-server: what one runtime stores another loads, in every codec; a
// value changed on the store is refused and deleted; a value under another
// secret is a miss and stays; a reply larger than any value, a server that
// is gone, and a server that never answers are misses and counters, never
// a crash or a hang.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "cache_runtime.h"
#include "check.h"
#include "kv_test_cache.h"
#include "record_seal.h"
#include "redis_remote_tier.h"
#include "redis_server.h"
#include "token_calls.h"

using namespace lmcache;
using namespace lmcache::testing;

namespace {

constexpr char kSecret[] = "test secret, at least sixteen bytes";

CacheDims Dims() {
  CacheDims d;
  d.layers = 2;
  d.blocks = 16;
  d.block_size = 8;
  return d;
}

struct NodeOptions {
  std::string url;
  std::string secret = kSecret;
  std::string codec = "none";
  bool encrypt = false;
  double timeout_s = 1.0;
};

std::unique_ptr<CacheRuntime> MakeNode(const NodeOptions& n, const KVLayout& layout) {
  RuntimeOptions o;
  o.chunk_size = 16;
  o.num_threads = 2;
  o.l1_capacity_bytes = 64 << 20;
  std::unique_ptr<CacheRuntime> rt;
  CHECK_OK(CacheRuntime::Create(o, &rt));
  CHECK_OK(rt->RegisterLayout(layout));
  RedisTierOptions r;
  r.url = n.url;
  r.codec = n.codec;
  r.encrypt = n.encrypt;
  r.timeout_s = n.timeout_s;
  r.record_key = RecordSealer::DeriveKey(n.secret);
  std::shared_ptr<RedisRemoteTier> tier;
  CHECK_OK(RedisRemoteTier::Create(rt.get(), r, &tier));
  CHECK_OK(rt->SetRemoteTier(tier, 64));
  return rt;
}

std::vector<uint32_t> Tokens(size_t n, uint32_t first = 100) {
  std::vector<uint32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// A direct connection for the test's own commands (what an attacker with access to the store can do).
struct Direct {
  explicit Direct(const RedisServer& s) {
    RedisEndpoint e;
    CHECK_OK(ParseRedisUrl(s.url(), &e));
    CHECK_OK(RespConnection::Open(e, nullptr, 5.0, 1 << 30, &c));
  }
  RespReply Do(const std::vector<std::string_view>& args) {
    c->Append(args);
    std::vector<RespReply> r;
    CHECK_OK(c->Exchange(&r));
    return r.at(0);
  }
  int64_t Size() { return Do({"DBSIZE"}).integer; }
  std::unique_ptr<RespConnection> c;
};

std::string StoreName(CacheRuntime& rt, const std::vector<uint32_t>& tokens, size_t chunk) {
  std::vector<ChunkKey> keys;
  CHECK_OK(rt.ComputeKeys(tokens.data(), tokens.size(), &keys));
  return "lmcache:" + keys.at(chunk).Hex();
}

const std::vector<int64_t> kSlots = SlotsFromBlocks({0, 1, 2, 3, 4, 5, 6, 7}, 8, 64);

// Stores 64 tokens (4 chunks) from `src` through a node, and waits for the writes.
void StoreThrough(const NodeOptions& n, TestCache& src, const std::vector<uint32_t>& tokens) {
  auto a = MakeNode(n, src.Layout());
  size_t stored = 0;
  CHECK_OK(StoreTokens(*a, tokens.data(), 64, src.Layout(), kSlots.data(), 64, &stored));
  CHECK(stored == 64);
  a->FlushWrites();
  const RuntimeStats s = a->Stats();
  CHECK(s.remote_puts == 4 && s.remote_put_dropped == 0 && s.remote_errors == 0);
}

void TestSharedInEveryCodec() {
  RedisServer server;
  for (const char* codec : {"none", "zstd", "lz4"}) {
    for (bool encrypt : {false, true}) {
      Direct d(server);
      d.Do({"FLUSHALL"});
      TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
      src.FillRandom(3);
      NodeOptions n{server.url(), kSecret, codec, encrypt};
      const auto tokens = Tokens(64);
      StoreThrough(n, src, tokens);
      CHECK(d.Size() == 4);
      auto b = MakeNode(n, dst.Layout());  // empty host memory: everything comes from the store
      size_t hit = 0, loaded = 0;
      CHECK_OK(LookupTokens(*b, tokens.data(), 64, &hit));
      CHECK(hit == 64 && b->Stats().remote_lookup_hit_chunks == 4);
      CHECK_OK(LoadTokens(*b, tokens.data(), 64, dst.Layout(), kSlots.data(), 64, &loaded));
      const RuntimeStats s = b->Stats();
      CHECK(loaded == 64 && s.remote_gets == 4 && s.remote_fetched_chunks == 4 && s.remote_get_batches >= 1);
      CHECK(SameSlots(dst, src, 64));
      if (std::string(codec) == "none" && !encrypt) CHECK(s.remote_get_bytes == 4 * (60 + b->RecordBytes()));
    }
  }
}

void TestChangedValueIsRefusedAndDeleted() {
  RedisServer server;
  Direct d(server);
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(5);
  const NodeOptions n{server.url()};
  const auto tokens = Tokens(64);
  StoreThrough(n, src, tokens);
  auto b = MakeNode(n, dst.Layout());
  const std::string third = StoreName(*b, tokens, 2);
  RespReply v = d.Do({"GET", third});
  CHECK(v.type == RespReply::Type::kBulk);
  v.bulk[v.bulk.size() - 10] ^= 1;  // one bit of the payload
  d.Do({"SET", third, std::string_view(reinterpret_cast<const char*>(v.bulk.data()), v.bulk.size())});
  size_t loaded = 0;
  CHECK_OK(LoadTokens(*b, tokens.data(), 64, dst.Layout(), kSlots.data(), 64, &loaded));
  CHECK(loaded == 32);  // the two chunks before it
  CHECK(b->Stats().remote_bad_values == 1);
  CHECK(d.Do({"EXISTS", third}).integer == 0);
  CHECK(d.Size() == 3);

  // A value copied under another key's name is refused too (the name is authenticated).
  const std::string first = StoreName(*b, tokens, 0), second = StoreName(*b, tokens, 1);
  RespReply v0 = d.Do({"GET", first});
  d.Do({"SET", second, std::string_view(reinterpret_cast<const char*>(v0.bulk.data()), v0.bulk.size())});
  TestCache dst2("PBTHD", Dims());
  auto c = MakeNode(n, dst2.Layout());
  CHECK_OK(LoadTokens(*c, tokens.data(), 64, dst2.Layout(), kSlots.data(), 64, &loaded));
  CHECK(loaded == 16 && c->Stats().remote_bad_values == 1);
}

void TestOtherSecretIsAMissAndStays() {
  RedisServer server;
  Direct d(server);
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(7);
  const auto tokens = Tokens(64);
  StoreThrough(NodeOptions{server.url()}, src, tokens);
  NodeOptions other{server.url(), "another deployment's secret!"};
  auto b = MakeNode(other, dst.Layout());
  size_t loaded = 0;
  CHECK_OK(LoadTokens(*b, tokens.data(), 64, dst.Layout(), kSlots.data(), 64, &loaded));
  CHECK(loaded == 0 && b->Stats().remote_get_not_ours == 1 && b->Stats().remote_bad_values == 0);
  CHECK(d.Size() == 4);  // nothing of someone else's is deleted
}

void TestOversizedReplyIsBounded() {
  RedisServer server;
  Direct d(server);
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(9);
  const auto tokens = Tokens(64);
  const NodeOptions n{server.url()};
  StoreThrough(n, src, tokens);
  auto b = MakeNode(n, dst.Layout());
  const std::string big(64 << 20, 'x');  // far more than any value of this shape
  d.Do({"SET", StoreName(*b, tokens, 0), big});
  size_t loaded = 0;
  CHECK_OK(LoadTokens(*b, tokens.data(), 64, dst.Layout(), kSlots.data(), 64, &loaded));
  CHECK(loaded == 0 && b->Stats().remote_get_errors == 1);
  // The client opens a fresh connection next time: the store still serves lookups.
  size_t hit = 0;
  CHECK_OK(LookupTokens(*b, tokens.data(), 64, &hit));
  CHECK(hit == 64);
}

void TestServerGoneAndBack() {
  RedisServer server;
  TestCache src("PBTHD", Dims());
  src.FillRandom(11);
  const auto tokens = Tokens(64);
  NodeOptions n{server.url()};
  auto a = MakeNode(n, src.Layout());
  server.Stop();
  size_t stored = 0, hit = 0;
  CHECK_OK(StoreTokens(*a, tokens.data(), 64, src.Layout(), kSlots.data(), 64, &stored));
  a->FlushWrites();
  RuntimeStats s = a->Stats();
  CHECK(stored == 64 && s.remote_put_errors >= 1 && s.remote_put_dropped == 4);
  const auto other = Tokens(64, 5000);
  CHECK_OK(LookupTokens(*a, other.data(), 64, &hit));
  CHECK(hit == 0 && a->Stats().remote_exists_errors >= 1);
  server.Start();  // back, empty: the next store reaches it
  const auto more = Tokens(64, 9000);
  CHECK_OK(StoreTokens(*a, more.data(), 64, src.Layout(), kSlots.data(), 64, &stored));
  a->FlushWrites();
  CHECK(a->Stats().remote_puts == 4);
}

void TestSilentServerCostsOneTimeout() {
  // A listener that accepts (the kernel does) but never answers.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && listen(fd, 8) == 0);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  NodeOptions n{"redis://127.0.0.1:" + std::to_string(ntohs(addr.sin_port))};
  n.timeout_s = 0.2;
  TestCache src("PBTHD", Dims());
  auto a = MakeNode(n, src.Layout());
  const auto tokens = Tokens(64);
  size_t hit = 0;
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_OK(LookupTokens(*a, tokens.data(), 64, &hit));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(hit == 0 && a->Stats().remote_exists_errors == 1);
  CHECK(s >= 0.15 && s < 5.0);  // one timeout, not a hang
  close(fd);
}

// Engine threads store, look up and load at once while the writer thread
// puts: the connection pool and the known-keys set are shared by all.
void TestConcurrentCallers() {
  RedisServer server;
  TestCache src("PBTHD", Dims());
  src.FillRandom(13);
  const NodeOptions n{server.url()};
  auto a = MakeNode(n, src.Layout());
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint32_t round = 0; round < 8; ++round) {
        const auto tokens = Tokens(64, 100000 * (t + 1) + 1000 * round);
        size_t stored = 0, hit = 0;
        CHECK_OK(StoreTokens(*a, tokens.data(), 64, src.Layout(), kSlots.data(), 64, &stored));
        CHECK_OK(LookupTokens(*a, tokens.data(), 64, &hit));
        CHECK(hit == 64);
      }
    });
  }
  for (auto& th : threads) th.join();
  a->FlushWrites();
  const RuntimeStats s = a->Stats();
  CHECK(s.remote_errors == 0 && s.remote_puts + s.remote_put_dropped + s.remote_put_skipped == 4 * 8 * 4);
  // A second node reads every request back, from several threads at once.
  TestCache dst("PBTHD", Dims());
  auto b = MakeNode(n, dst.Layout());
  threads.clear();
  for (uint32_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint32_t round = 0; round < 8; ++round) {
        const auto tokens = Tokens(64, 100000 * (t + 1) + 1000 * round);
        size_t hit = 0;
        CHECK_OK(LookupTokens(*b, tokens.data(), 64, &hit));
        CHECK(hit <= 64);
      }
    });
  }
  for (auto& th : threads) th.join();
  // Every chunk of a prefix the writer put is found (a dropped put ends its request's prefix there).
  const RuntimeStats sb = b->Stats();
  CHECK(sb.remote_errors == 0 && sb.remote_lookup_hit_chunks > 0 && sb.remote_lookup_hit_chunks <= s.remote_puts);
  if (s.remote_put_dropped == 0) CHECK(sb.remote_lookup_hit_chunks == s.remote_puts);
}

void TestBadOptions() {
  RuntimeOptions o;
  std::unique_ptr<CacheRuntime> rt;
  CHECK_OK(CacheRuntime::Create(o, &rt));
  std::shared_ptr<RedisRemoteTier> tier;
  RedisTierOptions r;
  r.record_key = RecordSealer::DeriveKey(kSecret);
  r.url = "redis+cluster://h1:1,h2:2";
  CHECK_CODE(RedisRemoteTier::Create(rt.get(), r, &tier), StatusCode::kInvalidArgument);
  r.url = "redis://127.0.0.1:1";
  r.tls.ca_file = "/nonexistent";
  CHECK_CODE(RedisRemoteTier::Create(rt.get(), r, &tier), StatusCode::kInvalidArgument);  // TLS files need rediss://
  r.url = "rediss://127.0.0.1:1";
  CHECK_CODE(RedisRemoteTier::Create(rt.get(), r, &tier), StatusCode::kInvalidArgument);  // not a readable file
  r.tls = TlsFiles{};
  r.codec = "fp8";
  CHECK_CODE(RedisRemoteTier::Create(rt.get(), r, &tier), StatusCode::kInvalidArgument);
  r.codec = "none";
  r.record_key = "short";
  CHECK_CODE(RedisRemoteTier::Create(rt.get(), r, &tier), StatusCode::kInvalidArgument);
}

}  // namespace

int main() {
  TestBadOptions();
  TestSilentServerCostsOneTimeout();
  TestSharedInEveryCodec();
  TestChangedValueIsRefusedAndDeleted();
  TestOtherSecretIsAMissAndStays();
  TestOversizedReplyIsBounded();
  TestServerGoneAndBack();
  TestConcurrentCallers();
  return 0;
}
