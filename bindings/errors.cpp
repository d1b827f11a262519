#include "errors.h"

#include <string>

namespace py = pybind11;

namespace lmcache {

namespace {

struct ExceptionTypes {
  PyObject* base = nullptr;
  PyObject* invalid_argument = nullptr;
  PyObject* invalid_state = nullptr;
  PyObject* out_of_memory = nullptr;
  PyObject* closed = nullptr;
  PyObject* storage = nullptr;
  PyObject* corrupt = nullptr;
};
ExceptionTypes g_types;  // set once at import; the module keeps them alive

PyObject* NewException(py::module_& m, const char* name, std::initializer_list<PyObject*> bases, const char* doc) {
  py::tuple b(bases.size());
  size_t i = 0;
  for (PyObject* base : bases) b[i++] = py::reinterpret_borrow<py::object>(base);
  const std::string qualified = std::string("lmcache._core.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, b.ptr(), nullptr);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::reinterpret_borrow<py::object>(type));
  return type;
}

PyObject* TypeFor(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument: return g_types.invalid_argument;
    case StatusCode::kInvalidState: return g_types.invalid_state;
    case StatusCode::kOutOfMemory: return g_types.out_of_memory;
    case StatusCode::kClosed: return g_types.closed;
    case StatusCode::kIoError:
    case StatusCode::kNotFound: return g_types.storage;
    case StatusCode::kCorrupt: return g_types.corrupt;
    default: return g_types.base;
  }
}

}  // namespace

void RegisterExceptions(py::module_& m) {
  g_types.base = NewException(m, "LMCacheError", {PyExc_RuntimeError}, "Base of every lmcache error.");
  g_types.invalid_argument = NewException(m, "InvalidArgumentError", {g_types.base, PyExc_ValueError},
                                          "A shape, dtype, length or config value is wrong.");
  g_types.invalid_state =
      NewException(m, "InvalidStateError", {g_types.base}, "A call was made in the wrong order.");
  g_types.out_of_memory =
      NewException(m, "OutOfMemoryError", {g_types.base, PyExc_MemoryError}, "Memory could not be reserved.");
  g_types.closed = NewException(m, "ClosedError", {g_types.base}, "The engine was closed.");
  g_types.storage = NewException(m, "StorageError", {g_types.base}, "A storage tier failed.");
  g_types.corrupt = NewException(m, "CorruptDataError", {g_types.storage}, "A stored record failed validation.");

  // Runs with the GIL held, whatever scope the StatusError was thrown from.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      PyErr_SetString(TypeFor(e.status().code()), e.status().ToString().c_str());
    }
  });
}

void ThrowStatus(const Status& st) { throw StatusError(st); }

}  // namespace lmcache
