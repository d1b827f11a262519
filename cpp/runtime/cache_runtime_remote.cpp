// CacheRuntime, part five: the remote tier (remote_tier.h). The runtime
// decides when the remote tier is asked and how much is fetched; the
// client it was given moves the bytes. No runtime lock is held while the
// client runs: it calls back into ExportRecord / ImportRecord, which take
// the lifecycle lock themselves.
#include <algorithm>
#include <string>

#include "cache_runtime.h"
#include "cache_runtime_internal.h"

namespace lmcache {

Status CacheRuntime::SetRemoteTier(std::shared_ptr<RemoteTier> tier, uint32_t queue_chunks) {
  if (InForkedChild()) return Status::ForkedChild();
  if (!tier) return Status::InvalidArgument("no remote tier given");
  // close_mu_, not the lifecycle lock: Close holds close_mu_ while it takes
  // the lifecycle lock, so taking them the other way round could deadlock.
  std::lock_guard<std::mutex> once(close_mu_);
  if (closed_.load()) return Status::Closed();
  if (remote_) return Status::InvalidState("this runtime already has a remote tier");
  remote_ = std::move(tier);
  CacheRuntime* self = this;
  remote_writes_ = std::make_unique<KeyQueue>(std::max<uint32_t>(1, queue_chunks), kRemotePutBatch,
                                              [self](const std::vector<ChunkKey>& keys) { self->remote_->Put(keys); });
  has_remote_.store(true, std::memory_order_release);
  return Status::Ok();
}

Status CacheRuntime::CountRemote(std::string_view stat, uint64_t n) {
  std::lock_guard<std::mutex> lock(stats_mu_);
  uint64_t* counter = MutableRemoteStat(&stats_, stat);
  if (counter == nullptr) return Status::InvalidArgument("not a remote tier stat: " + std::string(stat));
  *counter += n;
  return Status::Ok();
}

size_t CacheRuntime::RemoteCountPrefix(const std::vector<ChunkKey>& keys, size_t from) {
  if (!has_remote_.load(std::memory_order_acquire) || from >= keys.size()) return 0;
  const std::vector<ChunkKey> rest(keys.begin() + from, keys.end());
  const size_t found = std::min(remote_->CountPrefix(rest), rest.size());
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.remote_lookup_hit_chunks += found;
  return found;
}

Status CacheRuntime::LocalPrefix(const std::vector<ChunkKey>& keys, size_t wanted, size_t* local,
                                 size_t* capacity_chunks) {
  LMC_ENTER();
  size_t n = 0;
  for (; n < wanted; ++n) {
    if (index_.ContainsReady(keys[n])) continue;
    if (disk_ && disk_->Contains(keys[n])) continue;
    break;
  }
  *local = n;
  *capacity_chunks = pool_ ? pool_->num_slabs() : 0;
  return Status::Ok();
}

void CacheRuntime::FetchRemotePart(const std::vector<ChunkKey>& keys, size_t num_slots) {
  if (!has_remote_.load(std::memory_order_acquire) || !has_shape_.load(std::memory_order_acquire)) return;
  const uint32_t cs = options_.chunk_size;
  const size_t wanted = std::min(keys.size(), (num_slots + cs - 1) / cs);
  size_t local = 0, capacity = 0;
  if (!LocalPrefix(keys, wanted, &local, &capacity).ok() || local >= wanted) return;
  // Together with the chunks already local, no more than host memory holds:
  // importing more would evict this load's first chunks before it used them.
  const size_t room = capacity > local ? capacity - local : 0;
  const size_t count = std::min(wanted - local, room);
  if (count < wanted - local) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.remote_get_beyond_l1 += wanted - local - count;
  }
  if (count == 0) return;
  const std::vector<ChunkKey> part(keys.begin() + local, keys.begin() + local + count);
  const size_t fetched = std::min(remote_->Fetch(part), count);
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.remote_fetched_chunks += fetched;
}

void CacheRuntime::QueueRemoteWrites(const std::vector<ChunkKey>& keys, size_t count) {
  if (!has_remote_.load(std::memory_order_acquire)) return;
  uint64_t dropped = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!remote_writes_->TryPush(keys[i])) ++dropped;
  }
  if (dropped) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.remote_put_dropped += dropped;
  }
}

}  // namespace lmcache
