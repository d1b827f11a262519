#include "redis_remote_tier.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace lmcache {

namespace {

constexpr char kKeyPrefix[] = "lmcache:";  // the Python client's prefix: one namespace on the store
constexpr size_t kIdleConnections = 4;     // kept open between calls (lookups, loads and the writer overlap)

std::string StoreKey(const ChunkKey& k) { return kKeyPrefix + k.Hex(); }

Status CheckReadableFile(const char* config_key, const std::string& path) {
  if (path.empty()) return Status::Ok();
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || access(path.c_str(), R_OK) != 0) {
    return Status::InvalidArgument(std::string("config key '") + config_key + "': '" + path +
                                   "' is not a readable file");
  }
  return Status::Ok();
}

}  // namespace

// ------------------------------------------------------------------ known keys

bool RedisRemoteTier::RecentKeys::Contains(const ChunkKey& k) {
  std::lock_guard<std::mutex> lock(mu_);
  return where_.count(k) != 0;
}

void RedisRemoteTier::RecentKeys::Add(const ChunkKey& k) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = where_.find(k);
  if (it != where_.end()) {
    order_.splice(order_.end(), order_, it->second);
    return;
  }
  where_[k] = order_.insert(order_.end(), k);
  if (where_.size() > capacity_) {
    where_.erase(order_.front());
    order_.pop_front();
  }
}

void RedisRemoteTier::RecentKeys::Remove(const ChunkKey& k) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = where_.find(k);
  if (it == where_.end()) return;
  order_.erase(it->second);
  where_.erase(it);
}

void RedisRemoteTier::RecentKeys::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  where_.clear();
  order_.clear();
}

// ------------------------------------------------------------------ set-up

Status RedisRemoteTier::Create(CacheRuntime* runtime, const RedisTierOptions& o,
                               std::shared_ptr<RedisRemoteTier>* out) {
  if (runtime == nullptr) return Status::InvalidArgument("no runtime");
  RedisEndpoint endpoint;
  LMC_RETURN_IF_ERROR(ParseRedisUrl(o.url, &endpoint));
  const bool any_tls_file = !o.tls.ca_file.empty() || !o.tls.cert_file.empty() || !o.tls.key_file.empty();
  if (any_tls_file && !endpoint.tls) {
    return Status::InvalidArgument("config keys 'remote_tls_*' need a TLS URL (rediss://)");
  }
  std::shared_ptr<TlsContext> tls;
  if (endpoint.tls) {
    LMC_RETURN_IF_ERROR(CheckReadableFile("remote_tls_ca_file", o.tls.ca_file));
    LMC_RETURN_IF_ERROR(CheckReadableFile("remote_tls_cert_file", o.tls.cert_file));
    LMC_RETURN_IF_ERROR(CheckReadableFile("remote_tls_key_file", o.tls.key_file));
    LMC_RETURN_IF_ERROR(TlsContext::Create(o.tls, &tls));
  }
  WireCodec codec;
  if (!ParseWireCodec(o.codec, &codec)) return Status::InvalidArgument("config key 'remote_codec': unknown codec");
  std::unique_ptr<WireSealer> sealer;
  LMC_RETURN_IF_ERROR(WireSealer::Create(o.record_key, codec, o.encrypt, &sealer));
  out->reset(new RedisRemoteTier(runtime, std::move(endpoint), std::move(tls), o.timeout_s,
                                 std::max<size_t>(1, o.fetch_batch_bytes), std::move(sealer)));
  return Status::Ok();
}

RedisRemoteTier::RedisRemoteTier(CacheRuntime* runtime, RedisEndpoint endpoint, std::shared_ptr<TlsContext> tls,
                                 double timeout_s, size_t fetch_batch_bytes, std::unique_ptr<WireSealer> sealer)
    : runtime_(runtime),
      endpoint_(std::move(endpoint)),
      tls_(std::move(tls)),
      timeout_s_(timeout_s),
      fetch_batch_bytes_(fetch_batch_bytes),
      sealer_(std::move(sealer)) {}

size_t RedisRemoteTier::MaxValueBytes(size_t record_bytes) const {
  // A value is the header and the record, or a compressed frame of it, which
  // for incompressible data is a little larger than the record.
  return WireSealer::kHeaderBytes + record_bytes + record_bytes / 64 + (64 << 10);
}

Status RedisRemoteTier::Run(const std::vector<std::vector<std::string_view>>& commands,
                            std::vector<RespReply>* replies) {
  std::unique_ptr<RespConnection> c;
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (!idle_.empty()) {
      c = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  const size_t record_bytes = runtime_->RecordBytes();
  const size_t max_bulk = record_bytes ? MaxValueBytes(record_bytes) : (64 << 10);
  if (!c) LMC_RETURN_IF_ERROR(RespConnection::Open(endpoint_, tls_, timeout_s_, max_bulk, &c));
  c->set_max_bulk_bytes(max_bulk);
  for (const auto& command : commands) c->Append(command);
  Status st = c->Exchange(replies);
  if (st.ok()) {
    for (const RespReply& r : *replies) {
      // A store that answers with an error (out of memory, read-only replica,
      // no permission) has not done what was asked: the op failed.
      if (r.type == RespReply::Type::kError) {
        st = Status::IoError(endpoint_.display + ": " + r.text);
        break;
      }
    }
  }
  if (!c->broken()) {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (idle_.size() < kIdleConnections) idle_.push_back(std::move(c));
  }
  return st;
}

void RedisRemoteTier::Unavailable(const char* op, size_t dropped) {
  known_.Clear();  // the store may come back empty (a restart): what we knew it held is stale
  Count("remote_errors");
  Count((std::string("remote_") + op + "_errors").c_str());
  if (dropped) Count("remote_put_dropped", dropped);
}

// ------------------------------------------------------------------ lookup

size_t RedisRemoteTier::CountPrefix(const std::vector<ChunkKey>& keys) {
  if (keys.empty()) return 0;
  std::vector<std::string> names;
  names.reserve(keys.size());
  for (const ChunkKey& k : keys) names.push_back(StoreKey(k));
  std::vector<std::vector<std::string_view>> commands;
  commands.reserve(keys.size());
  for (const std::string& n : names) commands.push_back({"EXISTS", n});
  std::vector<RespReply> replies;
  if (!Run(commands, &replies).ok()) {
    Unavailable("exists", 0);
    return 0;
  }
  size_t n = 0;
  while (n < replies.size() && replies[n].type == RespReply::Type::kInteger && replies[n].integer > 0) {
    known_.Add(keys[n]);
    ++n;
  }
  return n;
}

// ------------------------------------------------------------------ load

size_t RedisRemoteTier::Fetch(const std::vector<ChunkKey>& keys) {
  const size_t record_bytes = runtime_->RecordBytes();
  if (keys.empty() || record_bytes == 0) return 0;  // no shape yet: nothing can be imported
  const size_t capacity = runtime_->options().l1_capacity_bytes;
  const size_t batch = std::max<size_t>(1, std::min(fetch_batch_bytes_, capacity / 4) / record_bytes);
  size_t done = 0;
  while (done < keys.size()) {
    const size_t count = std::min(batch, keys.size() - done);
    const size_t got = FetchBatch(keys, done, count, record_bytes);
    done += got;
    if (got < count) break;
  }
  return done;
}

size_t RedisRemoteTier::FetchBatch(const std::vector<ChunkKey>& keys, size_t from, size_t count,
                                   size_t record_bytes) {
  std::vector<std::string> names;
  std::vector<std::string> hex;
  std::vector<std::vector<std::string_view>> commands;
  names.reserve(count);
  hex.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    hex.push_back(keys[from + i].Hex());
    names.push_back(kKeyPrefix + hex.back());
  }
  for (const std::string& n : names) commands.push_back({"GET", n});
  std::vector<RespReply> replies;
  if (!Run(commands, &replies).ok()) {
    Unavailable("get", 0);
    return 0;
  }
  Count("remote_get_batches");
  std::vector<uint8_t> scratch;
  for (size_t n = 0; n < count; ++n) {
    std::vector<uint8_t> value;
    value.swap(replies[n].bulk);  // held only until it is imported
    if (replies[n].type != RespReply::Type::kBulk) {  // gone since lookup (eviction, another client)
      Count("remote_get_missing");
      return n;
    }
    const uint8_t* record = nullptr;
    std::string why;
    switch (sealer_->Decode(hex[n], value.data(), value.size(), record_bytes, &scratch, &record, &why)) {
      case WireOutcome::kOk:
        break;
      case WireOutcome::kBad:
        Refuse(names[n]);
        known_.Remove(keys[from + n]);
        return n;
      case WireOutcome::kNotOurs:
        Count("remote_get_not_ours");
        return n;
      case WireOutcome::kCodecUnavailable:
        Count("remote_get_codec_unavailable");
        return n;
    }
    const Status st = runtime_->ImportRecord(keys[from + n], record, record_bytes);
    if (st.code() == StatusCode::kCorrupt) {
      Refuse(names[n]);
      known_.Remove(keys[from + n]);
      return n;
    }
    if (st.code() == StatusCode::kOutOfMemory) {
      Count("remote_get_no_room");
      return n;
    }
    if (!st.ok()) return n;  // closed meanwhile
    Count("remote_gets");
    Count("remote_get_bytes", value.size());
  }
  return count;
}

void RedisRemoteTier::Refuse(const std::string& name) {
  // Proven bad (header, tag, record checksum): deleted, so nobody is offered it again.
  Count("remote_bad_values");
  std::vector<RespReply> replies;
  const std::vector<std::vector<std::string_view>> del = {{"DEL", name}};
  (void)Run(del, &replies);
}

// ------------------------------------------------------------------ store

void RedisRemoteTier::Put(const std::vector<ChunkKey>& keys) {
  const size_t record_bytes = runtime_->RecordBytes();
  if (keys.empty() || record_bytes == 0) return;
  std::vector<ChunkKey> written;
  std::vector<std::string> names;
  std::vector<std::vector<uint8_t>> values;
  std::vector<uint8_t> record;
  for (const ChunkKey& k : keys) {
    if (known_.Contains(k)) continue;
    std::vector<uint8_t> value;
    const std::string hex = k.Hex();
    size_t bytes = 0;
    Status st;
    if (sealer_->in_place()) {
      // One copy: the record is exported after room for the header, and sealed where it lies.
      value.resize(WireSealer::kHeaderBytes + record_bytes);
      st = runtime_->ExportRecord(k, value.data() + WireSealer::kHeaderBytes, record_bytes, &bytes);
      if (st.ok()) st = sealer_->SealInPlace(hex, value.data(), bytes);
    } else {
      record.resize(record_bytes);
      st = runtime_->ExportRecord(k, record.data(), record.size(), &bytes);
      if (st.ok()) st = sealer_->Encode(hex, record.data(), bytes, &value);
    }
    if (!st.ok()) {  // left host memory before its turn (or was found damaged there)
      Count("remote_put_skipped");
      continue;
    }
    written.push_back(k);
    names.push_back(kKeyPrefix + hex);
    values.push_back(std::move(value));
  }
  if (written.empty()) return;
  std::vector<std::vector<std::string_view>> commands;
  commands.reserve(written.size());
  uint64_t value_bytes = 0;
  for (size_t i = 0; i < written.size(); ++i) {
    commands.push_back({"SET", names[i],
                        std::string_view(reinterpret_cast<const char*>(values[i].data()), values[i].size())});
    value_bytes += values[i].size();
  }
  std::vector<RespReply> replies;
  if (!Run(commands, &replies).ok()) {
    Unavailable("put", written.size());
    return;
  }
  for (const ChunkKey& k : written) known_.Add(k);
  Count("remote_puts", written.size());
  Count("remote_put_bytes", value_bytes);
  Count("remote_put_record_bytes", uint64_t(written.size()) * record_bytes);
}

}  // namespace lmcache
