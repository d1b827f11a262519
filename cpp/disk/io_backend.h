// Batched file I/O for the disk tier. One call submits a batch of reads or
// writes of aligned buffers and returns when all are done; large buffers are
// split into kMaxOpBytes pieces so that one 32 MiB record keeps the drive's
// queue full.
//
// Two backends with the same contract: io_uring (liburing, up to queue_depth
// operations in flight) and a thread pool of pread/pwrite. MakeIoBackend
// probes io_uring at run time and falls back when the kernel, a seccomp
// filter or a missing liburing refuses it; the fallback can also be forced.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lmcache {

struct IoOp {
  int fd = -1;
  bool write = false;
  void* buf = nullptr;  // aligned for O_DIRECT
  size_t len = 0;
  uint64_t offset = 0;
  // Out: 0 on success, else the errno of the first failure (EIO for a short transfer).
  int error = 0;
};

class IoBackend {
 public:
  static constexpr size_t kMaxOpBytes = 1u << 20;
  virtual ~IoBackend() = default;
  // Runs every op to completion (short transfers are retried).
  virtual void Run(std::vector<IoOp>& ops) = 0;
  virtual const char* name() const = 0;
};

// force_thread_pool: skip the io_uring probe.
std::unique_ptr<IoBackend> MakeIoBackend(bool force_thread_pool, int queue_depth, int threads);

// Splits each op into pieces of at most kMaxOpBytes; `owner[i]` is the index
// of the op a piece came from.
std::vector<IoOp> SplitOps(const std::vector<IoOp>& ops, std::vector<size_t>* owner);

}  // namespace lmcache
