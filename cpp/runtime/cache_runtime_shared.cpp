// CacheRuntime, part five: serving engines of other processes (the node
// server). With l1_shared_memory the host pool is a memory file the engines
// map; they copy records between it and their KV caches themselves
// (shared_mover.h), while this runtime keeps the index, the references that
// keep a chunk in place while an engine reads it, and the other tiers.
//
// A record an engine wrote is checked (header, key, checksum) before anyone
// can read it: bytes from another process are never published unchecked.
#include <algorithm>
#include <cstring>

#include "cache_runtime.h"
#include "cache_runtime_internal.h"

namespace lmcache {

Status CacheRuntime::SharedPool(int* fd, size_t* region_bytes, size_t* slab_bytes) const {
  LMC_ENTER();
  LMC_RETURN_IF_ERROR(CheckHasShape());
  if (pool_->shared_fd() < 0) return Status::InvalidState("the host pool is not shared (l1_shared_memory is off)");
  *fd = pool_->shared_fd();
  *region_bytes = pool_->num_slabs() * pool_->slab_bytes();
  *slab_bytes = pool_->slab_bytes();
  return Status::Ok();
}

Status CacheRuntime::HoldPrefix(const std::vector<ChunkKey>& keys, size_t max_chunks, std::vector<int64_t>* slabs) {
  slabs->clear();
  const size_t wanted = std::min(keys.size(), max_chunks);
  // The part only the remote tier has comes into host memory first (no lock held).
  FetchRemotePart(keys, wanted * size_t(options_.chunk_size));
  LMC_ENTER();
  LMC_RETURN_IF_ERROR(CheckHasShape());
  std::vector<Entry> held;
  size_t prefix = 0;
  AcquireLocalPrefix(keys, wanted, &held, &prefix);
  const ChunkShape shape = StoredShape();
  size_t usable = 0;
  std::vector<ChunkKey> corrupt;
  for (; usable < prefix && held[usable].ready; ++usable) {
    const uint8_t* record = pool_->SlabAddress(held[usable].location);
    ChunkHeader h;
    std::memcpy(&h, record, sizeof(h));
    Status valid = ValidateHeader(h, shape, keys[usable]);
    if (valid.ok() && options_.verify_l1_checksums) valid = VerifyChecksum(record, shape);
    if (!valid.ok()) {
      corrupt.push_back(keys[usable]);
      break;
    }
    slabs->push_back(held[usable].location);
  }
  for (size_t c = usable; c < prefix; ++c) {
    if (held[c].ready) (void)index_.Release(keys[c]);
  }
  for (const ChunkKey& k : corrupt) {
    Entry removed;
    if (index_.RemoveIfIdle(k, &removed)) FreeEntry(removed);
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.load_calls++;
  stats_.load_errors += corrupt.size();
  stats_.loaded_chunks += usable;
  stats_.loaded_tokens += usable * uint64_t(options_.chunk_size);
  return Status::Ok();
}

Status CacheRuntime::ReleaseHeld(const std::vector<ChunkKey>& keys) {
  LMC_ENTER();
  for (const ChunkKey& k : keys) (void)index_.Release(k);
  return Status::Ok();
}

Status CacheRuntime::ReserveForWrite(const std::vector<ChunkKey>& keys, std::vector<int64_t>* slabs) {
  LMC_ENTER();
  LMC_RETURN_IF_ERROR(CheckHasShape());
  const ChunkShape shape = StoredShape();
  slabs->assign(keys.size(), -1);
  uint64_t skipped = 0, dropped = 0;
  for (size_t c = 0; c < keys.size(); ++c) {
    const SlabReservation r = ReserveSlab(keys[c], shape, &(*slabs)[c]);
    if (r != SlabReservation::kReserved) ++(r == SlabReservation::kNoRoom ? dropped : skipped);
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.store_calls++;
  stats_.store_skipped_chunks += skipped;
  stats_.store_dropped_chunks += dropped;
  return Status::Ok();
}

Status CacheRuntime::CommitWritten(const std::vector<ChunkKey>& keys, const std::vector<int64_t>& slabs,
                                   size_t* published) {
  *published = 0;
  if (slabs.size() != keys.size()) return Status::InvalidArgument("one slab per key");
  LMC_ENTER();
  const ChunkShape shape = StoredShape();
  // Only the writer's own reservations, at the slabs it was given.
  std::vector<size_t> mine;
  for (size_t c = 0; c < keys.size(); ++c) {
    Entry reserved;
    if (slabs[c] >= 0 && index_.PeekReserved(keys[c], &reserved) && reserved.location == slabs[c]) mine.push_back(c);
  }
  // Each record checked on the copy threads (the checksum is a pass over the payload).
  std::vector<uint8_t> valid(mine.size(), 0);
  threads_.ParallelFor(mine.size(), [&](size_t i) {
    const uint8_t* record = pool_->SlabAddress(slabs[mine[i]]);
    ChunkHeader h;
    std::memcpy(&h, record, sizeof(h));
    valid[i] = ValidateHeader(h, shape, keys[mine[i]]).ok() && VerifyChecksum(record, shape).ok();
  });
  std::vector<ChunkKey> done;
  uint64_t bad = 0;
  for (size_t i = 0; i < mine.size(); ++i) {
    const ChunkKey& key = keys[mine[i]];
    if (valid[i] && index_.Commit(key).ok()) {
      done.push_back(key);
      continue;
    }
    ++bad;
    Entry removed;
    if (index_.Abort(key, &removed).ok()) FreeEntry(removed);
  }
  uint64_t write_dropped = 0;
  if (disk_) {
    for (const ChunkKey& k : done) {
      if (!disk_->Contains(k) && !write_behind_->TryPush(k)) ++write_dropped;
    }
  }
  QueueRemoteWrites(done, done.size());
  *published = done.size();
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.stored_chunks += done.size();
  stats_.load_errors += bad;
  stats_.write_behind_dropped += write_dropped;
  return Status::Ok();
}

Status CacheRuntime::AbortWritten(const std::vector<ChunkKey>& keys, const std::vector<int64_t>& slabs) {
  if (slabs.size() != keys.size()) return Status::InvalidArgument("one slab per key");
  LMC_ENTER();
  for (size_t c = 0; c < keys.size(); ++c) {
    Entry reserved;
    if (slabs[c] < 0 || !index_.PeekReserved(keys[c], &reserved) || reserved.location != slabs[c]) continue;
    Entry removed;
    if (index_.Abort(keys[c], &removed).ok()) FreeEntry(removed);
  }
  return Status::Ok();
}

}  // namespace lmcache
