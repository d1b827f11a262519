// lmcache's native client of a Redis / Valkey remote tier, plugged into the
// runtime (runtime/remote_tier.h) by the C API. The same store-side
// behaviour as the Python client (python/lmcache/remote/store.py), so that
// either may serve an engine and both read each other's values:
//
//   CountPrefix  one pipelined EXISTS over "lmcache:<key hex>";
//   Fetch        pipelined GETs in batches of bounded size; each value is
//                checked (wire_value.h) and imported into host memory,
//                where the runtime checks the record again;
//   Put          each record exported from host memory, sealed, and
//                written in one pipelined SET.
//
// Every failure of the store is a miss and a counter in the runtime's stats.
// A value proven bad is refused and deleted, so nobody is offered it again;
// a value this engine merely cannot take (no room, another secret, a codec
// not built here) is a local miss and stays for others.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache_runtime.h"
#include "redis_url.h"
#include "remote_tier.h"
#include "resp_connection.h"
#include "wire_value.h"

namespace lmcache {

struct RedisTierOptions {
  std::string url;       // config key remote_url
  TlsFiles tls;          // remote_tls_*
  double timeout_s = 1;  // remote_timeout_s
  std::string codec = "none";
  bool encrypt = false;
  std::string record_key;  // derived from auth_secret (RecordSealer::DeriveKey)
  size_t fetch_batch_bytes = size_t(64) << 20;  // values held at once by one GET pipeline
};

class RedisRemoteTier : public RemoteTier {
 public:
  // Checks the options (URL, TLS files, codec) and prepares the client; it
  // connects on first use, so a store that is down at start is a miss, not
  // an error. `runtime` owns the tier (SetRemoteTier) and outlives it.
  static Status Create(CacheRuntime* runtime, const RedisTierOptions& options, std::shared_ptr<RedisRemoteTier>* out);

  size_t CountPrefix(const std::vector<ChunkKey>& keys) override;
  size_t Fetch(const std::vector<ChunkKey>& keys) override;
  void Put(const std::vector<ChunkKey>& keys) override;

  const std::string& display_name() const { return endpoint_.display; }

 private:
  RedisRemoteTier(CacheRuntime* runtime, RedisEndpoint endpoint, std::shared_ptr<TlsContext> tls, double timeout_s,
                  size_t fetch_batch_bytes, std::unique_ptr<WireSealer> sealer);
  // One pipelined exchange of `commands` on a pooled connection; an error
  // reply to any of them fails the whole exchange (as a store that refused).
  Status Run(const std::vector<std::vector<std::string_view>>& commands, std::vector<RespReply>* replies);
  size_t FetchBatch(const std::vector<ChunkKey>& keys, size_t from, size_t count, size_t record_bytes);
  void Refuse(const std::string& name);
  void Unavailable(const char* op, size_t dropped);
  void Count(const char* stat, uint64_t n = 1) { (void)runtime_->CountRemote(stat, n); }
  size_t MaxValueBytes(size_t record_bytes) const;

  // Keys put or seen on the store, not put again; bounded (oldest forgotten
  // first) and forgotten whole when the store fails (it may come back empty).
  class RecentKeys {
   public:
    explicit RecentKeys(size_t capacity) : capacity_(capacity) {}
    bool Contains(const ChunkKey& k);
    void Add(const ChunkKey& k);
    void Remove(const ChunkKey& k);
    void Clear();

   private:
    std::mutex mu_;
    size_t capacity_;
    std::list<ChunkKey> order_;  // most recent last
    std::unordered_map<ChunkKey, std::list<ChunkKey>::iterator, ChunkKeyHasher> where_;
  };

  CacheRuntime* runtime_;
  RedisEndpoint endpoint_;
  std::shared_ptr<TlsContext> tls_;
  double timeout_s_;
  size_t fetch_batch_bytes_;
  std::unique_ptr<WireSealer> sealer_;
  RecentKeys known_{65536};
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<RespConnection>> idle_;
};

}  // namespace lmcache
