// A build without OpenSSL's libcrypto: no SHA-256, so no SGLang key scheme
// (the runtime refuses key_scheme = sglang at creation).
#include "sglang_keys.h"

namespace lmcache {

bool SglangKeysAvailable() { return false; }
void SglangPageNames(const uint32_t*, size_t, size_t, std::vector<std::string>*) {}
void SglangChunkKeys(ChunkKey, const uint32_t*, size_t, size_t, std::vector<ChunkKey>*) {}

}  // namespace lmcache
