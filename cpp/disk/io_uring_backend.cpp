// io_uring backend (liburing). Keeps up to queue_depth pieces in flight; a
// short completion is finished with a blocking call (rare: O_DIRECT on a
// regular file transfers whole pieces).
#include <liburing.h>

#include <mutex>
#include <vector>

#include "io_backend.h"

namespace lmcache {

int FinishTransfer(const IoOp& op);

namespace {

class UringIo final : public IoBackend {
 public:
  UringIo(io_uring ring, unsigned depth) : ring_(ring), depth_(depth) {}
  ~UringIo() override { io_uring_queue_exit(&ring_); }

  void Run(std::vector<IoOp>& ops) override {
    std::vector<size_t> owner;
    std::vector<IoOp> pieces = SplitOps(ops, &owner);
    {
      std::lock_guard<std::mutex> lock(mu_);  // one ring, one batch at a time
      size_t next = 0, inflight = 0, done = 0;
      while (done < pieces.size()) {
        while (next < pieces.size() && inflight < depth_) {
          io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
          if (sqe == nullptr) break;
          IoOp& p = pieces[next];
          if (p.write) {
            io_uring_prep_write(sqe, p.fd, p.buf, unsigned(p.len), p.offset);
          } else {
            io_uring_prep_read(sqe, p.fd, p.buf, unsigned(p.len), p.offset);
          }
          io_uring_sqe_set_data64(sqe, next);
          ++next;
          ++inflight;
        }
        const int rc = io_uring_submit_and_wait(&ring_, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
          // The ring itself failed: do what was not submitted synchronously;
          // what is in flight still completes and is drained below.
          for (size_t i = next; i < pieces.size(); ++i) pieces[i].error = FinishTransfer(pieces[i]);
          done += pieces.size() - next;
          next = pieces.size();
        }
        io_uring_cqe* cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring_, head, cqe) {
          IoOp& p = pieces[io_uring_cqe_get_data64(cqe)];
          if (cqe->res < 0) {
            p.error = -cqe->res;
          } else if (size_t(cqe->res) < p.len) {
            IoOp rest = p;
            rest.buf = static_cast<uint8_t*>(p.buf) + cqe->res;
            rest.offset += size_t(cqe->res);
            rest.len -= size_t(cqe->res);
            p.error = cqe->res == 0 ? EIO : FinishTransfer(rest);
          }
          ++seen;
        }
        io_uring_cq_advance(&ring_, seen);
        inflight -= seen;
        done += seen;
      }
    }
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (pieces[i].error && !ops[owner[i]].error) ops[owner[i]].error = pieces[i].error;
    }
  }
  const char* name() const override { return "io_uring"; }

 private:
  io_uring ring_;
  unsigned depth_;
  std::mutex mu_;
};

}  // namespace

std::unique_ptr<IoBackend> MakeUringBackend(int queue_depth) {
  const unsigned depth = queue_depth > 0 ? unsigned(queue_depth) : 32u;
  io_uring ring;
  if (io_uring_queue_init(depth, &ring, 0) != 0) return nullptr;  // kernel or sandbox says no
  return std::make_unique<UringIo>(ring, depth);
}

}  // namespace lmcache
