#include "shared_mover.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "cache_runtime_internal.h"

namespace lmcache {

SharedMover::SharedMover(int num_threads) : threads_(num_threads), copy_(&threads_) {}

SharedMover::~SharedMover() { Unmap(); }

Status SharedMover::Map(int fd, size_t region_bytes, size_t slab_bytes) {
  if (region_bytes == 0 || slab_bytes == 0 || region_bytes % slab_bytes != 0) {
    return Status::InvalidArgument("a shared pool of " + std::to_string(region_bytes) + " bytes in slabs of " +
                                   std::to_string(slab_bytes));
  }
  // Populated now: the first load or store should not pay for page faults.
  void* p = mmap(nullptr, region_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) return Status::IoError("mapping the server's host pool failed", errno);
  // The region holds every tenant's KV: never in this process's core dumps either.
  madvise(p, region_bytes, MADV_DONTDUMP);
  Unmap();
  base_ = static_cast<uint8_t*>(p);
  region_bytes_ = region_bytes;
  slab_bytes_ = slab_bytes;
  return Status::Ok();
}

void SharedMover::Unmap() {
  if (base_ != nullptr) munmap(base_, region_bytes_);
  base_ = nullptr;
  region_bytes_ = slab_bytes_ = 0;
}

Status SharedMover::CheckSlab(int64_t slab, uint64_t record_bytes) const {
  if (base_ == nullptr) return Status::InvalidState("no server pool is mapped");
  if (slab < 0 || record_bytes > slab_bytes_ || uint64_t(slab) >= region_bytes_ / slab_bytes_) {
    return Status::InvalidArgument("slab " + std::to_string(slab) + " is outside the server's pool");
  }
  return Status::Ok();
}

Status SharedMover::Load(const KVLayout& layout, uint32_t chunk_size, const int64_t* slots, size_t num_slots,
                         const std::vector<ChunkKey>& keys, const std::vector<int64_t>& slabs, bool verify,
                         size_t* tokens) {
  *tokens = 0;
  LMC_RETURN_IF_ERROR(layout.Validate());
  if (layout.device >= 0) return Status::InvalidArgument("the node server moves KV caches in host memory only");
  LMC_RETURN_IF_ERROR(CheckSlots(slots, num_slots, layout.num_slots()));
  const ChunkShape shape = ChunkShape::FromLayout(layout, chunk_size);
  const size_t chunks = std::min({slabs.size(), keys.size(), (num_slots + chunk_size - 1) / chunk_size});
  std::vector<ChunkTransfer> transfers;
  for (size_t c = 0; c < chunks; ++c) {
    LMC_RETURN_IF_ERROR(CheckSlab(slabs[c], shape.record_bytes()));
    uint8_t* record = Slab(slabs[c]);
    ChunkHeader h;
    std::memcpy(&h, record, sizeof(h));
    Status valid = ValidateHeader(h, shape, keys[c]);
    if (valid.ok() && verify) valid = VerifyChecksum(record, shape);
    if (!valid.ok()) break;  // the prefix ends at a record that is not what it should be
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(chunk_size, num_slots - c * chunk_size));
    if (layout.opaque_blocks() && !BlockSlotsConsistent(slots + c * chunk_size, n, layout.block_size, true)) {
      return Status::InvalidArgument("chunk " + std::to_string(c) + " does not map to whole engine blocks in order");
    }
    ChunkTransfer t;
    t.payload = record + sizeof(ChunkHeader);
    t.slots = slots + c * chunk_size;
    t.payload_tokens = chunk_size;
    t.num_tokens = n;
    transfers.push_back(t);
    *tokens += n;
  }
  if (!transfers.empty()) copy_.Scatter(layout, transfers);
  return Status::Ok();
}

Status SharedMover::Store(const KVLayout& layout, uint32_t chunk_size, const int64_t* slots, size_t num_slots,
                          const std::vector<ChunkKey>& keys, const std::vector<int64_t>& slabs) {
  LMC_RETURN_IF_ERROR(layout.Validate());
  if (layout.device >= 0) return Status::InvalidArgument("the node server moves KV caches in host memory only");
  LMC_RETURN_IF_ERROR(CheckSlots(slots, num_slots, layout.num_slots()));
  const ChunkShape shape = ChunkShape::FromLayout(layout, chunk_size);
  const size_t chunks = std::min({slabs.size(), keys.size(), num_slots / chunk_size});
  std::vector<ChunkTransfer> transfers;
  std::vector<size_t> chunk_of;
  for (size_t c = 0; c < chunks; ++c) {
    if (slabs[c] < 0) continue;
    LMC_RETURN_IF_ERROR(CheckSlab(slabs[c], shape.record_bytes()));
    const int64_t* chunk_slots = slots + c * chunk_size;
    if (std::any_of(chunk_slots, chunk_slots + chunk_size, [](int64_t s) { return s < 0; })) {
      return Status::InvalidArgument("chunk " + std::to_string(c) + " has a token without a slot");
    }
    if (layout.opaque_blocks() && !BlockSlotsConsistent(chunk_slots, chunk_size, layout.block_size, true)) {
      return Status::InvalidArgument("chunk " + std::to_string(c) + " does not cover whole engine blocks in order");
    }
    ChunkTransfer t;
    t.payload = Slab(slabs[c]) + sizeof(ChunkHeader);
    t.slots = chunk_slots;
    t.payload_tokens = chunk_size;
    t.num_tokens = chunk_size;
    transfers.push_back(t);
    chunk_of.push_back(c);
  }
  std::vector<uint64_t> checksums(transfers.size());
  for (size_t i = 0; i < transfers.size(); ++i) transfers[i].checksum_out = &checksums[i];
  if (!transfers.empty()) copy_.Gather(layout, transfers);  // hashes each layer while it is in cache
  for (size_t i = 0; i < transfers.size(); ++i) {
    const ChunkHeader h = MakeHeader(shape, keys[chunk_of[i]], checksums[i]);
    std::memcpy(transfers[i].payload - sizeof(ChunkHeader), &h, sizeof(h));
  }
  return Status::Ok();
}

}  // namespace lmcache
