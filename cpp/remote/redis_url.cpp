#include "redis_url.h"

#include <cctype>
#include <charconv>
#include <vector>

namespace lmcache {

namespace {

struct UrlParts {
  std::string scheme;  // lowercased; empty when there is no "://"
  bool has_user = false;
  std::string_view userinfo;
  std::string_view hosts;
  std::string_view path;  // "" or "/..." (the database number)
  bool extra = false;     // a query or fragment followed
};

UrlParts Split(std::string_view url) {
  UrlParts u;
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos) return u;
  for (char c : url.substr(0, sep)) u.scheme.push_back(char(std::tolower(static_cast<unsigned char>(c))));
  std::string_view rest = url.substr(sep + 3);
  const size_t at = rest.rfind('@');  // host names, ports and db numbers never hold one
  if (at != std::string_view::npos) {
    u.has_user = true;
    u.userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
  }
  const size_t q = rest.find_first_of("?#");
  u.extra = q != std::string_view::npos;
  rest = rest.substr(0, q);
  const size_t slash = rest.find('/');
  u.hosts = rest.substr(0, slash);
  u.path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  return u;
}

bool NameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'; }
bool AddrChar(char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.'; }
bool AllDigits(std::string_view s) {
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// One "host[:port]" or "[v6addr][:port]"; the port is left as text.
bool SplitHost(std::string_view hp, std::string_view* host, std::string_view* port) {
  *port = {};
  if (!hp.empty() && hp.front() == '[') {
    const size_t close = hp.find(']');
    if (close == std::string_view::npos || close < 2) return false;
    *host = hp.substr(1, close - 1);
    for (char c : *host) {
      if (!AddrChar(c)) return false;
    }
    hp.remove_prefix(close + 1);
    if (hp.empty()) return true;
    if (hp.front() != ':' || hp.size() < 2 || !AllDigits(hp.substr(1))) return false;
    *port = hp.substr(1);
    return true;
  }
  const size_t colon = hp.find(':');
  *host = hp.substr(0, colon);
  if (host->empty()) return false;
  for (char c : *host) {
    if (!NameChar(c)) return false;
  }
  if (colon == std::string_view::npos) return true;
  *port = hp.substr(colon + 1);
  return !port->empty() && AllDigits(*port);
}

std::vector<std::string_view> SplitHosts(std::string_view hosts) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    const size_t comma = hosts.find(',', start);
    out.push_back(hosts.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

bool WellFormed(const UrlParts& u) {
  if (u.scheme.empty() || u.hosts.empty()) return false;
  for (std::string_view hp : SplitHosts(u.hosts)) {
    std::string_view host, port;
    if (!SplitHost(hp, &host, &port)) return false;
  }
  return u.path.empty() || AllDigits(u.path.substr(1));
}

bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int v = 0;
    const auto r = std::from_chars(in.data() + i + 1, in.data() + i + 3, v, 16);
    if (r.ec != std::errc() || r.ptr != in.data() + i + 3) return false;
    out->push_back(char(v));
    i += 2;
  }
  return true;
}

Status Bad(const std::string& what) { return Status::InvalidArgument("config key 'remote_url': " + what); }

}  // namespace

std::string RedactRedisUrl(std::string_view url) {
  const UrlParts u = Split(url);
  if (!WellFormed(u)) return u.scheme.empty() ? "***" : u.scheme + "://***";
  std::string out = u.scheme + "://";
  if (u.has_user) {
    const size_t colon = u.userinfo.find(':');
    const std::string_view user = u.userinfo.substr(0, colon);
    bool plain = colon != std::string_view::npos;
    for (char c : user) plain = plain && (NameChar(c));
    out += plain ? std::string(user) + ":***@" : "***@";
  }
  out.append(u.hosts).append(u.path);
  return out;
}

Status ParseRedisUrl(std::string_view url, RedisEndpoint* out) {
  const UrlParts u = Split(url);
  if (u.scheme != "redis" && u.scheme != "rediss" && u.scheme != "redis+cluster" && u.scheme != "rediss+cluster") {
    return Bad("unsupported scheme '" + u.scheme + "' (allowed: redis, rediss, redis+cluster, rediss+cluster)");
  }
  if (!WellFormed(u) || u.extra) {
    return Bad("expected scheme://[[user]:password@]host:port[,host:port...][/db], without query options");
  }
  if (u.scheme.find("cluster") != std::string::npos || u.hosts.find(',') != std::string_view::npos) {
    return Bad("the native client (the C API's) talks to one server: redis:// or rediss:// with one host. Redis "
               "Cluster is served by lmcache's Python client");
  }
  RedisEndpoint e;
  e.tls = u.scheme == "rediss";
  std::string_view host, port;
  (void)SplitHost(u.hosts, &host, &port);
  e.host = std::string(host);
  if (!port.empty()) {
    unsigned p = 0;
    const auto r = std::from_chars(port.data(), port.data() + port.size(), p);
    if (r.ec != std::errc() || p == 0 || p > 65535) return Bad("bad port in the URL");
    e.port = uint16_t(p);
  }
  if (u.path.size() > 1) {
    const std::string_view db = u.path.substr(1);
    const auto r = std::from_chars(db.data(), db.data() + db.size(), e.db);
    if (r.ec != std::errc() || e.db < 0) return Bad("bad database number in the URL");
  }
  if (u.has_user) {
    const size_t colon = u.userinfo.find(':');
    if (!PercentDecode(u.userinfo.substr(0, colon), &e.username)) return Bad("bad %-escape in the user name");
    if (colon != std::string_view::npos && !PercentDecode(u.userinfo.substr(colon + 1), &e.password)) {
      return Bad("bad %-escape in the password");
    }
  }
  e.display = RedactRedisUrl(url);
  *out = std::move(e);
  return Status::Ok();
}

}  // namespace lmcache
