// Helpers shared by the files that implement CacheRuntime
// (cache_runtime.cpp, cache_runtime_load.cpp, cache_runtime_tiers.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "status.h"

// Every public CacheRuntime call starts here: it holds the lifecycle lock
// shared for the whole call (Close waits for it) and fails once closed.
// A runtime is refused in the child of a fork (checked before any lock: a
// lock may have been held by a thread that the child does not have).
#define LMC_ENTER()                                                          \
  if (ForkGeneration() != fork_generation_) return Status::ForkedChild();  \
  std::shared_lock<std::shared_mutex> _lifecycle(lifecycle_);               \
  if (closed_.load()) return Status::Closed()

namespace lmcache {

// Counts forks of this process, as seen by the child (pthread_atfork): a
// runtime made in the parent sees a different number in the child, whose
// copy has none of the parent's threads (write-behind, copy workers) and
// shares its disk lock.
uint64_t ForkGeneration();

// Every slot is negative (skipped) or inside a cache of num_slots slots.
Status CheckSlots(const int64_t* slots, size_t n, uint64_t num_slots);

}  // namespace lmcache
