// lmcache._core.SharedMover: the engine's half of the node server's data path
// (cpp/runtime/shared_mover.h). Copies run with the GIL released.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <vector>

#include "errors.h"
#include "handles.h"
#include "inputs.h"
#include "shared_mover.h"

namespace py = pybind11;

namespace lmcache {

void BindSharedMover(py::module_& m) {
  py::class_<SharedMover>(m, "SharedMover",
                          "Maps a node server's host pool and copies records between it and a KV cache.")
      .def(py::init<int>(), py::arg("num_threads") = 0)
      .def("map", [](SharedMover& s, int fd, size_t region_bytes, size_t slab_bytes) {
             Check(s.Map(fd, region_bytes, slab_bytes));
           }, py::arg("fd"), py::arg("region_bytes"), py::arg("slab_bytes"),
           "Maps the pool (the fd is not kept).")
      .def("unmap", &SharedMover::Unmap)
      .def_property_readonly("mapped", &SharedMover::mapped)
      .def("load", [](SharedMover& s, const KVLayout& layout, uint32_t chunk_size, const py::object& slots,
                      const ChunkKeys& keys, const std::vector<int64_t>& slabs, bool verify) {
             SlotInput in(slots);
             size_t tokens = 0;
             {
               py::gil_scoped_release nogil;
               Check(s.Load(layout, chunk_size, in.data(), in.size(), keys.keys, slabs, verify, &tokens));
             }
             return tokens;
           }, py::arg("layout"), py::arg("chunk_size"), py::arg("slots"), py::arg("keys"), py::arg("slabs"),
           py::arg("verify") = false, "Copies held records into the cache; returns the tokens delivered.")
      .def("store", [](SharedMover& s, const KVLayout& layout, uint32_t chunk_size, const py::object& slots,
                       const ChunkKeys& keys, const std::vector<int64_t>& slabs) {
             SlotInput in(slots);
             py::gil_scoped_release nogil;
             Check(s.Store(layout, chunk_size, in.data(), in.size(), keys.keys, slabs));
           }, py::arg("layout"), py::arg("chunk_size"), py::arg("slots"), py::arg("keys"), py::arg("slabs"),
           "Writes the records of the chunks given a slab (>= 0).");
}

}  // namespace lmcache
