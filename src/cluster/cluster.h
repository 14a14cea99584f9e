/*
 * fq_cluster: what a fleetq cluster needs from NATS JetStream (issue 18,
 * docs/cluster.md), and nothing more: a connection to a list of servers,
 * the per-shard log streams, the lease bucket, leases taken and renewed
 * with compare-and-set, fenced appends, and an in-order reader of a log.
 *
 * Not linked by fleetqd yet; the wiring is listed in docs/cluster.md.
 *
 * Threads: one handle may be used by one thread at a time (the NATS
 * connection inside is thread safe, the handle's bookkeeping is not).
 * A follower (fq_cl_follow_t) belongs to one thread.
 *
 * Errors: 0, a project code (FQ_EBADPARAM, FQ_ECONFIG, FQ_ENOTFOUND,
 * FQ_ESTORFULL, FQ_EPROTO), or one of the cluster codes below, with the
 * text (including the NATS status or JetStream error) in err.
 */
#ifndef FQ_CLUSTER_H
#define FQ_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/error.h"

/* Cluster outcomes that callers must tell apart.  Kept out of FQ_ERRORS
 * (include/fleetq/error.h, whose numbers are stored in command records)
 * until fleetqd uses them; fq_cl_strerror() names them. */
enum {
  /* The append was refused because the stream's last sequence is not the
   * expected one: another node appended since.  The caller no longer owns
   * the shard's history: abort, step down, catch up. */
  FQ_CL_EFENCED = -20001,
  /* No answer in time, no quorum, no connection: the outcome of an append
   * is unknown (retry it with the same term: it is deduplicated). */
  FQ_CL_EUNAVAIL = -20002,
  /* The lease is held by another node, or moved on since our revision. */
  FQ_CL_ELEASE = -20003,
};

/* Text for a cluster code, else fq_strerror(code). */
const char *fq_cl_strerror(int code);

typedef struct fq_cl fq_cl_t;

typedef struct fq_cl_opts {
  const char *urls;        /* "nats://h:p,nats://h:p,...": every server, or some */
  const char *node_id;     /* this node: 1..32 of [A-Za-z0-9_-] */
  int64_t timeout_ms;      /* connect, JetStream API calls and appends (default 2000) */
  int replicas;            /* of every stream and of the bucket (default 3) */
  int64_t lease_ttl_ms;    /* the lease bucket's TTL (default 3000; >= 300) */
  int64_t stream_max_age_ms;  /* how long a log keeps entries (default 7 days) */
  int32_t max_msg;         /* largest append, bytes (default 8 MiB; the servers'
                            * max_payload must allow it) */
  int64_t act_ms;          /* how long after a successful take / renew was sent
                            * the holder may act (fq_cl_lease_may_act); 0:
                            * lease_ttl_ms / 2; at most lease_ttl_ms - 100 */
} fq_cl_opts_t;

/* Defaults, for a caller that sets only some fields. */
void fq_cl_opts_init(fq_cl_opts_t *o);

/* Connect (first server that answers; reconnect forever, 250 ms apart,
 * across all of them).  FQ_EBADPARAM for bad options, FQ_CL_EUNAVAIL when
 * no server answers within timeout_ms. */
int fq_cl_connect(const fq_cl_opts_t *o, fq_cl_t **out, fq_err_t *err);
void fq_cl_close(fq_cl_t **cp);
const char *fq_cl_node(const fq_cl_t *c);
int64_t fq_cl_lease_ttl_ms(const fq_cl_t *c);

/* Names of shard's stream and subject ("FQ_SHARD_3", "fq.shard.3.log"). */
void fq_cl_stream_name(unsigned shard, char *buf, size_t n);
void fq_cl_subject(unsigned shard, char *buf, size_t n);

/* Make sure shard's stream exists with the settings of docs/cluster.md:
 * create it, or check the one there (subject, replicas, file storage);
 * a mismatch is FQ_ECONFIG, never changed behind the operator's back.
 * A new stream gets its genesis message (seq 1, empty body; appended once
 * whoever creates it, by its msg id), so that every real append can name
 * the sequence it expects: the C client sends no expected-last-sequence
 * header for 0, which would leave a stream's first append unfenced. */
int fq_cl_ensure_shard(fq_cl_t *c, unsigned shard, fq_err_t *err);
/* The same for the lease bucket FQ_LEASES (history 1, TTL = lease TTL). */
int fq_cl_ensure_leases(fq_cl_t *c, fq_err_t *err);

/* --- leases ------------------------------------------------------------- */

typedef struct fq_cl_lease {
  unsigned shard;
  bool held;
  uint64_t rev;            /* the revision of our last successful write */
  int64_t sent_ns;         /* fq_mono_ns() when that write was sent */
} fq_cl_lease_t;

/* Take shard's lease (the key must be absent or expired), with value
 * "<node_id> <endpoint>".  FQ_CL_ELEASE with the holder in err when held. */
int fq_cl_lease_take(fq_cl_t *c, unsigned shard, const char *endpoint, fq_cl_lease_t *l,
                     fq_err_t *err);
/* Renew a held lease (compare-and-set on l->rev).  FQ_CL_ELEASE: lost
 * (l->held becomes false); FQ_CL_EUNAVAIL: unknown, try again (l stays
 * as it was, and may_act runs out on its own). */
int fq_cl_lease_renew(fq_cl_t *c, fq_cl_lease_t *l, const char *endpoint, fq_err_t *err);
/* Give it up: delete the key only if it is still at l->rev. */
int fq_cl_lease_release(fq_cl_t *c, fq_cl_lease_t *l, fq_err_t *err);
/* Whether the holder may still act on the shard at monotonic time now_ns:
 * held, and less than act_ms (default TTL/2) since the last successful
 * write was sent. */
bool fq_cl_lease_may_act(const fq_cl_t *c, const fq_cl_lease_t *l, int64_t now_ns);
/* Who holds shard's lease: its value ("<node> <endpoint>") and revision;
 * FQ_ENOTFOUND when nobody does. */
int fq_cl_lease_get(fq_cl_t *c, unsigned shard, char *holder, size_t n, uint64_t *rev,
                    fq_err_t *err);

/* Say this node is alive (key "node.<id>", value "<node> <endpoint>",
 * expiring with the bucket's TTL unless written again) and, when alive is
 * not NULL, count the nodes whose key is present (this one included). */
int fq_cl_presence(fq_cl_t *c, const char *endpoint, unsigned *alive, fq_err_t *err);

/* --- the log ------------------------------------------------------------ */

/* Append bytes to shard's stream if its last sequence is expected_last
 * (>= 1: the genesis is 1); *seq = the new sequence (expected_last + 1).
 * term (the appender's lease revision) goes into the message id, so that
 * retrying after FQ_CL_EUNAVAIL cannot append twice: a retry that finds
 * its own message already at expected_last + 1 succeeds.
 * FQ_CL_EFENCED: another writer's message is there.  FQ_ESTORFULL:
 * JetStream is out of storage.  FQ_ETOOLARGE: above max_msg. */
int fq_cl_append(fq_cl_t *c, unsigned shard, const uint8_t *p, size_t n, uint64_t expected_last,
                 uint64_t term, uint64_t *seq, fq_err_t *err);

/* The last sequence of shard's stream (0 when empty). */
int fq_cl_last_seq(fq_cl_t *c, unsigned shard, uint64_t *seq, fq_err_t *err);

/* An in-order reader of shard's stream from sequence from (>= 1), on an
 * ordered consumer (ephemeral: the position a follower resumes from lives
 * in its own store, see docs/cluster.md). */
typedef struct fq_cl_follow fq_cl_follow_t;
int fq_cl_follow_open(fq_cl_t *c, unsigned shard, uint64_t from, fq_cl_follow_t **out,
                      fq_err_t *err);
/* Deliver up to max messages, waiting at most wait_ms for the first and
 * taking what else is ready; fn gets each in sequence order (a non-zero
 * return stops and is returned).  *got = how many were delivered.  A
 * message at or below the position (delivered again) is dropped; one past
 * the next sequence is FQ_EPROTO (never skipped): the log no longer holds
 * what this copy needs (re-seed).  FQ_CL_EUNAVAIL: close,
 * and open again from fq_cl_follow_pos() + 1 (nothing lost, nothing
 * repeated). */
typedef int (*fq_cl_follow_fn)(void *ud, uint64_t seq, const uint8_t *p, size_t n);
int fq_cl_follow_next(fq_cl_follow_t *f, size_t max, int64_t wait_ms, fq_cl_follow_fn fn,
                      void *ud, size_t *got, fq_err_t *err);
/* The sequence of the last message delivered (from - 1 before any). */
uint64_t fq_cl_follow_pos(const fq_cl_follow_t *f);
/* How often fq_cl_follow_next found the consumer stuck (a wait without a
 * message while the stream had more) and made it again from pos + 1. */
uint64_t fq_cl_follow_resubs(const fq_cl_follow_t *f);
void fq_cl_follow_close(fq_cl_follow_t **fp);

#endif
