// AES-256-GCM in steps over OpenSSL's EVP interface, shared by the seal of
// disk records (record_seal.h) and the seal of remote values
// (cpp/remote/wire_value.h): authenticated data in pieces, then the body
// (encrypted, decrypted, or only authenticated), then the tag. Built only
// with OpenSSL.
#pragma once

#include <cstddef>
#include <cstdint>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace lmcache {

class AesGcm {
 public:
  static constexpr size_t kKeyBytes = 32;
  static constexpr size_t kNonceBytes = 12;
  static constexpr size_t kTagBytes = 16;
  enum class Mode { kSeal, kOpen };

  // `key`: kKeyBytes; `nonce`: kNonceBytes. Any failure of OpenSSL here or
  // later makes Seal/Open return false.
  AesGcm(Mode mode, const uint8_t* key, const uint8_t* nonce);
  ~AesGcm();
  AesGcm(const AesGcm&) = delete;
  AesGcm& operator=(const AesGcm&) = delete;

  // Authenticated data; several calls are one concatenated piece, in order.
  void Aad(const void* data, size_t bytes) { Update(static_cast<const uint8_t*>(data), nullptr, bytes); }
  // The body, after every Aad: encrypted (kSeal) or decrypted (kOpen) from
  // `in` into `out` (which may equal `in`).
  void Crypt(const uint8_t* in, uint8_t* out, size_t bytes) { Update(in, out, bytes); }
  // kSeal only: writes the kTagBytes tag.
  bool Seal(uint8_t* tag);
  // kOpen only: whether `tag` (kTagBytes) verifies everything fed in. A
  // decrypted body is garbage unless it does.
  bool Open(const uint8_t* tag);

  // `bytes` from the system's secure random source.
  static bool Random(uint8_t* out, size_t bytes);

 private:
  void Update(const uint8_t* in, uint8_t* out, size_t bytes);
  EVP_CIPHER_CTX* ctx_;
  Mode mode_;
  bool ok_;
};

}  // namespace lmcache
