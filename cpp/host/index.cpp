#include "index.h"

namespace lmcache {

size_t Index::CountPrefixHits(const ChunkKey* keys, size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  size_t hits = 0;
  for (; hits < n; ++hits) {
    auto it = entries_.find(keys[hits]);
    if (it == entries_.end() || !it->second.ready) break;
    policy_->OnAccess(keys[hits]);
  }
  return hits;
}

bool Index::ContainsReady(const ChunkKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  return it != entries_.end() && it->second.ready;
}

bool Index::Reserve(const ChunkKey& key, const Entry& entry) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry e = entry;
  e.ready = false;
  e.ref_count = 0;
  e.pin_count = 0;
  return entries_.emplace(key, e).second;
}

Status Index::Commit(const ChunkKey& key, bool acquire) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.ready) return Status::Internal("commit of an entry that was not reserved");
    it->second.ready = true;
    if (acquire) ++it->second.ref_count;
    policy_->OnInsert(key);
  }
  written_.notify_all();
  return Status::Ok();
}

void Index::WaitForShortWrite(const ChunkKey& key) {
  std::unique_lock<std::mutex> lock(mu_);
  written_.wait(lock, [&] {
    auto it = entries_.find(key);
    return it == entries_.end() || it->second.ready || !it->second.short_write;
  });
}

bool Index::PeekReserved(const ChunkKey& key, Entry* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.ready) return false;
  *out = it->second;
  return true;
}

Status Index::Abort(const ChunkKey& key, Entry* removed) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.ready) return Status::Internal("abort of an entry that was not reserved");
    *removed = it->second;
    entries_.erase(it);
  }
  written_.notify_all();
  return Status::Ok();
}

bool Index::Acquire(const ChunkKey& key, Entry* out, bool touch) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || !it->second.ready) return false;
  ++it->second.ref_count;
  if (touch) policy_->OnAccess(key);
  *out = it->second;
  return true;
}

Status Index::Release(const ChunkKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.ref_count == 0) return Status::Internal("release without acquire");
  --it->second.ref_count;
  return Status::Ok();
}

Status Index::Pin(const ChunkKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || !it->second.ready) return Status::NotFound("pin of a key that is not cached");
  ++it->second.pin_count;
  return Status::Ok();
}

Status Index::Unpin(const ChunkKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.pin_count == 0) return Status::NotFound("unpin of a key that is not pinned");
  --it->second.pin_count;
  return Status::Ok();
}

bool Index::EvictOne(ChunkKey* key, Entry* removed) {
  std::lock_guard<std::mutex> lock(mu_);
  ChunkKey victim;
  const bool found = policy_->PickVictim(
      [this](const ChunkKey& k) {
        auto it = entries_.find(k);
        return it != entries_.end() && Idle(it->second);
      },
      &victim);
  if (!found) return false;
  auto it = entries_.find(victim);
  *key = victim;
  *removed = it->second;
  entries_.erase(it);
  policy_->OnErase(victim);
  return true;
}

bool Index::RemoveIfIdle(const ChunkKey& key, Entry* removed) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || !Idle(it->second)) return false;
  *removed = it->second;
  entries_.erase(it);
  policy_->OnErase(key);
  return true;
}

std::vector<Entry> Index::RemoveAllIdle() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Entry> removed;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (Idle(it->second)) {
      removed.push_back(it->second);
      policy_->OnErase(it->first);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  return removed;
}

size_t Index::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

}  // namespace lmcache
