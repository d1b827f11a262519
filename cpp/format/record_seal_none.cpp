// Builds without OpenSSL: records cannot be sealed, so a configuration that
// needs a seal (a disk tier, an auth secret) is refused with this reason.
#include "record_seal.h"

namespace lmcache {

bool RecordSealer::Available() { return false; }
uint64_t RecordSealer::KeyId(const std::string&) { return 0; }
std::string RecordSealer::DeriveKey(std::string_view) { return ""; }
Status RecordSealer::Create(const std::string&, bool, std::unique_ptr<RecordSealer>*) {
  return Status::InvalidArgument("lmcache was built without OpenSSL (libssl-dev), so it cannot authenticate records");
}
RecordSealer::RecordSealer(const std::string&, bool encrypt) : encrypt_(encrypt), key_id_(0) {}
RecordSealer::~RecordSealer() = default;
Status RecordSealer::Seal(ChunkHeader*, uint8_t*, size_t) const { return Status::InvalidArgument("no OpenSSL"); }
Status RecordSealer::Open(ChunkHeader*, uint8_t*, size_t) const { return Status::InvalidArgument("no OpenSSL"); }

}  // namespace lmcache
