// L2: the local disk tier. One file per chunk record (header + payload,
// padded to 4096 bytes), written and read with O_DIRECT through an IoBackend
// (io_uring, or a thread pool as fallback).
//
// Where: everything lives in lmcache's private subdirectory of the user's
// directory, "<dir>/lmcache-records" (0700, files 0600; see disk_dir.h for
// the checks that make it safe on a shared host). Every file is opened
// relative to that directory's fd, never through a symbolic link, and temp
// files are created exclusively: a planted name fails that write (counted),
// it is never followed. Nothing outside the subdirectory is ever touched.
//
// Crash safety: a record is written to "<key>.tmp", then renamed to
// "<key>.lmc"; rename is atomic, so after a crash (kill -9 included) a .lmc
// file is always a whole record and .tmp files are leftovers, removed at
// start (only regular files with lmcache's own names, inside the marked
// subdirectory). Readers still verify the header and checksum (bit rot,
// truncation by other tools): a bad record is removed and is a miss.
//
// Sharing: one process owns a directory at a time (flock on
// "<dir>/lmcache-records/.lock"); a second one waits up to lock_timeout_s,
// then fails naming the lock.
//
// Capacity: the sum of record sizes stays under capacity_bytes by evicting
// least recently used records. Every I/O failure (ENOSPC included) is a miss
// and a counter, never an exception to the engine.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "chunk_key.h"
#include "disk_dir.h"
#include "eviction.h"
#include "io_backend.h"
#include "status.h"

namespace lmcache {

struct DiskOptions {
  std::string dir;
  uint64_t capacity_bytes = 0;
  bool force_thread_pool = false;  // skip io_uring
  int queue_depth = 32;
  int io_threads = 4;
  double lock_timeout_s = 10.0;
};

struct DiskStats {
  uint64_t records = 0;
  uint64_t used_bytes = 0;
  uint64_t capacity_bytes = 0;
  uint64_t reads = 0;
  uint64_t read_bytes = 0;
  uint64_t read_errors = 0;     // I/O errors and records that vanished
  uint64_t writes = 0;
  uint64_t write_bytes = 0;
  uint64_t write_errors = 0;    // all failed writes (ENOSPC included)
  uint64_t write_enospc = 0;
  uint64_t evictions = 0;
  uint64_t removed_corrupt = 0;
  uint64_t recovered_records = 0;  // found at start
  uint64_t discarded_at_start = 0; // torn or misnamed files removed at start
  uint64_t temp_name_taken = 0;    // writes dropped: their temp name already existed (never followed)
};

// One record to write: `data` is aligned to 4096 and `bytes` is a multiple of 4096.
// With `first_page` (aligned, 4096 bytes), the first page comes from there
// instead of `data` (a record whose header is sealed in a copy).
struct DiskWrite {
  ChunkKey key;
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  const uint8_t* first_page = nullptr;
};

// One record to read into `buf` (aligned, `capacity` bytes). Out: `bytes`
// read and `status` (kNotFound: absent or vanished; kIoError).
struct DiskRead {
  ChunkKey key;
  uint8_t* buf = nullptr;
  size_t capacity = 0;
  size_t bytes = 0;
  Status status;
};

class DiskTier {
 public:
  static Status Open(const DiskOptions& options, std::unique_ptr<DiskTier>* out);
  ~DiskTier();

  bool Contains(const ChunkKey& key) const;
  // Writes records (those already present are skipped). Failures are counted
  // and leave no file behind; the return value is how many were written.
  size_t WriteMany(const std::vector<DiskWrite>& writes);
  void ReadMany(std::vector<DiskRead>& reads);
  // Removes a record (e.g. one that failed its checksum).
  void Remove(const ChunkKey& key, bool corrupt);
  void Clear();

  DiskStats Stats() const;
  const char* backend_name() const { return io_->name(); }
  bool direct_io() const { return direct_io_.load(); }
  const std::string& dir() const { return opts_.dir; }
  // "<dir>/lmcache-records": where the records and the lock are.
  const std::string& records_dir() const { return records_path_; }
  // The records directory, open: for files of lmcache's own kept beside the records (the record key).
  int dir_fd() const { return dir_fd_.get(); }

 private:
  explicit DiskTier(const DiskOptions& options);
  void Scan();
  // The file name (in the records directory) of a key's record or temp file.
  static std::string NameOf(const ChunkKey& key, const char* suffix);
  // openat in the records directory, never through a symbolic link; O_DIRECT when the filesystem has it.
  int OpenFile(const std::string& name, int flags);
  void UnlinkFile(const std::string& name) const;
  // Evicts LRU records until `incoming` more bytes fit (their file names are added
  // to `unlink_later`, for the caller to delete without the lock). False if impossible.
  bool MakeRoom(uint64_t incoming, std::vector<std::string>* unlink_later);

  const DiskOptions opts_;
  std::string records_path_;
  UniqueFd dir_fd_;   // the records directory; every file operation is relative to it
  UniqueFd lock_fd_;  // holds the flock while open
  std::unique_ptr<IoBackend> io_;
  std::atomic<bool> direct_io_{true};

  mutable std::mutex mu_;
  std::unordered_map<ChunkKey, uint64_t, ChunkKeyHasher> records_;  // key -> bytes; guarded by mu_
  std::unique_ptr<EvictionPolicy> lru_;                              // guarded by mu_
  uint64_t used_bytes_ = 0;                                          // guarded by mu_
  DiskStats stats_;                                                  // guarded by mu_
};

// Parses the 32-hex-digit name of a record; false if it is not one.
bool ParseKeyHex(const std::string& hex, ChunkKey* key);

}  // namespace lmcache
