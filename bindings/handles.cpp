// lmcache._core's handles: chunk keys, pending loads and stores, KV layouts.
#include "handles.h"

#include <pybind11/stl.h>

#include <cstring>

#include "errors.h"

namespace py = pybind11;

namespace lmcache {

DType ParseDType(const std::string& name) {
  static const std::pair<const char*, DType> kNames[] = {
      {"float32", DType::kFloat32},          {"float16", DType::kFloat16},
      {"bfloat16", DType::kBFloat16},        {"float8_e4m3fn", DType::kFloat8E4M3},
      {"float8_e5m2", DType::kFloat8E5M2},   {"uint8", DType::kUInt8}};
  for (const auto& [n, d] : kNames) {
    if (name == n) return d;
  }
  ThrowStatus(Status::InvalidArgument(
      "unknown dtype '" + name + "' (allowed: float32, float16, bfloat16, float8_e4m3fn, float8_e5m2, uint8)"));
}

ChunkKey ParseKey(const std::string& hex) {
  if (hex.size() != 32 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    ThrowStatus(Status::InvalidArgument("a key is 32 lowercase hex digits, got '" + hex + "'"));
  }
  ChunkKey k;
  k.hi = std::stoull(hex.substr(0, 16), nullptr, 16);
  k.lo = std::stoull(hex.substr(16), nullptr, 16);
  return k;
}

void PyPendingLoad::LoadLayers(uint32_t end_layer) {
  py::gil_scoped_release nogil;
  Check(load_->LoadLayers(end_layer));
}

void PyPendingLoad::Finish() {
  py::gil_scoped_release nogil;
  Check(load_->Finish());
}

size_t PyPendingStore::Finish() {
  {
    py::gil_scoped_release nogil;
    Check(store_->Finish());
  }
  return store_->tokens();
}

namespace {

void BindChunkKeys(py::module_& m) {
  py::class_<ChunkKeys, std::shared_ptr<ChunkKeys>>(
      m, "ChunkKeys",
      "A request's chunk keys, computed once (Runtime.keys / keys_from_ids) and passed to lookup, load and store.")
      .def("__len__", [](const ChunkKeys& k) { return k.keys.size(); })
      .def("__getitem__",
           [](const ChunkKeys& k, const py::slice& s) {
             size_t start = 0, stop = 0, step = 0, n = 0;
             if (!s.compute(k.keys.size(), &start, &stop, &step, &n)) throw py::error_already_set();
             if (step != 1) ThrowStatus(Status::InvalidArgument("chunk keys are sliced with step 1 only"));
             auto out = std::make_shared<ChunkKeys>();
             out->keys.assign(k.keys.begin() + start, k.keys.begin() + start + n);
             return out;
           })
      .def("hex", [](const ChunkKeys& k) {
             std::vector<std::string> out;
             out.reserve(k.keys.size());
             for (const auto& key : k.keys) out.push_back(key.Hex());
             return out;
           }, "The keys' names: 32 hex digits each (file names, remote keys).")
      .def("to_bytes", [](const ChunkKeys& k) {
             return py::bytes(reinterpret_cast<const char*>(k.keys.data()), k.keys.size() * sizeof(ChunkKey));
           }, "The keys as one buffer (16 bytes each, native order).")
      .def_static("from_bytes", [](const py::bytes& b) {
             std::string raw = b;
             if (raw.size() % sizeof(ChunkKey) != 0) {
               ThrowStatus(Status::InvalidArgument("chunk keys are 16 bytes each"));
             }
             auto out = std::make_shared<ChunkKeys>();
             out->keys.resize(raw.size() / sizeof(ChunkKey));
             std::memcpy(out->keys.data(), raw.data(), raw.size());
             return out;
           })
      .def("__eq__", [](const ChunkKeys& a, const ChunkKeys& b) { return a.keys == b.keys; })
      .def("__repr__", [](const ChunkKeys& k) { return "ChunkKeys(" + std::to_string(k.keys.size()) + " chunks)"; });
}

}  // namespace

void BindHandles(py::module_& m) {
  BindChunkKeys(m);
  py::class_<KVLayout>(m, "KVLayout", "Descriptor of a paged KV cache (see cpp/kv_layout.h).")
      .def(py::init([](uint32_t num_layers, uint32_t num_planes, uint32_t num_heads, uint32_t head_dim,
                       const std::string& dtype, uint32_t block_size, uint64_t num_blocks, int64_t stride_plane,
                       int64_t stride_block, int64_t stride_token, int64_t stride_head,
                       std::vector<uint64_t> layer_base, uint64_t opaque_block_bytes, int32_t device) {
             KVLayout l;
             l.num_layers = num_layers;
             l.num_planes = num_planes;
             l.num_heads = num_heads;
             l.head_dim = head_dim;
             l.dtype = ParseDType(dtype);
             l.block_size = block_size;
             l.num_blocks = num_blocks;
             l.stride_plane = stride_plane;
             l.stride_block = stride_block;
             l.stride_token = stride_token;
             l.stride_head = stride_head;
             l.layer_base = std::move(layer_base);
             l.opaque_block_bytes = opaque_block_bytes;
             l.device = device;
             Check(l.Validate());
             return l;
           }),
           py::kw_only(), py::arg("num_layers"), py::arg("num_planes"), py::arg("num_heads"), py::arg("head_dim"),
           py::arg("dtype"), py::arg("block_size"), py::arg("num_blocks"), py::arg("stride_plane"),
           py::arg("stride_block"), py::arg("stride_token"), py::arg("stride_head"), py::arg("layer_base"), py::arg("opaque_block_bytes") = 0,
           py::arg("device") = -1)
      .def_readonly("num_layers", &KVLayout::num_layers)
      .def_readonly("num_planes", &KVLayout::num_planes)
      .def_readonly("num_heads", &KVLayout::num_heads)
      .def_readonly("head_dim", &KVLayout::head_dim)
      .def_readonly("block_size", &KVLayout::block_size)
      .def_readonly("num_blocks", &KVLayout::num_blocks)
      .def_property_readonly("dtype", [](const KVLayout& l) { return std::string(DTypeName(l.dtype)); })
      .def_property_readonly("num_slots", &KVLayout::num_slots)
      .def_readonly("opaque_block_bytes", &KVLayout::opaque_block_bytes)
      .def_readonly("device", &KVLayout::device)
      .def("__repr__", [](const KVLayout& l) {
        return "KVLayout(layers=" + std::to_string(l.num_layers) + ", planes=" + std::to_string(l.num_planes) +
               ", heads=" + std::to_string(l.num_heads) + ", head_dim=" + std::to_string(l.head_dim) +
               ", dtype=" + DTypeName(l.dtype) + ", block_size=" + std::to_string(l.block_size) +
               ", num_blocks=" + std::to_string(l.num_blocks) + ")";
      });

  py::class_<PyPendingLoad>(m, "PendingLoad",
                            "A load in steps: the cached prefix is held from begin_load until finish(); "
                            "load_layers(end) moves the layers up to `end` (on a GPU: enqueued on the load's stream).")
      .def_property_readonly("tokens", &PyPendingLoad::tokens, "Leading tokens the load delivers.")
      .def_property_readonly("num_layers", &PyPendingLoad::num_layers)
      .def_property_readonly("layers_done", &PyPendingLoad::layers_done)
      .def("load_layers", &PyPendingLoad::LoadLayers, py::arg("end_layer"))
      .def("finish", &PyPendingLoad::Finish, "Waits for device copies and releases the chunks (idempotent).")
      .def("__enter__", [](PyPendingLoad& l) -> PyPendingLoad& { return l; }, py::return_value_policy::reference)
      .def("__exit__", [](PyPendingLoad& l, const py::object&, const py::object&, const py::object&) { l.Finish(); });

  py::class_<PyPendingStore>(m, "PendingStore",
                             "A store in two steps: begin_store reserves the chunks and starts the copy (on a GPU: "
                             "enqueued on the stream); finish() waits for it and publishes the chunks.")
      .def_property_readonly("tokens", &PyPendingStore::tokens, "Tokens the store adds once finished.")
      .def("finish", &PyPendingStore::Finish, "Publishes the chunks; returns the tokens stored (idempotent).");

}

}  // namespace lmcache
