/*
 * Implementation of the helpers in util.h.
 */
#include "util.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fleetq/error.h"

#define FQ_BUF_DEFAULT_CAP ((size_t)64 << 20)

void fq_buf_init(fq_buf_t *b, size_t cap) {
  memset(b, 0, sizeof *b);
  b->cap = cap;
}

void fq_buf_free(fq_buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->alloc = 0;
}

void fq_buf_reset(fq_buf_t *b) { b->len = 0; }

int fq_buf_reserve(fq_buf_t *b, size_t n) {
  size_t cap = b->cap ? b->cap : FQ_BUF_DEFAULT_CAP;
  if (n > cap || b->len > cap - n) return FQ_ETOOLARGE;
  size_t need = b->len + n;
  if (need <= b->alloc) return 0;
  size_t a = b->alloc ? b->alloc : 256;
  while (a < need) a *= 2;
  if (a > cap) a = cap;
  uint8_t *p = realloc(b->data, a);
  if (!p) return -ENOMEM;
  b->data = p;
  b->alloc = a;
  return 0;
}

int fq_buf_append(fq_buf_t *b, const void *p, size_t n) {
  if (n <= b->alloc - b->len && b->data) { /* fast path: room already there */
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
  }
  int rc = fq_buf_reserve(b, n);
  if (rc) return rc;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int fq_buf_append_str(fq_buf_t *b, const char *s) { return fq_buf_append(b, s, strlen(s)); }

int fq_buf_printf(fq_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return FQ_EINTERNAL;
  int rc = fq_buf_reserve(b, (size_t)n + 1);
  if (rc) return rc;
  va_start(ap, fmt);
  vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

/* FNV-1a over n bytes, continuing from h. */
static uint64_t fnv1a(uint64_t h, const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
  return h;
}

/* The finalizer: FNV's low bits vary little between similar keys. */
static uint64_t fmix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

uint64_t fq_hash64(const void *p, size_t n) { return fmix(fnv1a(1469598103934665603ULL, p, n)); }

uint64_t fq_hash64_pair(const void *a, size_t an, const void *b, size_t bn) {
  uint64_t h = fnv1a(1469598103934665603ULL, a, an);
  h = (h ^ 0xffu) * 1099511628211ULL; /* a separator: "a"+"bc" differs from "ab"+"c" */
  return fmix(fnv1a(h, b, bn));
}

int64_t fq_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fq_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void fq_hex_encode(const uint8_t *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

long fq_hex_decode(const char *hex, uint8_t *out, size_t cap) {
  size_t n = strlen(hex);
  if (n % 2 || n / 2 > cap) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return (long)(n / 2);
}

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Both alphabets share the coder; only the last two digits and the
 * padding differ. */
static size_t b64_encode(const char *abc, bool pad, const uint8_t *p, size_t n, char *out) {
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    out[o++] = abc[v >> 18];
    out[o++] = abc[(v >> 12) & 63];
    out[o++] = abc[(v >> 6) & 63];
    out[o++] = abc[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
    out[o++] = abc[v >> 18];
    out[o++] = abc[(v >> 12) & 63];
    if (i + 1 < n) out[o++] = abc[(v >> 6) & 63];
    else if (pad) out[o++] = '=';
    if (pad) out[o++] = '=';
  }
  out[o] = '\0';
  return o;
}

size_t fq_base64_encode(const uint8_t *p, size_t n, char *out) {
  return b64_encode(b64_std, true, p, n, out);
}

size_t fq_base64url_encode(const uint8_t *p, size_t n, char *out) {
  return b64_encode(b64_url, false, p, n, out);
}

static int b64val(char c, char d62, char d63) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == d62) return 62;
  if (c == d63) return 63;
  return -1;
}

static long b64_decode(char d62, char d63, const char *s, size_t slen, uint8_t *out, size_t cap) {
  while (slen && s[slen - 1] == '=') slen--;
  if (slen % 4 == 1) return -1;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < slen; i++) {
    int v = b64val(s[i], d62, d63);
    if (v < 0) return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o >= cap) return -1;
      out[o++] = (uint8_t)(acc >> bits);
    }
  }
  return (long)o;
}

long fq_base64_decode(const char *s, size_t slen, uint8_t *out, size_t cap) {
  return b64_decode('+', '/', s, slen, out, cap);
}

long fq_base64url_decode(const char *s, size_t slen, uint8_t *out, size_t cap) {
  return b64_decode('-', '_', s, slen, out, cap);
}

int fq_check_secret_file(const char *path, fq_err_t *err) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return fq_errf(err, FQ_EKEYFILE, "%s: %s", path, fq_strerror(-errno));
  if (S_ISLNK(st.st_mode))
    return fq_errf(err, FQ_EKEYFILE, "%s: is a symbolic link; refusing to use it as a secret file",
                   path);
  if (!S_ISREG(st.st_mode))
    return fq_errf(err, FQ_EKEYFILE, "%s: not a regular file", path);
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    return fq_errf(err, FQ_EKEYFILE,
                   "%s: permissions %04o allow group or others; run 'chmod 600 %s'", path,
                   (unsigned)(st.st_mode & 07777), path);
  return 0;
}

int fq_read_file(const char *path, size_t cap, char **out, size_t *outlen) {
  int rc = 0;
  char *buf = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    goto out;
  }
  if ((size_t)st.st_size > cap) {
    rc = FQ_ETOOLARGE;
    goto out;
  }
  buf = malloc((size_t)st.st_size + 1);
  if (!buf) {
    rc = -ENOMEM;
    goto out;
  }
  size_t got = 0;
  while (got < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      goto out;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  buf[got] = '\0';
  *out = buf;
  buf = NULL;
  if (outlen) *outlen = got;
out:
  free(buf);
  close(fd);
  return rc;
}

bool fq_endpoint_bindable(char *ep, size_t cap) {
  static const char pre[] = "tcp://localhost:";
  size_t n = sizeof pre - 1, len = strlen(ep);
  /* "localhost" (9) becomes "127.0.0.1" (9): the same length. */
  if (len < n || strncmp(ep, pre, n) != 0 || len >= cap) return false;
  memcpy(ep + 6, "127.0.0.1", 9);
  return true;
}

bool fq_endpoint_is_local(const char *ep) {
  if (strncmp(ep, "inproc://", 9) == 0 || strncmp(ep, "ipc://", 6) == 0) return true;
  if (strncmp(ep, "tcp://", 6) != 0) return false;
  const char *h = ep + 6;
  return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 ||
         strncmp(h, "[::1]:", 6) == 0;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FQ_OWN_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FQ_OWN_ALLOCATOR 1
#endif
#endif

void fq_heap_trim(void) {
#if defined(__GLIBC__) && !defined(FQ_OWN_ALLOCATOR)
  malloc_trim(0);
#endif
}
