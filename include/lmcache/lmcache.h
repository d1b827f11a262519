/*
 * lmcache C API: a KV-cache layer for LLM serving engines.
 *
 * Opaque handles, status codes, no exceptions across the boundary. Every
 * function returns an lmc_status; on failure the message is kept per thread
 * and returned by lmc_last_error() until the next failing call on that thread.
 * All functions are thread-safe on the same engine.
 *
 * Typical use:
 *   lmc_config* cfg; lmc_config_create(&cfg);
 *   lmc_config_set(cfg, "model_id", "my-model");           // any config key, as text
 *   lmc_config_set(cfg, "local_disk_path", "/nvme/lmcache"); // optional: the disk tier
 *   lmc_engine* e; lmc_engine_create(cfg, &e);
 *   lmc_config_destroy(cfg);                                 // the engine keeps a copy
 *   lmc_kv_layout layout = {...};            // describe your paged KV cache
 *   lmc_engine_register_kv(e, &layout);
 *   lmc_lookup(e, tokens, n, &hit);          // leading tokens cached
 *   (or lmc_keys_compute once per request and the *_keys calls: one hash pass)
 *   lmc_load(e, tokens, n, &layout, slots, n_slots, &loaded);
 *   lmc_store(e, tokens, n, &layout, slots, n_slots, &stored);
 *   (lmc_load_begin / lmc_load_layers / lmc_load_finish: a load layer by layer;
 *    lmc_store_begin / lmc_store_finish: a store the caller does not wait for.)
 *   uint64_t hits; lmc_get_stat(e, "lookup_hit_tokens", &hits);
 *   lmc_engine_destroy(e);                   // queued disk and remote writes finish first
 */
#ifndef LMCACHE_LMCACHE_H_
#define LMCACHE_LMCACHE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LMC_API __attribute__((visibility("default")))

typedef enum {
  LMC_OK = 0,
  LMC_ERR_INVALID_ARGUMENT = 1,
  LMC_ERR_OUT_OF_MEMORY = 2,
  LMC_ERR_NOT_FOUND = 3,
  LMC_ERR_IO = 4,
  LMC_ERR_CLOSED = 5,
  LMC_ERR_CORRUPT = 6,
  LMC_ERR_INVALID_STATE = 7,
  LMC_ERR_INTERNAL = 8
} lmc_status;

typedef enum {
  LMC_DTYPE_FLOAT32 = 1,
  LMC_DTYPE_FLOAT16 = 2,
  LMC_DTYPE_BFLOAT16 = 3,
  LMC_DTYPE_FLOAT8_E4M3 = 4,
  LMC_DTYPE_FLOAT8_E5M2 = 5,
  LMC_DTYPE_UINT8 = 6
} lmc_dtype;

typedef enum {
  LMC_MEMORY_HOST = 0, /* the default, also when the field is left zero */
  LMC_MEMORY_CUDA = 1
} lmc_memory;

typedef struct lmc_config lmc_config;
typedef struct lmc_engine lmc_engine;
typedef struct lmc_pending_load lmc_pending_load;
typedef struct lmc_pending_store lmc_pending_store;
typedef struct lmc_keys lmc_keys;

/*
 * A paged KV cache. The vector of (layer l, plane p, slot s, head h) starts at
 *   layer_base[l] + p*stride_plane + (s / block_size)*stride_block
 *                 + (s % block_size)*stride_token + h*stride_head
 * and holds head_dim contiguous elements. Strides are in bytes.
 */
typedef struct {
  uint32_t num_layers;
  uint32_t num_planes;          /* 2: K and V; 1: MLA */
  uint32_t num_heads;
  uint32_t head_dim;
  lmc_dtype dtype;
  uint32_t block_size;
  uint64_t num_blocks;
  int64_t stride_plane;
  int64_t stride_block;
  int64_t stride_token;
  int64_t stride_head;
  const uint64_t* layer_base;   /* num_layers addresses */
  /* Where the cache lives: host memory, or GPU memory of CUDA device
   * cuda_device (needs a build of lmcache with CUDA; the copies then run on
   * the stream given to the *_begin calls, or the legacy default stream). */
  int32_t memory;               /* an lmc_memory (an int, so any value can be checked) */
  int32_t cuda_device;
} lmc_kv_layout;

/*
 * Configuration, by name, so that a new option never changes a struct that
 * a compiled program knows. The keys are lmcache's config keys, the same as
 * the Python Config's (and the LMCACHE_<KEY> environment variables'):
 * chunk_size, l1_capacity_gb, num_copy_threads, eviction_policy, model_id,
 * tenant_salt, verify_l1_checksums, key_scheme, local_disk_path,
 * disk_capacity_gb, disk_io_backend, disk_queue_depth, write_behind_chunks,
 * disk_lock_timeout_s, encrypt_records, remote_url, remote_timeout_s,
 * remote_codec, remote_queue_chunks, remote_tls_ca_file,
 * remote_tls_cert_file, remote_tls_key_file, auth_secret, auth_secret_file;
 * the `lmcache config` command or lmcache.Config.describe() lists them with
 * their defaults and limits. Also tp_rank and tp_size (this engine's place
 * in a tensor-parallel group).
 *
 * Values are text: "true"/"false" (or 1/0, yes/no, on/off), decimal
 * numbers, sizes in GiB ("0.5"). An unknown key or a bad value is
 * LMC_ERR_INVALID_ARGUMENT, and lmc_last_error() names the key and what is
 * allowed; the config is then unchanged. A config is for one thread at a
 * time.
 *
 * The disk tier needs only local_disk_path: an existing directory, private
 * to this user (lmcache keeps its records, and the key that seals them, in
 * a subdirectory), and a build of lmcache with OpenSSL. One engine at a
 * time per directory.
 *
 * The remote tier needs remote_url (redis://[[user]:password@]host:port[/db],
 * or rediss:// for TLS, the server's certificate and name always verified)
 * and a secret shared by every engine on the store: auth_secret_file (a file
 * of this user's, mode 600) or auth_secret, at least 16 bytes. Values are
 * sealed with a key derived from it and are the same as those of Python
 * engines; codecs none, zstd, lz4 (fp8 is for Python engines). A store that
 * is down or slow costs at most remote_timeout_s per call and is a miss;
 * the remote_* stats count what happened. Redis Cluster is not spoken here.
 */
LMC_API lmc_status lmc_config_create(lmc_config** out);
LMC_API lmc_status lmc_config_set(lmc_config* config, const char* key, const char* value);
/* NULL is accepted. */
LMC_API void lmc_config_destroy(lmc_config* config);

/* config may be NULL (every default). The engine keeps its own copy: the
 * config can be changed or destroyed afterwards. */
LMC_API lmc_status lmc_engine_create(const lmc_config* config, lmc_engine** out);
/* Waits for calls in flight and for queued disk and remote writes, then frees
 * everything. NULL is accepted. */
LMC_API void lmc_engine_destroy(lmc_engine* engine);
/* Blocks until the chunks queued for the disk and remote tiers are written. */
LMC_API lmc_status lmc_engine_flush(lmc_engine* engine);

/* Fixes the KV shape (layers, planes, heads, head_dim, dtype); required before
 * lookup/store/load. Registering again with the same shape is allowed. */
LMC_API lmc_status lmc_engine_register_kv(lmc_engine* engine, const lmc_kv_layout* layout);

/* *hit_tokens: leading tokens of tokens[0, num_tokens) that are cached. */
LMC_API lmc_status lmc_lookup(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens, size_t* hit_tokens);

/* Stores whole chunks of tokens[0, num_slots); slots[i] is token i's slot. */
LMC_API lmc_status lmc_store(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens,
                             const lmc_kv_layout* layout, const int64_t* slots, size_t num_slots,
                             size_t* stored_tokens);

/* Loads the cached prefix into the first num_slots tokens' slots (negative slots skipped). */
LMC_API lmc_status lmc_load(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens,
                            const lmc_kv_layout* layout, const int64_t* slots, size_t num_slots,
                            size_t* loaded_tokens);

/*
 * A load in steps, for engines that overlap loading layer i+1 with computing
 * layer i. lmc_load_begin holds the cached prefix (*tokens_to_load of the
 * num_slots tokens) and copies nothing; lmc_load_layers moves the layers
 * before end_layer not moved yet (host caches: done on return; CUDA caches:
 * enqueued on `stream`, a cudaStream_t, and it returns at once: record an
 * event on the stream to wait for a layer); lmc_load_finish waits for the
 * copies, releases the chunks and frees the handle (NULL accepted). Finish
 * every load, also after lmc_engine_destroy, which ends open ones.
 */
LMC_API lmc_status lmc_load_begin(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens,
                                  const lmc_kv_layout* layout, const int64_t* slots, size_t num_slots,
                                  uint64_t stream, lmc_pending_load** out, size_t* tokens_to_load);
LMC_API lmc_status lmc_load_layers(lmc_pending_load* load, uint32_t end_layer);
LMC_API lmc_status lmc_load_finish(lmc_pending_load* load);

/*
 * A store in two steps, so the engine's thread never waits for the copy:
 * lmc_store_begin reserves the new whole chunks (*tokens_to_store) and
 * starts the copy (CUDA caches: enqueued on `stream`); the slots must not be
 * overwritten until the copy is done. lmc_store_finish (any thread) waits
 * for it, publishes the chunks (lookups see them from then on), reports
 * *stored_tokens (may be NULL) and frees the handle (NULL accepted).
 */
LMC_API lmc_status lmc_store_begin(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens,
                                   const lmc_kv_layout* layout, const int64_t* slots, size_t num_slots,
                                   uint64_t stream, lmc_pending_store** out, size_t* tokens_to_store);
LMC_API lmc_status lmc_store_finish(lmc_pending_store* store, size_t* stored_tokens);

/*
 * Keys once per request. The calls above hash the tokens they are given,
 * each time. An engine that looks up, loads and stores the same request
 * computes its chunk keys once (lmc_keys_compute: one pass over the tokens,
 * in the configured key_scheme; or lmc_keys_from_ids for engines that name
 * their chunks themselves, one chunk per id) and passes them to the *_keys
 * calls, which behave as their token twins with the request's keys. Keys
 * belong to the engine that made them; lmc_keys_destroy frees them (NULL
 * accepted). A store with keys stores chunk c = 0 .. num_slots/chunk_size-1.
 */
LMC_API lmc_status lmc_keys_compute(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens, lmc_keys** out);
LMC_API lmc_status lmc_keys_from_ids(lmc_engine* engine, const char* const* ids, size_t num_ids, lmc_keys** out);
LMC_API size_t lmc_keys_count(const lmc_keys* keys);
LMC_API void lmc_keys_destroy(lmc_keys* keys);
LMC_API lmc_status lmc_lookup_keys(lmc_engine* engine, const lmc_keys* keys, size_t* hit_tokens);
LMC_API lmc_status lmc_load_begin_keys(lmc_engine* engine, const lmc_keys* keys, const lmc_kv_layout* layout,
                                       const int64_t* slots, size_t num_slots, uint64_t stream,
                                       lmc_pending_load** out, size_t* tokens_to_load);
LMC_API lmc_status lmc_store_begin_keys(lmc_engine* engine, const lmc_keys* keys, const lmc_kv_layout* layout,
                                        const int64_t* slots, size_t num_slots, uint64_t stream,
                                        lmc_pending_store** out, size_t* tokens_to_store);

/*
 * Stats, by name: counters (lookups, lookup_hit_tokens, stored_chunks,
 * loaded_tokens, l1_used_bytes, ...), disk_enabled (0 or 1) and, with the
 * disk tier, its counters (disk_reads, disk_writes, promoted_chunks, ...).
 * A tier's counters read 0 while it is off. lmc_stat_name(i) for
 * i < lmc_stats_count() lists them all (NULL past the end); the order may
 * change between versions, the names do not. An unknown name is
 * LMC_ERR_NOT_FOUND.
 */
LMC_API size_t lmc_stats_count(void);
LMC_API const char* lmc_stat_name(size_t index);
LMC_API lmc_status lmc_get_stat(lmc_engine* engine, const char* name, uint64_t* value);
/* All of them from one snapshot: values[i] is stat lmc_stat_name(i), for
 * i < count (count may be below lmc_stats_count(); above it, the rest is 0). */
LMC_API lmc_status lmc_get_stats(lmc_engine* engine, uint64_t* values, size_t count);

/* Message of the last failing call on this thread ("" if none). Valid until
 * the next lmcache call on this thread. */
LMC_API const char* lmc_last_error(void);
LMC_API const char* lmc_status_name(lmc_status status);

#ifdef __cplusplus
}
#endif

#endif /* LMCACHE_LMCACHE_H_ */
