#include "record_seal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

#include "aes_gcm.h"

namespace lmcache {

namespace {

// The AAD prefix: the whole header with the tag zeroed (the tag is what is computed).
ChunkHeader AadHeader(const ChunkHeader& h) {
  ChunkHeader aad = h;
  std::memset(aad.seal_tag, 0, sizeof(aad.seal_tag));
  return aad;
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

std::string RecordSealer::DeriveKey(std::string_view secret) {
  static const char kLabel[] = "lmcache record key v1";
  unsigned char digest[kKeyBytes];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(kLabel),
           sizeof(kLabel) - 1, digest, &len) == nullptr || len != kKeyBytes) {
    return "";
  }
  std::string key(reinterpret_cast<const char*>(digest), kKeyBytes);
  OPENSSL_cleanse(digest, sizeof(digest));
  return key;
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
  if (!AesGcm::Random(header->seal_nonce, sizeof(header->seal_nonce))) return Status::IoError("no random nonce");
  std::memset(header->seal_tag, 0, sizeof(header->seal_tag));
  AesGcm gcm(AesGcm::Mode::kSeal, key_, header->seal_nonce);
  const ChunkHeader aad = AadHeader(*header);
  gcm.Aad(&aad, sizeof(aad));
  if (encrypt_) {
    gcm.Crypt(payload, payload, payload_bytes);
  } else {
    gcm.Aad(payload, payload_bytes);
  }
  const bool ok = gcm.Seal(header->seal_tag);
  return ok ? Status::Ok() : Status::IoError("AES-GCM seal failed");
}

Status RecordSealer::Open(ChunkHeader* header, uint8_t* payload, size_t payload_bytes) const {
  if (!(header->seal_flags & kSealed)) return Status::Corrupt("record is not sealed");
  if (header->seal_key_id != key_id_) return Status::Corrupt("record sealed under another key");
  const bool encrypted = header->seal_flags & kSealEncrypted;
  AesGcm gcm(AesGcm::Mode::kOpen, key_, header->seal_nonce);
  const ChunkHeader aad = AadHeader(*header);
  gcm.Aad(&aad, sizeof(aad));
  if (encrypted) {
    gcm.Crypt(payload, payload, payload_bytes);
  } else {
    gcm.Aad(payload, payload_bytes);
  }
  // The tag is checked here. A decrypted payload that fails it is garbage;
  // the caller drops the whole record.
  if (!gcm.Open(header->seal_tag)) return Status::Corrupt("record seal does not verify");
  header->seal_key_id = 0;
  header->seal_flags = 0;
  std::memset(header->seal_nonce, 0, sizeof(header->seal_nonce));
  std::memset(header->seal_tag, 0, sizeof(header->seal_tag));
  return Status::Ok();
}

}  // namespace lmcache
