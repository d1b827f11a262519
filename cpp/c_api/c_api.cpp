// C API over CacheRuntime (include/lmcache/lmcache.h). No exception may cross
// this boundary: every entry point catches and turns it into a status.
#include "lmcache/lmcache.h"

#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "cache_runtime.h"
#include "engine_config.h"
#include "runtime_options.h"
#include "runtime_stats.h"
#include "token_calls.h"

struct lmc_config {
  lmcache::RuntimeOptions options;  // the defaults until lmc_config_set changes them
};

struct lmc_engine {
  std::unique_ptr<lmcache::CacheRuntime> runtime;
};

struct lmc_keys {
  const lmc_engine* engine;  // keys are in this engine's namespace only
  std::vector<lmcache::ChunkKey> keys;
};

struct lmc_pending_load {
  std::unique_ptr<lmcache::PendingLoad> op;
};

struct lmc_pending_store {
  std::unique_ptr<lmcache::PendingStore> op;
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

namespace {

lmcache::Status CheckKeys(const lmc_engine* engine, const lmc_keys* keys) {
  if (keys == nullptr) return lmcache::Status::InvalidArgument("keys is NULL");
  if (keys->engine != engine) return lmcache::Status::InvalidArgument("these keys were made by another engine");
  return lmcache::Status::Ok();
}

// The body of every *_begin call: `begin(layout, &native)` starts the
// native load or store; the handle owns it from then on.
template <typename Handle, typename Begin>
lmcache::Status BeginInto(const lmc_kv_layout* layout, Begin&& begin, Handle** out, size_t* tokens) {
  lmcache::KVLayout l;
  LMC_RETURN_IF_ERROR(ToLayout(layout, &l));
  auto handle = std::make_unique<Handle>();
  LMC_RETURN_IF_ERROR(begin(l, handle.get()));
  *tokens = handle->op->tokens();
  *out = handle.release();
  return lmcache::Status::Ok();
}

}  // namespace

extern "C" {

lmc_status lmc_config_create(lmc_config** out) {
  if (out == nullptr) return ReportInvalid("out must not be NULL");
  *out = nullptr;
  return Guard([&] {
    *out = new lmc_config();
    return lmcache::Status::Ok();
  });
}

lmc_status lmc_config_set(lmc_config* config, const char* key, const char* value) {
  if (config == nullptr || key == nullptr || value == nullptr) {
    return ReportInvalid("config, key and value must not be NULL");
  }
  return Guard([&] { return lmcache::SetOption(&config->options, key, value); });
}

void lmc_config_destroy(lmc_config* config) { delete config; }

lmc_status lmc_engine_create(const lmc_config* config, lmc_engine** out) {
  if (out == nullptr) return ReportInvalid("out must not be NULL");
  *out = nullptr;
  return Guard([&] {
    auto engine = std::make_unique<lmc_engine>();
    LMC_RETURN_IF_ERROR(
        lmcache::CreateEngineRuntime(config ? config->options : lmcache::RuntimeOptions(), &engine->runtime));
    *out = engine.release();
    return lmcache::Status::Ok();
  });
}

void lmc_engine_destroy(lmc_engine* engine) {
  // In the child of a fork the runtime is the parent's: leaked, never torn down (see InForkedChild).
  if (engine && engine->runtime && engine->runtime->InForkedChild()) (void)engine->runtime.release();
  delete engine;
}

lmc_status lmc_engine_flush(lmc_engine* engine) {
  if (engine == nullptr) return ReportInvalid("engine is NULL");
  return Guard([&] {
    engine->runtime->FlushWrites();
    return lmcache::Status::Ok();
  });
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
  return Guard([&] { return lmcache::LookupTokens(*engine->runtime, tokens, n, hit_tokens); });
}

lmc_status lmc_store(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens, const lmc_kv_layout* layout,
                     const int64_t* slots, size_t num_slots, size_t* stored_tokens) {
  if (engine == nullptr || stored_tokens == nullptr) return ReportInvalid("engine and stored_tokens must not be NULL");
  return Guard([&] {
    lmcache::KVLayout l;
    LMC_RETURN_IF_ERROR(ToLayout(layout, &l));
    return lmcache::StoreTokens(*engine->runtime, tokens, num_tokens, l, slots, num_slots, stored_tokens);
  });
}

lmc_status lmc_load(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens, const lmc_kv_layout* layout,
                    const int64_t* slots, size_t num_slots, size_t* loaded_tokens) {
  if (engine == nullptr || loaded_tokens == nullptr) return ReportInvalid("engine and loaded_tokens must not be NULL");
  return Guard([&] {
    lmcache::KVLayout l;
    LMC_RETURN_IF_ERROR(ToLayout(layout, &l));
    return lmcache::LoadTokens(*engine->runtime, tokens, num_tokens, l, slots, num_slots, loaded_tokens);
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
    return BeginInto(layout, [&](const lmcache::KVLayout& l, lmc_pending_load* h) {
      return lmcache::BeginLoadTokens(*engine->runtime, tokens, num_tokens, l, slots, num_slots, stream, &h->op);
    }, out, tokens_to_load);
  });
}

lmc_status lmc_load_layers(lmc_pending_load* load, uint32_t end_layer) {
  if (load == nullptr) return ReportInvalid("load is NULL");
  return Guard([&] { return load->op->LoadLayers(end_layer); });
}

lmc_status lmc_load_finish(lmc_pending_load* load) {
  if (load == nullptr) return LMC_OK;
  std::unique_ptr<lmc_pending_load> owned(load);
  return Guard([&] { return owned->op->Finish(); });
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
    return BeginInto(layout, [&](const lmcache::KVLayout& l, lmc_pending_store* h) {
      return lmcache::BeginStoreTokens(*engine->runtime, tokens, num_tokens, l, slots, num_slots, stream, &h->op);
    }, out, tokens_to_store);
  });
}

lmc_status lmc_keys_compute(lmc_engine* engine, const uint32_t* tokens, size_t num_tokens, lmc_keys** out) {
  if (engine == nullptr || out == nullptr) return ReportInvalid("engine and out must not be NULL");
  *out = nullptr;
  return Guard([&] {
    auto keys = std::make_unique<lmc_keys>();
    keys->engine = engine;
    LMC_RETURN_IF_ERROR(engine->runtime->ComputeKeys(tokens, num_tokens, &keys->keys));
    *out = keys.release();
    return lmcache::Status::Ok();
  });
}

lmc_status lmc_keys_from_ids(lmc_engine* engine, const char* const* ids, size_t num_ids, lmc_keys** out) {
  if (engine == nullptr || out == nullptr || (ids == nullptr && num_ids > 0)) {
    return ReportInvalid("engine, ids and out must not be NULL");
  }
  *out = nullptr;
  return Guard([&] {
    std::vector<std::string> names;
    names.reserve(num_ids);
    for (size_t i = 0; i < num_ids; ++i) {
      if (ids[i] == nullptr) return lmcache::Status::InvalidArgument("ids[" + std::to_string(i) + "] is NULL");
      names.emplace_back(ids[i]);
    }
    auto keys = std::make_unique<lmc_keys>();
    keys->engine = engine;
    LMC_RETURN_IF_ERROR(engine->runtime->KeysFromIds(names, &keys->keys));
    *out = keys.release();
    return lmcache::Status::Ok();
  });
}

size_t lmc_keys_count(const lmc_keys* keys) { return keys ? keys->keys.size() : 0; }

void lmc_keys_destroy(lmc_keys* keys) { delete keys; }

lmc_status lmc_lookup_keys(lmc_engine* engine, const lmc_keys* keys, size_t* hit_tokens) {
  if (engine == nullptr || hit_tokens == nullptr) return ReportInvalid("engine and hit_tokens must not be NULL");
  *hit_tokens = 0;
  return Guard([&] {
    LMC_RETURN_IF_ERROR(CheckKeys(engine, keys));
    size_t chunks = 0;
    LMC_RETURN_IF_ERROR(engine->runtime->Lookup(keys->keys, &chunks));
    *hit_tokens = chunks * engine->runtime->chunk_size();
    return lmcache::Status::Ok();
  });
}

lmc_status lmc_load_begin_keys(lmc_engine* engine, const lmc_keys* keys, const lmc_kv_layout* layout,
                               const int64_t* slots, size_t num_slots, uint64_t stream, lmc_pending_load** out,
                               size_t* tokens_to_load) {
  if (engine == nullptr || out == nullptr || tokens_to_load == nullptr) {
    return ReportInvalid("engine, out and tokens_to_load must not be NULL");
  }
  *out = nullptr;
  *tokens_to_load = 0;
  return Guard([&] {
    LMC_RETURN_IF_ERROR(CheckKeys(engine, keys));
    return BeginInto(layout, [&](const lmcache::KVLayout& l, lmc_pending_load* h) {
      return engine->runtime->BeginLoad(keys->keys, l, slots, num_slots, stream, &h->op);
    }, out, tokens_to_load);
  });
}

lmc_status lmc_store_begin_keys(lmc_engine* engine, const lmc_keys* keys, const lmc_kv_layout* layout,
                                const int64_t* slots, size_t num_slots, uint64_t stream, lmc_pending_store** out,
                                size_t* tokens_to_store) {
  if (engine == nullptr || out == nullptr || tokens_to_store == nullptr) {
    return ReportInvalid("engine, out and tokens_to_store must not be NULL");
  }
  *out = nullptr;
  *tokens_to_store = 0;
  return Guard([&] {
    LMC_RETURN_IF_ERROR(CheckKeys(engine, keys));
    return BeginInto(layout, [&](const lmcache::KVLayout& l, lmc_pending_store* h) {
      return engine->runtime->BeginStore(keys->keys, l, slots, num_slots, stream, &h->op);
    }, out, tokens_to_store);
  });
}

lmc_status lmc_store_finish(lmc_pending_store* store, size_t* stored_tokens) {
  if (stored_tokens != nullptr) *stored_tokens = 0;
  if (store == nullptr) return LMC_OK;
  std::unique_ptr<lmc_pending_store> owned(store);
  return Guard([&] {
    LMC_RETURN_IF_ERROR(owned->op->Finish());
    if (stored_tokens != nullptr) *stored_tokens = owned->op->tokens();
    return lmcache::Status::Ok();
  });
}

// The table is built on first use: an allocation failure there must not cross the boundary either.
size_t lmc_stats_count(void) {
  try {
    return lmcache::StatTable().size();
  } catch (...) {
    return 0;
  }
}

const char* lmc_stat_name(size_t index) {
  try {
    const auto& table = lmcache::StatTable();
    return index < table.size() ? table[index].name : nullptr;
  } catch (...) {
    return nullptr;
  }
}

lmc_status lmc_get_stat(lmc_engine* engine, const char* name, uint64_t* value) {
  if (engine == nullptr || name == nullptr || value == nullptr) {
    return ReportInvalid("engine, name and value must not be NULL");
  }
  *value = 0;
  return Guard([&] {
    const lmcache::StatInfo* info = lmcache::FindStat(name);
    if (info == nullptr) {
      return lmcache::Status::NotFound("unknown stat '" + std::string(name) + "' (lmc_stat_name lists them)");
    }
    *value = info->read(engine->runtime->Stats());
    return lmcache::Status::Ok();
  });
}

lmc_status lmc_get_stats(lmc_engine* engine, uint64_t* values, size_t count) {
  if (engine == nullptr || (values == nullptr && count > 0)) return ReportInvalid("engine and values must not be NULL");
  return Guard([&] {
    const lmcache::RuntimeStats s = engine->runtime->Stats();
    const auto& table = lmcache::StatTable();
    for (size_t i = 0; i < count; ++i) values[i] = i < table.size() ? table[i].read(s) : 0;
    return lmcache::Status::Ok();
  });
}

const char* lmc_last_error(void) { return g_last_error.c_str(); }

const char* lmc_status_name(lmc_status status) {
  return lmcache::StatusCodeName(static_cast<lmcache::StatusCode>(status));
}

}  // extern "C"
