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
    if (st.ok()) st = OpenRecord(*sealer_, key, shape, reads[j].buf, reads[j].bytes);
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

void CacheRuntime::DropCorruptL1Record(const ChunkKey& key) {
  Entry removed;
  // Removed when idle (the caller let go of its reference); one that is in
  // use or pinned stays until then, and fails the same check next time.
  if (index_.RemoveIfIdle(key, &removed)) FreeEntry(removed);
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.l1_corrupt_chunks++;
}

void CacheRuntime::WriteBehind(const std::vector<ChunkKey>& keys) {
  const ChunkShape shape = StoredShape();
  const size_t align = HostPool::kAlignment;
  std::vector<DiskWrite> writes;
  // The record in host memory is shared with readers and never modified, so
  // the seal goes into a copy: of the first page (header included) with the
  // rest written straight from the slab, or of the whole record when it is
  // encrypted.
  std::vector<std::unique_ptr<uint8_t, decltype(&std::free)>> copies;
  for (const ChunkKey& k : keys) {
    Entry e;
    // A reference keeps the slab from eviction while the disk reads it. A
    // chunk evicted before its turn is simply not written.
    if (!index_.Acquire(k, &e, /*touch=*/false)) continue;
    const uint8_t* slab = pool_->SlabAddress(e.location);
    // Verified on the way out: a stray write into host memory is dropped here,
    // not persisted under a fresh seal.
    if (!VerifyChecksum(slab, shape).ok()) {
      (void)index_.Release(k);
      DropCorruptL1Record(k);
      continue;
    }
    DiskWrite w;
    w.key = k;
    w.data = slab;
    w.bytes = (e.bytes + align - 1) / align * align;
    const size_t copy_bytes = sealer_->encrypts() ? w.bytes : align;
    uint8_t* copy = static_cast<uint8_t*>(std::aligned_alloc(align, copy_bytes));
    if (copy == nullptr) {
      (void)index_.Release(k);
      continue;
    }
    copies.emplace_back(copy, &std::free);
    std::memcpy(copy, slab, std::min<size_t>(copy_bytes, w.bytes));
    ChunkHeader h;
    std::memcpy(&h, copy, sizeof(h));
    // Auth only, the payload is read in place and not written (Seal writes it only to encrypt).
    uint8_t* payload = sealer_->encrypts() ? copy + sizeof(ChunkHeader) : const_cast<uint8_t*>(slab) + sizeof(ChunkHeader);
    if (!sealer_->Seal(&h, payload, shape.payload_bytes()).ok()) {
      (void)index_.Release(k);
      continue;
    }
    std::memcpy(copy, &h, sizeof(h));
    if (sealer_->encrypts()) w.data = copy;  // the whole record, encrypted
    else w.first_page = copy;
    writes.push_back(w);
  }
  disk_->WriteMany(writes);
  for (const DiskWrite& w : writes) (void)index_.Release(w.key);
}

void CacheRuntime::FlushWrites() {
  // No wait in a forked child (the writer thread is not there) or after
  // Close (which drained the queue and stopped the writer).
  if (InForkedChild()) return;
  std::shared_lock<std::shared_mutex> lifecycle(lifecycle_);
  if (closed_.load()) return;
  if (write_behind_) write_behind_->Flush();
  if (has_remote_.load(std::memory_order_acquire)) remote_writes_->Flush();
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
  LMC_RETURN_IF_ERROR(index_.Release(key));
  // Verified on the way out (the copy, which is what leaves): a record
  // damaged in host memory is dropped, never shared as valid.
  const Status valid = VerifyChecksum(dst, StoredShape());
  if (!valid.ok()) DropCorruptL1Record(key);
  return valid;
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
    if (valid.ok()) valid = VerifyChecksum(record, shape);
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
  uint8_t* copy = pool_->SlabAddress(slab);
  std::memcpy(copy, record, bytes);
  // A record in host memory carries no seal (the remote tier checked its own).
  ChunkHeader clean = h;
  clean.seal_key_id = 0;
  clean.seal_flags = 0;
  std::memset(clean.seal_nonce, 0, sizeof(clean.seal_nonce));
  std::memset(clean.seal_tag, 0, sizeof(clean.seal_tag));
  std::memcpy(copy, &clean, sizeof(clean));
  LMC_RETURN_IF_ERROR(index_.Commit(key));
  if (disk_ && !disk_->Contains(key)) (void)write_behind_->TryPush(key);
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.imported_chunks++;
  return Status::Ok();
}

}  // namespace lmcache
