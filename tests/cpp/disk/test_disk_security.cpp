// The disk tier on a shared host, through DiskTier itself: private modes
// whatever the umask, unsafe directories refused, planted links never
// followed, other programs' files never deleted.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "check.h"
#include "disk_tier.h"

using namespace lmcache;
namespace fs = std::filesystem;

namespace {

std::string TempDir(const std::string& name) {
  std::string dir = fs::temp_directory_path() / ("lmcache-disk-sec-" + std::to_string(getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  chmod(dir.c_str(), 0700);  // the tier refuses a directory others can write to
  return dir;
}

// Where the tier keeps its files inside the directory it is given.
std::string Records(const std::string& dir) { return dir + "/lmcache-records"; }

std::unique_ptr<DiskTier> OpenTier(const std::string& dir, Status* st = nullptr) {
  DiskOptions o;
  o.dir = dir;
  o.capacity_bytes = 1 << 20;
  o.force_thread_pool = true;
  o.lock_timeout_s = 0.2;
  std::unique_ptr<DiskTier> tier;
  const Status s = DiskTier::Open(o, &tier);
  if (st != nullptr) *st = s;
  else CHECK_OK(s);
  return tier;
}

// Writes one 4096-byte record filled with `fill`; true if it was written.
bool WriteRecord(DiskTier& tier, ChunkKey key, uint8_t fill) {
  uint8_t* page = static_cast<uint8_t*>(std::aligned_alloc(4096, 4096));
  std::memset(page, fill, 4096);
  const size_t n = tier.WriteMany({DiskWrite{key, page, 4096, nullptr}});
  std::free(page);
  return n == 1;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  CHECK(f != nullptr);
  std::fputs(text.c_str(), f);
  std::fclose(f);
}

std::string ReadFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return "<missing>";
  char buf[256];
  const size_t n = std::fread(buf, 1, sizeof(buf), f);
  std::fclose(f);
  return std::string(buf, n);
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  CHECK(lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// Open must fail with InvalidArgument, naming `path` and `why`.
void CheckRefused(const std::string& dir, const std::string& path, const std::string& why) {
  Status st;
  CHECK(OpenTier(dir, &st) == nullptr);
  if (st.code() != StatusCode::kInvalidArgument || st.message().find(path) == std::string::npos ||
      st.message().find(why) == std::string::npos) {
    std::printf("unexpected status: %s\n", st.ToString().c_str());
    CHECK(false);
  }
}

// Everything is private to its owner whatever the umask: KV comes from prompts.
void TestPrivateModes() {
  const std::string dir = TempDir("modes") + "/made-by-the-tier";
  const mode_t old_umask = umask(0);
  {
    auto tier = OpenTier(dir);
    CHECK(tier->records_dir() == Records(dir));
    CHECK(WriteRecord(*tier, ChunkKey{1, 2}, 7));
    CHECK(ModeOf(dir) == 0700 && ModeOf(Records(dir)) == 0700);
    CHECK(ModeOf(Records(dir) + "/.lock") == 0600 && ModeOf(Records(dir) + "/.lmcache-dir") == 0600);
    CHECK(ModeOf(Records(dir) + "/" + ChunkKey{1, 2}.Hex() + ".lmc") == 0600);
    CHECK(ReadFile(Records(dir) + "/.lmcache-dir") == "lmcache disk tier records\nformat 1\n");
  }
  umask(old_umask);
  CHECK(OpenTier(dir)->Contains(ChunkKey{1, 2}));  // the marked directory is used again
  fs::remove_all(fs::path(dir).parent_path());
  std::printf("  ok: directory 0700, records, lock and marker 0600 under umask 0\n");
}

// A directory others may write to, or that another user owns, is refused before anything is made in it.
void TestUnsafeDirectoryRefused() {
  const std::string dir = TempDir("unsafe");
  CHECK(chmod(dir.c_str(), 0777) == 0);
  CheckRefused(dir, dir, "writable by group or others (mode 0777)");
  CHECK(chmod(dir.c_str(), 0720) == 0);
  CheckRefused(dir, dir, "writable by group or others");
  CHECK(chmod(dir.c_str(), 0700) == 0);
  if (geteuid() == 0) {
    CHECK(chown(dir.c_str(), 65534, 65534) == 0);
    CheckRefused(dir, dir, "owned by uid 65534");
  } else {
    std::printf("  SKIPPED the foreign-owner case: chown needs root\n");
  }
  CHECK(fs::is_empty(dir));
  fs::remove_all(dir);
  std::printf("  ok: a 0777 directory and one of uid 65534 are refused\n");
}

// A link planted where the tier writes its temp file is never followed.
void TestPlantedTempLink() {
  const std::string dir = TempDir("planted-tmp"), outside = TempDir("planted-target") + "/precious";
  WriteFile(outside, "not yours");
  auto tier = OpenTier(dir);
  const ChunkKey key{0x1111, 0x2222};
  const std::string link = Records(dir) + "/" + key.Hex() + ".tmp";
  CHECK(symlink(outside.c_str(), link.c_str()) == 0);
  CHECK(!WriteRecord(*tier, key, 0xab));  // dropped cleanly...
  CHECK(WriteRecord(*tier, ChunkKey{3, 4}, 0xcd));  // ...and other records still go
  const DiskStats s = tier->Stats();
  CHECK(s.write_errors == 1 && s.temp_name_taken == 1 && s.writes == 1 && !tier->Contains(key));
  CHECK(ReadFile(outside) == "not yours" && ModeOf(outside) == 0644);
  CHECK(fs::is_symlink(link) && !fs::exists(fs::symlink_status(Records(dir) + "/" + key.Hex() + ".lmc")));
  tier.reset();
  fs::remove_all(dir);
  fs::remove_all(fs::path(outside).parent_path());
  std::printf("  ok: a planted <key>.tmp link is not written through\n");
}

// A link in place of the lock or of the records directory: refused, its target untouched.
void TestPlantedLockAndDirLinks() {
  const std::string dir = TempDir("planted-lock"), target = TempDir("planted-lock-target");
  WriteFile(target + "/precious", "not yours");
  OpenTier(dir).reset();  // makes the records directory
  CHECK(fs::remove(Records(dir) + "/.lock"));
  CHECK(symlink((target + "/precious").c_str(), (Records(dir) + "/.lock").c_str()) == 0);
  CheckRefused(dir, Records(dir) + "/.lock", "symbolic link");
  CHECK(ReadFile(target + "/precious") == "not yours" && ModeOf(target + "/precious") == 0644);

  const std::string dir2 = TempDir("planted-dir");
  WriteFile(target + "/0123456789abcdef0123456789abcdef.tmp", "theirs");
  CHECK(symlink(target.c_str(), Records(dir2).c_str()) == 0);
  CheckRefused(dir2, Records(dir2), "symbolic link");
  CHECK(ReadFile(target + "/0123456789abcdef0123456789abcdef.tmp") == "theirs");
  CHECK(!fs::exists(target + "/.lock") && !fs::exists(target + "/.lmcache-dir"));
  for (const std::string& d : {dir, dir2, target}) fs::remove_all(d);
  std::printf("  ok: links in place of .lock and of the records directory are refused\n");
}

// A records directory lmcache did not make (no marker, another format, other
// modes) is refused and never cleaned; files next to it are never touched.
void TestOnlyOurFilesAreTouched() {
  const std::string dir = TempDir("foreign");
  const char* foreign[] = {"0123456789abcdef0123456789abcdef.tmp", "fedcba9876543210fedcba9876543210.lmc",
                           "notes.tmp", "data.lmc", ".lock"};
  for (const char* name : foreign) WriteFile(dir + "/" + name, "theirs");
  {
    auto tier = OpenTier(dir);
    CHECK(tier->Stats().discarded_at_start == 0);
    CHECK(WriteRecord(*tier, ChunkKey{5, 6}, 1));
    tier->Clear();
  }
  WriteFile(Records(dir) + "/keep.tmp", "theirs too");  // not one of our names, even inside
  OpenTier(dir).reset();
  for (const char* name : foreign) CHECK(ReadFile(dir + "/" + name) == "theirs");
  CHECK(ReadFile(Records(dir) + "/keep.tmp") == "theirs too");

  CHECK(fs::remove(Records(dir) + "/.lmcache-dir"));  // a directory without the marker
  WriteFile(Records(dir) + "/0123456789abcdef0123456789abcdef.tmp", "theirs");
  CheckRefused(dir, Records(dir), "no valid lmcache marker");
  CHECK(ReadFile(Records(dir) + "/0123456789abcdef0123456789abcdef.tmp") == "theirs");
  WriteFile(Records(dir) + "/.lmcache-dir", "lmcache disk tier records\nformat 999\n");
  CheckRefused(dir, Records(dir), "format 999");
  WriteFile(Records(dir) + "/.lmcache-dir", "lmcache disk tier records\nformat 1\n");
  CHECK(chmod(Records(dir).c_str(), 0755) == 0);
  CheckRefused(dir, Records(dir), "mode is 0755");
  CHECK(ReadFile(Records(dir) + "/0123456789abcdef0123456789abcdef.tmp") == "theirs");
  fs::remove_all(dir);
  std::printf("  ok: foreign files survive; an unmarked records directory is refused\n");
}

}  // namespace

int main() {
  TestPrivateModes();
  TestUnsafeDirectoryRefused();
  TestPlantedTempLink();
  TestPlantedLockAndDirLinks();
  TestOnlyOurFilesAreTouched();
  std::puts("test_disk_security: ok");
  return 0;
}
