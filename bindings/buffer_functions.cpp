// Module-level functions of lmcache._core over byte and integer buffers:
// checksums of records (for the remote tier's codecs) and block tables to
// slots. Every buffer is checked (C-contiguous, sizes) before native code
// reads it.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "chunk_format.h"
#include "errors.h"
#include "inputs.h"
#include "kv_layout.h"
#include "record_seal.h"

namespace py = pybind11;

namespace lmcache {

void BindBufferFunctions(py::module_& m) {
  m.attr("RECORD_HEADER_BYTES") = sizeof(ChunkHeader);
  m.attr("RECORD_KEY_BYTES") = RecordSealer::kKeyBytes;
  m.attr("RECORD_CHECKSUM_OFFSET") = offsetof(ChunkHeader, checksum);
  m.def(
      "record_header",
      [](const py::buffer& data) {
        // The fields a codec needs, read from the record's header (chunk_format.h):
        // the one definition of its layout, so no Python code re-declares it.
        py::buffer_info info = ContiguousBuffer(data, "record");
        if (size_t(info.size) * size_t(info.itemsize) < sizeof(ChunkHeader)) {
          ThrowStatus(Status::InvalidArgument("shorter than a record header"));
        }
        ChunkHeader h;
        std::memcpy(&h, info.ptr, sizeof(h));
        py::dict d;
        d["dtype"] = h.dtype >= 1 && h.dtype <= 6 ? DTypeName(static_cast<DType>(h.dtype)) : "unknown";
        d["num_layers"] = h.num_layers;
        d["payload_bytes"] = h.payload_bytes;
        return d;
      },
      py::arg("record"), "dtype, num_layers and payload_bytes from a record's header (not verified).");
  m.def(
      "checksum64",
      [](const py::buffer& data) {
        py::buffer_info info = ContiguousBuffer(data, "data");
        const size_t bytes = size_t(info.size) * size_t(info.itemsize);
        py::gil_scoped_release nogil;
        return LayerChecksum(static_cast<const uint8_t*>(info.ptr), bytes);
      },
      py::arg("data"), "XXH3-64 of a C-contiguous buffer (GIL released).");
  m.def(
      "payload_checksum",
      [](const py::buffer& data, uint32_t num_layers) {
        py::buffer_info info = ContiguousBuffer(data, "payload");
        const size_t bytes = size_t(info.size) * size_t(info.itemsize);
        if (num_layers == 0 || bytes % num_layers != 0) {
          ThrowStatus(Status::InvalidArgument("payload is not a whole number of layers"));
        }
        const uint8_t* p = static_cast<const uint8_t*>(info.ptr);
        const size_t layer_bytes = bytes / num_layers;
        py::gil_scoped_release nogil;
        std::vector<uint64_t> sums(num_layers);
        for (uint32_t l = 0; l < num_layers; ++l) sums[l] = LayerChecksum(p + l * layer_bytes, layer_bytes);
        return CombineLayerChecksums(sums.data(), num_layers);
      },
      py::arg("payload"), py::arg("num_layers"), "The stored-chunk payload checksum (see cpp/chunk_format.h).");
  m.def(
      "slots_from_blocks",
      [](const KVLayout& layout, const py::object& block_ids, size_t num_tokens) {
        std::vector<int64_t> slots = SlotsFromBlocks(block_ids, layout.block_size, layout.num_blocks, num_tokens);
        return py::array_t<int64_t>(py::ssize_t(slots.size()), slots.data());
      },
      py::arg("layout"), py::arg("block_ids"), py::arg("num_tokens"),
      "Slots (int64 array) of the first num_tokens tokens of a block table; every id is checked against the cache.");
  m.def(
      "record_key_id", [](const py::bytes& key) { return RecordSealer::KeyId(key); }, py::arg("key"),
      "The public name of a record key (what a sealed record's header stores).");
}

}  // namespace lmcache
