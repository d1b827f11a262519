// Builds without OpenSSL have no random source for keys (and cannot seal).
#include "key_file.h"

namespace lmcache {

Status LoadOrCreateKeyFile(int, const char*, size_t, std::string*) {
  return Status::InvalidArgument("lmcache was built without OpenSSL (libssl-dev), so it cannot keep a record key");
}

}  // namespace lmcache
