// CacheRuntime, part three: loads. Every load is a PendingLoad: Begin
// references and checks the cached prefix, LoadLayers moves layers, Finish
// releases. A one-call load (token_calls.h) is the three in a row; an engine
// that overlaps loading with its forward pass calls them itself, a layer at
// a time.
#include <algorithm>
#include <cstring>

#include "cache_runtime.h"
#include "cache_runtime_internal.h"

namespace lmcache {

Status CacheRuntime::BeginLoad(const std::vector<ChunkKey>& keys, const KVLayout& layout, const int64_t* slots,
                               size_t num_slots, uint64_t stream, std::unique_ptr<PendingLoad>* out) {
  // The part of the wanted prefix that only the remote tier has comes into
  // host memory first (no lock held: the client imports through the runtime).
  FetchRemotePart(keys, num_slots);
  LMC_ENTER();
  LMC_RETURN_IF_ERROR(CheckHasShape());
  LMC_RETURN_IF_ERROR(CheckLayout(layout));
  LMC_RETURN_IF_ERROR(CheckSlots(slots, num_slots, layout.num_slots()));
  if (layout.device >= 0) LMC_RETURN_IF_ERROR(CheckDeviceReady());

  const uint32_t cs = options_.chunk_size;
  const ChunkShape shape = ChunkShape::FromLayout(layout, cs);
  const size_t wanted_chunks = std::min(keys.size(), (num_slots + cs - 1) / cs);
  for (size_t c = 0; layout.opaque_blocks() && c < wanted_chunks; ++c) {
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(cs, num_slots - c * cs));
    if (!BlockSlotsConsistent(slots + c * cs, n, layout.block_size, true)) {
      return Status::InvalidArgument("chunk " + std::to_string(c) +
                                     " does not map to whole engine blocks in order; this cache moves whole blocks");
    }
  }
  // Take references on the prefix's chunks in L1; chunks found only on disk
  // are read into L1 (promoted) and referenced too. Referenced chunks are
  // never evicted, so nothing moves under the copies until Finish.
  std::vector<Entry> held;
  size_t prefix = 0;
  AcquireLocalPrefix(keys, wanted_chunks, &held, &prefix);

  std::unique_ptr<PendingLoad> load(new PendingLoad(this));
  load->layout_ = layout;
  load->stream_ = stream;
  load->slots_.assign(slots, slots + num_slots);
  size_t usable = 0;  // leading held chunks whose records check out
  std::vector<ChunkKey> corrupt;
  for (; usable < prefix && held[usable].ready; ++usable) {
    const size_t c = usable;
    const uint8_t* record = pool_->SlabAddress(held[c].location);
    ChunkHeader h;
    std::memcpy(&h, record, sizeof(h));
    Status valid = ValidateHeader(h, shape, keys[c]);
    if (valid.ok() && options_.verify_l1_checksums) valid = VerifyChecksum(record, shape);
    if (!valid.ok()) {
      corrupt.push_back(keys[c]);
      break;
    }
    ChunkTransfer t;
    t.payload = const_cast<uint8_t*>(record) + sizeof(ChunkHeader);
    t.slots = load->slots_.data() + c * cs;
    t.payload_tokens = cs;
    t.num_tokens = static_cast<uint32_t>(std::min<size_t>(cs, num_slots - c * cs));
    load->transfers_.push_back(t);
    load->held_.push_back(keys[c]);
    load->tokens_ += t.num_tokens;
  }
  // Chunks past the usable prefix are not needed: give them back now. A
  // record that failed validation is dropped so nobody is offered it again.
  for (size_t c = usable; c < prefix; ++c) {
    if (held[c].ready) (void)index_.Release(keys[c]);
  }
  for (const ChunkKey& k : corrupt) {
    Entry removed;
    if (index_.RemoveIfIdle(k, &removed)) FreeEntry(removed);
  }
  if (layout.device >= 0 && !load->transfers_.empty()) {
    const Status prepared = device_->Prepare(layout, load->transfers_, stream, &load->device_batch_);
    if (!prepared.ok()) {
      (void)ReleaseLoad(load.get());
      return prepared;
    }
  }
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.load_calls++;
    stats_.load_errors += corrupt.size();
  }
  {
    std::lock_guard<std::mutex> lock(loads_mu_);
    open_loads_.insert(load.get());
  }
  *out = std::move(load);  // outside the lock: a handle *out held before finishes in its destructor
  return Status::Ok();
}

void CacheRuntime::AcquireLocalPrefix(const std::vector<ChunkKey>& keys, size_t wanted, std::vector<Entry>* held,
                                      size_t* prefix) {
  held->assign(wanted, Entry{});
  std::vector<ChunkKey> from_disk;
  size_t n = 0;
  for (; n < wanted; ++n) {
    if (index_.Acquire(keys[n], &(*held)[n])) continue;
    (*held)[n].ready = false;
    if (disk_ && disk_->Contains(keys[n])) {
      from_disk.push_back(keys[n]);
      continue;
    }
    break;  // the prefix ends at the first chunk no tier has
  }
  if (!from_disk.empty()) {
    std::vector<Entry> promoted;
    PromoteFromDisk(from_disk, &promoted);
    for (size_t c = 0, j = 0; c < n; ++c) {
      if (!(*held)[c].ready) (*held)[c] = promoted[j++];
    }
  }
  *prefix = n;
}

Status CacheRuntime::LoadLayersOf(PendingLoad* load, uint32_t end_layer) {
  end_layer = std::min(end_layer, load->layout_.num_layers);
  if (end_layer <= load->layers_done_) return Status::Ok();
  const uint32_t first = load->layers_done_, count = end_layer - first;
  if (!load->transfers_.empty()) {
    if (load->layout_.device < 0) {
      copy_.Scatter(load->layout_, load->transfers_, first, count);
    } else {
      const Status launched = device_->Launch(*load->device_batch_, /*gather=*/false, first, count, load->stream_);
      if (!launched.ok()) {
        load->failed_ = true;
        return launched;
      }
    }
  }
  load->layers_done_ = end_layer;
  return Status::Ok();
}

Status CacheRuntime::ReleaseLoad(PendingLoad* load) {
  if (load->finished_.load()) return Status::Ok();
  Status synced = Status::Ok();
  if (load->device_batch_) {
    // Nothing may still read the pool once the chunks are released.
    synced = device_->Synchronize(load->layout_.device, load->stream_);
    load->device_batch_.reset();
  }
  for (const ChunkKey& k : load->held_) (void)index_.Release(k);
  {
    std::lock_guard<std::mutex> lock(loads_mu_);
    open_loads_.erase(load);
  }
  load->finished_.store(true);
  if (!synced.ok()) return synced;
  if (!load->failed_ && load->layers_done_ == load->layout_.num_layers) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.loaded_chunks += load->transfers_.size();
    stats_.loaded_tokens += load->tokens_;
  }
  return Status::Ok();
}

PendingLoad::~PendingLoad() {
  if (!finished_.load()) (void)Finish();
}

// A finished handle never touches its runtime again: Close finishes every
// open handle, so a handle may outlive the runtime once it is finished.
Status PendingLoad::LoadLayers(uint32_t end_layer) {
  if (finished_.load()) return closed_ ? Status::Closed() : Status::InvalidState("this load is finished");
  if (rt_->InForkedChild()) return Status::ForkedChild();  // before any lock (see LMC_ENTER)
  std::shared_lock<std::shared_mutex> lifecycle(rt_->lifecycle_);  // lock order: lifecycle, then mu_
  if (rt_->closed_.load()) return Status::Closed();
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_.load()) return Status::InvalidState("this load is finished");
  if (failed_) return Status::InvalidState("an earlier step of this load failed");
  return rt_->LoadLayersOf(this, end_layer);
}

Status PendingLoad::Finish() {
  if (finished_.load()) return Status::Ok();
  if (rt_->InForkedChild()) return Status::ForkedChild();
  std::shared_lock<std::shared_mutex> lifecycle(rt_->lifecycle_);
  std::lock_guard<std::mutex> lock(mu_);
  return rt_->ReleaseLoad(this);  // a no-op once finished (by Close, too)
}

}  // namespace lmcache
