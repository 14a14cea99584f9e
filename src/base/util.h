/*
 * Small helpers every module uses: a bounded growable byte buffer, clocks,
 * hex, base64 and base64url coding, and file checks for secret files.
 */
#ifndef FQ_UTIL_H
#define FQ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"

/* 64-bit hash of n bytes: FNV-1a followed by a finalizer, so that the low
 * bits (what a power-of-two table or a modulo uses) vary even for keys
 * that differ in a few characters.  Stable across versions: shard choice
 * depends on it. */
uint64_t fq_hash64(const void *p, size_t n);
/* The same hash over a pair of byte strings (a tenant and its idempotency
 * key): a separator between them keeps ("a", "bc") apart from ("ab", "c").
 * Only ever kept in memory. */
uint64_t fq_hash64_pair(const void *a, size_t an, const void *b, size_t bn);

/* Wall clock in Unix milliseconds / seconds. */
int64_t fq_now_ms(void);
/* Monotonic clock in nanoseconds (for intervals). */
int64_t fq_mono_ns(void);

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void fq_hex_encode(const uint8_t *p, size_t n, char *out);
/* Decode hex (either case) into out (at most cap bytes); returns the number
 * of bytes or -1 on odd length, a bad digit or overflow. */
long fq_hex_decode(const char *hex, uint8_t *out, size_t cap);

/* Standard base64 with padding.  out needs 4*((n+2)/3)+1 bytes. */
size_t fq_base64_encode(const uint8_t *p, size_t n, char *out);
/* Decode standard base64 (padding optional, no whitespace); returns the
 * number of bytes or -1 on bad input or when more than cap bytes. */
long fq_base64_decode(const char *s, size_t slen, uint8_t *out, size_t cap);
/* Base64url (RFC 4648 section 5: '-' and '_' for '+' and '/'), as JWTs
 * use it: encoded without padding (out needs 4*((n+2)/3)+1 bytes; returns
 * the length written before the NUL), decoded with or without padding
 * (returns the number of bytes, or -1 on a character outside the URL
 * alphabet, a bad length or more than cap bytes). */
size_t fq_base64url_encode(const uint8_t *p, size_t n, char *out);
long fq_base64url_decode(const char *s, size_t slen, uint8_t *out, size_t cap);

/* Check that path names a regular file (not a symlink) that neither group
 * nor others can read or write.  Returns 0 or FQ_EKEYFILE with the reason
 * in err. */
struct fq_err;
int fq_check_secret_file(const char *path, struct fq_err *err);

/* Read a whole file (at most cap bytes) into a NUL-terminated malloc'd
 * buffer.  Returns 0, -errno or FQ_ETOOLARGE. */
int fq_read_file(const char *path, size_t cap, char **out, size_t *outlen);

/* Give the memory glibc's allocator keeps in its arenas back to the
 * system (malloc_trim).  A no-op when another allocator serves malloc:
 * under AddressSanitizer or ThreadSanitizer glibc's arenas were never set
 * up, and glibc's malloc_trim walking them crashes. */
void fq_heap_trim(void);

/* True if a ZeroMQ endpoint is tcp on a loopback address, ipc or inproc. */
bool fq_endpoint_is_local(const char *ep);

/* Rewrite "tcp://localhost:P" (in place, ep holding cap bytes) as
 * "tcp://127.0.0.1:P": ZeroMQ binds only interface names and addresses,
 * not host names, so a bind to localhost fails although the endpoint is
 * loopback (a client may still connect to localhost: connecting resolves
 * names).  Returns true when it rewrote ep. */
bool fq_endpoint_bindable(char *ep, size_t cap);

#endif
