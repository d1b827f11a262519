// The runtime's stats, declared once (runtime_stats.def): the struct the
// runtime counts into, and the table of names that the bindings and the C
// API read it by.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "disk_tier.h"

namespace lmcache {

struct RuntimeStats {
#define LMC_STAT(name, disk_only, doc) uint64_t name = 0;
#define LMC_FLAG(name, disk_only, doc) bool name = false;
#define LMC_DISK_STAT(field, doc)
#define LMC_REMOTE_STAT(name, doc) uint64_t name = 0;
#include "runtime_stats.def"
#undef LMC_STAT
#undef LMC_FLAG
#undef LMC_DISK_STAT
#undef LMC_REMOTE_STAT
  DiskStats disk;  // the disk tier's own counters (the LMC_DISK_STAT rows)
};

struct StatInfo {
  const char* name;
  const char* doc;
  bool disk_only;  // shown only with the disk tier
  bool is_flag;    // a yes/no value (0 or 1)
  bool remote_only;  // shown only with a remote tier
  uint64_t (*read)(const RuntimeStats&);
};

// Every stat, in the order of runtime_stats.def.
const std::vector<StatInfo>& StatTable();
// The row of `name`, or nullptr.
const StatInfo* FindStat(std::string_view name);
// The counter of a remote tier stat (LMC_REMOTE_STAT) named `name`, or nullptr.
uint64_t* MutableRemoteStat(RuntimeStats* s, std::string_view name);

// Calls fn(const StatInfo&, uint64_t value) for every stat that applies:
// the disk_only ones only when the disk tier is on.
template <typename Fn>
void ForEachStat(const RuntimeStats& s, Fn&& fn) {
  for (const StatInfo& info : StatTable()) {
    if (info.disk_only && !s.disk_enabled) continue;
    if (info.remote_only && !s.remote_enabled) continue;
    fn(info, info.read(s));
  }
}

}  // namespace lmcache
