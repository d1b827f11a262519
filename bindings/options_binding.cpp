#include "options_binding.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <string>
#include <vector>

#include "errors.h"

namespace py = pybind11;

namespace lmcache {

namespace {

// A Python value as the text SetOption parses. Bools first: True is an int too.
std::string ToText(const std::string& name, py::handle v) {
  if (py::isinstance<py::bool_>(v)) return v.cast<bool>() ? "true" : "false";
  // Through the builtin types: repr of a subclass (numpy's) is not a number.
  if (py::isinstance<py::int_>(v)) return py::str(py::int_(py::reinterpret_borrow<py::object>(v)));
  if (py::isinstance<py::float_>(v)) return py::repr(py::float_(py::reinterpret_borrow<py::object>(v)));
  if (py::isinstance<py::str>(v)) return v.cast<std::string>();
  ThrowStatus(Status::InvalidArgument("config key '" + name + "': a " + std::string(py::str(v.get_type().attr("__name__"))) +
                                      " is not a bool, int, float or str"));
}

bool IsPlacementKey(const std::string& name) { return name == "tp_rank" || name == "tp_size"; }

// The option's default as the Python value Config holds.
py::object TypedDefault(const OptionInfo& o) {
  switch (o.kind) {
    case OptionKind::kBool: return py::bool_(o.default_text == "true");
    case OptionKind::kInt: return py::int_(std::stoll(o.default_text));
    case OptionKind::kFloat:
    case OptionKind::kGiB: return py::float_(std::stod(o.default_text));
    case OptionKind::kString:
    case OptionKind::kSecret: break;
  }
  return py::str(o.default_text);
}

// Runtime(**options) takes the table's runtime section; the remote and
// security keys are read by the code around the runtime (lmcache.remote).
bool IsRuntimeKey(const std::string& name) {
  const OptionInfo* o = FindOption(name);
  return o != nullptr && std::string_view(o->section) == "runtime";
}

py::object Limit(const OptionInfo& o, const std::optional<double>& limit) {
  if (!limit) return py::none();
  if (o.kind == OptionKind::kInt) return py::int_(static_cast<long long>(*limit));
  return py::float_(*limit);
}

}  // namespace

RuntimeOptions OptionsFromKwargs(const py::kwargs& kwargs) {
  RuntimeOptions o;
  std::vector<std::string> unknown;
  for (const auto& item : kwargs) {
    const std::string name = py::str(item.first);
    if (name != "record_key" && !IsPlacementKey(name) && !IsRuntimeKey(name)) unknown.push_back(name);
  }
  if (!unknown.empty()) {
    std::vector<std::string> allowed = {"record_key", "tp_rank", "tp_size"};
    for (const OptionInfo& info : OptionTable()) {
      if (IsRuntimeKey(info.name)) allowed.emplace_back(info.name);
    }
    std::sort(allowed.begin(), allowed.end());
    std::string msg = "unknown Runtime option";
    msg += unknown.size() > 1 ? "s" : "";
    for (size_t i = 0; i < unknown.size(); ++i) msg += (i ? ", '" : " '") + unknown[i] + "'";
    msg += "; allowed:";
    for (size_t i = 0; i < allowed.size(); ++i) msg += (i ? ", " : " ") + allowed[i];
    ThrowStatus(Status::InvalidArgument(msg));
  }
  for (const auto& item : kwargs) {
    const std::string name = py::str(item.first);
    if (name == "record_key") {
      if (!py::isinstance<py::bytes>(item.second)) ThrowStatus(Status::InvalidArgument("record_key must be bytes"));
      o.record_key = item.second.cast<std::string>();
      continue;
    }
    Check(SetOption(&o, name, ToText(name, item.second)));
  }
  return o;
}

py::dict StatsToDict(const RuntimeStats& stats) {
  py::dict d;
  ForEachStat(stats, [&](const StatInfo& info, uint64_t value) {
    if (info.is_flag) {
      d[info.name] = py::bool_(value != 0);
    } else {
      d[info.name] = value;
    }
  });
  return d;
}

void BindOptionTables(py::module_& m) {
  m.def(
      "option_table",
      [] {
        py::list out;
        for (const OptionInfo& o : OptionTable()) {
          py::dict row;
          row["section"] = o.section;
          row["name"] = o.name;
          row["secret"] = o.secret();
          row["type"] = o.type;
          row["default"] = TypedDefault(o);
          row["minimum"] = Limit(o, o.minimum);
          row["maximum"] = Limit(o, o.maximum);
          row["choices"] = o.choices.empty() ? py::object(py::none()) : py::object(py::tuple(py::cast(o.choices)));
          row["doc"] = o.doc;
          out.append(row);
        }
        return out;
      },
      "lmcache's native config keys: section ('runtime': Runtime(**options) takes them; 'remote', "
      "'security': read around the runtime), name, secret (never shown), type ('bool', 'int', 'float' or 'str'), default, minimum, maximum "
      "(None: no limit), choices (None: any value) and doc, in order.");
  m.def(
      "stat_table",
      [] {
        py::list out;
        for (const StatInfo& s : StatTable()) {
          py::dict row;
          row["name"] = s.name;
          row["doc"] = s.doc;
          row["disk_only"] = s.disk_only;
          row["remote_only"] = s.remote_only;
          out.append(row);
        }
        return out;
      },
      "Every stat Runtime.stats() may hold: name, doc, and whether it needs the disk tier or a remote tier.");
}

}  // namespace lmcache
