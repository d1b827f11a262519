// One connection to a Redis/Valkey server speaking RESP2, over TCP or TLS.
// Commands are queued and sent together; their replies are read back in
// order (a pipeline: one round trip per batch). Every exchange has a
// deadline (the remote tier's timeout): a slow or absent server costs one
// timeout, never a hang. Replies are size-bounded before any allocation:
// a bulk reply longer than the bound the caller gives (the largest value
// lmcache can accept) breaks the connection instead of being read.
//
// After any I/O or protocol error the connection is broken and only good
// for closing; the owner (RedisRemoteTier's pool) opens another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "redis_url.h"
#include "status.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace lmcache {

// TLS files for rediss:// (config keys remote_tls_*); empty: the system's CA
// bundle and no client certificate. The server's name is always checked.
struct TlsFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

struct RespReply {
  enum class Type { kStatus, kError, kInteger, kBulk, kNil };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string text;           // kStatus, kError
  std::vector<uint8_t> bulk;  // kBulk
};

// A TLS context made once per remote tier (it reads the CA bundle and the
// client certificate), shared by its connections.
class TlsContext {
 public:
  static Status Create(const TlsFiles& files, std::shared_ptr<TlsContext>* out);
  ~TlsContext();
  SSL_CTX* get() const { return ctx_; }

 private:
  SSL_CTX* ctx_ = nullptr;
};

class RespConnection {
 public:
  // Connects (TLS when `tls` is given), then AUTH and SELECT as the endpoint
  // says, all within `timeout_s`.
  static Status Open(const RedisEndpoint& endpoint, std::shared_ptr<TlsContext> tls, double timeout_s,
                     size_t max_bulk_bytes, std::unique_ptr<RespConnection>* out);
  // Test hook (the fuzz target): a connection over an fd already connected
  // (a socketpair), plain TCP framing, taken over and closed by it.
  static std::unique_ptr<RespConnection> AdoptForTesting(int fd, double timeout_s, size_t max_bulk_bytes) {
    return std::unique_ptr<RespConnection>(new RespConnection(fd, timeout_s, max_bulk_bytes));
  }
  ~RespConnection();
  RespConnection(const RespConnection&) = delete;
  RespConnection& operator=(const RespConnection&) = delete;

  // Queues one command. Arguments of 64 KiB and more are not copied: they
  // must stay alive and unchanged until Exchange returns.
  void Append(const std::vector<std::string_view>& args);
  // Sends what was queued and reads one reply per command, in order.
  Status Exchange(std::vector<RespReply>* replies);
  bool broken() const { return broken_; }
  // The largest bulk reply the next exchanges accept.
  void set_max_bulk_bytes(size_t bytes) { max_bulk_ = bytes; }

 private:
  RespConnection(int fd, double timeout_s, size_t max_bulk_bytes) : fd_(fd), timeout_s_(timeout_s),
                                                                     max_bulk_(max_bulk_bytes) {}
  struct Piece {
    std::string owned;             // framing and small arguments
    const char* borrowed = nullptr;  // or a large argument, not copied
    size_t borrowed_len = 0;
  };
  Status Handshake(const RedisEndpoint& endpoint);
  Status StartTls(const std::string& host, SSL_CTX* ctx);
  Status Fail(Status st);
  Status WaitFd(bool for_write);
  Status WriteAll(const char* data, size_t len);
  Status Fill();  // reads more bytes into in_
  Status ReadLine(std::string* line);
  Status ReadExact(uint8_t* out, size_t len);
  Status ReadReply(RespReply* reply);

  int fd_;
  SSL* ssl_ = nullptr;
  std::shared_ptr<TlsContext> tls_;
  double timeout_s_;
  size_t max_bulk_;
  int64_t deadline_ns_ = 0;       // Open: one deadline for connect, TLS and AUTH
  bool rolling_deadline_ = false;  // Exchange: timeout_s_ per wait (see WaitFd)
  bool broken_ = false;
  std::vector<Piece> out_;
  size_t queued_ = 0;
  std::string in_;
  size_t in_pos_ = 0;
};

}  // namespace lmcache
