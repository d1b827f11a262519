#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "check.h"
#include "chunk_key.h"

using namespace lmcache;

static NamespaceSpec BaseSpec() {
  NamespaceSpec s;
  s.model_id = "meta-llama/Llama-3.1-8B";
  s.num_layers = 32;
  s.num_planes = 2;
  s.num_heads = 8;
  s.head_dim = 128;
  s.dtype = 3;
  s.tp_rank = 0;
  s.tp_size = 1;
  return s;
}

static std::vector<ChunkKey> Keys(const NamespaceSpec& spec, const std::vector<uint32_t>& tokens, size_t cs = 256) {
  std::vector<ChunkKey> keys;
  HashChunks(NamespaceSeed(spec), tokens.data(), tokens.size(), cs, &keys);
  return keys;
}

static std::vector<uint32_t> Tokens(size_t n, uint32_t salt = 0) {
  std::vector<uint32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<uint32_t>((i * 2654435761u + salt) % 128000);
  return t;
}

static void TestDeterministicAndChained() {
  const auto tokens = Tokens(1000);
  const auto a = Keys(BaseSpec(), tokens);
  const auto b = Keys(BaseSpec(), tokens);
  CHECK(a.size() == 3);  // 1000 / 256 whole chunks; the tail gets no key
  CHECK(a == b);
  // Chain: changing a token in chunk 1 changes keys 1 and 2 but not 0.
  auto changed = tokens;
  changed[300] ^= 1;
  const auto c = Keys(BaseSpec(), changed);
  CHECK(c[0] == a[0] && c[1] != a[1] && c[2] != a[2]);
  // Prefix property: the keys of a prefix are a prefix of the keys.
  const auto prefix = Keys(BaseSpec(), std::vector<uint32_t>(tokens.begin(), tokens.begin() + 512));
  CHECK(prefix.size() == 2 && prefix[0] == a[0] && prefix[1] == a[1]);
  // A different chunk size gives different keys.
  CHECK(Keys(BaseSpec(), tokens, 128)[0] != a[0]);
}

static void TestNamespaceFields() {
  const auto tokens = Tokens(256);
  const ChunkKey base = Keys(BaseSpec(), tokens)[0];
  std::vector<NamespaceSpec> variants;
  for (int field = 0; field < 10; ++field) {
    NamespaceSpec s = BaseSpec();
    switch (field) {
      case 0: s.model_id = "meta-llama/Llama-3.1-8B-Instruct"; break;
      case 1: s.num_layers = 31; break;
      case 2: s.num_heads = 4; break;
      case 3: s.head_dim = 64; break;
      case 4: s.dtype = 2; break;
      case 5: s.tp_rank = 1; s.tp_size = 2; break;
      case 6: s.tp_size = 2; break;
      case 7: s.tenant_salt = "tenant-a"; break;
      case 8: s.layout_version = 2; break;
      case 9: s.opaque_block_size = 128; break;
    }
    CHECK(Keys(s, tokens)[0] != base);
  }
  // Tenants never share keys.
  NamespaceSpec a = BaseSpec(), b = BaseSpec();
  a.tenant_salt = "a";
  b.tenant_salt = "b";
  CHECK(Keys(a, tokens)[0] != Keys(b, tokens)[0]);
  // Field boundaries are unambiguous.
  NamespaceSpec m1 = BaseSpec(), m2 = BaseSpec();
  m1.model_id = "ab";
  m1.tenant_salt = "c";
  m2.model_id = "a";
  m2.tenant_salt = "bc";
  CHECK(Keys(m1, tokens)[0] != Keys(m2, tokens)[0]);
  // MLA: one latent shared by every TP rank, so the rank is not in the key.
  NamespaceSpec r0 = BaseSpec(), r1 = BaseSpec();
  r0.num_planes = r1.num_planes = 1;
  r0.tp_size = r1.tp_size = 4;
  r1.tp_rank = 3;
  CHECK(Keys(r0, tokens)[0] == Keys(r1, tokens)[0]);
}

static void TestSameAcrossProcesses() {
  const auto tokens = Tokens(2048, 7);
  const auto mine = Keys(BaseSpec(), tokens);
  int fds[2];
  CHECK(pipe(fds) == 0);
  const pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    // A fresh exec would be stronger still, but the hash has no per-process
    // state (no random seed), which is what this checks.
    close(fds[0]);
    const auto theirs = Keys(BaseSpec(), Tokens(2048, 7));
    const ssize_t want = static_cast<ssize_t>(theirs.size() * sizeof(ChunkKey));
    _exit(write(fds[1], theirs.data(), static_cast<size_t>(want)) == want ? 0 : 1);
  }
  close(fds[1]);
  std::vector<ChunkKey> theirs(mine.size());
  size_t got = 0;
  while (got < theirs.size() * sizeof(ChunkKey)) {
    const ssize_t r = read(fds[0], reinterpret_cast<char*>(theirs.data()) + got, theirs.size() * sizeof(ChunkKey) - got);
    CHECK(r > 0);
    got += static_cast<size_t>(r);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(theirs == mine);
}

static void TestHex() {
  ChunkKey k{0x0123456789abcdefull, 0xfedcba9876543210ull};
  CHECK(k.Hex() == "fedcba98765432100123456789abcdef");
}

int main() {
  TestDeterministicAndChained();
  TestNamespaceFields();
  TestSameAcrossProcesses();
  TestHex();
  std::puts("test_chunk_key: ok");
  return 0;
}
