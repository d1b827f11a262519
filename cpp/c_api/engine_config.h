// What lmc_engine_create does with a config beyond the runtime's own keys:
// the secret (auth_secret or auth_secret_file, checked as lmcache.record_key
// checks it in Python) becomes the record key that seals what leaves the
// process, and remote_url plugs the native Redis client (cpp/remote) into
// the runtime, so that a C engine reaches every tier a Python engine does.
#pragma once

#include <memory>

#include "cache_runtime.h"
#include "runtime_options.h"

namespace lmcache {

// `options` is consumed: the secret is wiped from it once the key is derived.
Status CreateEngineRuntime(RuntimeOptions options, std::unique_ptr<CacheRuntime>* out);

}  // namespace lmcache
