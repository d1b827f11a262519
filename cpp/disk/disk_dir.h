// The disk tier's private directory. local_disk_path belongs to the user;
// lmcache keeps everything it writes in one subdirectory of it,
// "<local_disk_path>/lmcache-records" (mode 0700), that holds a marker file
// written by lmcache. On a shared host this means:
//   - cached KV (derived from prompts) is readable by its owner only: the
//     subdirectory is 0700, its files 0600, whatever the umask;
//   - local_disk_path itself must be owned by this user and not writable by
//     group or others, else another user could swap or plant files in it;
//   - lmcache deletes only files inside a subdirectory that carries its
//     marker, so pointing it at a shared folder never deletes anyone's files;
//   - every file is opened relative to the subdirectory's fd with O_NOFOLLOW
//     (see disk_tier.cpp), so a planted symbolic link is never followed.
#pragma once

#include <string>

#include "status.h"

namespace lmcache {

// The subdirectory of local_disk_path that lmcache owns, and the names inside it.
constexpr const char* kDiskRecordsSubdir = "lmcache-records";
constexpr const char* kDiskMarkerName = ".lmcache-dir";
constexpr const char* kDiskLockName = ".lock";
// Bump when the file layout inside the subdirectory changes incompatibly.
constexpr int kDiskDirFormat = 1;

// A file descriptor closed when it goes out of scope.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Opens "<user_dir>/lmcache-records", creating user_dir (0700) and the
// subdirectory (0700, with its marker) when missing. Refuses, with an
// InvalidArgument naming the path and the reason, a user_dir that is not owned
// by the effective uid or is writable by group/others, and a subdirectory that
// is a symbolic link, is not owned by us, is not 0700, or lacks a valid marker.
// Out: an O_DIRECTORY fd of the subdirectory and its path (for messages).
Status OpenRecordsDir(const std::string& user_dir, UniqueFd* records_dir, std::string* records_path);

// Opens "<records dir>/.lock" (0600, never through a symbolic link) and takes
// an exclusive flock on it, waiting up to timeout_s for another process.
Status LockRecordsDir(int records_dir, const std::string& records_path, double timeout_s, UniqueFd* lock);

}  // namespace lmcache
