// The disk tier through the runtime: round trips in every layout and both I/O
// backends, persistence across restarts and kill -9, corruption and
// truncation, ENOSPC, the directory lock. (The tier on a shared host:
// test_disk_security.cpp.)
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cache_runtime.h"
#include "token_calls.h"
#include "check.h"
#include "disk_tier.h"
#include "kv_test_cache.h"

using namespace lmcache;
using namespace lmcache::testing;
namespace fs = std::filesystem;

namespace {

constexpr uint32_t kChunk = 16;

std::string TempDir(const std::string& name) {
  std::string dir = fs::temp_directory_path() / ("lmcache-disk-test-" + std::to_string(getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  chmod(dir.c_str(), 0700);  // the tier refuses a directory others can write to
  return dir;
}

// Where the tier keeps its files inside the directory it is given.
std::string Records(const std::string& dir) { return dir + "/lmcache-records"; }

std::unique_ptr<CacheRuntime> Open(const std::string& dir, bool threads, uint64_t l1_bytes = 16 << 20,
                                   uint64_t disk_bytes = 256 << 20) {
  RuntimeOptions o;
  o.chunk_size = kChunk;
  o.l1_capacity_bytes = l1_bytes;
  o.num_threads = 2;
  o.model_id = "disk-test";
  o.disk_dir = dir;
  o.disk_capacity_bytes = disk_bytes;
  o.disk_io_backend = threads ? "threads" : "auto";
  o.disk_lock_timeout_s = 0.2;
  std::unique_ptr<CacheRuntime> rt;
  CHECK_OK(CacheRuntime::Create(o, &rt));
  return rt;
}

std::vector<uint32_t> Tokens(uint32_t doc, size_t n) {
  std::vector<uint32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = doc * 1000003u + uint32_t(i);
  return t;
}

// Stores `doc` from src, checks a load into a zeroed cache gives the same bytes.
void StoreDoc(CacheRuntime& rt, TestCache& src, uint32_t doc, size_t n) {
  const auto tokens = Tokens(doc, n);
  std::vector<int64_t> slots(n);
  std::iota(slots.begin(), slots.end(), int64_t(doc % 4) * int64_t(n));
  size_t stored = 0;
  CHECK_OK(StoreTokens(rt, tokens.data(), n, src.Layout(), slots.data(), n, &stored));
}

size_t LoadDocAndCompare(CacheRuntime& rt, TestCache& src, uint32_t doc, size_t n) {
  TestCache dst("PBTHD", src.dims());
  const auto tokens = Tokens(doc, n);
  std::vector<int64_t> src_slots(n), dst_slots(n);
  std::iota(src_slots.begin(), src_slots.end(), int64_t(doc % 4) * int64_t(n));
  std::iota(dst_slots.begin(), dst_slots.end(), int64_t(0));
  size_t loaded = 0;
  CHECK_OK(LoadTokens(rt, tokens.data(), n, dst.Layout(), dst_slots.data(), n, &loaded));
  const CacheDims& d = src.dims();
  for (size_t i = 0; i < loaded; ++i)
    for (uint32_t l = 0; l < d.layers; ++l)
      for (uint32_t p = 0; p < d.planes; ++p)
        for (uint32_t h = 0; h < d.heads; ++h)
          CHECK(std::memcmp(dst.Vec(l, p, dst_slots[i], h), src.Vec(l, p, src_slots[i], h), src.vec_bytes()) == 0);
  return loaded;
}

CacheDims Dims() {
  CacheDims d;
  d.layers = 2;
  d.heads = 2;
  d.head_dim = 64;
  d.block_size = 8;
  d.blocks = 64;  // 512 slots: room for 4 documents of 128 tokens
  d.dtype = DType::kBFloat16;
  return d;
}

// Every layout of the layout tests, stored, written behind, dropped from L1, promoted back.
void TestRoundTripsBothBackends() {
  const char* orders[] = {"PBTHD", "BPTHD", "BPHTD", "PLSHD", "PSLHD", "PBLTHD"};
  for (bool threads : {false, true}) {
    for (const char* order : orders) {
      const std::string dir = TempDir(std::string("rt-") + order + (threads ? "-t" : "-u"));
      auto rt = Open(dir, threads);
      TestCache src(order, Dims()), dst(order, Dims());
      src.FillRandom(11);
      const size_t n = 3 * kChunk;
      const auto tokens = Tokens(1, n);
      std::vector<int64_t> ss(n), ds(n);
      std::iota(ss.begin(), ss.end(), 40);
      std::iota(ds.begin(), ds.end(), 200);
      CHECK_OK(rt->RegisterLayout(src.Layout()));
      size_t out = 0;
      CHECK_OK(StoreTokens(*rt, tokens.data(), n, src.Layout(), ss.data(), n, &out));
      rt->FlushWrites();
      CHECK_OK(rt->Clear(&out, /*include_disk=*/false));  // only the disk has it now
      CHECK_OK(LookupTokens(*rt, tokens.data(), n, &out));
      CHECK(out == n);
      CHECK_OK(LoadTokens(*rt, tokens.data(), n, dst.Layout(), ds.data(), n, &out));
      CHECK(out == n);
      for (size_t i = 0; i < n; ++i)
        for (uint32_t l = 0; l < 2; ++l)
          for (uint32_t p = 0; p < 2; ++p)
            for (uint32_t h = 0; h < 2; ++h) CHECK(std::memcmp(dst.Vec(l, p, ds[i], h), src.Vec(l, p, ss[i], h), 128) == 0);
      const RuntimeStats s = rt->Stats();
      if (!(s.disk.writes == 3 && s.promoted_chunks == 3 && s.load_errors == 0)) {
        std::printf("writes=%llu promoted=%llu load_errors=%llu\n", (unsigned long long)s.disk.writes,
                    (unsigned long long)s.promoted_chunks, (unsigned long long)s.load_errors);
      }
      CHECK(s.disk.writes == 3 && s.promoted_chunks == 3 && s.load_errors == 0);
      std::printf("  ok: %s via %s\n", order, rt->disk_backend().c_str());
      rt->Close();
      fs::remove_all(dir);
    }
  }
}

void TestRestartAndCorruption() {
  const std::string dir = TempDir("restart");
  TestCache src("PBTHD", Dims());
  src.FillRandom(5);
  {
    auto rt = Open(dir, false);
    CHECK_OK(rt->RegisterLayout(src.Layout()));
    for (uint32_t doc = 0; doc < 4; ++doc) StoreDoc(*rt, src, doc, 128);
    rt->Close();  // a clean exit finishes queued writes
  }
  // Leftovers of a crash: a torn temp file and a file that is not a whole record.
  for (const char* name : {"0123456789abcdef0123456789abcdef.tmp", "fedcba9876543210fedcba9876543210.lmc"}) {
    std::FILE* f = std::fopen((Records(dir) + "/" + name).c_str(), "w");
    std::fputs("short", f);
    std::fclose(f);
  }
  {
    auto rt = Open(dir, false);
    CHECK_OK(rt->RegisterLayout(src.Layout()));
    RuntimeStats s = rt->Stats();
    CHECK(s.disk.recovered_records == 32);  // 4 documents x 8 chunks
    CHECK(s.disk.discarded_at_start == 2);
    for (uint32_t doc = 0; doc < 4; ++doc) CHECK(LoadDocAndCompare(*rt, src, doc, 128) == 128);
    rt->Close();
  }
  // Flip one payload byte of one record of doc 1, truncate one of doc 2 to a page.
  std::vector<ChunkKey> keys1, keys2;
  {
    auto rt = Open(dir, false);
    CHECK_OK(rt->RegisterLayout(src.Layout()));
    const auto t1 = Tokens(1, 128), t2 = Tokens(2, 128);
    CHECK_OK(rt->ComputeKeys(t1.data(), 128, &keys1));
    CHECK_OK(rt->ComputeKeys(t2.data(), 128, &keys2));
    rt->Close();
  }
  {
    const std::string p = Records(dir) + "/" + keys1[3].Hex() + ".lmc";
    const int fd = open(p.c_str(), O_RDWR);
    CHECK(fd >= 0);
    uint8_t b;
    CHECK(pread(fd, &b, 1, sizeof(ChunkHeader) + 1000) == 1);
    b ^= 0x40;
    CHECK(pwrite(fd, &b, 1, sizeof(ChunkHeader) + 1000) == 1);
    close(fd);
    CHECK(truncate((Records(dir) + "/" + keys2[5].Hex() + ".lmc").c_str(), 4096) == 0);
  }
  {
    auto rt = Open(dir, true);
    CHECK_OK(rt->RegisterLayout(src.Layout()));
    CHECK(LoadDocAndCompare(*rt, src, 1, 128) == 3 * kChunk);  // stops before the flipped record
    CHECK(LoadDocAndCompare(*rt, src, 2, 128) == 5 * kChunk);  // stops before the truncated one
    CHECK(LoadDocAndCompare(*rt, src, 3, 128) == 128);
    const RuntimeStats s = rt->Stats();
    CHECK(s.load_errors == 2 && s.disk.removed_corrupt == 2);
    size_t hit = 0;
    const auto t1 = Tokens(1, 128);
    CHECK_OK(LookupTokens(*rt, t1.data(), 128, &hit));
    CHECK(hit == 3 * kChunk);  // the bad record is gone for good
    rt->Close();
  }
  {
    // A record deleted behind the tier's back (another tool, a clear racing a
    // rewrite): one miss, then the index forgets it.
    auto rt = Open(dir, true);
    CHECK_OK(rt->RegisterLayout(src.Layout()));
    std::vector<ChunkKey> keys0;
    const auto t0 = Tokens(0, 128);
    CHECK_OK(rt->ComputeKeys(t0.data(), 128, &keys0));
    CHECK(fs::remove(Records(dir) + "/" + keys0[4].Hex() + ".lmc"));
    CHECK(LoadDocAndCompare(*rt, src, 0, 128) == 4 * kChunk);
    size_t hit = 0;
    CHECK_OK(LookupTokens(*rt, t0.data(), 128, &hit));
    CHECK(hit == 4 * kChunk);
    rt->Close();
  }
  fs::remove_all(dir);
  std::printf("  ok: restart, torn files, byte flip, truncation\n");
}

void TestLock() {
  const std::string dir = TempDir("lock");
  auto a = Open(dir, false);
  RuntimeOptions o;
  o.chunk_size = kChunk;
  o.disk_dir = dir;
  o.disk_capacity_bytes = 1 << 20;
  o.disk_lock_timeout_s = 0.2;
  std::unique_ptr<CacheRuntime> b;
  const Status st = CacheRuntime::Create(o, &b);
  CHECK(st.code() == StatusCode::kInvalidState);
  CHECK(st.message().find(".lock") != std::string::npos);
  a->Close();  // releases the lock
  CHECK_OK(CacheRuntime::Create(o, &b));
  fs::remove_all(dir);
  std::printf("  ok: directory lock\n");
}

void TestCapacityEviction() {
  const std::string dir = TempDir("cap");
  // Each record is one 8 KiB page pair; room for 10 on disk.
  TestCache src("PBTHD", Dims());
  src.FillRandom(8);
  auto rt = Open(dir, false, 16 << 20, 10 * 8192);
  CHECK_OK(rt->RegisterLayout(src.Layout()));
  for (uint32_t doc = 0; doc < 4; ++doc) {
    StoreDoc(*rt, src, doc, 128);
    rt->FlushWrites();
  }
  const RuntimeStats s = rt->Stats();
  CHECK(s.disk.records <= 10 && s.disk.used_bytes <= 10 * 8192 && s.disk.evictions >= 22);
  rt->Close();
  fs::remove_all(dir);
  std::printf("  ok: disk capacity and eviction\n");
}

void TestEnospc() {
  const std::string dir = TempDir("enospc");
  if (mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=64k,mode=0700") != 0) {
    std::printf("  SKIPPED ENOSPC test: cannot mount a small tmpfs (%s); needs root\n", std::strerror(errno));
    return;
  }
  TestCache src("PBTHD", Dims());
  src.FillRandom(9);
  {
    auto rt = Open(dir, false, 16 << 20, 1 << 30);  // the tier thinks it has 1 GiB; the filesystem has 64 KiB
    CHECK_OK(rt->RegisterLayout(src.Layout()));
    for (uint32_t doc = 0; doc < 4; ++doc) StoreDoc(*rt, src, doc, 128);
    rt->FlushWrites();
    const RuntimeStats s = rt->Stats();
    CHECK(s.disk.write_enospc > 0 && s.disk.writes > 0);
    // The engine keeps being served from L1, and what reached the disk is intact.
    for (uint32_t doc = 0; doc < 4; ++doc) CHECK(LoadDocAndCompare(*rt, src, doc, 128) == 128);
    size_t removed = 0;
    CHECK_OK(rt->Clear(&removed, false));
    for (uint32_t doc = 0; doc < 4; ++doc) LoadDocAndCompare(*rt, src, doc, 128);
    CHECK(rt->Stats().load_errors == 0);
    std::printf("  ok: ENOSPC is a miss (%llu writes failed, %llu made it)\n",
                (unsigned long long)s.disk.write_enospc, (unsigned long long)s.disk.writes);
    rt->Close();
  }
  umount(dir.c_str());
  fs::remove_all(dir);
}

// kill -9 in the middle of a write storm: every record found afterwards is whole.
void TestKillNine() {
  const std::string dir = TempDir("kill9");
  TestCache src("PBTHD", Dims());
  src.FillRandom(21);
  int ready[2];
  CHECK(pipe(ready) == 0);
  const pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    auto rt = Open(dir, false, 4 << 20, 1ull << 30);
    CHECK_OK(rt->RegisterLayout(src.Layout()));
    for (uint32_t doc = 0;; ++doc) {
      StoreDoc(*rt, src, doc, 128);
      if (doc == 8) (void)!write(ready[1], "x", 1);
    }
  }
  char x;
  CHECK(read(ready[0], &x, 1) == 1);
  usleep(150 * 1000);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  auto rt = Open(dir, false, 64 << 20, 1ull << 30);
  CHECK_OK(rt->RegisterLayout(src.Layout()));
  const RuntimeStats before = rt->Stats();
  CHECK(before.disk.recovered_records > 8);
  // Every record file left is whole: header and checksum hold.
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(Records(dir))) {
    if (entry.path().extension() != ".lmc") continue;
    std::vector<uint8_t> buf(fs::file_size(entry.path()));
    std::FILE* f = std::fopen(entry.path().c_str(), "rb");
    CHECK(f != nullptr && std::fread(buf.data(), 1, buf.size(), f) == buf.size());
    std::fclose(f);
    ChunkHeader h;
    std::memcpy(&h, buf.data(), sizeof(h));
    const ChunkShape shape{h.num_layers, h.num_planes, h.num_heads, h.head_dim, DType(h.dtype), h.num_tokens, 0};
    CHECK(h.magic == kChunkMagic && buf.size() >= shape.record_bytes());
    CHECK(PayloadChecksum(buf.data() + sizeof(h), shape) == h.checksum);
    ++files;
  }
  CHECK(files == before.disk.recovered_records);
  // And loads through the runtime give the bytes that were stored.
  size_t loaded_chunks = 0;
  for (uint32_t doc = 0; doc < 3000; ++doc) loaded_chunks += LoadDocAndCompare(*rt, src, doc, 128) / kChunk;
  CHECK(loaded_chunks > 0);
  const RuntimeStats s = rt->Stats();
  CHECK(s.load_errors == 0 && s.disk.removed_corrupt == 0);
  std::printf("  ok: kill -9: %llu records recovered, %llu torn files discarded, %zu chunks verified\n",
              (unsigned long long)before.disk.recovered_records, (unsigned long long)before.disk.discarded_at_start,
              loaded_chunks);
  rt->Close();
  fs::remove_all(dir);
}

}  // namespace

int main() {
  TestRoundTripsBothBackends();
  TestRestartAndCorruption();
  TestLock();
  TestCapacityEviction();
  TestEnospc();
  TestKillNine();
  std::puts("test_disk_tier: ok");
  return 0;
}
