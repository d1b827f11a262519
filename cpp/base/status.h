// One status type for the whole native runtime: a code, the errno that caused it
// (0 when none) and a message. Functions that can fail return a Status; the
// bindings turn it into a Python exception and the C API into an lmc_status.
#pragma once

#include <string>
#include <utility>

namespace lmcache {

// Values are part of the C ABI (include/lmcache/lmcache.h mirrors them).
enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // caller error: shape, dtype, length, config value
  kOutOfMemory = 2,      // a pool or the system could not provide memory
  kNotFound = 3,         // a key that is not (or no longer) cached
  kIoError = 4,          // a storage tier failed (disk, network)
  kClosed = 5,           // the runtime was closed
  kCorrupt = 6,          // a stored record failed its header or checksum check
  kInvalidState = 7,     // call made in the wrong order (e.g. before register)
  kInternal = 8,         // a bug: an invariant did not hold
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message, int sys_errno = 0)
      : code_(code), sys_errno_(sys_errno), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status OutOfMemory(std::string m, int e = 0) { return {StatusCode::kOutOfMemory, std::move(m), e}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status IoError(std::string m, int e = 0) { return {StatusCode::kIoError, std::move(m), e}; }
  static Status Closed() { return {StatusCode::kClosed, "the lmcache runtime is closed"}; }
  static Status ForkedChild() {
    return {StatusCode::kInvalidState,
            "this lmcache runtime was created before a fork(): a child process must create its own"};
  }
  static Status Corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
  static Status InvalidState(std::string m) { return {StatusCode::kInvalidState, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  int sys_errno() const { return sys_errno_; }
  const std::string& message() const { return message_; }
  // "<code name>: <message> (errno N: strerror)".
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  int sys_errno_ = 0;
  std::string message_;
};

#define LMC_RETURN_IF_ERROR(expr)            \
  do {                                       \
    ::lmcache::Status _lmc_st = (expr);      \
    if (!_lmc_st.ok()) return _lmc_st;       \
  } while (0)

}  // namespace lmcache
