// Conversions of Python inputs to native arrays, done once per call with the
// GIL held. Token buffers (numpy arrays, array.array) of the native type are
// used in place; slots are always copied (they are bounds-checked, and the
// check must hold for what is used after the GIL is released); other integer
// buffers and plain sequences are converted.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

namespace lmcache {

// Token ids as uint32 (ids must lie in [0, 2^32)).
class TokenInput {
 public:
  explicit TokenInput(const pybind11::object& obj);
  const uint32_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  pybind11::buffer_info info_;  // keeps a borrowed buffer alive
  std::vector<uint32_t> owned_;
  const uint32_t* data_ = nullptr;
  size_t size_ = 0;
};

// Slot mapping as int64 (negative: no slot), a private copy.
class SlotInput {
 public:
  explicit SlotInput(const pybind11::object& obj);
  const int64_t* data() const { return owned_.data(); }
  size_t size() const { return owned_.size(); }

 private:
  std::vector<int64_t> owned_;
};

// The bytes of a buffer that must be C-contiguous (a strided view would
// name other bytes than its elements); anything else is refused.
pybind11::buffer_info ContiguousBuffer(const pybind11::buffer& data, const char* what);

// Slots of the first num_tokens tokens of a block table: block b's tokens are
// slots b*block_size .. b*block_size+block_size-1. Every id must name a block
// of the cache (0 <= id < num_blocks) or be negative (its tokens are skipped:
// slot -1); checked before any multiplication, so no id can wrap around.
std::vector<int64_t> SlotsFromBlocks(const pybind11::object& block_ids, uint32_t block_size, uint64_t num_blocks,
                                     size_t num_tokens);

}  // namespace lmcache
