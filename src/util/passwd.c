#include "util/passwd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "util/error.h"
#include "util/hex.h"
#include "util/utf8.h"

#define SCHEME "pbkdf2-sha256"
#define SALT_LEN 16
#define HASH_LEN 32
#define ITERATIONS_MIN 1000
#define ITERATIONS_MAX 10000000

struct passwd_entry {
    char *user;
    unsigned iterations;
    uint8_t salt[SALT_LEN];
    uint8_t hash[HASH_LEN];
    bool seen_set;          /* `seen` holds the password of the last login */
    uint8_t seen[HASH_LEN]; /* SHA-256 of salt and that password */
};

struct passwd_file {
    struct passwd_entry *entries;
    size_t count;
};

static bool pbkdf2(const void *password, size_t len, const uint8_t *salt, unsigned iterations,
                   uint8_t out[HASH_LEN])
{
    return PKCS5_PBKDF2_HMAC(password, (int)len, salt, SALT_LEN, (int)iterations, EVP_sha256(),
                             HASH_LEN, out) == 1;
}

static bool quick_hash(const void *password, size_t len, const uint8_t *salt, uint8_t out[HASH_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(ctx, salt, SALT_LEN) == 1 &&
              EVP_DigestUpdate(ctx, password, len) == 1 && EVP_DigestFinal_ex(ctx, out, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

int passwd_user_check(const char *user, char *err, size_t errlen)
{
    size_t len = strlen(user);

    if (len == 0)
        return error_set(err, errlen, "empty user name");
    if (len > PASSWD_USER_MAX)
        return error_set(err, errlen, "user name longer than %d bytes", PASSWD_USER_MAX);
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)user[i];
        size_t n = utf8_length((const unsigned char *)user + i, len - i);
        if (c == ':' || c < 0x20 || c == 0x7f || n == 0)
            return error_set(err, errlen,
                             "user name may not hold ':', control characters or broken UTF-8");
        i += n;
    }
    return 0;
}

/* `len` bytes from the hex digits at `hex`, which must be exactly 2 * len long. */
static bool unhex(const char *hex, uint8_t *out, size_t len)
{
    if (strlen(hex) != 2 * len)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + k];
            unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                         : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                                                : 16;
            if (d == 16)
                return false;
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return true;
}

/* "USER:pbkdf2-sha256:N:SALT:HASH" (modified in place) into `e`. Returns 0 or -1 with `err`. */
static int parse_entry(char *line, struct passwd_entry *e, char *err, size_t errlen)
{
    char *field[5];
    char *p = line;

    for (int i = 0; i < 5; i++) {
        field[i] = p;
        p = i < 4 ? strchr(p, ':') : NULL;
        if (i < 4 && !p)
            return error_set(err, errlen, "expected USER:%s:ITERATIONS:SALT:HASH", SCHEME);
        if (p)
            *p++ = '\0';
    }
    if (passwd_user_check(field[0], err, errlen) < 0)
        return -1;
    if (strcmp(field[1], SCHEME) != 0)
        return error_set(err, errlen, "unknown hash '%s' (expected %s)", field[1], SCHEME);
    char *end;
    unsigned long n = strtoul(field[2], &end, 10);
    if (*field[2] == '\0' || *end != '\0' || n < ITERATIONS_MIN || n > ITERATIONS_MAX)
        return error_set(err, errlen, "iterations must be %d to %d", ITERATIONS_MIN,
                         ITERATIONS_MAX);
    if (!unhex(field[3], e->salt, SALT_LEN) || !unhex(field[4], e->hash, HASH_LEN))
        return error_set(err, errlen, "salt and hash must be %d and %d lowercase hex digits",
                         2 * SALT_LEN, 2 * HASH_LEN);
    e->iterations = (unsigned)n;
    e->user = strdup(field[0]);
    if (!e->user)
        return error_set(err, errlen, "out of memory");
    return 0;
}

/* Strip the line end; whether the line holds an entry (not blank, not a comment). */
static bool entry_line(char *line)
{
    line[strcspn(line, "\r\n")] = '\0';
    return line[0] != '\0' && line[0] != '#';
}

static int add_line(struct passwd_file *pf, char *line, char *err, size_t errlen)
{
    struct passwd_entry e = {0};

    if (parse_entry(line, &e, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < pf->count; i++)
        if (strcmp(pf->entries[i].user, e.user) == 0) {
            error_set(err, errlen, "user '%s' named twice", e.user);
            free(e.user);
            return -1;
        }
    struct passwd_entry *grown = realloc(pf->entries, (pf->count + 1) * sizeof(*grown));
    if (!grown) {
        free(e.user);
        return error_set(err, errlen, "out of memory");
    }
    pf->entries = grown;
    pf->entries[pf->count++] = e;
    return 0;
}

struct passwd_file *passwd_file_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    struct passwd_file *pf;
    char line[PASSWD_LINE_MAX + 2], why[256];
    unsigned lineno = 0;

    if (!f) {
        error_set(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (!(pf = calloc(1, sizeof(*pf)))) {
        fclose(f);
        error_set(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (strlen(line) > PASSWD_LINE_MAX) {
            error_set(err, errlen, "%s:%u: line longer than %d bytes", path, lineno,
                      PASSWD_LINE_MAX);
            goto fail;
        }
        if (entry_line(line) && add_line(pf, line, why, sizeof(why)) < 0) {
            error_set(err, errlen, "%s:%u: %s", path, lineno, why);
            goto fail;
        }
    }
    if (ferror(f)) {
        error_set(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    fclose(f);
    return pf;
fail:
    fclose(f);
    passwd_file_free(pf);
    return NULL;
}

void passwd_file_free(struct passwd_file *pf)
{
    if (!pf)
        return;
    for (size_t i = 0; i < pf->count; i++) {
        OPENSSL_cleanse(pf->entries[i].seen, HASH_LEN);
        free(pf->entries[i].user);
    }
    free(pf->entries);
    free(pf);
}

size_t passwd_file_count(const struct passwd_file *pf)
{
    return pf ? pf->count : 0;
}

bool passwd_file_check(struct passwd_file *pf, const char *user, size_t user_len,
                       const void *password, size_t password_len)
{
    static const struct passwd_entry nobody = {.iterations = PASSWD_ITERATIONS};
    struct passwd_entry *e = NULL;
    uint8_t quick[HASH_LEN], slow[HASH_LEN];

    for (size_t i = 0; pf && i < pf->count && !e; i++)
        if (strlen(pf->entries[i].user) == user_len &&
            memcmp(pf->entries[i].user, user, user_len) == 0)
            e = &pf->entries[i];
    if (e && e->seen_set && quick_hash(password, password_len, e->salt, quick) &&
        CRYPTO_memcmp(quick, e->seen, HASH_LEN) == 0)
        return true;
    const struct passwd_entry *against = e ? e : &nobody;
    bool ok = pbkdf2(password, password_len, against->salt, against->iterations, slow) &&
              CRYPTO_memcmp(slow, against->hash, HASH_LEN) == 0 && e != NULL;
    if (ok && quick_hash(password, password_len, e->salt, e->seen))
        e->seen_set = true;
    OPENSSL_cleanse(slow, sizeof(slow));
    return ok;
}

/* The entry line for `user` with `password`, a fresh salt, PASSWD_ITERATIONS; "\n"-ended. */
static int format_entry(const char *user, const char *password, char *out, size_t size, char *err,
                        size_t errlen)
{
    uint8_t salt[SALT_LEN], hash[HASH_LEN];
    char salt_hex[HEX_SIZE(SALT_LEN)], hash_hex[HEX_SIZE(HASH_LEN)];

    if (RAND_bytes(salt, sizeof(salt)) != 1 ||
        !pbkdf2(password, strlen(password), salt, PASSWD_ITERATIONS, hash))
        return error_set(err, errlen, "cannot hash the password (OpenSSL failed)");
    hex_encode(salt, SALT_LEN, salt_hex);
    hex_encode(hash, HASH_LEN, hash_hex);
    int n = snprintf(out, size, "%s:%s:%u:%s:%s\n", user, SCHEME, PASSWD_ITERATIONS, salt_hex,
                     hash_hex);
    if (n < 0 || (size_t)n >= size)
        return error_set(err, errlen, "entry too long");
    return 0;
}

/* Whether `line` is the entry of `user`. */
static bool line_is_user(const char *line, const char *user)
{
    size_t len = strlen(user);
    return strncmp(line, user, len) == 0 && line[len] == ':';
}

/* Copy `in` to `out` without `user`'s line, adding `entry` (or nothing) in its place. */
static int copy_lines(FILE *in, FILE *out, const char *user, const char *entry, bool *found)
{
    char line[PASSWD_LINE_MAX + 2];

    while (in && fgets(line, sizeof(line), in)) {
        if (line_is_user(line, user)) {
            *found = true;
            if (entry && fputs(entry, out) == EOF)
                return -1;
        } else if (fputs(line, out) == EOF) {
            return -1;
        }
    }
    if (entry && !*found && fputs(entry, out) == EOF)
        return -1;
    return in && ferror(in) ? -1 : 0;
}

int passwd_file_update(const char *path, const char *user, const char *password, char *err,
                       size_t errlen)
{
    char entry[PASSWD_LINE_MAX], tmp[4096];
    bool found = false;

    if (passwd_user_check(user, err, errlen) < 0)
        return -1;
    if (password && format_entry(user, password, entry, sizeof(entry), err, errlen) < 0)
        return -1;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new", path) >= sizeof(tmp))
        return error_set(err, errlen, "%s: path too long", path);
    FILE *in = fopen(path, "r");
    if (!in && errno != ENOENT)
        return error_set(err, errlen, "%s: %s", path, strerror(errno));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        error_set(err, errlen, "%s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        if (in)
            fclose(in);
        return -1;
    }
    int rc = copy_lines(in, out, user, password ? entry : NULL, &found);
    if (in)
        fclose(in);
    rc |= fflush(out) | fsync(fileno(out));
    rc |= fclose(out);
    OPENSSL_cleanse(entry, sizeof(entry));
    if (rc != 0 || rename(tmp, path) < 0) {
        error_set(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return !password && !found ? 1 : 0;
}
