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
#include "handles.h"
#include "inputs.h"
#include "remote_binding.h"
#include "options_binding.h"
#include "sglang_keys.h"

namespace py = pybind11;
using namespace lmcache;

namespace lmcache {
void BindBufferFunctions(py::module_& m);  // buffer_functions.cpp
void BindSharedMover(py::module_& m);      // shared_binding.cpp
}

namespace {

// Owns the runtime; Close() is explicit, and the destructor closes too.
class PyRuntime {
 public:
  explicit PyRuntime(const RuntimeOptions& o) { Check(CacheRuntime::Create(o, &rt_)); }
  ~PyRuntime() {
    if (rt_ && rt_->InForkedChild()) {
      (void)rt_.release();  // the parent's; see InForkedChild
      return;
    }
    if (rt_ && !rt_->closed()) {
      py::gil_scoped_release nogil;  // the remote writer may need the GIL to finish
      rt_->Close();
    }
    if (remote_) remote_->Release();
  }

  void SetShape(uint32_t layers, uint32_t planes, uint32_t heads, uint32_t head_dim, const std::string& dtype,
                uint32_t opaque_block_size) {
    KVShape s{layers, planes, heads, head_dim, ParseDType(dtype), opaque_block_size};
    py::gil_scoped_release nogil;
    Check(rt_->SetShape(s));
  }

  void RegisterLayout(const KVLayout& layout) {
    py::gil_scoped_release nogil;
    Check(rt_->RegisterLayout(layout));
  }

  // A request's keys: one native pass over its tokens (counted in stats).
  std::shared_ptr<ChunkKeys> Keys(const py::object& tokens) {
    TokenInput t(tokens);
    auto out = std::make_shared<ChunkKeys>();
    py::gil_scoped_release nogil;
    Check(rt_->ComputeKeys(t.data(), t.size(), &out->keys));
    return out;
  }

  // Keys of chunks an engine names itself (SGLang's page hashes).
  std::shared_ptr<ChunkKeys> KeysFromIds(const std::vector<std::string>& ids) {
    auto out = std::make_shared<ChunkKeys>();
    py::gil_scoped_release nogil;
    Check(rt_->KeysFromIds(ids, &out->keys));
    return out;
  }

  size_t Lookup(const ChunkKeys& keys) {
    size_t hit = 0;
    py::gil_scoped_release nogil;
    Check(rt_->Lookup(keys.keys, &hit));
    return hit;
  }

  std::unique_ptr<PyPendingStore> BeginStore(const ChunkKeys& keys, const KVLayout& layout, const py::object& slots,
                                             uint64_t stream) {
    SlotInput s(slots);
    std::unique_ptr<PendingStore> store;
    {
      py::gil_scoped_release nogil;
      Check(rt_->BeginStore(keys.keys, layout, s.data(), s.size(), stream, &store));
    }
    return std::make_unique<PyPendingStore>(std::move(store));
  }

  std::unique_ptr<PyPendingLoad> BeginLoad(const ChunkKeys& keys, const KVLayout& layout, const py::object& slots,
                                           uint64_t stream) {
    SlotInput s(slots);
    std::unique_ptr<PendingLoad> load;
    {
      py::gil_scoped_release nogil;
      Check(rt_->BeginLoad(keys.keys, layout, s.data(), s.size(), stream, &load));
    }
    return std::make_unique<PyPendingLoad>(std::move(load));
  }

  size_t Pin(const ChunkKeys& keys, bool pin) {
    size_t count = 0;
    py::gil_scoped_release nogil;
    Check(pin ? rt_->Pin(keys.keys, &count) : rt_->Unpin(keys.keys, &count));
    return count;
  }

  size_t Clear(bool include_disk) {
    size_t removed = 0;
    py::gil_scoped_release nogil;
    Check(rt_->Clear(&removed, include_disk));
    return removed;
  }

  py::dict Locate(const ChunkKeys& keys) {
    CacheRuntime::TierPrefixes t;
    {
      py::gil_scoped_release nogil;
      Check(rt_->Locate(keys.keys, &t));
    }
    py::dict d;
    d["host"] = t.host;
    d["disk"] = t.disk;
    d["remote"] = t.remote;
    d["any"] = t.any;
    return d;
  }

  size_t Prefetch(const ChunkKeys& keys) {
    size_t host = 0;
    py::gil_scoped_release nogil;
    Check(rt_->Prefetch(keys.keys, &host));
    return host;
  }

  size_t Evict(const ChunkKeys& keys, bool include_disk) {
    size_t removed = 0;
    py::gil_scoped_release nogil;
    Check(rt_->Evict(keys.keys, include_disk, &removed));
    return removed;
  }

  // The node server's calls (cache_runtime_shared.cpp).
  py::tuple SharedPool() const {
    int fd = -1;
    size_t region = 0, slab = 0;
    Check(rt_->SharedPool(&fd, &region, &slab));
    return py::make_tuple(fd, region, slab);
  }

  std::vector<int64_t> HoldPrefix(const ChunkKeys& keys, size_t max_chunks) {
    std::vector<int64_t> slabs;
    py::gil_scoped_release nogil;
    Check(rt_->HoldPrefix(keys.keys, max_chunks, &slabs));
    return slabs;
  }

  void ReleaseHeld(const ChunkKeys& keys) {
    py::gil_scoped_release nogil;
    Check(rt_->ReleaseHeld(keys.keys));
  }

  std::vector<int64_t> ReserveForWrite(const ChunkKeys& keys) {
    std::vector<int64_t> slabs;
    py::gil_scoped_release nogil;
    Check(rt_->ReserveForWrite(keys.keys, &slabs));
    return slabs;
  }

  size_t CommitWritten(const ChunkKeys& keys, const std::vector<int64_t>& slabs) {
    size_t published = 0;
    py::gil_scoped_release nogil;
    Check(rt_->CommitWritten(keys.keys, slabs, &published));
    return published;
  }

  void AbortWritten(const ChunkKeys& keys, const std::vector<int64_t>& slabs) {
    py::gil_scoped_release nogil;
    Check(rt_->AbortWritten(keys.keys, slabs));
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

  py::dict Stats() const { return StatsToDict(rt_->Stats()); }

  // Plugs in the remote tier's client (a Python object with count_prefix,
  // fetch and put; see lmcache.remote.store). Closing the runtime lets the
  // queued writes finish, then drops the client (which holds the runtime
  // only weakly, so the two never keep each other alive).
  void SetRemoteTier(const py::object& client, uint32_t queue_chunks) {
    auto tier = std::make_shared<PythonRemoteTier>(client);
    {
      py::gil_scoped_release nogil;
      Check(rt_->SetRemoteTier(tier, queue_chunks));
    }
    remote_ = std::move(tier);
  }

  void CountRemote(const std::string& stat, uint64_t n) { Check(rt_->CountRemote(stat, n)); }

  void Close() {
    {
      py::gil_scoped_release nogil;
      rt_->Close();
    }
    if (remote_) remote_->Release();
  }
  bool closed() const { return rt_->closed(); }
  std::string DiskBackend() const { return rt_->disk_backend(); }
  uint32_t chunk_size() const { return rt_->chunk_size(); }

 private:
  std::shared_ptr<PythonRemoteTier> remote_;
  std::unique_ptr<CacheRuntime> rt_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "lmcache native runtime (thin bindings; see lmcache.CacheEngine for the Python API)";
  RegisterExceptions(m);
  BindHandles(m);

  py::class_<PyRuntime>(m, "Runtime", "The native cache runtime: keys, index, host tier, copy engine.")
      .def(py::init([](const py::kwargs& options) { return std::make_unique<PyRuntime>(OptionsFromKwargs(options)); }),
           "Runtime(**options): lmcache's config keys (lmcache._core.option_table()), plus tp_rank, tp_size and "
           "record_key (bytes); keys left out keep their defaults.")
      .def("set_shape", &PyRuntime::SetShape, py::arg("num_layers"), py::arg("num_planes"), py::arg("num_heads"),
           py::arg("head_dim"), py::arg("dtype"), py::arg("opaque_block_size") = 0)
      .def("register_layout", &PyRuntime::RegisterLayout, py::arg("layout"))
      .def("keys", &PyRuntime::Keys, py::arg("tokens"),
           "The ChunkKeys of the whole chunks of `tokens`, in the configured key scheme (one pass, counted).")
      .def("keys_from_ids", &PyRuntime::KeysFromIds, py::arg("ids"),
           "The ChunkKeys, in this runtime's namespace, of chunks an engine names itself.")
      .def("lookup", &PyRuntime::Lookup, py::arg("keys"), "Leading keys cached (chunks).")
      .def("begin_store", &PyRuntime::BeginStore, py::arg("keys"), py::arg("layout"), py::arg("slots"),
           py::arg("stream") = 0, py::keep_alive<0, 1>(),
           "Stores the whole chunks the slots cover, in two steps: a PendingStore (GPU caches: the copy is "
           "enqueued on `stream`, a cudaStream_t as an int).")
      .def("begin_load", &PyRuntime::BeginLoad, py::arg("keys"), py::arg("layout"), py::arg("slots"),
           py::arg("stream") = 0, py::keep_alive<0, 1>(),
           "Loads the cached prefix of `keys`, in steps: a PendingLoad holding it.")
      .def("pin", [](PyRuntime& r, const ChunkKeys& k) { return r.Pin(k, true); }, py::arg("keys"))
      .def("unpin", [](PyRuntime& r, const ChunkKeys& k) { return r.Pin(k, false); }, py::arg("keys"))
      .def("set_remote_tier", &PyRuntime::SetRemoteTier, py::arg("client"), py::arg("queue_chunks"),
           "Plugs in the remote tier's client: lookups, loads and stores walk it from now on.")
      .def("count_remote", &PyRuntime::CountRemote, py::arg("stat"), py::arg("n") = 1,
           "Counts an event of the remote tier's client (a remote_* stat).")
      .def("clear", &PyRuntime::Clear, py::arg("include_disk") = true)
      .def("locate", &PyRuntime::Locate, py::arg("keys"),
           "{'host', 'disk', 'remote'}: leading chunks each tier holds on its own; 'any': those some tier holds "
           "(touches nothing).")
      .def("prefetch", &PyRuntime::Prefetch, py::arg("keys"),
           "Brings the cached prefix into host memory now; returns leading chunks in host memory.")
      .def("evict", &PyRuntime::Evict, py::arg("keys"), py::arg("include_disk") = false,
           "Drops these chunks from host memory (and disk); in-use and pinned ones stay. Returns records removed.")
      .def("flush_writes", &PyRuntime::FlushWrites, "Waits until queued writes to disk are done.")
      .def("shared_pool", &PyRuntime::SharedPool,
           "(fd, region_bytes, slab_bytes) of the shared host pool (l1_shared_memory); the fd stays the runtime's.")
      .def("hold_prefix", &PyRuntime::HoldPrefix, py::arg("keys"), py::arg("max_chunks"),
           "Slabs of the cached prefix (at most max_chunks), each held until release_held.")
      .def("release_held", &PyRuntime::ReleaseHeld, py::arg("keys"))
      .def("reserve_for_write", &PyRuntime::ReserveForWrite, py::arg("keys"),
           "A slab per key for a writer in another process (-1: cached, being written, or no room).")
      .def("commit_written", &PyRuntime::CommitWritten, py::arg("keys"), py::arg("slabs"),
           "Checks and publishes the records written into the reserved slabs; returns how many were published.")
      .def("abort_written", &PyRuntime::AbortWritten, py::arg("keys"), py::arg("slabs"))
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
  BindOptionTables(m);
  BindSharedMover(m);
  m.def("sglang_page_names", [](const py::object& tokens, size_t page_size) {
          TokenInput t(tokens);
          if (!SglangKeysAvailable()) ThrowStatus(Status::InvalidArgument("SGLang's page names need SHA-256: this "
                                                                            "lmcache was built without OpenSSL"));
          if (page_size == 0) ThrowStatus(Status::InvalidArgument("page_size must be >= 1"));
          std::vector<std::string> names;
          {
            py::gil_scoped_release nogil;
            SglangPageNames(t.data(), t.size(), page_size, &names);
          }
          return names;
        }, py::arg("tokens"), py::arg("page_size"),
        "SGLang's page names (SHA-256 chain, hex) of the whole pages of `tokens`.");
  m.def("cuda_device_available", &CudaDeviceAvailable);
  m.def("device_backend", [] { return std::string(DeviceBackendName()); },
        "'cuda' when built with the CUDA runtime, else 'none'.");
}
