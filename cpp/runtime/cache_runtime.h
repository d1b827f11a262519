// The native runtime behind lmcache.CacheEngine and the C API: chunk keys,
// the index, the host-memory tier (L1) and the copy engine, tied together.
//
// Thread-safety: every public method may be called from any thread at any
// time. Close() waits for calls in flight and makes later calls fail with
// kClosed. No lock is held while data is copied.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "chunk_format.h"
#include "chunk_key.h"
#include "copy_engine.h"
#include "device_copy.h"
#include "disk_tier.h"
#include "host_pool.h"
#include "index.h"
#include "key_queue.h"
#include "kv_layout.h"
#include "record_seal.h"
#include "remote_tier.h"
#include "runtime_options.h"  // RuntimeOptions
#include "runtime_stats.h"    // RuntimeStats
#include "status.h"
#include "thread_pool.h"

namespace lmcache {

// What the KV cache stores per token: fixes the key namespace and slab size.
struct KVShape {
  uint32_t num_layers = 0;
  uint32_t num_planes = 2;
  uint32_t num_heads = 0;
  uint32_t head_dim = 0;
  DType dtype = DType::kBFloat16;
  // 0: payload is token-major; N > 0: payload keeps whole engine blocks of N
  // tokens in the engine's own arrangement (KVLayout::opaque_block_bytes).
  uint32_t opaque_block_size = 0;

  static KVShape Of(const KVLayout& l) {
    return {l.num_layers, l.num_planes, l.num_heads, l.head_dim, l.dtype, l.opaque_blocks() ? l.block_size : 0};
  }
  bool operator==(const KVShape& o) const {
    return num_layers == o.num_layers && num_planes == o.num_planes && num_heads == o.num_heads &&
           head_dim == o.head_dim && dtype == o.dtype && opaque_block_size == o.opaque_block_size;
  }
  std::string ToString() const;
};

class CacheRuntime;

// A load that moves in steps, so that an engine can compute layer i while
// layer i+1 is still arriving. CacheRuntime::BeginLoad takes references on
// the cached prefix (reading chunks found only on disk into L1 first) and
// checks every record; LoadLayers moves the next layers; Finish waits for
// the device copies and gives the references back. Referenced chunks are
// never evicted, so what BeginLoad found is what arrives.
//
// One thread at a time per handle. Close() (and so the runtime's
// destructor) finishes the handles still open: their later calls fail with
// kClosed, and they may then outlive the runtime.
class PendingLoad {
 public:
  ~PendingLoad();
  PendingLoad(const PendingLoad&) = delete;
  PendingLoad& operator=(const PendingLoad&) = delete;

  // Leading tokens (<= num_slots) this load delivers once every layer has moved.
  size_t tokens() const { return tokens_; }
  uint32_t num_layers() const { return layout_.num_layers; }
  // Layers moved (CPU) or enqueued (GPU) so far.
  uint32_t layers_done() const { return layers_done_; }

  // Moves layers [layers_done(), end_layer), end_layer clamped to num_layers().
  // CPU caches: the copy is done on return. GPU caches: enqueued on the
  // stream given to BeginLoad, and this returns at once (record an event on
  // that stream to know when). A failed device launch fails the whole load.
  Status LoadLayers(uint32_t end_layer);
  // Waits for device copies still in flight and releases the chunks. After
  // it, the load's tokens are in the engine cache if every layer moved.
  // Idempotent.
  Status Finish();

 private:
  friend class CacheRuntime;
  explicit PendingLoad(CacheRuntime* rt) : rt_(rt) {}

  CacheRuntime* rt_;
  KVLayout layout_;
  uint64_t stream_ = 0;
  std::vector<ChunkKey> held_;             // chunks referenced, in order
  std::vector<int64_t> slots_;             // the caller's slot mapping, copied
  std::vector<ChunkTransfer> transfers_;   // one per held chunk
  std::unique_ptr<DeviceBatch> device_batch_;
  size_t tokens_ = 0;
  uint32_t layers_done_ = 0;
  bool failed_ = false;
  bool closed_ = false;                // finished by Close (written before finished_)
  std::atomic<bool> finished_{false};  // set once; Close may set it from another thread
  std::mutex mu_;
};

// A store in two steps, so that a GPU engine's thread never waits for the
// copy: CacheRuntime::BeginStore reserves the chunks and starts the copy
// (GPU caches: enqueued on the stream; CPU caches: done on return); Finish
// waits for the copy and publishes the chunks. Until then lookups do not
// see them, and another store of the same chunks skips them. The engine
// must not overwrite the cache slots being stored before the copy is done
// (on a GPU: until the stream has passed the copy).
//
// Same rules as PendingLoad: one thread at a time; Close() finishes open
// stores by giving their reservations back, and they may then outlive the runtime.
class PendingStore {
 public:
  ~PendingStore();
  PendingStore(const PendingStore&) = delete;
  PendingStore& operator=(const PendingStore&) = delete;

  // Tokens that this store adds once finished (whole chunks, not cached before).
  size_t tokens() const { return transfers_.size() * chunk_size_; }
  // Waits for the copy, then publishes the chunks (and queues them for the
  // disk tier). A failed copy gives the reservations back and is returned.
  // Idempotent.
  Status Finish();

 private:
  friend class CacheRuntime;
  explicit PendingStore(CacheRuntime* rt) : rt_(rt) {}

  CacheRuntime* rt_;
  KVLayout layout_;
  uint64_t stream_ = 0;
  uint32_t chunk_size_ = 0;
  std::vector<ChunkKey> reserved_;        // one per transfer
  std::vector<ChunkTransfer> transfers_;  // payloads in the host pool (slots no longer used)
  std::vector<uint64_t> checksums_;       // one per transfer, when computed
  std::unique_ptr<DeviceBatch> device_batch_;
  Status copied_;                         // a launch that failed
  std::atomic<bool> finished_{false};
  std::mutex mu_;
};

class CacheRuntime {
 public:
  static Status Create(const RuntimeOptions& options, std::unique_ptr<CacheRuntime>* out);
  ~CacheRuntime();

  // Fixes the per-token KV shape (and so the key namespace and the slab size).
  // Idempotent for the same shape; a different shape is an error.
  Status SetShape(const KVShape& shape);
  // Validates a layout and fixes its shape (SetShape). Pointers are not kept:
  // every Store/Load passes the layout it wants to use.
  Status RegisterLayout(const KVLayout& layout);

  // Every operation below is addressed by chunk keys. A request's keys are
  // computed once (ComputeKeys, or KeysFromIds for engines that name chunks
  // themselves) and then serve its lookup, load and store, and the tiers
  // behind them. token_calls.h has the token-addressed helpers.

  // Keys of the whole chunks of tokens[0, n) in this runtime's key scheme
  // (lmcache: the XXH3-128 chain; sglang: SGLang's SHA-256 page names): one
  // pass over the tokens, counted in stats (hash_passes, hashed_tokens).
  Status ComputeKeys(const uint32_t* tokens, size_t n, std::vector<ChunkKey>* keys);
  // Maps chunk names an engine gives (SGLang hands over page hashes, not
  // tokens) into this runtime's namespace, one chunk per name.
  Status KeysFromIds(const std::vector<std::string>& ids, std::vector<ChunkKey>* keys);

  // Number of leading keys whose chunks are cached (host memory or disk;
  // chunks found only on disk start moving to host memory now).
  Status Lookup(const std::vector<ChunkKey>& keys, size_t* hit_chunks);

  // Stores chunk c = 0 .. num_slots / chunk_size - 1 (keys[c]; whole chunks
  // only) from `layout`: slots[i] is token i's slot. Chunks with a negative
  // slot, already cached, or being stored by another call are skipped; those
  // that find no space are dropped and counted. In two steps (PendingStore):
  // with a GPU cache (layout.device >= 0) the copy is enqueued on `stream` (a
  // cudaStream_t) and this returns at once.
  Status BeginStore(const std::vector<ChunkKey>& keys, const KVLayout& layout, const int64_t* slots,
                    size_t num_slots, uint64_t stream, std::unique_ptr<PendingStore>* out);

  // Loads the cached prefix of `keys` into the first num_slots tokens' slots
  // of `layout` (slots past the keys' chunks stay untouched); tokens with a
  // negative slot are skipped. In steps (PendingLoad), for layer-by-layer loading; the slot
  // mapping is copied; `stream` carries every device copy of the load. A
  // chunk that vanished or failed validation ends the prefix there (never
  // wrong data).
  Status BeginLoad(const std::vector<ChunkKey>& keys, const KVLayout& layout, const int64_t* slots,
                   size_t num_slots, uint64_t stream, std::unique_ptr<PendingLoad>* out);

  // Pin / unpin the cached chunks of a prefix of keys; *count: chunks affected.
  Status Pin(const std::vector<ChunkKey>& keys, size_t* count);
  Status Unpin(const std::vector<ChunkKey>& keys, size_t* count);

  // Drops every chunk not in use or pinned, from L1 and (include_disk) from disk.
  Status Clear(size_t* removed, bool include_disk = true);

  // Operator calls (the control API), never on an engine's hot path.
  // Locate: how many leading keys each tier holds on its own, without
  // touching anything (no prefetch, no eviction bookkeeping, no stats).
  // any: the leading keys some tier holds (what Lookup would find).
  struct TierPrefixes {
    size_t host = 0, disk = 0, remote = 0, any = 0;
  };
  Status Locate(const std::vector<ChunkKey>& keys, TierPrefixes* out);
  // Brings the cached prefix of `keys` into host memory now (disk reads and
  // remote fetches done before returning); *host_chunks: leading keys in
  // host memory afterwards.
  Status Prefetch(const std::vector<ChunkKey>& keys, size_t* host_chunks);
  // Drops the given chunks from host memory (and, include_disk, from disk);
  // chunks in use or pinned stay. *removed: records removed.
  Status Evict(const std::vector<ChunkKey>& keys, bool include_disk, size_t* removed);

  // The node server's calls (l1_shared_memory): engines in other processes
  // map the host pool and copy records themselves; the runtime keeps the
  // index, the references and the other tiers (cache_runtime_shared.cpp).
  // SharedPool: the pool's memory file and geometry.
  Status SharedPool(int* fd, size_t* region_bytes, size_t* slab_bytes) const;
  // Holds the cached prefix of `keys` (at most max_chunks; disk and remote
  // chunks brought into host memory first) and gives each held chunk's slab.
  // Every chunk given stays referenced (never evicted) until ReleaseHeld.
  Status HoldPrefix(const std::vector<ChunkKey>& keys, size_t max_chunks, std::vector<int64_t>* slabs);
  Status ReleaseHeld(const std::vector<ChunkKey>& keys);
  // Reserves a slab for each key not cached yet (-1: cached, being written,
  // or no room) for a writer in another process; CommitWritten checks each
  // record it wrote (header, key, checksum) and publishes it, or drops it;
  // AbortWritten gives reservations back (a writer that failed or died).
  Status ReserveForWrite(const std::vector<ChunkKey>& keys, std::vector<int64_t>* slabs);
  Status CommitWritten(const std::vector<ChunkKey>& keys, const std::vector<int64_t>& slabs, size_t* published);
  Status AbortWritten(const std::vector<ChunkKey>& keys, const std::vector<int64_t>& slabs);
  // Blocks until queued writes have reached the disk and remote tiers (tests, clean shutdown).
  void FlushWrites();

  // Plugs the remote tier's client in (remote_tier.h): from then on
  // lookups, loads and stores walk it too. `queue_chunks` bounds the chunks
  // waiting to be written to it. Once, before any other call; the runtime
  // keeps the client until it is destroyed, and Close() first lets the
  // queued writes finish.
  Status SetRemoteTier(std::shared_ptr<RemoteTier> tier, uint32_t queue_chunks);
  bool has_remote() const { return has_remote_.load(std::memory_order_acquire); }
  // Counts what the remote client saw (`stat`: a remote_* row of runtime_stats.def).
  Status CountRemote(std::string_view stat, uint64_t n);
  // Record exchange with the remote tier's client. Export copies a cached
  // chunk's record (header + payload) out of L1 into `dst` (RecordBytes() of
  // room); kNotFound when it is not there. Import checks a record (header,
  // key, shape, checksum) and puts it in L1 (and queues it for the disk
  // tier); a bad record is kCorrupt and counted as a load error, no room is
  // kOutOfMemory. Neither ever blocks on another tier.
  Status ExportRecord(const ChunkKey& key, uint8_t* dst, size_t capacity, size_t* bytes);
  Status ImportRecord(const ChunkKey& key, const uint8_t* record, size_t bytes);
  // Bytes of one stored record (0 before the shape is known).
  size_t RecordBytes() const;

  // Test hook: flips one payload byte of a cached chunk, as a stray write or
  // bit rot would. kNotFound when absent.
  Status CorruptChunkForTesting(const ChunkKey& key);
  // Test hook: removes a cached chunk as eviction would. kNotFound when absent or in use.
  Status DropChunkForTesting(const ChunkKey& key);

  RuntimeStats Stats() const;
  uint32_t chunk_size() const { return options_.chunk_size; }
  const RuntimeOptions& options() const { return options_; }
  bool closed() const { return closed_.load(); }
  // True in the child of a fork() made after this runtime: every call fails
  // there, and its owner must leak it rather than destroy it (its threads do
  // not exist in the child, so joining them would hang).
  bool InForkedChild() const;
  // "io_uring" or "threads", with " (buffered)" when the filesystem has no O_DIRECT; "" without a disk tier.
  std::string disk_backend() const {
    std::shared_lock<std::shared_mutex> lifecycle(lifecycle_);  // Close resets disk_
    if (!disk_) return "";
    return std::string(disk_->backend_name()) + (disk_->direct_io() ? "" : " (buffered)");
  }
  void Close();

 private:
  friend class PendingLoad;
  friend class PendingStore;
  explicit CacheRuntime(const RuntimeOptions& options);
  Status CheckLayout(const KVLayout& layout) const;
  Status CheckHasShape() const;
  // Lookup's host-memory and disk part.
  Status LookupLocal(const std::vector<ChunkKey>& keys, size_t* hit_chunks);
  // The remote tier's part of the walk (cache_runtime_remote.cpp); called with no lock held.
  size_t RemoteCountPrefix(const std::vector<ChunkKey>& keys, size_t from);
  Status LocalPrefix(const std::vector<ChunkKey>& keys, size_t wanted, size_t* local, size_t* capacity_chunks);
  void FetchRemotePart(const std::vector<ChunkKey>& keys, size_t num_slots);
  void QueueRemoteWrites(const std::vector<ChunkKey>& keys, size_t count);
  // Publishes (or, without `publish`, gives back) a store's chunks (LMC_ENTER held).
  Status FinishStore(PendingStore* store, bool publish);
  // PendingLoad's bodies (LMC_ENTER and the load's mutex held).
  Status LoadLayersOf(PendingLoad* load, uint32_t end_layer);
  Status ReleaseLoad(PendingLoad* load);
  Status CheckDeviceReady() const;
  int64_t AllocateSlab();
  void FreeEntry(const Entry& e);
  ChunkShape StoredShape() const;
  // Takes a slab (evicting if need be) and reserves `key` on it for a writer.
  enum class SlabReservation { kReserved, kSkipped, kNoRoom };
  SlabReservation ReserveSlab(const ChunkKey& key, const ChunkShape& shape, int64_t* slab);
  // References the leading chunks of keys[0, wanted) that some local tier
  // holds (disk ones read into host memory first); held[c].ready for each
  // chunk referenced; *prefix: chunks up to the first that no tier has.
  void AcquireLocalPrefix(const std::vector<ChunkKey>& keys, size_t wanted, std::vector<Entry>* held,
                          size_t* prefix);
  // Reads disk records into L1 (verifying header and checksum; a bad record
  // is deleted). With `held`, every chunk that ends up in L1 is also
  // acquired and its entry returned (ready == false: not available).
  void PromoteFromDisk(const std::vector<ChunkKey>& keys, std::vector<Entry>* held);
  void WriteBehind(const std::vector<ChunkKey>& keys);
  // A record in host memory failed its checksum on the way out: drop it, count it.
  void DropCorruptL1Record(const ChunkKey& key);

  const RuntimeOptions options_;
  const uint64_t fork_generation_;       // ForkGeneration() when created; a child of a fork may not use it
  mutable std::shared_mutex lifecycle_;  // shared: calls in flight; exclusive: Close
  std::atomic<bool> closed_{false};

  mutable std::mutex shape_mu_;
  std::atomic<bool> has_shape_{false};  // set once (release) after shape_, seed_, pool_
  KVShape shape_;
  ChunkKey seed_;
  std::unique_ptr<HostPool> pool_;
  bool sglang_keys_ = false;  // key_scheme == "sglang"

  ThreadPool threads_;
  CopyEngine copy_;
  std::unique_ptr<DeviceCopier> device_;  // nullptr in a CPU-only build
  Index index_;

  std::mutex loads_mu_;
  std::unordered_set<PendingLoad*> open_loads_;    // guarded by loads_mu_; Close finishes them
  std::unordered_set<PendingStore*> open_stores_;  // likewise

  std::mutex close_mu_;
  std::unique_ptr<DiskTier> disk_;
  std::unique_ptr<RecordSealer> sealer_;    // seals disk records; set with disk_
  std::unique_ptr<KeyQueue> write_behind_;  // L1 -> disk
  std::unique_ptr<KeyQueue> prefetch_;      // disk -> L1, issued at lookup

  static constexpr size_t kRemotePutBatch = 8;   // chunks per Put call
  std::shared_ptr<RemoteTier> remote_;           // set once (SetRemoteTier), then read without a lock
  std::unique_ptr<KeyQueue> remote_writes_;      // L1 -> remote
  std::atomic<bool> has_remote_{false};          // set (release) after the two above

  mutable std::mutex stats_mu_;
  RuntimeStats stats_;  // guarded by stats_mu_ (pool gauges filled in by Stats())
};

}  // namespace lmcache
