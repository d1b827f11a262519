// lmcache._core: thin pybind11 bindings over the native runtime. Converts
// Python inputs once, releases the GIL for all native work, and turns a
// Status into an lmcache exception. Knows nothing of torch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cache_runtime.h"
#include "device_memory.h"
#include "errors.h"
#include "inputs.h"

namespace py = pybind11;
using namespace lmcache;

namespace lmcache {
void BindBufferFunctions(py::module_& m);  // buffer_functions.cpp
}

namespace {

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

// A load in steps (see PendingLoad): the handle Python holds.
class PyPendingLoad {
 public:
  explicit PyPendingLoad(std::unique_ptr<PendingLoad> load) : load_(std::move(load)) {}
  size_t tokens() const { return load_->tokens(); }
  uint32_t num_layers() const { return load_->num_layers(); }
  uint32_t layers_done() const { return load_->layers_done(); }
  void LoadLayers(uint32_t end_layer) {
    py::gil_scoped_release nogil;
    Check(load_->LoadLayers(end_layer));
  }
  void Finish() {
    py::gil_scoped_release nogil;
    Check(load_->Finish());
  }

 private:
  std::unique_ptr<PendingLoad> load_;
};

// A store in two steps (see PendingStore).
class PyPendingStore {
 public:
  explicit PyPendingStore(std::unique_ptr<PendingStore> store) : store_(std::move(store)) {}
  size_t tokens() const { return store_->tokens(); }
  size_t Finish() {
    {
      py::gil_scoped_release nogil;
      Check(store_->Finish());
    }
    return store_->tokens();
  }

 private:
  std::unique_ptr<PendingStore> store_;
};

// Owns the runtime; Close() is explicit, and the destructor closes too.
class PyRuntime {
 public:
  explicit PyRuntime(const RuntimeOptions& o) { Check(CacheRuntime::Create(o, &rt_)); }
  ~PyRuntime() {
    if (rt_ && rt_->InForkedChild()) (void)rt_.release();  // the parent's; see InForkedChild
  }

  void SetShape(uint32_t layers, uint32_t planes, uint32_t heads, uint32_t head_dim, const std::string& dtype) {
    KVShape s{layers, planes, heads, head_dim, ParseDType(dtype)};
    py::gil_scoped_release nogil;
    Check(rt_->SetShape(s));
  }

  void RegisterLayout(const KVLayout& layout) {
    py::gil_scoped_release nogil;
    Check(rt_->RegisterLayout(layout));
  }

  std::vector<std::string> HashTokens(const py::object& tokens) {
    TokenInput t(tokens);
    std::vector<ChunkKey> keys;
    {
      py::gil_scoped_release nogil;
      Check(rt_->HashTokens(t.data(), t.size(), &keys));
    }
    std::vector<std::string> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back(k.Hex());
    return out;
  }

  size_t Lookup(const py::object& tokens) {
    TokenInput t(tokens);
    size_t hit = 0;
    py::gil_scoped_release nogil;
    Check(rt_->Lookup(t.data(), t.size(), &hit));
    return hit;
  }

  size_t Store(const py::object& tokens, const KVLayout& layout, const py::object& slots, uint64_t stream) {
    TokenInput t(tokens);
    SlotInput s(slots);
    size_t stored = 0;
    py::gil_scoped_release nogil;
    Check(rt_->Store(t.data(), t.size(), layout, s.data(), s.size(), &stored, stream));
    return stored;
  }

  size_t Load(const py::object& tokens, const KVLayout& layout, const py::object& slots, uint64_t stream) {
    TokenInput t(tokens);
    SlotInput s(slots);
    size_t loaded = 0;
    py::gil_scoped_release nogil;
    Check(rt_->Load(t.data(), t.size(), layout, s.data(), s.size(), &loaded, stream));
    return loaded;
  }

  std::unique_ptr<PyPendingStore> BeginStore(const py::object& tokens, const KVLayout& layout,
                                             const py::object& slots, uint64_t stream) {
    TokenInput t(tokens);
    SlotInput s(slots);
    std::unique_ptr<PendingStore> store;
    {
      py::gil_scoped_release nogil;
      Check(rt_->BeginStore(t.data(), t.size(), layout, s.data(), s.size(), stream, &store));
    }
    return std::make_unique<PyPendingStore>(std::move(store));
  }

  std::unique_ptr<PyPendingLoad> BeginLoad(const py::object& tokens, const KVLayout& layout, const py::object& slots,
                                           uint64_t stream) {
    TokenInput t(tokens);
    SlotInput s(slots);
    std::unique_ptr<PendingLoad> load;
    {
      py::gil_scoped_release nogil;
      Check(rt_->BeginLoad(t.data(), t.size(), layout, s.data(), s.size(), stream, &load));
    }
    return std::make_unique<PyPendingLoad>(std::move(load));
  }

  // ---- key-addressed calls (engines that name chunks themselves) ----
  std::vector<std::string> KeysFromIds(const std::vector<std::string>& ids) {
    std::vector<ChunkKey> keys;
    {
      py::gil_scoped_release nogil;
      Check(rt_->KeysFromIds(ids, &keys));
    }
    std::vector<std::string> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back(k.Hex());
    return out;
  }

  static std::vector<ChunkKey> ParseKeys(const std::vector<std::string>& hex) {
    std::vector<ChunkKey> keys;
    keys.reserve(hex.size());
    for (const auto& h : hex) keys.push_back(ParseKey(h));
    return keys;
  }

  size_t LookupKeys(const std::vector<std::string>& hex) {
    const auto keys = ParseKeys(hex);
    size_t hit = 0;
    py::gil_scoped_release nogil;
    Check(rt_->LookupKeys(keys, &hit));
    return hit;
  }

  size_t StoreKeys(const std::vector<std::string>& hex, const KVLayout& layout, const py::object& slots,
                   uint64_t stream) {
    const auto keys = ParseKeys(hex);
    SlotInput s(slots);
    size_t stored = 0;
    py::gil_scoped_release nogil;
    Check(rt_->StoreKeys(keys, layout, s.data(), s.size(), &stored, stream));
    return stored;
  }

  size_t LoadKeys(const std::vector<std::string>& hex, const KVLayout& layout, const py::object& slots,
                  uint64_t stream) {
    const auto keys = ParseKeys(hex);
    SlotInput s(slots);
    size_t loaded = 0;
    py::gil_scoped_release nogil;
    Check(rt_->LoadKeys(keys, layout, s.data(), s.size(), &loaded, stream));
    return loaded;
  }

  std::unique_ptr<PyPendingStore> BeginStoreKeys(const std::vector<std::string>& hex, const KVLayout& layout,
                                                 const py::object& slots, uint64_t stream) {
    const auto keys = ParseKeys(hex);
    SlotInput s(slots);
    std::unique_ptr<PendingStore> store;
    {
      py::gil_scoped_release nogil;
      Check(rt_->BeginStoreKeys(keys, layout, s.data(), s.size(), stream, &store));
    }
    return std::make_unique<PyPendingStore>(std::move(store));
  }

  std::unique_ptr<PyPendingLoad> BeginLoadKeys(const std::vector<std::string>& hex, const KVLayout& layout,
                                               const py::object& slots, uint64_t stream) {
    const auto keys = ParseKeys(hex);
    SlotInput s(slots);
    std::unique_ptr<PendingLoad> load;
    {
      py::gil_scoped_release nogil;
      Check(rt_->BeginLoadKeys(keys, layout, s.data(), s.size(), stream, &load));
    }
    return std::make_unique<PyPendingLoad>(std::move(load));
  }

  size_t Pin(const py::object& tokens, bool pin) {
    TokenInput t(tokens);
    size_t count = 0;
    py::gil_scoped_release nogil;
    Check(pin ? rt_->Pin(t.data(), t.size(), &count) : rt_->Unpin(t.data(), t.size(), &count));
    return count;
  }

  size_t Clear(bool include_disk) {
    size_t removed = 0;
    py::gil_scoped_release nogil;
    Check(rt_->Clear(&removed, include_disk));
    return removed;
  }

  void FlushWrites() {
    py::gil_scoped_release nogil;
    rt_->FlushWrites();
  }

  // Record exchange with the Python-side remote tier.
  // bytes: a prefix of `prefix_bytes` (e.g. a wire header), then the record
  // of a chunk in host memory, built with one copy; None when it is not
  // there. `seal`, if given, is called with a read-only view of the record
  // (released afterwards) and returns the prefix (e.g. the header with a MAC
  // of the record), written in place before anyone else sees the object.
  // (bytes, not bytearray or memoryview: clients send bytes fastest.)
  py::object ExportRecord(const std::string& hex, size_t prefix_bytes, const py::object& seal) {
    const ChunkKey key = ParseKey(hex);
    const size_t record_bytes = rt_->RecordBytes();
    if (record_bytes == 0) return py::none();
    py::object out = py::reinterpret_steal<py::object>(
        PyBytes_FromStringAndSize(nullptr, Py_ssize_t(prefix_bytes + record_bytes)));
    if (!out) throw py::error_already_set();
    char* dst = PyBytes_AsString(out.ptr());
    std::memset(dst, 0, prefix_bytes);
    Status st;
    size_t got = 0;
    {
      py::gil_scoped_release nogil;  // nobody else can see the new object yet
      st = rt_->ExportRecord(key, reinterpret_cast<uint8_t*>(dst + prefix_bytes), record_bytes, &got);
    }
    if (st.code() == StatusCode::kNotFound) return py::none();
    Check(st);
    if (got != record_bytes) ThrowStatus(Status::Internal("record size changed"));
    if (!seal.is_none()) {
      py::object view = py::reinterpret_steal<py::object>(
          PyMemoryView_FromMemory(dst + prefix_bytes, Py_ssize_t(record_bytes), PyBUF_READ));
      if (!view) throw py::error_already_set();
      py::object head;
      try {
        head = seal(view);
      } catch (...) {
        view.attr("release")();
        throw;
      }
      view.attr("release")();  // no view into the object outlives this call
      char* data = nullptr;
      Py_ssize_t len = 0;
      if (!PyBytes_Check(head.ptr()) || PyBytes_AsStringAndSize(head.ptr(), &data, &len) != 0 ||
          size_t(len) != prefix_bytes) {
        ThrowStatus(Status::InvalidArgument("seal must return bytes of exactly prefix_bytes"));
      }
      std::memcpy(dst, data, prefix_bytes);
    }
    return out;
  }

  // "imported" (now in host memory, or already there), "corrupt" (refused:
  // header, size or checksum; counted as a load error) or "no_room" (a local
  // condition: the record itself may be good).
  std::string ImportRecord(const std::string& hex, const py::buffer& data) {
    const ChunkKey key = ParseKey(hex);
    py::buffer_info info = ContiguousBuffer(data, "record");
    if (info.ndim != 1 || info.itemsize != 1) ThrowStatus(Status::InvalidArgument("a record is a 1-D byte buffer"));
    Status st;
    {
      py::gil_scoped_release nogil;
      st = rt_->ImportRecord(key, static_cast<const uint8_t*>(info.ptr), size_t(info.size));
    }
    if (st.code() == StatusCode::kCorrupt) return "corrupt";
    if (st.code() == StatusCode::kOutOfMemory) return "no_room";
    Check(st);
    return "imported";
  }

  size_t RecordBytes() const { return rt_->RecordBytes(); }

  void CorruptChunkForTesting(const std::string& hex) { Check(rt_->CorruptChunkForTesting(ParseKey(hex))); }
  void DropChunkForTesting(const std::string& hex) { Check(rt_->DropChunkForTesting(ParseKey(hex))); }

  py::dict Stats() const {
    const RuntimeStats s = rt_->Stats();
    py::dict d;
    d["lookups"] = s.lookups;
    d["lookup_tokens"] = s.lookup_tokens;
    d["lookup_hit_tokens"] = s.lookup_hit_tokens;
    d["store_calls"] = s.store_calls;
    d["stored_chunks"] = s.stored_chunks;
    d["store_skipped_chunks"] = s.store_skipped_chunks;
    d["store_dropped_chunks"] = s.store_dropped_chunks;
    d["load_calls"] = s.load_calls;
    d["loaded_chunks"] = s.loaded_chunks;
    d["loaded_tokens"] = s.loaded_tokens;
    d["load_errors"] = s.load_errors;
    d["l1_corrupt_chunks"] = s.l1_corrupt_chunks;
    d["evicted_chunks"] = s.evicted_chunks;
    d["l1_used_bytes"] = s.l1_used_bytes;
    d["l1_capacity_bytes"] = s.l1_capacity_bytes;
    d["l1_chunks"] = s.l1_chunks;
    d["imported_chunks"] = s.imported_chunks;
    d["disk_enabled"] = s.disk_enabled;
    if (s.disk_enabled) {
      d["lookup_disk_hit_tokens"] = s.lookup_disk_hit_tokens;
      d["promoted_chunks"] = s.promoted_chunks;
      d["prefetch_dropped"] = s.prefetch_dropped;
      d["write_behind_dropped"] = s.write_behind_dropped;
      d["disk_records"] = s.disk.records;
      d["disk_used_bytes"] = s.disk.used_bytes;
      d["disk_capacity_bytes"] = s.disk.capacity_bytes;
      d["disk_reads"] = s.disk.reads;
      d["disk_read_bytes"] = s.disk.read_bytes;
      d["disk_read_errors"] = s.disk.read_errors;
      d["disk_writes"] = s.disk.writes;
      d["disk_write_bytes"] = s.disk.write_bytes;
      d["disk_write_errors"] = s.disk.write_errors;
      d["disk_write_enospc"] = s.disk.write_enospc;
      d["disk_evictions"] = s.disk.evictions;
      d["disk_removed_corrupt"] = s.disk.removed_corrupt;
      d["disk_recovered_records"] = s.disk.recovered_records;
      d["disk_temp_name_taken"] = s.disk.temp_name_taken;
      d["disk_discarded_at_start"] = s.disk.discarded_at_start;
    }
    return d;
  }

  void Close() {
    py::gil_scoped_release nogil;
    rt_->Close();
  }
  bool closed() const { return rt_->closed(); }
  std::string DiskBackend() const { return rt_->disk_backend(); }
  uint32_t chunk_size() const { return rt_->chunk_size(); }

 private:
  std::unique_ptr<CacheRuntime> rt_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "lmcache native runtime (thin bindings; see lmcache.CacheEngine for the Python API)";
  RegisterExceptions(m);

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

  py::class_<PyRuntime>(m, "Runtime", "The native cache runtime: keys, index, host tier, copy engine.")
      .def(py::init([](uint32_t chunk_size, uint64_t l1_capacity_bytes, int num_threads,
                       const std::string& eviction_policy, const std::string& model_id,
                       const std::string& tenant_salt, uint32_t tp_rank, uint32_t tp_size,
                       bool verify_l1_checksums, const std::string& disk_dir, uint64_t disk_capacity_bytes,
                       bool disk_force_threads, int disk_queue_depth, uint32_t write_behind_chunks,
                       double disk_lock_timeout_s, const py::bytes& record_key, bool encrypt_records) {
             RuntimeOptions o;
             o.chunk_size = chunk_size;
             o.l1_capacity_bytes = l1_capacity_bytes;
             o.num_threads = num_threads;
             o.eviction_policy = eviction_policy;
             o.model_id = model_id;
             o.tenant_salt = tenant_salt;
             o.tp_rank = tp_rank;
             o.tp_size = tp_size;
             o.verify_l1_checksums = verify_l1_checksums;
             o.disk_dir = disk_dir;
             o.disk_capacity_bytes = disk_capacity_bytes;
             o.disk_force_threads = disk_force_threads;
             o.disk_queue_depth = disk_queue_depth;
             o.write_behind_chunks = write_behind_chunks;
             o.disk_lock_timeout_s = disk_lock_timeout_s;
             o.record_key = record_key;
             o.encrypt_records = encrypt_records;
             return std::make_unique<PyRuntime>(o);
           }),
           py::kw_only(), py::arg("chunk_size") = 256, py::arg("l1_capacity_bytes") = 1ull << 30,
           py::arg("num_threads") = 0, py::arg("eviction_policy") = "lru", py::arg("model_id") = "",
           py::arg("tenant_salt") = "", py::arg("tp_rank") = 0, py::arg("tp_size") = 1,
           py::arg("verify_l1_checksums") = false, py::arg("disk_dir") = "", py::arg("disk_capacity_bytes") = 0,
           py::arg("disk_force_threads") = false, py::arg("disk_queue_depth") = 32,
           py::arg("write_behind_chunks") = 64, py::arg("disk_lock_timeout_s") = 10.0,
           py::arg("record_key") = py::bytes(), py::arg("encrypt_records") = false)
      .def("set_shape", &PyRuntime::SetShape, py::arg("num_layers"), py::arg("num_planes"), py::arg("num_heads"),
           py::arg("head_dim"), py::arg("dtype"))
      .def("register_layout", &PyRuntime::RegisterLayout, py::arg("layout"))
      .def("hash_tokens", &PyRuntime::HashTokens, py::arg("tokens"),
           "Hex keys of the whole chunks of `tokens`.")
      .def("lookup", &PyRuntime::Lookup, py::arg("tokens"))
      .def("store", &PyRuntime::Store, py::arg("tokens"), py::arg("layout"), py::arg("slots"), py::arg("stream") = 0,
           "stream: a cudaStream_t (as an int) for a layout in GPU memory; the call returns when the copy is done.")
      .def("load", &PyRuntime::Load, py::arg("tokens"), py::arg("layout"), py::arg("slots"), py::arg("stream") = 0)
      .def("begin_store", &PyRuntime::BeginStore, py::arg("tokens"), py::arg("layout"), py::arg("slots"),
           py::arg("stream") = 0, py::keep_alive<0, 1>(),
           "The store of `store`, in two steps: a PendingStore (GPU caches: the copy is enqueued on `stream`).")
      .def("begin_store_keys", &PyRuntime::BeginStoreKeys, py::arg("keys"), py::arg("layout"), py::arg("slots"),
           py::arg("stream") = 0, py::keep_alive<0, 1>())
      .def("begin_load", &PyRuntime::BeginLoad, py::arg("tokens"), py::arg("layout"), py::arg("slots"),
           py::arg("stream") = 0, py::keep_alive<0, 1>(),
           "The load of `load`, in steps: a PendingLoad holding the cached prefix.")
      .def("begin_load_keys", &PyRuntime::BeginLoadKeys, py::arg("keys"), py::arg("layout"), py::arg("slots"),
           py::arg("stream") = 0, py::keep_alive<0, 1>())
      .def("keys_from_ids", &PyRuntime::KeysFromIds, py::arg("ids"),
           "Hex keys, in this runtime's namespace, of chunks an engine names itself.")
      .def("lookup_keys", &PyRuntime::LookupKeys, py::arg("keys"), "Leading keys cached (chunks).")
      .def("store_keys", &PyRuntime::StoreKeys, py::arg("keys"), py::arg("layout"), py::arg("slots"),
           py::arg("stream") = 0)
      .def("load_keys", &PyRuntime::LoadKeys, py::arg("keys"), py::arg("layout"), py::arg("slots"),
           py::arg("stream") = 0)
      .def("pin", [](PyRuntime& r, const py::object& t) { return r.Pin(t, true); }, py::arg("tokens"))
      .def("unpin", [](PyRuntime& r, const py::object& t) { return r.Pin(t, false); }, py::arg("tokens"))
      .def("clear", &PyRuntime::Clear, py::arg("include_disk") = true)
      .def("flush_writes", &PyRuntime::FlushWrites, "Waits until queued writes to disk are done.")
      .def_property_readonly("disk_backend", &PyRuntime::DiskBackend,
                             "'io_uring', 'threads' (+ ' (buffered)' without O_DIRECT), or '' without a disk tier")
      .def("corrupt_chunk_for_testing", &PyRuntime::CorruptChunkForTesting, py::arg("key_hex"))
      .def("export_record", &PyRuntime::ExportRecord, py::arg("key_hex"), py::arg("prefix_bytes") = 0,
           py::arg("seal") = py::none(),
           "bytes: a prefix of prefix_bytes (zeros, or what seal(view of the record) returns), then the record "
           "(header + payload) of a chunk in host memory; None when it is not there.")
      .def("import_record", &PyRuntime::ImportRecord, py::arg("key_hex"), py::arg("record"),
           "Checks a record and puts it in host memory: 'imported', 'corrupt' (refused and counted) or 'no_room'.")
      .def_property_readonly("record_bytes", &PyRuntime::RecordBytes)
      .def("drop_chunk_for_testing", &PyRuntime::DropChunkForTesting, py::arg("key_hex"))
      .def("stats", &PyRuntime::Stats)
      .def("close", &PyRuntime::Close)
      .def_property_readonly("closed", &PyRuntime::closed)
      .def_property_readonly("chunk_size", &PyRuntime::chunk_size);

  BindBufferFunctions(m);
  m.def("cuda_device_available", &CudaDeviceAvailable);
  m.def("device_backend", [] { return std::string(DeviceBackendName()); },
        "'cuda' when built with the CUDA runtime, else 'none'.");
}
