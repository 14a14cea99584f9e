/*
 * fq_replica: a shard's store kept as a copy of its log (replica.h,
 * docs/cluster.md).  The order of fq_replica_commit is the whole point:
 * the log comes first because it is the truth.  A local commit that is
 * not in the log could never be taken back (a successor would never see
 * it, yet this node may have acked or sent it); a log entry that is not in
 * the local store is simply applied later.
 */
#include "replica.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "util.h"

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

void fq_replica_init(fq_replica_t *r, unsigned shard, uint64_t term) {
  memset(r, 0, sizeof *r);
  r->shard = shard;
  r->term = term;
  r->unavail_ms = FQ_REPLICA_UNAVAIL_MS;
  /* The largest message a log takes (cluster.h's default max_msg), with
   * room for the head. */
  fq_buf_init(&r->msg, (8u << 20) + 4096);
}

void fq_replica_set_term(fq_replica_t *r, uint64_t term) {
  r->term = term;
  r->commits = 0;
}

void fq_replica_free(fq_replica_t *r) { fq_buf_free(&r->msg); }

/* Append r->msg expecting last, retrying FQ_CL_EUNAVAIL with the same
 * message id (same slot, node and term) for r->unavail_ms. */
static int append_retrying(fq_cl_t *cl, fq_replica_t *r, uint64_t last, uint64_t *seq,
                           fq_err_t *err) {
  int64_t give_up = fq_mono_ns() + r->unavail_ms * INT64_C(1000000);
  for (;;) {
    int rc = fq_cl_append(cl, r->shard, r->msg.data, r->msg.len, last, r->term, seq, err);
    if (rc != FQ_CL_EUNAVAIL || fq_mono_ns() >= give_up) return rc;
    r->retries++;
    sleep_ms(50);
  }
}

int fq_replica_commit(fq_store_t *s, fq_ws_t *ws, fq_cl_t *cl, fq_replica_t *r, fq_err_t *err) {
  uint64_t last = 0;
  int rc = fq_store_applied(s, &last, err);
  if (rc) goto abort;
  if (last == 0) {
    rc = fq_errf(err, FQ_STORE_EHOLE, "replica: shard %u: this copy has applied no log entry "
                 "(catch up first: the log starts with its genesis)", r->shard);
    goto abort;
  }
  rc = fq_store_prepare(s, last + 1, err);
  if (rc) goto abort;
  fq_buf_reset(&r->msg);
  rc = fq_ws_encode(ws, r->shard, r->commits + 1, fq_cl_node(cl), &r->msg);
  if (rc) {
    rc = fq_errf(err, rc, "replica: shard %u: encoding the write set: %s", r->shard,
                 fq_cl_strerror(rc));
    goto abort;
  }
  uint64_t seq = 0;
  rc = append_retrying(cl, r, last, &seq, err);
  if (rc) goto abort;
  r->appended++;
  r->commits++;
  /* In the log at last + 1: from here the batch exists whatever happens
   * to this process.  A commit that fails now leaves this copy behind the
   * log (the caller catches up); it never leaves it ahead. */
  return fq_store_commit(s, err);

abort:
  fq_store_abort(s);
  return rc;
}

/* --- following ------------------------------------------------------------ */

typedef struct catch_ctx {
  fq_store_t *s;
  fq_replica_t *r;
  fq_err_t *err;
} catch_ctx_t;

static int apply_one(void *ud, uint64_t seq, const uint8_t *p, size_t n) {
  catch_ctx_t *x = ud;
  int rc = fq_store_apply(x->s, p, n, seq, x->err);
  if (rc == FQ_STORE_EREPEAT) {
    /* This copy holds it already (it was this node's own commit, or an
     * earlier catch-up's): applied, nothing to do. */
    x->r->repeats++;
    return 0;
  }
  if (rc == 0) x->r->applied++;
  return rc;
}

int fq_replica_catch_up(fq_store_t *s, fq_cl_t *cl, fq_replica_t *r, uint64_t until_seq,
                        fq_err_t *err) {
  uint64_t applied = 0;
  int rc = fq_store_applied(s, &applied, err);
  if (rc) return rc;
  int64_t patience = r->unavail_ms * INT64_C(1000000);
  int64_t idle_until = fq_mono_ns() + patience;
  if (until_seq == 0) {
    /* The stream's end, as of now (retried: right after a server's death
     * the stream may have no leader for seconds). */
    while ((rc = fq_cl_last_seq(cl, r->shard, &until_seq, err)) == FQ_CL_EUNAVAIL &&
           fq_mono_ns() < idle_until)
      sleep_ms(100);
    if (rc) return rc;
  }
  if (applied >= until_seq) return 0;
  catch_ctx_t x = {s, r, err};
  fq_cl_follow_t *f = NULL;
  while (applied < until_seq) {
    if (!f) {
      rc = fq_cl_follow_open(cl, r->shard, applied + 1, &f, err);
      if (rc == FQ_CL_EUNAVAIL && fq_mono_ns() < idle_until) {
        sleep_ms(100);
        continue;
      }
      if (rc) break;
    }
    size_t got = 0;
    uint64_t want = until_seq - applied;
    rc = fq_cl_follow_next(f, want > 256 ? 256 : (size_t)want, 1000, apply_one, &x, &got, err);
    /* What the store holds now is where a follower resumes from (the
     * first error is the one reported). */
    fq_err_t e2;
    int rc2 = fq_store_applied(s, &applied, &e2);
    if (rc == 0 && rc2) {
      rc = rc2;
      *err = e2;
    }
    if (got) idle_until = fq_mono_ns() + patience;
    if (rc == FQ_CL_EUNAVAIL && fq_mono_ns() < idle_until) {
      r->resubs += fq_cl_follow_resubs(f);
      fq_cl_follow_close(&f);
      sleep_ms(100);
      continue;
    }
    if (rc) break;
    if (!got && fq_mono_ns() >= idle_until) {
      rc = fq_errf(err, FQ_CL_EUNAVAIL, "replica: shard %u: no log entry after %" PRIu64
                   " for %" PRId64 " ms (want up to %" PRIu64 ")", r->shard, applied,
                   r->unavail_ms, until_seq);
      break;
    }
  }
  if (f) r->resubs += fq_cl_follow_resubs(f);
  fq_cl_follow_close(&f);
  return rc;
}

/* --- takeover --------------------------------------------------------------- */

int fq_replica_take_over(fq_store_t *s, fq_ws_t *ws, fq_cl_t *cl, fq_replica_t *r,
                         uint64_t *marker, fq_err_t *err) {
  int rc = fq_store_capture(s, NULL, err);
  if (rc) return rc;
  fq_ws_t empty;
  fq_ws_init(&empty, 0);
  r->commits = 0;
  /* Someone appending after our catch-up is a node that still believes it
   * owns the shard (its lease ran out while it was paused); it is fenced
   * by our marker once we get it in.  A handful of rounds is plenty. */
  for (int round = 0; round < 8; round++) {
    rc = fq_replica_catch_up(s, cl, r, 0, err);
    if (rc) break;
    uint64_t last = 0;
    rc = fq_store_applied(s, &last, err);
    if (rc) break;
    fq_buf_reset(&r->msg);
    rc = fq_ws_encode(&empty, r->shard, 0, fq_cl_node(cl), &r->msg);
    if (rc) break;
    uint64_t seq = 0;
    rc = append_retrying(cl, r, last, &seq, err);
    if (rc == FQ_CL_EFENCED) continue;
    if (rc) break;
    r->appended++;
    rc = fq_store_apply(s, r->msg.data, r->msg.len, seq, err);
    if (rc) break;
    if (marker) *marker = seq;
    fq_ws_free(&empty);
    return fq_store_capture(s, ws, err);
  }
  fq_ws_free(&empty);
  return rc;
}
