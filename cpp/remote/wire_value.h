// A chunk's value in the remote store (wire version 2): the native side of
// the format python/lmcache/remote/wire.py defines, byte for byte, so that
// C and Python engines sharing a store read each other's values.
//
//   value  = header (60 bytes) | body
//   header = "LMCW" | version u8 = 2 | codec u8 | flags u8 | pad u8
//            | record_bytes u64 | body_bytes u64 | key_id 8 | nonce 12 | tag 16
//   body   = the record (codec none), or its zstd / lz4 frame; with flag
//            bit 0 the AES-256-GCM ciphertext of that.
//
// Every value is sealed under the record key: the authenticated data is the
// header up to its tag, the chunk key's name (u16 length, then the 32 hex
// digits: a value moved to another key fails) and, unencrypted, the body
// (GMAC). Decode checks sizes, magic, version, codec, flags, key_id and the
// declared record size before the tag, and the tag before it decompresses,
// with the output capped at the expected record size. The fp8 codec (lossy,
// Python only) is recognised and reported as unavailable here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "status.h"

namespace lmcache {

enum class WireCodec : uint8_t { kNone = 0, kZstd = 1, kLz4 = 2, kFp8 = 3 };

// "none", "zstd", "lz4" or "fp8"; false for any other name.
bool ParseWireCodec(std::string_view name, WireCodec* out);
// Whether this build can write and read values of `codec`.
bool WireCodecAvailable(WireCodec codec);

enum class WireOutcome {
  kOk,
  kBad,               // proven not a whole, authentic lmcache value: may be deleted
  kNotOurs,           // another secret or wire version: a miss, never deleted
  kCodecUnavailable,  // authentic, but this build cannot decode its codec
};

class WireSealer {
 public:
  static constexpr size_t kHeaderBytes = 60;

  // `record_key`: RecordSealer::kKeyBytes bytes. kUnsupported without
  // OpenSSL, or for a codec this build lacks.
  static Status Create(const std::string& record_key, WireCodec codec, bool encrypt,
                       std::unique_ptr<WireSealer>* out);
  ~WireSealer();
  WireSealer(const WireSealer&) = delete;
  WireSealer& operator=(const WireSealer&) = delete;

  // True when a value is the header followed by the record as it is (codec
  // none, not encrypted): the caller exports the record straight after
  // kHeaderBytes of room and seals in place, one copy in all.
  bool in_place() const { return codec_ == WireCodec::kNone && !encrypt_; }
  // in_place(): fills the header in front of the record at value[kHeaderBytes..).
  Status SealInPlace(std::string_view key_hex, uint8_t* value, size_t record_bytes) const;
  // Any codec: the whole value of `record`.
  Status Encode(std::string_view key_hex, const uint8_t* record, size_t record_bytes,
                std::vector<uint8_t>* value) const;

  // Checks `value` (kHeaderBytes + body) stored under `key_hex`. On kOk,
  // *record points at expected_record_bytes: into `value` (decrypted in
  // place) or into `scratch`. `why` says what failed.
  WireOutcome Decode(std::string_view key_hex, uint8_t* value, size_t bytes, size_t expected_record_bytes,
                     std::vector<uint8_t>* scratch, const uint8_t** record, std::string* why) const;

 private:
  WireSealer(const std::string& key, WireCodec codec, bool encrypt);
  Status Seal(std::string_view key_hex, uint8_t* header, uint8_t* body, size_t body_bytes, size_t record_bytes,
              bool encrypt) const;
  unsigned char key_[32];
  unsigned char key_id_[8];
  WireCodec codec_;
  bool encrypt_;
};

}  // namespace lmcache
