#include "cache_runtime.h"
#include "cache_runtime_internal.h"
#include "key_file.h"
#include "sglang_keys.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>

namespace lmcache {

namespace {
std::atomic<uint64_t> g_fork_generation{0};
void CountForkInChild() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

uint64_t ForkGeneration() {
  static const bool registered = [] { return pthread_atfork(nullptr, nullptr, CountForkInChild) == 0; }();
  (void)registered;
  return g_fork_generation.load(std::memory_order_relaxed);
}

std::string KVShape::ToString() const {
  return "(layers=" + std::to_string(num_layers) + ", planes=" + std::to_string(num_planes) +
         ", heads=" + std::to_string(num_heads) + ", head_dim=" + std::to_string(head_dim) +
         ", dtype=" + DTypeName(dtype) +
         (opaque_block_size ? ", opaque blocks of " + std::to_string(opaque_block_size) + " tokens" : std::string()) + ")";
}

Status CacheRuntime::Create(const RuntimeOptions& options, std::unique_ptr<CacheRuntime>* out) {
  if (options.chunk_size == 0 || options.chunk_size > (1u << 20)) {
    return Status::InvalidArgument("chunk_size must be in [1, 1048576], got " + std::to_string(options.chunk_size));
  }
  if (options.tp_size == 0 || options.tp_rank >= options.tp_size) {
    return Status::InvalidArgument("tp_rank must be in [0, tp_size)");
  }
  if (!MakeEvictionPolicy(options.eviction_policy)) {
    return Status::InvalidArgument("unknown eviction policy '" + options.eviction_policy + "' (allowed: lru)");
  }
  if (options.key_scheme != "lmcache" && options.key_scheme != "sglang") {
    return Status::InvalidArgument("unknown key_scheme '" + options.key_scheme + "' (allowed: lmcache, sglang)");
  }
  if (options.key_scheme == "sglang" && !SglangKeysAvailable()) {
    return Status::InvalidArgument("key_scheme 'sglang' needs SHA-256: this lmcache was built without OpenSSL");
  }
  std::unique_ptr<CacheRuntime> rt(new CacheRuntime(options));
  rt->sglang_keys_ = options.key_scheme == "sglang";
  if (!options.disk_dir.empty()) {
    DiskOptions d;
    d.dir = options.disk_dir;
    d.capacity_bytes = options.disk_capacity_bytes;
    d.force_thread_pool = options.disk_io_backend == "threads";
    d.queue_depth = options.disk_queue_depth;
    d.lock_timeout_s = options.disk_lock_timeout_s;
    LMC_RETURN_IF_ERROR(DiskTier::Open(d, &rt->disk_));
    std::string key = options.record_key;
    if (key.empty()) {
      // No key given: one of the disk tier's own, kept in its private directory.
      LMC_RETURN_IF_ERROR(LoadOrCreateKeyFile(rt->disk_->dir_fd(), "record.key", RecordSealer::kKeyBytes, &key));
    }
    LMC_RETURN_IF_ERROR(RecordSealer::Create(key, options.encrypt_records, &rt->sealer_));
    CacheRuntime* self = rt.get();
    rt->write_behind_ = std::make_unique<KeyQueue>(
        std::max<uint32_t>(1, options.write_behind_chunks), 8,
        [self](const std::vector<ChunkKey>& keys) { self->WriteBehind(keys); });
    rt->prefetch_ = std::make_unique<KeyQueue>(
        1024, 8, [self](const std::vector<ChunkKey>& keys) { self->PromoteFromDisk(keys, nullptr); });
  }
  *out = std::move(rt);
  return Status::Ok();
}

CacheRuntime::CacheRuntime(const RuntimeOptions& options)
    : options_(options),
      fork_generation_(ForkGeneration()),
      threads_(options.num_threads),
      copy_(&threads_),
      device_(MakeDeviceCopier()),
      index_(MakeEvictionPolicy(options.eviction_policy)) {}

CacheRuntime::~CacheRuntime() { Close(); }

bool CacheRuntime::InForkedChild() const { return ForkGeneration() != fork_generation_; }

void CacheRuntime::Close() {
  if (InForkedChild()) {
    // A forked child's copy: its threads do not exist here, its locks may be
    // held forever, and the disk directory belongs to the parent. Touch nothing.
    closed_.store(true);
    return;
  }
  std::lock_guard<std::mutex> once(close_mu_);
  if (closed_.load()) return;
  // Background work first: queued writes finish (a clean exit persists them),
  // queued prefetches are dropped. Both touch the pool, which goes below.
  if (write_behind_) write_behind_->Stop(/*finish=*/true);
  if (remote_writes_) remote_writes_->Stop(/*finish=*/true);  // the client exports from host memory
  if (prefetch_) prefetch_->Stop(/*finish=*/false);
  std::unique_lock<std::shared_mutex> lock(lifecycle_);  // waits for calls in flight
  closed_.store(true);
  // Loads still open hold references and maybe device copies in flight.
  // No handle call can be in flight now: each holds the lifecycle lock shared.
  std::vector<PendingLoad*> open;
  {
    std::lock_guard<std::mutex> guard(loads_mu_);
    open.assign(open_loads_.begin(), open_loads_.end());
  }
  for (PendingLoad* load : open) {
    load->closed_ = true;
    (void)ReleaseLoad(load);
  }
  std::vector<PendingStore*> stores;
  {
    std::lock_guard<std::mutex> guard(loads_mu_);
    stores.assign(open_stores_.begin(), open_stores_.end());
  }
  for (PendingStore* store : stores) (void)FinishStore(store, /*publish=*/false);
  index_.RemoveAllIdle();
  // Nothing can be in use now (no call is in flight), so the memory can go.
  pool_.reset();
  disk_.reset();  // releases the directory lock
}

Status CacheRuntime::SetShape(const KVShape& s) {
  LMC_ENTER();
  if (s.num_layers == 0 || s.num_heads == 0 || s.head_dim == 0 || (s.num_planes != 1 && s.num_planes != 2) ||
      DTypeSize(s.dtype) == 0) {
    return Status::InvalidArgument("invalid KV shape " + s.ToString());
  }
  if (s.opaque_block_size != 0 && options_.chunk_size % s.opaque_block_size != 0) {
    return Status::InvalidArgument("chunk_size " + std::to_string(options_.chunk_size) +
                                   " must be a multiple of the engine's block size " +
                                   std::to_string(s.opaque_block_size) + " for a cache that moves whole blocks");
  }
  std::lock_guard<std::mutex> lock(shape_mu_);
  if (has_shape_.load()) {
    if (s == shape_) return Status::Ok();
    return Status::InvalidArgument("KV shape " + s.ToString() + " differs from the registered " + shape_.ToString());
  }
  const ChunkShape chunk{s.num_layers, s.num_planes, s.num_heads, s.head_dim, s.dtype, options_.chunk_size};
  std::unique_ptr<HostPool> pool;
  LMC_RETURN_IF_ERROR(HostPool::Create(chunk.record_bytes(), options_.l1_capacity_bytes, &pool,
                                       options_.l1_shared_memory));
  NamespaceSpec ns;
  ns.model_id = options_.model_id;
  ns.num_layers = s.num_layers;
  ns.num_planes = s.num_planes;
  ns.num_heads = s.num_heads;
  ns.head_dim = s.head_dim;
  ns.dtype = static_cast<uint32_t>(s.dtype);
  ns.layout_version = kChunkFormatVersion;
  ns.opaque_block_size = s.opaque_block_size;
  ns.tp_rank = options_.tp_rank;
  ns.tp_size = options_.tp_size;
  ns.tenant_salt = options_.tenant_salt;
  shape_ = s;
  seed_ = NamespaceSeed(ns);
  pool_ = std::move(pool);
  has_shape_.store(true, std::memory_order_release);
  return Status::Ok();
}

Status CacheRuntime::RegisterLayout(const KVLayout& layout) {
  LMC_RETURN_IF_ERROR(layout.Validate());
  return SetShape(KVShape::Of(layout));
}

Status CacheRuntime::CheckLayout(const KVLayout& layout) const {
  LMC_RETURN_IF_ERROR(layout.Validate());
  if (!(KVShape::Of(layout) == shape_)) {
    return Status::InvalidArgument("KV layout shape " + KVShape::Of(layout).ToString() +
                                   " differs from the registered " + shape_.ToString());
  }
  return Status::Ok();
}

Status CacheRuntime::CheckHasShape() const {
  if (!has_shape_.load(std::memory_order_acquire)) {
    return Status::InvalidState("the KV shape is not known yet: register the KV cache (or set the shape) first");
  }
  return Status::Ok();
}

Status CacheRuntime::ComputeKeys(const uint32_t* tokens, size_t n, std::vector<ChunkKey>* keys) {
  LMC_ENTER();
  LMC_RETURN_IF_ERROR(CheckHasShape());
  if (n > 0 && tokens == nullptr) return Status::InvalidArgument("tokens is null");
  keys->clear();
  if (sglang_keys_) {
    SglangChunkKeys(seed_, tokens, n, options_.chunk_size, keys);
  } else {
    HashChunks(seed_, tokens, n, options_.chunk_size, keys);
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.hash_passes++;
  stats_.hashed_tokens += n;
  return Status::Ok();
}

Status CacheRuntime::KeysFromIds(const std::vector<std::string>& ids, std::vector<ChunkKey>* keys) {
  LMC_ENTER();
  LMC_RETURN_IF_ERROR(CheckHasShape());
  keys->clear();
  keys->reserve(ids.size());
  for (const std::string& id : ids) keys->push_back(ExternalKey(seed_, id));
  return Status::Ok();
}

Status CacheRuntime::Lookup(const std::vector<ChunkKey>& keys, size_t* hit_chunks) {
  *hit_chunks = 0;
  size_t local = 0;
  LMC_RETURN_IF_ERROR(LookupLocal(keys, &local));
  // Where host memory and disk end, the remote tier may go on (no lock held: see cache_runtime_remote.cpp).
  *hit_chunks = local + RemoteCountPrefix(keys, local);
  return Status::Ok();
}

Status CacheRuntime::LookupLocal(const std::vector<ChunkKey>& keys, size_t* hit_chunks) {
  LMC_ENTER();
  LMC_RETURN_IF_ERROR(CheckHasShape());
  size_t hits = index_.CountPrefixHits(keys.data(), keys.size());
  const size_t l1_hits = hits;
  uint64_t prefetch_dropped = 0;
  if (disk_) {
    // The prefix continues through chunks on disk; start reading them into L1
    // now, so the disk reads overlap with the engine's scheduling.
    for (; hits < keys.size(); ++hits) {
      if (index_.ContainsReady(keys[hits])) continue;
      if (!disk_->Contains(keys[hits])) break;
      if (!prefetch_->TryPush(keys[hits])) ++prefetch_dropped;
    }
  }
  *hit_chunks = hits;
  const uint64_t cs = options_.chunk_size;
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.lookup_disk_hit_tokens += (hits - l1_hits) * cs;
  stats_.prefetch_dropped += prefetch_dropped;
  stats_.lookups++;
  stats_.lookup_tokens += keys.size() * cs;
  stats_.lookup_hit_tokens += hits * cs;
  return Status::Ok();
}

int64_t CacheRuntime::AllocateSlab() {
  for (;;) {
    const int64_t slab = pool_->Allocate();
    if (slab != HostPool::kNoSlab) return slab;
    ChunkKey victim;
    Entry removed;
    if (!index_.EvictOne(&victim, &removed)) return HostPool::kNoSlab;
    FreeEntry(removed);
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.evicted_chunks++;
  }
}

void CacheRuntime::FreeEntry(const Entry& e) {
  if (e.tier == Tier::kHost && e.location >= 0) {
    // A failure here is a bookkeeping bug; there is no caller to report it to
    // and nothing to undo, so the slab is simply not reused.
    (void)pool_->Free(e.location);
  }
}

Status CheckSlots(const int64_t* slots, size_t n, uint64_t num_slots) {
  if (n > 0 && slots == nullptr) return Status::InvalidArgument("slot mapping is null");
  for (size_t i = 0; i < n; ++i) {
    if (slots[i] >= 0 && uint64_t(slots[i]) >= num_slots) {
      return Status::InvalidArgument("slot " + std::to_string(slots[i]) + " of token " + std::to_string(i) +
                                     " is outside the KV cache (" + std::to_string(num_slots) + " slots)");
    }
  }
  return Status::Ok();
}

Status CacheRuntime::CheckDeviceReady() const {
  if (!device_) return Status::InvalidArgument("the KV cache is in GPU memory, but this lmcache was built without CUDA");
  if (!pool_->device_registered()) {
    return Status::InvalidState("the host pool is not registered with CUDA (no GPU was visible when it was created)");
  }
  return Status::Ok();
}

ChunkShape CacheRuntime::StoredShape() const {
  return ChunkShape{shape_.num_layers, shape_.num_planes, shape_.num_heads, shape_.head_dim,
                    shape_.dtype,      options_.chunk_size, shape_.opaque_block_size};
}

Status CacheRuntime::Pin(const std::vector<ChunkKey>& keys, size_t* count) {
  LMC_ENTER();
  *count = 0;
  for (const ChunkKey& k : keys) {
    if (!index_.Pin(k).ok()) break;
    ++*count;
  }
  return Status::Ok();
}

Status CacheRuntime::Unpin(const std::vector<ChunkKey>& keys, size_t* count) {
  LMC_ENTER();
  *count = 0;
  for (const ChunkKey& k : keys) {
    if (index_.Unpin(k).ok()) ++*count;
  }
  return Status::Ok();
}

Status CacheRuntime::Clear(size_t* removed, bool include_disk) {
  LMC_ENTER();
  // Prefetches already queued would bring chunks back right after the clear.
  if (prefetch_) prefetch_->Flush();
  std::vector<Entry> entries = index_.RemoveAllIdle();
  for (const Entry& e : entries) FreeEntry(e);
  *removed = entries.size();
  if (include_disk && disk_) {
    *removed += disk_->Stats().records;
    disk_->Clear();
  }
  return Status::Ok();
}

Status CacheRuntime::CorruptChunkForTesting(const ChunkKey& key) {
  LMC_ENTER();
  Entry e;
  if (!index_.Acquire(key, &e)) return Status::NotFound("key " + key.Hex() + " is not cached");
  pool_->SlabAddress(e.location)[sizeof(ChunkHeader) + e.bytes / 3] ^= 0x5A;
  return index_.Release(key);
}

Status CacheRuntime::DropChunkForTesting(const ChunkKey& key) {
  LMC_ENTER();
  Entry removed;
  if (!index_.RemoveIfIdle(key, &removed)) return Status::NotFound("key " + key.Hex() + " is not cached or in use");
  FreeEntry(removed);
  return Status::Ok();
}

RuntimeStats CacheRuntime::Stats() const {
  RuntimeStats s;
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    s = stats_;
  }
  std::shared_lock<std::shared_mutex> lifecycle(lifecycle_);  // pool_ stays alive while we read it
  s.l1_capacity_bytes = options_.l1_capacity_bytes;
  s.l1_chunks = index_.size();
  if (disk_) {
    s.disk_enabled = true;
    s.disk = disk_->Stats();
  }
  s.remote_enabled = has_remote_.load(std::memory_order_acquire);
  s.record_bytes = RecordBytes();
  if (write_behind_) s.write_behind_queued = write_behind_->size();
  if (s.remote_enabled) s.remote_put_queued = remote_writes_->size();  // set before has_remote_
  if (pool_) {
    s.l1_capacity_bytes = pool_->num_slabs() * pool_->slab_bytes();
    s.l1_used_bytes = (pool_->num_slabs() - pool_->num_free()) * pool_->slab_bytes();
  }
  return s;
}

}  // namespace lmcache
