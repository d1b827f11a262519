// CacheRuntime, part two: moving records between tiers -- disk promotion
// and write-behind, and the record exchange with tiers that live outside the
// runtime (the remote tier). The operations engines call are in
// cache_runtime.cpp.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "cache_runtime.h"
#include "cache_runtime_internal.h"

namespace lmcache {

void CacheRuntime::PromoteFromDisk(const std::vector<ChunkKey>& keys, std::vector<Entry>* held) {
  const ChunkShape shape = StoredShape();
  if (held) held->assign(keys.size(), Entry{});  // ready == false: not held
  std::vector<DiskRead> reads;
  std::vector<size_t> read_of;  // read -> index in keys
  std::vector<size_t> others;   // being written by someone else (a store or another promotion)
  for (size_t i = 0; i < keys.size(); ++i) {
    Entry e;
    if (held ? index_.Acquire(keys[i], &e) : index_.ContainsReady(keys[i])) {  // already in L1
      if (held) (*held)[i] = e;
      continue;
    }
    const int64_t slab = AllocateSlab();
    if (slab == HostPool::kNoSlab) continue;  // no room in L1: a miss this time
    e = Entry{};
    e.tier = Tier::kHost;
    e.location = slab;
    e.bytes = shape.record_bytes();
    e.num_tokens = shape.num_tokens;
    e.short_write = true;
    if (!index_.Reserve(keys[i], e)) {
      (void)pool_->Free(slab);
      others.push_back(i);
      continue;
    }
    DiskRead r;
    r.key = keys[i];
    r.buf = pool_->SlabAddress(slab);
    r.capacity = pool_->slab_bytes();
    reads.push_back(r);
    read_of.push_back(i);
  }
  disk_->ReadMany(reads);  // no lock held

  for (size_t j = 0; j < reads.size(); ++j) {
    const ChunkKey& key = reads[j].key;
    Status st = reads[j].status;
    if (st.ok()) {
      ChunkHeader h;
      std::memcpy(&h, reads[j].buf, sizeof(h));
      st = ValidateHeader(h, shape, key);
      if (st.ok() && reads[j].bytes < shape.record_bytes()) st = Status::Corrupt("record truncated");
      if (st.ok() && !(h.flags & kChecksumValid)) st = Status::Corrupt("record without a checksum");
      if (st.ok() && PayloadChecksum(reads[j].buf + sizeof(ChunkHeader), shape) != h.checksum) {
        st = Status::Corrupt("payload checksum mismatch");
      }
    }
    if (st.ok()) {
      // Counted before the chunk becomes visible, so a reader that finds it also finds it counted.
      std::lock_guard<std::mutex> lock(stats_mu_);
      stats_.promoted_chunks++;
    }
    if (st.ok() && index_.Commit(key, /*acquire=*/held != nullptr).ok()) {
      if (held) {
        Entry& e = (*held)[read_of[j]];
        e.tier = Tier::kHost;
        e.location = (reads[j].buf - pool_->SlabAddress(0)) / int64_t(pool_->slab_bytes());
        e.bytes = shape.record_bytes();
        e.ready = true;
      }
      continue;
    }
    Entry removed;
    if (index_.Abort(key, &removed).ok()) FreeEntry(removed);
    if (st.code() == StatusCode::kCorrupt) {
      disk_->Remove(key, /*corrupt=*/true);  // never offered again
      std::lock_guard<std::mutex> lock(stats_mu_);
      stats_.load_errors++;
    }
  }
  // A prefetch is done: someone else is bringing those chunks in. A load
  // waits for a promotion in flight (it finishes by itself), never for a
  // store's reservation (its finisher may be this very thread): then a miss.
  if (!held) return;
  for (size_t i : others) {
    index_.WaitForShortWrite(keys[i]);
    if (!index_.Acquire(keys[i], &(*held)[i])) (*held)[i].ready = false;
  }
}

void CacheRuntime::WriteBehind(const std::vector<ChunkKey>& keys) {
  const ChunkShape shape = StoredShape();
  std::vector<DiskWrite> writes;
  // The record in host memory is shared with readers and never modified; a
  // record still without its checksum goes out with a sealed copy of its
  // first page (header included) and the rest straight from the slab.
  std::vector<std::unique_ptr<uint8_t, decltype(&std::free)>> pages;
  for (const ChunkKey& k : keys) {
    Entry e;
    // A reference keeps the slab from eviction while the disk reads it. A
    // chunk evicted before its turn is simply not written.
    if (!index_.Acquire(k, &e, /*touch=*/false)) continue;
    DiskWrite w;
    w.key = k;
    w.data = pool_->SlabAddress(e.location);
    w.bytes = (e.bytes + HostPool::kAlignment - 1) / HostPool::kAlignment * HostPool::kAlignment;
    ChunkHeader h;
    std::memcpy(&h, w.data, sizeof(h));
    if (!(h.flags & kChecksumValid)) {
      uint8_t* page = static_cast<uint8_t*>(std::aligned_alloc(HostPool::kAlignment, HostPool::kAlignment));
      if (page == nullptr) {
        (void)index_.Release(k);
        continue;
      }
      std::memcpy(page, w.data, HostPool::kAlignment);
      h.checksum = PayloadChecksum(w.data + sizeof(ChunkHeader), shape);
      h.flags |= kChecksumValid;
      std::memcpy(page, &h, sizeof(h));
      w.first_page = page;
      pages.emplace_back(page, &std::free);
    }
    writes.push_back(w);
  }
  disk_->WriteMany(writes);
  for (const DiskWrite& w : writes) (void)index_.Release(w.key);
}

void CacheRuntime::FlushWrites() {
  if (write_behind_) write_behind_->Flush();
}

size_t CacheRuntime::RecordBytes() const {
  return has_shape_.load(std::memory_order_acquire) ? StoredShape().record_bytes() : 0;
}

Status CacheRuntime::ExportRecord(const ChunkKey& key, uint8_t* dst, size_t capacity, size_t* bytes) {
  LMC_ENTER();
  Entry e;
  if (!index_.Acquire(key, &e, /*touch=*/false)) return Status::NotFound("key " + key.Hex() + " is not in host memory");
  if (e.bytes > capacity) {
    (void)index_.Release(key);
    return Status::InvalidArgument("export buffer too small");
  }
  std::memcpy(dst, pool_->SlabAddress(e.location), e.bytes);
  *bytes = e.bytes;
  SealRecord(dst, StoredShape());  // a record that leaves host memory carries its checksum
  return index_.Release(key);
}

Status CacheRuntime::ImportRecord(const ChunkKey& key, const uint8_t* record, size_t bytes) {
  LMC_ENTER();
  if (!has_shape_.load(std::memory_order_acquire)) return Status::InvalidState("the KV shape is not known yet");
  const ChunkShape shape = StoredShape();
  Status valid = Status::Ok();
  ChunkHeader h;
  if (record == nullptr || bytes != shape.record_bytes()) {
    valid = Status::Corrupt("record of " + std::to_string(bytes) + " bytes, expected " +
                            std::to_string(shape.record_bytes()));
  } else {
    std::memcpy(&h, record, sizeof(h));
    valid = ValidateHeader(h, shape, key);
    if (valid.ok() && !(h.flags & kChecksumValid)) valid = Status::Corrupt("record without a checksum");
    if (valid.ok() && PayloadChecksum(record + sizeof(ChunkHeader), shape) != h.checksum) {
      valid = Status::Corrupt("payload checksum mismatch");
    }
  }
  if (!valid.ok()) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.load_errors++;
    return valid;
  }
  if (index_.ContainsReady(key)) return Status::Ok();
  const int64_t slab = AllocateSlab();
  if (slab == HostPool::kNoSlab) return Status::OutOfMemory("no room in the host tier");
  Entry e;
  e.tier = Tier::kHost;
  e.location = slab;
  e.bytes = bytes;
  e.num_tokens = shape.num_tokens;
  e.short_write = true;
  if (!index_.Reserve(key, e)) {  // someone else is bringing it in
    (void)pool_->Free(slab);
    return Status::Ok();
  }
  std::memcpy(pool_->SlabAddress(slab), record, bytes);
  LMC_RETURN_IF_ERROR(index_.Commit(key));
  if (disk_ && !disk_->Contains(key)) (void)write_behind_->TryPush(key);
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.imported_chunks++;
  return Status::Ok();
}

}  // namespace lmcache
