/*
 * fq_buf_t: the growable, capped byte buffer used wherever fleetq builds
 * bytes (replies, events, payloads, HTTP bodies).
 */
#ifndef FLEETQ_BUF_H
#define FLEETQ_BUF_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer with a hard cap: appends past `cap` fail with
 * FQ_ETOOLARGE instead of growing without bound.  Zero-initialise, or use
 * fq_buf_init(); free with fq_buf_free(). */
typedef struct fq_buf {
  uint8_t *data;
  size_t len;
  size_t alloc;
  size_t cap; /* 0 means the default cap of 64 MiB */
} fq_buf_t;

void fq_buf_init(fq_buf_t *b, size_t cap);
void fq_buf_free(fq_buf_t *b);
void fq_buf_reset(fq_buf_t *b);
/* Make room for n more bytes; 0, -ENOMEM or FQ_ETOOLARGE. */
int fq_buf_reserve(fq_buf_t *b, size_t n);
int fq_buf_append(fq_buf_t *b, const void *p, size_t n);
int fq_buf_append_str(fq_buf_t *b, const char *s);
int fq_buf_printf(fq_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
