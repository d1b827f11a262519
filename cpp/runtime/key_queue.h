// A bounded queue of chunk keys drained by one background thread, for the
// disk tier's write-behind and prefetch. Producers never wait: when the queue
// is full, TryPush refuses and the caller counts a drop.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "chunk_key.h"

namespace lmcache {

class KeyQueue {
 public:
  // `drain` gets up to `batch` keys at a time, on the queue's own thread.
  KeyQueue(size_t capacity, size_t batch, std::function<void(const std::vector<ChunkKey>&)> drain)
      : capacity_(capacity), batch_(batch), drain_(std::move(drain)), thread_([this] { Loop(); }) {}
  ~KeyQueue() { Stop(/*finish=*/false); }

  bool TryPush(const ChunkKey& key) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || keys_.size() >= capacity_) return false;
    keys_.push_back(key);
    cv_.notify_one();
    return true;
  }

  // Keys waiting (not counting a batch being drained).
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return keys_.size();
  }

  // Blocks until every key pushed so far has been drained.
  void Flush() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock, [this] { return keys_.empty() && !busy_; });
  }

  // finish: drain what is queued first; else drop it. Idempotent.
  void Stop(bool finish) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ && !thread_.joinable()) return;
      stopping_ = true;
      if (!finish) keys_.clear();
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    for (;;) {
      std::vector<ChunkKey> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !keys_.empty(); });
        if (keys_.empty()) return;  // stopping and drained
        while (!keys_.empty() && batch.size() < batch_) {
          batch.push_back(keys_.front());
          keys_.pop_front();
        }
        busy_ = true;
      }
      drain_(batch);
      {
        std::lock_guard<std::mutex> lock(mu_);
        busy_ = false;
      }
      idle_cv_.notify_all();
    }
  }

  const size_t capacity_;
  const size_t batch_;
  std::function<void(const std::vector<ChunkKey>&)> drain_;
  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<ChunkKey> keys_;  // guarded by mu_
  bool stopping_ = false;      // guarded by mu_
  bool busy_ = false;          // guarded by mu_
  std::thread thread_;         // last: starts after the members above exist
};

}  // namespace lmcache
