// The runtime's options and stats in Python, from the tables in
// cpp/runtime/runtime_options.def and runtime_stats.def: nothing here lists
// a key or a stat by name.
#pragma once

#include <pybind11/pybind11.h>

#include "runtime_options.h"
#include "runtime_stats.h"

namespace lmcache {

// Runtime(**options): every table key, plus tp_rank, tp_size and
// record_key (bytes). Unknown keys raise InvalidArgumentError naming them.
RuntimeOptions OptionsFromKwargs(const pybind11::kwargs& kwargs);

// Runtime.stats(): every stat that applies (disk ones only with the disk tier).
pybind11::dict StatsToDict(const RuntimeStats& stats);

// _core.option_table() and _core.stat_table().
void BindOptionTables(pybind11::module_& m);

}  // namespace lmcache
