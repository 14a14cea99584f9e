/*
 * Unit tests of the shard's batch/commit logic, through its real interface:
 * a shard thread with its store in a temporary directory, and the test as
 * its ingress peer on the inproc PAIR socket (shard.h's framing).
 *
 * To make batches deterministic the test holds the shard thread inside a
 * batch: the shard's dispatcher gets a test transport whose perform()
 * (called once per batch, inside the write transaction, after the
 * batch's requests were applied) can block until the test lets it go.
 * While it is held, the test queues the next requests, so they are all
 * drained into the next batch; and it can look at the store from another
 * process to see what is committed.  With accounts the same transport
 * records the requests the dispatcher makes, which shows each device's
 * queue order.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <msgpack.h>
#include <zmq.h>

#include "accounts.h"
#include "auth.h"
#include "dispatch.h"
#include "fleetq/wire.h"
#include "fq_test.h"
#include "shard.h"
#include "store.h"
#include "util.h"

#define BASE "https://fleet-api.test.example"

/* --- the test transport: gate and recorder --------------------------------- */

#define MAX_REQS 1024

typedef struct net {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool armed;                /* hold the next batch inside its step */
  bool inside;               /* a batch is held */
  bool release;
  unsigned holds;            /* batches held so far */
  int steps;
  int nreqs;
  struct {
    char url[256];
    char body[256];
    fq_http_cb cb;
    void *ud;
    uint64_t id;
    bool ready, done;
    long status;
    char answer[128];
  } reqs[MAX_REQS];
} net_t;

static int net_request(void *ud, const fq_http_req_t *req, fq_http_cb cb, void *cb_ud,
                       uint64_t *id, fq_err_t *err) {
  net_t *n = ud;
  pthread_mutex_lock(&n->mu);
  int rc = 0;
  if (n->nreqs == MAX_REQS) {
    rc = fq_errf(err, FQ_EBUSY, "test transport full");
  } else {
    int i = n->nreqs++;
    memset(&n->reqs[i], 0, sizeof n->reqs[i]);
    snprintf(n->reqs[i].url, sizeof n->reqs[i].url, "%s", req->url);
    snprintf(n->reqs[i].body, sizeof n->reqs[i].body, "%.*s", (int)req->body_len,
             (const char *)req->body);
    n->reqs[i].cb = cb;
    n->reqs[i].ud = cb_ud;
    n->reqs[i].id = (uint64_t)i + 1;
    *id = n->reqs[i].id;
  }
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
  return rc;
}

static int net_perform(void *ud, const zmq_pollitem_t *items, int nitems, fq_err_t *err) {
  net_t *n = ud;
  (void)items;
  (void)nitems;
  (void)err;
  pthread_mutex_lock(&n->mu);
  n->steps++;
  if (n->armed) {
    n->armed = false;
    n->inside = true;
    n->holds++;
    pthread_cond_broadcast(&n->cv);
    while (!n->release) pthread_cond_wait(&n->cv, &n->mu);
    n->release = false;
    n->inside = false;
  }
  /* Answers are delivered on the shard thread, inside its transaction,
   * as fq_http_perform() would. */
  int ran = 0;
  for (int i = 0; i < n->nreqs; i++) {
    if (!n->reqs[i].ready || n->reqs[i].done) continue;
    n->reqs[i].done = true;
    fq_http_resp_t r;
    memset(&r, 0, sizeof r);
    r.id = n->reqs[i].id;
    r.outcome = FQ_HTTP_COMPLETE;
    r.status = n->reqs[i].status;
    r.body = (const uint8_t *)n->reqs[i].answer;
    r.body_len = strlen(n->reqs[i].answer);
    n->reqs[i].cb(n->reqs[i].ud, &r);
    ran++;
  }
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
  return ran;
}

static unsigned net_inflight(void *ud) {
  net_t *n = ud;
  pthread_mutex_lock(&n->mu);
  unsigned k = 0;
  for (int i = 0; i < n->nreqs; i++) k += !n->reqs[i].done;
  pthread_mutex_unlock(&n->mu);
  return k;
}

static void deadline_in(struct timespec *ts, int ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000;
  if (ts->tv_nsec >= 1000000000) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000;
  }
}

/* Hold the next batch; returns the number of holds so far, for
 * gate_wait(). */
static unsigned gate_arm(net_t *n) {
  pthread_mutex_lock(&n->mu);
  n->armed = true;
  unsigned holds = n->holds;
  pthread_mutex_unlock(&n->mu);
  return holds;
}

/* Wait until the shard thread is held inside a batch that it entered after
 * gate_arm() returned `after` (not one held before). */
static bool gate_wait(net_t *n, unsigned after) {
  struct timespec ts;
  deadline_in(&ts, 10000);
  pthread_mutex_lock(&n->mu);
  int rc = 0;
  while (n->holds == after && rc == 0) rc = pthread_cond_timedwait(&n->cv, &n->mu, &ts);
  bool in = n->holds != after && n->inside;
  pthread_mutex_unlock(&n->mu);
  return in;
}

static void gate_release(net_t *n) {
  pthread_mutex_lock(&n->mu);
  n->release = true;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

/* Wait until the dispatcher has made `count` requests. */
static bool net_wait_reqs(net_t *n, int count) {
  struct timespec ts;
  deadline_in(&ts, 10000);
  pthread_mutex_lock(&n->mu);
  int rc = 0;
  while (n->nreqs < count && rc == 0) rc = pthread_cond_timedwait(&n->cv, &n->mu, &ts);
  bool ok = n->nreqs >= count;
  pthread_mutex_unlock(&n->mu);
  return ok;
}

static void net_answer(net_t *n, int i, long status, const char *body) {
  pthread_mutex_lock(&n->mu);
  if (i < n->nreqs) {
    n->reqs[i].ready = true;
    n->reqs[i].status = status;
    snprintf(n->reqs[i].answer, sizeof n->reqs[i].answer, "%s", body);
  }
  pthread_mutex_unlock(&n->mu);
}

/* --- the ingress side ---------------------------------------------------------- */

typedef struct rep {
  int req;
  bool ok, dup;
  char id[FQ_ID_LEN + 1];
  char state[16];            /* submit's state, or the command map's */
  char error[32];
  char message[256];
  int nevents;               /* history */
  uint64_t ev_seq[64];
  uint64_t ev_tseq[64];      /* 0 when the event has none */
  char ev_tenant[64][12];
  uint64_t next;             /* history's `next` */
  uint64_t first;            /* history's `first` (0 when absent) */
  int nenv;                  /* envelope frames it came back with */
} rep_t;

typedef struct ev {
  uint64_t seq, tseq;
  char id[FQ_ID_LEN + 1];
  char tenant[16];
  int state, prev;
} ev_t;

#define MAX_REP 4096
#define MAX_EV 4096

/* What one 'B' message held. */
typedef struct batch {
  int nrep, nev;
  bool events_first;         /* no event came after a reply */
  rep_t rep[MAX_REP];
  ev_t ev[MAX_EV];
} batch_t;

typedef struct sh_h {
  char dir[64];
  void *ctx, *pair;
  fq_shard_t *sh;
  fq_accounts_t *acc;
  net_t net;
  fq_dispatch_transport_t tr;
  fq_dispatch_opts_t dopts;
  uint64_t map_size;
  uint64_t max_store;        /* 0: the map does not grow */
  uint64_t last_seq;         /* seq of the last event seen, for the gap check */
  int seq_gaps;
  struct {                   /* the same per tenant for tseq */
    char name[16];
    uint64_t last;
  } tseq[8];
  int tseq_gaps;
  batch_t *b;                /* scratch for receive */
  bool no_dispatch;
  int64_t retention_ms, window_ms; /* the shard's retention (0: none) */
  int gone;                  /* key hashes the shard said it no longer holds ('X') */
  uint64_t gone_upto;        /* the request count of the last 'X' */
  bool check_accounts;       /* the shard refuses submits for accounts not in acc */
} sh_h_t;

static int buf_write(void *data, const char *p, size_t len) {
  return fq_buf_append(data, p, len) ? -1 : 0;
}

static void pk_str(msgpack_packer *pk, const char *s) {
  msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* A submit of `backup` (an energy-site set-point) for site `site`; pct
 * distinguishes requests. */
static void build_submit_as(fq_buf_t *out, const char *tenant, const char *account,
                            const char *key, uint64_t site, int pct, bool coalesce, int64_t ttl_ms,
                            int req) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, buf_write);
  msgpack_pack_map(&pk, 8 + (coalesce ? 1 : 0) + (ttl_ms ? 1 : 0));
  pk_str(&pk, "op");
  pk_str(&pk, "submit");
  pk_str(&pk, "tenant");
  pk_str(&pk, tenant);
  pk_str(&pk, "key");
  pk_str(&pk, key);
  pk_str(&pk, "account");
  pk_str(&pk, account);
  pk_str(&pk, "site");
  msgpack_pack_uint64(&pk, site);
  pk_str(&pk, "command");
  pk_str(&pk, "backup");
  pk_str(&pk, "params");
  msgpack_pack_map(&pk, 1);
  pk_str(&pk, "backup_reserve_percent");
  msgpack_pack_int(&pk, pct);
  if (coalesce) {
    pk_str(&pk, "coalesce");
    msgpack_pack_true(&pk);
  }
  if (ttl_ms) {
    pk_str(&pk, "ttl_ms");
    msgpack_pack_int64(&pk, ttl_ms);
  }
  pk_str(&pk, "req");
  msgpack_pack_int(&pk, req);
}

static void build_submit(fq_buf_t *out, const char *tenant, const char *key, uint64_t site,
                         int pct, bool coalesce, int64_t ttl_ms, int req) {
  build_submit_as(out, tenant, "acct", key, site, pct, coalesce, ttl_ms, req);
}

/* get / cancel by tenant + key, or by id when tenant is NULL. */
static void build_lookup(fq_buf_t *out, const char *op, const char *tenant, const char *key_or_id,
                         int req) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, buf_write);
  msgpack_pack_map(&pk, tenant ? 4 : 3);
  pk_str(&pk, "op");
  pk_str(&pk, op);
  if (tenant) {
    pk_str(&pk, "tenant");
    pk_str(&pk, tenant);
    pk_str(&pk, "key");
  } else {
    pk_str(&pk, "id");
  }
  pk_str(&pk, key_or_id);
  pk_str(&pk, "req");
  msgpack_pack_int(&pk, req);
}

static void build_history(fq_buf_t *out, uint64_t after, int req) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, buf_write);
  msgpack_pack_map(&pk, 5);
  pk_str(&pk, "op");
  pk_str(&pk, "history");
  pk_str(&pk, "shard");
  msgpack_pack_uint32(&pk, 0);
  pk_str(&pk, "after");
  msgpack_pack_uint64(&pk, after);
  pk_str(&pk, "limit");
  msgpack_pack_uint32(&pk, 1000);
  pk_str(&pk, "req");
  msgpack_pack_int(&pk, req);
}

/* Send ['Q', "peer", body]. */
static void send_q(sh_h_t *h, const fq_buf_t *body) {
  zmq_send(h->pair, "Q", 1, ZMQ_SNDMORE);
  zmq_send(h->pair, "peer", 4, ZMQ_SNDMORE);
  zmq_send(h->pair, body->data, body->len, 0);
}

static void q_submit_ttl(sh_h_t *h, const char *tenant, const char *key, uint64_t site, int pct,
                         bool coalesce, int64_t ttl_ms, int req) {
  fq_buf_t b;
  fq_buf_init(&b, 1 << 16);
  build_submit(&b, tenant, key, site, pct, coalesce, ttl_ms, req);
  send_q(h, &b);
  fq_buf_free(&b);
}

static void q_submit(sh_h_t *h, const char *tenant, const char *key, uint64_t site, int pct,
                     bool coalesce, int req) {
  q_submit_ttl(h, tenant, key, site, pct, coalesce, 0, req);
}

/* A submit for another account than "acct". */
static void q_submit_as(sh_h_t *h, const char *tenant, const char *account, const char *key,
                        uint64_t site, int pct, bool coalesce, int req) {
  fq_buf_t b;
  fq_buf_init(&b, 1 << 16);
  build_submit_as(&b, tenant, account, key, site, pct, coalesce, 0, req);
  send_q(h, &b);
  fq_buf_free(&b);
}

static void q_lookup(sh_h_t *h, const char *op, const char *tenant, const char *key_or_id,
                     int req) {
  fq_buf_t b;
  fq_buf_init(&b, 1 << 16);
  build_lookup(&b, op, tenant, key_or_id, req);
  send_q(h, &b);
  fq_buf_free(&b);
}

static void q_history(sh_h_t *h, uint64_t after, int req) {
  fq_buf_t b;
  fq_buf_init(&b, 1 << 16);
  build_history(&b, after, req);
  send_q(h, &b);
  fq_buf_free(&b);
}

/* history with every field: tenant NULL for the whole shard. */
static void build_history2(fq_buf_t *out, const char *tenant, uint64_t after, uint32_t limit,
                           int req) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, buf_write);
  msgpack_pack_map(&pk, 5 + (tenant ? 1 : 0));
  pk_str(&pk, "op");
  pk_str(&pk, "history");
  pk_str(&pk, "shard");
  msgpack_pack_uint32(&pk, 0);
  if (tenant) {
    pk_str(&pk, "tenant");
    pk_str(&pk, tenant);
  }
  pk_str(&pk, "after");
  msgpack_pack_uint64(&pk, after);
  pk_str(&pk, "limit");
  msgpack_pack_uint32(&pk, limit);
  pk_str(&pk, "req");
  msgpack_pack_int(&pk, req);
}

/* The tenant list of a kind frame, as the ingress sends it: a string
 * literal of names each ending in \0 (its implicit final \0 not counted). */
#define ACL(lit) lit, sizeof(lit) - 1
#define NO_ACL NULL, 0

/* Send ['Q' + acl, "peer", body]. */
static void send_q_acl(sh_h_t *h, const char *acl, size_t acl_len, const fq_buf_t *body) {
  char kind[128];
  kind[0] = 'Q';
  if (acl_len) memcpy(kind + 1, acl, acl_len);
  zmq_send(h->pair, kind, 1 + acl_len, ZMQ_SNDMORE);
  zmq_send(h->pair, "peer", 4, ZMQ_SNDMORE);
  zmq_send(h->pair, body->data, body->len, 0);
}

static void q_lookup_acl(sh_h_t *h, const char *acl, size_t acl_len, const char *op,
                         const char *tenant, const char *key_or_id, int req) {
  fq_buf_t b;
  fq_buf_init(&b, 1 << 16);
  build_lookup(&b, op, tenant, key_or_id, req);
  send_q_acl(h, acl, acl_len, &b);
  fq_buf_free(&b);
}

static void q_history_acl(sh_h_t *h, const char *acl, size_t acl_len, const char *tenant,
                          uint64_t after, uint32_t limit, int req) {
  fq_buf_t b;
  fq_buf_init(&b, 1 << 16);
  build_history2(&b, tenant, after, limit, req);
  send_q_acl(h, acl, acl_len, &b);
  fq_buf_free(&b);
}

static void q_submit_acl(sh_h_t *h, const char *acl, size_t acl_len, const char *tenant,
                         const char *key, uint64_t site, int req) {
  fq_buf_t b;
  fq_buf_init(&b, 1 << 16);
  build_submit(&b, tenant, key, site, 10, false, 0, req);
  send_q_acl(h, acl, acl_len, &b);
  fq_buf_free(&b);
}

static bool key_is(const msgpack_object *k, const char *s) {
  return k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(s) &&
         memcmp(k->via.str.ptr, s, k->via.str.size) == 0;
}

static void copy_str(char *out, size_t cap, const msgpack_object *v) {
  if (v->type != MSGPACK_OBJECT_STR) return;
  snprintf(out, cap, "%.*s", (int)v->via.str.size, v->via.str.ptr);
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key) {
  if (m->type != MSGPACK_OBJECT_MAP) return NULL;
  for (uint32_t i = 0; i < m->via.map.size; i++)
    if (key_is(&m->via.map.ptr[i].key, key)) return &m->via.map.ptr[i].val;
  return NULL;
}

static void parse_reply(const uint8_t *p, size_t n, rep_t *r) {
  memset(r, 0, sizeof *r);
  r->req = -1;
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  if (msgpack_unpack_next(&u, (const char *)p, n, &off) == MSGPACK_UNPACK_SUCCESS) {
    const msgpack_object *m = &u.data, *v;
    if ((v = map_get(m, "ok")) && v->type == MSGPACK_OBJECT_BOOLEAN) r->ok = v->via.boolean;
    if ((v = map_get(m, "dup")) && v->type == MSGPACK_OBJECT_BOOLEAN) r->dup = v->via.boolean;
    if ((v = map_get(m, "req")) && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      r->req = (int)v->via.u64;
    if ((v = map_get(m, "id"))) copy_str(r->id, sizeof r->id, v);
    if ((v = map_get(m, "state"))) copy_str(r->state, sizeof r->state, v);
    if ((v = map_get(m, "error"))) copy_str(r->error, sizeof r->error, v);
    if ((v = map_get(m, "message"))) copy_str(r->message, sizeof r->message, v);
    if ((v = map_get(m, "next")) && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      r->next = v->via.u64;
    if ((v = map_get(m, "first")) && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
      r->first = v->via.u64;
    const msgpack_object *c = map_get(m, "command");
    if (c) {
      if ((v = map_get(c, "id"))) copy_str(r->id, sizeof r->id, v);
      if ((v = map_get(c, "state"))) copy_str(r->state, sizeof r->state, v);
    }
    const msgpack_object *evs = map_get(m, "events");
    if (evs && evs->type == MSGPACK_OBJECT_ARRAY) {
      for (uint32_t i = 0; i < evs->via.array.size && r->nevents < 64; i++) {
        const msgpack_object *e = &evs->via.array.ptr[i];
        const msgpack_object *s = map_get(e, "seq"), *t = map_get(e, "tseq");
        if ((v = map_get(e, "tenant")))
          copy_str(r->ev_tenant[r->nevents], sizeof r->ev_tenant[0], v);
        r->ev_tseq[r->nevents] = t && t->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? t->via.u64 : 0;
        r->ev_seq[r->nevents++] = s && s->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? s->via.u64 : 0;
      }
    }
  }
  msgpack_unpacked_destroy(&u);
}

/* Every published event's tseq follows the last one of its tenant (from 1,
 * across batches and restarts of the shard). */
static void tseq_check(sh_h_t *h, const char *tenant, uint64_t tseq) {
  int i = 0;
  while (i < 8 && h->tseq[i].name[0] && strcmp(h->tseq[i].name, tenant) != 0) i++;
  if (i == 8) return;
  if (!h->tseq[i].name[0]) snprintf(h->tseq[i].name, sizeof h->tseq[i].name, "%s", tenant);
  if (tseq != h->tseq[i].last + 1) {
    fprintf(stderr, "  tenant %s: event tseq %llu follows %llu\n", tenant,
            (unsigned long long)tseq, (unsigned long long)h->tseq[i].last);
    h->tseq_gaps++;
  }
  h->tseq[i].last = tseq;
}

static uint64_t tseq_last(const sh_h_t *h, const char *tenant) {
  for (int i = 0; i < 8; i++)
    if (strcmp(h->tseq[i].name, tenant) == 0) return h->tseq[i].last;
  return 0;
}

static bool take(const uint8_t **p, const uint8_t *end, void *out, size_t n) {
  if ((size_t)(end - *p) < n) return false;
  memcpy(out, *p, n);
  *p += n;
  return true;
}

/* Receive one 'B' message (within ms) and decode its records.  Also
 * checks the gap-free seq of every event the test ever saw. */
static int recv_batch(sh_h_t *h, batch_t *b, int ms) {
  memset(b, 0, offsetof(batch_t, rep));
  b->events_first = true;
  zmq_pollitem_t it = {h->pair, 0, ZMQ_POLLIN, 0};
  zmq_msg_t f[2];
  int n = 0;
  for (;;) {
    if (zmq_poll(&it, 1, ms) <= 0) return -1;
    n = 0;
    for (;;) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, h->pair, 0) < 0) {
        zmq_msg_close(&m);
        break;
      }
      bool more = zmq_msg_more(&m);
      if (n < 2) f[n++] = m;
      else zmq_msg_close(&m);
      if (!more) break;
    }
    /* 'X' (keys no longer held, retention) comes on its own: note it and
     * wait for the batch. */
    if (n == 2 && zmq_msg_size(&f[0]) == 1 && *(char *)zmq_msg_data(&f[0]) == 'X' &&
        zmq_msg_size(&f[1]) >= 8) {
      memcpy(&h->gone_upto, zmq_msg_data(&f[1]), 8);
      h->gone += (int)(zmq_msg_size(&f[1]) / 8 - 1);
      for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
      continue;
    }
    break;
  }
  int rc = -1;
  if (n == 2 && zmq_msg_size(&f[0]) == 1 && *(char *)zmq_msg_data(&f[0]) == 'B') {
    const uint8_t *p = zmq_msg_data(&f[1]), *end = p + zmq_msg_size(&f[1]);
    rc = 0;
    while (p < end && rc == 0) {
      char kind = (char)*p++;
      uint32_t len;
      if (kind == 'E') {
        char topic[128];
        if (!take(&p, end, &len, 4) || len >= sizeof topic || !take(&p, end, topic, len) ||
            !take(&p, end, &len, 4) || (size_t)(end - p) < len) {
          rc = -1;
          break;
        }
        fq_event_t e;
        fq_err_t err;
        if (fq_wire_event_unpack(p, len, &e, &err) == 0 && b->nev < MAX_EV) {
          ev_t *x = &b->ev[b->nev++];
          x->seq = e.seq;
          x->tseq = e.tseq;
          snprintf(x->tenant, sizeof x->tenant, "%.*s", (int)e.tenant.n, e.tenant.p);
          tseq_check(h, x->tenant, e.tseq);
          x->state = e.state;
          x->prev = e.prev;
          snprintf(x->id, sizeof x->id, "%.*s", (int)e.id.n, e.id.p);
          if (h->last_seq && e.seq != h->last_seq + 1) {
            fprintf(stderr, "  event seq %llu follows %llu\n", (unsigned long long)e.seq,
                    (unsigned long long)h->last_seq);
            h->seq_gaps++;
          }
          h->last_seq = e.seq;
        } else {
          rc = -1;
        }
        if (b->nrep) b->events_first = false;
        p += len;
      } else if (kind == 'R') {
        uint8_t nenv;
        if (!take(&p, end, &nenv, 1)) rc = -1;
        for (int i = 0; i < nenv && rc == 0; i++) {
          if (!take(&p, end, &len, 4) || (size_t)(end - p) < len) rc = -1;
          else p += len;
        }
        if (rc || !take(&p, end, &len, 4) || (size_t)(end - p) < len) {
          rc = -1;
          break;
        }
        if (b->nrep < MAX_REP) {
          parse_reply(p, len, &b->rep[b->nrep]);
          b->rep[b->nrep++].nenv = nenv;
        }
        p += len;
      } else {
        rc = -1;
      }
    }
  }
  for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
  if (rc) FQ__FAIL("a malformed batch from the shard");
  return rc;
}

/* The reply to request number req in b, or NULL. */
static const rep_t *rep_for(const batch_t *b, int req) {
  for (int i = 0; i < b->nrep; i++)
    if (b->rep[i].req == req) return &b->rep[i];
  return NULL;
}

/* Read batches until the reply to request req arrives (within 10 s);
 * *r gets it, *nev the events published meanwhile.  False on time out. */
static bool await_rep(sh_h_t *h, int req, rep_t *r, int *nev) {
  if (nev) *nev = 0;
  for (;;) {
    if (recv_batch(h, h->b, 10000) != 0) return false;
    if (nev) *nev += h->b->nev;
    const rep_t *x = rep_for(h->b, req);
    if (x) {
      *r = *x;
      return true;
    }
  }
}

/* Nothing arrives from the shard within ms. */
static bool quiet(sh_h_t *h, int ms) {
  zmq_pollitem_t it = {h->pair, 0, ZMQ_POLLIN, 0};
  return zmq_poll(&it, 1, ms) == 0;
}

/* Number of commands a reader in another process sees committed (LMDB
 * readers see the last commit, never an open transaction).  A child
 * process, because one process must not open an environment twice. */
static long committed_commands(const sh_h_t *h) {
  char path[128];
  snprintf(path, sizeof path, "%s/shard-0", h->dir);
  int fd[2];
  if (pipe(fd) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat st;
    close(fd[0]);
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
        mdb_env_set_mapsize(env, (size_t)h->map_size) ||
        mdb_env_open(env, path, MDB_RDONLY | MDB_NOTLS, 0600) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) || mdb_dbi_open(txn, "cmd", 0, &dbi) ||
        mdb_stat(txn, dbi, &st))
      _exit(1);
    long n = (long)st.ms_entries;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    _exit(write(fd[1], &n, sizeof n) == sizeof n ? 0 : 1);
  }
  close(fd[1]);
  long n = -1;
  if (pid < 0 || read(fd[0], &n, sizeof n) != sizeof n) n = -1;
  close(fd[0]);
  int status = 0;
  if (pid > 0) waitpid(pid, &status, 0);
  return n;
}

/* Bytes of live pages in the committed store (every database, LMDB's
 * free list and the two meta pages), seen from another process. */
static long committed_used(const sh_h_t *h) {
  char path[128];
  snprintf(path, sizeof path, "%s/shard-0", h->dir);
  int fd[2];
  if (pipe(fd) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    static const char *names[] = {"meta", "cmd", "idemlog", "active", "events", "session",
                                  "tcount", "tindex"};
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat st;
    close(fd[0]);
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
        mdb_env_set_mapsize(env, (size_t)h->map_size) ||
        mdb_env_open(env, path, MDB_RDONLY | MDB_NOTLS, 0600) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
      _exit(1);
    long pages = 2;
    for (int i = 0; i < 10; i++) {
      if (i >= 2 && mdb_dbi_open(txn, names[i - 2], 0, &dbi)) _exit(1);
      if (mdb_stat(txn, i < 2 ? (MDB_dbi)i : dbi, &st)) _exit(1);
      pages += (long)(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages);
    }
    long n = pages * (long)st.ms_psize;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    _exit(write(fd[1], &n, sizeof n) == sizeof n ? 0 : 1);
  }
  close(fd[1]);
  long n = -1;
  if (pid < 0 || read(fd[0], &n, sizeof n) != sizeof n) n = -1;
  close(fd[0]);
  int status = 0;
  if (pid > 0) waitpid(pid, &status, 0);
  return n;
}

/* --- a store filled from outside -------------------------------------------------- */

/* A process holding a read transaction on the shard's store: LMDB then
 * reuses no page freed after its snapshot.  Returns the pipe that ends it
 * (unpin), or -1. */
static int pin_snapshot(const sh_h_t *h, pid_t *pidp) {
  char path[128];
  snprintf(path, sizeof path, "%s/shard-0", h->dir);
  int up[2], down[2];
  if (pipe(up) != 0) return -1;
  if (pipe(down) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    MDB_env *env;
    MDB_txn *txn;
    char c = 'r';
    close(up[0]);
    close(down[1]);
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
        mdb_env_set_mapsize(env, (size_t)h->map_size) ||
        mdb_env_open(env, path, MDB_RDONLY | MDB_NOTLS, 0600) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
      _exit(1);
    if (write(up[1], &c, 1) != 1) _exit(1);
    while (read(down[0], &c, 1) > 0) {
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    _exit(0);
  }
  close(up[1]);
  close(down[0]);
  char c;
  bool ok = pid > 0 && read(up[0], &c, 1) == 1;
  close(up[0]);
  if (!ok) {
    close(down[1]);
    return -1;
  }
  *pidp = pid;
  return down[1];
}

static void unpin_snapshot(int fd, pid_t pid) {
  close(fd);
  int status;
  waitpid(pid, &status, 0);
}

/* In another process, as another writer of the same store would: junk
 * sessions in ever smaller transactions until not one more page can be
 * had (with a snapshot pinned, rewrites in place until even they fail).
 * del: remove the junk again instead.  True when done. */
static bool junk_store(const sh_h_t *h, bool del) {
  char path[128];
  snprintf(path, sizeof path, "%s/shard-0", h->dir);
  pid_t pid = fork();
  if (pid == 0) {
    static const uint8_t junk[2000];
    static const size_t size[] = {2000, 200, 10};
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
        mdb_env_set_mapsize(env, (size_t)h->map_size) ||
        mdb_env_open(env, path, MDB_NOTLS, 0600))
      _exit(1);
    unsigned k = 0;
    if (del) {
      for (bool more = true; more;) {
        if (mdb_txn_begin(env, NULL, 0, &txn) || mdb_dbi_open(txn, "session", 0, &dbi)) _exit(1);
        MDB_cursor *cur;
        MDB_val key, val;
        int n = 0;
        if (mdb_cursor_open(txn, dbi, &cur)) _exit(1);
        char j = 'J';
        for (; n < 64; n++) {
          key = (MDB_val){1, &j};
          if (mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE) != 0 ||
              ((char *)key.mv_data)[0] != 'J')
            break;
          if (mdb_cursor_del(cur, 0)) _exit(1);
        }
        more = n == 64;
        mdb_cursor_close(cur);
        if (mdb_txn_commit(txn)) _exit(1);
      }
      mdb_env_close(env);
      _exit(0);
    }
    for (size_t z = 0; z < 3; z++) {
      for (int per = 64; per >= 1; per /= 8) {
        for (bool fits = true; fits;) {
          if (mdb_txn_begin(env, NULL, 0, &txn) || mdb_dbi_open(txn, "session", 0, &dbi))
            _exit(1);
          for (int i = 0; i < per && fits; i++) {
            char kb[20];
            int kl = snprintf(kb, sizeof kb, "J%015u", k++);
            MDB_val key = {(size_t)kl, kb}, val = {size[z], (void *)junk};
            fits = mdb_put(txn, dbi, &key, &val, 0) == 0;
          }
          if (fits) fits = mdb_txn_commit(txn) == 0;
          else mdb_txn_abort(txn);
        }
      }
    }
    for (bool fits = true; fits;) {
      if (mdb_txn_begin(env, NULL, 0, &txn) || mdb_dbi_open(txn, "session", 0, &dbi)) _exit(1);
      MDB_val key = {16, "J000000000000000"}, val = {2000, (void *)junk};
      fits = mdb_put(txn, dbi, &key, &val, 0) == 0;
      if (fits) fits = mdb_txn_commit(txn) == 0;
      else mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    _exit(0);
  }
  int status = 0;
  return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

/* --- harness -------------------------------------------------------------------- */

static int sh_start(sh_h_t *h) {
  fq_err_t err;
  fq_shard_opts_t so = {.zmq_ctx = h->ctx,
                        .data_dir = h->dir,
                        .index = 0,
                        .count = 1,
                        .map_size = h->map_size,
                        .max_store = h->max_store,
                        .default_ttl_ms = 600000,
                        .dispatch = h->no_dispatch ? NULL : &h->dopts,
                        .retention_ms = h->retention_ms,
                        .dedupe_window_ms = h->window_ms,
                        .accounts = h->check_accounts ? h->acc : NULL};
  h->pair = zmq_socket(h->ctx, ZMQ_PAIR);
  int hwm = 0, sndtimeo = 10000;
  zmq_setsockopt(h->pair, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(h->pair, ZMQ_RCVHWM, &hwm, sizeof hwm);
  /* A send never blocks the test for good if the shard is gone. */
  zmq_setsockopt(h->pair, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
  /* Bind before the shard connects (in fq_shard_new): after a restart the
   * previous socket's inproc name is released by ZeroMQ's reaper thread a
   * moment after zmq_close(), and a shard connecting meanwhile would be
   * attached to that closing socket and never to this one. */
  char ep[64];
  snprintf(ep, sizeof ep, "inproc://fq-shard-%u", so.index);
  int rc = -1;
  for (int i = 0; i < 200 && rc != 0; i++) {
    rc = zmq_bind(h->pair, ep);
    if (rc != 0 && zmq_errno() != EADDRINUSE) break;
    if (rc != 0) usleep(10000);
  }
  if (rc != 0) {
    fprintf(stderr, "  bind %s: %s\n", ep, zmq_strerror(zmq_errno()));
    return -1;
  }
  h->sh = fq_shard_new(&so, &err);
  if (!h->sh) {
    fprintf(stderr, "  shard: %s\n", err.msg);
    return -1;
  }
  if (strcmp(fq_shard_endpoint(h->sh), ep) != 0) {
    fprintf(stderr, "  shard endpoint %s, bound %s\n", fq_shard_endpoint(h->sh), ep);
    return -1;
  }
  if (fq_shard_start(h->sh) != 0) return -1;
  /* 'K' frames (keys held), then 'L'. */
  for (;;) {
    zmq_pollitem_t it = {h->pair, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 10000) <= 0) return -1;
    char kind = 0;
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, h->pair, 0);
    if (zmq_msg_size(&m) == 1) kind = *(char *)zmq_msg_data(&m);
    bool more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    while (more) {
      zmq_msg_init(&m);
      zmq_msg_recv(&m, h->pair, 0);
      more = zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
    if (kind == 'L') break;
  }
  /* One round trip, so that the batch the dispatcher's start-up kicks
   * cause (after a restart with queued commands) is behind us: holding a
   * batch (hold_start) needs an idle shard. */
  q_lookup(h, "get", NULL, "ffffffffffffffff", 998);
  for (;;) {
    if (recv_batch(h, h->b, 10000) != 0) return -1;
    if (rep_for(h->b, 998)) return 0;
  }
}

/* 'T', wait for 'D', join. */
static void sh_stop(sh_h_t *h) {
  if (h->sh && h->pair) {
    zmq_send(h->pair, "T", 1, 0);
    bool done = false;
    for (int i = 0; i < 100 && !done; i++) {
      zmq_pollitem_t it = {h->pair, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&it, 1, 10000) <= 0) break;
      zmq_msg_t m;
      zmq_msg_init(&m);
      zmq_msg_recv(&m, h->pair, 0);
      done = zmq_msg_size(&m) == 1 && *(char *)zmq_msg_data(&m) == 'D' && !zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
    CHECK(done);
  }
  fq_shard_destroy(&h->sh);
  if (h->pair) zmq_close(h->pair);
  h->pair = NULL;
  /* A new context for the next start: fq_shard_new() connects the shard's
   * socket to its inproc endpoint before the test binds it, and in the old
   * context that name may still belong to the socket just closed (ZeroMQ's
   * reaper releases it a moment later), so the new shard could attach to
   * the dying socket.  Terminating waits for the reaper. */
  if (h->ctx) {
    zmq_ctx_term(h->ctx);
    h->ctx = zmq_ctx_new();
  }
}

/* with_account: the dispatcher sends (to the test transport); else it
 * holds every command.  no_dispatch: no dispatcher at all (the shard's own
 * deadline handling alone; batches cannot be held). */
static int sh_open3(sh_h_t *h, bool with_account, uint64_t map_size, bool no_dispatch,
                    int64_t retention_ms, int64_t window_ms, bool check_accounts) {
  memset(h, 0, sizeof *h);
  h->retention_ms = retention_ms;
  h->window_ms = window_ms;
  h->check_accounts = check_accounts;
  snprintf(h->dir, sizeof h->dir, "/tmp/fq_shard_XXXXXX");
  if (!mkdtemp(h->dir)) return -1;
  h->map_size = map_size ? map_size : 64 << 20;
  h->b = malloc(sizeof *h->b);
  pthread_mutex_init(&h->net.mu, NULL);
  pthread_cond_init(&h->net.cv, NULL);
  h->ctx = zmq_ctx_new();
  if (!h->b || !h->ctx) return -1;
  fq_err_t err;
  if (with_account) {
    if (!(h->acc = fq_accounts_open(h->dir, &err))) return -1;
    fq_account_t *a = fq_account_new();
    if (!a) return -1;
    snprintf(a->id, sizeof a->id, "acct");
    snprintf(a->client_id, sizeof a->client_id, "client-1");
    snprintf(a->base_url, sizeof a->base_url, "%s", BASE);
    snprintf(a->access_token, sizeof a->access_token, "tok-not-a-secret");
    snprintf(a->refresh_token, sizeof a->refresh_token, "refresh-not-a-secret");
    a->access_exp = fq_now_ms() / 1000 + 86400;
    a->scopes = FQ_SCOPE_ENERGY_CMDS;
    int rc = fq_accounts_put(h->acc, a, &err);
    fq_account_free(&a);
    if (rc) return -1;
    /* No auth side (opts.auth NULL): the account generation stays 0, and
     * the account is written before the shard starts, so the dispatcher
     * reads it on first use. */
  }
  h->tr = (fq_dispatch_transport_t){
      .ud = &h->net, .request = net_request, .perform = net_perform, .inflight = net_inflight};
  /* Without an account nothing is dispatched: commands stay queued. */
  h->dopts = (fq_dispatch_opts_t){.accounts = h->acc, .transport = &h->tr};
  h->no_dispatch = no_dispatch;
  return sh_start(h);
}

static int sh_open2(sh_h_t *h, bool with_account, uint64_t map_size, bool no_dispatch) {
  return sh_open3(h, with_account, map_size, no_dispatch, 0, 0, false);
}

static int sh_open(sh_h_t *h, bool with_account, uint64_t map_size) {
  return sh_open2(h, with_account, map_size, false);
}

static void sh_close(sh_h_t *h) {
  sh_stop(h);
  CHECK_INT(h->tseq_gaps, 0); /* in every test: no published tseq skipped or repeated */
  if (h->ctx) zmq_ctx_term(h->ctx);
  fq_accounts_destroy(&h->acc);
  pthread_mutex_destroy(&h->net.mu);
  pthread_cond_destroy(&h->net.cv);
  free(h->b);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->dir);
  if (system(cmd) != 0) fprintf(stderr, "  cleanup of %s failed\n", h->dir);
}

/* Hold the shard inside a batch (started by a harmless lookup), so that
 * everything sent until hold_next() lands in one batch.  The held batch's
 * output is read by hold_next().  The shard must be idle (no batch of its
 * own due: no request in flight, no due timer), or that batch would be
 * the one held. */
static bool hold_start(sh_h_t *h) {
  unsigned holds = gate_arm(&h->net);
  q_lookup(h, "get", NULL, "ffffffffffffffff", 999);
  return gate_wait(&h->net, holds);
}

/* Let the held batch commit and hold the next one (everything queued
 * meanwhile); the released batch's output must arrive only now. */
static bool hold_next(sh_h_t *h) {
  bool early = !quiet(h, 50);
  unsigned holds = gate_arm(&h->net);
  gate_release(&h->net);
  if (!gate_wait(&h->net, holds)) return false;
  if (recv_batch(h, h->b, 10000) != 0) return false;
  return !early;
}

/* Let the held batch commit and read its output into b. */
static bool hold_end(sh_h_t *h, batch_t *b) {
  bool early = !quiet(h, 50);
  gate_release(&h->net);
  if (recv_batch(h, b, 10000) != 0) return false;
  return !early;
}

static void check_rep(const batch_t *b, int req, bool ok, const char *state_or_error, bool dup,
                      const char *id, int line) {
  const rep_t *r = rep_for(b, req);
  if (!r) {
    fprintf(stderr, "  line %d: no reply to request %d in the batch\n", line, req);
    fq_test_failures++;
    return;
  }
  const char *got = ok ? r->state : r->error;
  if (r->ok != ok || strcmp(got, state_or_error) != 0 || r->dup != dup ||
      (id && strcmp(r->id, id) != 0)) {
    fprintf(stderr,
            "  line %d: reply %d: ok %d %s dup %d id %s (%s); want ok %d %s dup %d id %s\n", line,
            req, r->ok, got, r->dup, r->id, r->message, ok, state_or_error, dup, id ? id : "*");
    fq_test_failures++;
  }
}
#define CHECK_REP(b, req, ok, what, dup, id) check_rep(b, req, ok, what, dup, id, __LINE__)

static int count_events(const batch_t *b, int state) {
  int n = 0;
  for (int i = 0; i < b->nev; i++) n += b->ev[i].state == state;
  return n;
}

/* --- tests -------------------------------------------------------------------- */

FQ_TEST(batch_is_one_transaction_acked_after_commit) {
  sh_h_t h;
  if (sh_open(&h, false, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  CHECK(hold_start(&h));
  for (int i = 0; i < 5; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    q_submit(&h, "acme", key, 100 + (uint64_t)(i % 2), 10 + i, false, i);
  }
  /* Held inside the batch of the lookup: nothing of the submits is
   * committed, and no reply has left. */
  CHECK_INT(committed_commands(&h), 0);
  CHECK(hold_next(&h)); /* the lookup's batch: its reply only after its commit */
  CHECK_INT(h.b->nrep, 1);
  CHECK_INT(h.b->nev, 0);
  CHECK_REP(h.b, 999, false, "not_found", false, NULL);
  /* Now held inside the batch of the five submits: applied, not
   * committed, not acked. */
  CHECK_INT(committed_commands(&h), 0);
  CHECK(hold_end(&h, b));
  /* One batch: all five acks and their events in one message, events
   * first; and all five committed by the time the acks arrive. */
  CHECK_INT(b->nrep, 5);
  CHECK_INT(b->nev, 5);
  CHECK(b->events_first);
  CHECK_INT(committed_commands(&h), 5);
  for (int i = 0; i < 5; i++) {
    CHECK_REP(b, i, true, "queued", false, NULL);
    const rep_t *r = rep_for(b, i);
    /* Ids in arrival order: the per-device FIFOs follow them. */
    if (r && i > 0 && rep_for(b, i - 1)) CHECK(strcmp(rep_for(b, i - 1)->id, r->id) < 0);
  }
  CHECK_INT(count_events(b, FQ_ST_QUEUED), 5);
  CHECK_INT(h.seq_gaps, 0);
  CHECK_INT(b->ev[0].seq, 1);
  free(b);
  sh_close(&h);
}

FQ_TEST(duplicates_in_one_batch_and_across_batches) {
  sh_h_t h;
  if (sh_open(&h, false, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  CHECK(hold_start(&h));
  q_submit(&h, "acme", "k1", 100, 50, false, 1);
  q_submit(&h, "acme", "k1", 100, 50, false, 2); /* same key, same request */
  q_submit(&h, "acme", "k1", 100, 60, false, 3); /* same key, another request */
  q_submit(&h, "acme", "k2", 100, 50, false, 4);
  q_submit(&h, "other", "k1", 100, 60, false, 5); /* keys are per tenant */
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_INT(b->nrep, 5);
  const rep_t *first = rep_for(b, 1);
  char id1[FQ_ID_LEN + 1] = "";
  if (first) snprintf(id1, sizeof id1, "%s", first->id);
  CHECK_REP(b, 1, true, "queued", false, NULL);
  CHECK_REP(b, 2, true, "queued", true, id1);
  CHECK_REP(b, 3, false, "idempotency_mismatch", false, NULL);
  const rep_t *r3 = rep_for(b, 3);
  CHECK(r3 && strstr(r3->message, id1) != NULL);
  CHECK_REP(b, 4, true, "queued", false, NULL);
  CHECK_REP(b, 5, true, "queued", false, NULL);
  const rep_t *r4 = rep_for(b, 4), *r5 = rep_for(b, 5);
  CHECK(r4 && r5 && strcmp(r4->id, id1) != 0 && strcmp(r5->id, id1) != 0 &&
        strcmp(r4->id, r5->id) != 0);
  /* Only the three new commands were stored. */
  CHECK_INT(b->nev, 3);
  CHECK_INT(committed_commands(&h), 3);

  /* A later batch: the same answers, with the command's current state. */
  CHECK(hold_start(&h));
  q_lookup(&h, "cancel", NULL, id1, 10);
  q_submit(&h, "acme", "k1", 100, 50, false, 11);
  q_submit(&h, "acme", "k1", 100, 70, false, 12);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 10, true, "cancelled", false, id1);
  CHECK_REP(b, 11, true, "cancelled", true, id1);
  CHECK_REP(b, 12, false, "idempotency_mismatch", false, NULL);
  CHECK_INT(b->nev, 1);
  CHECK_INT(committed_commands(&h), 3);

  /* And after a restart (the dedupe index is rebuilt from the store). */
  sh_stop(&h);
  if (sh_start(&h) != 0) {
    FQ__FAIL("restart");
    free(b);
    sh_close(&h);
    return;
  }
  CHECK(hold_start(&h));
  q_submit(&h, "acme", "k1", 100, 50, false, 20);
  q_submit(&h, "acme", "k1", 100, 80, false, 21);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 20, true, "cancelled", true, id1);
  CHECK_REP(b, 21, false, "idempotency_mismatch", false, NULL);
  CHECK_INT(b->nev, 0);
  CHECK_INT(h.seq_gaps, 0);
  free(b);
  sh_close(&h);
}

/* An account "id" in the harness's account store (added while the shard
 * runs, as the auth thread would). */
static int put_account(sh_h_t *h, const char *id) {
  fq_err_t err;
  fq_account_t *a = fq_account_new();
  if (!a) return -1;
  snprintf(a->id, sizeof a->id, "%s", id);
  snprintf(a->client_id, sizeof a->client_id, "client-1");
  snprintf(a->base_url, sizeof a->base_url, "%s", BASE);
  snprintf(a->access_token, sizeof a->access_token, "tok-not-a-secret");
  snprintf(a->refresh_token, sizeof a->refresh_token, "refresh-not-a-secret");
  int rc = fq_accounts_put(h->acc, a, &err);
  fq_account_free(&a);
  return rc;
}

/* Issue 13 (4): a submit naming an account fleetqd does not have is
 * refused at once with unknown_account, stores nothing and publishes
 * nothing, while the same batch's submits for a known account are queued;
 * a retry of an accepted key still gets its original; once the account is
 * added the very next submit for it is taken. */
FQ_TEST(unknown_account_is_refused_at_once) {
  sh_h_t h;
  if (sh_open3(&h, true, 0, false, 0, 0, true) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  CHECK(hold_start(&h));
  q_submit(&h, "acme", "known", 400, 10, false, 1);
  q_submit_as(&h, "acme", "nobody", "unknown", 400, 20, false, 2);
  q_submit_as(&h, "acme", "bad name with spaces", "odd", 400, 30, false, 3);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 1, true, "queued", false, NULL);
  CHECK_REP(b, 2, false, "unknown_account", false, NULL);
  CHECK_REP(b, 3, false, "unknown_account", false, NULL);
  const rep_t *r2 = rep_for(b, 2);
  if (r2) {
    CHECK(strstr(r2->message, "\"nobody\" is not registered") != NULL);
    CHECK(strstr(r2->message, "fleetq account add") != NULL);
  }
  /* Events: the known account's command only (its `queued`, and what
   * the dispatcher did with it in the same transaction). */
  CHECK_INT(count_events(b, FQ_ST_QUEUED), 1);
  for (int i = 0; i < b->nev; i++) CHECK_STR(b->ev[i].id, rep_for(b, 1) ? rep_for(b, 1)->id : "");

  /* Nothing was stored for the refused key; the accepted one dedupes. */
  CHECK(hold_start(&h));
  q_lookup(&h, "get", "acme", "unknown", 1);
  q_submit(&h, "acme", "known", 400, 10, false, 2);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 1, false, "not_found", false, NULL);
  CHECK_REP(b, 2, true, "sent", true, NULL); /* the dispatcher sent it meanwhile */

  /* Added a moment ago: seen by the next submit. */
  CHECK_INT(put_account(&h, "nobody"), 0);
  CHECK(hold_start(&h));
  q_submit_as(&h, "acme", "nobody", "unknown", 400, 20, false, 1);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 1, true, "queued", false, NULL);
  free(b);
  sh_close(&h);
}

/* Issue 13 (7): a request with more frames than the envelope limit (the
 * ingress refuses those first) is refused by the shard too, and none of
 * its frames is taken as the body: before, the shard kept 10 frames and
 * decoded the last one kept, an envelope frame.  At the limit the body is
 * the last frame, as always. */
FQ_TEST(too_many_frames_never_take_an_envelope_frame_as_body) {
  sh_h_t h;
  if (sh_open(&h, false, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  fq_buf_t hidden, body1, body2;
  fq_buf_init(&hidden, 1 << 16);
  fq_buf_init(&body1, 1 << 16);
  fq_buf_init(&body2, 1 << 16);
  build_submit(&hidden, "acme", "hidden", 500, 10, false, 0, 1);
  build_submit(&body1, "acme", "over", 500, 20, false, 0, 2);
  build_submit(&body2, "acme", "at-limit", 500, 30, false, 0, 3);
  CHECK(hold_start(&h));
  for (int over = 1; over >= 0; over--) {
    /* ['Q', routing id, envelope (the last frame of it a submit), body] */
    int nenv = FQ_WIRE_MAX_ENVELOPE + over;
    zmq_send(h.pair, "Q", 1, ZMQ_SNDMORE);
    zmq_send(h.pair, "peer", 4, ZMQ_SNDMORE);
    for (int i = 0; i < nenv - 1; i++) zmq_send(h.pair, "env", 3, ZMQ_SNDMORE);
    zmq_send(h.pair, hidden.data, hidden.len, ZMQ_SNDMORE);
    const fq_buf_t *bd = over ? &body1 : &body2;
    zmq_send(h.pair, bd->data, bd->len, 0);
  }
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_INT(b->nrep, 2);
  CHECK_REP(b, 3, true, "queued", false, NULL);
  if (rep_for(b, 3)) CHECK_INT(rep_for(b, 3)->nenv, 1 + FQ_WIRE_MAX_ENVELOPE);
  const rep_t *r = NULL;
  for (int i = 0; i < b->nrep; i++)
    if (b->rep[i].req != 3) r = &b->rep[i];
  CHECK(r != NULL);
  if (r) {
    CHECK(!r->ok);
    CHECK_STR(r->error, "bad_request");
    CHECK(strstr(r->message, "too many frames") != NULL);
    CHECK_INT(r->nenv, 1 + FQ_WIRE_MAX_ENVELOPE);
  }
  CHECK_INT(count_events(b, FQ_ST_QUEUED), 1);

  CHECK(hold_start(&h));
  q_lookup(&h, "get", "acme", "hidden", 1);
  q_lookup(&h, "get", "acme", "over", 2);
  q_lookup(&h, "get", "acme", "at-limit", 3);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 1, false, "not_found", false, NULL);
  CHECK_REP(b, 2, false, "not_found", false, NULL);
  CHECK_REP(b, 3, true, "queued", false, NULL);
  fq_buf_free(&hidden);
  fq_buf_free(&body1);
  fq_buf_free(&body2);
  free(b);
  sh_close(&h);
}

/* Issue 13 (5): `coalesce: true` supersedes only the same tenant's
 * commands for the same account: tenant beta's set-point for a site that
 * tenant acme also commands leaves acme's queued command alone, and so does
 * acme's own set-point sent through another account. */
FQ_TEST(coalesce_stays_within_tenant_and_account) {
  sh_h_t h;
  if (sh_open(&h, false, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  CHECK(hold_start(&h));
  q_submit(&h, "acme", "a1", 300, 10, false, 1);
  q_submit(&h, "beta", "b1", 300, 20, true, 2);            /* another tenant */
  q_submit_as(&h, "acme", "acct-2", "a2", 300, 30, true, 3); /* another account */
  q_submit(&h, "acme", "a3", 300, 40, true, 4);            /* supersedes a1 only */
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  for (int r = 1; r <= 4; r++) CHECK_REP(b, r, true, "queued", false, NULL);
  CHECK_INT(count_events(b, FQ_ST_SUPERSEDED), 1);
  CHECK_INT(count_events(b, FQ_ST_QUEUED), 4);

  CHECK(hold_start(&h));
  q_lookup(&h, "get", "acme", "a1", 1);
  q_lookup(&h, "get", "beta", "b1", 2);
  q_lookup(&h, "get", "acme", "a2", 3);
  q_lookup(&h, "get", "acme", "a3", 4);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 1, true, "superseded", false, NULL);
  CHECK_REP(b, 2, true, "queued", false, NULL);
  CHECK_REP(b, 3, true, "queued", false, NULL);
  CHECK_REP(b, 4, true, "queued", false, NULL);
  free(b);
  sh_close(&h);
}

FQ_TEST(cancel_and_coalesce_in_the_same_batch) {
  sh_h_t h;
  if (sh_open(&h, false, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  CHECK(hold_start(&h));
  q_submit(&h, "acme", "a", 100, 10, false, 1);
  q_lookup(&h, "cancel", "acme", "a", 2);        /* cancels what request 1 queued */
  q_lookup(&h, "get", "acme", "a", 3);
  q_lookup(&h, "cancel", "acme", "a", 4);        /* no longer queued */
  q_lookup(&h, "cancel", "acme", "nope", 5);
  q_submit(&h, "acme", "b", 100, 20, false, 6);
  q_submit(&h, "acme", "c", 100, 30, true, 7);   /* supersedes b (same device, same name) */
  q_submit(&h, "acme", "d", 200, 40, false, 8);  /* another device: untouched */
  q_submit(&h, "acme", "e", 100, 50, false, 9);  /* not coalescing: c stays */
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_INT(b->nrep, 9);
  const rep_t *ra = rep_for(b, 1);
  CHECK_REP(b, 1, true, "queued", false, NULL);
  CHECK_REP(b, 2, true, "cancelled", false, ra ? ra->id : NULL);
  CHECK_REP(b, 3, true, "cancelled", false, ra ? ra->id : NULL);
  CHECK_REP(b, 4, false, "not_cancellable", false, NULL);
  CHECK_REP(b, 5, false, "not_found", false, NULL);
  CHECK_REP(b, 6, true, "queued", false, NULL);
  CHECK_REP(b, 7, true, "queued", false, NULL);
  CHECK_REP(b, 8, true, "queued", false, NULL);
  /* Events, in the order things happened, seqs without a gap. */
  const int want[] = {FQ_ST_QUEUED, FQ_ST_CANCELLED, FQ_ST_QUEUED, FQ_ST_QUEUED,
                      FQ_ST_SUPERSEDED, FQ_ST_QUEUED, FQ_ST_QUEUED};
  CHECK_INT(b->nev, 7);
  for (int i = 0; i < 7 && i < b->nev; i++) {
    CHECK_STR(fq_state_name(b->ev[i].state), fq_state_name(want[i]));
    CHECK_INT(b->ev[i].seq, b->ev[0].seq + (uint64_t)i);
  }
  if (b->nev == 7 && rep_for(b, 6)) CHECK_STR(b->ev[4].id, rep_for(b, 6)->id);
  CHECK_INT(h.seq_gaps, 0);

  /* What the gets say after the commit. */
  CHECK(hold_start(&h));
  q_lookup(&h, "get", "acme", "b", 1);
  q_lookup(&h, "get", "acme", "c", 2);
  q_lookup(&h, "get", "acme", "d", 3);
  q_lookup(&h, "get", "acme", "e", 4);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 1, true, "superseded", false, NULL);
  CHECK_REP(b, 2, true, "queued", false, NULL);
  CHECK_REP(b, 3, true, "queued", false, NULL);
  CHECK_REP(b, 4, true, "queued", false, NULL);
  free(b);
  sh_close(&h);
}

FQ_TEST(event_seq_is_gap_free_across_batches_and_restarts) {
  sh_h_t h;
  if (sh_open(&h, false, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  int total = 0;
  for (int round = 0; round < 3; round++) {
    CHECK(hold_start(&h));
    for (int i = 0; i < 4; i++) {
      char key[32];
      snprintf(key, sizeof key, "r%d-%d", round, i);
      q_submit(&h, "acme", key, 100 + (uint64_t)i, 10 + i, false, i);
    }
    q_lookup(&h, "cancel", "acme", "r0-0", 9); /* one cancel in the first round */
    CHECK(hold_next(&h));
    CHECK(hold_end(&h, b));
    total += b->nev;
    if (round == 1) {
      sh_stop(&h);
      if (sh_start(&h) != 0) {
        FQ__FAIL("restart");
        break;
      }
    }
  }
  CHECK_INT(total, 13);
  CHECK_INT(h.last_seq, 13);
  CHECK_INT(h.seq_gaps, 0);
  /* history gives the same events with the same seqs. */
  CHECK(hold_start(&h));
  q_history(&h, 0, 1);
  q_history(&h, 10, 2);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  const rep_t *r = rep_for(b, 1);
  CHECK(r != NULL);
  if (r) {
    CHECK_INT(r->nevents, 13);
    for (int i = 0; i < r->nevents; i++) CHECK_INT(r->ev_seq[i], (uint64_t)i + 1);
  }
  r = rep_for(b, 2);
  CHECK(r && r->nevents == 3 && r->ev_seq[0] == 11);
  free(b);
  sh_close(&h);
}

/* The store's high-water mark (issue 13, defect 2): new commands are
 * stored while they fit under it with the reserve of every unfinished
 * command; the rest get storage_full, each with its req, and nothing of
 * them is stored.  Reads, cancels and duplicates keep working, and a
 * restart on the full store serves. */
FQ_TEST(full_store_refuses_new_commands_at_its_mark) {
  sh_h_t h;
  if (sh_open(&h, false, 1 << 20) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  CHECK(hold_start(&h));
  q_submit(&h, "acme", "before", 100, 10, false, 1);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 1, true, "queued", false, NULL);
  uint64_t seq = h.last_seq;

  enum { N = 2000 };
  CHECK(hold_start(&h));
  for (int i = 0; i < N; i++) {
    char key[128];
    snprintf(key, sizeof key, "%0120d", i); /* long keys fill the map sooner */
    q_submit(&h, "acme", key, 100 + (uint64_t)(i % 7), i % 100, false, 10 + i);
  }
  CHECK(hold_next(&h)); /* the lookup's batch */
  CHECK(hold_end(&h, b));
  /* Stored up to the mark, in order; then storage_full for the rest. */
  CHECK_INT(b->nrep, N);
  int stored = 0, full = 0;
  for (int i = 0; i < N; i++) {
    const rep_t *r = rep_for(b, 10 + i);
    if (!r) {
      FQ__FAIL("no reply with req %d", 10 + i);
      continue;
    }
    if (r->ok && strcmp(r->state, "queued") == 0 && full == 0) stored++;
    else if (!r->ok && strcmp(r->error, "storage_full") == 0) full++;
    if (!r->ok && strstr(r->message, "high-water mark") == NULL)
      FQ__FAIL("reply %d: %s", r->req, r->message);
  }
  CHECK_INT(stored + full, N);
  CHECK(stored > 100 && full > 100);
  CHECK_INT(b->nev, stored);
  CHECK_INT(committed_commands(&h), 1 + stored);
  if (b->nev) CHECK_INT(b->ev[0].seq, seq + 1);
  CHECK_INT(h.seq_gaps, 0);

  /* Full: reads, a duplicate, a cancel (its room is reserved) work; a new
   * command does not. */
  char k0[128], kf[128];
  snprintf(k0, sizeof k0, "%0120d", 0);
  snprintf(kf, sizeof kf, "%0120d", stored);
  CHECK(hold_start(&h));
  q_lookup(&h, "get", "acme", "before", 1);
  q_lookup(&h, "get", "acme", kf, 2);
  q_submit(&h, "acme", k0, 100, 0, false, 3);
  q_lookup(&h, "cancel", "acme", k0, 4);
  q_submit(&h, "acme", "new", 101, 5, false, 5);
  q_history(&h, 0, 6);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 1, true, "queued", false, NULL);
  CHECK_REP(b, 2, false, "not_found", false, NULL);
  CHECK_REP(b, 3, true, "queued", true, NULL);
  CHECK_REP(b, 4, true, "cancelled", false, NULL);
  CHECK_REP(b, 5, false, "storage_full", false, NULL);
  const rep_t *r = rep_for(b, 6);
  CHECK(r && r->ok && r->nevents == 64);
  CHECK_INT(b->nev, 1);

  /* A restart on the full store starts and serves. */
  sh_stop(&h);
  if (sh_start(&h) != 0) {
    FQ__FAIL("restart on a full store");
    free(b);
    sh_close(&h);
    return;
  }
  CHECK(hold_start(&h));
  q_lookup(&h, "get", "acme", k0, 1);
  q_submit(&h, "acme", "new", 101, 5, false, 2);
  q_lookup(&h, "cancel", "acme", "before", 3);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_REP(b, 1, true, "cancelled", false, NULL);
  CHECK_REP(b, 2, false, "storage_full", false, NULL);
  CHECK_REP(b, 3, true, "cancelled", false, NULL);
  CHECK_INT(h.seq_gaps, 0);
  free(b);
  sh_close(&h);
}

/* Past its growth mark the map grows between batches, up to max_store:
 * more commands fit than the first map holds, and the refusals come at the
 * mark of the largest map. */
FQ_TEST(full_map_grows_up_to_max_store) {
  sh_h_t h;
  memset(&h, 0, sizeof h);
  if (sh_open(&h, false, 1 << 20) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  /* The first map alone: how many fit. */
  sh_stop(&h);
  h.max_store = 4 << 20;
  if (sh_start(&h) != 0) {
    FQ__FAIL("restart");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  int stored = 0, full = 0, req = 10, first_full = 0, last_stored = -1;
  for (int round = 0; round < 24 && last_stored != 0; round++) {
    CHECK(hold_start(&h));
    for (int i = 0; i < 300; i++, req++) {
      char key[128];
      snprintf(key, sizeof key, "%0120d", req);
      q_submit(&h, "acme", key, 100 + (uint64_t)(req % 7), req % 100, false, req);
    }
    CHECK(hold_next(&h));
    CHECK(hold_end(&h, b));
    last_stored = 0;
    for (int i = 0; i < b->nrep; i++) {
      if (b->rep[i].ok) last_stored++;
      else if (strcmp(b->rep[i].error, "storage_full") == 0 && !full++) first_full = stored + last_stored;
    }
    stored += last_stored;
  }
  /* Refused first at the 1 MiB map's mark, then stored again until the
   * mark of 4 MiB: about four times as many. */
  CHECK(first_full > 200);
  CHECK(stored > first_full * 7 / 2);
  CHECK_INT(last_stored, 0);
  CHECK_INT(committed_commands(&h), stored);
  long used = committed_used(&h);
  CHECK(used > 1 << 20 && used < (4 << 20) / 10 * 9); /* the rest is the reserve */
  CHECK_INT(h.seq_gaps, 0);
  free(b);
  sh_close(&h);
}

/* Commands accepted up to the mark all reach their end: the reserve holds
 * their state changes and events.  Then room is back for new ones. */
FQ_TEST(accepted_commands_finish_when_the_store_is_full) {
  sh_h_t h;
  if (sh_open(&h, true, 1 << 20) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  int stored = 0, full = 0;
  CHECK(hold_start(&h));
  for (int i = 0; i < 1000; i++) {
    char key[128];
    snprintf(key, sizeof key, "%0120d", i);
    q_submit(&h, "acme", key, 1 + (uint64_t)(i % 8), i % 100, false, 10 + i);
  }
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  for (int i = 0; i < b->nrep; i++) {
    if (b->rep[i].ok) stored++;
    else if (strcmp(b->rep[i].error, "storage_full") == 0) full++;
  }
  CHECK(stored > 100 && full > 100);
  /* Fleet API answers every request, as they come (one per site at a
   * time): each answer is a state change and an event in the reserve. */
  int answered = 0, succeeded = 0;
  int64_t t_end = fq_now_ms() + 60000;
  while (succeeded < stored && fq_now_ms() < t_end) {
    pthread_mutex_lock(&h.net.mu);
    int n = h.net.nreqs;
    pthread_mutex_unlock(&h.net.mu);
    for (; answered < n; answered++)
      net_answer(&h.net, answered, 200, "{\"response\":{\"code\":201,\"message\":\"Updated\"}}");
    q_lookup(&h, "get", NULL, "ffffffffffffffff", 7); /* wake the shard */
    while (recv_batch(&h, b, 100) == 0) succeeded += count_events(b, FQ_ST_SUCCEEDED);
  }
  CHECK_INT(succeeded, stored);
  CHECK_INT(answered, stored);
  /* Their whole lives fit under the map, slack included. */
  CHECK(committed_used(&h) < (1 << 20) / 10 * 9);
  /* Their reserve is free again: new commands are stored. */
  q_submit(&h, "acme", "after", 1, 5, false, 8);
  rep_t r;
  CHECK(await_rep(&h, 8, &r, NULL));
  CHECK(r.ok && strcmp(r.state, "queued") == 0);
  CHECK_INT(h.seq_gaps, 0);
  free(b);
  sh_close(&h);
}

/* A transaction that cannot be written (another writer filled the map:
 * the shard's writes fail with MDB_MAP_FULL and then MDB_BAD_TXN) is
 * applied again read only: every request is answered with its req, reads
 * as usual, a new command and a cancel with storage_full; nothing is
 * published and no seq or tseq is used.  Once there is room the shard
 * writes again by itself, each tenant's tseq following its last one. */
FQ_TEST(unwritable_store_answers_reads_and_leaves_no_gap) {
  sh_h_t h;
  if (sh_open(&h, false, 1 << 20) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  CHECK(hold_start(&h));
  q_submit(&h, "acme", "a1", 100, 10, false, 1);
  q_submit(&h, "beta", "b1", 200, 10, false, 2);
  q_submit(&h, "acme", "a2", 100, 11, false, 3);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_INT(b->nev, 3);
  uint64_t seq = h.last_seq;

  pid_t pinner = 0;
  int pin = pin_snapshot(&h, &pinner);
  CHECK(pin >= 0);
  CHECK(junk_store(&h, false));
  CHECK(hold_start(&h));
  q_lookup(&h, "cancel", "acme", "a1", 1);
  q_lookup(&h, "get", "beta", "b1", 2);
  q_submit(&h, "beta", "b2", 200, 12, false, 3);
  q_submit(&h, "acme", "a2", 100, 11, false, 4); /* a duplicate */
  q_history_acl(&h, NO_ACL, "acme", 0, 100, 5);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_INT(b->nrep, 5);
  CHECK_INT(b->nev, 0);
  CHECK_REP(b, 1, false, "storage_full", false, NULL);
  CHECK_REP(b, 2, true, "queued", false, NULL);
  CHECK_REP(b, 3, false, "storage_full", false, NULL);
  CHECK_REP(b, 4, true, "queued", true, NULL);
  const rep_t *r = rep_for(b, 5);
  CHECK(r && r->ok && r->nevents == 2);
  CHECK_INT(committed_commands(&h), 3);
  CHECK(committed_used(&h) > (1 << 20) / 10 * 8);
  unpin_snapshot(pin, pinner);
  CHECK(junk_store(&h, true));
  /* Room again: within a second or so the shard tries to write again. */
  bool done = false;
  for (int i = 0; i < 40 && !done; i++) {
    q_lookup(&h, "cancel", "acme", "a1", 100 + i);
    rep_t x;
    CHECK(await_rep(&h, 100 + i, &x, NULL));
    if (x.ok) done = strcmp(x.state, "cancelled") == 0;
    else if (strcmp(x.error, "storage_full") != 0) FQ__FAIL("cancel: %s", x.error);
    if (!done) usleep(100000);
  }
  CHECK(done);
  q_submit(&h, "beta", "b2", 200, 12, false, 200);
  rep_t x;
  CHECK(await_rep(&h, 200, &x, NULL));
  CHECK(x.ok && strcmp(x.state, "queued") == 0);
  CHECK_INT(h.last_seq, seq + 2);
  CHECK_INT(h.seq_gaps, 0);
  CHECK_INT(tseq_last(&h, "acme"), 3);
  CHECK_INT(tseq_last(&h, "beta"), 2);
  free(b);
  sh_close(&h);
}

/* Mark command id as `sent` in the stopped shard's store, as a kill -9
 * during its request would leave it (another process, as fleetqd itself
 * is not running). */
static bool mark_sent(const sh_h_t *h, const char *id) {
  char path[128];
  snprintf(path, sizeof path, "%s/shard-0", h->dir);
  pid_t pid = fork();
  if (pid == 0) {
    fq_err_t err;
    fq_cmdrec_t rec;
    fq_store_t *st = fq_store_open(path, 0, h->map_size, &err);
    if (!st || fq_store_begin(st, true, &err) ||
        fq_store_cmd_get(st, id, FQ_ID_LEN, &rec, &err))
      _exit(1);
    rec.state = FQ_ST_SENT;
    rec.attempts = 1;
    if (fq_store_cmd_put(st, &rec, &err) || fq_store_commit(st, &err)) _exit(1);
    fq_store_destroy(&st);
    _exit(0);
  }
  int status = 0;
  return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

/* A start on a store too full to take the settlement of the commands that
 * were in flight serves anyway (get, history, storage_full for new ones)
 * and writes the settlement by itself once there is room, before any
 * dispatch: the command is re-queued as after any restart and sent again
 * (an idempotent set-point), nothing is taken for a lost attempt. */
FQ_TEST(start_on_a_full_store_serves_and_settles_later) {
  sh_h_t h;
  if (sh_open(&h, false, 1 << 20) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  rep_t r;
  q_submit(&h, "acme", "a1", 7, 10, false, 1);
  CHECK(await_rep(&h, 1, &r, NULL));
  char id[FQ_ID_LEN + 1];
  snprintf(id, sizeof id, "%s", r.id);
  sh_stop(&h);
  CHECK(mark_sent(&h, id));
  pid_t pinner = 0;
  int pin = pin_snapshot(&h, &pinner);
  CHECK(pin >= 0);
  CHECK(junk_store(&h, false));
  /* With the dispatcher this time: the command's device is kicked at
   * start, and its request must wait for the settlement. */
  fq_err_t err;
  h.acc = fq_accounts_open(h.dir, &err);
  fq_account_t *a = fq_account_new();
  CHECK(h.acc && a);
  if (a && h.acc) {
    snprintf(a->id, sizeof a->id, "acct");
    snprintf(a->client_id, sizeof a->client_id, "client-1");
    snprintf(a->base_url, sizeof a->base_url, "%s", BASE);
    snprintf(a->access_token, sizeof a->access_token, "tok-not-a-secret");
    snprintf(a->refresh_token, sizeof a->refresh_token, "refresh-not-a-secret");
    a->access_exp = fq_now_ms() / 1000 + 86400;
    a->scopes = FQ_SCOPE_ENERGY_CMDS;
    CHECK_INT(fq_accounts_put(h.acc, a, &err), 0);
  }
  fq_account_free(&a);
  h.dopts.accounts = h.acc;
  if (sh_start(&h) != 0) {
    FQ__FAIL("start on a full store");
    unpin_snapshot(pin, pinner);
    sh_close(&h);
    return;
  }
  q_lookup(&h, "get", "acme", "a1", 2);
  CHECK(await_rep(&h, 2, &r, NULL));
  CHECK(r.ok && strcmp(r.state, "sent") == 0);
  q_submit(&h, "acme", "a2", 7, 11, false, 3);
  CHECK(await_rep(&h, 3, &r, NULL));
  CHECK(!r.ok && strcmp(r.error, "storage_full") == 0);
  CHECK(quiet(&h, 300));
  pthread_mutex_lock(&h.net.mu);
  CHECK_INT(h.net.nreqs, 0); /* nothing sent before the settlement */
  pthread_mutex_unlock(&h.net.mu);
  unpin_snapshot(pin, pinner);
  CHECK(junk_store(&h, true));
  /* Within a second or two: the settlement, then the request. */
  CHECK(net_wait_reqs(&h.net, 1));
  q_lookup(&h, "get", "acme", "a1", 4);
  CHECK(await_rep(&h, 4, &r, NULL));
  CHECK(r.ok && strcmp(r.state, "sent") == 0);
  q_history(&h, 0, 5);
  CHECK(await_rep(&h, 5, &r, NULL));
  /* queued (submit), then queued (the settlement), dispatching, sent */
  CHECK_INT(r.nevents, 4);
  pthread_mutex_lock(&h.net.mu);
  CHECK_INT(h.net.nreqs, 1);
  pthread_mutex_unlock(&h.net.mu);
  CHECK_INT(h.seq_gaps, 0);
  sh_close(&h);
}

/* The device queues the shard keeps, as the dispatcher sees them: one
 * command per device in flight, each device's in submit order. */
FQ_TEST(per_device_order_across_batches) {
  sh_h_t h;
  if (sh_open(&h, true, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  CHECK(hold_start(&h));
  q_submit(&h, "acme", "a1", 1, 11, false, 1);
  q_submit(&h, "acme", "b1", 2, 21, false, 2);
  q_submit(&h, "acme", "a2", 1, 12, false, 3);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  CHECK_INT(b->nrep, 3);
  /* A later batch adds to the same device's tail. */
  q_submit(&h, "acme", "a3", 1, 13, false, 4);
  CHECK(recv_batch(&h, b, 10000) == 0);
  CHECK(net_wait_reqs(&h.net, 2));
  pthread_mutex_lock(&h.net.mu);
  int n = h.net.nreqs;
  bool a_first = strstr(h.net.reqs[0].url, "/energy_sites/1/") != NULL;
  pthread_mutex_unlock(&h.net.mu);
  CHECK_INT(n, 2);
  /* Answer device 1's requests one by one; each answer lets exactly the
   * next one of that device go. */
  const int want[3] = {11, 12, 13};
  int idx = a_first ? 0 : 1;
  for (int k = 0; k < 3; k++) {
    char body[64];
    snprintf(body, sizeof body, "{\"backup_reserve_percent\":%d}", want[k]);
    pthread_mutex_lock(&h.net.mu);
    CHECK(strstr(h.net.reqs[idx].url, BASE "/api/1/energy_sites/1/backup") != NULL);
    CHECK_STR(h.net.reqs[idx].body, body);
    pthread_mutex_unlock(&h.net.mu);
    net_answer(&h.net, idx, 200, "{\"response\":{\"code\":201,\"message\":\"Updated\"}}");
    /* Wake the shard: the answer is delivered in its next batch. */
    q_lookup(&h, "get", "acme", "a1", 50 + k);
    if (k < 2) {
      CHECK(net_wait_reqs(&h.net, 3 + k));
      idx = 2 + k;
    }
    while (recv_batch(&h, b, 200) == 0) {
    }
  }
  pthread_mutex_lock(&h.net.mu);
  CHECK_INT(h.net.nreqs, 4);
  pthread_mutex_unlock(&h.net.mu);
  CHECK_INT(h.seq_gaps, 0);
  free(b);
  sh_close(&h);
}

/* A queued command whose deadline passes ends expired by the shard's own
 * deadline index, in a batch of its own, with the next seq. */
FQ_TEST(queued_command_expires_at_its_deadline) {
  sh_h_t h;
  if (sh_open2(&h, false, 0, true) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  int64_t t0 = fq_now_ms();
  q_submit_ttl(&h, "acme", "short", 100, 10, false, 300, 1);
  q_submit_ttl(&h, "acme", "long", 100, 20, false, 600000, 2);
  int got = 0;
  while (got < 2 && recv_batch(&h, b, 5000) == 0) got += b->nrep;
  CHECK_INT(got, 2);
  CHECK_INT(recv_batch(&h, b, 5000), 0);
  int64_t waited = fq_now_ms() - t0;
  CHECK_INT(b->nrep, 0);
  CHECK_INT(b->nev, 1);
  if (b->nev == 1) {
    CHECK_STR(fq_state_name(b->ev[0].state), "expired");
    CHECK_STR(fq_state_name(b->ev[0].prev), "queued");
  }
  CHECK(waited >= 300);
  CHECK_INT(h.seq_gaps, 0);
  q_lookup(&h, "get", "acme", "long", 3);
  q_lookup(&h, "get", "acme", "short", 4);
  got = 0;
  rep_t r3 = {.req = -1}, r4 = {.req = -1};
  while (got < 2 && recv_batch(&h, b, 5000) == 0) {
    for (int i = 0; i < b->nrep; i++) {
      if (b->rep[i].req == 3) r3 = b->rep[i];
      if (b->rep[i].req == 4) r4 = b->rep[i];
    }
    got += b->nrep;
  }
  CHECK_STR(r3.state, "queued");
  CHECK_STR(r4.state, "expired");
  free(b);
  sh_close(&h);
}

/* --- tseq: the per-tenant event sequence --------------------------------------- */

/* Each tenant's events are numbered 1, 2, 3... within the shard, whatever
 * other tenants' events come between, across batches and restarts (the
 * harness checks every published event: tseq_check), and history by
 * tenant returns them in tseq order, paging by tseq. */
FQ_TEST(tseq_per_tenant_gap_free_across_batches_and_restarts) {
  sh_h_t h;
  if (sh_open(&h, false, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  batch_t *b = malloc(sizeof *b);
  for (int round = 0; round < 3; round++) {
    CHECK(hold_start(&h));
    char key[32];
    for (int i = 0; i < 2; i++) {
      snprintf(key, sizeof key, "a%d-%d", round, i);
      q_submit(&h, "acme", key, 100 + (uint64_t)i, 10 + i, false, 10 * i + 1);
      snprintf(key, sizeof key, "b%d-%d", round, i);
      q_submit(&h, i ? "gamma" : "beta", key, 200, 10 + i, false, 10 * i + 2);
    }
    if (round == 0) q_lookup(&h, "cancel", "acme", "a0-0", 9);
    CHECK(hold_next(&h));
    CHECK(hold_end(&h, b));
    CHECK_INT(b->nev, round == 0 ? 5 : 4);
    /* Within the batch, interleaved tenants: each one's own run. */
    if (round == 0 && b->nev == 5) {
      CHECK_STR(b->ev[0].tenant, "acme");
      CHECK_INT(b->ev[0].tseq, 1);
      CHECK_STR(b->ev[1].tenant, "beta");
      CHECK_INT(b->ev[1].tseq, 1);
      CHECK_INT(b->ev[2].tseq, 2); /* acme */
      CHECK_INT(b->ev[3].tseq, 1); /* gamma */
      CHECK_INT(b->ev[4].tseq, 3); /* acme's cancel */
    }
    if (round == 1) {
      sh_stop(&h);
      if (sh_start(&h) != 0) {
        FQ__FAIL("restart");
        break;
      }
    }
  }
  CHECK_INT(tseq_last(&h, "acme"), 7);
  CHECK_INT(tseq_last(&h, "beta"), 3);
  CHECK_INT(tseq_last(&h, "gamma"), 3);
  CHECK_INT(h.last_seq, 13);
  CHECK_INT(h.seq_gaps, 0);
  CHECK_INT(h.tseq_gaps, 0);

  /* history by tenant: that tenant's events only, tseq 1..n, seqs rising. */
  CHECK(hold_start(&h));
  q_history_acl(&h, NO_ACL, "acme", 0, 1000, 1);
  q_history_acl(&h, NO_ACL, "acme", 3, 2, 2);
  q_history_acl(&h, NO_ACL, "acme", 7, 100, 3);
  q_history_acl(&h, NO_ACL, "beta", 0, 100, 4);
  q_history_acl(&h, NO_ACL, "zeta", 5, 100, 5);
  q_history_acl(&h, NO_ACL, NULL, 0, 1000, 6);
  CHECK(hold_next(&h));
  CHECK(hold_end(&h, b));
  const rep_t *r = rep_for(b, 1);
  CHECK(r && r->ok && r->nevents == 7 && r->next == 7);
  for (int i = 0; r && i < r->nevents; i++) {
    CHECK_STR(r->ev_tenant[i], "acme");
    CHECK_INT(r->ev_tseq[i], (uint64_t)i + 1);
    if (i) CHECK(r->ev_seq[i] > r->ev_seq[i - 1]);
  }
  r = rep_for(b, 2); /* a page: tseq 4 and 5, continue after 5 */
  CHECK(r && r->nevents == 2 && r->ev_tseq[0] == 4 && r->ev_tseq[1] == 5 && r->next == 5);
  r = rep_for(b, 3); /* caught up: nothing, next = after */
  CHECK(r && r->ok && r->nevents == 0 && r->next == 7);
  r = rep_for(b, 4);
  CHECK(r && r->nevents == 3 && r->ev_tseq[2] == 3 && strcmp(r->ev_tenant[2], "beta") == 0);
  r = rep_for(b, 5); /* a tenant without events */
  CHECK(r && r->ok && r->nevents == 0 && r->next == 5);
  /* Without tenant: seq order, every event carrying its tseq. */
  r = rep_for(b, 6);
  CHECK(r && r->nevents == 13 && r->next == 13);
  uint64_t per[3] = {0, 0, 0};
  for (int i = 0; r && i < r->nevents; i++) {
    int t = strcmp(r->ev_tenant[i], "acme") == 0 ? 0 : strcmp(r->ev_tenant[i], "beta") == 0 ? 1 : 2;
    CHECK_INT(r->ev_seq[i], (uint64_t)i + 1);
    CHECK_INT(r->ev_tseq[i], ++per[t]);
  }
  free(b);
  sh_close(&h);
}

/* --- tenant restriction (ACL in the kind frame) ---------------------------------- */

/* get / cancel of another tenant's command answer exactly as for a
 * command that does not exist, and cancel changes nothing. */
FQ_TEST(acl_get_cancel_of_another_tenant_is_not_found) {
  sh_h_t h;
  if (sh_open(&h, false, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  rep_t r;
  int nev = 0;
  char aid[FQ_ID_LEN + 1] = "", bid[FQ_ID_LEN + 1] = "", want[128];
  q_submit(&h, "acme", "a1", 100, 10, false, 1);
  CHECK(await_rep(&h, 1, &r, NULL));
  snprintf(aid, sizeof aid, "%s", r.id);
  q_submit(&h, "beta", "b1", 200, 10, false, 2);
  CHECK(await_rep(&h, 2, &r, NULL));
  snprintf(bid, sizeof bid, "%s", r.id);
  CHECK_INT(strlen(bid), FQ_ID_LEN);

  /* An id that was never given out, as a reference. */
  const char *none = "00000000000000ff";
  q_lookup_acl(&h, ACL("acme\0"), "get", NULL, none, 3);
  CHECK(await_rep(&h, 3, &r, NULL));
  CHECK(!r.ok);
  CHECK_STR(r.error, "not_found");
  snprintf(want, sizeof want, "no command with id \"%s\"", none);
  CHECK_STR(r.message, want);
  rep_t ref = r;

  /* beta's command, asked for by a client limited to acme. */
  snprintf(want, sizeof want, "no command with id \"%s\"", bid);
  q_lookup_acl(&h, ACL("acme\0"), "get", NULL, bid, 4);
  CHECK(await_rep(&h, 4, &r, NULL));
  CHECK(!r.ok && !r.dup);
  CHECK_STR(r.error, ref.error);
  CHECK_STR(r.message, want);
  CHECK_STR(r.state, ref.state); /* no state, no id: nothing more than for `none` */
  CHECK_STR(r.id, ref.id);
  q_lookup_acl(&h, ACL("acme\0"), "cancel", NULL, bid, 5);
  CHECK(await_rep(&h, 5, &r, &nev));
  CHECK_STR(r.error, "not_found");
  CHECK_STR(r.message, want);
  CHECK_INT(nev, 0);
  /* By tenant + key: not_found as for an unknown key, nothing cancelled. */
  q_lookup_acl(&h, ACL("acme\0"), "get", "beta", "b1", 6);
  CHECK(await_rep(&h, 6, &r, NULL));
  CHECK_STR(r.error, "not_found");
  CHECK_STR(r.message, "no command with tenant \"beta\" and key \"b1\"");
  q_lookup_acl(&h, ACL("acme\0"), "cancel", "beta", "b1", 7);
  CHECK(await_rep(&h, 7, &r, &nev));
  CHECK_STR(r.error, "not_found");
  CHECK_INT(nev, 0);
  /* beta's command is untouched. */
  q_lookup(&h, "get", NULL, bid, 8);
  CHECK(await_rep(&h, 8, &r, NULL));
  CHECK(r.ok);
  CHECK_STR(r.state, "queued");

  /* The client's own tenant, a list holding both, and "*": found. */
  q_lookup_acl(&h, ACL("acme\0"), "get", NULL, aid, 9);
  CHECK(await_rep(&h, 9, &r, NULL));
  CHECK(r.ok && strcmp(r.id, aid) == 0);
  q_lookup_acl(&h, ACL("acme\0beta\0"), "get", NULL, bid, 10);
  CHECK(await_rep(&h, 10, &r, NULL));
  CHECK(r.ok && strcmp(r.id, bid) == 0);
  q_lookup_acl(&h, ACL("*\0"), "get", "beta", "b1", 11);
  CHECK(await_rep(&h, 11, &r, NULL));
  CHECK(r.ok && strcmp(r.id, bid) == 0);
  /* A name that is only a prefix of the tenant does not match. */
  q_lookup_acl(&h, ACL("bet\0"), "get", NULL, bid, 12);
  CHECK(await_rep(&h, 12, &r, NULL));
  CHECK_STR(r.error, "not_found");
  /* A malformed list (no final \0, an empty name) allows nothing. */
  q_lookup_acl(&h, ACL("acme"), "get", NULL, aid, 13);
  CHECK(await_rep(&h, 13, &r, NULL));
  CHECK_STR(r.error, "not_found");
  q_lookup_acl(&h, ACL("\0acme\0"), "get", NULL, aid, 14);
  CHECK(await_rep(&h, 14, &r, NULL));
  CHECK_STR(r.error, "not_found");

  /* A restricted cancel of its own tenant's command works. */
  q_lookup_acl(&h, ACL("beta\0"), "cancel", NULL, bid, 15);
  CHECK(await_rep(&h, 15, &r, &nev));
  CHECK(r.ok);
  CHECK_STR(r.state, "cancelled");
  CHECK_INT(nev, 1);
  /* A submit for a tenant outside the list: forbidden, nothing stored. */
  q_submit_acl(&h, ACL("acme\0"), "beta", "b2", 200, 16);
  CHECK(await_rep(&h, 16, &r, &nev));
  CHECK(!r.ok);
  CHECK_STR(r.error, "forbidden");
  CHECK_INT(nev, 0);
  q_lookup(&h, "get", "beta", "b2", 17);
  CHECK(await_rep(&h, 17, &r, NULL));
  CHECK_STR(r.error, "not_found");
  q_submit_acl(&h, ACL("acme\0"), "acme", "a2", 100, 18);
  CHECK(await_rep(&h, 18, &r, &nev));
  CHECK(r.ok);
  CHECK_INT(nev, 1);
  sh_close(&h);
}

/* history of a restricted client: only its tenants' events; `next` moves
 * on through pages of other tenants' events (each request examines at most
 * 50 per event asked for); history of a tenant outside the list is
 * forbidden. */
FQ_TEST(acl_history_filters_and_pages) {
  sh_h_t h;
  if (sh_open(&h, false, 0) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  rep_t r;
  /* seq 1: acme; 2..121: beta; 122: acme. */
  q_submit(&h, "acme", "a0", 100, 10, false, 1);
  CHECK(await_rep(&h, 1, &r, NULL));
  for (int i = 0; i < 120; i++) {
    char key[16];
    snprintf(key, sizeof key, "b%d", i);
    q_submit(&h, "beta", key, 200 + (uint64_t)(i % 5), 10, false, 100 + i);
  }
  CHECK(await_rep(&h, 219, &r, NULL));
  q_submit(&h, "acme", "a1", 100, 11, false, 2);
  CHECK(await_rep(&h, 2, &r, NULL));
  CHECK_INT(h.last_seq, 122);

  struct {
    uint64_t after;
    uint32_t limit;
    int nevents;
    uint64_t first_seq, next;
  } pages[] = {
      {0, 1, 1, 1, 1},       /* acme's first event */
      {1, 1, 0, 0, 51},      /* 50 of beta's examined, none returned */
      {51, 1, 0, 0, 101},
      {101, 1, 1, 122, 122}, /* beta's last 20, then acme's second */
      {122, 1, 0, 0, 122},   /* caught up: nothing examined, next = after */
      {0, 2, 1, 1, 100},     /* 100 examined for two asked */
      {0, 1000, 2, 1, 122},  /* the whole log fits the bound */
  };
  for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
    q_history_acl(&h, ACL("acme\0"), NULL, pages[i].after, pages[i].limit, 300 + (int)i);
    CHECK(await_rep(&h, 300 + (int)i, &r, NULL));
    if (!r.ok || r.nevents != pages[i].nevents || r.next != pages[i].next ||
        (r.nevents && r.ev_seq[0] != pages[i].first_seq)) {
      fprintf(stderr, "  page %zu: ok %d, %d events (first seq %llu), next %llu\n", i, r.ok,
              r.nevents, (unsigned long long)(r.nevents ? r.ev_seq[0] : 0),
              (unsigned long long)r.next);
      fq_test_failures++;
    }
    for (int j = 0; j < r.nevents; j++) CHECK_STR(r.ev_tenant[j], "acme");
  }
  if (r.nevents == 2) CHECK(r.ev_tseq[0] == 1 && r.ev_tseq[1] == 2);
  /* Both tenants listed: everything, as unrestricted. */
  q_history_acl(&h, ACL("beta\0acme\0"), NULL, 100, 1000, 400);
  CHECK(await_rep(&h, 400, &r, NULL));
  CHECK(r.nevents == 22 && r.ev_seq[0] == 101 && r.next == 122);
  q_history_acl(&h, NO_ACL, NULL, 0, 10, 401);
  CHECK(await_rep(&h, 401, &r, NULL));
  CHECK(r.nevents == 10 && r.next == 10 && strcmp(r.ev_tenant[1], "beta") == 0);
  /* By tenant: the client's own works, another's is forbidden. */
  q_history_acl(&h, ACL("acme\0"), "acme", 0, 10, 402);
  CHECK(await_rep(&h, 402, &r, NULL));
  CHECK(r.ok && r.nevents == 2 && r.ev_tseq[1] == 2 && r.ev_seq[1] == 122 && r.next == 2);
  q_history_acl(&h, ACL("acme\0"), "beta", 0, 10, 403);
  CHECK(await_rep(&h, 403, &r, NULL));
  CHECK(!r.ok);
  CHECK_STR(r.error, "forbidden");
  CHECK(strstr(r.message, "beta") != NULL);
  sh_close(&h);
}

/* Retention through the shard's loop: with no request arriving, old
 * terminal commands and events go and expired keys are freed; get of a
 * pruned command is not_found, history says where it begins, the same key
 * makes a new command; seq and tseq go on gap-free across a restart. */
FQ_TEST(retention_prunes_while_idle_and_frees_keys) {
  sh_h_t h;
  if (sh_open3(&h, false, 0, true, 1200, 800, false) != 0) {
    FQ__FAIL("harness");
    sh_close(&h);
    return;
  }
  rep_t r;
  char id1[FQ_ID_LEN + 1], id2[FQ_ID_LEN + 1], id3[FQ_ID_LEN + 1];
  /* seq 1..3: queued k1 k2 k3; 4, 5: k1 and k2 cancelled. */
  q_submit(&h, "acme", "k1", 1, 10, false, 1);
  CHECK(await_rep(&h, 1, &r, NULL));
  snprintf(id1, sizeof id1, "%s", r.id);
  q_submit(&h, "acme", "k2", 2, 10, false, 2);
  CHECK(await_rep(&h, 2, &r, NULL));
  snprintf(id2, sizeof id2, "%s", r.id);
  q_submit(&h, "acme", "k3", 3, 10, false, 3);
  CHECK(await_rep(&h, 3, &r, NULL));
  snprintf(id3, sizeof id3, "%s", r.id);
  q_lookup(&h, "cancel", "acme", "k1", 4);
  CHECK(await_rep(&h, 4, &r, NULL));
  CHECK_STR(r.state, "cancelled");
  q_lookup(&h, "cancel", "acme", "k2", 5);
  CHECK(await_rep(&h, 5, &r, NULL));
  /* Within the window the key dedupes. */
  q_submit(&h, "acme", "k1", 1, 10, false, 6);
  CHECK(await_rep(&h, 6, &r, NULL));
  CHECK(r.ok && r.dup);
  CHECK_STR(r.id, id1);
  q_history(&h, 0, 7);
  CHECK(await_rep(&h, 7, &r, NULL));
  CHECK_INT(r.nevents, 5);
  CHECK_INT(r.first, 1);
  CHECK_INT(h.last_seq, 5);

  /* Idle past the retention: the shard prunes on its own. */
  usleep(1800 * 1000);
  q_lookup(&h, "get", NULL, id1, 8);
  CHECK(await_rep(&h, 8, &r, NULL));
  CHECK(!r.ok);
  CHECK_STR(r.error, "not_found");
  q_lookup(&h, "get", NULL, id3, 9); /* still queued: kept */
  CHECK(await_rep(&h, 9, &r, NULL));
  CHECK(r.ok);
  CHECK_STR(r.state, "queued");
  q_lookup(&h, "get", NULL, id2, 10); /* its end is the log's last event: kept */
  CHECK(await_rep(&h, 10, &r, NULL));
  CHECK(r.ok);
  CHECK_STR(r.state, "cancelled");
  /* History begins at the last event; an `after` below it is no error. */
  q_history(&h, 0, 11);
  CHECK(await_rep(&h, 11, &r, NULL));
  CHECK(r.ok);
  CHECK_INT(r.first, 5);
  CHECK_INT(r.nevents, 1);
  CHECK_INT(r.ev_seq[0], 5);
  CHECK_INT(r.next, 5);
  q_history_acl(&h, NO_ACL, "acme", 1, 100, 12);
  CHECK(await_rep(&h, 12, &r, NULL));
  CHECK(r.ok);
  CHECK_INT(r.first, 5);
  CHECK_INT(r.nevents, 1);
  CHECK_INT(r.ev_tseq[0], 5);
  /* Past the window the same key and content make a new command, also
   * for a command still queued; a lookup by the key finds nothing. */
  q_lookup(&h, "get", "acme", "k3", 13);
  CHECK(await_rep(&h, 13, &r, NULL));
  CHECK_STR(r.error, "not_found");
  q_submit(&h, "acme", "k1", 1, 10, false, 14);
  CHECK(await_rep(&h, 14, &r, NULL));
  CHECK(r.ok && !r.dup);
  CHECK(strcmp(r.id, id1) != 0);
  char id1b[FQ_ID_LEN + 1];
  snprintf(id1b, sizeof id1b, "%s", r.id);
  q_submit(&h, "acme", "k3", 3, 10, false, 15);
  CHECK(await_rep(&h, 15, &r, NULL));
  CHECK(r.ok && !r.dup);
  CHECK(strcmp(r.id, id3) != 0);
  CHECK_INT(h.last_seq, 7);
  /* The ingress was told the three keys left (as of the 7 requests
   * received before the step that dropped them, or more). */
  CHECK_INT(h.gone, 3);
  CHECK(h.gone_upto >= 7);

  /* A restart: seq and tseq go on (the harness checks every published
   * event follows the last one), and the new key still dedupes. */
  sh_stop(&h);
  CHECK_INT(sh_start(&h), 0);
  q_submit(&h, "acme", "k1", 1, 10, false, 16);
  CHECK(await_rep(&h, 16, &r, NULL));
  CHECK(r.ok && r.dup);
  CHECK_STR(r.id, id1b);
  q_submit(&h, "acme", "k4", 4, 10, false, 17);
  CHECK(await_rep(&h, 17, &r, NULL));
  CHECK(r.ok && !r.dup);
  CHECK_INT(h.last_seq, 8);
  CHECK_INT(tseq_last(&h, "acme"), 8);
  CHECK_INT(h.seq_gaps, 0);
  sh_close(&h);
}
