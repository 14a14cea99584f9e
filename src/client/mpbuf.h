/*
 * msgpack-c packing into an fq_buf_t, for the request builders of the
 * client library and of the fleetq CLI (campaign parts).  msgpack-c only
 * passes a write callback's status through as "non-zero", so the buffer's
 * own error code (FQ_ENOMEM, FQ_ETOOLARGE) is parked in the writer and the
 * builder returns it once packing is over.
 */
#ifndef FQ_MPBUF_H
#define FQ_MPBUF_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "fleetq/buf.h"

typedef struct fq_mpbuf {
  fq_buf_t *out;
  int rc; /* the first append's error, 0 while all went in */
} fq_mpbuf_t;

/* The msgpack_packer callback: data is an fq_mpbuf_t.  After a failure
 * every later write fails too, so the buffer never holds a torn value. */
int fq_mpbuf_write(void *data, const char *buf, size_t len);

/* A C string as a msgpack str. */
void fq_mpbuf_str(msgpack_packer *pk, const char *s);

/* n bytes that are msgpack already (a value packed earlier), spliced in
 * through the same callback so that a failure is kept. */
void fq_mpbuf_raw(msgpack_packer *pk, const uint8_t *p, size_t n);

#endif
