// The GPU check compares bytes, not checksums; this stands in for the XXH3
// checksums of cpp/chunk_format.cpp so the check builds without xxHash.
#include <cstddef>
#include <cstdint>

namespace lmcache {

uint64_t LayerChecksum(const uint8_t* data, size_t bytes) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over a sample: enough to keep the call
  for (size_t i = 0; i < bytes; i += 4096) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

class LayerHasher {
 public:
  LayerHasher();
  ~LayerHasher();
  void Update(const uint8_t* data, size_t bytes);
  uint64_t Digest() const;

 private:
  void* state_;
};
LayerHasher::LayerHasher() : state_(nullptr) {}
LayerHasher::~LayerHasher() {}
void LayerHasher::Update(const uint8_t*, size_t) {}
uint64_t LayerHasher::Digest() const { return 0; }

uint64_t CombineLayerChecksums(const uint64_t* sums, size_t n) {
  uint64_t h = 0;
  for (size_t i = 0; i < n; ++i) h = h * 31 + sums[i];
  return h;
}

}  // namespace lmcache
