#include "engine_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <string>

#include "record_seal.h"
#ifdef LMCACHE_WITH_REMOTE
#include "redis_remote_tier.h"
#include "redis_url.h"
#endif

namespace lmcache {

namespace {

constexpr size_t kMinSecretBytes = 16;
constexpr size_t kMaxSecretFileBytes = 4096;

// Overwrites a string's bytes before it is freed (the compiler may not drop the writes).
void Wipe(std::string* s) {
  volatile char* p = s->data();
  for (size_t i = 0; i < s->size(); ++i) p[i] = 0;
  s->clear();
}

std::string_view Strip(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

Status SecretFileError(const std::string& path, const std::string& what) {
  return Status::InvalidArgument("config key 'auth_secret_file': '" + path + "' " + what);
}

// The file's secret, whitespace stripped: a regular file of this user that
// group and others cannot read, at most 4096 bytes, opened without
// following a link.
Status ReadSecretFile(const std::string& path, std::string* secret) {
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return SecretFileError(path, std::string("cannot be opened: ") + std::strerror(errno));
  struct stat st;
  Status result = Status::Ok();
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    result = SecretFileError(path, "is not a regular file");
  } else if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
    result = SecretFileError(path, "must belong to this user and be unreadable by group and others (chmod 600)");
  } else if (st.st_size > off_t(kMaxSecretFileBytes)) {
    result = SecretFileError(path, "is larger than 4096 bytes");
  } else {
    std::string data(kMaxSecretFileBytes + 1, '\0');
    size_t got = 0;
    while (got < data.size()) {
      const ssize_t n = read(fd, data.data() + got, data.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += size_t(n);
    }
    data.resize(got);
    if (got > kMaxSecretFileBytes) {
      result = SecretFileError(path, "is larger than 4096 bytes");
    } else {
      secret->assign(Strip(data));
    }
    Wipe(&data);
  }
  close(fd);
  return result;
}

// The derived record key into options->record_key (left empty without a
// secret), then the secret wiped.
Status DeriveRecordKey(RuntimeOptions* o) {
  if (!o->auth_secret.empty() && !o->auth_secret_file.empty()) {
    return Status::InvalidArgument("config keys 'auth_secret' and 'auth_secret_file': give one, not both");
  }
  std::string secret;
  if (!o->auth_secret_file.empty()) {
    LMC_RETURN_IF_ERROR(ReadSecretFile(o->auth_secret_file, &secret));
  } else {
    secret.swap(o->auth_secret);
  }
  Wipe(&o->auth_secret);
  if (secret.empty()) {
    if (!o->remote_url.empty()) {
      return Status::InvalidArgument(
          "config key 'remote_url': a shared remote tier needs a secret that authenticates its records: set "
          "auth_secret_file (or auth_secret) to the same secret on every engine that shares it");
    }
    if (o->encrypt_records && o->disk_dir.empty()) {
      return Status::InvalidArgument("config key 'encrypt_records': nothing leaves the process without a disk or "
                                     "remote tier");
    }
    return Status::Ok();
  }
  if (secret.size() < kMinSecretBytes) {
    Wipe(&secret);
    return Status::InvalidArgument("config key 'auth_secret': a secret needs at least 16 bytes");
  }
  if (!RecordSealer::Available()) {
    Wipe(&secret);
    return Status::InvalidArgument("lmcache was built without OpenSSL (libssl-dev), so it cannot authenticate records");
  }
  o->record_key = RecordSealer::DeriveKey(secret);
  Wipe(&secret);
  return Status::Ok();
}

}  // namespace

Status CreateEngineRuntime(RuntimeOptions options, std::unique_ptr<CacheRuntime>* out) {
  LMC_RETURN_IF_ERROR(DeriveRecordKey(&options));
#ifdef LMCACHE_WITH_REMOTE
  if (!options.remote_url.empty()) {
    // The URL and codec are checked before the runtime exists (it may take a disk directory's lock).
    RedisEndpoint endpoint;
    LMC_RETURN_IF_ERROR(ParseRedisUrl(options.remote_url, &endpoint));
    if (options.remote_codec == "fp8") {
      return Status::InvalidArgument("config key 'remote_codec': 'fp8' is for Python engines; the C API writes "
                                     "none, zstd or lz4");
    }
  }
#else
  if (!options.remote_url.empty()) {
    return Status::InvalidArgument("config key 'remote_url': lmcache was built without OpenSSL (libssl-dev), which "
                                   "its Redis client needs");
  }
#endif
  std::unique_ptr<CacheRuntime> runtime;
  LMC_RETURN_IF_ERROR(CacheRuntime::Create(options, &runtime));
#ifdef LMCACHE_WITH_REMOTE
  if (!options.remote_url.empty()) {
    RedisTierOptions r;
    r.url = options.remote_url;
    r.tls = TlsFiles{options.remote_tls_ca_file, options.remote_tls_cert_file, options.remote_tls_key_file};
    r.timeout_s = options.remote_timeout_s;
    r.codec = options.remote_codec;
    r.encrypt = options.encrypt_records;
    r.record_key = options.record_key;
    std::shared_ptr<RedisRemoteTier> tier;
    LMC_RETURN_IF_ERROR(RedisRemoteTier::Create(runtime.get(), r, &tier));
    LMC_RETURN_IF_ERROR(runtime->SetRemoteTier(std::move(tier), options.remote_queue_chunks));
  }
#endif
  Wipe(&options.record_key);
  *out = std::move(runtime);
  return Status::Ok();
}

}  // namespace lmcache
