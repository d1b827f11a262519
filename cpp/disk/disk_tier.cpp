#include "disk_tier.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace lmcache {

namespace {
constexpr const char* kRecordSuffix = ".lmc";
constexpr const char* kTempSuffix = ".tmp";
constexpr size_t kAlign = 4096;

// A name the tier writes: 32 hex digits of a key, then `suffix`.
bool IsOurName(const std::string& name, const char* suffix, ChunkKey* key) {
  const size_t n = std::strlen(suffix);
  return name.size() == 32 + n && name.compare(32, n, suffix) == 0 && ParseKeyHex(name.substr(0, 32), key);
}
}  // namespace

bool ParseKeyHex(const std::string& hex, ChunkKey* key) {
  if (hex.size() != 32 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) return false;
  key->hi = std::stoull(hex.substr(0, 16), nullptr, 16);
  key->lo = std::stoull(hex.substr(16), nullptr, 16);
  return true;
}

DiskTier::DiskTier(const DiskOptions& options) : opts_(options), lru_(MakeEvictionPolicy("lru")) {}

DiskTier::~DiskTier() = default;  // closing lock_fd_ releases the flock

Status DiskTier::Open(const DiskOptions& options, std::unique_ptr<DiskTier>* out) {
  if (options.dir.empty()) return Status::InvalidArgument("disk tier: no directory given");
  if (options.capacity_bytes < kAlign) return Status::InvalidArgument("disk tier: capacity too small");
  std::unique_ptr<DiskTier> tier(new DiskTier(options));
  LMC_RETURN_IF_ERROR(OpenRecordsDir(options.dir, &tier->dir_fd_, &tier->records_path_));
  LMC_RETURN_IF_ERROR(
      LockRecordsDir(tier->dir_fd_.get(), tier->records_path_, options.lock_timeout_s, &tier->lock_fd_));
  tier->io_ = MakeIoBackend(options.force_thread_pool, options.queue_depth, options.io_threads);
  tier->stats_.capacity_bytes = options.capacity_bytes;
  tier->Scan();
  *out = std::move(tier);
  return Status::Ok();
}

// Indexes the records found at start and removes torn writes. Only regular
// files with the tier's own names are looked at; anything else (the marker,
// the lock, files someone put there) is left alone.
void DiskTier::Scan() {
  // A dup for readdir; rewinddir because a dup shares the file position.
  DIR* d = fdopendir(fcntl(dir_fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (d == nullptr) return;
  rewinddir(d);
  struct Found {
    ChunkKey key;
    uint64_t bytes;
    int64_t mtime_ns;
  };
  std::vector<Found> found;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    ChunkKey key;
    const bool temp = IsOurName(name, kTempSuffix, &key);
    if (!temp && !IsOurName(name, kRecordSuffix, &key)) continue;
    struct stat st;
    if (fstatat(dir_fd_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (temp || st.st_size < off_t(kAlign) || st.st_size % kAlign != 0) {
      // A write that never finished, or a file that is not a whole record.
      UnlinkFile(name);
      stats_.discarded_at_start++;
      continue;
    }
    found.push_back({key, uint64_t(st.st_size), int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec});
  }
  closedir(d);
  // Oldest first, so the LRU order survives a restart (as far as mtime tells).
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.mtime_ns < b.mtime_ns; });
  std::lock_guard<std::mutex> lock(mu_);
  for (const Found& f : found) {
    records_[f.key] = f.bytes;
    lru_->OnInsert(f.key);
    used_bytes_ += f.bytes;
  }
  stats_.recovered_records = found.size();
  // A smaller capacity than last time: trim now.
  while (used_bytes_ > opts_.capacity_bytes) {
    ChunkKey victim;
    if (!lru_->PickVictim([](const ChunkKey&) { return true; }, &victim)) break;
    UnlinkFile(NameOf(victim, kRecordSuffix));
    used_bytes_ -= records_[victim];
    records_.erase(victim);
    lru_->OnErase(victim);
    stats_.evictions++;
  }
}

std::string DiskTier::NameOf(const ChunkKey& key, const char* suffix) { return key.Hex() + suffix; }

int DiskTier::OpenFile(const std::string& name, int flags) {
  const int fd = openat(dir_fd_.get(), name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, 0600);
  // O_DIRECT is set after the open, not in it: an open that creates the file
  // and then finds no O_DIRECT support would leave a file that O_EXCL then refuses.
  if (fd >= 0 && direct_io_.load() && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_DIRECT) != 0) {
    if (errno == EINVAL) {
      direct_io_.store(false);  // this filesystem has no O_DIRECT: use the page cache
    } else {
      const int err = errno;
      close(fd);
      errno = err;
      return -1;
    }
  }
  return fd;
}

void DiskTier::UnlinkFile(const std::string& name) const { unlinkat(dir_fd_.get(), name.c_str(), 0); }

bool DiskTier::Contains(const ChunkKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  return records_.count(key) != 0;
}

bool DiskTier::MakeRoom(uint64_t incoming, std::vector<std::string>* unlink_later) {
  // Called with mu_ held; the files go after the lock is released (no syscalls under it).
  if (incoming > opts_.capacity_bytes) return false;
  while (used_bytes_ + incoming > opts_.capacity_bytes) {
    ChunkKey victim;
    if (!lru_->PickVictim([](const ChunkKey&) { return true; }, &victim)) return false;
    // Unlinking while a reader has the file open is safe: the reader keeps its inode.
    unlink_later->push_back(NameOf(victim, kRecordSuffix));
    used_bytes_ -= records_[victim];
    records_.erase(victim);
    lru_->OnErase(victim);
    stats_.evictions++;
  }
  return true;
}

size_t DiskTier::WriteMany(const std::vector<DiskWrite>& writes) {
  struct Pending {
    const DiskWrite* w;
    int fd;
    std::string tmp;
  };
  std::vector<Pending> pending;
  std::vector<IoOp> ops;
  std::vector<size_t> op_owner;  // op -> pending record
  uint64_t failed = 0, enospc = 0, name_taken = 0;
  for (const DiskWrite& w : writes) {
    if (Contains(w.key)) continue;
    const std::string tmp = NameOf(w.key, kTempSuffix);
    // O_EXCL: a name that already exists (planted, or a link) is never written through.
    const int fd = OpenFile(tmp, O_WRONLY | O_CREAT | O_EXCL);
    if (fd < 0) {
      ++failed;
      enospc += errno == ENOSPC;
      name_taken += errno == EEXIST;
      continue;
    }
    pending.push_back({&w, fd, tmp});
    const size_t head = w.first_page ? std::min<size_t>(kAlign, w.bytes) : 0;
    if (head) {
      IoOp op;
      op.fd = fd;
      op.write = true;
      op.buf = const_cast<uint8_t*>(w.first_page);
      op.len = head;
      ops.push_back(op);
      op_owner.push_back(pending.size() - 1);
    }
    if (w.bytes > head) {
      IoOp op;
      op.fd = fd;
      op.write = true;
      op.buf = const_cast<uint8_t*>(w.data) + head;
      op.len = w.bytes - head;
      op.offset = head;
      ops.push_back(op);
      op_owner.push_back(pending.size() - 1);
    }
  }
  io_->Run(ops);  // no lock held during I/O
  std::vector<int> errors(pending.size(), 0);
  for (size_t o = 0; o < ops.size(); ++o) {
    if (ops[o].error && !errors[op_owner[o]]) errors[op_owner[o]] = ops[o].error;
  }

  size_t written = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < pending.size(); ++i) {
    const Pending& p = pending[i];
    int err = errors[i];
    if (close(p.fd) != 0 && err == 0) err = errno;
    if (err == 0) {
      // Room is reserved under the lock; the rename and unlinks happen outside
      // it. Only the write-behind thread writes, so no one else renames to this key.
      std::vector<std::string> victims;
      bool room;
      {
        std::lock_guard<std::mutex> lock(mu_);
        room = records_.count(p.w->key) == 0 && MakeRoom(p.w->bytes, &victims);
        if (room) used_bytes_ += p.w->bytes;
      }
      for (const std::string& v : victims) UnlinkFile(v);
      const bool renamed =
          room && renameat(dir_fd_.get(), p.tmp.c_str(), dir_fd_.get(), NameOf(p.w->key, kRecordSuffix).c_str()) == 0;
      std::lock_guard<std::mutex> lock(mu_);
      if (renamed) {
        records_[p.w->key] = p.w->bytes;
        lru_->OnInsert(p.w->key);
        ++written;
        bytes += p.w->bytes;
        continue;
      }
      if (room) used_bytes_ -= p.w->bytes;
      if (records_.count(p.w->key) == 0) ++failed;  // no room, or rename failed
    } else {
      ++failed;
      enospc += err == ENOSPC;
    }
    UnlinkFile(p.tmp);  // the temp file this call created
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.writes += written;
  stats_.write_bytes += bytes;
  stats_.write_errors += failed;
  stats_.write_enospc += enospc;
  stats_.temp_name_taken += name_taken;
  return written;
}

void DiskTier::ReadMany(std::vector<DiskRead>& reads) {
  std::vector<IoOp> ops;
  std::vector<size_t> which;
  std::vector<int> fds;
  for (size_t i = 0; i < reads.size(); ++i) {
    DiskRead& r = reads[i];
    r.bytes = 0;
    uint64_t size = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = records_.find(r.key);
      if (it == records_.end()) {
        r.status = Status::NotFound("not on disk");
        continue;
      }
      size = it->second;
      lru_->OnAccess(r.key);
    }
    if (size > r.capacity) {
      r.status = Status::Corrupt("record larger than a chunk of this cache");
      continue;
    }
    const int fd = OpenFile(NameOf(r.key, kRecordSuffix), O_RDONLY);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) {
        // Removed behind the index's back (a clear racing a rewrite, another
        // tool): forget it, so it is one miss and not a hit that never loads.
        std::lock_guard<std::mutex> lock(mu_);
        auto it = records_.find(r.key);
        if (it != records_.end()) {
          used_bytes_ -= it->second;
          records_.erase(it);
          lru_->OnErase(r.key);
        }
      }
      r.status = err == ENOENT ? Status::NotFound("record vanished") : Status::IoError("open failed", err);
      continue;
    }
    IoOp op;
    op.fd = fd;
    op.buf = r.buf;
    op.len = size;
    ops.push_back(op);
    which.push_back(i);
    fds.push_back(fd);
  }
  io_->Run(ops);
  uint64_t ok = 0, bytes = 0, errors = 0;
  for (size_t j = 0; j < ops.size(); ++j) {
    DiskRead& r = reads[which[j]];
    close(fds[j]);
    if (ops[j].error != 0) {
      r.status = Status::IoError("read of " + r.key.Hex() + " failed", ops[j].error);
      ++errors;
    } else {
      r.status = Status::Ok();
      r.bytes = ops[j].len;
      ++ok;
      bytes += ops[j].len;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.reads += ok;
  stats_.read_bytes += bytes;
  stats_.read_errors += errors;
}

void DiskTier::Remove(const ChunkKey& key, bool corrupt) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = records_.find(key);
    if (it == records_.end()) return;
    used_bytes_ -= it->second;
    records_.erase(it);
    lru_->OnErase(key);
    if (corrupt) stats_.removed_corrupt++;
  }
  UnlinkFile(NameOf(key, kRecordSuffix));
}

void DiskTier::Clear() {
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, bytes] : records_) {
      names.push_back(NameOf(key, kRecordSuffix));
      lru_->OnErase(key);
    }
    records_.clear();
    used_bytes_ = 0;
  }
  for (const std::string& n : names) UnlinkFile(n);
}

DiskStats DiskTier::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  DiskStats s = stats_;
  s.records = records_.size();
  s.used_bytes = used_bytes_;
  return s;
}

}  // namespace lmcache
