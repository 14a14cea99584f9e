/*
 * fleetq-replay run: play a traffic file against a fleetqd on this host.
 *
 * Open loop: every request has an intended send time (its offset in the
 * file scaled by --speed, or i / --rate), it is sent then whatever
 * happened to earlier requests, and its latency is counted from that
 * intended time, so a server that stalls cannot hide the stall by slowing
 * the sender down (coordinated omission).  Requests are spread round-robin
 * over --conns DEALER connections, one thread each; a subscriber thread
 * timestamps the status events of the commands sent, for the end-to-end
 * latency.  --max-inflight switches to closed loop (fill a daemon as fast
 * as it goes; latency then counts from the actual send).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cliopt.h"
#include "fleetq/client.h"
#include "fleetq/wire.h"
#include "hmap.h"
#include "replay.h"
#include "traffic.h"
#include "util.h"

#define RUN_MAX_CONNS 64
#define RUN_DEFAULT_MAX_S 600.0
#define RUN_MAX_S 86400.0
#define RUN_MAX_TENANT_PREFIXES 32

/* Reply outcome per record (status[]). */
enum { ST_NONE = 0, ST_OK = 1, ST_DUP = 2, ST_SEND_FAILED = 3, ST_BAD_REPLY = 4, ST_ERR0 = 16 };
/* Error codes are stored as ST_ERR0 + (code - FQ_ERROR_BASE_); a reply
 * whose code this build does not know is ST_ERR_UNKNOWN. */
#define ST_ERR_UNKNOWN 255

typedef struct run_opts {
  const char *file, *endpoint, *publish, *key_prefix;
  const char *curve_key, *server_key; /* both or neither, after parsing */
  double rate, speed, duration, drain;
  int conns;
  uint64_t max_inflight;
  bool json, duration_set;
} run_opts_t;

typedef struct run {
  run_opts_t o;
  fq_curve_creds_t curve; /* loaded once, applied to every DEALER */
  fq_traffic_t *t;
  size_t n;
  size_t n_sched;         /* records whose intended time is within the duration */
  int64_t *due;           /* intended send time, ns after start */
  int64_t *ack_lat;       /* ns, -1 while no reply */
  int64_t *sent_at;       /* actual send time (monotonic ns) */
  _Atomic int64_t *ev_q;  /* arrival of the `queued` event (monotonic ns), 0 none */
  _Atomic int64_t *ev_t;  /* arrival of the first terminal event */
  uint8_t *status;
  uint8_t *primary;       /* 1: first record with its tenant + key */
  fq_hmap_t table;        /* uint32_t index of the first record, by tenant + key */
  fq_str_t *tk;           /* tenant and key of record i at 2i, 2i+1 */
  int64_t start_ns;       /* monotonic time of intended offset 0 */
  int64_t start_unix_ns;  /* the same moment on the wall clock */
  _Atomic uint64_t sent, replies, errors, send_done_threads, events, events_ours;
  _Atomic uint64_t dispatch_seen, seq_gaps;
  _Atomic int stop_send, stop_events;
  int64_t last_reply_ns, last_send_ns;
  pthread_mutex_t mu;
} run_t;

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig) {
  (void)sig;
  g_interrupted = g_interrupted + 1; /* a second Ctrl-C skips the drain */
}

/* ------------------------------------------------------------------ */
/* tenant + key -> record                                               */

/* The record's tenant and key, decoded once by build_table (they point
 * into the mapped file). */
static void rec_tk(const run_t *r, size_t i, fq_str_t *tenant, fq_str_t *key) {
  *tenant = r->tk[2 * i];
  *key = r->tk[2 * i + 1];
}

/* A tenant + key as a table lookup compares it. */
typedef struct tk_key {
  const run_t *r;
  const char *t, *k;
  size_t tn, kn;
} tk_key_t;

static bool tk_eq(const void *item, const void *key) {
  const tk_key_t *q = key;
  fq_str_t tt, kk;
  rec_tk(q->r, *(const uint32_t *)item, &tt, &kk);
  return tt.n == q->tn && kk.n == q->kn && !memcmp(tt.p, q->t, q->tn) && !memcmp(kk.p, q->k, q->kn);
}

static long find_tk(const run_t *r, const char *t, size_t tn, const char *k, size_t kn) {
  tk_key_t q = {r, t, k, tn, kn};
  const uint32_t *i = fq_hmap_find(&r->table, fq_hash64_pair(t, tn, k, kn), tk_eq, &q);
  return i ? (long)*i : -1;
}

/* Index of the first record with this tenant + key, or -1.  The key of an
 * event carries the --key-prefix the replay added. */
static long lookup(const run_t *r, const char *t, size_t tn, const char *k, size_t kn) {
  size_t pl = r->o.key_prefix ? strlen(r->o.key_prefix) : 0;
  if (pl) {
    if (kn < pl || memcmp(k, r->o.key_prefix, pl) != 0) return -1;
    k += pl;
    kn -= pl;
  }
  return find_tk(r, t, tn, k, kn);
}

static int build_table(run_t *r) {
  fq_hmap_init(&r->table, sizeof(uint32_t), 50);
  r->tk = calloc(2 * r->n + 2, sizeof *r->tk);
  if (!r->tk || fq_hmap_reserve(&r->table, r->n) != 0) return -ENOMEM;
  for (size_t i = 0; i < r->n; i++) {
    /* The file was validated at open: this decode cannot fail. */
    fq_request_t q;
    const fq_traffic_rec_t *rec = fq_traffic_rec(r->t, i);
    fq_wire_decode_request(rec->body, rec->len, &q, NULL);
    r->tk[2 * i] = q.tenant;
    r->tk[2 * i + 1] = q.key;
  }
  for (size_t i = 0; i < r->n; i++) {
    fq_str_t t, k;
    rec_tk(r, i, &t, &k);
    if (find_tk(r, t.p, t.n, k.p, k.n) >= 0) continue;
    /* Reserved for every record above: cannot fail. */
    *(uint32_t *)fq_hmap_add(&r->table, fq_hash64_pair(t.p, t.n, k.p, k.n)) = (uint32_t)i;
    r->primary[i] = 1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* request bodies                                                       */

/* The body of record i as sent: the recorded bytes plus `req` = i, or,
 * with --key-prefix, the request re-encoded with the prefixed key. */
static int make_body(const run_t *r, size_t i, fq_buf_t *out) {
  const fq_traffic_rec_t *rec = fq_traffic_rec(r->t, i);
  fq_buf_reset(out);
  if (!r->o.key_prefix) return fq_traffic_with_req(rec->body, rec->len, (int64_t)i, out);
  fq_request_t q;
  fq_wire_decode_request(rec->body, rec->len, &q, NULL);
  char tenant[80], key[300], account[160], vin[24], command[80];
  snprintf(tenant, sizeof tenant, "%.*s", (int)q.tenant.n, q.tenant.p);
  snprintf(key, sizeof key, "%s%.*s", r->o.key_prefix, (int)q.key.n, q.key.p);
  snprintf(account, sizeof account, "%.*s", (int)q.account.n, q.account.p);
  snprintf(vin, sizeof vin, "%.*s", (int)q.vin.n, q.vin.p);
  snprintf(command, sizeof command, "%.*s", (int)q.command.n, q.command.p);
  fq_submit_args_t a = {.tenant = tenant, .key = key, .account = account,
                        .vin = q.vin.p ? vin : NULL, .site = q.site, .command = command,
                        .params = q.params, .nparams = q.nparams, .ttl_ms = q.ttl_ms,
                        .coalesce = q.coalesce, .has_req = true, .req = (int64_t)i};
  return fq_req_submit(out, &a);
}

/* ------------------------------------------------------------------ */
/* sender threads                                                       */

typedef struct conn {
  run_t *r;
  int id;
  void *ctx;
  int rc;
} conn_t;

/* Read one reply: its `req` (record index), ok, dup and error code. */
static bool take_reply(run_t *r, const uint8_t *p, size_t n, int64_t now) {
  fq_msg_t m;
  bool taken = false;
  if (fq_msg_decode(&m, p, n, NULL)) return false;
  int64_t idx = -1;
  bool ok = false, dup = false;
  if (fq_mp_int(fq_mp_get(m.root, "req"), &idx) && idx >= 0 && (size_t)idx < r->n &&
      r->status[idx] == ST_NONE && r->sent_at[idx]) {
    uint8_t st = ST_BAD_REPLY;
    if (fq_mp_bool(fq_mp_get(m.root, "ok"), &ok) && ok) {
      fq_mp_bool(fq_mp_get(m.root, "dup"), &dup);
      st = dup ? ST_DUP : ST_OK;
    } else {
      const char *code;
      size_t cn;
      st = ST_ERR_UNKNOWN;
      if (fq_mp_str(fq_mp_get(m.root, "error"), &code, &cn) && cn < 64) {
        char z[64];
        memcpy(z, code, cn);
        z[cn] = 0;
        int c = fq_errcode(z);
        if (c) st = (uint8_t)(ST_ERR0 + (c - FQ_ERROR_BASE_));
      }
      atomic_fetch_add(&r->errors, 1);
    }
    r->status[idx] = st;
    int64_t from = r->o.max_inflight ? r->sent_at[idx] : r->start_ns + r->due[idx];
    r->ack_lat[idx] = now - from;
    atomic_fetch_add(&r->replies, 1);
    taken = true;
  }
  fq_msg_free(&m);
  return taken;
}

static void *conn_main(void *arg) {
  conn_t *c = arg;
  run_t *r = c->r;
  void *s = zmq_socket(c->ctx, ZMQ_DEALER);
  int zero = 0, maxmsg = FQ_CLIENT_MAX_REPLY;
  fq_buf_t body;
  fq_buf_init(&body, FQ_TRAFFIC_MAX_RECORD + 64);
  uint64_t inflight = 0;
  int64_t last_reply = 0, last_send = 0;
  if (!s) {
    c->rc = 1;
    goto out;
  }
  /* Open loop: sends must never block, whatever the server does, so the
   * queues are unbounded (the run's length bounds them). */
  zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
  zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
  zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  if (fq_curve_creds_apply(&r->curve, s, NULL) != 0 || zmq_connect(s, r->o.endpoint) != 0) {
    c->rc = 1;
    goto out;
  }
  int fd = -1;
  size_t fdlen = sizeof fd;
  zmq_getsockopt(s, ZMQ_FD, &fd, &fdlen);
  size_t next = (size_t)c->id;
  int64_t drain_deadline = INT64_MAX;
  zmq_msg_t m;
  zmq_msg_init(&m);
  for (;;) {
    int64_t now = fq_mono_ns();
    bool sending = next < r->n_sched && !atomic_load(&r->stop_send);
    /* Send everything that is due. */
    while (sending) {
      if (r->o.max_inflight ? inflight >= r->o.max_inflight : r->start_ns + r->due[next] > now)
        break;
      if (make_body(r, next, &body) == 0 &&
          zmq_send(s, body.data, body.len, ZMQ_DONTWAIT) == (int)body.len) {
        r->sent_at[next] = now;
        last_send = now;
        inflight++;
        atomic_fetch_add(&r->sent, 1);
      } else {
        r->status[next] = ST_SEND_FAILED;
        atomic_fetch_add(&r->errors, 1);
      }
      next += (size_t)r->o.conns;
      sending = next < r->n_sched && !atomic_load(&r->stop_send);
      now = fq_mono_ns();
    }
    if (!sending && drain_deadline == INT64_MAX) {
      drain_deadline = now + (int64_t)(r->o.drain * 1e9);
      atomic_fetch_add(&r->send_done_threads, 1);
    }
    /* Take every reply that is there. */
    for (;;) {
      int got = zmq_msg_recv(&m, s, ZMQ_DONTWAIT);
      if (got < 0) break;
      int64_t t = fq_mono_ns();
      if (take_reply(r, zmq_msg_data(&m), zmq_msg_size(&m), t)) {
        inflight--;
        last_reply = t;
      }
    }
    if (!sending && (inflight == 0 || now >= drain_deadline || g_interrupted > 1)) break;
    /* Sleep until the next send is due or a reply arrives.  ZMQ_FD only
     * signals edges, so check ZMQ_EVENTS first: that also lets the socket
     * process pending commands. */
    int ev = 0;
    size_t evlen = sizeof ev;
    zmq_getsockopt(s, ZMQ_EVENTS, &ev, &evlen);
    if (ev & ZMQ_POLLIN) continue;
    int64_t wake = drain_deadline;
    if (sending && !r->o.max_inflight) wake = r->start_ns + r->due[next];
    if (sending && r->o.max_inflight && inflight < r->o.max_inflight) wake = now;
    int64_t wait = wake - fq_mono_ns();
    if (wait > 100 * 1000000LL) wait = 100 * 1000000LL; /* notice a stop request */
    if (wait <= 0) continue;
    struct timespec ts = {(time_t)(wait / 1000000000LL), (long)(wait % 1000000000LL)};
    struct pollfd pfd = {fd, POLLIN, 0};
    ppoll(&pfd, 1, &ts, NULL);
  }
  zmq_msg_close(&m);
  pthread_mutex_lock(&r->mu);
  if (last_reply > r->last_reply_ns) r->last_reply_ns = last_reply;
  if (last_send > r->last_send_ns) r->last_send_ns = last_send;
  pthread_mutex_unlock(&r->mu);
out:
  if (s) zmq_close(s);
  fq_buf_free(&body);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* status events                                                        */

typedef struct evthread {
  run_t *r;
  fq_sub_t *sub;
} evthread_t;

#define EV_MAX_SHARDS 4096

static void *events_main(void *arg) {
  evthread_t *et = arg;
  run_t *r = et->r;
  fq_buf_t topic, body;
  fq_buf_init(&topic, 1024);
  fq_buf_init(&body, 64 * 1024);
  uint64_t *last = calloc(EV_MAX_SHARDS, sizeof *last);
  while (!atomic_load(&r->stop_events) && last) {
    int rc = fq_sub_recv(et->sub, &topic, &body, 50, NULL);
    if (rc) continue;
    int64_t now = fq_mono_ns();
    fq_event_t ev;
    if (fq_wire_event_unpack(body.data, body.len, &ev, NULL)) continue;
    atomic_fetch_add(&r->events, 1);
    if (ev.shard < EV_MAX_SHARDS) {
      /* The daemon's PUB drops events a slow subscriber cannot take;
       * a seq jump on a shard counts what was lost (other tenants'
       * events are filtered by topic, so this is an upper bound). */
      if (last[ev.shard] && ev.seq > last[ev.shard] + 1)
        atomic_fetch_add(&r->seq_gaps, ev.seq - last[ev.shard] - 1);
      if (ev.seq > last[ev.shard]) last[ev.shard] = ev.seq;
    }
    long i = lookup(r, ev.tenant.p, ev.tenant.n, ev.key.p, ev.key.n);
    if (i < 0) continue;
    atomic_fetch_add(&r->events_ours, 1);
    int64_t zero = 0;
    if (ev.state == FQ_ST_QUEUED) atomic_compare_exchange_strong(&r->ev_q[i], &zero, now);
    zero = 0;
    if (fq_state_terminal(ev.state)) atomic_compare_exchange_strong(&r->ev_t[i], &zero, now);
    /* Anything past `queued` other than the daemon's own verdicts
     * (expired, cancelled, superseded) means commands are dispatched. */
    if (ev.state != FQ_ST_QUEUED && ev.state != FQ_ST_EXPIRED && ev.state != FQ_ST_CANCELLED &&
        ev.state != FQ_ST_SUPERSEDED)
      atomic_fetch_add(&r->dispatch_seen, 1);
  }
  free(last);
  fq_buf_free(&topic);
  fq_buf_free(&body);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* report                                                               */

typedef struct pct {
  size_t n;
  double p50, p90, p99, p999, max, mean;
} pct_t;

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentiles of v[0..n) (sorted in place), in ms. */
static pct_t percentiles(int64_t *v, size_t n) {
  pct_t p = {.n = n};
  if (!n) return p;
  qsort(v, n, sizeof *v, cmp_i64);
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += (double)v[i];
  const double q[4] = {0.50, 0.90, 0.99, 0.999};
  double *out[4] = {&p.p50, &p.p90, &p.p99, &p.p999};
  for (int k = 0; k < 4; k++) {
    size_t rank = (size_t)ceil(q[k] * (double)n);
    if (rank < 1) rank = 1;
    *out[k] = (double)v[rank - 1] / 1e6;
  }
  p.max = (double)v[n - 1] / 1e6;
  p.mean = sum / (double)n / 1e6;
  return p;
}

static void json_pct(const char *name, const pct_t *p, bool last) {
  if (!p->n)
    printf("\"%s\":{\"count\":0,\"p50\":null,\"p90\":null,\"p99\":null,\"p999\":null,"
           "\"max\":null,\"mean\":null}%s",
           name, last ? "" : ",");
  else
    printf("\"%s\":{\"count\":%zu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,"
           "\"max\":%.3f,\"mean\":%.3f}%s",
           name, p->n, p->p50, p->p90, p->p99, p->p999, p->max, p->mean, last ? "" : ",");
}

static void text_pct(const char *name, const pct_t *p) {
  if (!p->n) {
    fprintf(stdout, "  %-22s no samples\n", name);
    return;
  }
  fprintf(stdout,
          "  %-22s p50 %8.3f  p90 %8.3f  p99 %8.3f  p99.9 %8.3f  max %8.3f ms  (%zu samples)\n",
          name, p->p50, p->p90, p->p99, p->p999, p->max, p->n);
}

/* ------------------------------------------------------------------ */
/* command line                                                         */

enum {
  R_ENDPOINT = 1000, R_PUBLISH, R_RATE, R_SPEED, R_CONNS, R_DURATION, R_DRAIN, R_KEYPFX,
  R_INFLIGHT, R_JSON, R_HELP, R_VERSION, R_CURVE_KEY, R_SERVER_KEY
};

/* The options of run: they parse the command line and make its --help. */
static const fq_opt_t g_run_opts[] = {
    FQ_OPT_HELP(R_HELP),
    FQ_OPT_VERSION(R_VERSION),
    {"endpoint", 0, "EP", R_ENDPOINT,
     "the daemon's request socket (required; loopback, ipc\nor inproc only)"},
    {"publish", 0, "EP", R_PUBLISH,
     "its status publisher: measure end-to-end latency (time\n"
     "to the command's first terminal event, or to its\n"
     "`queued` event when nothing is dispatched)"},
    {"rate", 0, "R", R_RATE, "send record i at i/R s, ignoring the recorded times"},
    {"speed", 0, "X", R_SPEED, "play the recorded times X times faster (default 1)"},
    {"conns", 0, "N", R_CONNS, "DEALER connections, round-robin (default 4, max 64)"},
    {"duration", 0, "S", R_DURATION,
     "stop sending after S seconds (default and max 600;\nup to 86400 when given)"},
    {"drain", 0, "S", R_DRAIN,
     "after the last send, wait at most S s for replies and\nevents (default 5)"},
    {"key-prefix", 0, "P", R_KEYPFX,
     "prepend P to every idempotency key (replay one file\n"
     "several times against the same daemon)"},
    {"max-inflight", 0, "W", R_INFLIGHT,
     "closed loop instead: send as fast as replies allow,\n"
     "W outstanding per connection (to fill a daemon);\n"
     "latency then counts from the actual send"},
    {"json", 0, NULL, R_JSON, "print one JSON object instead of the text report"},
    {"curve-key", 0, "FILE", R_CURVE_KEY,
     "this client's CURVE key pair file (fleetq curve-keygen),\n"
     "for a fleetqd with --curve-secret; default $FLEETQ_CURVE_KEY"},
    {"server-key", 0, "Z85", R_SERVER_KEY,
     "fleetqd's CURVE public key; default $FLEETQ_SERVER_KEY.\n"
     "Give both or neither; a flag wins over its variable"},
    {NULL, 0, NULL, 0, NULL},
};

static void run_help(void) {
  fputs("usage: fleetq-replay run FILE --endpoint EP [--publish EP] [--rate R | --speed X]\n"
        "           [--conns N] [--duration S] [--drain S] [--key-prefix P]\n"
        "           [--max-inflight W] [--json] [--curve-key FILE --server-key Z85]\n"
        "\n"
        "Send the submit requests of a traffic file to a fleetqd on this host, each at\n"
        "its intended time (open loop), and report requests sent, acked, errors by\n"
        "code, the achieved rate, and ack and end-to-end latency percentiles counted\n"
        "from the intended send time.  A progress line is shown on stderr when it is\n"
        "a terminal.\n"
        "\n"
        "Options:\n",
        stdout);
  fq_opt_print(stdout, g_run_opts);
  fputs("\nExit status: 0 every request was acked, 1 otherwise (or the file could not\n"
        "be read, the daemon did not answer), 2 usage error.\n",
        stdout);
}

static int parse_run_opts(int argc, char **argv, run_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->speed = 1;
  o->conns = 4;
  o->duration = RUN_DEFAULT_MAX_S;
  o->drain = 5;
  uint64_t u;
  fq_opt_parser_t p;
  fq_opt_init(&p, "fleetq-replay run", g_run_opts, argc, argv);
  for (;;) {
    int c = fq_opt_next(&p);
    if (c == FQ_OPT_END) break;
    const char *v = p.value;
    switch (c) {
    case FQ_OPT_ERROR: return 2;
    case R_HELP: run_help(); return 0;
    case R_VERSION: return fq_opt_version("fleetq-replay");
    case R_ENDPOINT: o->endpoint = v; break;
    case R_PUBLISH: o->publish = v; break;
    case R_RATE:
      if (!fq_replay_parse_double(v, 0.001, 10e6, &o->rate))
        return fq_replay_usage_err("run", "--rate wants requests per second, 0.001..1e7");
      break;
    case R_SPEED:
      if (!fq_replay_parse_double(v, 0.001, 100000, &o->speed))
        return fq_replay_usage_err("run", "--speed wants a factor 0.001..100000");
      break;
    case R_CONNS:
      if (!fq_replay_parse_u64(v, 1, RUN_MAX_CONNS, &u))
        return fq_replay_usage_err("run", "--conns wants 1..%d", RUN_MAX_CONNS);
      o->conns = (int)u;
      break;
    case R_DURATION:
      if (!fq_replay_parse_double(v, 0.001, RUN_MAX_S, &o->duration))
        return fq_replay_usage_err("run", "--duration wants seconds, at most %.0f", RUN_MAX_S);
      o->duration_set = true;
      break;
    case R_DRAIN:
      if (!fq_replay_parse_double(v, 0, 600, &o->drain))
        return fq_replay_usage_err("run", "--drain wants 0..600 seconds");
      break;
    case R_KEYPFX:
      if (!*v || strlen(v) > 64)
        return fq_replay_usage_err("run", "--key-prefix wants 1..64 bytes");
      o->key_prefix = v;
      break;
    case R_INFLIGHT:
      if (!fq_replay_parse_u64(v, 1, 100000, &o->max_inflight))
        return fq_replay_usage_err("run", "--max-inflight wants 1..100000");
      break;
    case R_JSON: o->json = true; break;
    case R_CURVE_KEY: o->curve_key = v; break;
    case R_SERVER_KEY: o->server_key = v; break;
    default: return fq_replay_usage_err("run", "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next + 1 != argc)
    return fq_replay_usage_err("run", p.next >= argc ? "the traffic FILE is required"
                                                     : "exactly one traffic FILE, please");
  o->file = argv[p.next];
  if (!o->endpoint) return fq_replay_usage_err("run", "--endpoint is required");
  if (o->rate > 0 && o->speed != 1)
    return fq_replay_usage_err("run", "--rate and --speed exclude each other");
  if (o->max_inflight && o->rate > 0)
    return fq_replay_usage_err("run", "--max-inflight (closed loop) and --rate exclude each other");
  /* A load generator must not be pointed at somebody else's machine. */
  if (!fq_endpoint_is_local(o->endpoint) || (o->publish && !fq_endpoint_is_local(o->publish))) {
    fprintf(stderr,
            "fleetq-replay run: refusing a non-loopback endpoint (%s%s%s): replay sends load only "
            "to this host (tcp://127.x.x.x, tcp://localhost, tcp://[::1], ipc://, inproc://)\n",
            o->endpoint, o->publish ? ", " : "", o->publish ? o->publish : "");
    return 2;
  }
  fq_client_opts_t co = {.curve_key_file = o->curve_key, .server_key = o->server_key};
  fq_err_t e;
  if (fq_client_opts_resolve(&co, &e)) return fq_replay_usage_err("run", "%s", e.msg);
  o->curve_key = co.curve_key_file;
  o->server_key = co.server_key;
  return -1;
}

/* Distinct tenants of the file, as "<tenant>/" topic prefixes; NULL
 * (subscribe to everything) when there are too many. */
static size_t tenant_prefixes(run_t *r, char pfx[][80]) {
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++) {
    fq_str_t t, k;
    rec_tk(r, i, &t, &k);
    bool seen = false;
    for (size_t j = 0; j < n && !seen; j++)
      seen = strlen(pfx[j]) == t.n + 1 && !memcmp(pfx[j], t.p, t.n);
    if (seen) continue;
    if (n == RUN_MAX_TENANT_PREFIXES) return 0;
    snprintf(pfx[n++], 80, "%.*s/", (int)t.n, t.p);
  }
  return n;
}

int fq_replay_run(int argc, char **argv) {
  run_t *r = calloc(1, sizeof *r);
  if (!r) return 1;
  int rc = parse_run_opts(argc, argv, &r->o);
  if (rc >= 0) {
    free(r);
    return rc;
  }
  rc = 1;
  fq_err_t e;
  void *ctx = NULL;
  fq_sub_t *sub = NULL;
  conn_t conns[RUN_MAX_CONNS];
  pthread_t th[RUN_MAX_CONNS], evth;
  int nth = 0;
  bool ev_started = false;
  evthread_t et = {r, NULL};
  pthread_mutex_init(&r->mu, NULL);

  r->t = fq_traffic_open(r->o.file, &e);
  if (!r->t) {
    fprintf(stderr, "fleetq-replay run: %s\n", e.msg);
    goto out;
  }
  r->n = fq_traffic_count(r->t);
  if (r->n > UINT32_MAX - 1) {
    fprintf(stderr, "fleetq-replay run: too many records\n");
    goto out;
  }
  r->due = calloc(r->n + 1, sizeof *r->due);
  r->ack_lat = calloc(r->n + 1, sizeof *r->ack_lat);
  r->sent_at = calloc(r->n + 1, sizeof *r->sent_at);
  r->ev_q = calloc(r->n + 1, sizeof *r->ev_q);
  r->ev_t = calloc(r->n + 1, sizeof *r->ev_t);
  r->status = calloc(r->n + 1, 1);
  r->primary = calloc(r->n + 1, 1);
  if (!r->due || !r->ack_lat || !r->sent_at || !r->ev_q || !r->ev_t || !r->status ||
      !r->primary || build_table(r)) {
    fprintf(stderr, "fleetq-replay run: out of memory for %zu records\n", r->n);
    goto out;
  }
  /* Intended times, and the records that fall within the duration. */
  int64_t limit_ns = (int64_t)(r->o.duration * 1e9);
  r->n_sched = 0;
  for (size_t i = 0; i < r->n; i++) {
    int64_t d = r->o.rate > 0 ? (int64_t)llround((double)i * 1e9 / r->o.rate)
                              : (int64_t)llround((double)fq_traffic_rec(r->t, i)->offset_us *
                                                 1e3 / r->o.speed);
    if (r->o.max_inflight) d = 0;
    r->due[i] = d;
    r->ack_lat[i] = -1;
    if (d <= limit_ns) r->n_sched = i + 1;
  }
  if (r->n_sched < r->n && !r->o.json)
    fprintf(stderr,
            "fleetq-replay run: only the first %zu of %zu records fit in %.0f s (--duration)\n",
            r->n_sched, r->n, r->o.duration);

  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  fq_client_opts_t co = {.endpoint = r->o.endpoint, .timeout_ms = 3000,
                         .curve_key_file = r->o.curve_key, .server_key = r->o.server_key};
  if (fq_curve_creds_load(&r->curve, &co, &e)) {
    fprintf(stderr, "fleetq-replay run: %s\n", e.msg);
    goto out;
  }
  /* Is the daemon there, and does it take our key?  Fail early and clearly
   * rather than time out. */
  {
    fq_client_t *pc = fq_client_new_opts(&co, &e);
    fq_buf_t req, rep;
    fq_buf_init(&req, 256);
    fq_buf_init(&rep, FQ_CLIENT_MAX_REPLY);
    int prc = pc ? fq_req_ping(&req, false, 0) : -1;
    if (!prc) prc = fq_client_request(pc, req.data, req.len, &rep, &e);
    fq_client_destroy(&pc);
    fq_buf_free(&req);
    fq_buf_free(&rep);
    if (prc) {
      if (prc == FQ_EAUTH)
        fprintf(stderr, "fleetq-replay run: %s\n", e.msg);
      else
        fprintf(stderr, "fleetq-replay run: no answer to ping from %s: %s\n", r->o.endpoint,
                e.msg);
      goto out;
    }
  }

  if (r->o.publish) {
    char pfx[RUN_MAX_TENANT_PREFIXES][80];
    size_t np = tenant_prefixes(r, pfx);
    const char *pp[RUN_MAX_TENANT_PREFIXES];
    for (size_t i = 0; i < np; i++) pp[i] = pfx[i];
    co.endpoint = r->o.publish;
    sub = fq_sub_new_opts(&co, pp, np, &e);
    if (!sub || fq_sub_wait_connected(sub, 3000, &e)) {
      fprintf(stderr, "fleetq-replay run: status publisher %s not reached: %s\n", r->o.publish,
              e.msg);
      goto out;
    }
    et.sub = sub;
    if (pthread_create(&evth, NULL, events_main, &et) != 0) goto out;
    ev_started = true;
  }

  ctx = zmq_ctx_new();
  zmq_ctx_set(ctx, ZMQ_IO_THREADS, 1);
  /* Give the threads time to connect before offset 0. */
  struct timespec rt;
  r->start_ns = fq_mono_ns() + 50 * 1000000LL;
  clock_gettime(CLOCK_REALTIME, &rt);
  r->start_unix_ns = (int64_t)rt.tv_sec * 1000000000LL + rt.tv_nsec + 50 * 1000000LL;
  for (int i = 0; i < r->o.conns; i++) {
    conns[i] = (conn_t){.r = r, .id = i, .ctx = ctx};
    if (pthread_create(&th[i], NULL, conn_main, &conns[i]) != 0) break;
    nth++;
  }
  /* Progress line and interruption, until every sender is done. */
  bool tty = isatty(2);
  int64_t last_print = 0;
  while (atomic_load(&r->send_done_threads) < (uint64_t)nth || g_interrupted) {
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    if (g_interrupted) {
      atomic_store(&r->stop_send, 1);
      if (atomic_load(&r->send_done_threads) >= (uint64_t)nth) break;
    }
    int64_t now = fq_mono_ns();
    if (tty && now - last_print > 500 * 1000000LL) {
      last_print = now;
      double el = (double)(now - r->start_ns) / 1e9;
      uint64_t s = atomic_load(&r->sent), a = atomic_load(&r->replies);
      fprintf(stderr,
              "\rreplay %6.1f s  sent %10" PRIu64 "  replies %10" PRIu64 "  errors %6" PRIu64
              "  in flight %6" PRIu64 "  %8.0f/s ",
              el, s, a, atomic_load(&r->errors), s - a, el > 0 ? (double)s / el : 0.0);
    }
  }
  for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
  if (tty) fprintf(stderr, "\r%100s\r", "");
  /* Events trail the replies: give them until the drain deadline. */
  int64_t send_end = r->last_send_ns ? r->last_send_ns : fq_mono_ns();
  if (ev_started) {
    int64_t deadline = send_end + (int64_t)(r->o.drain * 1e9);
    for (;;) {
      bool want = false;
      bool term = atomic_load(&r->dispatch_seen) > 0;
      for (size_t i = 0; i < r->n_sched && !want; i++)
        if (r->primary[i] && (r->status[i] == ST_OK))
          want = term ? atomic_load(&r->ev_t[i]) == 0 : atomic_load(&r->ev_q[i]) == 0;
      if (!want || fq_mono_ns() >= deadline || g_interrupted > 1) break;
      struct timespec ts = {0, 20 * 1000000L};
      nanosleep(&ts, NULL);
    }
    atomic_store(&r->stop_events, 1);
    pthread_join(evth, NULL);
    ev_started = false;
  }

  /* ---- figures ---- */
  uint64_t sent = 0, acked = 0, dups = 0, no_reply = 0;
  uint64_t errs[256] = {0};
  int64_t *lat = malloc((r->n_sched + 1) * sizeof *lat), *e2e = malloc((r->n_sched + 1) * sizeof *e2e);
  size_t nl = 0, ne = 0, e2e_missing = 0, e2e_expected = 0;
  bool terminal = atomic_load(&r->dispatch_seen) > 0;
  if (!lat || !e2e) goto out;
  for (size_t i = 0; i < r->n_sched; i++) {
    uint8_t st = r->status[i];
    if (r->sent_at[i]) sent++;
    if (st == ST_OK || st == ST_DUP) acked++;
    if (st == ST_DUP) dups++;
    if (st >= ST_SEND_FAILED) errs[st]++;
    if (st == ST_NONE && r->sent_at[i]) no_reply++;
    if (r->ack_lat[i] >= 0) lat[nl++] = r->ack_lat[i];
    if (r->o.publish && r->primary[i] && st == ST_OK) {
      e2e_expected++;
      int64_t at = terminal ? atomic_load(&r->ev_t[i]) : atomic_load(&r->ev_q[i]);
      int64_t from = r->o.max_inflight ? r->sent_at[i] : r->start_ns + r->due[i];
      if (at)
        e2e[ne++] = at - from;
      else
        e2e_missing++;
    }
  }
  pct_t pa = percentiles(lat, nl), pe = percentiles(e2e, ne);
  int64_t end = r->last_reply_ns > 0 ? r->last_reply_ns : fq_mono_ns();
  double window = (double)(end - r->start_ns) / 1e9;
  double send_window = (double)(send_end - r->start_ns) / 1e9;
  double achieved = window > 0 ? (double)acked / window : 0;
  /* Sending rate over the intended schedule: n sends span n-1 gaps. */
  double send_rate = sent > 1 && send_window > 0 ? (double)(sent - 1) / send_window : 0;
  double target = r->o.rate > 0 ? r->o.rate : 0;
  if (!target && !r->o.max_inflight && r->n_sched > 1 && r->due[r->n_sched - 1] > 0)
    target = (double)(r->n_sched - 1) / ((double)r->due[r->n_sched - 1] / 1e9);
  const char *e2e_to = !r->o.publish ? "none" : terminal ? "terminal" : "queued";

  if (r->o.json) {
    fq_buf_t fn;
    fq_buf_init(&fn, 0);
    fq_replay_json_str(&fn, r->o.file); /* a path may hold quotes */
    printf("{\"file\":%.*s,\"records\":%zu,\"scheduled\":%zu,\"mode\":\"%s\",\"conns\":%d,",
           (int)fn.len, (const char *)fn.data, r->n, r->n_sched,
           r->o.max_inflight ? "closed" : "open", r->o.conns);
    fq_buf_free(&fn);
    printf("\"sent\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"dup\":%" PRIu64 ",\"no_reply\":%" PRIu64
           ",\"errors\":{",
           sent, acked, dups, no_reply);
    bool first = true;
    for (int st = ST_SEND_FAILED; st < 256; st++) {
      if (!errs[st]) continue;
      const char *name = st == ST_SEND_FAILED ? "send_failed"
                         : st == ST_BAD_REPLY ? "bad_reply"
                         : st == ST_ERR_UNKNOWN ? "unknown_code"
                                                : fq_errname(FQ_ERROR_BASE_ + (st - ST_ERR0));
      printf("%s\"%s\":%" PRIu64, first ? "" : ",", name, errs[st]);
      first = false;
    }
    if (no_reply) printf("%s\"no_reply\":%" PRIu64, first ? "" : ",", no_reply);
    printf("},\"target_rate\":%.3f,\"rate\":%.3f,\"send_rate\":%.3f,\"duration_s\":%.3f,", target,
           achieved, send_rate, window);
    printf("\"start_unix_ms\":%.3f,", (double)r->start_unix_ns / 1e6);
    json_pct("ack_latency_ms", &pa, false);
    json_pct("e2e_latency_ms", &pe, false);
    printf("\"e2e_to\":\"%s\",\"e2e_expected\":%zu,\"e2e_missing\":%zu,\"events\":%" PRIu64
           ",\"events_lost\":%" PRIu64 "}\n",
           e2e_to, e2e_expected, e2e_missing, atomic_load(&r->events_ours),
           atomic_load(&r->seq_gaps));
  } else {
    printf("fleetq-replay: %s, %zu records (%zu scheduled), %s loop, %d connections\n",
           r->o.file, r->n, r->n_sched, r->o.max_inflight ? "closed" : "open", r->o.conns);
    printf("  sent %" PRIu64 ", acked %" PRIu64 " (%" PRIu64 " as duplicates), no reply %" PRIu64
           "\n",
           sent, acked, dups, no_reply);
    for (int st = ST_SEND_FAILED; st < 256; st++)
      if (errs[st])
        printf("  error %-20s %" PRIu64 "\n",
               st == ST_SEND_FAILED ? "send_failed"
               : st == ST_BAD_REPLY ? "bad_reply"
               : st == ST_ERR_UNKNOWN ? "unknown_code"
                                      : fq_errname(FQ_ERROR_BASE_ + (st - ST_ERR0)),
               errs[st]);
    if (target > 0)
      printf("  rate: achieved %.1f acks/s over %.3f s (target %.1f/s, sent at %.1f/s)\n",
             achieved, window, target, send_rate);
    else
      printf("  rate: achieved %.1f acks/s over %.3f s\n", achieved, window);
    printf("  latency from the %s send time:\n", r->o.max_inflight ? "actual" : "intended");
    text_pct("ack", &pa);
    if (r->o.publish) {
      text_pct(terminal ? "e2e (terminal event)" : "e2e (queued event)", &pe);
      printf("  end-to-end measured to %s; %zu of %zu commands without that event%s\n",
             terminal ? "the first terminal event (commands are being dispatched)"
                      : "the `queued` event (nothing was dispatched during the run)",
             e2e_missing, e2e_expected,
             atomic_load(&r->seq_gaps) ? " (the publisher dropped events)" : "");
    } else {
      printf("  end-to-end: not measured (no --publish)\n");
    }
  }
  fflush(stdout);
  rc = acked == r->n_sched && !no_reply ? 0 : 1;
  free(lat);
  free(e2e);
out:
  if (ev_started) {
    atomic_store(&r->stop_events, 1);
    pthread_join(evth, NULL);
  }
  fq_sub_destroy(&sub);
  if (ctx) zmq_ctx_term(ctx);
  fq_traffic_close(&r->t);
  free(r->due);
  free(r->ack_lat);
  free(r->sent_at);
  free((void *)r->ev_q);
  free((void *)r->ev_t);
  free(r->status);
  free(r->primary);
  fq_hmap_free(&r->table);
  free(r->tk);
  pthread_mutex_destroy(&r->mu);
  fq_curve_creds_wipe(&r->curve);
  free(r);
  return rc;
}
