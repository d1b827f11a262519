#include "runtime_options.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <type_traits>

namespace lmcache {

namespace {

// A parsed value; the member that counts depends on the row's kind.
struct Value {
  bool b = false;
  int64_t i = 0;
  double d = 0.0;
  std::string_view s;
};

const char* TypeName(OptionKind k) {
  switch (k) {
    case OptionKind::kBool: return "bool";
    case OptionKind::kInt: return "int";
    case OptionKind::kString:
    case OptionKind::kSecret: return "str";
    case OptionKind::kFloat:
    case OptionKind::kGiB: return "float";
  }
  return "?";
}

// Shortest text that reads back as the same double, with ".0" on whole
// numbers so that the text says it is a float (Python's repr does the same).
std::string FormatDouble(double d) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d);
  std::string out(buf, r.ptr);
  if (out.find_first_not_of("-0123456789") == std::string::npos) out += ".0";
  return out;
}

template <typename T>
std::string Format(const T& field, OptionKind kind) {
  if constexpr (std::is_same_v<T, bool>) {
    return field ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return field;
  } else if constexpr (std::is_floating_point_v<T>) {
    return FormatDouble(field);
  } else {
    if (kind == OptionKind::kGiB) return FormatDouble(double(field) / kBytesPerGiB);
    return std::to_string(field);
  }
}

template <typename T>
void Assign(T* field, OptionKind kind, const Value& v) {
  if constexpr (std::is_same_v<T, bool>) {
    *field = v.b;
  } else if constexpr (std::is_same_v<T, std::string>) {
    *field = std::string(v.s);
  } else if constexpr (std::is_floating_point_v<T>) {
    *field = v.d;
  } else {
    // Both in range: the table's limits keep every value inside the field's type.
    *field = kind == OptionKind::kGiB ? static_cast<T>(v.d * kBytesPerGiB) : static_cast<T>(v.i);
  }
}

std::vector<std::string> SplitChoices(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const size_t bar = text.find('|');
    out.emplace_back(text.substr(0, bar));
    if (bar == std::string_view::npos) break;
    text.remove_prefix(bar + 1);
  }
  return out;
}

// Row i's accessors, in table order (the same order as OptionTable()).
struct Accessors {
  void (*set)(RuntimeOptions*, const Value&);
  std::string (*get)(const RuntimeOptions&);
};

#define LMC_OPTION(section, key, kind, type, field, def, lo, hi, choices, doc)                    \
  {[](RuntimeOptions* o, const Value& v) { Assign(&o->field, OptionKind::kind, v); },             \
   [](const RuntimeOptions& o) { return Format(o.field, OptionKind::kind); }},
const Accessors kAccessors[] = {
#include "runtime_options.def"
};
#undef LMC_OPTION

std::vector<OptionInfo> BuildTable() {
  const RuntimeOptions defaults;
  std::vector<OptionInfo> table;
#define LMC_NO_LIMIT std::nullopt
#define LMC_OPTION(section, key, kind, type, field, def, lo, hi, choices, doc)                             \
  table.push_back(OptionInfo{#section, #key, OptionKind::kind, TypeName(OptionKind::kind),                          \
                             Format(defaults.field, OptionKind::kind), std::optional<double>(lo),          \
                             std::optional<double>(hi), SplitChoices(choices), doc});
#include "runtime_options.def"
#undef LMC_OPTION
#undef LMC_NO_LIMIT
  return table;
}

std::string Quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.append(1, '\'').append(s).append(1, '\'');
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string FormatLimit(double limit, OptionKind kind) {
  return kind == OptionKind::kInt ? std::to_string(int64_t(limit)) : FormatDouble(limit);
}

Status Bad(std::string_view name, std::string_view what) {
  return Status::InvalidArgument("config key " + Quote(name) + ": " + std::string(what));
}

Status ParseInt(std::string_view name, std::string_view text, int64_t* out) {
  const std::string_view t = Trim(text);
  const char* end = t.data() + t.size();
  const auto r = std::from_chars(t.data(), end, *out);
  if (r.ec == std::errc::result_out_of_range && r.ptr == end) {
    return Bad(name, Quote(text) + (t.front() == '-' ? " is below the minimum" : " is above the maximum"));
  }
  if (t.empty() || r.ec != std::errc() || r.ptr != end) return Bad(name, Quote(text) + " is not an integer");
  return Status::Ok();
}

Status Parse(const OptionInfo& o, std::string_view text, Value* v) {
  const std::string_view t = Trim(text);
  switch (o.kind) {
    case OptionKind::kBool: {
      const std::string l = Lower(t);
      if (l == "true" || l == "1" || l == "yes" || l == "on") {
        v->b = true;
      } else if (l == "false" || l == "0" || l == "no" || l == "off") {
        v->b = false;
      } else {
        return Bad(o.name, Quote(text) + " is not true or false");
      }
      return Status::Ok();
    }
    case OptionKind::kInt:
      LMC_RETURN_IF_ERROR(ParseInt(o.name, text, &v->i));
      v->d = double(v->i);
      break;
    case OptionKind::kFloat:
    case OptionKind::kGiB: {
      const char* end = t.data() + t.size();
      const auto r = std::from_chars(t.data(), end, v->d);
      if (t.empty() || r.ec != std::errc() || r.ptr != end || !std::isfinite(v->d)) {
        return Bad(o.name, Quote(text) + " is not a finite number");
      }
      break;
    }
    case OptionKind::kSecret:
      v->s = text;  // taken as it is, never echoed
      return Status::Ok();
    case OptionKind::kString:
      v->s = text;  // strings are taken as they are: a path may end in a space
      if (!o.choices.empty() && std::find(o.choices.begin(), o.choices.end(), text) == o.choices.end()) {
        std::string allowed;
        for (const auto& c : o.choices) allowed += (allowed.empty() ? "" : ", ") + Quote(c);
        return Bad(o.name, Quote(text) + " is not one of " + allowed);
      }
      return Status::Ok();
  }
  if (o.minimum && v->d < *o.minimum) {
    return Bad(o.name, Quote(t) + " is below the minimum " + FormatLimit(*o.minimum, o.kind));
  }
  if (o.maximum && v->d > *o.maximum) {
    return Bad(o.name, Quote(t) + " is above the maximum " + FormatLimit(*o.maximum, o.kind));
  }
  return Status::Ok();
}

// tp_rank and tp_size: set by name like the table's keys, but not in it (see RuntimeOptions).
uint32_t* TpField(RuntimeOptions* o, std::string_view name) {
  if (name == "tp_rank") return &o->tp_rank;
  if (name == "tp_size") return &o->tp_size;
  return nullptr;
}

Status UnknownKey(std::string_view name) {
  std::vector<std::string> keys;
  for (const auto& o : OptionTable()) keys.emplace_back(o.name);
  keys.emplace_back("tp_rank");
  keys.emplace_back("tp_size");
  std::sort(keys.begin(), keys.end());
  std::string allowed;
  for (const auto& k : keys) allowed += (allowed.empty() ? "" : ", ") + k;
  return Status::InvalidArgument("unknown config key " + Quote(name) + "; allowed keys: " + allowed);
}

}  // namespace

const std::vector<OptionInfo>& OptionTable() {
  static const std::vector<OptionInfo> table = BuildTable();
  return table;
}

const OptionInfo* FindOption(std::string_view name) {
  for (const auto& o : OptionTable()) {
    if (name == o.name) return &o;
  }
  return nullptr;
}

Status SetOption(RuntimeOptions* options, std::string_view name, std::string_view value) {
  if (uint32_t* tp = TpField(options, name)) {
    int64_t v = 0;
    LMC_RETURN_IF_ERROR(ParseInt(name, value, &v));
    const int64_t lo = name == "tp_size" ? 1 : 0;
    if (v < lo) return Bad(name, Quote(value) + " is below the minimum " + std::to_string(lo));
    if (v > int64_t(std::numeric_limits<uint32_t>::max())) return Bad(name, Quote(value) + " is above the maximum");
    *tp = uint32_t(v);
    return Status::Ok();
  }
  const OptionInfo* o = FindOption(name);
  if (o == nullptr) return UnknownKey(name);
  Value v;
  LMC_RETURN_IF_ERROR(Parse(*o, value, &v));
  kAccessors[o - OptionTable().data()].set(options, v);
  return Status::Ok();
}

Status GetOption(const RuntimeOptions& options, std::string_view name, std::string* value) {
  if (name == "tp_rank" || name == "tp_size") {
    *value = std::to_string(name == "tp_rank" ? options.tp_rank : options.tp_size);
    return Status::Ok();
  }
  const OptionInfo* o = FindOption(name);
  if (o == nullptr) return UnknownKey(name);
  if (o->secret()) return Bad(name, "a secret is never read back");
  *value = kAccessors[o - OptionTable().data()].get(options);
  return Status::Ok();
}

}  // namespace lmcache
