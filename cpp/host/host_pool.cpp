#include "host_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "device_memory.h"

namespace lmcache {

namespace {
constexpr size_t kHugePage = 2u << 20;

size_t RoundUp(size_t v, size_t a) { return (v + a - 1) / a * a; }
}  // namespace

Status HostPool::Create(size_t slab_bytes, size_t capacity_bytes, std::unique_ptr<HostPool>* out, bool shared) {
  if (slab_bytes == 0) return Status::InvalidArgument("host pool slab size must be positive");
  const size_t slab = RoundUp(slab_bytes, kAlignment);
  const size_t num_slabs = capacity_bytes / slab;
  if (num_slabs == 0) {
    return Status::InvalidArgument("host pool capacity " + std::to_string(capacity_bytes) +
                                   " bytes is smaller than one chunk (" + std::to_string(slab) +
                                   " bytes); raise l1_capacity_gb or lower chunk_size");
  }
  std::unique_ptr<HostPool> pool(new HostPool());
  pool->slab_bytes_ = slab;
  pool->num_slabs_ = num_slabs;

  // Explicit huge pages first (only succeeds if the admin reserved them), then
  // ordinary pages with a transparent-huge-page hint.
  const size_t bytes = num_slabs * slab;
  const size_t huge_bytes = RoundUp(bytes, kHugePage);
  void* p = MAP_FAILED;
  if (shared) {
    // A memory file only its creator holds a descriptor of (close-on-exec;
    // handed to engines over a Unix socket, never through the file system).
    pool->shared_fd_ = memfd_create("lmcache-host-pool", MFD_CLOEXEC);
    if (pool->shared_fd_ < 0) return Status::OutOfMemory("memfd_create for the shared host pool failed", errno);
    if (ftruncate(pool->shared_fd_, static_cast<off_t>(bytes)) != 0) {
      const int err = errno;
      close(pool->shared_fd_);
      pool->shared_fd_ = -1;
      return Status::OutOfMemory("sizing the shared host pool to " + std::to_string(bytes) + " bytes failed", err);
    }
    p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, pool->shared_fd_, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      close(pool->shared_fd_);
      pool->shared_fd_ = -1;
      return Status::OutOfMemory("mmap of the shared host pool failed", err);
    }
    pool->region_bytes_ = bytes;
  } else {
    p = mmap(nullptr, huge_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE,
             -1, 0);
    if (p != MAP_FAILED) {
      pool->huge_pages_ = true;
      pool->region_bytes_ = huge_bytes;
    } else {
      p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) {
        return Status::OutOfMemory("mmap of " + std::to_string(bytes) + " bytes for the host pool failed", errno);
      }
      pool->region_bytes_ = bytes;
      madvise(p, bytes, MADV_HUGEPAGE);  // a hint; failure is harmless
      // Pre-fault after the hint so the kernel can back the region with huge pages.
      if (madvise(p, bytes, MADV_POPULATE_WRITE) != 0) {
        // Older kernels: touch one byte per page instead.
        for (size_t off = 0; off < bytes; off += kAlignment) static_cast<volatile uint8_t*>(p)[off] = 0;
      }
    }
  }
  pool->base_ = static_cast<uint8_t*>(p);
  // The pool holds every tenant's KV (derived from prompts): keep it out of
  // core dumps. A pool that cannot be excluded is refused, not used.
  if (madvise(p, pool->region_bytes_, MADV_DONTDUMP) != 0) {
    const int err = errno;
    munmap(p, pool->region_bytes_);
    pool->base_ = nullptr;
    if (pool->shared_fd_ >= 0) close(pool->shared_fd_);
    pool->shared_fd_ = -1;
    return Status::OutOfMemory(
        "madvise(MADV_DONTDUMP) on the host pool failed; refusing a pool that core dumps would hold", err);
  }
  pool->device_registered_ = RegisterHostMemory(p, pool->region_bytes_);

  pool->free_stack_.reserve(num_slabs);
  // Push in reverse so slab 0 is handed out first (keeps early use compact).
  for (size_t i = num_slabs; i-- > 0;) pool->free_stack_.push_back(static_cast<int64_t>(i));
  pool->in_use_.assign(num_slabs, 0);
  *out = std::move(pool);
  return Status::Ok();
}

HostPool::~HostPool() {
  if (shared_fd_ >= 0) close(shared_fd_);
  if (base_ == nullptr) return;
  if (device_registered_) UnregisterHostMemory(base_);
  munmap(base_, region_bytes_);
}

int64_t HostPool::Allocate() {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_stack_.empty()) return kNoSlab;
  const int64_t slab = free_stack_.back();
  free_stack_.pop_back();
  in_use_[static_cast<size_t>(slab)] = 1;
  return slab;
}

Status HostPool::Free(int64_t slab) {
  std::lock_guard<std::mutex> lock(mu_);
  if (slab < 0 || static_cast<size_t>(slab) >= num_slabs_) {
    return Status::Internal("free of slab " + std::to_string(slab) + " outside the pool");
  }
  if (!in_use_[static_cast<size_t>(slab)]) {
    return Status::Internal("double free of slab " + std::to_string(slab));
  }
  in_use_[static_cast<size_t>(slab)] = 0;
  free_stack_.push_back(slab);
  return Status::Ok();
}

size_t HostPool::num_free() const {
  std::lock_guard<std::mutex> lock(mu_);
  return free_stack_.size();
}

}  // namespace lmcache
