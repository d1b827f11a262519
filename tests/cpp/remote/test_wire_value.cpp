// The remote wire format's native side (cpp/remote/wire_value.h): every
// codec round-trips, sealed or encrypted; each kind of damage gets the
// outcome that decides what the client does with the value (kBad: refuse
// and delete; kNotOurs, kCodecUnavailable: a miss, the value stays). The
// byte-for-byte agreement with python/lmcache/remote/wire.py is tested
// from Python (tests/python/c_api/test_c_remote.py).
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "record_seal.h"
#include "wire_value.h"

using namespace lmcache;

namespace {

const std::string kHex = "00112233445566778899aabbccddeeff";

std::vector<uint8_t> Record(size_t n, bool compressible) {
  std::vector<uint8_t> r(n);
  std::mt19937 rng(7);
  for (size_t i = 0; i < n; ++i) r[i] = compressible ? uint8_t(i / 97) : uint8_t(rng());
  return r;
}

std::unique_ptr<WireSealer> Sealer(const std::string& secret, WireCodec codec, bool encrypt) {
  std::unique_ptr<WireSealer> s;
  CHECK_OK(WireSealer::Create(RecordSealer::DeriveKey(secret), codec, encrypt, &s));
  return s;
}

WireOutcome Decode(const WireSealer& s, std::vector<uint8_t> value, size_t expected, std::vector<uint8_t>* out,
                   const std::string& hex = kHex) {
  std::vector<uint8_t> scratch;
  const uint8_t* record = nullptr;
  std::string why;
  const WireOutcome o = s.Decode(hex, value.data(), value.size(), expected, &scratch, &record, &why);
  if (o == WireOutcome::kOk) out->assign(record, record + expected);
  return o;
}

void TestRoundTrips() {
  for (WireCodec codec : {WireCodec::kNone, WireCodec::kZstd, WireCodec::kLz4}) {
    for (bool encrypt : {false, true}) {
      for (bool compressible : {false, true}) {
        auto s = Sealer("a secret of sixteen+ bytes", codec, encrypt);
        const auto record = Record(100000, compressible);
        std::vector<uint8_t> value, back;
        CHECK_OK(s->Encode(kHex, record.data(), record.size(), &value));
        if (codec != WireCodec::kNone && compressible) CHECK(value.size() < record.size() / 4);
        CHECK(Decode(*s, value, record.size(), &back) == WireOutcome::kOk);
        CHECK(back == record);
      }
    }
  }
}

void TestSealInPlaceMatchesEncode() {
  auto s = Sealer("a secret of sixteen+ bytes", WireCodec::kNone, false);
  CHECK(s->in_place());
  const auto record = Record(4096, false);
  std::vector<uint8_t> value(WireSealer::kHeaderBytes + record.size());
  std::memcpy(value.data() + WireSealer::kHeaderBytes, record.data(), record.size());
  CHECK_OK(s->SealInPlace(kHex, value.data(), record.size()));
  std::vector<uint8_t> back;
  CHECK(Decode(*s, value, record.size(), &back) == WireOutcome::kOk && back == record);
  CHECK(!Sealer("a secret of sixteen+ bytes", WireCodec::kZstd, false)->in_place());
  CHECK(!Sealer("a secret of sixteen+ bytes", WireCodec::kNone, true)->in_place());
}

void TestDamage() {
  for (bool encrypt : {false, true}) {
    auto s = Sealer("a secret of sixteen+ bytes", WireCodec::kZstd, encrypt);
    const auto record = Record(5000, true);
    std::vector<uint8_t> value, back;
    CHECK_OK(s->Encode(kHex, record.data(), record.size(), &value));
    // Any flipped byte: header field, nonce, tag or body.
    for (size_t at : {size_t(0), size_t(5), size_t(6), size_t(9), size_t(17), size_t(35), size_t(50),
                      value.size() - 1}) {
      auto bad = value;
      bad[at] ^= 0x10;
      CHECK(Decode(*s, bad, record.size(), &back) == WireOutcome::kBad);
    }
    // A changed key_id reads as another secret's value: not loaded, not deleted.
    auto renamed = value;
    renamed[30] ^= 0x10;
    CHECK(Decode(*s, renamed, record.size(), &back) == WireOutcome::kNotOurs);
    // Truncated, extended, too short for a header.
    CHECK(Decode(*s, std::vector<uint8_t>(value.begin(), value.end() - 1), record.size(), &back) == WireOutcome::kBad);
    auto longer = value;
    longer.push_back(0);
    CHECK(Decode(*s, longer, record.size(), &back) == WireOutcome::kBad);
    CHECK(Decode(*s, std::vector<uint8_t>(value.begin(), value.begin() + 20), record.size(), &back) ==
          WireOutcome::kBad);
    // Moved to another key's name, or not the size this engine stores.
    CHECK(Decode(*s, value, record.size(), &back, "ffffffffffffffffffffffffffffffff") == WireOutcome::kBad);
    CHECK(Decode(*s, value, record.size() + 1, &back) == WireOutcome::kBad);
    // Another secret, another wire version: not ours to judge.
    auto other = Sealer("another secret, also long", WireCodec::kZstd, encrypt);
    CHECK(Decode(*other, value, record.size(), &back) == WireOutcome::kNotOurs);
    auto v3 = value;
    v3[4] = 3;
    CHECK(Decode(*s, v3, record.size(), &back) == WireOutcome::kNotOurs);
  }
}

void TestFp8IsRecognisedNotDecoded() {
  CHECK(!WireCodecAvailable(WireCodec::kFp8));
  std::unique_ptr<WireSealer> s;
  CHECK_CODE(WireSealer::Create(RecordSealer::DeriveKey("a secret of sixteen+ bytes"), WireCodec::kFp8, false, &s),
             StatusCode::kInvalidArgument);
  WireCodec c;
  CHECK(ParseWireCodec("fp8", &c) && c == WireCodec::kFp8 && !ParseWireCodec("gzip", &c));
}

}  // namespace

int main() {
  TestRoundTrips();
  TestSealInPlaceMatchesEncode();
  TestDamage();
  TestFp8IsRecognisedNotDecoded();
  return 0;
}
