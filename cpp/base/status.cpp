#include "status.h"

#include <cstring>

namespace lmcache {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kOutOfMemory: return "out of memory";
    case StatusCode::kNotFound: return "not found";
    case StatusCode::kIoError: return "I/O error";
    case StatusCode::kClosed: return "closed";
    case StatusCode::kCorrupt: return "corrupt record";
    case StatusCode::kInvalidState: return "invalid state";
    case StatusCode::kInternal: return "internal error";
  }
  return "unknown";
}

std::string Status::ToString() const {
  std::string s = StatusCodeName(code_);
  if (!message_.empty()) s += ": " + message_;
  if (sys_errno_ != 0) {
    s += " (errno " + std::to_string(sys_errno_) + ": " + std::strerror(sys_errno_) + ")";
  }
  return s;
}

}  // namespace lmcache
