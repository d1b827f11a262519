// Eviction policies behind a small interface. The index tells the policy what
// happens to keys and asks it for victims; the policy never sees entries, so
// it cannot evict something in use -- the index filters candidates.
#pragma once

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "chunk_key.h"

namespace lmcache {

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  virtual void OnInsert(const ChunkKey& key) = 0;
  virtual void OnAccess(const ChunkKey& key) = 0;
  virtual void OnErase(const ChunkKey& key) = 0;
  // The best victim for which `evictable` is true, or false when none is.
  virtual bool PickVictim(const std::function<bool(const ChunkKey&)>& evictable, ChunkKey* victim) = 0;
};

// Least recently used first.
class LruPolicy final : public EvictionPolicy {
 public:
  void OnInsert(const ChunkKey& key) override;
  void OnAccess(const ChunkKey& key) override;
  void OnErase(const ChunkKey& key) override;
  bool PickVictim(const std::function<bool(const ChunkKey&)>& evictable, ChunkKey* victim) override;

 private:
  std::list<ChunkKey> order_;  // front: most recently used
  std::unordered_map<ChunkKey, std::list<ChunkKey>::iterator, ChunkKeyHasher> where_;
};

// "lru" -> LruPolicy; nullptr for an unknown name.
std::unique_ptr<EvictionPolicy> MakeEvictionPolicy(const std::string& name);

}  // namespace lmcache
