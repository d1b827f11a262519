// The shared remote tier (Redis, Valkey, ...) as the runtime sees it. A
// client plugs in here: lmcache's Python one (lmcache.remote, for Python
// engines), its native one (cpp/remote, for the C API; the same values on
// the store), or an engine's. The runtime owns the walk over every tier:
//   lookup  continues into the remote tier where host memory and disk end;
//   load    fetches the part of the wanted prefix only it has into host
//           memory first (no more than host memory can hold next to the
//           rest of the load);
//   store   queues each published chunk (bounded; a full queue drops and
//           counts) for the runtime's remote writer thread, which calls Put.
// The client moves records with CacheRuntime::ExportRecord / ImportRecord
// (which checks every record again) and reports what happened through
// CountRemote, so the runtime's stats are the only ones.
#pragma once

#include <cstddef>
#include <vector>

#include "chunk_key.h"

namespace lmcache {

class RemoteTier {
 public:
  virtual ~RemoteTier() = default;
  // How many leading `keys` the store holds; 0 when it cannot say. Never
  // calls back into the runtime.
  virtual size_t CountPrefix(const std::vector<ChunkKey>& keys) = 0;
  // Brings the leading `keys` into host memory (ImportRecord each); returns
  // how many arrived, in order, stopping at the first that did not.
  virtual size_t Fetch(const std::vector<ChunkKey>& keys) = 0;
  // Writes the chunks of `keys` (ExportRecord each; one that left host
  // memory meanwhile is skipped). Called on the runtime's writer thread.
  virtual void Put(const std::vector<ChunkKey>& keys) = 0;
};

}  // namespace lmcache
