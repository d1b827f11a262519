#include "io_backend.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>

#include "thread_pool.h"

namespace lmcache {

std::vector<IoOp> SplitOps(const std::vector<IoOp>& ops, std::vector<size_t>* owner) {
  std::vector<IoOp> pieces;
  owner->clear();
  for (size_t i = 0; i < ops.size(); ++i) {
    for (size_t off = 0; off < ops[i].len; off += IoBackend::kMaxOpBytes) {
      IoOp p = ops[i];
      p.buf = static_cast<uint8_t*>(ops[i].buf) + off;
      p.offset = ops[i].offset + off;
      p.len = std::min(IoBackend::kMaxOpBytes, ops[i].len - off);
      p.error = 0;
      pieces.push_back(p);
      owner->push_back(i);
    }
  }
  return pieces;
}

namespace {

// Blocking pread/pwrite of one piece, retrying short transfers and EINTR.
int TransferAll(const IoOp& op) {
  size_t done = 0;
  while (done < op.len) {
    uint8_t* p = static_cast<uint8_t*>(op.buf) + done;
    const ssize_t r = op.write ? pwrite(op.fd, p, op.len - done, off_t(op.offset + done))
                               : pread(op.fd, p, op.len - done, off_t(op.offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (r == 0) return EIO;  // end of file before the record ended: truncated
    done += size_t(r);
  }
  return 0;
}

class ThreadPoolIo final : public IoBackend {
 public:
  explicit ThreadPoolIo(int threads) : pool_(threads) {}
  void Run(std::vector<IoOp>& ops) override {
    std::vector<size_t> owner;
    std::vector<IoOp> pieces = SplitOps(ops, &owner);
    pool_.ParallelFor(pieces.size(), [&](size_t i) { pieces[i].error = TransferAll(pieces[i]); });
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (pieces[i].error && !ops[owner[i]].error) ops[owner[i]].error = pieces[i].error;
    }
  }
  const char* name() const override { return "threads"; }

 private:
  ThreadPool pool_;
};

}  // namespace

std::unique_ptr<IoBackend> MakeUringBackend(int queue_depth);  // io_uring_backend.cpp; nullptr if unusable

std::unique_ptr<IoBackend> MakeIoBackend(bool force_thread_pool, int queue_depth, int threads) {
  if (!force_thread_pool) {
    if (auto uring = MakeUringBackend(queue_depth)) return uring;
  }
  return std::make_unique<ThreadPoolIo>(threads);
}

// Shared with the io_uring backend: finishing a short transfer synchronously.
int FinishTransfer(const IoOp& op) { return TransferAll(op); }

}  // namespace lmcache
