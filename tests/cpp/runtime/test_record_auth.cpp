// Records that leave the process are authentic, and what is damaged in host
// memory never leaves it. The attacks tried here: someone who can write the
// disk directory but lacks the key rewrites a record's payload and
// recomputes its (public) checksum; a record written under another key; a
// stray write into a record in host memory before it is written behind or
// exported. Also: encrypted records hold no plaintext on disk, and a
// runtime used in the child of a fork refuses every call (and its
// destruction there does not hang).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cache_runtime.h"
#include "token_calls.h"
#include "check.h"
#include "kv_test_cache.h"
#include "record_seal.h"

using namespace lmcache;
using namespace lmcache::testing;
namespace fs = std::filesystem;

namespace {

constexpr uint32_t kChunk = 16;
constexpr size_t kTokens = 3 * kChunk;

CacheDims Dims() {
  CacheDims d;
  d.layers = 3;
  d.blocks = 16;
  d.block_size = 8;
  return d;
}

std::string Key(char fill) { return std::string(RecordSealer::kKeyBytes, fill); }

std::unique_ptr<CacheRuntime> MakeRuntime(const KVLayout& layout, const std::string& dir, const std::string& key = "",
                                          bool encrypt = false) {
  RuntimeOptions o;
  o.chunk_size = kChunk;
  o.l1_capacity_bytes = 4 << 20;
  o.num_threads = 2;
  o.disk_dir = dir;
  o.disk_capacity_bytes = 64 << 20;
  o.record_key = key;
  o.encrypt_records = encrypt;
  std::unique_ptr<CacheRuntime> rt;
  CHECK_OK(CacheRuntime::Create(o, &rt));
  CHECK_OK(rt->RegisterLayout(layout));
  return rt;
}

std::vector<uint32_t> Tokens() {
  std::vector<uint32_t> t(kTokens);
  std::iota(t.begin(), t.end(), 7);
  return t;
}

std::vector<int64_t> Slots() {
  std::vector<int64_t> s(kTokens);
  std::iota(s.begin(), s.end(), 0);
  return s;
}

// Stores the prompt from `src` and waits for the disk.
void StoreAndFlush(CacheRuntime* rt, TestCache& src) {
  const auto tok = Tokens();
  const auto slots = Slots();
  size_t stored = 0;
  CHECK_OK(StoreTokens(*rt, tok.data(), tok.size(), src.Layout(), slots.data(), slots.size(), &stored));
  CHECK(stored == kTokens);
  rt->FlushWrites();
}

size_t LoadInto(CacheRuntime* rt, TestCache& dst) {
  const auto tok = Tokens();
  const auto slots = Slots();
  size_t loaded = 0;
  CHECK_OK(LoadTokens(*rt, tok.data(), tok.size(), dst.Layout(), slots.data(), slots.size(), &loaded));
  return loaded;
}

std::vector<fs::path> RecordFiles(const std::string& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".lmc") out.push_back(e.path());
  }
  return out;
}

std::vector<uint8_t> ReadFile(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void WriteFile(const fs::path& p, const std::vector<uint8_t>& data) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
}

ChunkShape Shape(const CacheDims& d) {
  return ChunkShape{d.layers, d.planes, d.heads, d.head_dim, d.dtype, kChunk};
}

std::string TempDir(const char* name) {
  const std::string dir = (fs::temp_directory_path() / (std::string("lmc-auth-") + name + "-" +
                                                        std::to_string(getpid()))).string();
  fs::remove_all(dir);
  return dir;
}

void TestSealerUnit() {
  const CacheDims d = Dims();
  const ChunkShape shape = Shape(d);
  std::vector<uint8_t> payload(shape.payload_bytes());
  std::mt19937 rng(3);
  for (auto& b : payload) b = uint8_t(rng());
  const ChunkKey key{0x1234, 0x5678};
  std::unique_ptr<RecordSealer> sealer, other;
  CHECK_OK(RecordSealer::Create(Key('a'), false, &sealer));
  CHECK_OK(RecordSealer::Create(Key('b'), false, &other));
  CHECK(sealer->key_id() != other->key_id());
  CHECK_CODE(RecordSealer::Create("short", false, &other), StatusCode::kInvalidArgument);
  CHECK_OK(RecordSealer::Create(Key('b'), false, &other));

  ChunkHeader h = MakeHeader(shape, key, PayloadChecksum(payload.data(), shape));
  ChunkHeader unsealed = h;
  CHECK_CODE(sealer->Open(&unsealed, payload.data(), payload.size()), StatusCode::kCorrupt);
  const std::vector<uint8_t> plain = payload;
  CHECK_OK(sealer->Seal(&h, payload.data(), payload.size()));
  CHECK(payload == plain);  // auth only: the payload is not touched
  ChunkHeader copy = h;
  CHECK_OK(sealer->Open(&copy, payload.data(), payload.size()));
  CHECK(copy.seal_flags == 0);
  // Any change anywhere fails: payload, a header field, the nonce, the key.
  payload[payload.size() / 2] ^= 1;
  copy = h;
  CHECK_CODE(sealer->Open(&copy, payload.data(), payload.size()), StatusCode::kCorrupt);
  payload[payload.size() / 2] ^= 1;
  copy = h;
  copy.num_tokens += 1;
  CHECK_CODE(sealer->Open(&copy, payload.data(), payload.size()), StatusCode::kCorrupt);
  copy = h;
  copy.seal_nonce[0] ^= 1;
  CHECK_CODE(sealer->Open(&copy, payload.data(), payload.size()), StatusCode::kCorrupt);
  copy = h;
  CHECK_CODE(other->Open(&copy, payload.data(), payload.size()), StatusCode::kCorrupt);
  copy = h;
  copy.seal_key_id = other->key_id();  // claims the other key: its tag still fails
  CHECK_CODE(other->Open(&copy, payload.data(), payload.size()), StatusCode::kCorrupt);

  // Encrypted: the payload becomes ciphertext and comes back whole.
  std::unique_ptr<RecordSealer> enc;
  CHECK_OK(RecordSealer::Create(Key('a'), true, &enc));
  h = MakeHeader(shape, key, PayloadChecksum(payload.data(), shape));
  CHECK_OK(enc->Seal(&h, payload.data(), payload.size()));
  CHECK(payload != plain);
  CHECK_OK(enc->Open(&h, payload.data(), payload.size()));
  CHECK(payload == plain);
  std::printf("sealer: ok\n");
}

// The attack: rewrite a record's payload on disk and fix its checksum with
// the public function. The next process refuses it and deletes it.
void TestForgedDiskRecordIsRefused() {
  const std::string dir = TempDir("forge");
  TestCache src("PBTHD", Dims()), dst("PBTHD", Dims());
  src.FillRandom(1);
  {
    auto rt = MakeRuntime(src.Layout(), dir);
    StoreAndFlush(rt.get(), src);
  }
  const ChunkShape shape = Shape(Dims());
  const auto files = RecordFiles(dir);
  CHECK(files.size() == 3);
  for (const auto& f : files) {
    std::vector<uint8_t> rec = ReadFile(f);
    CHECK(rec.size() >= shape.record_bytes());
    rec[sizeof(ChunkHeader) + 5] ^= 0x40;  // the attacker's values
    ChunkHeader h;
    std::memcpy(&h, rec.data(), sizeof(h));
    h.checksum = PayloadChecksum(rec.data() + sizeof(ChunkHeader), shape);
    std::memcpy(rec.data(), &h, sizeof(h));
    WriteFile(f, rec);
  }
  auto rt = MakeRuntime(src.Layout(), dir);
  CHECK(LoadInto(rt.get(), dst) == 0);  // a miss, never the attacker's bytes
  const RuntimeStats s = rt->Stats();
  CHECK(s.load_errors >= 1);
  CHECK(s.loaded_tokens == 0);
  rt->Close();
  CHECK(RecordFiles(dir).size() < 3);  // what was read and refused is deleted (a proven forgery)
  fs::remove_all(dir);
  std::printf("forged disk record: refused\n");
}

// Intact records come back across a restart, under the key the disk tier
// made for itself (a private file) or under a configured key; a different
// configured key refuses them all.
void TestRestartAndKeys() {
  const std::string dir = TempDir("keys");
  TestCache src("PBTHD", Dims());
  src.FillRandom(2);
  {
    auto rt = MakeRuntime(src.Layout(), dir);
    StoreAndFlush(rt.get(), src);
  }
  bool found_key = false;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().filename() == "record.key") {
      struct stat st;
      CHECK(lstat(e.path().c_str(), &st) == 0);
      CHECK(S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0600 && st.st_size == 32);
      found_key = true;
    }
  }
  CHECK(found_key);
  {
    TestCache dst("PBTHD", Dims());
    auto rt = MakeRuntime(src.Layout(), dir);
    CHECK(LoadInto(rt.get(), dst) == kTokens);
    for (uint32_t l = 0; l < Dims().layers; ++l)
      for (int64_t t = 0; t < int64_t(kTokens); ++t)
        CHECK(std::memcmp(dst.Vec(l, 1, t, 1), src.Vec(l, 1, t, 1), dst.vec_bytes()) == 0);
  }
  fs::remove_all(dir);
  {
    auto rt = MakeRuntime(src.Layout(), dir, Key('k'));
    StoreAndFlush(rt.get(), src);
  }
  {
    TestCache dst("PBTHD", Dims());
    auto rt = MakeRuntime(src.Layout(), dir, Key('x'));
    CHECK(LoadInto(rt.get(), dst) == 0);
    CHECK(rt->Stats().load_errors >= 1);
  }
  fs::remove_all(dir);
  std::printf("restart and keys: ok\n");
}

void TestEncryptedRecordsHoldNoPlaintext() {
  const std::string dir = TempDir("enc");
  TestCache src("PBTHD", Dims());
  src.FillRandom(4);
  {
    auto rt = MakeRuntime(src.Layout(), dir, Key('e'), /*encrypt=*/true);
    StoreAndFlush(rt.get(), src);
  }
  // No head vector of the cache appears in any record file.
  const std::vector<uint8_t> needle(src.Vec(1, 0, 3, 1), src.Vec(1, 0, 3, 1) + src.vec_bytes());
  for (const auto& f : RecordFiles(dir)) {
    const std::vector<uint8_t> rec = ReadFile(f);
    CHECK(std::search(rec.begin(), rec.end(), needle.begin(), needle.end()) == rec.end());
  }
  TestCache dst("PBTHD", Dims());
  auto rt = MakeRuntime(src.Layout(), dir, Key('e'), /*encrypt=*/true);
  CHECK(LoadInto(rt.get(), dst) == kTokens);
  CHECK(std::memcmp(dst.Vec(1, 0, 3, 1), needle.data(), needle.size()) == 0);
  rt.reset();
  fs::remove_all(dir);
  std::printf("encrypted records: ok\n");
}

// A stray write into host memory is caught on the way out: not written to
// disk, not exported, dropped and counted.
void TestL1CorruptionDoesNotLeave() {
  const std::string dir = TempDir("l1");
  TestCache src("PBTHD", Dims());
  src.FillRandom(5);
  auto rt = MakeRuntime(src.Layout(), dir);
  const auto tok = Tokens();
  const auto slots = Slots();
  std::vector<ChunkKey> keys;
  CHECK_OK(rt->ComputeKeys(tok.data(), tok.size(), &keys));
  // Corrupt before write-behind runs: a store, then damage, then the flush.
  size_t stored = 0;
  CHECK_OK(StoreTokens(*rt, tok.data(), tok.size(), src.Layout(), slots.data(), slots.size(), &stored));
  CHECK_OK(rt->CorruptChunkForTesting(keys[2]));
  std::vector<uint8_t> buf(rt->RecordBytes());
  size_t got = 0;
  // Refused either way: by the export's own check, or dropped already by the write-behind's.
  const Status exported = rt->ExportRecord(keys[2], buf.data(), buf.size(), &got);
  CHECK(exported.code() == StatusCode::kCorrupt || exported.code() == StatusCode::kNotFound);
  CHECK_OK(rt->ExportRecord(keys[0], buf.data(), buf.size(), &got));
  rt->FlushWrites();
  const RuntimeStats s = rt->Stats();
  CHECK(s.l1_corrupt_chunks >= 1);
  rt->Close();
  rt.reset();
  // The damaged bytes were never persisted under a fresh seal: whatever
  // the next process loads is the original KV. (The writer may have written
  // the chunk before the damage; then the intact record is what it finds.)
  auto again = MakeRuntime(src.Layout(), dir);
  TestCache dst("PBTHD", Dims());
  const size_t loaded = LoadInto(again.get(), dst);
  CHECK(loaded >= 2 * kChunk);
  for (uint32_t l = 0; l < Dims().layers; ++l)
    for (int64_t t = 0; t < int64_t(loaded); ++t)
      for (uint32_t p = 0; p < 2; ++p)
        for (uint32_t h = 0; h < 2; ++h) CHECK(std::memcmp(dst.Vec(l, p, t, h), src.Vec(l, p, t, h), dst.vec_bytes()) == 0);
  again.reset();
  fs::remove_all(dir);
  std::printf("L1 corruption: dropped, never persisted or exported\n");
}

void TestForkedChildIsRefused() {
  const std::string dir = TempDir("fork");
  TestCache src("PBTHD", Dims());
  src.FillRandom(6);
  auto rt = MakeRuntime(src.Layout(), dir);
  StoreAndFlush(rt.get(), src);
  // A load left open across the fork: the child may not finish it either.
  const auto open_tok = Tokens();
  const auto open_slots = Slots();
  TestCache open_dst("PBTHD", Dims());
  std::unique_ptr<PendingLoad> open_load;
  CHECK_OK(BeginLoadTokens(*rt, open_tok.data(), open_tok.size(), open_dst.Layout(), open_slots.data(), open_slots.size(),
                         0, &open_load));
  const pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    alarm(20);  // a hang fails the test instead of stalling it
    const auto tok = Tokens();
    size_t hit = 0;
    const Status st = LookupTokens(*rt, tok.data(), tok.size(), &hit);
    rt->FlushWrites();  // returns at once: the writer is the parent's
    const bool refused = st.code() == StatusCode::kInvalidState && rt->InForkedChild() &&
                         open_load->LoadLayers(1).code() == StatusCode::kInvalidState &&
                         open_load->Finish().code() == StatusCode::kInvalidState;
    (void)open_load.release();  // the parent's, like the runtime
    (void)rt.release();  // what an owner does in a child (see InForkedChild)
    _exit(refused ? 0 : 3);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_OK(open_load->LoadLayers(Dims().layers));
  CHECK_OK(open_load->Finish());
  // The parent is unaffected.
  TestCache dst("PBTHD", Dims());
  CHECK(LoadInto(rt.get(), dst) == kTokens);
  rt.reset();
  fs::remove_all(dir);
  std::printf("forked child: refused\n");
}

}  // namespace

int main() {
  if (!RecordSealer::Available()) {
    std::printf("skipped: built without OpenSSL\n");
    return 77;
  }
  TestSealerUnit();
  TestForgedDiskRecordIsRefused();
  TestRestartAndKeys();
  TestEncryptedRecordsHoldNoPlaintext();
  TestL1CorruptionDoesNotLeave();
  TestForkedChildIsRefused();
  return 0;
}
