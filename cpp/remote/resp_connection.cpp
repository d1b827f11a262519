#include "resp_connection.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>

namespace lmcache {

namespace {

constexpr size_t kBorrowAtBytes = 64 << 10;   // arguments this large are sent from the caller's memory
constexpr size_t kMaxLineBytes = 64 << 10;    // a status, error or length line longer than this is no server's
constexpr size_t kReadChunkBytes = 64 << 10;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string SslErrorText() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// OpenSSL writes to the socket with write(2): a peer that closed would raise
// SIGPIPE in the engine's process. Blocked for the write and, if it came,
// taken back, so that neither the engine's handlers nor its default action
// (death) ever see it.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe, nullptr, &zero) == SIGPIPE) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

bool IsAddress(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

Status ConnectFd(const RedisEndpoint& e, int64_t deadline_ns, int* fd_out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(e.port);
  const int rc = getaddrinfo(e.host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) return Status::IoError(e.display + ": cannot resolve the host: " + gai_strerror(rc));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> owned(found, freeaddrinfo);
  int last_errno = 0;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    int err = connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const int64_t left_ms = (deadline_ns - NowNs()) / 1000000;
      const int n = left_ms > 0 ? poll(&p, 1, int(std::min<int64_t>(left_ms, INT_MAX))) : 0;
      socklen_t len = sizeof(err);
      if (n == 1) {
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      } else {
        err = ETIMEDOUT;
      }
    }
    if (err == 0) {
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      *fd_out = fd;
      return Status::Ok();
    }
    last_errno = err;
    close(fd);
  }
  return Status::IoError(e.display + ": cannot connect: " + std::strerror(last_errno), last_errno);
}

}  // namespace

// ------------------------------------------------------------------ TLS

Status TlsContext::Create(const TlsFiles& files, std::shared_ptr<TlsContext>* out) {
  auto t = std::make_shared<TlsContext>();
  t->ctx_ = SSL_CTX_new(TLS_client_method());
  if (t->ctx_ == nullptr) return Status::Internal("TLS: " + SslErrorText());
  SSL_CTX_set_min_proto_version(t->ctx_, TLS1_2_VERSION);
  SSL_CTX_set_verify(t->ctx_, SSL_VERIFY_PEER, nullptr);
  const bool ca_ok = files.ca_file.empty() ? SSL_CTX_set_default_verify_paths(t->ctx_) == 1
                                           : SSL_CTX_load_verify_locations(t->ctx_, files.ca_file.c_str(), nullptr) == 1;
  if (!ca_ok) return Status::InvalidArgument("config key 'remote_tls_ca_file': cannot load it: " + SslErrorText());
  if (!files.key_file.empty() && files.cert_file.empty()) {
    return Status::InvalidArgument("config key 'remote_tls_key_file' needs 'remote_tls_cert_file'");
  }
  if (!files.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(t->ctx_, files.cert_file.c_str()) != 1) {
      return Status::InvalidArgument("config key 'remote_tls_cert_file': cannot load it: " + SslErrorText());
    }
    const std::string& key = files.key_file.empty() ? files.cert_file : files.key_file;
    if (SSL_CTX_use_PrivateKey_file(t->ctx_, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ctx_) != 1) {
      return Status::InvalidArgument("config key 'remote_tls_key_file': cannot load it: " + SslErrorText());
    }
  }
  *out = std::move(t);
  return Status::Ok();
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

// ------------------------------------------------------------------ connection

Status RespConnection::Open(const RedisEndpoint& endpoint, std::shared_ptr<TlsContext> tls, double timeout_s,
                            size_t max_bulk_bytes, std::unique_ptr<RespConnection>* out) {
  const int64_t deadline = NowNs() + int64_t(timeout_s * 1e9);
  int fd = -1;
  LMC_RETURN_IF_ERROR(ConnectFd(endpoint, deadline, &fd));
  std::unique_ptr<RespConnection> c(new RespConnection(fd, timeout_s, max_bulk_bytes));
  c->deadline_ns_ = deadline;
  if (endpoint.tls) {
    if (!tls) return Status::Internal("rediss:// without a TLS context");
    c->tls_ = std::move(tls);
    LMC_RETURN_IF_ERROR(c->StartTls(endpoint.host, c->tls_->get()));
  }
  LMC_RETURN_IF_ERROR(c->Handshake(endpoint));
  *out = std::move(c);
  return Status::Ok();
}

RespConnection::~RespConnection() {
  if (ssl_ != nullptr) SSL_free(ssl_);  // no close_notify: it could block on a dead peer
  if (fd_ >= 0) close(fd_);
}

Status RespConnection::Fail(Status st) {
  broken_ = true;
  ERR_clear_error();
  return st;
}

Status RespConnection::WaitFd(bool for_write) {
  // Within an exchange the timeout is per wait, as a socket timeout is: a
  // large batch that keeps moving is not cut off, a silent server is.
  if (rolling_deadline_) deadline_ns_ = NowNs() + int64_t(timeout_s_ * 1e9);
  const int64_t left_ns = deadline_ns_ - NowNs();
  if (left_ns <= 0) return Fail(Status::IoError("remote tier: timed out", ETIMEDOUT));
  pollfd p{fd_, short(for_write ? POLLOUT : POLLIN), 0};
  const int ms = int(std::min<int64_t>((left_ns + 999999) / 1000000, INT_MAX));
  const int n = poll(&p, 1, ms);
  if (n < 0 && errno != EINTR) return Fail(Status::IoError(std::string("remote tier: poll: ") + std::strerror(errno)));
  if (n == 0) return Fail(Status::IoError("remote tier: timed out", ETIMEDOUT));
  return Status::Ok();
}

Status RespConnection::StartTls(const std::string& host, SSL_CTX* ctx) {
  ssl_ = SSL_new(ctx);
  if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) return Fail(Status::Internal("TLS: " + SslErrorText()));
  if (IsAddress(host)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl_, host.c_str());
    SSL_set1_host(ssl_, host.c_str());
  }
  while (true) {
    const int rc = SSL_connect(ssl_);
    if (rc == 1) return Status::Ok();
    const int err = SSL_get_error(ssl_, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      LMC_RETURN_IF_ERROR(WaitFd(err == SSL_ERROR_WANT_WRITE));
      continue;
    }
    const long verify = SSL_get_verify_result(ssl_);
    std::string why = verify != X509_V_OK ? X509_verify_cert_error_string(verify) : SslErrorText();
    return Fail(Status::IoError("remote tier: TLS handshake failed: " + why));
  }
}

Status RespConnection::Handshake(const RedisEndpoint& e) {
  size_t commands = 0;
  if (!e.password.empty()) {
    if (e.username.empty()) {
      Append({"AUTH", e.password});
    } else {
      Append({"AUTH", e.username, e.password});
    }
    ++commands;
  }
  const std::string db = std::to_string(e.db);
  if (e.db != 0) {
    Append({"SELECT", db});
    ++commands;
  }
  if (commands == 0) return Status::Ok();
  std::vector<RespReply> replies;
  LMC_RETURN_IF_ERROR(Exchange(&replies));
  for (const RespReply& r : replies) {
    // The server's message names the failure (WRONGPASS, ...), never the password.
    if (r.type == RespReply::Type::kError) return Fail(Status::IoError(e.display + ": " + r.text));
  }
  return Status::Ok();
}

void RespConnection::Append(const std::vector<std::string_view>& args) {
  if (out_.empty() || out_.back().borrowed != nullptr) out_.emplace_back();
  std::string* frame = &out_.back().owned;
  frame->append("*").append(std::to_string(args.size())).append("\r\n");
  for (std::string_view a : args) {
    frame->append("$").append(std::to_string(a.size())).append("\r\n");
    if (a.size() >= kBorrowAtBytes) {
      Piece big;
      big.borrowed = a.data();
      big.borrowed_len = a.size();
      out_.push_back(std::move(big));
      out_.emplace_back();
      frame = &out_.back().owned;
    } else {
      frame->append(a);
    }
    frame->append("\r\n");
  }
  ++queued_;
}

Status RespConnection::WriteAll(const char* data, size_t len) {
  while (len > 0) {
    ssize_t n;
    if (ssl_ != nullptr) {
      SigpipeGuard guard;
      const int rc = SSL_write(ssl_, data, int(std::min<size_t>(len, INT_MAX)));
      if (rc <= 0) {
        const int err = SSL_get_error(ssl_, rc);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          LMC_RETURN_IF_ERROR(WaitFd(err == SSL_ERROR_WANT_WRITE));
          continue;
        }
        return Fail(Status::IoError("remote tier: TLS write failed: " + SslErrorText()));
      }
      n = rc;
    } else {
      n = send(fd_, data, len, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          LMC_RETURN_IF_ERROR(WaitFd(true));
          continue;
        }
        return Fail(Status::IoError(std::string("remote tier: send: ") + std::strerror(errno), errno));
      }
    }
    data += n;
    len -= size_t(n);
  }
  return Status::Ok();
}

// Reads what is there (at least one byte) onto the end of in_.
Status RespConnection::Fill() {
  if (in_pos_ > 0 && in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
  }
  const size_t old = in_.size();
  in_.resize(old + kReadChunkBytes);
  while (true) {
    ssize_t n;
    if (ssl_ != nullptr) {
      const int rc = SSL_read(ssl_, in_.data() + old, int(kReadChunkBytes));
      if (rc <= 0) {
        const int err = SSL_get_error(ssl_, rc);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          Status st = WaitFd(err == SSL_ERROR_WANT_WRITE);
          if (!st.ok()) {
            in_.resize(old);
            return st;
          }
          continue;
        }
        in_.resize(old);
        return Fail(Status::IoError("remote tier: the server closed the connection"));
      }
      n = rc;
    } else {
      n = recv(fd_, in_.data() + old, kReadChunkBytes, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        Status st = WaitFd(false);
        if (!st.ok()) {
          in_.resize(old);
          return st;
        }
        continue;
      }
      if (n <= 0) {
        in_.resize(old);
        return Fail(Status::IoError("remote tier: the server closed the connection"));
      }
    }
    in_.resize(old + size_t(n));
    return Status::Ok();
  }
}

Status RespConnection::ReadLine(std::string* line) {
  while (true) {
    const size_t end = in_.find("\r\n", in_pos_);
    if (end != std::string::npos) {
      line->assign(in_, in_pos_, end - in_pos_);
      in_pos_ = end + 2;
      return Status::Ok();
    }
    if (in_.size() - in_pos_ > kMaxLineBytes) return Fail(Status::IoError("remote tier: reply line too long"));
    LMC_RETURN_IF_ERROR(Fill());
  }
}

Status RespConnection::ReadExact(uint8_t* out, size_t len) {
  while (len > 0) {
    if (in_pos_ == in_.size()) LMC_RETURN_IF_ERROR(Fill());
    const size_t n = std::min(len, in_.size() - in_pos_);
    std::memcpy(out, in_.data() + in_pos_, n);
    in_pos_ += n;
    out += n;
    len -= n;
  }
  return Status::Ok();
}

Status RespConnection::ReadReply(RespReply* r) {
  std::string line;
  LMC_RETURN_IF_ERROR(ReadLine(&line));
  if (line.empty()) return Fail(Status::IoError("remote tier: empty reply line"));
  const char kind = line[0];
  const std::string_view rest(line.data() + 1, line.size() - 1);
  int64_t n = 0;
  if (kind == ':' || kind == '$' || kind == '*') {
    const auto p = std::from_chars(rest.data(), rest.data() + rest.size(), n);
    if (p.ec != std::errc() || p.ptr != rest.data() + rest.size()) {
      return Fail(Status::IoError("remote tier: malformed reply"));
    }
  }
  switch (kind) {
    case '+':
      r->type = RespReply::Type::kStatus;
      r->text.assign(rest);
      return Status::Ok();
    case '-':
      r->type = RespReply::Type::kError;
      r->text.assign(rest);
      return Status::Ok();
    case ':':
      r->type = RespReply::Type::kInteger;
      r->integer = n;
      return Status::Ok();
    case '$': {
      if (n == -1) {
        r->type = RespReply::Type::kNil;
        return Status::Ok();
      }
      // Bounded before anything is allocated: a server (or whoever answers in
      // its place) cannot make this process hold more than one value's worth.
      if (n < 0 || uint64_t(n) > max_bulk_) {
        return Fail(Status::IoError("remote tier: a reply of " + std::to_string(n) +
                                    " bytes, more than any value lmcache wrote"));
      }
      r->type = RespReply::Type::kBulk;
      r->bulk.resize(size_t(n));
      LMC_RETURN_IF_ERROR(ReadExact(r->bulk.data(), size_t(n)));
      uint8_t crlf[2];
      LMC_RETURN_IF_ERROR(ReadExact(crlf, 2));
      if (crlf[0] != '\r' || crlf[1] != '\n') return Fail(Status::IoError("remote tier: malformed bulk reply"));
      return Status::Ok();
    }
    case '*':
      if (n == -1) {
        r->type = RespReply::Type::kNil;
        return Status::Ok();
      }
      return Fail(Status::IoError("remote tier: unexpected array reply"));
    default:
      return Fail(Status::IoError("remote tier: not a RESP2 reply"));
  }
}

Status RespConnection::Exchange(std::vector<RespReply>* replies) {
  replies->clear();
  if (broken_) return Status::IoError("remote tier: connection broken");
  rolling_deadline_ = true;
  const size_t expected = queued_;
  std::vector<Piece> pieces;
  pieces.swap(out_);
  queued_ = 0;
  for (const Piece& p : pieces) {
    if (p.borrowed != nullptr) {
      LMC_RETURN_IF_ERROR(WriteAll(p.borrowed, p.borrowed_len));
    } else if (!p.owned.empty()) {
      LMC_RETURN_IF_ERROR(WriteAll(p.owned.data(), p.owned.size()));
    }
  }
  replies->resize(expected);
  for (size_t i = 0; i < expected; ++i) LMC_RETURN_IF_ERROR(ReadReply(&(*replies)[i]));
  return Status::Ok();
}

}  // namespace lmcache
