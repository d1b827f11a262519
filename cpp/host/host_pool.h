// Host memory pool: one region reserved once at start, carved into equal slabs
// (one slab holds one stored chunk: header + payload). Allocation and release
// are O(1) and thread-safe; exhaustion is reported at once (kNoSlab), never
// waited on -- the caller decides whether to evict.
//
// The region is mmap'ed (2 MiB huge pages when the system has them reserved,
// otherwise transparent huge pages are requested), pre-faulted so the first
// store does not pay for page faults, and registered with CUDA when a device
// exists at run time, which makes it pinned memory for DMA. It is marked
// MADV_DONTDUMP: the cached KV of every tenant never lands in a core dump.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "status.h"

namespace lmcache {

class HostPool {
 public:
  static constexpr int64_t kNoSlab = -1;
  // Slabs start on this boundary and their size is a multiple of it, so a slab
  // can be the buffer of an O_DIRECT read or write.
  static constexpr size_t kAlignment = 4096;

  // Reserves floor(capacity_bytes / slab) slabs of at least `slab_bytes` each.
  // shared: the region is a memory file (memfd) that other processes can map
  // through shared_fd() (the node server hands it to the engines it serves).
  static Status Create(size_t slab_bytes, size_t capacity_bytes, std::unique_ptr<HostPool>* out,
                       bool shared = false);
  ~HostPool();
  HostPool(const HostPool&) = delete;
  HostPool& operator=(const HostPool&) = delete;

  // A free slab index, or kNoSlab when every slab is in use.
  int64_t Allocate();
  // Returns a slab obtained from Allocate. Freeing an unknown or free slab is a
  // caller bug and is reported, not silently accepted.
  Status Free(int64_t slab);

  uint8_t* SlabAddress(int64_t slab) const { return base_ + static_cast<size_t>(slab) * slab_bytes_; }
  size_t slab_bytes() const { return slab_bytes_; }
  size_t num_slabs() const { return num_slabs_; }
  size_t num_free() const;
  size_t region_bytes() const { return region_bytes_; }
  bool huge_pages() const { return huge_pages_; }
  bool device_registered() const { return device_registered_; }
  int shared_fd() const { return shared_fd_; }  // -1 unless shared

 private:
  HostPool() = default;

  uint8_t* base_ = nullptr;
  size_t region_bytes_ = 0;
  size_t slab_bytes_ = 0;
  size_t num_slabs_ = 0;
  bool huge_pages_ = false;
  bool device_registered_ = false;
  int shared_fd_ = -1;

  mutable std::mutex mu_;
  std::vector<int64_t> free_stack_;  // guarded by mu_
  std::vector<uint8_t> in_use_;      // guarded by mu_; catches double frees
};

}  // namespace lmcache
