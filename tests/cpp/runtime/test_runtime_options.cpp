// The options and stats tables: defaults, parsing by name with clear errors,
// round trips through GetOption, and the stat names the bindings and the C
// API rely on.
#include <cstring>
#include <set>
#include <string>

#include "check.h"
#include "runtime_options.h"
#include "runtime_stats.h"

using namespace lmcache;

namespace {

bool Mentions(const Status& st, const char* a, const char* b = "") {
  return !st.ok() && st.message().find(a) != std::string::npos && st.message().find(b) != std::string::npos;
}

void TestDefaults() {
  const RuntimeOptions o;
  CHECK(o.chunk_size == 256);
  CHECK(o.l1_capacity_bytes == 2ull << 30);
  CHECK(o.disk_capacity_bytes == 16ull << 30);
  CHECK(o.disk_io_backend == "auto" && o.key_scheme == "lmcache" && o.eviction_policy == "lru");
  CHECK(o.disk_dir.empty() && o.num_threads == 0 && o.disk_queue_depth == 32 && o.write_behind_chunks == 64);
  CHECK(o.tp_rank == 0 && o.tp_size == 1 && o.record_key.empty());

  const OptionInfo* l1 = FindOption("l1_capacity_gb");
  CHECK(l1 != nullptr && std::strcmp(l1->type, "float") == 0 && l1->default_text == "2.0");
  CHECK(l1->minimum && *l1->minimum == 0.0 && l1->maximum && *l1->maximum == 1048576.0);
  const OptionInfo* cs = FindOption("chunk_size");
  CHECK(cs != nullptr && std::strcmp(cs->type, "int") == 0 && cs->default_text == "256");
  const OptionInfo* io = FindOption("disk_io_backend");
  CHECK(io != nullptr && io->choices.size() == 2 && io->choices[1] == "threads" && !io->minimum);
  CHECK(FindOption("tp_rank") == nullptr && FindOption("record_key") == nullptr);

  // Every row's default reads back through its own parser.
  std::set<std::string> names;
  for (const OptionInfo& info : OptionTable()) {
    CHECK(names.insert(info.name).second);
    CHECK(std::strlen(info.doc) > 0);
    RuntimeOptions again;
    CHECK_OK(SetOption(&again, info.name, info.default_text));
    std::string text;
    if (info.secret()) {  // set, never read back
      CHECK(!GetOption(again, info.name, &text).ok());
      continue;
    }
    CHECK_OK(GetOption(again, info.name, &text));
    CHECK(text == info.default_text);
  }
}

void TestSetOption() {
  RuntimeOptions o;
  CHECK_OK(SetOption(&o, "chunk_size", "32"));
  CHECK_OK(SetOption(&o, "l1_capacity_gb", "0.5"));
  CHECK_OK(SetOption(&o, "local_disk_path", "/tmp/x y"));
  CHECK_OK(SetOption(&o, "disk_io_backend", "threads"));
  CHECK_OK(SetOption(&o, "verify_l1_checksums", "Yes"));
  CHECK_OK(SetOption(&o, "disk_lock_timeout_s", "1e-1"));
  CHECK_OK(SetOption(&o, "key_scheme", "sglang"));
  CHECK_OK(SetOption(&o, "tp_size", "4"));
  CHECK_OK(SetOption(&o, "tp_rank", "3"));
  CHECK(o.chunk_size == 32 && o.l1_capacity_bytes == 1ull << 29 && o.disk_dir == "/tmp/x y");
  CHECK(o.disk_io_backend == "threads" && o.verify_l1_checksums && o.disk_lock_timeout_s == 0.1);
  CHECK(o.key_scheme == "sglang" && o.tp_size == 4 && o.tp_rank == 3);
  std::string text;
  CHECK_OK(GetOption(o, "l1_capacity_gb", &text));
  CHECK(text == "0.5");

  // Errors name the key and what is allowed, and change nothing.
  const RuntimeOptions before = o;
  CHECK(Mentions(SetOption(&o, "chunk_sise", "32"), "'chunk_sise'", "chunk_size"));
  CHECK(Mentions(SetOption(&o, "chunk_size", "0"), "'chunk_size'", "below the minimum 1"));
  CHECK(Mentions(SetOption(&o, "chunk_size", "2.5"), "'chunk_size'", "not an integer"));
  CHECK(Mentions(SetOption(&o, "chunk_size", ""), "'chunk_size'", "not an integer"));
  CHECK(Mentions(SetOption(&o, "chunk_size", "99999999999999999999999"), "'chunk_size'", "above the maximum"));
  CHECK(Mentions(SetOption(&o, "num_copy_threads", "100000"), "'num_copy_threads'", "above the maximum 1024"));
  CHECK(Mentions(SetOption(&o, "l1_capacity_gb", "lots"), "'l1_capacity_gb'", "not a finite number"));
  CHECK(Mentions(SetOption(&o, "l1_capacity_gb", "nan"), "'l1_capacity_gb'", "not a finite number"));
  CHECK(Mentions(SetOption(&o, "l1_capacity_gb", "-1"), "'l1_capacity_gb'", "below the minimum 0.0"));
  CHECK(Mentions(SetOption(&o, "eviction_policy", "fifo"), "'eviction_policy'", "'lru'"));
  CHECK(Mentions(SetOption(&o, "disk_io_backend", "uring"), "'auto', 'threads'"));
  CHECK(Mentions(SetOption(&o, "verify_l1_checksums", "maybe"), "true or false"));
  CHECK(Mentions(SetOption(&o, "tp_size", "0"), "'tp_size'", "below the minimum 1"));
  CHECK(o.chunk_size == before.chunk_size && o.l1_capacity_bytes == before.l1_capacity_bytes &&
        o.eviction_policy == before.eviction_policy && o.tp_size == before.tp_size);
}

void TestStats() {
  std::set<std::string> names;
  for (const StatInfo& info : StatTable()) CHECK(names.insert(info.name).second);
  for (const char* n : {"lookups", "hash_passes", "hashed_tokens", "l1_chunks", "imported_chunks", "disk_enabled",
                        "promoted_chunks", "disk_reads", "disk_discarded_at_start"}) {
    CHECK(names.count(n) == 1);
  }
  RuntimeStats s;
  s.lookups = 3;
  s.hashed_tokens = 512;
  s.disk.reads = 7;
  size_t seen = 0;
  ForEachStat(s, [&](const StatInfo& info, uint64_t v) {
    CHECK(!info.disk_only);
    if (std::strcmp(info.name, "lookups") == 0) CHECK(v == 3);
    if (std::strcmp(info.name, "hashed_tokens") == 0) CHECK(v == 512);
    ++seen;
  });
  CHECK(seen > 0 && seen < StatTable().size());  // no disk or remote tier: their stats are left out
  s.disk_enabled = true;
  s.remote_enabled = true;
  seen = 0;
  ForEachStat(s, [&](const StatInfo& info, uint64_t v) {
    if (std::strcmp(info.name, "disk_reads") == 0) CHECK(v == 7);
    if (std::strcmp(info.name, "disk_enabled") == 0) CHECK(v == 1 && info.is_flag);
    ++seen;
  });
  CHECK(seen == StatTable().size());
  CHECK(FindStat("disk_reads") != nullptr && FindStat("disk_nope") == nullptr);
}

}  // namespace

int main() {
  TestDefaults();
  TestSetOption();
  TestStats();
  std::puts("test_runtime_options: ok");
  return 0;
}
