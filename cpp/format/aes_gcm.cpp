#include "aes_gcm.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>

namespace lmcache {

namespace {
// AES-GCM takes at most INT_MAX bytes per update call.
constexpr size_t kMaxUpdate = size_t(1) << 30;
}  // namespace

AesGcm::AesGcm(Mode mode, const uint8_t* key, const uint8_t* nonce)
    : ctx_(EVP_CIPHER_CTX_new()), mode_(mode), ok_(ctx_ != nullptr) {
  ok_ = ok_ && EVP_CipherInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, key, nonce, mode == Mode::kSeal ? 1 : 0) == 1;
}

AesGcm::~AesGcm() { EVP_CIPHER_CTX_free(ctx_); }

void AesGcm::Update(const uint8_t* in, uint8_t* out, size_t bytes) {
  for (size_t done = 0; ok_ && done < bytes;) {
    const int n = static_cast<int>(std::min(kMaxUpdate, bytes - done));
    int written = 0;
    ok_ = EVP_CipherUpdate(ctx_, out ? out + done : nullptr, &written, in + done, n) == 1;
    done += size_t(n);
  }
}

bool AesGcm::Seal(uint8_t* tag) {
  int tail = 0;
  return ok_ && mode_ == Mode::kSeal && EVP_CipherFinal_ex(ctx_, nullptr, &tail) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, int(kTagBytes), tag) == 1;
}

bool AesGcm::Open(const uint8_t* tag) {
  int tail = 0;
  return ok_ && mode_ == Mode::kOpen &&
         EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, int(kTagBytes), const_cast<uint8_t*>(tag)) == 1 &&
         EVP_CipherFinal_ex(ctx_, nullptr, &tail) == 1;
}

bool AesGcm::Random(uint8_t* out, size_t bytes) { return RAND_bytes(out, static_cast<int>(bytes)) == 1; }

}  // namespace lmcache
