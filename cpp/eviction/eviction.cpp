#include "eviction.h"

namespace lmcache {

void LruPolicy::OnInsert(const ChunkKey& key) {
  auto it = where_.find(key);
  if (it != where_.end()) order_.erase(it->second);
  order_.push_front(key);
  where_[key] = order_.begin();
}

void LruPolicy::OnAccess(const ChunkKey& key) {
  auto it = where_.find(key);
  if (it == where_.end()) return;
  order_.splice(order_.begin(), order_, it->second);
}

void LruPolicy::OnErase(const ChunkKey& key) {
  auto it = where_.find(key);
  if (it == where_.end()) return;
  order_.erase(it->second);
  where_.erase(it);
}

bool LruPolicy::PickVictim(const std::function<bool(const ChunkKey&)>& evictable, ChunkKey* victim) {
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    if (evictable(*it)) {
      *victim = *it;
      return true;
    }
  }
  return false;
}

std::unique_ptr<EvictionPolicy> MakeEvictionPolicy(const std::string& name) {
  if (name == "lru") return std::make_unique<LruPolicy>();
  return nullptr;
}

}  // namespace lmcache
