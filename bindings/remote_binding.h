// The remote tier's client, written in Python (lmcache.remote.RemoteStore),
// plugged into the runtime's RemoteTier interface.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>

#include "remote_tier.h"

namespace lmcache {

// Calls the Python object's count_prefix / fetch / put with the GIL taken,
// from whichever thread the runtime calls on. Once Release()d, or while the
// interpreter shuts down, every call is a miss and nothing is written.
class PythonRemoteTier : public RemoteTier {
 public:
  explicit PythonRemoteTier(pybind11::object client) : client_(std::move(client)) {}
  ~PythonRemoteTier() override;
  size_t CountPrefix(const std::vector<ChunkKey>& keys) override;
  size_t Fetch(const std::vector<ChunkKey>& keys) override;
  void Put(const std::vector<ChunkKey>& keys) override;
  // Drops the Python object (the runtime may keep this one until it is destroyed).
  void Release();

 private:
  size_t Call(const char* method, const std::vector<ChunkKey>& keys);
  pybind11::object client_;  // guarded by the GIL
};

}  // namespace lmcache
