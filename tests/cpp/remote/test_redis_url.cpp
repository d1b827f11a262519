// The native client's URL grammar (cpp/remote/redis_url.h): what it takes,
// what it refuses, and that no message or display form shows a password.
#include <string>

#include "check.h"
#include "redis_url.h"

using namespace lmcache;

namespace {

RedisEndpoint Parse(const std::string& url) {
  RedisEndpoint e;
  CHECK_OK(ParseRedisUrl(url, &e));
  return e;
}

void Refused(const std::string& url) {
  RedisEndpoint e;
  const Status st = ParseRedisUrl(url, &e);
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK(st.message().find("remote_url") != std::string::npos);
  CHECK(st.message().find("hunter2") == std::string::npos);
}

void TestAccepted() {
  RedisEndpoint e = Parse("redis://127.0.0.1:6380");
  CHECK(e.host == "127.0.0.1" && e.port == 6380 && !e.tls && e.password.empty() && e.db == 0);
  e = Parse("rediss://alice:p%40ss/w?rd#x@cache.local:6390/3");
  CHECK(e.tls && e.host == "cache.local" && e.port == 6390 && e.db == 3);
  CHECK(e.username == "alice" && e.password == "p@ss/w?rd#x");
  CHECK(e.display.find("p@ss") == std::string::npos && e.display.find("p%40ss") == std::string::npos);
  e = Parse("redis://:hunter2@[::1]:7000");
  CHECK(e.host == "::1" && e.port == 7000 && e.username.empty() && e.password == "hunter2");
  CHECK(e.display.find("hunter2") == std::string::npos);
  e = Parse("REDIS://localhost");
  CHECK(e.host == "localhost" && e.port == 6379);
}

void TestRefused() {
  Refused("");
  Refused("localhost:6379");
  Refused("http://localhost:6379");
  Refused("redis+cluster://:hunter2@h1:1,h2:2");  // the native client talks to one server
  Refused("redis://:hunter2@h1:1,h2:2");
  Refused("redis://:hunter2@host:6379?db=1");
  Refused("redis://:hunter2@host:notaport");
  Refused("redis://:hunter2@host:70000");
  Refused("redis://:hunter2@host:6379/x");
}

void TestRedact() {
  CHECK(RedactRedisUrl("redis://bob:hunter2@h:1/2").find("hunter2") == std::string::npos);
  CHECK(RedactRedisUrl("redis://hunter2@h:1").find("hunter2") == std::string::npos);
  CHECK(RedactRedisUrl("redis://h:1") == "redis://h:1");
}

}  // namespace

int main() {
  TestAccepted();
  TestRefused();
  TestRedact();
  return 0;
}
