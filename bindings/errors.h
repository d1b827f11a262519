// Status -> Python exception. The exception classes live in lmcache._core and
// are re-exported by lmcache.errors:
//   LMCacheError(RuntimeError)
//     InvalidArgumentError (also ValueError)   InvalidStateError
//     OutOfMemoryError (also MemoryError)       ClosedError
//     StorageError -> CorruptDataError
#pragma once

#include <pybind11/pybind11.h>

#include <exception>
#include <string>
#include <utility>

#include "status.h"

namespace lmcache {

// Carries a Status out of native code; translated to the matching Python
// exception by a translator registered in RegisterExceptions.
class StatusError : public std::exception {
 public:
  explicit StatusError(Status st) : st_(std::move(st)), what_(st_.ToString()) {}
  const Status& status() const { return st_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  Status st_;
  std::string what_;
};

void RegisterExceptions(pybind11::module_& m);
[[noreturn]] void ThrowStatus(const Status& st);
inline void Check(const Status& st) {
  if (!st.ok()) ThrowStatus(st);
}

}  // namespace lmcache
