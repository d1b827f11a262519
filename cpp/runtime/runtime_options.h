// The runtime's options, declared once (runtime_options.def): the struct the
// runtime reads, a parser by key name with range checks, and the table
// itself for the bindings, the C API and the Python Config to read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "status.h"

namespace lmcache {

enum class OptionKind { kBool, kInt, kFloat, kString, kGiB, kSecret };

inline constexpr double kBytesPerGiB = double(1ull << 30);

// A default from the table in the field's type (kGiB: GiB to bytes).
template <typename T, OptionKind K, typename D>
T OptionDefault(D value) {
  if constexpr (K == OptionKind::kGiB) {
    return static_cast<T>(value * kBytesPerGiB);
  } else {
    return T(value);
  }
}

// One field per row of runtime_options.def (each row says its config key,
// default, limits and meaning), then the fields that are not config keys.
struct RuntimeOptions {
#define LMC_OPTION(section, key, kind, type, field, def, lo, hi, choices, doc) \
  type field = OptionDefault<type, OptionKind::kind>(def);
#include "runtime_options.def"
#undef LMC_OPTION

  // Not config keys: where this runtime sits and the secret it seals disk
  // records with are given by the code that creates it, not by a user's
  // config file.
  uint32_t tp_rank = 0;
  uint32_t tp_size = 1;
  // Key of the seal (record_seal.h) on records written to disk:
  // RecordSealer::kKeyBytes bytes, or empty for a key kept in the disk
  // directory (created there on first use).
  std::string record_key;
};

// One row of the table, as the outside sees it.
struct OptionInfo {
  const char* section;                // "runtime", "remote" or "security" (runtime_options.def)
  const char* name;                   // the config key
  OptionKind kind;
  const char* type;                   // "bool", "int", "float" or "str": how a value is written
  std::string default_text;           // the default, written as SetOption reads it
  std::optional<double> minimum;      // inclusive, in the key's unit
  std::optional<double> maximum;
  std::vector<std::string> choices;   // empty: any value of the type
  const char* doc;
  bool secret() const { return kind == OptionKind::kSecret; }
};

// Every option, in the order of runtime_options.def.
const std::vector<OptionInfo>& OptionTable();
// The row of `name`, or nullptr.
const OptionInfo* FindOption(std::string_view name);

// Parses `value` (text: "true"/"false"/"1"/"0"/"yes"/"no"/"on"/"off" for
// bools, decimal for numbers, a number of GiB for the *_gb keys) and stores
// it after checking it against the table's limits and choices. Besides the
// table's keys, tp_rank and tp_size are accepted (as integers). Errors are
// kInvalidArgument naming the key and what is allowed; *options is then
// unchanged.
Status SetOption(RuntimeOptions* options, std::string_view name, std::string_view value);
// The current value of a table key (or tp_rank, tp_size) as text that
// SetOption accepts; a secret (kSecret) is never read back: kInvalidArgument.
Status GetOption(const RuntimeOptions& options, std::string_view name, std::string* value);

}  // namespace lmcache
