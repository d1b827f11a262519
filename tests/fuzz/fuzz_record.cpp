// libFuzzer target: the native record parser, on both ways a record comes
// back into host memory.
//  - disk: OpenRecord (size, header, seal, checksum) on the raw bytes, as
//    the disk tier's promotion does;
//  - wire: CacheRuntime::ImportRecord, as the remote tier does after its own
//    checks.
// Either may refuse, never crash, read out of bounds, or accept bytes that
// were not sealed by the key.
//
//   fuzz_record -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/record
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "cache_runtime.h"
#include "token_calls.h"
#include "record_seal.h"

using namespace lmcache;

namespace {

// A small cache shape: 2 layers, K and V, 2 heads of 8 bf16, 4-token chunks.
constexpr uint32_t kChunk = 4;
const ChunkShape kShape{2, 2, 2, 8, DType::kBFloat16, kChunk};
const ChunkKey kKey{0x0123456789abcdefull, 0xfedcba9876543210ull};

struct Fixture {
  std::unique_ptr<RecordSealer> sealer;
  std::unique_ptr<CacheRuntime> runtime;
  std::vector<ChunkKey> keys;
  Fixture() {
    (void)RecordSealer::Create(std::string(RecordSealer::kKeyBytes, 'k'), /*encrypt=*/false, &sealer);
    RuntimeOptions o;
    o.chunk_size = kChunk;
    o.l1_capacity_bytes = 1 << 20;
    o.num_threads = 1;
    (void)CacheRuntime::Create(o, &runtime);
    KVShape s{kShape.num_layers, kShape.num_planes, kShape.num_heads, kShape.head_dim, kShape.dtype, 0};
    (void)runtime->SetShape(s);
    const uint32_t tokens[kChunk] = {1, 2, 3, 4};
    (void)runtime->ComputeKeys(tokens, kChunk, &keys);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture f;
  if (size > 2 * kShape.record_bytes()) return 0;  // larger inputs are refused by size alone
  // The disk path works in place on a buffer the size the tier reads into.
  std::vector<uint8_t> buf(data, data + size);
  if (f.sealer && OpenRecord(*f.sealer, kKey, kShape, buf.data(), buf.size()).ok()) {
    __builtin_trap();  // nothing sealed under the key can come from the fuzzer
  }
  // The import path copies what it accepts; clear it so the next input starts alike.
  if (f.runtime && !f.keys.empty() && f.runtime->ImportRecord(f.keys[0], data, size).ok()) {
    size_t removed = 0;
    (void)f.runtime->Clear(&removed, false);
  }
  return 0;
}
