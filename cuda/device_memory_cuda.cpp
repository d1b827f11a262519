// CUDA implementation of cpp/device_memory.h. Linked against the static CUDA
// runtime, which loads the driver lazily: on a machine without a GPU every call
// below fails cleanly and the runtime falls back to plain host memory.
#include "device_memory.h"

#include <cuda_runtime_api.h>

namespace lmcache {

bool CudaDeviceAvailable() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return false;
  }
  return count > 0;
}

bool RegisterHostMemory(void* addr, size_t bytes) {
  if (!CudaDeviceAvailable()) return false;
  // Mapped: the copy kernels write chunks straight into the pool over PCIe.
  if (cudaHostRegister(addr, bytes, cudaHostRegisterPortable | cudaHostRegisterMapped) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return true;
}

void UnregisterHostMemory(void* addr) {
  if (cudaHostUnregister(addr) != cudaSuccess) cudaGetLastError();
}

const char* DeviceBackendName() { return "cuda"; }

}  // namespace lmcache
