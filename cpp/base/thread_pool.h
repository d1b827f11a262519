// A fixed set of worker threads for data movement. ParallelFor splits a batch
// into n independent items; the calling thread works too, so a pool of N
// threads uses N-1 workers plus the caller. Several callers may run batches at
// once; each waits only for its own.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lmcache {

class ThreadPool {
 public:
  // num_threads <= 0: one per hardware thread.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Calls fn(i) for every i in [0, n), spread over the pool; returns when all are done.
  // fn must not throw.
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn);

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  void WorkerLoop();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
};

}  // namespace lmcache
