// Keyed authentication (and optional encryption) of records that leave the
// process for the disk tier. A record's checksum (chunk_format.h) catches
// bit rot and bugs but anyone can recompute it; the seal is an AES-256-GCM
// tag under a key only the owner holds, so a record written or altered by
// someone without the key is refused before any byte reaches an engine.
//
//   auth only:  GMAC over (header with the tag zeroed || payload)
//   encrypted:  the payload is AES-256-GCM ciphertext, the header its AAD
//
// A fresh random 96-bit nonce per seal. key_id (stored in the header) tells a
// record sealed under another key from a forged one; both are refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "chunk_format.h"
#include "status.h"

namespace lmcache {

class RecordSealer {
 public:
  static constexpr size_t kKeyBytes = 32;

  // `key`: kKeyBytes of secret key material (already derived from the user's
  // secret). kUnsupported when lmcache was built without OpenSSL.
  static Status Create(const std::string& key, bool encrypt, std::unique_ptr<RecordSealer>* out);
  // Whether this build can seal at all.
  static bool Available();
  // The public name of a key: the first 8 bytes of SHA-256("lmcache-key-id\0" || key).
  static uint64_t KeyId(const std::string& key);
  // The kKeyBytes key of a user's secret (config auth_secret): HMAC-SHA256
  // of a fixed label under the secret, as lmcache.record_key does, so that
  // every engine given the same secret seals with the same key. Empty when
  // lmcache was built without OpenSSL.
  static std::string DeriveKey(std::string_view secret);

  ~RecordSealer();
  RecordSealer(const RecordSealer&) = delete;
  RecordSealer& operator=(const RecordSealer&) = delete;

  bool encrypts() const { return encrypt_; }
  uint64_t key_id() const { return key_id_; }

  // Fills the seal fields of `header` (which must already hold the record's
  // shape, key and checksum). With encryption the payload is encrypted in
  // place, so it must be a private copy.
  Status Seal(ChunkHeader* header, uint8_t* payload, size_t payload_bytes) const;
  // Verifies a sealed record (and decrypts its payload in place); on success
  // the seal fields are cleared, as for a record made in host memory.
  // kCorrupt for a record that is unsealed, sealed under another key, or altered.
  Status Open(ChunkHeader* header, uint8_t* payload, size_t payload_bytes) const;

 private:
  RecordSealer(const std::string& key, bool encrypt);
  unsigned char key_[kKeyBytes];
  bool encrypt_;
  uint64_t key_id_;
};

// Checks, in place, a record that comes back from outside host memory (the
// disk tier): size, header (magic, version, key, shape), seal under `sealer`
// (decrypting the payload), then the payload checksum. On success the record
// is as one made in host memory (seal fields cleared); on any failure,
// kCorrupt and nothing of it may be used.
inline Status OpenRecord(const RecordSealer& sealer, const ChunkKey& key, const ChunkShape& shape, uint8_t* record,
                         size_t bytes) {
  if (bytes < shape.record_bytes()) return Status::Corrupt("record truncated");
  ChunkHeader h;
  std::memcpy(&h, record, sizeof(h));
  LMC_RETURN_IF_ERROR(ValidateHeader(h, shape, key));
  // The seal first: nothing of a record that someone else wrote or altered
  // is looked at further, let alone handed to an engine.
  LMC_RETURN_IF_ERROR(sealer.Open(&h, record + sizeof(ChunkHeader), shape.payload_bytes()));
  std::memcpy(record, &h, sizeof(h));
  return VerifyChecksum(record, shape);
}

}  // namespace lmcache
