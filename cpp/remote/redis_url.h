// The remote tier's URL, as the native client reads it:
//   redis://[[user]:password@]host:port[/db]    one server
//   rediss://...                                 the same over TLS
// The same grammar as lmcache.remote.redis_tier (the Python client): the
// user part ends at the last '@' (a password may hold '/', '?' or '#'),
// user and password are percent-decoded, and a query or fragment is
// refused. Redis Cluster URLs (redis+cluster://, several hosts) are
// recognised and refused with the reason: the native client talks to one
// server.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "status.h"

namespace lmcache {

struct RedisEndpoint {
  std::string host;  // a name, or an address (IPv6 without its brackets)
  uint16_t port = 6379;
  bool tls = false;
  std::string username;  // empty: the default user
  std::string password;  // empty: no AUTH
  int db = 0;
  std::string display;   // the URL with its password masked, for messages
};

// Errors are kInvalidArgument naming config key 'remote_url'; they never
// echo the URL (it may hold a password).
Status ParseRedisUrl(std::string_view url, RedisEndpoint* out);

// The URL without its password: what messages and logs may show.
std::string RedactRedisUrl(std::string_view url);

}  // namespace lmcache
