// SGLang's page names, computed natively: SGLang names a page by a SHA-256
// chain over its token ids, and its storage API only ever sees those names.
// With key_scheme = sglang the runtime keys chunks by these names (mapped
// into its namespace with ExternalKey), so that what one engine stores the
// other finds.
//
//   digest_0 = SHA-256(page_0 token ids as uint32 little-endian)
//   digest_i = SHA-256(digest_{i-1} || page_i token ids)
//   name_i   = lowercase hex of digest_i
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "chunk_key.h"

namespace lmcache {

// False in a build without OpenSSL's libcrypto (the scheme is then refused).
bool SglangKeysAvailable();

// Appends the names of the whole pages of tokens[0, n) to `names`.
void SglangPageNames(const uint32_t* tokens, size_t n, size_t page_size, std::vector<std::string>* names);

// Appends one key per whole page: ExternalKey(seed, name_i).
void SglangChunkKeys(ChunkKey seed, const uint32_t* tokens, size_t n, size_t page_size, std::vector<ChunkKey>* out);

}  // namespace lmcache
