#include "disk_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

namespace lmcache {

namespace {

constexpr const char* kMarkerPrefix = "lmcache disk tier records\nformat ";

std::string MarkerContent() { return kMarkerPrefix + std::to_string(kDiskDirFormat) + "\n"; }

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", unsigned(mode & 07777));
  return buf;
}

std::string RandomHex() {
  std::random_device rd;
  const uint64_t v = (uint64_t(rd()) << 32) ^ rd();
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

Status Refuse(const std::string& path, const std::string& why) {
  return Status::InvalidArgument("disk tier: refusing " + path + ": " + why);
}

Status WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::IoError("disk tier: cannot write the marker", n < 0 ? errno : EIO);
    done += size_t(n);
  }
  return Status::Ok();
}

// local_disk_path: created 0700 when missing. It may be a symbolic link the
// user set up; what it points to must be ours and not writable by others.
Status OpenUserDir(const std::string& path, UniqueFd* out) {
  const bool created = mkdir(path.c_str(), 0700) == 0;
  if (!created && errno != EEXIST) return Status::IoError("disk tier: cannot create directory " + path, errno);
  // A directory we just made is opened without following links: nobody swaps it in between.
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (created ? O_NOFOLLOW : 0)));
  if (!fd.valid()) return Status::IoError("disk tier: cannot open " + path + " as a directory", errno);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Status::IoError("disk tier: cannot stat " + path, errno);
  if (st.st_uid != geteuid()) {
    return Refuse(path, "it is owned by uid " + std::to_string(st.st_uid) + ", not by this process (uid " +
                            std::to_string(geteuid()) + "); use a directory of your own for local_disk_path");
  }
  // The umask may have taken bits we need from a directory we made.
  if (created && fchmod(fd.get(), 0700) != 0) return Status::IoError("disk tier: cannot chmod " + path, errno);
  if (!created && (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Refuse(path, "it is writable by group or others (mode " + Octal(st.st_mode) +
                            "), so other users could plant or swap files in it; run chmod go-w on it or use a "
                            "private directory for local_disk_path");
  }
  *out = std::move(fd);
  return Status::Ok();
}

// Writes the marker into a freshly made directory.
Status WriteMarker(int dir_fd) {
  UniqueFd fd(openat(dir_fd, kDiskMarkerName, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) return Status::IoError("disk tier: cannot create the marker file", errno);
  if (fchmod(fd.get(), 0600) != 0) return Status::IoError("disk tier: cannot chmod the marker file", errno);
  LMC_RETURN_IF_ERROR(WriteAll(fd.get(), MarkerContent()));
  // Durable before the directory is published: a marker lost to a power cut would get it refused.
  if (fsync(fd.get()) != 0) return Status::IoError("disk tier: cannot sync the marker file", errno);
  return Status::Ok();
}

void RemoveStaging(int user_fd, const std::string& staging) {
  UniqueFd fd(openat(user_fd, staging.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.valid()) unlinkat(fd.get(), kDiskMarkerName, 0);
  unlinkat(user_fd, staging.c_str(), AT_REMOVEDIR);
}

// Builds the subdirectory under a private name and publishes it with one
// rename, so "lmcache-records" never exists without its marker. A crash
// part-way leaves an unused "lmcache-records.new-*" behind, never a
// half-made records directory.
Status CreateRecordsDir(int user_fd, const std::string& user_dir) {
  const std::string staging = std::string(kDiskRecordsSubdir) + ".new-" + RandomHex();
  if (mkdirat(user_fd, staging.c_str(), 0700) != 0) {
    return Status::IoError("disk tier: cannot create directory " + user_dir + "/" + staging, errno);
  }
  Status st;
  {
    UniqueFd fd(openat(user_fd, staging.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) {
      st = Status::IoError("disk tier: cannot open " + user_dir + "/" + staging, errno);
    } else if (fchmod(fd.get(), 0700) != 0) {
      st = Status::IoError("disk tier: cannot chmod " + user_dir + "/" + staging, errno);
    } else {
      st = WriteMarker(fd.get());
    }
  }
  if (st.ok()) {
    int rc = renameat2(user_fd, staging.c_str(), user_fd, kDiskRecordsSubdir, RENAME_NOREPLACE);
    // A filesystem without RENAME_NOREPLACE: a plain rename still never replaces a non-empty directory.
    if (rc != 0 && errno == EINVAL) rc = renameat(user_fd, staging.c_str(), user_fd, kDiskRecordsSubdir);
    if (rc == 0) return Status::Ok();
    // EEXIST/ENOTEMPTY: another process published its directory first; the caller checks and uses that one.
    if (errno != EEXIST && errno != ENOTEMPTY) {
      st = Status::IoError("disk tier: cannot rename " + staging + " to " + kDiskRecordsSubdir + " in " + user_dir,
                           errno);
    }
  }
  RemoveStaging(user_fd, staging);
  return st;
}

// The subdirectory must be a real directory (not a link), ours, mode 0700,
// and carry our marker; anything else was not made by lmcache and is left alone.
Status CheckRecordsDir(int fd, const std::string& path) {
  struct stat st;
  if (fstat(fd, &st) != 0) return Status::IoError("disk tier: cannot stat " + path, errno);
  if (st.st_uid != geteuid()) {
    return Refuse(path, "it is owned by uid " + std::to_string(st.st_uid) + ", not by this process (uid " +
                            std::to_string(geteuid()) + ")");
  }
  if ((st.st_mode & 07777) != 0700) {
    return Refuse(path, "its mode is " + Octal(st.st_mode) + ", not 0700; lmcache makes it 0700 itself, so this "
                        "directory was changed or not made by lmcache");
  }
  const std::string marker_path = path + "/" + kDiskMarkerName;
  const std::string not_ours = "it has no valid lmcache marker (" + marker_path +
                               "), so it was not made by lmcache; lmcache neither uses nor cleans it. Move it "
                               "away or choose another local_disk_path";
  UniqueFd marker(openat(fd, kDiskMarkerName, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!marker.valid()) return Refuse(path, not_ours);
  struct stat mst;
  if (fstat(marker.get(), &mst) != 0 || !S_ISREG(mst.st_mode) || mst.st_uid != geteuid()) {
    return Refuse(path, not_ours);
  }
  char buf[256];
  const ssize_t n = pread(marker.get(), buf, sizeof(buf), 0);
  const std::string content(buf, n > 0 ? size_t(n) : 0);
  if (content == MarkerContent()) return Status::Ok();
  if (content.compare(0, std::string(kMarkerPrefix).size(), kMarkerPrefix) == 0) {
    return Refuse(path, "it holds records of another lmcache version (marker says format " +
                            content.substr(std::string(kMarkerPrefix).size()) + ", this lmcache uses format " +
                            std::to_string(kDiskDirFormat) + "); remove it or choose another local_disk_path");
  }
  return Refuse(path, not_ours);
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) Reset(other.Release());
  return *this;
}

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

Status OpenRecordsDir(const std::string& user_dir, UniqueFd* records_dir, std::string* records_path) {
  UniqueFd user;
  LMC_RETURN_IF_ERROR(OpenUserDir(user_dir, &user));
  const std::string path = user_dir + "/" + kDiskRecordsSubdir;
  const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  UniqueFd fd(openat(user.get(), kDiskRecordsSubdir, flags));
  if (!fd.valid() && errno == ENOENT) {
    LMC_RETURN_IF_ERROR(CreateRecordsDir(user.get(), user_dir));
    fd.Reset(openat(user.get(), kDiskRecordsSubdir, flags));
  }
  if (!fd.valid()) {
    const int err = errno;
    struct stat st;
    if (fstatat(user.get(), kDiskRecordsSubdir, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)) {
      return Refuse(path, std::string(S_ISLNK(st.st_mode) ? "it is a symbolic link" : "it is not a directory") +
                              "; lmcache only uses a directory it made there. Move it away or choose another "
                              "local_disk_path");
    }
    return Status::IoError("disk tier: cannot open " + path, err);
  }
  LMC_RETURN_IF_ERROR(CheckRecordsDir(fd.get(), path));
  *records_dir = std::move(fd);
  *records_path = path;
  return Status::Ok();
}

Status LockRecordsDir(int records_dir, const std::string& records_path, double timeout_s, UniqueFd* lock) {
  const std::string path = records_path + "/" + kDiskLockName;
  UniqueFd fd(openat(records_dir, kDiskLockName, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    if (errno == ELOOP) return Refuse(path, "the lock file is a symbolic link; lmcache never follows one");
    return Status::IoError("disk tier: cannot open lock file " + path, errno);
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Status::IoError("disk tier: cannot stat " + path, errno);
  if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    return Refuse(path, "the lock file is not a regular file owned by this process's user");
  }
  if ((st.st_mode & 0777) != 0600 && fchmod(fd.get(), 0600) != 0) {
    return Status::IoError("disk tier: cannot chmod " + path, errno);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) return Status::IoError("disk tier: flock on " + path, errno);
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::InvalidState("disk tier: directory " + records_path +
                                  " is in use by another lmcache process (lock " + path +
                                  " is held); give each process its own local_disk_path");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  *lock = std::move(fd);
  return Status::Ok();
}

}  // namespace lmcache
