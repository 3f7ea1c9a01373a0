/*
 * passwd — the password file of desktop mode (the password-file directive):
 * who may connect, each with a salted, slow hash of a password they chose.
 *
 * One entry per line, "USER:pbkdf2-sha256:ITERATIONS:SALT:HASH" (salt and
 * hash in hex); '#' starts a comment line, blank lines are ignored. A user
 * name is any UTF-8 without ':' or control characters. People choose these
 * passwords, so unlike token secrets (util/secret.h) they are kept under
 * PBKDF2-HMAC-SHA256: a stolen file does not give them away cheaply.
 *
 * A loaded file is owned by its caller and used from one thread. It
 * remembers the password each user last logged in with (as a SHA-256 of salt
 * and password), so that a client reconnecting over and over costs one slow
 * hash, not one per CONNECT. Uses OpenSSL.
 */
#ifndef AVIARY_PASSWD_H
#define AVIARY_PASSWD_H

#include <stdbool.h>
#include <stddef.h>

#define PASSWD_ITERATIONS 20000 /* what new entries get; each entry keeps its own */
#define PASSWD_USER_MAX 256     /* bytes in a user name */
#define PASSWD_LINE_MAX 1024

struct passwd_file;

/*
 * Read the file at `path`. Returns it (possibly with no entries), or NULL
 * with "PATH:LINE: reason" or "PATH: reason" in `err`.
 */
struct passwd_file *passwd_file_load(const char *path, char *err, size_t errlen);

void passwd_file_free(struct passwd_file *pf);

/* How many users it names. */
size_t passwd_file_count(const struct passwd_file *pf);

/*
 * Whether user `user` (`user_len` bytes) exists and `password` is theirs.
 * An unknown user costs the same slow hash as a wrong password, so the time
 * taken does not tell which names exist.
 */
bool passwd_file_check(struct passwd_file *pf, const char *user, size_t user_len,
                       const void *password, size_t password_len);

/* Whether `user` may be written in a password file; if not, the reason in `err`. */
int passwd_user_check(const char *user, char *err, size_t errlen);

/*
 * Set `user`'s password in the file at `path` (created, mode 0600, when
 * missing), or with `password` NULL remove the user. The file is replaced
 * whole (written beside it, then renamed), keeping the other lines as they
 * were. Returns 0; 1 when removing a user that is not there; -1 with the
 * reason in `err`.
 */
int passwd_file_update(const char *path, const char *user, const char *password, char *err,
                       size_t errlen);

#endif
