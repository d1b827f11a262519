#include "device_memory.h"

namespace lmcache {

bool CudaDeviceAvailable() { return false; }
bool RegisterHostMemory(void*, size_t) { return false; }
void UnregisterHostMemory(void*) {}
const char* DeviceBackendName() { return "none"; }

}  // namespace lmcache
