// The engine's half of the node server's data path: maps the server's host
// pool (a memory file it hands over a Unix socket) and copies records
// between it and the engine's KV cache, so a hit costs one copy and no
// serialization. The server keeps the index and the references; it tells
// the engine which slab holds each chunk (CacheRuntime::HoldPrefix,
// ReserveForWrite).
//
// Records read from the shared region were written by another process:
// every header is checked (and, with verify, every checksum) before its
// payload reaches the engine's cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "chunk_format.h"
#include "chunk_key.h"
#include "copy_engine.h"
#include "kv_layout.h"
#include "status.h"
#include "thread_pool.h"

namespace lmcache {

class SharedMover {
 public:
  explicit SharedMover(int num_threads);
  ~SharedMover();
  SharedMover(const SharedMover&) = delete;
  SharedMover& operator=(const SharedMover&) = delete;

  // Maps `fd` (not kept; the caller closes it) of region_bytes, in slabs of
  // slab_bytes. A new Map replaces the old one (a restarted server).
  Status Map(int fd, size_t region_bytes, size_t slab_bytes);
  void Unmap();
  bool mapped() const { return base_ != nullptr; }

  // Copies the records in slabs[c] (chunk c of `keys`) into the first
  // num_slots slots of `layout`, every layer. A record whose header (or,
  // with verify, checksum) does not match ends the prefix there: *tokens is
  // what was delivered.
  Status Load(const KVLayout& layout, uint32_t chunk_size, const int64_t* slots, size_t num_slots,
              const std::vector<ChunkKey>& keys, const std::vector<int64_t>& slabs, bool verify, size_t* tokens);
  // Writes chunk c's record (header with checksum, payload) into slabs[c]
  // for every c with slabs[c] >= 0; chunk c covers slots [c*chunk_size, (c+1)*chunk_size).
  Status Store(const KVLayout& layout, uint32_t chunk_size, const int64_t* slots, size_t num_slots,
               const std::vector<ChunkKey>& keys, const std::vector<int64_t>& slabs);

 private:
  Status CheckSlab(int64_t slab, uint64_t record_bytes) const;
  uint8_t* Slab(int64_t slab) const { return base_ + size_t(slab) * slab_bytes_; }

  ThreadPool threads_;
  CopyEngine copy_;
  uint8_t* base_ = nullptr;
  size_t region_bytes_ = 0;
  size_t slab_bytes_ = 0;
};

}  // namespace lmcache
