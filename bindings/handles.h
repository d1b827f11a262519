// The objects lmcache._core hands to Python besides the runtime: a request's
// chunk keys, the handles of loads and stores in progress, and the KV layout
// descriptor. Each releases the GIL for native work.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "cache_runtime.h"

namespace lmcache {

// A request's chunk keys, computed once natively and held as one buffer:
// Python sees an opaque sequence (len, slices, hex names for tools and the
// remote tier), never one object per key.
struct ChunkKeys {
  std::vector<ChunkKey> keys;
};

DType ParseDType(const std::string& name);
ChunkKey ParseKey(const std::string& hex);

// A load in steps (see PendingLoad).
class PyPendingLoad {
 public:
  explicit PyPendingLoad(std::unique_ptr<PendingLoad> load) : load_(std::move(load)) {}
  size_t tokens() const { return load_->tokens(); }
  uint32_t num_layers() const { return load_->num_layers(); }
  uint32_t layers_done() const { return load_->layers_done(); }
  void LoadLayers(uint32_t end_layer);
  void Finish();

 private:
  std::unique_ptr<PendingLoad> load_;
};

// A store in two steps (see PendingStore).
class PyPendingStore {
 public:
  explicit PyPendingStore(std::unique_ptr<PendingStore> store) : store_(std::move(store)) {}
  size_t tokens() const { return store_->tokens(); }
  size_t Finish();

 private:
  std::unique_ptr<PendingStore> store_;
};

// Binds ChunkKeys, KVLayout, PendingLoad and PendingStore.
void BindHandles(pybind11::module_& m);

}  // namespace lmcache
