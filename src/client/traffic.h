/*
 * Traffic files (proto/traffic-format.md): a recorded or synthetic stream
 * of submit requests, each with the time it is to be sent, relative to the
 * start of the stream.  `fleetq export` and `fleetq-replay gen` write them,
 * `fleetq-replay run` plays them back.
 *
 * The reader is strict: a file is either entirely valid (header, every
 * record length and offset, every body a wire-protocol submit without
 * `req`, the exact record count, no trailing bytes) or refused with the
 * byte offset of the first fault.  Writers check the same rules before a
 * record reaches the disk, so what one tool writes the other always reads.
 *
 * Threads: a writer or an opened file is used by one thread at a time;
 * records of an opened file are read-only and may be read from several
 * threads at once.
 */
#ifndef FQ_TRAFFIC_H
#define FQ_TRAFFIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "fleetq/error.h"

#define FQ_TRAFFIC_MAGIC "FQTRAFIC"
#define FQ_TRAFFIC_VERSION 1
/* Fixed part of the header; the note follows it. */
#define FQ_TRAFFIC_HEADER_SIZE 32
/* Longest note (free text: who wrote the file, seed, options). */
#define FQ_TRAFFIC_MAX_NOTE 4096
/* Bytes of one record's header: offset_us (u64) + body length (u32). */
#define FQ_TRAFFIC_REC_HEADER 12
/* Largest body of one record.  A submit holds at most 16 KiB of params
 * plus a few short strings, so 32 KiB leaves room and bounds the reader. */
#define FQ_TRAFFIC_MAX_RECORD (32 * 1024)
/* Most records in one file, and the latest offset (30 days, in us). */
#define FQ_TRAFFIC_MAX_RECORDS 50000000ULL
#define FQ_TRAFFIC_MAX_OFFSET_US (30ULL * 86400ULL * 1000000ULL)

/* ------------------------------------------------------------------ */
/* Writing                                                              */

typedef struct fq_traffic_writer fq_traffic_writer_t;

/* Create (truncate) path, mode 0644, and write the header.  origin_ms is
 * the wall-clock time (unix ms) of offset 0, or 0 for synthetic traffic;
 * note (may be NULL) is at most FQ_TRAFFIC_MAX_NOTE bytes of text.
 * Returns NULL with err set (-errno, FQ_ETOOLARGE for a long note). */
fq_traffic_writer_t *fq_traffic_writer_new(const char *path, int64_t origin_ms, const char *note,
                                           fq_err_t *err);

/* Append one record.  body is checked like the reader does (a valid
 * submit, no `req`, at most FQ_TRAFFIC_MAX_RECORD bytes) and offset_us
 * must not be below the previous record's.  Returns 0, FQ_EBADREQ (body),
 * FQ_ERANGE (offset), FQ_ETOOLARGE or -errno; a refused record leaves the
 * file as it was. */
int fq_traffic_write(fq_traffic_writer_t *w, uint64_t offset_us, const uint8_t *body, size_t len,
                     fq_err_t *err);

/* Records written so far. */
uint64_t fq_traffic_writer_count(const fq_traffic_writer_t *w);

/* Write the final record count into the header, flush, fsync and close.
 * Frees the writer and NULLs *w in every case.  Returns 0 or -errno. */
int fq_traffic_writer_close(fq_traffic_writer_t **w, fq_err_t *err);

/* Abandon a writer: close and remove the partial file.  Accepts NULL. */
void fq_traffic_writer_destroy(fq_traffic_writer_t **w);

/* ------------------------------------------------------------------ */
/* Reading                                                              */

typedef struct fq_traffic_rec {
  uint64_t offset_us;   /* since the start of the stream */
  const uint8_t *body;  /* msgpack submit map; borrowed from the file */
  uint32_t len;
} fq_traffic_rec_t;

typedef struct fq_traffic fq_traffic_t;

/* Map path read-only and validate all of it (see the top of this file).
 * Returns NULL with err set: -errno, FQ_EBADREQ with the byte offset and
 * the fault, FQ_EVERSION for another format version, FQ_ETOOLARGE. */
fq_traffic_t *fq_traffic_open(const char *path, fq_err_t *err);
/* Unmap and free; NULLs *t; accepts NULL. */
void fq_traffic_close(fq_traffic_t **t);

size_t fq_traffic_count(const fq_traffic_t *t);
/* Record i (< count); valid until fq_traffic_close. */
const fq_traffic_rec_t *fq_traffic_rec(const fq_traffic_t *t, size_t i);
int64_t fq_traffic_origin_ms(const fq_traffic_t *t);
/* The note as NUL-terminated text (owned by t; "" when none). */
const char *fq_traffic_note(const fq_traffic_t *t);

/* Validate one record body: a submit that the daemon's decoder accepts,
 * without `req`.  Returns 0 or FQ_EBADREQ with the reason. */
int fq_traffic_check_body(const uint8_t *body, size_t len, fq_err_t *err);

/* Copy a submit body into out with `req` set to the integer req (the map
 * header is rewritten to count one more entry).  Returns 0, FQ_EBADREQ
 * when body does not start with a map, or fq_buf's codes. */
int fq_traffic_with_req(const uint8_t *body, size_t len, int64_t req, fq_buf_t *out);

#endif
