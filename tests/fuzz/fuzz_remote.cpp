// libFuzzer target: the native remote client's two parsers of bytes that
// come from the store (whoever answers in its place).
//  - byte 0 even: RESP replies (RespConnection), as a server would send
//    them to a pipeline of four commands, over a socketpair;
//  - byte 0 odd: a wire value (WireSealer::Decode), either as it is or,
//    with byte 1 odd, resealed with a valid tag over the fuzzed body, so
//    that the zstd and lz4 decoders see arbitrary frames.
// Either may refuse, never crash, read out of bounds, allocate beyond its
// bound, or hand out a record of another size than expected.
//
//   fuzz_remote -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/remote
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "aes_gcm.h"
#include "record_seal.h"
#include "resp_connection.h"
#include "wire_value.h"

using namespace lmcache;

namespace {

constexpr size_t kRecordBytes = 4096;
constexpr size_t kMaxBulk = 8192;
const std::string kHex = "0123456789abcdeffedcba9876543210";

const std::string& Key() {
  static const std::string key = RecordSealer::DeriveKey("fuzzing secret, sixteen+");
  return key;
}

void FuzzResp(const uint8_t* data, size_t size) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return;
  // The "server" has said everything it will say: the client sees EOF after it.
  size_t off = 0;
  while (off < size) {
    const ssize_t n = write(fds[1], data + off, size - off);
    if (n <= 0) break;
    off += size_t(n);
  }
  shutdown(fds[1], SHUT_WR);
  auto c = RespConnection::AdoptForTesting(fds[0], 0.05, kMaxBulk);
  for (int i = 0; i < 4; ++i) c->Append({"GET", "lmcache:key"});
  std::vector<RespReply> replies;
  if (c->Exchange(&replies).ok()) {
    if (replies.size() != 4) __builtin_trap();
    for (const RespReply& r : replies) {
      if (r.bulk.size() > kMaxBulk) __builtin_trap();
    }
  }
  close(fds[1]);
}

// A tag that verifies over (header, key name, body), as the writer computes it.
void Reseal(std::vector<uint8_t>* v, bool encrypt) {
  uint8_t* h = v->data();
  h[6] = encrypt ? 1 : 0;
  const uint64_t body = v->size() - WireSealer::kHeaderBytes;
  for (int i = 0; i < 8; ++i) h[16 + i] = uint8_t(body >> (8 * i));
  const uint64_t id = RecordSealer::KeyId(Key());
  std::memcpy(h + 24, &id, 8);
  AesGcm gcm(AesGcm::Mode::kSeal, reinterpret_cast<const uint8_t*>(Key().data()), h + 32);
  gcm.Aad(h, 44);
  const uint8_t len[2] = {uint8_t(kHex.size()), 0};
  gcm.Aad(len, 2);
  gcm.Aad(kHex.data(), kHex.size());
  uint8_t* b = h + WireSealer::kHeaderBytes;
  if (encrypt) {
    gcm.Crypt(b, b, body);
  } else {
    gcm.Aad(b, body);
  }
  gcm.Seal(h + 44);
}

void FuzzWire(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const bool reseal = data[0] & 1, encrypt = data[0] & 2;
  std::vector<uint8_t> value(data + 1, data + size);
  if (reseal) {
    if (value.size() < WireSealer::kHeaderBytes) value.resize(WireSealer::kHeaderBytes);
    std::memcpy(value.data(), "LMCW\x02", 5);
    value[5] %= 3;  // none, zstd, lz4
    for (int i = 0; i < 8; ++i) value[8 + i] = uint8_t(uint64_t(kRecordBytes) >> (8 * i));
    Reseal(&value, encrypt);
  }
  std::unique_ptr<WireSealer> sealer;
  if (!WireSealer::Create(Key(), WireCodec::kNone, false, &sealer).ok()) __builtin_trap();
  std::vector<uint8_t> scratch;
  const uint8_t* record = nullptr;
  std::string why;
  if (sealer->Decode(kHex, value.data(), value.size(), kRecordBytes, &scratch, &record, &why) == WireOutcome::kOk) {
    // A whole record of the expected size, inside the value or the scratch buffer.
    const bool in_value = record >= value.data() && record + kRecordBytes <= value.data() + value.size();
    const bool in_scratch = scratch.size() == kRecordBytes && record == scratch.data();
    if (!in_value && !in_scratch) __builtin_trap();
    volatile uint8_t sink = record[kRecordBytes - 1];
    (void)sink;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  if (data[0] & 1) {
    FuzzWire(data + 1, size - 1);
  } else {
    FuzzResp(data + 1, size - 1);
  }
  return 0;
}
