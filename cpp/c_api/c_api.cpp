// C API over CacheRuntime (include/lmcache/lmcache.h). No exception may cross
// this boundary: every entry point catches and turns it into a status.
#include "lmcache/lmcache.h"

#include <exception>
#include <memory>
#include <new>
#include <string>

#include "cache_runtime.h"

struct lmc_engine {
  std::unique_ptr<lmcache::CacheRuntime> runtime;
};

struct lmc_pending_load {
  std::unique_ptr<lmcache::PendingLoad> load;
};

struct lmc_pending_store {
  std::unique_ptr<lmcache::PendingStore> store;
};

namespace {

thread_local std::string g_last_error;

lmc_status Report(const lmcache::Status& st) {
  if (st.ok()) return LMC_OK;
  g_last_error = st.ToString();
  return static_cast<lmc_status>(st.code());
}

lmc_status ReportInvalid(const char* what) {
  return Report(lmcache::Status::InvalidArgument(what));
}

template <typename Fn>
lmc_status Guard(Fn&& fn) {
  try {
    return Report(fn());
  } catch (const std::bad_alloc&) {
    return Report(lmcache::Status::OutOfMemory("allocation failed"));
  } catch (const std::exception& e) {
    return Report(lmcache::Status::Internal(e.what()));
  } catch (...) {
    return Report(lmcache::Status::Internal("unknown exception"));
  }
}

lmcache::Status ToLayout(const lmc_kv_layout* in, lmcache::KVLayout* out) {
  if (in == nullptr) return lmcache::Status::InvalidArgument("layout is NULL");
  if (in->layer_base == nullptr) return lmcache::Status::InvalidArgument("layout.layer_base is NULL");
  out->num_layers = in->num_layers;
  out->num_planes = in->num_planes;
  out->num_heads = in->num_heads;
  out->head_dim = in->head_dim;
  out->dtype = static_cast<lmcache::DType>(in->dtype);
  out->block_size = in->block_size;
  out->num_blocks = in->num_blocks;
  out->stride_plane = in->stride_plane;
  out->stride_block = in->stride_block;
  out->stride_token = in->stride_token;
  out->stride_head = in->stride_head;
  out->layer_base.assign(in->layer_base, in->layer_base + in->num_layers);
  if (in->memory == LMC_MEMORY_CUDA) {
    if (in->cuda_device < 0) return lmcache::Status::InvalidArgument("layout.cuda_device must be >= 0");
    out->device = in->cuda_device;
  } else if (in->memory != LMC_MEMORY_HOST) {
    return lmcache::Status::InvalidArgument("layout.memory must be LMC_MEMORY_HOST or LMC_MEMORY_CUDA");
  }
  return out->Validate();
}

}  // namespace

extern "C" {

void lmc_config_init(lmc_config* c) {
  if (c == nullptr) return;
  const lmcache::RuntimeOptions d;
  c->chunk_size = d.chunk_size;
  c->l1_capacity_bytes = d.l1_capacity_bytes;
  c->num_threads = d.num_threads;
  c->model_id = nullptr;
  c->tenant_salt = nullptr;
  c->tp_rank = d.tp_rank;
  c->tp_size = d.tp_size;
}

lmc_status lmc_engine_create(const lmc_config* config, lmc_engine** out) {
  if (config == nullptr || out == nullptr) return ReportInvalid("config and out must not be NULL");
  *out = nullptr;
  return Guard([&] {
    lmcache::RuntimeOptions o;
    o.chunk_size = config->chunk_size;
    o.l1_capacity_bytes = config->l1_capacity_bytes;
    o.num_threads = config->num_threads;
    o.model_id = config->model_id ? config->model_id : "";
    o.tenant_salt = config->tenant_salt ? config->tenant_salt : "";
    o.tp_rank = config->tp_rank;
    o.tp_size = config->tp_size;
    auto engine = std::make_unique<lmc_engine>();
    LMC_RETURN_IF_ERROR(lmcache::CacheRuntime::Create(o, &engine->runtime));
    *out = engine.release();
    return lmcache::Status::Ok();
  });
}

void lmc_engine_destroy(lmc_engine* engine) {
  // In the child of a fork the runtime is the parent's: leaked, never torn down (see InForkedChild).
  if (engine && engine->runtime && engine->runtime->InForkedChild()) (void)engine->runtime.release();
  delete engine;
}

lmc_status lmc_engine_register_kv(lmc_engine* engine, const lmc_kv_layout* layout) {
  if (engine == nullptr) return ReportInvalid("engine is NULL");
  return Guard([&] {
    lmcache::KVLayout l;
    LMC_RETURN_IF_ERROR(ToLayout(layout, &l));
    return engine->runtime->RegisterLayout(l);
  });
}

lmc_status lmc_lookup(lmc_engine* engine, const uint32_t* tokens, size_t n, size_t* hit_tokens) {
  if (engine == nullptr || hit_tokens == nullptr) return ReportInvalid("engine and hit_tokens must not be NULL");
  return Guard([&] { return engine->runtime->Lookup(tokens, n, hit_tokens); });
}

lmc_status lmc_store(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens, const lmc_kv_layout* layout,
                     const int64_t* slots, size_t num_slots, size_t* stored_tokens) {
  if (engine == nullptr || stored_tokens == nullptr) return ReportInvalid("engine and stored_tokens must not be NULL");
  return Guard([&] {
    lmcache::KVLayout l;
    LMC_RETURN_IF_ERROR(ToLayout(layout, &l));
    return engine->runtime->Store(tokens, num_tokens, l, slots, num_slots, stored_tokens);
  });
}

lmc_status lmc_load(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens, const lmc_kv_layout* layout,
                    const int64_t* slots, size_t num_slots, size_t* loaded_tokens) {
  if (engine == nullptr || loaded_tokens == nullptr) return ReportInvalid("engine and loaded_tokens must not be NULL");
  return Guard([&] {
    lmcache::KVLayout l;
    LMC_RETURN_IF_ERROR(ToLayout(layout, &l));
    return engine->runtime->Load(tokens, num_tokens, l, slots, num_slots, loaded_tokens);
  });
}

lmc_status lmc_load_begin(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens, const lmc_kv_layout* layout,
                          const int64_t* slots, size_t num_slots, uint64_t stream, lmc_pending_load** out,
                          size_t* tokens_to_load) {
  if (engine == nullptr || out == nullptr || tokens_to_load == nullptr) {
    return ReportInvalid("engine, out and tokens_to_load must not be NULL");
  }
  *out = nullptr;
  *tokens_to_load = 0;
  return Guard([&] {
    lmcache::KVLayout l;
    LMC_RETURN_IF_ERROR(ToLayout(layout, &l));
    auto handle = std::make_unique<lmc_pending_load>();
    LMC_RETURN_IF_ERROR(engine->runtime->BeginLoad(tokens, num_tokens, l, slots, num_slots, stream, &handle->load));
    *tokens_to_load = handle->load->tokens();
    *out = handle.release();
    return lmcache::Status::Ok();
  });
}

lmc_status lmc_load_layers(lmc_pending_load* load, uint32_t end_layer) {
  if (load == nullptr) return ReportInvalid("load is NULL");
  return Guard([&] { return load->load->LoadLayers(end_layer); });
}

lmc_status lmc_load_finish(lmc_pending_load* load) {
  if (load == nullptr) return LMC_OK;
  std::unique_ptr<lmc_pending_load> owned(load);
  return Guard([&] { return owned->load->Finish(); });
}

lmc_status lmc_store_begin(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens, const lmc_kv_layout* layout,
                           const int64_t* slots, size_t num_slots, uint64_t stream, lmc_pending_store** out,
                           size_t* tokens_to_store) {
  if (engine == nullptr || out == nullptr || tokens_to_store == nullptr) {
    return ReportInvalid("engine, out and tokens_to_store must not be NULL");
  }
  *out = nullptr;
  *tokens_to_store = 0;
  return Guard([&] {
    lmcache::KVLayout l;
    LMC_RETURN_IF_ERROR(ToLayout(layout, &l));
    auto handle = std::make_unique<lmc_pending_store>();
    LMC_RETURN_IF_ERROR(engine->runtime->BeginStore(tokens, num_tokens, l, slots, num_slots, stream, &handle->store));
    *tokens_to_store = handle->store->tokens();
    *out = handle.release();
    return lmcache::Status::Ok();
  });
}

lmc_status lmc_store_finish(lmc_pending_store* store, size_t* stored_tokens) {
  if (stored_tokens != nullptr) *stored_tokens = 0;
  if (store == nullptr) return LMC_OK;
  std::unique_ptr<lmc_pending_store> owned(store);
  return Guard([&] {
    LMC_RETURN_IF_ERROR(owned->store->Finish());
    if (stored_tokens != nullptr) *stored_tokens = owned->store->tokens();
    return lmcache::Status::Ok();
  });
}

lmc_status lmc_get_stats(lmc_engine* engine, lmc_stats* out) {
  if (engine == nullptr || out == nullptr) return ReportInvalid("engine and out must not be NULL");
  return Guard([&] {
    const lmcache::RuntimeStats s = engine->runtime->Stats();
    out->lookups = s.lookups;
    out->lookup_tokens = s.lookup_tokens;
    out->lookup_hit_tokens = s.lookup_hit_tokens;
    out->stored_chunks = s.stored_chunks;
    out->store_dropped_chunks = s.store_dropped_chunks;
    out->loaded_chunks = s.loaded_chunks;
    out->loaded_tokens = s.loaded_tokens;
    out->load_errors = s.load_errors;
    out->evicted_chunks = s.evicted_chunks;
    out->l1_used_bytes = s.l1_used_bytes;
    out->l1_capacity_bytes = s.l1_capacity_bytes;
    out->l1_chunks = s.l1_chunks;
    return lmcache::Status::Ok();
  });
}

const char* lmc_last_error(void) { return g_last_error.c_str(); }

const char* lmc_status_name(lmc_status status) {
  return lmcache::StatusCodeName(static_cast<lmcache::StatusCode>(status));
}

}  // extern "C"
