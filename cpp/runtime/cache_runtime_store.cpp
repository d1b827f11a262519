// CacheRuntime, part four: stores. Every store is a PendingStore: Begin
// reserves the chunks and starts the copy, Finish waits for it and publishes
// the chunks. A one-call store (token_calls.h) is the two in a row; a GPU
// engine that must not wait for the copy calls Begin on its step and Finish
// later.
#include <algorithm>
#include <cstring>

#include "cache_runtime.h"
#include "cache_runtime_internal.h"

namespace lmcache {

Status CacheRuntime::BeginStore(const std::vector<ChunkKey>& all_keys, const KVLayout& layout, const int64_t* slots,
                                size_t num_slots, uint64_t stream, std::unique_ptr<PendingStore>* out) {
  LMC_ENTER();
  LMC_RETURN_IF_ERROR(CheckHasShape());
  const size_t whole_chunks = num_slots / options_.chunk_size;
  if (whole_chunks > all_keys.size()) {
    return Status::InvalidArgument(std::to_string(num_slots) + " slots, more whole chunks than the " +
                                   std::to_string(all_keys.size()) + " keys");
  }
  // Only whole chunks are stored: the keys of the slots given.
  const std::vector<ChunkKey> keys(all_keys.begin(), all_keys.begin() + whole_chunks);
  LMC_RETURN_IF_ERROR(CheckLayout(layout));
  LMC_RETURN_IF_ERROR(CheckSlots(slots, num_slots, layout.num_slots()));
  if (layout.device >= 0) LMC_RETURN_IF_ERROR(CheckDeviceReady());

  const uint32_t cs = options_.chunk_size;
  const ChunkShape shape = ChunkShape::FromLayout(layout, cs);
  // Validate everything before reserving anything: an error must leave no trace.
  for (size_t c = 0; layout.opaque_blocks() && c < keys.size(); ++c) {
    if (!BlockSlotsConsistent(slots + c * cs, cs, layout.block_size, true)) {
      return Status::InvalidArgument("chunk " + std::to_string(c) +
                                     " does not cover whole engine blocks in order; this cache moves whole blocks");
    }
  }
  std::unique_ptr<PendingStore> store(new PendingStore(this));
  store->layout_ = layout;
  store->stream_ = stream;
  store->chunk_size_ = cs;
  uint64_t skipped = 0, dropped = 0;
  for (size_t c = 0; c < keys.size(); ++c) {
    const int64_t* chunk_slots = slots + c * cs;
    if (std::any_of(chunk_slots, chunk_slots + cs, [](int64_t s) { return s < 0; })) continue;
    int64_t slab = -1;
    const SlabReservation r = ReserveSlab(keys[c], shape, &slab);
    if (r != SlabReservation::kReserved) {
      ++(r == SlabReservation::kNoRoom ? dropped : skipped);
      continue;
    }
    ChunkTransfer t;
    t.payload = pool_->SlabAddress(slab) + sizeof(ChunkHeader);
    t.slots = chunk_slots;
    t.payload_tokens = cs;
    t.num_tokens = cs;
    store->transfers_.push_back(t);
    store->reserved_.push_back(keys[c]);
  }
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.store_calls++;
    stats_.store_skipped_chunks += skipped;
    stats_.store_dropped_chunks += dropped;
  }
  // Every record gets its checksum when it is made: the copy threads hash
  // each run right after copying it, while it is in cache.
  store->checksums_.resize(store->transfers_.size());
  for (size_t i = 0; i < store->transfers_.size(); ++i) store->transfers_[i].checksum_out = &store->checksums_[i];
  if (!store->transfers_.empty()) {
    if (layout.device < 0) {
      copy_.Gather(layout, store->transfers_);  // hashes each layer while it is in cache
    } else {
      // The kernels only copy; checksums (if wanted) are taken in FinishStore.
      Status st = device_->Prepare(layout, store->transfers_, stream, &store->device_batch_);
      if (st.ok()) st = device_->Launch(*store->device_batch_, /*gather=*/true, 0, layout.num_layers, stream);
      if (!st.ok()) {
        store->copied_ = st;
        (void)FinishStore(store.get(), /*publish=*/false);
        return st;
      }
    }
  }
  for (ChunkTransfer& t : store->transfers_) t.slots = nullptr;  // the caller's array may go now
  {
    std::lock_guard<std::mutex> lock(loads_mu_);
    open_stores_.insert(store.get());
  }
  *out = std::move(store);  // outside the lock (see BeginLoad)
  return Status::Ok();
}

CacheRuntime::SlabReservation CacheRuntime::ReserveSlab(const ChunkKey& key, const ChunkShape& shape,
                                                       int64_t* slab) {
  if (index_.ContainsReady(key)) return SlabReservation::kSkipped;
  *slab = AllocateSlab();
  if (*slab == HostPool::kNoSlab) return SlabReservation::kNoRoom;
  Entry e;
  e.tier = Tier::kHost;
  e.location = *slab;
  e.bytes = shape.record_bytes();
  e.num_tokens = shape.num_tokens;
  if (!index_.Reserve(key, e)) {  // another call is writing or just wrote it
    (void)pool_->Free(*slab);
    *slab = -1;
    return SlabReservation::kSkipped;
  }
  return SlabReservation::kReserved;
}

Status CacheRuntime::FinishStore(PendingStore* store, bool publish) {
  if (store->finished_.load()) return Status::Ok();
  Status st = store->copied_;
  if (store->device_batch_) {
    // The payloads are complete after this.
    const Status synced = device_->Synchronize(store->layout_.device, store->stream_);
    store->device_batch_.reset();
    if (st.ok()) st = synced;
  }
  std::vector<ChunkTransfer>& transfers = store->transfers_;
  const KVLayout& layout = store->layout_;
  if (st.ok() && publish && layout.device >= 0 && !transfers.empty()) {
    // GPU copies: checksum the payloads here, a (chunk, layer) per task.
    const uint32_t layers = layout.num_layers;
    std::vector<uint64_t> sums(transfers.size() * layers);
    threads_.ParallelFor(sums.size(), [&](size_t i) {
      const ChunkTransfer& c = transfers[i / layers];
      const uint64_t layer_bytes = uint64_t(layout.num_planes) * c.payload_tokens * layout.token_bytes();
      sums[i] = LayerChecksum(c.payload + (i % layers) * layer_bytes, layer_bytes);
    });
    for (size_t c = 0; c < transfers.size(); ++c) {
      store->checksums_[c] = CombineLayerChecksums(&sums[c * layers], layers);
    }
  }
  size_t published = 0;
  if (st.ok() && publish) {
    const ChunkShape shape = ChunkShape::FromLayout(layout, store->chunk_size_);
    for (; published < transfers.size(); ++published) {
      const ChunkKey& key = store->reserved_[published];
      const ChunkHeader h = MakeHeader(shape, key, store->checksums_[published]);
      std::memcpy(transfers[published].payload - sizeof(ChunkHeader), &h, sizeof(h));
      const Status committed = index_.Commit(key);
      if (!committed.ok()) {  // a bookkeeping bug; the rest is given back below
        st = committed;
        break;
      }
    }
  }
  // Reservations not published are given back, or readers waiting on them would wait forever.
  for (size_t i = published; i < transfers.size(); ++i) {
    Entry removed;
    if (index_.Abort(store->reserved_[i], &removed).ok()) FreeEntry(removed);
  }
  if (published < transfers.size()) transfers.resize(published);  // tokens() counts what was stored
  uint64_t write_dropped = 0;
  if (disk_) {
    for (size_t i = 0; i < transfers.size(); ++i) {
      const ChunkKey& key = store->reserved_[i];
      if (!disk_->Contains(key) && !write_behind_->TryPush(key)) ++write_dropped;
    }
  }
  QueueRemoteWrites(store->reserved_, transfers.size());
  {
    std::lock_guard<std::mutex> lock(loads_mu_);
    open_stores_.erase(store);
  }
  store->finished_.store(true);
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.write_behind_dropped += write_dropped;
  stats_.stored_chunks += transfers.size();
  return st;
}

PendingStore::~PendingStore() {
  if (!finished_.load()) (void)Finish();
}

Status PendingStore::Finish() {
  if (finished_.load()) return Status::Ok();  // never touches a runtime that finished it (see PendingLoad)
  if (rt_->InForkedChild()) return Status::ForkedChild();  // before any lock (see LMC_ENTER)
  std::shared_lock<std::shared_mutex> lifecycle(rt_->lifecycle_);  // lock order: lifecycle, then mu_
  std::lock_guard<std::mutex> lock(mu_);
  return rt_->FinishStore(this, /*publish=*/true);  // a no-op once finished (by Close, too)
}

}  // namespace lmcache
