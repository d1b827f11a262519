#include "device_copy.h"

namespace lmcache {

std::unique_ptr<DeviceCopier> MakeDeviceCopier() { return nullptr; }

}  // namespace lmcache
