/*
 * Traffic files: the writer and the strict reader of the format described
 * in proto/traffic-format.md.  Every integer is big-endian.
 */
#include "traffic.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "byteorder.h"
#include "fleetq/wire.h"

struct fq_traffic_writer {
  FILE *f;
  char *path;
  uint64_t count;
  uint64_t last_offset;
};

struct fq_traffic {
  uint8_t *map;
  size_t size;
  fq_traffic_rec_t *recs;
  size_t n;
  int64_t origin_ms;
  char *note;
};

/* The note is text a person reads: no NUL and no control characters
 * other than tab and newline (it may be shown on a terminal). */
static bool note_ok(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((p[i] < 0x20 && p[i] != '\n' && p[i] != '\t') || p[i] == 0x7f) return false;
  return true;
}

int fq_traffic_check_body(const uint8_t *body, size_t len, fq_err_t *err) {
  fq_request_t req;
  fq_err_t e;
  fq_err_clear(&e);
  if (len == 0 || len > FQ_TRAFFIC_MAX_RECORD)
    return fq_errf(err, FQ_EBADREQ, "record body of %zu bytes (1..%d allowed)", len,
                   FQ_TRAFFIC_MAX_RECORD);
  int rc = fq_wire_decode_request(body, len, &req, &e);
  if (rc) return fq_errf(err, FQ_EBADREQ, "not a valid request: %s: %s", fq_errname(rc), e.msg);
  if (req.op != FQ_OP_SUBMIT) return fq_errf(err, FQ_EBADREQ, "not a submit request");
  if (req.req_raw)
    return fq_errf(err, FQ_EBADREQ, "the body carries \"req\" (the replayer sets it)");
  return 0;
}

/* ------------------------------------------------------------------ */
/* writer                                                               */

fq_traffic_writer_t *fq_traffic_writer_new(const char *path, int64_t origin_ms, const char *note,
                                           fq_err_t *err) {
  size_t nlen = note ? strlen(note) : 0;
  fq_traffic_writer_t *w = NULL;
  if (nlen > FQ_TRAFFIC_MAX_NOTE) {
    fq_errf(err, FQ_ETOOLARGE, "note of %zu bytes, at most %d", nlen, FQ_TRAFFIC_MAX_NOTE);
    return NULL;
  }
  if (nlen && !note_ok((const uint8_t *)note, nlen)) {
    fq_errf(err, FQ_EBADREQ, "note holds control characters");
    return NULL;
  }
  w = calloc(1, sizeof *w);
  if (!w || !(w->path = strdup(path))) {
    fq_errf(err, -ENOMEM, "out of memory");
    goto fail;
  }
  w->f = fopen(path, "wb");
  if (!w->f) {
    fq_errf(err, -errno, "%s: %s", path, fq_strerror(-errno));
    goto fail;
  }
  uint8_t h[FQ_TRAFFIC_HEADER_SIZE];
  memcpy(h, FQ_TRAFFIC_MAGIC, 8);
  fq_put_be16(h + 8, FQ_TRAFFIC_VERSION);
  fq_put_be16(h + 10, 0);
  fq_put_be32(h + 12, (uint32_t)(FQ_TRAFFIC_HEADER_SIZE + nlen));
  fq_put_be64(h + 16, 0); /* count: patched by close, so a crashed writer's file is refused */
  fq_put_be64(h + 24, (uint64_t)origin_ms);
  if (fwrite(h, 1, sizeof h, w->f) != sizeof h || (nlen && fwrite(note, 1, nlen, w->f) != nlen)) {
    fq_errf(err, -EIO, "%s: write failed", path);
    goto fail;
  }
  return w;
fail:
  if (w && w->f) {
    fclose(w->f);
    unlink(path);
  }
  if (w) free(w->path);
  free(w);
  return NULL;
}

int fq_traffic_write(fq_traffic_writer_t *w, uint64_t offset_us, const uint8_t *body, size_t len,
                     fq_err_t *err) {
  if (w->count && offset_us < w->last_offset)
    return fq_errf(err, FQ_ERANGE, "offset %" PRIu64 " us is before the previous record's",
                   offset_us);
  if (offset_us > FQ_TRAFFIC_MAX_OFFSET_US)
    return fq_errf(err, FQ_ERANGE, "offset %" PRIu64 " us is beyond 30 days", offset_us);
  if (w->count >= FQ_TRAFFIC_MAX_RECORDS)
    return fq_errf(err, FQ_ETOOLARGE, "more than %llu records",
                   (unsigned long long)FQ_TRAFFIC_MAX_RECORDS);
  int rc = fq_traffic_check_body(body, len, err);
  if (rc) return rc;
  uint8_t h[FQ_TRAFFIC_REC_HEADER];
  fq_put_be64(h, offset_us);
  fq_put_be32(h + 8, (uint32_t)len);
  if (fwrite(h, 1, sizeof h, w->f) != sizeof h || fwrite(body, 1, len, w->f) != len)
    return fq_errf(err, -EIO, "%s: write failed", w->path);
  w->count++;
  w->last_offset = offset_us;
  return 0;
}

uint64_t fq_traffic_writer_count(const fq_traffic_writer_t *w) { return w->count; }

int fq_traffic_writer_close(fq_traffic_writer_t **wp, fq_err_t *err) {
  fq_traffic_writer_t *w = *wp;
  int rc = 0;
  *wp = NULL;
  if (!w) return 0;
  uint8_t c[8];
  fq_put_be64(c, w->count);
  if (fflush(w->f) != 0 || fseeko(w->f, 16, SEEK_SET) != 0 || fwrite(c, 1, 8, w->f) != 8 ||
      fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) {
    rc = fq_errf(err, -errno ? -errno : -EIO, "%s: %s", w->path, fq_strerror(errno ? -errno : -EIO));
  }
  if (fclose(w->f) != 0 && !rc) rc = fq_errf(err, -EIO, "%s: close failed", w->path);
  free(w->path);
  free(w);
  return rc;
}

void fq_traffic_writer_destroy(fq_traffic_writer_t **wp) {
  fq_traffic_writer_t *w = *wp;
  *wp = NULL;
  if (!w) return;
  fclose(w->f);
  unlink(w->path);
  free(w->path);
  free(w);
}

/* ------------------------------------------------------------------ */
/* reader                                                               */

fq_traffic_t *fq_traffic_open(const char *path, fq_err_t *err) {
  fq_traffic_t *t = calloc(1, sizeof *t);
  int fd = -1;
  struct stat st;
  if (!t) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0) {
    fq_errf(err, -errno, "%s: %s", path, fq_strerror(-errno));
    goto fail;
  }
  if (!S_ISREG(st.st_mode)) {
    fq_errf(err, FQ_EBADREQ, "%s: not a regular file", path);
    goto fail;
  }
  t->size = (size_t)st.st_size;
  if (t->size < FQ_TRAFFIC_HEADER_SIZE) {
    fq_errf(err, FQ_EBADREQ, "%s: %zu bytes, shorter than the %d-byte header", path, t->size,
            FQ_TRAFFIC_HEADER_SIZE);
    goto fail;
  }
  t->map = mmap(NULL, t->size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (t->map == MAP_FAILED) {
    t->map = NULL;
    fq_errf(err, -errno, "%s: mmap: %s", path, fq_strerror(-errno));
    goto fail;
  }
  const uint8_t *p = t->map;
  if (memcmp(p, FQ_TRAFFIC_MAGIC, 8) != 0) {
    fq_errf(err, FQ_EBADREQ, "%s: not a fleetq traffic file (bad magic)", path);
    goto fail;
  }
  uint16_t ver = fq_get_be16(p + 8), flags = fq_get_be16(p + 10);
  uint32_t hlen = fq_get_be32(p + 12);
  uint64_t count = fq_get_be64(p + 16);
  t->origin_ms = (int64_t)fq_get_be64(p + 24);
  if (ver != FQ_TRAFFIC_VERSION) {
    fq_errf(err, FQ_EVERSION, "%s: traffic format version %u, this reader knows %d", path, ver,
            FQ_TRAFFIC_VERSION);
    goto fail;
  }
  if (flags != 0) {
    fq_errf(err, FQ_EBADREQ, "%s: byte 10: flags 0x%04x, must be 0 in version 1", path, flags);
    goto fail;
  }
  if (hlen < FQ_TRAFFIC_HEADER_SIZE || hlen > FQ_TRAFFIC_HEADER_SIZE + FQ_TRAFFIC_MAX_NOTE ||
      hlen > t->size) {
    fq_errf(err, FQ_EBADREQ, "%s: byte 12: header length %u out of range", path, hlen);
    goto fail;
  }
  if (!note_ok(p + FQ_TRAFFIC_HEADER_SIZE, hlen - FQ_TRAFFIC_HEADER_SIZE)) {
    fq_errf(err, FQ_EBADREQ, "%s: the note holds control characters", path);
    goto fail;
  }
  if (count > FQ_TRAFFIC_MAX_RECORDS ||
      count > (t->size - hlen) / (FQ_TRAFFIC_REC_HEADER + 1)) {
    fq_errf(err, FQ_EBADREQ, "%s: byte 16: %" PRIu64 " records cannot fit in %zu bytes", path,
            count, t->size);
    goto fail;
  }
  t->note = strndup((const char *)p + FQ_TRAFFIC_HEADER_SIZE, hlen - FQ_TRAFFIC_HEADER_SIZE);
  t->recs = calloc(count ? count : 1, sizeof *t->recs);
  if (!t->note || !t->recs) {
    fq_errf(err, -ENOMEM, "out of memory");
    goto fail;
  }
  size_t off = hlen;
  uint64_t prev = 0;
  for (uint64_t i = 0; i < count; i++) {
    if (t->size - off < FQ_TRAFFIC_REC_HEADER) {
      fq_errf(err, FQ_EBADREQ, "%s: byte %zu: record %" PRIu64 " of %" PRIu64 " is cut off", path,
              off, i, count);
      goto fail;
    }
    uint64_t o = fq_get_be64(p + off);
    uint32_t len = fq_get_be32(p + off + 8);
    if (o < prev || o > FQ_TRAFFIC_MAX_OFFSET_US) {
      fq_errf(err, FQ_EBADREQ, "%s: byte %zu: record %" PRIu64 ": offset %" PRIu64
              " us is %s", path, off, i, o,
              o < prev ? "before the previous record's" : "beyond 30 days");
      goto fail;
    }
    if (len == 0 || len > FQ_TRAFFIC_MAX_RECORD || len > t->size - off - FQ_TRAFFIC_REC_HEADER) {
      fq_errf(err, FQ_EBADREQ, "%s: byte %zu: record %" PRIu64 ": body length %u %s", path,
              off + 8, i, len,
              len > t->size - off - FQ_TRAFFIC_REC_HEADER ? "runs past the end of the file"
                                                          : "out of range");
      goto fail;
    }
    fq_err_t e;
    if (fq_traffic_check_body(p + off + FQ_TRAFFIC_REC_HEADER, len, &e)) {
      fq_errf(err, FQ_EBADREQ, "%s: byte %zu: record %" PRIu64 ": %s", path,
              off + FQ_TRAFFIC_REC_HEADER, i, e.msg);
      goto fail;
    }
    t->recs[i] = (fq_traffic_rec_t){o, p + off + FQ_TRAFFIC_REC_HEADER, len};
    prev = o;
    off += FQ_TRAFFIC_REC_HEADER + len;
  }
  if (off != t->size) {
    fq_errf(err, FQ_EBADREQ, "%s: byte %zu: %zu bytes after the last of %" PRIu64 " records%s",
            path, off, t->size - off, count,
            count == 0 ? " (a writer that did not finish leaves the count at 0)" : "");
    goto fail;
  }
  t->n = (size_t)count;
  close(fd);
  return t;
fail:
  if (fd >= 0) close(fd);
  fq_traffic_close(&t);
  return NULL;
}

void fq_traffic_close(fq_traffic_t **tp) {
  fq_traffic_t *t = *tp;
  *tp = NULL;
  if (!t) return;
  if (t->map) munmap(t->map, t->size);
  free(t->recs);
  free(t->note);
  free(t);
}

size_t fq_traffic_count(const fq_traffic_t *t) { return t->n; }

const fq_traffic_rec_t *fq_traffic_rec(const fq_traffic_t *t, size_t i) {
  return i < t->n ? &t->recs[i] : NULL;
}

int64_t fq_traffic_origin_ms(const fq_traffic_t *t) { return t->origin_ms; }

const char *fq_traffic_note(const fq_traffic_t *t) { return t->note ? t->note : ""; }

int fq_traffic_with_req(const uint8_t *body, size_t len, int64_t req, fq_buf_t *out) {
  uint32_t n;
  size_t hl;
  if (len < 1) return FQ_EBADREQ;
  if ((body[0] & 0xf0) == 0x80) {
    n = body[0] & 0x0f;
    hl = 1;
  } else if (body[0] == 0xde && len >= 3) {
    n = fq_get_be16(body + 1);
    hl = 3;
  } else if (body[0] == 0xdf && len >= 5) {
    n = fq_get_be32(body + 1);
    hl = 5;
  } else {
    return FQ_EBADREQ;
  }
  if (n == UINT32_MAX) return FQ_EBADREQ;
  n++;
  uint8_t h[9];
  size_t nh;
  if (n < 16) {
    h[0] = (uint8_t)(0x80 | n);
    nh = 1;
  } else if (n <= 0xffff) {
    h[0] = 0xde;
    fq_put_be16(h + 1, (uint16_t)n);
    nh = 3;
  } else {
    h[0] = 0xdf;
    fq_put_be32(h + 1, n);
    nh = 5;
  }
  /* "req" as fixstr, then the value as int64 (always 9 bytes: simple and
   * any msgpack reader takes it). */
  uint8_t tail[4 + 9] = {0xa3, 'r', 'e', 'q', 0xd3};
  fq_put_be64(tail + 5, (uint64_t)req);
  int rc = fq_buf_append(out, h, nh);
  if (!rc) rc = fq_buf_append(out, body + hl, len - hl);
  if (!rc) rc = fq_buf_append(out, tail, sizeof tail);
  return rc;
}
