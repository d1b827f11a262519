#include "sglang_keys.h"

#include <openssl/evp.h>

#include <cstring>

namespace lmcache {

bool SglangKeysAvailable() { return true; }

namespace {

void Hex(const uint8_t* digest, size_t n, std::string* out) {
  static const char kDigits[] = "0123456789abcdef";
  out->resize(2 * n);
  for (size_t i = 0; i < n; ++i) {
    (*out)[2 * i] = kDigits[digest[i] >> 4];
    (*out)[2 * i + 1] = kDigits[digest[i] & 15];
  }
}

// Calls fn(name) for each whole page, in order.
template <typename Fn>
void ForEachPageName(const uint32_t* tokens, size_t n, size_t page_size, Fn&& fn) {
  if (page_size == 0) return;
  constexpr size_t kDigest = 32;
  // [previous digest | page tokens], reused for every page; the first page has no previous digest.
  std::vector<uint8_t> buf(kDigest + page_size * sizeof(uint32_t));
  std::string name;
  for (size_t p = 0; p < n / page_size; ++p) {
    std::memcpy(buf.data() + kDigest, tokens + p * page_size, page_size * sizeof(uint32_t));  // little-endian host
    const uint8_t* start = p == 0 ? buf.data() + kDigest : buf.data();
    const size_t len = p == 0 ? page_size * sizeof(uint32_t) : buf.size();
    unsigned int out_len = 0;
    EVP_Digest(start, len, buf.data(), &out_len, EVP_sha256(), nullptr);  // the digest becomes the next prefix
    Hex(buf.data(), kDigest, &name);
    fn(name);
  }
}

}  // namespace

void SglangPageNames(const uint32_t* tokens, size_t n, size_t page_size, std::vector<std::string>* names) {
  ForEachPageName(tokens, n, page_size, [&](const std::string& name) { names->push_back(name); });
}

void SglangChunkKeys(ChunkKey seed, const uint32_t* tokens, size_t n, size_t page_size, std::vector<ChunkKey>* out) {
  if (page_size) out->reserve(out->size() + n / page_size);
  ForEachPageName(tokens, n, page_size, [&](const std::string& name) { out->push_back(ExternalKey(seed, name)); });
}

}  // namespace lmcache
