/*
 * ZeroMQ CURVE key files: the text form `fleetq curve-keygen` writes and
 * fleetqd (--curve-secret) and the clients (--curve-key) read, and the
 * checks on Z85 key text.  A key file holds one key pair:
 *
 *   public <40 Z85 characters>
 *   secret <40 Z85 characters>
 *
 * (the final newline is optional).  The secret half is what authenticates a
 * client or the daemon, so the file is written mode 0600 and refused on
 * loading when group or others could read or change it, or when it is a
 * symlink (which could point anywhere an attacker chose).
 *
 * Threads: every function is reentrant.  Secret material is wiped from the
 * stack buffers these functions use; the caller wipes the sec[] it lends.
 */
#ifndef FQ_CURVEKEY_H
#define FQ_CURVEKEY_H

#include <stdbool.h>

#include "fleetq/error.h"

/* Z85 text of a CURVE key: 40 characters + NUL. */
#define FQ_CURVE_KEY_LEN 40

/* True when z85 (NUL-terminated, may be NULL) is exactly 40 characters of
 * the Z85 alphabet that decode to 32 bytes: every group of five characters
 * must stay within 32 bits, which the alphabet check alone does not
 * ensure ("#####" is 85^5 - 1 > 2^32 - 1). */
bool fq_curve_key_valid(const char *z85);

/* Load the key pair in path into pub[41] and sec[41] (NUL-terminated Z85).
 * Refused, with err naming the path (and the line, for the content):
 *   FQ_EKEYFILE  missing or unreadable file, a symlink, not a regular file,
 *                readable or writable by group or others (the message says
 *                which and suggests chmod 600), more than the two lines,
 *                a line not of the form above, invalid Z85, a secret key
 *                that does not belong to the public key;
 *   FQ_ECRYPTO   this libzmq was built without CURVE.
 * On failure pub and sec are zeroed.  The caller owns sec and should wipe
 * it (OPENSSL_cleanse) when done. */
int fq_curve_keyfile_load(const char *path, char pub[41], char sec[41], fq_err_t *err);

/* Generate a key pair with zmq_curve_keypair and write it to path, which
 * must not exist: created with O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600
 * (set again with fchmod, whatever the umask) and fsync'd.  pub receives
 * the public key; the secret never leaves this function.  Returns 0,
 * FQ_ECONFIG ("<path> exists; refusing to overwrite"), FQ_ECRYPTO (no
 * CURVE in this libzmq) or -errno from open/write/fsync (the partial file
 * is removed). */
int fq_curve_keyfile_write(const char *path, char pub[41], fq_err_t *err);

#endif
