#include "util/secret.h"

#include <string.h>

#include <openssl/evp.h>

void secret_hash(const void *secret, size_t len, uint8_t out[SECRET_HASH_LEN])
{
    unsigned int outlen = 0;

    /* SHA-256 cannot fail short of a broken library; then no stored hash (never zero) matches. */
    if (EVP_Digest(secret, len, out, &outlen, EVP_sha256(), NULL) != 1 || outlen != SECRET_HASH_LEN)
        memset(out, 0, SECRET_HASH_LEN);
}
