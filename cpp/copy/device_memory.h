// The one place the runtime talks to a GPU driver about host memory.
// Two implementations, chosen by CMake: cuda/device_memory_cuda.cpp when the
// CUDA toolkit is found at build time, device_memory_none.cpp otherwise. Both
// probe at run time, so a CUDA build on a machine without a GPU simply reports
// "no device".
#pragma once

#include <cstddef>

namespace lmcache {

// True when a usable CUDA device is present right now.
bool CudaDeviceAvailable();

// Page-locks and registers [addr, addr+bytes) with the driver so DMA can read
// and write it. Returns false (and changes nothing) when there is no device or
// the driver refuses.
bool RegisterHostMemory(void* addr, size_t bytes);
void UnregisterHostMemory(void* addr);

// "none", or "cuda <runtime version>" for diagnostics.
const char* DeviceBackendName();

}  // namespace lmcache
