// The secret key of a disk tier that was given none: 32 random bytes in a
// file of lmcache's own private directory, made once, read on every start.
#pragma once

#include <cstddef>
#include <string>

#include "status.h"

namespace lmcache {

// Reads `name` under the directory `dir_fd`, or creates it with `bytes`
// random bytes (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600). An existing file
// must be a regular file of the effective uid, unreadable by group and
// others, of exactly `bytes` bytes; anything else is refused, never replaced.
Status LoadOrCreateKeyFile(int dir_fd, const char* name, size_t bytes, std::string* key);

}  // namespace lmcache
