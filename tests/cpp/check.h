// Minimal checks for the C++ test programs: a failed CHECK prints where and
// exits with status 1, which CTest reports.
#pragma once

#include <cstdio>
#include <cstdlib>

#define CHECK(cond)                                                                \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

#define CHECK_OK(expr)                                                                     \
  do {                                                                                     \
    ::lmcache::Status _st = (expr);                                                        \
    if (!_st.ok()) {                                                                       \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,           \
                   _st.ToString().c_str());                                                \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

#define CHECK_CODE(expr, expected_code)                                                    \
  do {                                                                                     \
    ::lmcache::Status _st = (expr);                                                        \
    if (_st.code() != (expected_code)) {                                                   \
      std::fprintf(stderr, "%s:%d: %s returned '%s', expected code %d\n", __FILE__,        \
                   __LINE__, #expr, _st.ToString().c_str(), static_cast<int>(expected_code)); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)
