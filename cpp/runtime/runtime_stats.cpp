#include "runtime_stats.h"

namespace lmcache {

const std::vector<StatInfo>& StatTable() {
  static const std::vector<StatInfo> table = {
#define LMC_STAT(name, disk_only, doc) \
  {#name, doc, disk_only, false, false, [](const RuntimeStats& s) { return uint64_t(s.name); }},
#define LMC_FLAG(name, disk_only, doc) \
  {#name, doc, disk_only, true, false, [](const RuntimeStats& s) { return uint64_t(s.name ? 1 : 0); }},
#define LMC_DISK_STAT(field, doc) \
  {"disk_" #field, doc, true, false, false, [](const RuntimeStats& s) { return uint64_t(s.disk.field); }},
#define LMC_REMOTE_STAT(name, doc) \
  {#name, doc, false, false, true, [](const RuntimeStats& s) { return uint64_t(s.name); }},
#include "runtime_stats.def"
#undef LMC_STAT
#undef LMC_FLAG
#undef LMC_DISK_STAT
#undef LMC_REMOTE_STAT
  };
  return table;
}

uint64_t* MutableRemoteStat(RuntimeStats* s, std::string_view name) {
#define LMC_STAT(name, disk_only, doc)
#define LMC_FLAG(name, disk_only, doc)
#define LMC_DISK_STAT(field, doc)
#define LMC_REMOTE_STAT(field, doc) \
  if (name == #field) return &s->field;
#include "runtime_stats.def"
#undef LMC_STAT
#undef LMC_FLAG
#undef LMC_DISK_STAT
#undef LMC_REMOTE_STAT
  return nullptr;
}

const StatInfo* FindStat(std::string_view name) {
  for (const StatInfo& info : StatTable()) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

}  // namespace lmcache
