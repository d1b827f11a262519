// Built when liburing is not available: the disk tier uses the thread pool.
#include "io_backend.h"

namespace lmcache {

std::unique_ptr<IoBackend> MakeUringBackend(int) { return nullptr; }

}  // namespace lmcache
