// Helpers shared by the files that implement CacheRuntime
// (cache_runtime.cpp, cache_runtime_load.cpp, cache_runtime_tiers.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "status.h"

// Every public CacheRuntime call starts here: it holds the lifecycle lock
// shared for the whole call (Close waits for it) and fails once closed.
#define LMC_ENTER()                                            \
  std::shared_lock<std::shared_mutex> _lifecycle(lifecycle_); \
  if (closed_.load()) return Status::Closed()

namespace lmcache {

// Every slot is negative (skipped) or inside a cache of num_slots slots.
Status CheckSlots(const int64_t* slots, size_t n, uint64_t num_slots);

}  // namespace lmcache
