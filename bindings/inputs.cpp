#include "inputs.h"

#include <string>
#include <type_traits>

#include "errors.h"

namespace py = pybind11;

namespace lmcache {

namespace {

// A 1-D, C-contiguous integer buffer, or none.
bool GetIntBuffer(const py::object& obj, const char* what, py::buffer_info* info) {
  if (!PyObject_CheckBuffer(obj.ptr())) return false;
  *info = py::reinterpret_borrow<py::buffer>(obj).request();
  if (info->ndim != 1) {
    ThrowStatus(Status::InvalidArgument(std::string(what) + " must be 1-D, got " + std::to_string(info->ndim) +
                                        " dimensions"));
  }
  const char kind = info->format.empty() ? '?' : info->format.back();
  const bool is_int = std::string("bBhHiIlLqQ").find(kind) != std::string::npos;
  if (!is_int) {
    ThrowStatus(Status::InvalidArgument(std::string(what) + " must hold integers, got buffer format '" +
                                        info->format + "'"));
  }
  if (info->size > 1 && info->strides[0] != info->itemsize) {
    ThrowStatus(Status::InvalidArgument(std::string(what) + " must be contiguous"));
  }
  return true;
}

template <typename Out>
void ConvertBuffer(const py::buffer_info& info, const char* what, bool allow_negative, std::vector<Out>* out) {
  out->resize(static_cast<size_t>(info.size));
  const bool is_signed = std::string("bhilq").find(info.format.back()) != std::string::npos;
  for (py::ssize_t i = 0; i < info.size; ++i) {
    int64_t v;
    const char* p = static_cast<const char*>(info.ptr) + i * info.itemsize;
    switch (info.itemsize) {
      case 1: v = is_signed ? int64_t(*reinterpret_cast<const int8_t*>(p)) : int64_t(*reinterpret_cast<const uint8_t*>(p)); break;
      case 2: v = is_signed ? int64_t(*reinterpret_cast<const int16_t*>(p)) : int64_t(*reinterpret_cast<const uint16_t*>(p)); break;
      case 4: v = is_signed ? int64_t(*reinterpret_cast<const int32_t*>(p)) : int64_t(*reinterpret_cast<const uint32_t*>(p)); break;
      default: v = *reinterpret_cast<const int64_t*>(p); break;
    }
    if ((!allow_negative && v < 0) || (std::is_same_v<Out, uint32_t> && v > int64_t(UINT32_MAX))) {
      ThrowStatus(Status::InvalidArgument(std::string(what) + "[" + std::to_string(i) + "] = " +
                                          std::to_string(v) + " is out of range"));
    }
    (*out)[static_cast<size_t>(i)] = static_cast<Out>(v);
  }
}

template <typename Out>
void ConvertSequence(const py::object& obj, const char* what, bool allow_negative, std::vector<Out>* out) {
  PyObject* seq = PySequence_Fast(obj.ptr(), "");
  if (seq == nullptr) {
    PyErr_Clear();
    ThrowStatus(Status::InvalidArgument(std::string(what) + " must be a sequence or 1-D array of integers, got " +
                                        std::string(Py_TYPE(obj.ptr())->tp_name)));
  }
  py::object guard = py::reinterpret_steal<py::object>(seq);
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject** items = PySequence_Fast_ITEMS(seq);
  out->resize(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    const long long v = PyLong_AsLongLong(items[i]);
    if (v == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      ThrowStatus(Status::InvalidArgument(std::string(what) + "[" + std::to_string(i) + "] is not an integer"));
    }
    if ((!allow_negative && v < 0) || (std::is_same_v<Out, uint32_t> && v > (long long)UINT32_MAX)) {
      ThrowStatus(Status::InvalidArgument(std::string(what) + "[" + std::to_string(i) + "] = " +
                                          std::to_string(v) + " is out of range"));
    }
    (*out)[static_cast<size_t>(i)] = static_cast<Out>(v);
  }
}

}  // namespace

TokenInput::TokenInput(const py::object& obj) {
  if (GetIntBuffer(obj, "tokens", &info_)) {
    const char kind = info_.format.back();
    if (info_.itemsize == 4 && (kind == 'I' || kind == 'i' || kind == 'l' || kind == 'L')) {
      // int32 ids are used in place; a negative id would hash like a huge one, so reject it.
      data_ = static_cast<const uint32_t*>(info_.ptr);
      size_ = static_cast<size_t>(info_.size);
      if (kind == 'i' || kind == 'l') {
        for (size_t i = 0; i < size_; ++i) {
          if (static_cast<int32_t>(data_[i]) < 0) {
            ThrowStatus(Status::InvalidArgument("tokens[" + std::to_string(i) + "] is negative"));
          }
        }
      }
      return;
    }
    ConvertBuffer(info_, "tokens", /*allow_negative=*/false, &owned_);
  } else {
    ConvertSequence(obj, "tokens", /*allow_negative=*/false, &owned_);
  }
  data_ = owned_.data();
  size_ = owned_.size();
}

SlotInput::SlotInput(const py::object& obj) {
  py::buffer_info info;
  if (GetIntBuffer(obj, "slots", &info)) {
    const char kind = info.format.back();
    if (info.itemsize == 8 && (kind == 'q' || kind == 'l')) {
      const int64_t* p = static_cast<const int64_t*>(info.ptr);
      owned_.assign(p, p + info.size);
    } else {
      ConvertBuffer(info, "slots", /*allow_negative=*/true, &owned_);
    }
  } else {
    ConvertSequence(obj, "slots", /*allow_negative=*/true, &owned_);
  }
}

py::buffer_info ContiguousBuffer(const py::buffer& data, const char* what) {
  py::buffer_info info = data.request();
  py::ssize_t expected = info.itemsize;
  for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
    if (info.shape[size_t(d)] > 1 && info.strides[size_t(d)] != expected) {
      ThrowStatus(Status::InvalidArgument(std::string(what) + " must be a C-contiguous buffer"));
    }
    expected *= info.shape[size_t(d)];
  }
  return info;
}

std::vector<int64_t> SlotsFromBlocks(const py::object& block_ids, uint32_t block_size, uint64_t num_blocks,
                                     size_t num_tokens) {
  std::vector<int64_t> blocks;
  SlotInput ids(block_ids);  // int64 ids, a private copy
  blocks.assign(ids.data(), ids.data() + ids.size());
  if (block_size == 0) ThrowStatus(Status::InvalidArgument("block_size must be positive"));
  if (blocks.size() * uint64_t(block_size) < num_tokens) {
    ThrowStatus(Status::InvalidArgument(std::to_string(blocks.size()) + " blocks of " + std::to_string(block_size) +
                                        " tokens cannot hold " + std::to_string(num_tokens) + " tokens"));
  }
  std::vector<int64_t> slots(num_tokens);
  for (size_t t = 0; t < num_tokens; ++t) {
    const int64_t b = blocks[t / block_size];
    if (b >= 0 && uint64_t(b) >= num_blocks) {
      ThrowStatus(Status::InvalidArgument("block_ids[" + std::to_string(t / block_size) + "] = " + std::to_string(b) +
                                          " is not a block of this cache (" + std::to_string(num_blocks) +
                                          " blocks)"));
    }
    // b < num_blocks <= 2^63 / block_size (KVLayout::Validate), so this cannot overflow.
    slots[t] = b < 0 ? -1 : b * int64_t(block_size) + int64_t(t % block_size);
  }
  return slots;
}

}  // namespace lmcache
