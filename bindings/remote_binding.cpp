#include "remote_binding.h"

#include <Python.h>

#include "handles.h"

namespace py = pybind11;

namespace lmcache {

namespace {
bool InterpreterAlive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}
}  // namespace

PythonRemoteTier::~PythonRemoteTier() { Release(); }

void PythonRemoteTier::Release() {
  if (!InterpreterAlive()) {
    (void)client_.release();  // no Python left to hand it back to
    return;
  }
  py::gil_scoped_acquire gil;
  client_ = py::object();
}

size_t PythonRemoteTier::Call(const char* method, const std::vector<ChunkKey>& keys) {
  if (!InterpreterAlive()) return 0;
  py::gil_scoped_acquire gil;
  if (!client_) return 0;
  try {
    auto arg = std::make_shared<ChunkKeys>();
    arg->keys = keys;
    py::object result = client_.attr(method)(arg);
    return result.is_none() ? 0 : result.cast<size_t>();
  } catch (py::error_already_set& e) {
    // The client turns the store's failures into misses itself; anything
    // reaching here is a bug, reported (sys.unraisablehook), never a crash.
    e.discard_as_unraisable(method);
  } catch (const std::exception& e) {
    PyErr_WarnEx(PyExc_RuntimeWarning, e.what(), 1);
  }
  return 0;
}

size_t PythonRemoteTier::CountPrefix(const std::vector<ChunkKey>& keys) { return Call("count_prefix", keys); }
size_t PythonRemoteTier::Fetch(const std::vector<ChunkKey>& keys) { return Call("fetch", keys); }
void PythonRemoteTier::Put(const std::vector<ChunkKey>& keys) { (void)Call("put", keys); }

}  // namespace lmcache
