#include "record_seal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <climits>
#include <cstring>

namespace lmcache {

namespace {

// AES-GCM takes at most INT_MAX bytes per update call.
constexpr size_t kMaxUpdate = size_t(1) << 30;

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

// The AAD prefix: the whole header with the tag zeroed (the tag is what is computed).
ChunkHeader AadHeader(const ChunkHeader& h) {
  ChunkHeader aad = h;
  std::memset(aad.seal_tag, 0, sizeof(aad.seal_tag));
  return aad;
}

// Feeds `bytes` of `in` through the cipher: as AAD (out == nullptr) or as
// plaintext/ciphertext transformed into `out` (may equal `in`).
bool Update(EVP_CIPHER_CTX* ctx, const uint8_t* in, uint8_t* out, size_t bytes) {
  for (size_t done = 0; done < bytes;) {
    const int n = static_cast<int>(std::min(kMaxUpdate, bytes - done));
    int written = 0;
    if (EVP_CipherUpdate(ctx, out ? out + done : nullptr, &written, in + done, n) != 1) return false;
    done += size_t(n);
  }
  return true;
}

}  // namespace

bool RecordSealer::Available() { return true; }

uint64_t RecordSealer::KeyId(const std::string& key) {
  static const char kLabel[] = "lmcache-key-id";  // with its NUL: "lmcache-key-id\0"
  unsigned char digest[32];
  unsigned int len = 0;
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_DigestInit_ex(md, EVP_sha256(), nullptr);
  EVP_DigestUpdate(md, kLabel, sizeof(kLabel));
  EVP_DigestUpdate(md, key.data(), key.size());
  EVP_DigestFinal_ex(md, digest, &len);
  EVP_MD_CTX_free(md);
  uint64_t id;
  std::memcpy(&id, digest, sizeof(id));
  return id;
}

Status RecordSealer::Create(const std::string& key, bool encrypt, std::unique_ptr<RecordSealer>* out) {
  if (key.size() != kKeyBytes) {
    return Status::InvalidArgument("record key must be " + std::to_string(kKeyBytes) + " bytes, got " +
                                   std::to_string(key.size()));
  }
  out->reset(new RecordSealer(key, encrypt));
  return Status::Ok();
}

RecordSealer::RecordSealer(const std::string& key, bool encrypt) : encrypt_(encrypt), key_id_(KeyId(key)) {
  std::memcpy(key_, key.data(), kKeyBytes);
}

RecordSealer::~RecordSealer() { OPENSSL_cleanse(key_, sizeof(key_)); }

Status RecordSealer::Seal(ChunkHeader* header, uint8_t* payload, size_t payload_bytes) const {
  header->seal_key_id = key_id_;
  header->seal_flags = kSealed | (encrypt_ ? kSealEncrypted : 0);
  if (RAND_bytes(header->seal_nonce, sizeof(header->seal_nonce)) != 1) return Status::IoError("no random nonce");
  std::memset(header->seal_tag, 0, sizeof(header->seal_tag));
  CipherCtx c;
  const ChunkHeader aad = AadHeader(*header);
  bool ok = c.ctx && EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, key_, header->seal_nonce) == 1 &&
            Update(c.ctx, reinterpret_cast<const uint8_t*>(&aad), nullptr, sizeof(aad)) &&
            Update(c.ctx, payload, encrypt_ ? payload : nullptr, payload_bytes);
  int tail = 0;
  ok = ok && EVP_EncryptFinal_ex(c.ctx, nullptr, &tail) == 1 &&
       EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, sizeof(header->seal_tag), header->seal_tag) == 1;
  return ok ? Status::Ok() : Status::IoError("AES-GCM seal failed");
}

Status RecordSealer::Open(ChunkHeader* header, uint8_t* payload, size_t payload_bytes) const {
  if (!(header->seal_flags & kSealed)) return Status::Corrupt("record is not sealed");
  if (header->seal_key_id != key_id_) return Status::Corrupt("record sealed under another key");
  const bool encrypted = header->seal_flags & kSealEncrypted;
  CipherCtx c;
  const ChunkHeader aad = AadHeader(*header);
  bool ok = c.ctx && EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, key_, header->seal_nonce) == 1 &&
            Update(c.ctx, reinterpret_cast<const uint8_t*>(&aad), nullptr, sizeof(aad)) &&
            Update(c.ctx, payload, encrypted ? payload : nullptr, payload_bytes) &&
            EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, sizeof(header->seal_tag), header->seal_tag) == 1;
  int tail = 0;
  // The tag is checked here. A decrypted payload that fails it is garbage;
  // the caller drops the whole record.
  if (!ok || EVP_DecryptFinal_ex(c.ctx, nullptr, &tail) != 1) return Status::Corrupt("record seal does not verify");
  header->seal_key_id = 0;
  header->seal_flags = 0;
  std::memset(header->seal_nonce, 0, sizeof(header->seal_nonce));
  std::memset(header->seal_tag, 0, sizeof(header->seal_tag));
  return Status::Ok();
}

}  // namespace lmcache
