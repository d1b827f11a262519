/* TESTS ONLY. A stand-in for the few xxHash calls lmcache makes, so that
 * tests/gpu/check.sh can build the runtime on a machine without libxxhash
 * (and without a package registry to get it). It is not xxHash: a byte-wise
 * FNV-1a, slow and with other values, so keys and checksums of such a build
 * never match a real one. CMake uses it only with -DLMCACHE_TEST_HASH_STUB=ON. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
  uint64_t low64;
  uint64_t high64;
} XXH128_hash_t;

typedef struct {
  uint64_t h;
} XXH3_state_t;

static inline uint64_t lmcache_stub_fnv(uint64_t h, const void* data, size_t len) {
  const unsigned char* p = (const unsigned char*)data;
  for (size_t i = 0; i < len; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static const uint64_t kLmcacheStubBasis = 1469598103934665603ull;

static inline uint64_t XXH3_64bits(const void* data, size_t len) {
  return lmcache_stub_fnv(kLmcacheStubBasis, data, len);
}

static inline XXH128_hash_t XXH3_128bits(const void* data, size_t len) {
  XXH128_hash_t r;
  r.low64 = lmcache_stub_fnv(kLmcacheStubBasis, data, len);
  r.high64 = lmcache_stub_fnv(kLmcacheStubBasis ^ 0x9E3779B97F4A7C15ull, data, len);
  return r;
}

static inline XXH3_state_t* XXH3_createState(void) { return (XXH3_state_t*)malloc(sizeof(XXH3_state_t)); }
static inline int XXH3_freeState(XXH3_state_t* s) {
  free(s);
  return 0;
}
static inline int XXH3_64bits_reset(XXH3_state_t* s) {
  s->h = kLmcacheStubBasis;
  return 0;
}
static inline int XXH3_64bits_update(XXH3_state_t* s, const void* data, size_t len) {
  s->h = lmcache_stub_fnv(s->h, data, len);
  return 0;
}
static inline uint64_t XXH3_64bits_digest(const XXH3_state_t* s) { return s->h; }
