#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "host_pool.h"

using namespace lmcache;

static void TestBasics() {
  std::unique_ptr<HostPool> pool;
  CHECK_OK(HostPool::Create(10000, 10 * 12288, &pool));
  CHECK(pool->slab_bytes() == 12288);  // rounded up to 4096
  CHECK(pool->num_slabs() == 10);
  CHECK(reinterpret_cast<uintptr_t>(pool->SlabAddress(0)) % HostPool::kAlignment == 0);
  std::set<int64_t> got;
  for (int i = 0; i < 10; ++i) {
    const int64_t s = pool->Allocate();
    CHECK(s >= 0 && s < 10);
    CHECK(got.insert(s).second);
    std::memset(pool->SlabAddress(s), i, pool->slab_bytes());  // every byte is writable
  }
  CHECK(pool->Allocate() == HostPool::kNoSlab);  // exhaustion reported at once
  CHECK(pool->num_free() == 0);
  CHECK_OK(pool->Free(3));
  CHECK_CODE(pool->Free(3), StatusCode::kInternal);   // double free caught
  CHECK_CODE(pool->Free(99), StatusCode::kInternal);  // foreign slab caught
  CHECK(pool->Allocate() == 3);
}

static void TestTooSmall() {
  std::unique_ptr<HostPool> pool;
  CHECK_CODE(HostPool::Create(1 << 20, 1000, &pool), StatusCode::kInvalidArgument);
  CHECK_CODE(HostPool::Create(0, 1 << 20, &pool), StatusCode::kInvalidArgument);
}

static void TestConcurrent() {
  std::unique_ptr<HostPool> pool;
  CHECK_OK(HostPool::Create(4096, 64 * 4096, &pool));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        const int64_t s = pool->Allocate();
        if (s == HostPool::kNoSlab) continue;
        // Exclusive ownership: nobody else writes this slab while we hold it.
        uint8_t* p = pool->SlabAddress(s);
        p[0] = static_cast<uint8_t>(t);
        p[4095] = static_cast<uint8_t>(t);
        if (p[0] != t || p[4095] != t) failures++;
        if (!pool->Free(s).ok()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures.load() == 0);
  CHECK(pool->num_free() == 64);
}

// The pool holds every tenant's KV: a core dump must not. The kernel lists
// MADV_DONTDUMP as "dd" in the VmFlags of each mapping in /proc/self/smaps.
static void TestExcludedFromCoreDumps() {
  std::unique_ptr<HostPool> pool;
  CHECK_OK(HostPool::Create(4096, 64 * 4096, &pool));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(pool->SlabAddress(0));
  const uintptr_t end = begin + pool->region_bytes();
  std::ifstream smaps("/proc/self/smaps");
  CHECK(smaps.good());
  std::string line;
  uintptr_t lo = 0, hi = 0, covered = 0;
  while (std::getline(smaps, line)) {
    unsigned long long a, b;
    if (std::sscanf(line.c_str(), "%llx-%llx ", &a, &b) == 2) {
      lo = a;  // the header line of the next mapping ("start-end perms ...")
      hi = b;
      continue;
    }
    if (line.rfind("VmFlags:", 0) != 0 || hi <= begin || lo >= end) continue;
    std::istringstream flags(line.substr(8));
    bool dd = false;
    for (std::string f; flags >> f;) dd |= f == "dd";
    CHECK(dd);
    covered += std::min(hi, end) - std::max(lo, begin);
  }
  CHECK(covered == pool->region_bytes());  // every byte of the region was seen, and all are excluded
}

int main() {
  TestBasics();
  TestTooSmall();
  TestConcurrent();
  TestExcludedFromCoreDumps();
  std::puts("test_host_pool: ok");
  return 0;
}
