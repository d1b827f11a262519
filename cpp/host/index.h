// The index: chunk key -> entry (which tier holds it, where, how big, and who
// is using it). One mutex guards the map and the eviction policy; no I/O or
// copying ever happens under it.
//
// Entry life cycle:
//   Reserve (kWriting, invisible to lookups) -> Commit (kReady) or Abort
//   Acquire/Release bracket every read of a ready entry's data
//   Pin/Unpin keep an entry from eviction on request of the user
// An entry with readers, pins or a write in progress is never evicted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "chunk_key.h"
#include "eviction.h"
#include "status.h"

namespace lmcache {

enum class Tier : uint8_t { kHost = 1, kDisk = 2, kRemote = 3 };

struct Entry {
  Tier tier = Tier::kHost;
  int64_t location = -1;  // host: slab index
  uint64_t bytes = 0;     // record bytes (header + payload)
  uint32_t num_tokens = 0;
  uint32_t ref_count = 0;
  uint32_t pin_count = 0;
  bool ready = false;     // false while the write is in progress
  // The write finishes within the call that reserved it (a disk promotion, an
  // import), so readers may wait for it. A store's reservation can last until
  // its PendingStore is finished by someone else, so nobody waits for that.
  bool short_write = false;
};

class Index {
 public:
  explicit Index(std::unique_ptr<EvictionPolicy> policy) : policy_(std::move(policy)) {}

  // Number of leading keys that are ready (the hit prefix). Touches them.
  size_t CountPrefixHits(const ChunkKey* keys, size_t n);
  bool ContainsReady(const ChunkKey& key) const;

  // Claims `key` for writing. False if it already exists (ready or being written).
  bool Reserve(const ChunkKey& key, const Entry& entry);
  // Makes a reserved entry visible; with `acquire` it comes with a read reference.
  Status Commit(const ChunkKey& key, bool acquire = false);
  // Returns once `key` is not being written by a short write (committed,
  // aborted, absent, or reserved by a store, which may take long).
  void WaitForShortWrite(const ChunkKey& key);
  // Whether `key` is reserved (being written) now, and its entry.
  bool PeekReserved(const ChunkKey& key, Entry* out) const;
  // Drops a reserved entry; returns it so the caller can free its space.
  Status Abort(const ChunkKey& key, Entry* removed);

  // Takes a read reference on a ready entry. False if absent or not ready.
  // `touch`: counts as a use for eviction (not for background readers).
  bool Acquire(const ChunkKey& key, Entry* out, bool touch = true);
  Status Release(const ChunkKey& key);

  Status Pin(const ChunkKey& key);
  Status Unpin(const ChunkKey& key);

  // Removes the policy's victim among idle ready entries; false if none.
  bool EvictOne(ChunkKey* key, Entry* removed);
  // Removes `key` if it is ready and idle; false otherwise.
  bool RemoveIfIdle(const ChunkKey& key, Entry* removed);
  // Removes every idle ready entry; returns them.
  std::vector<Entry> RemoveAllIdle();

  size_t size() const;

 private:
  static bool Idle(const Entry& e) { return e.ready && e.ref_count == 0 && e.pin_count == 0; }

  mutable std::mutex mu_;
  std::condition_variable written_;  // a write finished (Commit or Abort)
  std::unordered_map<ChunkKey, Entry, ChunkKeyHasher> entries_;  // guarded by mu_
  std::unique_ptr<EvictionPolicy> policy_;                       // guarded by mu_
};

}  // namespace lmcache
