// CacheRuntime, part four: what an operator asks of a cache (through the
// control API), never on an engine's hot path -- where a prefix lives, bring
// it into host memory ahead of a request, drop chosen chunks.
//
// As in Lookup, the remote tier is asked with no lock of the runtime held:
// its client may call back into the runtime (ImportRecord).
#include <algorithm>

#include "cache_runtime.h"
#include "cache_runtime_internal.h"

namespace lmcache {

Status CacheRuntime::Locate(const std::vector<ChunkKey>& keys, TierPrefixes* out) {
  *out = TierPrefixes{};
  {
    LMC_ENTER();
    LMC_RETURN_IF_ERROR(CheckHasShape());
    // ContainsReady does not count as a use: locating must not change what eviction picks.
    while (out->host < keys.size() && index_.ContainsReady(keys[out->host])) ++out->host;
    if (disk_) {
      while (out->disk < keys.size() && disk_->Contains(keys[out->disk])) ++out->disk;
    }
    while (out->any < keys.size() &&
           (index_.ContainsReady(keys[out->any]) || (disk_ && disk_->Contains(keys[out->any])))) {
      ++out->any;
    }
  }
  if (has_remote_.load(std::memory_order_acquire) && !keys.empty()) {
    out->remote = std::min(remote_->CountPrefix(keys), keys.size());
    if (out->any < keys.size()) {
      const std::vector<ChunkKey> rest(keys.begin() + out->any, keys.end());
      out->any += std::min(remote_->CountPrefix(rest), rest.size());
    }
  }
  return Status::Ok();
}

Status CacheRuntime::Prefetch(const std::vector<ChunkKey>& keys, size_t* host_chunks) {
  *host_chunks = 0;
  {
    LMC_ENTER();
    LMC_RETURN_IF_ERROR(CheckHasShape());
    if (disk_) {
      // The leading run that host memory and disk hold together; the part
      // only on disk is read now, on this thread (PromoteFromDisk skips what
      // host memory already has).
      std::vector<ChunkKey> from_disk;
      for (const ChunkKey& k : keys) {
        if (index_.ContainsReady(k)) continue;
        if (!disk_->Contains(k)) break;
        from_disk.push_back(k);
      }
      if (!from_disk.empty()) PromoteFromDisk(from_disk, nullptr);
    }
  }
  // Where host memory and disk end, the remote tier may go on.
  FetchRemotePart(keys, keys.size() * size_t(options_.chunk_size));
  LMC_ENTER();
  while (*host_chunks < keys.size() && index_.ContainsReady(keys[*host_chunks])) ++*host_chunks;
  return Status::Ok();
}

Status CacheRuntime::Evict(const std::vector<ChunkKey>& keys, bool include_disk, size_t* removed) {
  LMC_ENTER();
  *removed = 0;
  // A prefetch already queued would bring an evicted chunk straight back.
  if (prefetch_) prefetch_->Flush();
  for (const ChunkKey& k : keys) {
    Entry e;
    if (index_.RemoveIfIdle(k, &e)) {  // in use or pinned: stays
      FreeEntry(e);
      ++*removed;
    }
    if (include_disk && disk_ && disk_->Contains(k)) {
      disk_->Remove(k, /*corrupt=*/false);
      ++*removed;
    }
  }
  return Status::Ok();
}

}  // namespace lmcache
