// Conversions of Python inputs to native arrays, done once per call with the
// GIL held. Buffers (numpy arrays, array.array) of the native type are used in
// place; other integer buffers and plain sequences are converted.
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

// Slot mapping as int64 (negative: no slot).
class SlotInput {
 public:
  explicit SlotInput(const pybind11::object& obj);
  const int64_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  pybind11::buffer_info info_;
  std::vector<int64_t> owned_;
  const int64_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace lmcache
