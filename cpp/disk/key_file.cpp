#include "key_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <openssl/rand.h>

namespace lmcache {

namespace {

Status ReadAll(int fd, size_t bytes, std::string* out) {
  out->assign(bytes, '\0');
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = read(fd, out->data() + done, bytes - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::IoError("short read of the record key file", n < 0 ? errno : 0);
    done += size_t(n);
  }
  return Status::Ok();
}

Status WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::IoError("cannot write the record key file", n < 0 ? errno : 0);
    done += size_t(n);
  }
  return fsync(fd) == 0 ? Status::Ok() : Status::IoError("cannot sync the record key file", errno);
}

Status ReadExisting(int dir_fd, const char* name, size_t bytes, std::string* key) {
  const int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Status::IoError(std::string("cannot open the record key file ") + name, errno);
  struct stat st;
  Status s = fstat(fd, &st) == 0 ? Status::Ok() : Status::IoError("cannot stat the record key file", errno);
  if (s.ok() && (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0 ||
                 size_t(st.st_size) != bytes)) {
    s = Status::InvalidArgument(std::string("refusing the record key file ") + name +
                                ": it must be a regular file of this user, mode 0600, of " + std::to_string(bytes) +
                                " bytes");
  }
  if (s.ok()) s = ReadAll(fd, bytes, key);
  close(fd);
  return s;
}

}  // namespace

Status LoadOrCreateKeyFile(int dir_fd, const char* name, size_t bytes, std::string* key) {
  if (ReadExisting(dir_fd, name, bytes, key).ok()) return Status::Ok();
  struct stat st;
  if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) return ReadExisting(dir_fd, name, bytes, key);  // its error
  // Written whole under a temporary name, then linked into place: a crash
  // never leaves a short key behind, and linkat never replaces a file.
  const std::string tmp = std::string(name) + ".new";
  unlinkat(dir_fd, tmp.c_str(), 0);  // a leftover of ours (the directory is private)
  const int fd = openat(dir_fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Status::IoError("cannot create the record key file " + tmp, errno);
  std::string fresh(bytes, '\0');
  Status s = RAND_bytes(reinterpret_cast<unsigned char*>(fresh.data()), int(bytes)) == 1
                 ? Status::Ok()
                 : Status::IoError("no random bytes for the record key");
  if (s.ok()) s = WriteAll(fd, fresh);
  close(fd);
  if (s.ok() && linkat(dir_fd, tmp.c_str(), dir_fd, name, 0) != 0) {
    s = errno == EEXIST ? ReadExisting(dir_fd, name, bytes, &fresh)
                        : Status::IoError(std::string("cannot create the record key file ") + name, errno);
  }
  unlinkat(dir_fd, tmp.c_str(), 0);
  if (s.ok()) *key = std::move(fresh);
  return s;
}

}  // namespace lmcache
