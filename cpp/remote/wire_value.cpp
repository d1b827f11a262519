#include "wire_value.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstring>

#include "aes_gcm.h"
#include "record_seal.h"

#ifdef LMCACHE_WITH_ZSTD
#include <zstd.h>
#endif
#ifdef LMCACHE_WITH_LZ4
#include <lz4frame.h>
#endif

namespace lmcache {

namespace {

constexpr char kMagic[4] = {'L', 'M', 'C', 'W'};
constexpr uint8_t kVersion = 2;
constexpr uint8_t kFlagEncrypted = 0x01;
constexpr size_t kTagAt = WireSealer::kHeaderBytes - AesGcm::kTagBytes;  // 44: the tag is the last field

// Header fields at their offsets (little-endian, packed: "<4sBBBxQQ8s12s16s").
struct Offsets {
  static constexpr size_t kVersion = 4, kCodec = 5, kFlags = 6, kRecordBytes = 8, kBodyBytes = 16, kKeyId = 24,
                          kNonce = 32;
};

void PutU64(uint8_t* at, uint64_t v) {
  for (int i = 0; i < 8; ++i) at[i] = uint8_t(v >> (8 * i));
}
uint64_t GetU64(const uint8_t* at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(at[i]) << (8 * i);
  return v;
}

// The authenticated data both sides share: header up to the tag, then the chunk key's name.
void FeedCommonAad(AesGcm* gcm, const uint8_t* header, std::string_view key_hex) {
  gcm->Aad(header, kTagAt);
  const uint8_t len[2] = {uint8_t(key_hex.size()), uint8_t(key_hex.size() >> 8)};
  gcm->Aad(len, 2);
  gcm->Aad(key_hex.data(), key_hex.size());
}

Status Compress(WireCodec codec, const uint8_t* record, size_t bytes, std::vector<uint8_t>* body) {
  switch (codec) {
#ifdef LMCACHE_WITH_ZSTD
    case WireCodec::kZstd: {
      body->resize(ZSTD_compressBound(bytes));
      // ZSTD_compress writes the content size into the frame, which readers require.
      const size_t n = ZSTD_compress(body->data(), body->size(), record, bytes, 1);
      if (ZSTD_isError(n)) return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(n));
      body->resize(n);
      return Status::Ok();
    }
#endif
#ifdef LMCACHE_WITH_LZ4
    case WireCodec::kLz4: {
      LZ4F_preferences_t prefs;
      std::memset(&prefs, 0, sizeof prefs);
      prefs.frameInfo.contentSize = bytes;  // readers require the declared size
      body->resize(LZ4F_compressFrameBound(bytes, &prefs));
      const size_t n = LZ4F_compressFrame(body->data(), body->size(), record, bytes, &prefs);
      if (LZ4F_isError(n)) return Status::Internal(std::string("lz4: ") + LZ4F_getErrorName(n));
      body->resize(n);
      return Status::Ok();
    }
#endif
    default:
      return Status::InvalidArgument("this build of lmcache cannot write that remote codec");
  }
}

// Decompresses a whole, single frame into exactly `expected` bytes; false
// (and `why`) for anything else.
bool Decompress(WireCodec codec, const uint8_t* body, size_t bytes, size_t expected, std::vector<uint8_t>* out,
                std::string* why) {
  out->resize(expected);
  switch (codec) {
#ifdef LMCACHE_WITH_ZSTD
    case WireCodec::kZstd: {
      const unsigned long long declared = ZSTD_getFrameContentSize(body, bytes);
      if (declared == ZSTD_CONTENTSIZE_UNKNOWN || declared == ZSTD_CONTENTSIZE_ERROR || declared != expected) {
        *why = "zstd frame without the expected content size";
        return false;
      }
      if (ZSTD_findFrameCompressedSize(body, bytes) != bytes) {
        *why = "zstd value is not exactly one frame";
        return false;
      }
      const size_t n = ZSTD_decompress(out->data(), expected, body, bytes);  // capped at `expected`
      if (ZSTD_isError(n) || n != expected) {
        *why = "zstd decode failed";
        return false;
      }
      return true;
    }
#endif
#ifdef LMCACHE_WITH_LZ4
    case WireCodec::kLz4: {
      LZ4F_dctx* dctx = nullptr;
      if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
        *why = "lz4: no decompression context";
        return false;
      }
      std::unique_ptr<LZ4F_dctx, decltype(&LZ4F_freeDecompressionContext)> owned(dctx, LZ4F_freeDecompressionContext);
      LZ4F_frameInfo_t info;
      size_t consumed = bytes;
      size_t hint = LZ4F_getFrameInfo(dctx, &info, body, &consumed);
      if (LZ4F_isError(hint) || info.contentSize != expected) {
        *why = "lz4 frame without the expected content size";
        return false;
      }
      size_t in_at = consumed, out_at = 0;
      while (hint != 0) {
        size_t in_n = bytes - in_at, out_n = expected - out_at;
        if (in_n == 0) break;
        hint = LZ4F_decompress(dctx, out->data() + out_at, &out_n, body + in_at, &in_n, nullptr);
        if (LZ4F_isError(hint)) break;
        in_at += in_n;
        out_at += out_n;
        if (in_n == 0 && out_n == 0) break;  // no progress: output full, frame longer than declared
      }
      if (LZ4F_isError(hint) || hint != 0 || in_at != bytes || out_at != expected) {
        *why = "lz4 frame longer than declared, truncated, damaged, or followed by other data";
        return false;
      }
      return true;
    }
#endif
    default:
      *why = "codec not built";
      return false;
  }
}

}  // namespace

bool ParseWireCodec(std::string_view name, WireCodec* out) {
  if (name == "none") *out = WireCodec::kNone;
  else if (name == "zstd") *out = WireCodec::kZstd;
  else if (name == "lz4") *out = WireCodec::kLz4;
  else if (name == "fp8") *out = WireCodec::kFp8;
  else return false;
  return true;
}

bool WireCodecAvailable(WireCodec codec) {
  switch (codec) {
    case WireCodec::kNone: return true;
#ifdef LMCACHE_WITH_ZSTD
    case WireCodec::kZstd: return true;
#endif
#ifdef LMCACHE_WITH_LZ4
    case WireCodec::kLz4: return true;
#endif
    default: return false;
  }
}

Status WireSealer::Create(const std::string& record_key, WireCodec codec, bool encrypt,
                          std::unique_ptr<WireSealer>* out) {
  if (record_key.size() != sizeof(key_)) return Status::InvalidArgument("a record key is 32 bytes");
  if (!WireCodecAvailable(codec)) {
    return Status::InvalidArgument("config key 'remote_codec': this build of lmcache's native client cannot use it "
                               "(fp8 is for Python engines; zstd and lz4 need libzstd / liblz4 at build time)");
  }
  out->reset(new WireSealer(record_key, codec, encrypt));
  return Status::Ok();
}

WireSealer::WireSealer(const std::string& key, WireCodec codec, bool encrypt) : codec_(codec), encrypt_(encrypt) {
  std::memcpy(key_, key.data(), sizeof(key_));
  const uint64_t id = RecordSealer::KeyId(key);  // the same name the disk seal gives this key
  std::memcpy(key_id_, &id, sizeof(key_id_));
}

WireSealer::~WireSealer() { OPENSSL_cleanse(key_, sizeof(key_)); }

Status WireSealer::Seal(std::string_view key_hex, uint8_t* header, uint8_t* body, size_t body_bytes,
                        size_t record_bytes, bool encrypt) const {
  std::memset(header, 0, kHeaderBytes);
  std::memcpy(header, kMagic, sizeof(kMagic));
  header[Offsets::kVersion] = kVersion;
  header[Offsets::kCodec] = uint8_t(codec_);
  header[Offsets::kFlags] = encrypt ? kFlagEncrypted : 0;
  PutU64(header + Offsets::kRecordBytes, record_bytes);
  PutU64(header + Offsets::kBodyBytes, body_bytes);
  std::memcpy(header + Offsets::kKeyId, key_id_, sizeof(key_id_));
  uint8_t* nonce = header + Offsets::kNonce;
  if (!AesGcm::Random(nonce, AesGcm::kNonceBytes)) return Status::IoError("no random nonce");
  AesGcm gcm(AesGcm::Mode::kSeal, key_, nonce);
  FeedCommonAad(&gcm, header, key_hex);
  if (encrypt) {
    gcm.Crypt(body, body, body_bytes);
  } else {
    gcm.Aad(body, body_bytes);
  }
  if (!gcm.Seal(header + kTagAt)) return Status::Internal("AES-GCM seal failed");
  return Status::Ok();
}

Status WireSealer::SealInPlace(std::string_view key_hex, uint8_t* value, size_t record_bytes) const {
  if (!in_place()) return Status::InvalidState("this codec does not seal in place");
  return Seal(key_hex, value, value + kHeaderBytes, record_bytes, record_bytes, false);
}

Status WireSealer::Encode(std::string_view key_hex, const uint8_t* record, size_t record_bytes,
                          std::vector<uint8_t>* value) const {
  if (codec_ == WireCodec::kNone) {
    value->resize(kHeaderBytes + record_bytes);
    std::memcpy(value->data() + kHeaderBytes, record, record_bytes);
  } else {
    std::vector<uint8_t> body;
    LMC_RETURN_IF_ERROR(Compress(codec_, record, record_bytes, &body));
    value->resize(kHeaderBytes + body.size());
    std::memcpy(value->data() + kHeaderBytes, body.data(), body.size());
  }
  return Seal(key_hex, value->data(), value->data() + kHeaderBytes, value->size() - kHeaderBytes, record_bytes,
              encrypt_);
}

WireOutcome WireSealer::Decode(std::string_view key_hex, uint8_t* value, size_t bytes, size_t expected_record_bytes,
                               std::vector<uint8_t>* scratch, const uint8_t** record, std::string* why) const {
  if (value == nullptr || bytes < kHeaderBytes) {
    *why = "value too short";
    return WireOutcome::kBad;
  }
  if (std::memcmp(value, kMagic, sizeof(kMagic)) != 0) {
    *why = "not an lmcache value";
    return WireOutcome::kBad;
  }
  if (value[Offsets::kVersion] != kVersion) {
    *why = "wire version " + std::to_string(value[Offsets::kVersion]) + "; this reader takes 2";
    return WireOutcome::kNotOurs;
  }
  const uint8_t codec = value[Offsets::kCodec], flags = value[Offsets::kFlags];
  if (codec > uint8_t(WireCodec::kFp8) || (flags & ~kFlagEncrypted) != 0) {
    *why = "unknown codec or flags";
    return WireOutcome::kBad;
  }
  const size_t body_bytes = bytes - kHeaderBytes;
  if (GetU64(value + Offsets::kBodyBytes) != body_bytes) {
    *why = "body size differs from the header";
    return WireOutcome::kBad;
  }
  if (std::memcmp(value + Offsets::kKeyId, key_id_, sizeof(key_id_)) != 0) {
    *why = "sealed under another secret";
    return WireOutcome::kNotOurs;
  }
  if (GetU64(value + Offsets::kRecordBytes) != expected_record_bytes) {
    *why = "record size differs from this engine's";
    return WireOutcome::kBad;
  }
  uint8_t* body = value + kHeaderBytes;
  AesGcm gcm(AesGcm::Mode::kOpen, key_, value + Offsets::kNonce);
  FeedCommonAad(&gcm, value, key_hex);
  const bool encrypted = (flags & kFlagEncrypted) != 0;
  if (encrypted) {
    gcm.Crypt(body, body, body_bytes);
  } else {
    gcm.Aad(body, body_bytes);
  }
  if (!gcm.Open(value + kTagAt)) {
    if (encrypted) OPENSSL_cleanse(body, body_bytes);  // garbage, and never to be looked at
    *why = "authentication failed (changed, moved to another key, or sealed with another secret)";
    return WireOutcome::kBad;
  }
  const WireCodec c = WireCodec(codec);
  if (c == WireCodec::kNone) {
    if (body_bytes != expected_record_bytes) {
      *why = "record size differs from the header";
      return WireOutcome::kBad;
    }
    *record = body;
    return WireOutcome::kOk;
  }
  if (!WireCodecAvailable(c)) {
    *why = "the value's codec is not built into this client";
    return WireOutcome::kCodecUnavailable;
  }
  if (!Decompress(c, body, body_bytes, expected_record_bytes, scratch, why)) return WireOutcome::kBad;
  *record = scratch->data();
  return WireOutcome::kOk;
}

}  // namespace lmcache
