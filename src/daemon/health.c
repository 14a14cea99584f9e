/*
 * The reply of the `health` op: verdicts and encoding.  See health.h.
 */
#include "health.h"

#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "fleetq/error.h"

typedef struct hw {
  msgpack_packer pk;
  fq_buf_t *b;
  int rc;
} hw_t;

static int hw_write(void *data, const char *p, size_t n) {
  hw_t *w = data;
  int rc = fq_buf_append(w->b, p, n);
  if (rc && !w->rc) w->rc = rc;
  return rc ? -1 : 0;
}

static int k(hw_t *w, const char *s) { return msgpack_pack_str_with_body(&w->pk, s, strlen(s)); }

/* What is wrong with one shard: bits of the verdicts below, and the
 * problem lines (at most three per shard). */
enum { H_STUCK = 1, H_NEARFULL = 2, H_READ = 4 };

static int verdict(const fq_shard_health_t *s, int64_t stuck_ms, int64_t now, char lines[3][256]) {
  int v = 0, nl = 0;
  if (!s->answered) {
    snprintf(lines[nl++], 256, "shard %u is stuck: its thread did not answer", s->index);
    return H_STUCK;
  }
  if (!s->read_ok) {
    v |= H_READ;
    snprintf(lines[nl++], 256, "shard %u: read transaction failed: %s", s->index, s->read_error);
  }
  int64_t idle = now - s->last_change_ms;
  if (s->queued && idle > stuck_ms) {
    v |= H_STUCK;
    snprintf(lines[nl++], 256,
             "shard %u is stuck: %" PRIu64 " command(s) unfinished and no commit for %" PRId64
             " ms (more than %" PRId64 " ms)",
             s->index, s->queued, idle, stuck_ms);
  }
  bool at_mark = s->read_ok && s->map_used + s->reserved > s->map_limit &&
                 s->map_size >= s->max_store;
  if ((at_mark || s->refusing)) {
    v |= H_NEARFULL;
    snprintf(lines[nl++], 256,
             "shard %u: storage near full: %.1f MiB of %.1f MiB in use, high-water mark %.1f MiB%s",
             s->index, (double)s->map_used / 1048576.0, (double)s->map_size / 1048576.0,
             (double)s->map_limit / 1048576.0,
             s->refusing ? "; new commands get storage_full" : "");
  }
  return v;
}

int fq_health_reply(fq_buf_t *out, const fq_shard_health_t *sh, unsigned n,
                    const fq_health_account_t *acc, size_t nacc, int64_t stuck_ms, int64_t now_ms,
                    const uint8_t *req_raw, size_t req_raw_len) {
  size_t start = out->len;
  hw_t w = {.b = out};
  msgpack_packer_init(&w.pk, &w, hw_write);
  /* The problems first, to know the verdict. */
  size_t nprob = nacc;
  for (unsigned i = 0; i < n; i++) {
    char lines[3][256];
    int v = verdict(&sh[i], stuck_ms, now_ms, lines);
    nprob += (size_t)((v & H_STUCK) != 0) + ((v & H_NEARFULL) != 0) + ((v & H_READ) != 0);
  }
  int rc = msgpack_pack_map(&w.pk, req_raw ? 7 : 6);
  rc |= k(&w, "ok") | msgpack_pack_true(&w.pk);
  rc |= k(&w, "healthy") | (nprob ? msgpack_pack_false(&w.pk) : msgpack_pack_true(&w.pk));
  rc |= k(&w, "stuck_ms") | msgpack_pack_int64(&w.pk, stuck_ms);
  rc |= k(&w, "problems") | msgpack_pack_array(&w.pk, nprob);
  for (unsigned i = 0; i < n; i++) {
    char lines[3][256];
    int v = verdict(&sh[i], stuck_ms, now_ms, lines);
    int nl = ((v & H_STUCK) != 0) + ((v & H_NEARFULL) != 0) + ((v & H_READ) != 0);
    for (int j = 0; j < nl; j++) rc |= k(&w, lines[j]);
  }
  for (size_t i = 0; i < nacc; i++) {
    char line[400];
    snprintf(line, sizeof line, "account %s: token refresh failed (%s): %s", acc[i].name,
             fq_errname(acc[i].code), acc[i].reason);
    rc |= k(&w, line);
  }
  rc |= k(&w, "shards") | msgpack_pack_array(&w.pk, n);
  for (unsigned i = 0; i < n; i++) {
    const fq_shard_health_t *s = &sh[i];
    char lines[3][256];
    int v = verdict(s, stuck_ms, now_ms, lines);
    bool data = s->answered && s->read_ok;
    rc |= msgpack_pack_map(&w.pk, s->cluster ? 15 : 13);
    if (s->cluster) {
      rc |= k(&w, "owner") | (s->owner[0] ? k(&w, s->owner) : msgpack_pack_nil(&w.pk));
      rc |= k(&w, "served_here") |
            (s->served_here ? msgpack_pack_true(&w.pk) : msgpack_pack_false(&w.pk));
    }
    rc |= k(&w, "shard") | msgpack_pack_uint32(&w.pk, s->index);
    rc |= k(&w, "answered") | (s->answered ? msgpack_pack_true(&w.pk) : msgpack_pack_false(&w.pk));
    rc |= k(&w, "read");
    rc |= k(&w, !s->answered ? "no_answer" : s->read_ok ? "ok" : "error");
    rc |= k(&w, "queued");
    rc |= s->answered ? msgpack_pack_uint64(&w.pk, s->queued) : msgpack_pack_nil(&w.pk);
    rc |= k(&w, "oldest_queued_age_ms");
    rc |= data && s->oldest_ms ? msgpack_pack_int64(&w.pk, now_ms - s->oldest_ms)
                               : msgpack_pack_nil(&w.pk);
    rc |= k(&w, "last_commit_age_ms");
    rc |= s->answered ? msgpack_pack_int64(&w.pk, now_ms - s->last_change_ms)
                      : msgpack_pack_nil(&w.pk);
    rc |= k(&w, "map_used_ratio");
    rc |= data && s->map_size ? msgpack_pack_double(&w.pk, (double)s->map_used / (double)s->map_size)
                              : msgpack_pack_nil(&w.pk);
    /* Room kept for the unfinished commands (and the next one) counts
     * against the mark: a map 35 % used can be full of queued work. */
    rc |= k(&w, "map_reserved_ratio");
    rc |= data && s->map_size ? msgpack_pack_double(&w.pk, (double)s->reserved / (double)s->map_size)
                              : msgpack_pack_nil(&w.pk);
    rc |= k(&w, "map_high_water_ratio");
    rc |= data && s->map_size ? msgpack_pack_double(&w.pk, (double)s->map_limit / (double)s->map_size)
                              : msgpack_pack_nil(&w.pk);
    rc |= k(&w, "map_size_bytes");
    rc |= data ? msgpack_pack_uint64(&w.pk, s->map_size) : msgpack_pack_nil(&w.pk);
    rc |= k(&w, "stuck") | ((v & H_STUCK) ? msgpack_pack_true(&w.pk) : msgpack_pack_false(&w.pk));
    rc |= k(&w, "near_full") |
          ((v & H_NEARFULL) ? msgpack_pack_true(&w.pk) : msgpack_pack_false(&w.pk));
    rc |= k(&w, "read_error");
    rc |= s->answered && !s->read_ok ? k(&w, s->read_error) : msgpack_pack_nil(&w.pk);
  }
  rc |= k(&w, "accounts") | msgpack_pack_array(&w.pk, nacc);
  for (size_t i = 0; i < nacc; i++) {
    rc |= msgpack_pack_map(&w.pk, 3);
    rc |= k(&w, "account") | k(&w, acc[i].name);
    rc |= k(&w, "error") | k(&w, fq_errname(acc[i].code));
    rc |= k(&w, "reason") | k(&w, acc[i].reason);
  }
  if (req_raw) {
    rc |= k(&w, "req");
    rc |= fq_buf_append(out, req_raw, req_raw_len);
  }
  if (rc || w.rc) {
    out->len = start;
    return FQ_EINTERNAL;
  }
  return 0;
}
