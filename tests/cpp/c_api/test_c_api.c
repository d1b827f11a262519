/* The C API from a C program: create, register, store, lookup, load, stats,
 * and error reporting. Exit code 0 on success. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmcache/lmcache.h"

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "%s:%d: failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, lmc_last_error());                      \
      return 1;                                                        \
    }                                                                  \
  } while (0)

enum { LAYERS = 2, BLOCKS = 8, BLOCK = 16, HEADS = 2, DIM = 64, TOKENS = 64 };

int main(void) {
  /* vLLM flash-attention layout per layer: (2, BLOCKS, BLOCK, HEADS, DIM) float16. */
  const size_t layer_elems = (size_t)2 * BLOCKS * BLOCK * HEADS * DIM;
  uint16_t* src[LAYERS];
  uint16_t* dst[LAYERS];
  uint64_t src_base[LAYERS], dst_base[LAYERS];
  for (int l = 0; l < LAYERS; ++l) {
    src[l] = malloc(layer_elems * 2);
    dst[l] = calloc(layer_elems, 2);
    for (size_t i = 0; i < layer_elems; ++i) src[l][i] = (uint16_t)(i * 31 + l);
    src_base[l] = (uint64_t)(uintptr_t)src[l];
    dst_base[l] = (uint64_t)(uintptr_t)dst[l];
  }
  lmc_kv_layout layout = {LAYERS, 2, HEADS, DIM, LMC_DTYPE_FLOAT16, BLOCK, BLOCKS,
                          /*plane*/ (int64_t)BLOCKS * BLOCK * HEADS * DIM * 2,
                          /*block*/ (int64_t)BLOCK * HEADS * DIM * 2,
                          /*token*/ (int64_t)HEADS * DIM * 2,
                          /*head*/ (int64_t)DIM * 2, src_base, LMC_MEMORY_HOST, 0};
  lmc_kv_layout dst_layout = layout;
  dst_layout.layer_base = dst_base;

  lmc_config cfg;
  lmc_config_init(&cfg);
  EXPECT(cfg.chunk_size == 256);
  cfg.chunk_size = 32;
  cfg.l1_capacity_bytes = 16u << 20;
  cfg.model_id = "c-api-test";
  lmc_engine* engine = NULL;
  EXPECT(lmc_engine_create(&cfg, &engine) == LMC_OK && engine != NULL);

  uint32_t tokens[TOKENS];
  int64_t src_slots[TOKENS], dst_slots[TOKENS];
  for (int i = 0; i < TOKENS; ++i) {
    tokens[i] = (uint32_t)(1000 + i);
    src_slots[i] = i;                          /* blocks 0..3 */
    dst_slots[i] = (int64_t)4 * BLOCK + i;     /* blocks 4..7 */
  }
  size_t n = 0;
  /* Calls before the KV cache is registered fail with a clear state error. */
  EXPECT(lmc_lookup(engine, tokens, TOKENS, &n) == LMC_ERR_INVALID_STATE);
  EXPECT(strstr(lmc_last_error(), "register") != NULL);
  EXPECT(lmc_engine_register_kv(engine, &layout) == LMC_OK);

  EXPECT(lmc_lookup(engine, tokens, TOKENS, &n) == LMC_OK && n == 0);
  EXPECT(lmc_store(engine, tokens, TOKENS, &layout, src_slots, TOKENS, &n) == LMC_OK && n == TOKENS);
  EXPECT(lmc_lookup(engine, tokens, TOKENS, &n) == LMC_OK && n == TOKENS);
  EXPECT(lmc_load(engine, tokens, TOKENS, &dst_layout, dst_slots, TOKENS, &n) == LMC_OK && n == TOKENS);

  /* Token i of src (block i/16) must now be at dst slot 64+i. */
  const size_t token_elems = (size_t)HEADS * DIM;
  for (int l = 0; l < LAYERS; ++l)
    for (int p = 0; p < 2; ++p)
      for (int i = 0; i < TOKENS; ++i) {
        const size_t plane = (size_t)p * BLOCKS * BLOCK * token_elems;
        EXPECT(memcmp(dst[l] + plane + (size_t)dst_slots[i] * token_elems,
                      src[l] + plane + (size_t)src_slots[i] * token_elems, token_elems * 2) == 0);
      }

  /* Bad input: a slot outside the cache, NULL pointers. */
  src_slots[5] = BLOCKS * BLOCK;
  uint32_t other[TOKENS];
  for (int i = 0; i < TOKENS; ++i) other[i] = (uint32_t)i;
  EXPECT(lmc_store(engine, other, TOKENS, &layout, src_slots, TOKENS, &n) == LMC_ERR_INVALID_ARGUMENT);
  EXPECT(strstr(lmc_last_error(), "outside") != NULL);
  EXPECT(lmc_store(engine, other, TOKENS, NULL, src_slots, TOKENS, &n) == LMC_ERR_INVALID_ARGUMENT);
  EXPECT(lmc_lookup(NULL, tokens, TOKENS, &n) == LMC_ERR_INVALID_ARGUMENT);
  EXPECT(strcmp(lmc_status_name(LMC_ERR_CLOSED), "closed") == 0);

  lmc_stats stats;
  EXPECT(lmc_get_stats(engine, &stats) == LMC_OK);
  EXPECT(stats.stored_chunks == 2 && stats.loaded_tokens == TOKENS && stats.l1_chunks == 2);
  EXPECT(stats.l1_used_bytes > 0 && stats.l1_used_bytes <= stats.l1_capacity_bytes);

  /* A store in two steps: invisible until finished. */
  src_slots[5] = 5;
  lmc_pending_store* store = NULL;
  EXPECT(lmc_store_begin(engine, other, TOKENS, &layout, src_slots, TOKENS, 0, &store, &n) == LMC_OK && n == TOKENS);
  EXPECT(lmc_lookup(engine, other, TOKENS, &n) == LMC_OK && n == 0);
  EXPECT(lmc_store_finish(store, &n) == LMC_OK && n == TOKENS);
  EXPECT(lmc_lookup(engine, other, TOKENS, &n) == LMC_OK && n == TOKENS);
  EXPECT(lmc_store_finish(NULL, NULL) == LMC_OK);

  /* A load layer by layer: layer 0 arrives first, layer 1 only when asked for. */
  for (int l = 0; l < LAYERS; ++l) memset(dst[l], 0, layer_elems * 2);
  lmc_pending_load* load = NULL;
  EXPECT(lmc_load_begin(engine, other, TOKENS, &dst_layout, dst_slots, TOKENS, 0, &load, &n) == LMC_OK &&
         n == TOKENS);
  EXPECT(lmc_load_layers(load, 1) == LMC_OK);
  EXPECT(memcmp(dst[0] + (size_t)dst_slots[0] * token_elems, src[0] + (size_t)src_slots[0] * token_elems,
                token_elems * 2) == 0);
  const uint16_t zeros[HEADS * DIM] = {0};
  EXPECT(memcmp(dst[1] + (size_t)dst_slots[0] * token_elems, zeros, sizeof zeros) == 0);
  EXPECT(lmc_load_layers(load, LAYERS) == LMC_OK);
  EXPECT(memcmp(dst[1] + (size_t)dst_slots[0] * token_elems, src[1] + (size_t)src_slots[0] * token_elems,
                token_elems * 2) == 0);
  EXPECT(lmc_load_finish(load) == LMC_OK);

  /* A cache in GPU memory: refused here (no GPU, or a build without CUDA). */
  lmc_kv_layout gpu_layout = layout;
  gpu_layout.memory = LMC_MEMORY_CUDA;
  EXPECT(lmc_load_begin(engine, other, TOKENS, &gpu_layout, dst_slots, TOKENS, 0, &load, &n) != LMC_OK);
  EXPECT(load == NULL && strlen(lmc_last_error()) > 0);
  gpu_layout.memory = 7;
  EXPECT(lmc_store(engine, other, TOKENS, &gpu_layout, src_slots, TOKENS, &n) == LMC_ERR_INVALID_ARGUMENT);

  /* A load still open when the engine goes: the engine ends it; finishing it later is safe. */
  EXPECT(lmc_load_begin(engine, other, TOKENS, &dst_layout, dst_slots, TOKENS, 0, &load, &n) == LMC_OK);
  lmc_engine_destroy(engine);
  EXPECT(lmc_load_finish(load) == LMC_OK);
  lmc_engine_destroy(NULL);
  for (int l = 0; l < LAYERS; ++l) {
    free(src[l]);
    free(dst[l]);
  }
  puts("test_c_api: ok");
  return 0;
}
