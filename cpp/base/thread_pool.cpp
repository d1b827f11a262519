#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <memory>

namespace lmcache {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

void ThreadPool::ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (n == 1 || workers_.empty()) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // Items are claimed from a shared counter, so a slow worker never holds up
  // items another thread could take.
  struct Batch {
    std::atomic<size_t> next{0};
    std::atomic<size_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto batch = std::make_shared<Batch>();
  auto drain = [batch, n, &fn] {
    size_t i;
    size_t finished = 0;
    while ((i = batch->next.fetch_add(1)) < n) {
      fn(i);
      ++finished;
    }
    if (finished > 0 && batch->done.fetch_add(finished) + finished == n) {
      std::lock_guard<std::mutex> lock(batch->mu);
      batch->cv.notify_all();
    }
  };
  const size_t helpers = std::min(workers_.size(), n - 1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t h = 0; h < helpers; ++h) tasks_.emplace_back(drain);
  }
  if (helpers == 1) cv_.notify_one(); else cv_.notify_all();
  drain();
  std::unique_lock<std::mutex> lock(batch->mu);
  batch->cv.wait(lock, [&] { return batch->done.load() == n; });
}

}  // namespace lmcache
