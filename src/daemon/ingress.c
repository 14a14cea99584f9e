/*
 * Ingress: request routing and relaying between clients and shards.  See
 * ingress.h; the shard framing is documented in shard.h.
 */
#include "ingress.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "auth.h"
#include "fleetq/wire.h"
#include "budget.h"
#include "byteorder.h"
#include "campmgr.h"
#include "clnode.h"
#include "health.h"
#include "idem.h"
#include "log.h"
#include "metrics.h"
#include "replies.h"
#include "store.h"
#include "util.h"
#include "zmsg.h"

/* Frames of a request the ingress passes on: the routing id its ROUTER
 * adds, the client's envelope (at most FQ_WIRE_MAX_ENVELOPE frames), the
 * body.  A request with more frames is refused (bad_request), and up to
 * RECV_FRAMES of it are kept so that the refusal can carry its envelope
 * back; frames past that are dropped unread by fq_zmsg_recv. */
#define REQ_FRAMES (FQ_WIRE_MAX_ENVELOPE + 2)
#define RECV_FRAMES 64
#define FANOUT_SLOTS 4096

/* Cluster mode: one DEALER per other node requests were forwarded to. */
#define FWD_PEERS 16
/* The routing id a node's forwarding DEALER gives itself: a request whose
 * ROUTER identity starts with it came from another node. */
#define FWD_ID_PREFIX "fq-node:"

typedef struct fwd_peer {
  char ep[256];
  void *sock;              /* NULL: free slot */
  uint64_t sent;
} fwd_peer_t;

typedef struct fanout {
  uint64_t token;      /* 0 = free slot */
  unsigned remaining;
  bool answered;
  /* A submit's dedupe check on the shard that first saw its key: the
   * request is kept here and sent to its device's shard if the key turns
   * out not to be there. */
  bool check;
  unsigned check_shard, dev_shard;
  uint64_t keyhash;
  int nframes;
  zmq_msg_t frames[REQ_FRAMES];
} fanout_t;

/* A health request waiting for the shards' answers ('H', shard.h).  A
 * shard that has not answered after HEALTH_WAIT_MS (or stuck_ms, when
 * shorter) is reported stuck: its thread is busy with something long. */
#define HEALTH_SLOTS 8
#define HEALTH_WAIT_MS 2000
#define HEALTH_ACCOUNTS 64

typedef struct health_wait {
  uint64_t token;            /* 0 = free slot */
  int64_t deadline, stuck_ms;
  unsigned remaining;
  fq_shard_health_t *h;      /* one per shard */
  int nframes;
  zmq_msg_t frames[REQ_FRAMES]; /* the request: envelope for the reply */
  bool has_req;
  size_t req_len;
  uint8_t req_raw[FQ_WIRE_MAX_REQ];
} health_wait_t;

/* At most RL_BURST lines of one kind per RL_WINDOW_MS; the rest are
 * counted and reported when the window ends. */
#define RL_BURST 10
#define RL_WINDOW_MS 60000

typedef struct ratelog {
  int64_t start;
  unsigned n, dropped;
} ratelog_t;

struct fq_ingress {
  fq_ingress_opts_t o;
  void *router, *pub;
  /* CURVE: the ZAP handler, the sockets' monitors (handshake failures:
   * plaintext clients, bad keys), the client table, and the secret key
   * kept to re-create the PUB side when a reload narrows access. */
  bool curve;
  char secret[41];
  fq_clients_t *clients;
  void *zap, *mon_router, *mon_pub;
  unsigned mon_gen;
  ratelog_t rl_zap, rl_hs, rl_forbid, rl_drop;
  fq_replies_t *replies;  /* what each client holds in unread replies */
  int64_t last_sweep;
  bool trim_due;          /* clients held much since the last malloc_trim */
  void **pairs;
  fq_buf_t out;
  uint64_t next_token;
  fq_idem_t *keys;      /* hash(tenant, key) -> shard that stored it (see key_mark) */
  uint64_t *sent;       /* 'Q' and 'F' messages sent to each shard so far */
  unsigned loaded;      /* shards that finished announcing their keys */
  uint64_t keys_expected; /* keys the shards said they would announce, not yet received */
  fanout_t fan[FANOUT_SLOTS];
  health_wait_t health[HEALTH_SLOTS];
  /* Campaigns run in their own thread (campmgr.h); NULL without a data
   * dir.  camp_held: an internal request of theirs a full shard queue
   * refused, sent again before anything more is read from them. */
  fq_campmgr_t *cm;
  void *camp_sock;
  zmq_msg_t camp_held[3];
  int camp_nheld;
  unsigned camp_shard;
  uint64_t camp_keyhash;
  bool camp_serving;
  fwd_peer_t fwd[FWD_PEERS];
  uint64_t forwarded, fwd_busy;
};

static int sockopt_int(void *s, int opt, int v) { return zmq_setsockopt(s, opt, &v, sizeof v); }

/* True when a line of this kind may be logged now (see ratelog_t). */
static bool ratelog_ok(ratelog_t *r, const char *what) {
  int64_t now = fq_now_ms();
  if (now - r->start >= RL_WINDOW_MS) {
    if (r->dropped)
      fq_warn("ingress", "%u more %s were not logged in the last %d s", r->dropped, what,
              RL_WINDOW_MS / 1000);
    r->start = now;
    r->n = r->dropped = 0;
  }
  if (r->n < RL_BURST) {
    r->n++;
    return true;
  }
  r->dropped++;
  return false;
}

/* Bind an endpoint.  An ipc:// socket file is created with mode 0600 (the
 * umask is tightened around the bind, so no other user can connect in
 * between), then given the configured mode. */
static int bind_ep(fq_ingress_t *in, void *s, const char *ep, fq_err_t *err, const char *what) {
  bool ipc_file = strncmp(ep, "ipc://", 6) == 0 && ep[6] != '@';
  mode_t old = 0;
  if (ipc_file) old = umask(0177);
  int rc = zmq_bind(s, ep);
  int e = errno;
  if (ipc_file) umask(old);
  if (rc != 0)
    return fq_errf(err, FQ_ECONFIG, "cannot %s on %s: %s", what, ep, zmq_strerror(e));
  unsigned mode = in->o.ipc_mode ? in->o.ipc_mode : 0600;
  if (ipc_file && mode != 0600 && chmod(ep + 6, (mode_t)mode) != 0)
    return fq_errf(err, FQ_ECONFIG, "cannot set mode %03o on %s: %s", mode, ep + 6,
                   fq_strerror(-errno));
  return 0;
}

static int curve_server(fq_ingress_t *in, void *s) {
  int one = 1;
  if (zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
      zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, in->secret, 40) != 0 ||
      zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, "fleetq", 6) != 0)
    return -1;
  return 0;
}

/* A PAIR receiving the handshake failures of socket s (and the end of the
 * monitor, awaited before a PUB socket is re-created). */
static void *open_monitor(fq_ingress_t *in, void *s, const char *tag) {
  char ep[80];
  snprintf(ep, sizeof ep, "inproc://fq-ingress-monitor-%s-%u", tag, in->mon_gen++);
  int events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
               ZMQ_EVENT_MONITOR_STOPPED;
  if (zmq_socket_monitor(s, ep, events) != 0) return NULL;
  void *m = zmq_socket(in->o.zmq_ctx, ZMQ_PAIR);
  if (m && zmq_connect(m, ep) != 0) {
    zmq_close(m);
    return NULL;
  }
  if (m) sockopt_int(m, ZMQ_LINGER, 0);
  return m;
}

/* The status socket: a plain PUB, or with CURVE an XPUB whose
 * subscriptions this thread applies itself (each checked against the
 * subscriber's tenants). */
static int open_pub(fq_ingress_t *in, fq_err_t *err) {
  in->pub = zmq_socket(in->o.zmq_ctx, in->curve ? ZMQ_XPUB : ZMQ_PUB);
  if (!in->pub)
    return fq_errf(err, FQ_EINTERNAL, "cannot create the PUB socket: %s", zmq_strerror(errno));
  sockopt_int(in->pub, ZMQ_SNDHWM, in->o.pub_hwm);
  sockopt_int(in->pub, ZMQ_LINGER, 0);
  if (in->curve) {
    if (curve_server(in, in->pub) != 0 || sockopt_int(in->pub, ZMQ_XPUB_MANUAL, 1) != 0)
      return fq_errf(err, FQ_EINTERNAL, "cannot set up CURVE on the PUB socket: %s",
                     zmq_strerror(errno));
    if (!(in->mon_pub = open_monitor(in, in->pub, "pub")))
      return fq_errf(err, FQ_EINTERNAL, "cannot monitor the PUB socket: %s", zmq_strerror(errno));
  }
  return bind_ep(in, in->pub, in->o.publish, err, "publish");
}

/* --- campaigns (campmgr.h) ----------------------------------------------- */

static int key_mark(fq_ingress_t *in, uint64_t h, unsigned shard);
static void reply_client(fq_ingress_t *in, zmq_msg_t *env, int nenv, const void *body,
                         size_t len);

/* Send the held internal request to its shard: 0, or -EAGAIN while the
 * shard's queue is full (it stays held).  Its key is stamped with the
 * message about to carry it, at the moment it goes (see key_mark). */
static int camp_flush(fq_ingress_t *in) {
  if (!in->camp_nheld) return 0;
  unsigned shard = in->camp_shard;
  void *s = in->pairs[shard];
  if (in->camp_keyhash && in->o.nshards > 1) key_mark(in, in->camp_keyhash, shard);
  if (zmq_msg_send(&in->camp_held[0], s, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -errno;
  in->sent[shard]++;
  for (int i = 1; i < in->camp_nheld; i++)
    if (zmq_msg_send(&in->camp_held[i], s, i + 1 < in->camp_nheld ? ZMQ_SNDMORE : 0) < 0)
      zmq_msg_close(&in->camp_held[i]);
  in->camp_nheld = 0;
  return 0;
}

/* What the campaign manager sends: replies, progress events, internal
 * requests to the shards.  A request a full shard queue refuses is held,
 * and nothing more is read from the manager until it went through: the
 * manager's fan-out waits as it did when it ran in this thread. */
static void handle_campaigns(fq_ingress_t *in) {
  for (int k = 0; k < 4096 && !in->camp_nheld; k++) {
    zmq_msg_t f[RECV_FRAMES + 2];
    int n = fq_zmsg_recv(in->camp_sock, f, RECV_FRAMES + 2, ZMQ_DONTWAIT, NULL);
    if (n <= 0) break;
    const uint8_t *h = zmq_msg_data(&f[0]);
    size_t hl = zmq_msg_size(&f[0]);
    if (hl == 1 && h[0] == 'R' && n >= 3) {
      reply_client(in, &f[1], n - 2, zmq_msg_data(&f[n - 1]), zmq_msg_size(&f[n - 1]));
    } else if (hl == 1 && h[0] == 'P' && n == 3) {
      if (in->pub) {
        zmq_send(in->pub, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(in->pub, zmq_msg_data(&f[2]), zmq_msg_size(&f[2]), ZMQ_DONTWAIT);
        fq_metrics_events(1);
      }
    } else if (hl == 13 && h[0] == 'S' && n == 4 && fq_get_le32(h + 1) < in->o.nshards) {
      in->camp_shard = fq_get_le32(h + 1);
      in->camp_keyhash = fq_get_le64(h + 5);
      for (int i = 1; i < 4; i++) {
        zmq_msg_init(&in->camp_held[i - 1]);
        zmq_msg_move(&in->camp_held[i - 1], &f[i]);
      }
      in->camp_nheld = 3;
      camp_flush(in);
    }
    fq_zmsg_close(f, n);
  }
}

/* A one-frame message to the manager ('G', 'H', 'T'); blocking (the
 * socket has no high-water mark). */
static void camp_signal(fq_ingress_t *in, char kind) {
  if (in->camp_sock) zmq_send(in->camp_sock, &kind, 1, 0);
}

fq_ingress_t *fq_ingress_new(const fq_ingress_opts_t *opts, fq_err_t *err) {
  fq_ingress_t *in = calloc(1, sizeof *in);
  if (!in) {
    fq_clients_t *c = opts->clients;
    fq_clients_free(&c);
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  in->o = *opts;
  in->clients = opts->clients;
  in->curve = opts->curve_secret != NULL;
  if (in->curve) {
    if (strlen(opts->curve_secret) != 40 || !in->clients) {
      fq_errf(err, FQ_ECONFIG, "CURVE needs a 40-character Z85 secret key and a clients file");
      goto fail;
    }
    memcpy(in->secret, opts->curve_secret, 41);
  }
  in->next_token = 1;
  fq_buf_init(&in->out, 0);
  in->keys = fq_idem_new(1 << 16);
  in->pairs = calloc(opts->nshards + 1, sizeof *in->pairs);
  in->sent = calloc(opts->nshards + 1, sizeof *in->sent);
  for (int i = 0; i < HEALTH_SLOTS; i++)
    if (!(in->health[i].h = calloc(opts->nshards, sizeof *in->health[i].h))) {
      fq_errf(err, -ENOMEM, "out of memory");
      goto fail;
    }
  if (in->curve) {
    /* The ZAP handler must exist before a CURVE socket binds: libzmq
     * admits every key when no handler is bound. */
    in->zap = zmq_socket(opts->zmq_ctx, ZMQ_REP);
    if (!in->zap || zmq_bind(in->zap, "inproc://zeromq.zap.01") != 0) {
      fq_errf(err, FQ_EINTERNAL, "cannot start the ZAP handler: %s", zmq_strerror(errno));
      goto fail;
    }
    sockopt_int(in->zap, ZMQ_LINGER, 0);
  }
  in->router = zmq_socket(opts->zmq_ctx, ZMQ_ROUTER);
  if (!in->pairs || !in->router || !in->keys || !in->sent) {
    fq_errf(err, FQ_EINTERNAL, "cannot create sockets: %s", zmq_strerror(errno));
    goto fail;
  }
  int64_t maxmsg = opts->max_msg_size;
  zmq_setsockopt(in->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  sockopt_int(in->router, ZMQ_SNDHWM, opts->client_hwm);
  sockopt_int(in->router, ZMQ_RCVHWM, opts->client_hwm);
  sockopt_int(in->router, ZMQ_LINGER, 0);
  if (in->curve) {
    if (curve_server(in, in->router) != 0) {
      fq_errf(err, FQ_EINTERNAL, "cannot set up CURVE on the request socket: %s",
              zmq_strerror(errno));
      goto fail;
    }
    if (!(in->mon_router = open_monitor(in, in->router, "router"))) {
      fq_errf(err, FQ_EINTERNAL, "cannot monitor the request socket: %s", zmq_strerror(errno));
      goto fail;
    }
  }
  if (!(in->replies = fq_replies_new(in->router, opts->client_reply_max))) {
    fq_errf(err, -ENOMEM, "out of memory");
    goto fail;
  }
  if (opts->data_dir) {
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://fq-campaigns-%p", (void *)in);
    in->camp_sock = zmq_socket(opts->zmq_ctx, ZMQ_PAIR);
    if (!in->camp_sock || sockopt_int(in->camp_sock, ZMQ_SNDHWM, 0) != 0 ||
        sockopt_int(in->camp_sock, ZMQ_RCVHWM, 0) != 0 ||
        sockopt_int(in->camp_sock, ZMQ_LINGER, 0) != 0 || zmq_bind(in->camp_sock, ep) != 0) {
      fq_errf(err, FQ_EINTERNAL, "cannot create the campaigns socket: %s", zmq_strerror(errno));
      goto fail;
    }
    fq_campmgr_opts_t co = {opts->zmq_ctx,      ep,
                            opts->data_dir,     opts->nshards,
                            opts->accounts,     opts->retention_s * 1000,
                            opts->dedupe_window_s * 1000, opts->shard_hwm};
    if (!(in->cm = fq_campmgr_start(&co, err))) goto fail;
  }
  if (bind_ep(in, in->router, opts->listen, err, "listen") != 0) goto fail;
  if (open_pub(in, err) != 0) goto fail;
  for (unsigned i = 0; i < opts->nshards; i++) {
    in->pairs[i] = zmq_socket(opts->zmq_ctx, ZMQ_PAIR);
    if (!in->pairs[i]) {
      fq_errf(err, FQ_EINTERNAL, "cannot create shard socket: %s", zmq_strerror(errno));
      goto fail;
    }
    /* Requests towards a shard are bounded (past it the client hears
     * `busy`); replies and events coming back never are. */
    sockopt_int(in->pairs[i], ZMQ_SNDHWM, opts->shard_hwm);
    sockopt_int(in->pairs[i], ZMQ_RCVHWM, 0);
    sockopt_int(in->pairs[i], ZMQ_LINGER, 0);
    if (zmq_bind(in->pairs[i], fq_shard_endpoint(opts->shards[i])) != 0) {
      fq_errf(err, FQ_EINTERNAL, "cannot bind shard socket: %s", zmq_strerror(errno));
      goto fail;
    }
  }
  if (opts->auth_endpoint) {
    /* The auth thread is one more peer with the shard framing, at index
     * nshards. */
    void *a = zmq_socket(opts->zmq_ctx, ZMQ_PAIR);
    if (!a || zmq_connect(a, opts->auth_endpoint) != 0) {
      fq_errf(err, FQ_EINTERNAL, "cannot connect to the auth thread: %s", zmq_strerror(errno));
      if (a) zmq_close(a);
      goto fail;
    }
    sockopt_int(a, ZMQ_LINGER, 0);
    in->pairs[opts->nshards] = a;
  }
  return in;
fail:
  fq_ingress_destroy(&in);
  return NULL;
}

void fq_ingress_destroy(fq_ingress_t **inp) {
  if (!inp || !*inp) return;
  fq_ingress_t *in = *inp;
  /* Replies still queued are released when ZeroMQ closes the socket; the
   * ledger's entries they use outlive it (replies.h). */
  fq_replies_destroy(&in->replies);
  if (in->cm) {
    camp_signal(in, 'T');
    fq_campmgr_join(&in->cm);
  }
  fq_zmsg_close(in->camp_held, in->camp_nheld);
  if (in->camp_sock) zmq_close(in->camp_sock);
  if (in->router) zmq_close(in->router);
  if (in->pub) zmq_close(in->pub);
  if (in->zap) zmq_close(in->zap);
  if (in->mon_router) zmq_close(in->mon_router);
  if (in->mon_pub) zmq_close(in->mon_pub);
  fq_clients_free(&in->clients);
  OPENSSL_cleanse(in->secret, sizeof in->secret);
  if (in->pairs) {
    for (unsigned i = 0; i <= in->o.nshards; i++)
      if (in->pairs[i]) zmq_close(in->pairs[i]);
    free(in->pairs);
  }
  for (int i = 0; i < FWD_PEERS; i++)
    if (in->fwd[i].sock) zmq_close(in->fwd[i].sock);
  fq_buf_free(&in->out);
  fq_idem_destroy(&in->keys);
  free(in->sent);
  for (size_t i = 0; i < FANOUT_SLOTS; i++)
    for (int j = 0; j < in->fan[i].nframes; j++) zmq_msg_close(&in->fan[i].frames[j]);
  for (int i = 0; i < HEALTH_SLOTS; i++) {
    fq_zmsg_close(in->health[i].frames, in->health[i].nframes);
    free(in->health[i].h);
  }
  free(in);
  *inp = NULL;
}

/* Every reply leaves here: [envelope... body] on the ROUTER, charged to
 * its client until ZeroMQ has written it out (replies.h).  A client over
 * --client-reply-kb has stopped reading: its reply is dropped (it would
 * only pile up), and logged, a bounded number of lines a minute. */
static void send_reply(fq_ingress_t *in, const fq_frame_t *env, int nenv, const void *body,
                       size_t len) {
  int rc = fq_replies_send(in->replies, env, nenv, body, len);
  if (rc == FQ_EBUSY && ratelog_ok(&in->rl_drop, "dropped replies")) {
    char id[24] = "";
    size_t n = env[0].n < 8 ? env[0].n : 8;
    for (size_t i = 0; i < n; i++)
      snprintf(id + 2 * i, sizeof id - 2 * i, "%02x", ((const uint8_t *)env[0].p)[i]);
    fq_warn("ingress",
            "a client (routing id %s%s) holds %zu bytes of replies it has not read, over "
            "--client-reply-kb %zu: a reply of %zu bytes was dropped",
            id, env[0].n > 8 ? "..." : "", fq_replies_queued(in->replies, env[0].p, env[0].n),
            in->o.client_reply_max / 1024, len);
  }
}

/* Once a second: forget clients that hold nothing.  When clients held a
 * lot of reply memory and now hold little (a client that stopped reading
 * went away), give what the allocator kept back to the system: glibc keeps
 * freed memory in each thread's arena, and the replies were allocated here
 * and freed in ZeroMQ's I/O thread, the large batches in the shards. */
static void sweep_replies(fq_ingress_t *in) {
  size_t held = 0;
  fq_replies_sweep(in->replies, &held);
  if (held >= (4u << 20)) in->trim_due = true;
  if (in->trim_due && held < (1u << 20)) {
    in->trim_due = false;
    fq_heap_trim();
  }
}

/* The same with the envelope as received frames. */
static void reply_client(fq_ingress_t *in, zmq_msg_t *env, int nenv, const void *body,
                         size_t len) {
  fq_frame_t fr[RECV_FRAMES];
  if (nenv > RECV_FRAMES) nenv = RECV_FRAMES;
  for (int i = 0; i < nenv; i++) fr[i] = (fq_frame_t){zmq_msg_data(&env[i]), zmq_msg_size(&env[i])};
  send_reply(in, fr, nenv, body, len);
}

/* The refusal of a request whose envelope breaks the limits: its frames
 * go back as they came, each cut to FQ_WIRE_MAX_ENVELOPE_FRAME bytes, so
 * that what a client can make the daemon echo stays bounded while a REQ
 * client (whose first envelope frame is its empty delimiter) and a DEALER
 * with a small envelope still get the reply where they expect it. */
static void reply_cut_envelope(fq_ingress_t *in, zmq_msg_t *env, int nenv, const char *msg,
                               const fq_request_t *req) {
  fq_buf_reset(&in->out);
  fq_wire_reply_error(&in->out, FQ_EBADREQ, msg, req ? req->req_raw : NULL,
                      req ? req->req_raw_len : 0);
  if (req && req->op == FQ_OP_SUBMIT) fq_metrics_submit(FQ_EBADREQ);
  fq_frame_t fr[RECV_FRAMES];
  if (nenv > RECV_FRAMES) nenv = RECV_FRAMES;
  for (int i = 0; i < nenv; i++) {
    size_t len = zmq_msg_size(&env[i]);
    if (len > FQ_WIRE_MAX_ENVELOPE_FRAME && i > 0) len = FQ_WIRE_MAX_ENVELOPE_FRAME;
    fr[i] = (fq_frame_t){zmq_msg_data(&env[i]), len};
  }
  send_reply(in, fr, nenv, in->out.data, in->out.len);
}

/* Whether the envelope of a request of n frames (routing id first, body
 * last) is within the limits; else the message saying why. */
static bool envelope_ok(zmq_msg_t *f, int n, bool overflow, char *msg, size_t cap) {
  if (overflow || n - 2 > FQ_WIRE_MAX_ENVELOPE) {
    snprintf(msg, cap,
             "too many frames: %s%d envelope frames before the body, at most %d",
             overflow ? "more than " : "", overflow ? n - 1 : n - 2, FQ_WIRE_MAX_ENVELOPE);
    return false;
  }
  for (int i = 1; i < n - 1; i++) {
    size_t len = zmq_msg_size(&f[i]);
    if (len > FQ_WIRE_MAX_ENVELOPE_FRAME) {
      snprintf(msg, cap, "envelope frame %d is %zu bytes, at most %d", i, len,
               FQ_WIRE_MAX_ENVELOPE_FRAME);
      return false;
    }
  }
  return true;
}

static void reply_error(fq_ingress_t *in, zmq_msg_t *env, int nenv, int code, const char *msg,
                        const fq_request_t *req) {
  fq_buf_reset(&in->out);
  fq_wire_reply_error(&in->out, code, msg, req ? req->req_raw : NULL, req ? req->req_raw_len : 0);
  if (req && req->op == FQ_OP_SUBMIT) fq_metrics_submit(code);
  reply_client(in, env, nenv, in->out.data, in->out.len);
}

/* Forward [kind (token) envelope... body] to one shard.  The kind frame
 * carries the tenants the client may see when it is limited to some
 * (shard.h): the shard hides other tenants' commands and events.  Returns
 * 0 or -EAGAIN when the shard's queue is full. */
static int to_shard(fq_ingress_t *in, unsigned shard, char kind, const uint64_t *token,
                    zmq_msg_t *frames, int n, bool move, const fq_client_entry_t *who) {
  void *s = in->pairs[shard];
  size_t acl = who && !who->all_tenants ? who->acl_len : 0;
  zmq_msg_t k;
  if (zmq_msg_init_size(&k, 1 + acl) != 0) return -ENOMEM;
  uint8_t *kp = zmq_msg_data(&k);
  kp[0] = (uint8_t)kind;
  if (acl) memcpy(kp + 1, who->acl, acl);
  if (zmq_msg_send(&k, s, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
    int e = errno;
    zmq_msg_close(&k);
    return -e;
  }
  /* Sent: the shard will count it too (see key_mark). */
  if (kind == 'Q' || kind == 'F' || kind == 'C') in->sent[shard]++;
  if (token) zmq_send(s, token, 8, ZMQ_SNDMORE);
  for (int i = 0; i < n; i++) {
    zmq_msg_t c;
    zmq_msg_init(&c);
    if (move)
      zmq_msg_move(&c, &frames[i]);
    else
      zmq_msg_copy(&c, &frames[i]);
    if (zmq_msg_send(&c, s, i + 1 < n ? ZMQ_SNDMORE : 0) < 0) zmq_msg_close(&c);
  }
  return 0;
}

/* --- which shard holds a key ------------------------------------------------
 *
 * With several shards, dedupe by (tenant, key) needs to know which shard
 * took a key first (the command lives in its device's shard).  Each value
 * under a key's hash is the shard index in its low 8 bits and, above them,
 * the stamp: the number of the last message (this thread's count of 'Q'
 * and 'F' messages to that shard) that may have stored the key there.  A
 * shard that no longer holds a key (past the dedupe window) says so with
 * 'X', giving the number of messages it had received when it decided;
 * the entry goes only when no message sent after that could have stored
 * the key again, so a key reused at the very moment it expires is never
 * forgotten while a shard holds it.  Shards announce their keys at start
 * ('K') with stamp 0. */
#define KEY_SHARD(v) ((unsigned)((v) & 0xff))
#define KEY_STAMP(v) ((v) >> 8)

/* Remove (h -> shard) when its stamp is at most upto. */
static void key_drop(fq_ingress_t *in, uint64_t h, unsigned shard, uint64_t upto) {
  uint64_t found[8], v;
  size_t n = 0, cur = 0;
  while (n < 8 && fq_idem_next(in->keys, h, &cur, &v))
    if (KEY_SHARD(v) == shard && KEY_STAMP(v) <= upto) found[n++] = v;
  for (size_t i = 0; i < n; i++) fq_idem_del(in->keys, h, found[i]);
}

/* (h -> shard), stamped with the next message to that shard (the one
 * about to carry the key).  0 or -ENOMEM. */
static int key_mark(fq_ingress_t *in, uint64_t h, unsigned shard) {
  key_drop(in, h, shard, UINT64_MAX);
  return fq_idem_put(in->keys, h, (in->sent[shard] + 1) << 8 | shard);
}

/* --- CURVE: admission (ZAP), handshake failures, authorization ---------- */

/* Frames of a ZAP request (ZeroMQ RFC 27): version, request id, domain,
 * address, routing id, mechanism, credentials.  The reply carries the
 * client's Z85 public key as User-Id, which libzmq attaches to every
 * message of that connection: authorization looks the key up again on each
 * request, so a reload takes effect at once. */
static void handle_zap(fq_ingress_t *in) {
  zmq_msg_t f[8];
  bool overflow;
  int n = fq_zmsg_recv(in->zap, f, 8, ZMQ_DONTWAIT, &overflow);
  if (n <= 0) return;
  const char *status = "400", *text = "client key not allowed";
  char user[41] = "", addr[64] = "?";
  if (n >= 4) {
    size_t al = zmq_msg_size(&f[3]);
    snprintf(addr, sizeof addr, "%.*s", (int)(al < 63 ? al : 63), (const char *)zmq_msg_data(&f[3]));
  }
  bool is_curve = n >= 7 && zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5);
  if (is_curve && zmq_msg_size(&f[6]) == 32) {
    char z[41];
    zmq_z85_encode(z, zmq_msg_data(&f[6]), 32);
    const fq_client_entry_t *e = fq_clients_find(in->clients, z, 40);
    if (e) {
      status = "200";
      text = "OK";
      memcpy(user, z, 41);
      fq_debug("ingress", "client \"%s\" (key %.8s...) connected from %s", e->name, z, addr);
    } else if (ratelog_ok(&in->rl_zap, "refused connections")) {
      fq_warn("ingress",
              "refused a connection from %s: CURVE key %.8s... is not in the clients file", addr,
              z);
    }
  } else if (ratelog_ok(&in->rl_zap, "refused connections")) {
    fq_warn("ingress", "refused a connection from %s: it does not use CURVE", addr);
  }
  /* REP: a reply is owed whatever came in. */
  zmq_send(in->zap, "1.0", 3, ZMQ_SNDMORE);
  if (n >= 2)
    zmq_send(in->zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
  else
    zmq_send(in->zap, "", 0, ZMQ_SNDMORE);
  zmq_send(in->zap, status, 3, ZMQ_SNDMORE);
  zmq_send(in->zap, text, strlen(text), ZMQ_SNDMORE);
  zmq_send(in->zap, user, strlen(user), ZMQ_SNDMORE);
  zmq_send(in->zap, "", 0, 0);
  fq_zmsg_close(f, n);
}

/* Handshake failures reported by a socket monitor: a plaintext client
 * meets a CURVE server here (ZAP never sees it), as does a client using
 * another server key.  Returns true when the monitor has stopped. */
static bool handle_monitor(fq_ingress_t *in, void *mon, const char *sock) {
  bool stopped = false;
  for (int budget = 0; budget < 64; budget++) {
    zmq_msg_t f[2];
    bool overflow;
    int n = fq_zmsg_recv(mon, f, 2, ZMQ_DONTWAIT, &overflow);
    if (n <= 0) break;
    if (n == 2 && zmq_msg_size(&f[0]) >= 6) {
      const uint8_t *d = zmq_msg_data(&f[0]);
      uint16_t ev;
      uint32_t val;
      memcpy(&ev, d, 2);
      memcpy(&val, d + 2, 4);
      if (ev == ZMQ_EVENT_MONITOR_STOPPED) {
        stopped = true;
      } else if (ratelog_ok(&in->rl_hs, "failed handshakes")) {
        char why[160];
        snprintf(why, sizeof why, "the handshake failed (code 0x%x)", val);
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
          snprintf(why, sizeof why,
                   "the connection ended during the handshake (%s): a client without CURVE, or "
                   "one using another server key",
                   fq_strerror(-(int)val));
        else if (val == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
          snprintf(why, sizeof why, "the client does not use CURVE (plaintext or another mechanism)");
        else if (val == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
          snprintf(why, sizeof why,
                   "the client's CURVE handshake does not decrypt (wrong server key?)");
        size_t al = zmq_msg_size(&f[1]);
        fq_warn("ingress", "refused a client on the %s socket (%.*s): %s", sock,
                (int)(al < 80 ? al : 80), (const char *)zmq_msg_data(&f[1]), why);
      }
    }
    fq_zmsg_close(f, n);
  }
  return stopped;
}

typedef struct sub_apply {
  void *pub;
  int opt;
} sub_apply_t;

static void apply_sub(void *ud, const char *prefix, size_t len) {
  sub_apply_t *a = ud;
  zmq_setsockopt(a->pub, a->opt, prefix, len);
}

/* Subscriptions arriving on the XPUB: each is applied (manual mode) only
 * within the subscriber's tenants, so a "" subscription of a key holding
 * tenant acme receives acme/... and nothing else. */
static void handle_subscriptions(fq_ingress_t *in) {
  for (int budget = 0; budget < 1024; budget++) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, in->pub, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      break;
    }
    size_t len = zmq_msg_size(&m);
    const uint8_t *d = zmq_msg_data(&m);
    if (len >= 1 && (d[0] == 0 || d[0] == 1)) {
      const char *uid = zmq_msg_gets(&m, "User-Id");
      const fq_client_entry_t *e = uid ? fq_clients_find(in->clients, uid, strlen(uid)) : NULL;
      if (e && (e->roles & FQ_ROLE_SUBSCRIBE)) {
        sub_apply_t a = {in->pub, d[0] ? ZMQ_SUBSCRIBE : ZMQ_UNSUBSCRIBE};
        fq_client_map_subscription(e, (const char *)d + 1, len - 1, apply_sub, &a);
      } else if (d[0] == 1 && ratelog_ok(&in->rl_forbid, "refused requests")) {
        if (e)
          fq_warn("ingress", "client \"%s\" subscribed without the \"subscribe\" role: it "
                  "receives nothing", e->name);
        else
          fq_warn("ingress", "a subscription from a key no longer in the clients file was "
                  "ignored");
      }
    }
    zmq_msg_close(&m);
  }
}

/* Re-create the status socket: its subscribers reconnect (SUB does so by
 * itself), pass ZAP again and re-subscribe under the new table.  The old
 * socket's end is awaited so that its listener has released the address
 * (and an ipc:// file) before the new one binds. */
static void reopen_pub(fq_ingress_t *in) {
  if (in->pub) zmq_close(in->pub);
  in->pub = NULL;
  if (in->mon_pub) {
    /* Keep answering ZAP meanwhile: a subscriber reconnecting at once may
     * reach the old listener, and the old socket cannot finish closing
     * while that handshake waits for its ZAP reply. */
    int64_t until = fq_now_ms() + 5000;
    bool stopped = false;
    while (!stopped && fq_now_ms() < until) {
      zmq_pollitem_t it[2] = {{in->mon_pub, 0, ZMQ_POLLIN, 0}, {in->zap, 0, ZMQ_POLLIN, 0}};
      if (zmq_poll(it, 2, 100) <= 0) continue;
      if (it[1].revents & ZMQ_POLLIN) handle_zap(in);
      if (it[0].revents & ZMQ_POLLIN) stopped = handle_monitor(in, in->mon_pub, "status");
    }
    if (!stopped) fq_warn("ingress", "the old status socket did not report its end in 5 s");
    zmq_close(in->mon_pub);
    in->mon_pub = NULL;
  }
  fq_err_t err;
  fq_err_clear(&err);
  for (int tries = 0; tries < 100; tries++) {
    if (open_pub(in, &err) == 0) return;
    if (in->pub) zmq_close(in->pub);
    if (in->mon_pub) zmq_close(in->mon_pub);
    in->pub = in->mon_pub = NULL;
    usleep(10000);
  }
  fq_error("ingress", "status stream is down: %s (retrying; events stay in history)", err.msg);
}

/* SIGHUP: read the clients file again.  A file with a mistake leaves the
 * table (and its budgets) in force as it was; a key removed or narrowed
 * loses access from the next request on, and its status subscriptions are
 * dropped; its budgets apply from the next submit on. */
static void reload_clients(fq_ingress_t *in) {
  char buf[64];
  while (read(in->o.reload_fd, buf, sizeof buf) > 0) {
  }
  if (!in->curve || !in->o.clients_file) return;
  fq_err_t err;
  fq_err_clear(&err);
  fq_clients_t *neu = fq_clients_load(in->o.clients_file, &err);
  if (!neu) {
    fq_error("ingress", "clients file not reloaded, the previous one stays in force: %s", err.msg);
    return;
  }
  bool narrowed = fq_clients_narrowed(in->clients, neu);
  fq_clients_free(&in->clients);
  in->clients = neu;
  size_t nb;
  const fq_budget_limit_t *b = fq_clients_budgets(neu, &nb);
  fq_budget_set_limits(FQ_BUDGET_CLIENTS, b, nb);
  fq_info("ingress", "clients file %s reloaded: %zu key(s)%s", in->o.clients_file,
          fq_clients_count(neu),
          narrowed ? "; access was narrowed, so status subscribers reconnect and are checked again"
                   : "");
  if (narrowed) reopen_pub(in);
}

/* Whether the client behind a request may make it.  Returns 0 with *who
 * set (NULL without CURVE), or FQ_EFORBIDDEN with msg. */
static int authorize(fq_ingress_t *in, zmq_msg_t *body, const fq_request_t *req,
                     const fq_client_entry_t **who, char *msg, size_t cap) {
  *who = NULL;
  if (!in->curve) return 0;
  const char *uid = zmq_msg_gets(body, "User-Id");
  const fq_client_entry_t *e = uid ? fq_clients_find(in->clients, uid, strlen(uid)) : NULL;
  if (!e) {
    snprintf(msg, cap, "this client's key is not (or no longer) in fleetqd's clients file");
    return FQ_EFORBIDDEN;
  }
  *who = e;
  unsigned need = 0;
  const char *verb = "";
  switch (req->op) {
    case FQ_OP_PING: return 0;
    /* It names shards and accounts, not tenants' data: a reader or an
     * administrator may ask. */
    case FQ_OP_HEALTH: need = FQ_ROLE_READ | FQ_ROLE_ADMIN; verb = "read"; break;
    case FQ_OP_SUBMIT: need = FQ_ROLE_SUBMIT; verb = "submit"; break;
    case FQ_OP_GET: need = FQ_ROLE_READ; verb = "read"; break;
    case FQ_OP_HISTORY: need = FQ_ROLE_READ; verb = "read"; break;
    case FQ_OP_CANCEL: need = FQ_ROLE_CANCEL; verb = "cancel"; break;
    case FQ_OP_ADMIN: need = FQ_ROLE_ADMIN; verb = "admin"; break;
    case FQ_OP_USAGE: need = FQ_ROLE_READ | FQ_ROLE_ADMIN; verb = "read"; break;
    case FQ_OP_CAMPAIGN: need = FQ_ROLE_SUBMIT; verb = "submit"; break;
    case FQ_OP_CAMPAIGN_GET: need = FQ_ROLE_READ; verb = "read"; break;
    case FQ_OP_CAMPAIGN_ABORT: need = FQ_ROLE_CANCEL; verb = "cancel"; break;
    default: return 0;
  }
  if (!(e->roles & need)) {
    char have[64];
    fq_client_roles_str(e->roles, have, sizeof have);
    snprintf(msg, cap, "client \"%s\" lacks the \"%s\" role (it has: %s)", e->name, verb,
             have[0] ? have : "none");
    return FQ_EFORBIDDEN;
  }
  /* Every tenant's counts are for an administrator; a reader names one of
   * its tenants. */
  if (req->op == FQ_OP_USAGE && !req->tenant.p && !(e->roles & FQ_ROLE_ADMIN)) {
    snprintf(msg, cap, "client \"%s\" may read usage only of its tenants: name one (tenant)",
             e->name);
    return FQ_EFORBIDDEN;
  }
  if (req->op != FQ_OP_ADMIN && req->tenant.p &&
      !fq_client_has_tenant(e, req->tenant.p, req->tenant.n)) {
    snprintf(msg, cap, "client \"%s\" may not act for tenant \"%.*s\"", e->name,
             (int)req->tenant.n, req->tenant.p);
    return FQ_EFORBIDDEN;
  }
  return 0;
}

/* --- health ------------------------------------------------------------------ */

/* Answer a health request with what the shards said so far; the ones
 * that did not answer count as stuck (health.h). */
static void health_finish(fq_ingress_t *in, health_wait_t *hw) {
  static char ids[HEALTH_ACCOUNTS][FQ_ACCOUNT_ID_MAX + 1];
  static int codes[HEALTH_ACCOUNTS];
  static char reasons[HEALTH_ACCOUNTS][200];
  static fq_health_account_t acc[HEALTH_ACCOUNTS];
  size_t nacc = fq_auth_refresh_failures(in->o.auth, ids, codes, reasons, HEALTH_ACCOUNTS);
  if (nacc > HEALTH_ACCOUNTS) nacc = HEALTH_ACCOUNTS;
  for (size_t i = 0; i < nacc; i++) {
    snprintf(acc[i].name, sizeof acc[i].name, "%.64s", ids[i]);
    acc[i].code = codes[i];
    snprintf(acc[i].reason, sizeof acc[i].reason, "%.199s", reasons[i]);
  }
  fq_buf_reset(&in->out);
  if (fq_health_reply(&in->out, hw->h, in->o.nshards, acc, nacc, hw->stuck_ms, fq_now_ms(),
                      hw->has_req ? hw->req_raw : NULL, hw->req_len) != 0)
    fq_wire_reply_error(&in->out, FQ_EINTERNAL, "cannot encode the health reply",
                        hw->has_req ? hw->req_raw : NULL, hw->req_len);
  reply_client(in, hw->frames, hw->nframes - 1, in->out.data, in->out.len);
  fq_zmsg_close(hw->frames, hw->nframes);
  hw->nframes = 0;
  hw->token = 0;
}

/* Ask every shard ('H'); the request's frames are kept for the reply. */
static void health_start(fq_ingress_t *in, zmq_msg_t *f, int n, const fq_request_t *req) {
  health_wait_t *hw = NULL;
  for (int i = 0; i < HEALTH_SLOTS && !hw; i++)
    if (!in->health[i].token) hw = &in->health[i];
  if (!hw) {
    reply_error(in, f, n - 1, FQ_EBUSY, "too many health checks in flight; retry", req);
    return;
  }
  hw->token = in->next_token++;
  hw->stuck_ms = req->stuck_ms;
  int64_t wait = req->stuck_ms < HEALTH_WAIT_MS ? req->stuck_ms : HEALTH_WAIT_MS;
  hw->deadline = fq_now_ms() + wait;
  hw->has_req = req->req_raw && req->req_raw_len <= sizeof hw->req_raw;
  hw->req_len = hw->has_req ? req->req_raw_len : 0;
  if (hw->has_req) memcpy(hw->req_raw, req->req_raw, hw->req_len);
  hw->remaining = 0;
  for (unsigned i = 0; i < in->o.nshards; i++) {
    memset(&hw->h[i], 0, sizeof hw->h[i]);
    hw->h[i].index = i;
    /* Never blocking: a shard whose queue is full does not answer. */
    if (zmq_send(in->pairs[i], "H", 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) == 1 &&
        zmq_send(in->pairs[i], &hw->token, 8, ZMQ_DONTWAIT) == 8)
      hw->remaining++;
  }
  hw->nframes = n;
  for (int i = 0; i < n; i++) {
    zmq_msg_init(&hw->frames[i]);
    zmq_msg_move(&hw->frames[i], &f[i]);
  }
  if (hw->remaining == 0) health_finish(in, hw);
}

static void on_health_answer(fq_ingress_t *in, unsigned idx, const zmq_msg_t *tok,
                             const zmq_msg_t *body) {
  if (zmq_msg_size(tok) != 8 || zmq_msg_size(body) != sizeof(fq_shard_health_t) ||
      idx >= in->o.nshards)
    return;
  uint64_t token;
  memcpy(&token, zmq_msg_data((zmq_msg_t *)tok), 8);
  for (int i = 0; i < HEALTH_SLOTS; i++) {
    health_wait_t *hw = &in->health[i];
    if (hw->token != token) continue;
    /* A late answer to a finished request finds no slot: dropped. */
    if (hw->h[idx].answered) return;
    memcpy(&hw->h[idx], zmq_msg_data((zmq_msg_t *)body), sizeof hw->h[idx]);
    hw->h[idx].answered = true;
    if (--hw->remaining == 0) health_finish(in, hw);
    return;
  }
}

/* Requests whose wait is over; returns the ms until the next deadline
 * (or -1 when none waits). */
static long health_expire(fq_ingress_t *in) {
  int64_t now = fq_now_ms();
  long next = -1;
  for (int i = 0; i < HEALTH_SLOTS; i++) {
    health_wait_t *hw = &in->health[i];
    if (!hw->token) continue;
    if (now >= hw->deadline) {
      health_finish(in, hw);
      continue;
    }
    long left = (long)(hw->deadline - now);
    if (next < 0 || left < next) next = left;
  }
  return next;
}

/* --- cluster mode: forwarding to the owner ------------------------------------ */

/* The DEALER to the node at ep, made on first use.  Its routing id names
 * this node, so that the owner knows the request was forwarded. */
static void *fwd_sock(fq_ingress_t *in, const char *ep) {
  fwd_peer_t *freep = NULL;
  for (int i = 0; i < FWD_PEERS; i++) {
    if (in->fwd[i].sock && strcmp(in->fwd[i].ep, ep) == 0) return in->fwd[i].sock;
    if (!in->fwd[i].sock && !freep) freep = &in->fwd[i];
  }
  if (!freep) {
    /* More owners than slots (endpoints change as nodes move): the least
     * used one makes room. */
    freep = &in->fwd[0];
    for (int i = 1; i < FWD_PEERS; i++)
      if (in->fwd[i].sent < freep->sent) freep = &in->fwd[i];
    zmq_close(freep->sock);
    freep->sock = NULL;
  }
  void *s = zmq_socket(in->o.zmq_ctx, ZMQ_DEALER);
  if (!s) return NULL;
  /* Unique per process and socket: a restarted node that reused its
   * routing id would be refused by the owner's ROUTER while the old
   * connection is still known there, and its replies lost. */
  char id[128];
  uint8_t rnd[6] = {0};
  (void)RAND_bytes(rnd, sizeof rnd); /* a name, not a secret: zeros would do too */
  int idl = snprintf(id, sizeof id, FWD_ID_PREFIX "%s:%d.%02x%02x%02x%02x%02x%02x",
                     fq_clnode_id(in->o.cluster), (int)getpid(), rnd[0], rnd[1], rnd[2], rnd[3],
                     rnd[4], rnd[5]);
  int hwm = 100000, linger = 0;
  if (zmq_setsockopt(s, ZMQ_ROUTING_ID, id, (size_t)idl) != 0 ||
      zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
      zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
      zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0 || zmq_connect(s, ep) != 0) {
    fq_warn("ingress", "cluster: cannot connect to the node at %s: %s", ep,
            zmq_strerror(zmq_errno()));
    zmq_close(s);
    return NULL;
  }
  snprintf(freep->ep, sizeof freep->ep, "%s", ep);
  freep->sock = s;
  freep->sent = 0;
  fq_info("ingress", "cluster: forwarding to the node at %s", ep);
  return s;
}

/* Whether the request in f[0..n) came from another node's forwarding. */
static bool from_node(zmq_msg_t *f) {
  size_t l = sizeof FWD_ID_PREFIX - 1;
  return zmq_msg_size(&f[0]) > l && memcmp(zmq_msg_data(&f[0]), FWD_ID_PREFIX, l) == 0;
}

/* Cluster mode: where the request for shard goes.  true: handled here
 * (forwarded, or answered busy); false: the local shard takes it. */
static bool cluster_route(fq_ingress_t *in, unsigned shard, zmq_msg_t *f, int n, int nenv,
                          const fq_request_t *req) {
  if (!in->o.cluster || shard >= in->o.nshards || from_node(f)) return false;
  char ep[256];
  int r = fq_clnode_route(in->o.cluster, shard, ep, sizeof ep);
  if (r == FQ_CLNODE_LOCAL) return false;
  char msg[400];
  void *s = r == FQ_CLNODE_REMOTE ? fwd_sock(in, ep) : NULL;
  if (s) {
    int i;
    for (i = 0; i < n; i++) {
      zmq_msg_t c;
      zmq_msg_init(&c);
      zmq_msg_copy(&c, &f[i]);
      if (zmq_msg_send(&c, s, (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&c);
        break;
      }
    }
    if (i == n) {
      in->forwarded++;
      for (int k = 0; k < FWD_PEERS; k++)
        if (in->fwd[k].sock == s) in->fwd[k].sent++;
      return true;
    }
    /* A message is all or nothing in ZeroMQ: a first frame refused sent
     * nothing; the owner's queue is full. */
    snprintf(msg, sizeof msg, "shard %u lives on the node at %s, which is not taking "
             "requests now; retry with the same key", shard, ep);
  } else {
    snprintf(msg, sizeof msg, "shard %u has no owner right now (a cluster node is taking it "
             "over); retry with the same key", shard);
  }
  in->fwd_busy++;
  reply_error(in, f, nenv, FQ_EBUSY, msg, req);
  return true;
}

/* A reply the owner sent back for a forwarded request: [client routing id,
 * envelope..., body], to the client as it is. */
static void handle_forwarded(fq_ingress_t *in, void *s) {
  for (int k = 0; k < 4096; k++) {
    zmq_msg_t f[RECV_FRAMES];
    bool overflow;
    int n = fq_zmsg_recv(s, f, RECV_FRAMES, ZMQ_DONTWAIT, &overflow);
    if (n <= 0) break;
    if (n >= 2 && !overflow)
      reply_client(in, f, n - 1, zmq_msg_data(&f[n - 1]), zmq_msg_size(&f[n - 1]));
    fq_zmsg_close(f, n);
  }
}

static bool handle_client(fq_ingress_t *in) {
  zmq_msg_t f[RECV_FRAMES];
  bool overflow;
  int n = fq_zmsg_recv(in->router, f, RECV_FRAMES, ZMQ_DONTWAIT, &overflow);
  if (n <= 0) return false;
  int nenv = n - 1;
  fq_request_t req;
  memset(&req, 0, sizeof req);
  fq_err_t err;
  fq_err_clear(&err);
  char msg[FQ_ERRMSG_MAX + 64];
  if (n < 2) {
    /* Only the identity frame: nothing to answer with but the identity. */
    reply_error(in, f, 1, FQ_EBADREQ, "empty message: expected a msgpack map as the last frame",
                NULL);
    goto out;
  }
  const uint8_t *body = zmq_msg_data(&f[n - 1]);
  size_t blen = zmq_msg_size(&f[n - 1]);
  int rc;
  if (!envelope_ok(f, n, overflow, msg, sizeof msg)) {
    /* Refused whatever the body says; its `req` is echoed when it has one
     * (with overflow the last frame kept is not the body). */
    if (!overflow) fq_wire_decode_request(body, blen, &req, &err);
    reply_cut_envelope(in, f, overflow ? n : nenv, msg, overflow ? NULL : &req);
    goto out;
  }
  rc = fq_wire_decode_request(body, blen, &req, &err);
  if (rc) {
    reply_error(in, f, nenv, rc, err.msg, &req);
    goto out;
  }
  const fq_client_entry_t *who = NULL;
  if ((rc = authorize(in, &f[n - 1], &req, &who, msg, sizeof msg)) != 0) {
    if (ratelog_ok(&in->rl_forbid, "refused requests")) fq_warn("ingress", "forbidden: %s", msg);
    reply_error(in, f, nenv, rc, msg, &req);
    goto out;
  }
  unsigned shard = 0;
  switch (req.op) {
    case FQ_OP_PING:
      fq_buf_reset(&in->out);
      fq_wire_reply_ping(&in->out, FQ_VERSION, in->o.nshards, req.req_raw, req.req_raw_len);
      reply_client(in, f, nenv, in->out.data, in->out.len);
      goto out;
    case FQ_OP_HEALTH:
      health_start(in, f, n, &req);
      goto out;
    case FQ_OP_USAGE: {
      /* The counts are process-wide (budget.h): answered here. */
      fq_usage_row_t *rows = NULL;
      size_t nr = fq_budget_usage(req.tenant.p, req.tenant.n, (int)req.days, fq_now_ms(), &rows);
      fq_buf_reset(&in->out);
      if (fq_wire_reply_usage(&in->out, rows, nr, req.req_raw, req.req_raw_len) != 0) {
        free(rows);
        reply_error(in, f, nenv, FQ_EINTERNAL, "cannot encode the usage reply", &req);
        goto out;
      }
      free(rows);
      reply_client(in, f, nenv, in->out.data, in->out.len);
      goto out;
    }
    case FQ_OP_CAMPAIGN:
    case FQ_OP_CAMPAIGN_GET:
    case FQ_OP_CAMPAIGN_ABORT:
      if (!in->cm) {
        reply_error(in, f, nenv, FQ_EBADREQ, "\"op\": campaigns are not available", &req);
        goto out;
      }
      if (in->o.cluster) {
        reply_error(in, f, nenv, FQ_EBADREQ, "\"op\": campaigns are not available in cluster "
                    "mode yet (docs/cluster.md)", &req);
        goto out;
      }
      {
        /* To the manager: [Q who envelope... body]; who (campmgr.h) lets
         * it check the tenants of the campaign asked for. */
        size_t acl = who && !who->all_tenants ? who->acl_len : 0;
        zmq_msg_t wm;
        if (zmq_msg_init_size(&wm, who ? 1 + acl : 0) != 0) {
          reply_error(in, f, nenv, FQ_EBUSY, "out of memory", &req);
          goto out;
        }
        if (who) {
          uint8_t *wp = zmq_msg_data(&wm);
          wp[0] = who->all_tenants ? 'A' : 'L';
          if (acl) memcpy(wp + 1, who->acl, acl);
        }
        zmq_send(in->camp_sock, "Q", 1, ZMQ_SNDMORE);
        if (zmq_msg_send(&wm, in->camp_sock, ZMQ_SNDMORE) < 0) zmq_msg_close(&wm);
        for (int i = 0; i < n; i++) {
          zmq_msg_t c;
          zmq_msg_init(&c);
          zmq_msg_move(&c, &f[i]);
          if (zmq_msg_send(&c, in->camp_sock, i + 1 < n ? ZMQ_SNDMORE : 0) < 0) zmq_msg_close(&c);
        }
      }
      goto out;
    case FQ_OP_SUBMIT: {
      char dev[FQ_DEVICE_MAX];
      size_t dl = fq_wire_device_key(&req, dev, sizeof dev);
      shard = fq_shard_for_device(dev, dl, in->o.nshards);
      if (cluster_route(in, shard, f, n, nenv, &req)) goto out;
      if (in->o.nshards == 1) break;
      /* Dedupe is per (tenant, key) across devices, but a command lives in
       * its device's shard.  Remember which shard first took each key; a
       * key seen on another shard is checked there before this submit may
       * create anything. */
      uint64_t h = fq_hash64_pair(req.tenant.p, req.tenant.n, req.key.p, req.key.n), other;
      size_t cur = 0;
      bool seen_here = false, seen_elsewhere = false;
      unsigned where = 0;
      while (fq_idem_next(in->keys, h, &cur, &other)) {
        if (KEY_SHARD(other) == shard) seen_here = true;
        else {
          seen_elsewhere = true;
          where = KEY_SHARD(other);
        }
      }
      /* Cluster mode: a key seen on a shard another node owns is checked
       * there only when that node is this one (docs/cluster.md). */
      if (seen_elsewhere && !seen_here && in->o.cluster &&
          fq_clnode_route(in->o.cluster, where, NULL, 0) != FQ_CLNODE_LOCAL)
        seen_elsewhere = false;
      if (!seen_elsewhere || seen_here) {
        /* Stamped anew even when known: this submit may store it again. */
        if (key_mark(in, h, shard) != 0) {
          reply_error(in, f, nenv, FQ_EBUSY, "out of memory", &req);
          goto out;
        }
        break;
      }
      uint64_t token = in->next_token++;
      fanout_t *fo = &in->fan[token % FANOUT_SLOTS];
      if (fo->token) {
        reply_error(in, f, nenv, FQ_EBUSY, "too many lookups in flight; retry", &req);
        goto out;
      }
      if (to_shard(in, where, 'F', &token, f, n, false, who) != 0) {
        reply_error(in, f, nenv, FQ_EBUSY, "fleetqd is saturated (shard queue full); retry later",
                    &req);
        goto out;
      }
      *fo = (fanout_t){.token = token, .remaining = 1, .check = true, .check_shard = where,
                       .dev_shard = shard, .keyhash = h, .nframes = n};
      for (int i = 0; i < n; i++) {
        zmq_msg_init(&fo->frames[i]);
        zmq_msg_move(&fo->frames[i], &f[i]);
      }
      goto out;
    }
    case FQ_OP_HISTORY:
      if (req.shard >= in->o.nshards) {
        snprintf(msg, sizeof msg, "\"shard\": %u is out of range 0..%u", req.shard,
                 in->o.nshards - 1);
        reply_error(in, f, nenv, FQ_EBADPARAM, msg, &req);
        goto out;
      }
      shard = req.shard;
      break;
    case FQ_OP_GET:
    case FQ_OP_CANCEL:
      if (req.id.p) {
        int s = fq_store_id_shard(req.id.p, req.id.n);
        if (s < 0 || (unsigned)s >= in->o.nshards) {
          snprintf(msg, sizeof msg, "no command with id \"%.*s\"",
                   (int)(req.id.n > 64 ? 64 : req.id.n), req.id.p);
          reply_error(in, f, nenv, FQ_ENOTFOUND, msg, &req);
          goto out;
        }
        shard = (unsigned)s;
        break;
      }
      if (in->o.nshards > 1 && in->o.cluster) {
        reply_error(in, f, nenv, FQ_EBADPARAM, "\"id\" is required in cluster mode: a lookup "
                    "by tenant and key would ask every shard, and they live on several nodes "
                    "(docs/cluster.md)", &req);
        goto out;
      }
      if (in->o.nshards > 1) {
        /* A lookup by tenant + key: the command lives in its device's shard,
         * which the key alone does not name, so ask every shard. */
        uint64_t token = in->next_token++;
        fanout_t *fo = &in->fan[token % FANOUT_SLOTS];
        if (fo->token) {
          reply_error(in, f, nenv, FQ_EBUSY, "too many lookups in flight; retry", &req);
          goto out;
        }
        fo->token = token;
        fo->remaining = in->o.nshards;
        fo->answered = false;
        for (unsigned i = 0; i < in->o.nshards; i++) {
          if (to_shard(in, i, 'F', &token, f, n, false, who) != 0) {
            /* That shard will not answer: count it as "not here". */
            fo->remaining--;
          }
        }
        if (fo->remaining == 0) {
          fo->token = 0;
          reply_error(in, f, nenv, FQ_EBUSY, "shards are saturated; retry", &req);
        }
        goto out;
      }
      break;
    case FQ_OP_ADMIN:
      if (!in->pairs[in->o.nshards]) {
        reply_error(in, f, nenv, FQ_EBADREQ, "\"op\": admin is not available", &req);
        goto out;
      }
      shard = in->o.nshards; /* the auth thread */
      break;
    default:
      reply_error(in, f, nenv, FQ_EBADREQ, "\"op\": not supported", &req);
      goto out;
  }
  if (req.op != FQ_OP_SUBMIT && req.op != FQ_OP_ADMIN && cluster_route(in, shard, f, n, nenv, &req))
    goto out;
  if (to_shard(in, shard, 'Q', NULL, f, n, true, who) != 0) {
    reply_error(in, f, nenv, FQ_EBUSY, "fleetqd is saturated (shard queue full); retry later",
                &req);
  }
out:
  fq_zmsg_close(f, n);
  return true;
}

typedef struct part {
  const uint8_t *p;
  size_t n;
} part_t;

static void send_parts(void *sock, const part_t *parts, int n, int flags) {
  for (int i = 0; i < n; i++)
    zmq_send(sock, parts[i].p, parts[i].n, (i + 1 < n ? ZMQ_SNDMORE : 0) | flags);
}

/* A shard's reply to a client: parts = envelope frames + reply. */
static void relay_reply(fq_ingress_t *in, const part_t *parts, int n) {
  fq_frame_t fr[REQ_FRAMES];
  if (n < 2 || n > REQ_FRAMES) return;
  for (int i = 0; i < n - 1; i++) fr[i] = (fq_frame_t){parts[i].p, parts[i].n};
  send_reply(in, fr, n - 1, parts[n - 1].p, parts[n - 1].n);
}

/* A shard's answer to a lookup ('F'): parts = envelope frames + reply. */
static void on_lookup_reply(fq_ingress_t *in, uint64_t token, uint8_t found, const part_t *parts,
                            int n) {
  fanout_t *fo = &in->fan[token % FANOUT_SLOTS];
  if (fo->token != token) return;
  if (fo->check) {
    if (found) {
      relay_reply(in, parts, n);
    } else {
      /* Not there after all (an entry left by a failed batch): the key is
       * new, so the submit goes to its device's shard. */
      key_drop(in, fo->keyhash, fo->check_shard, UINT64_MAX);
      key_mark(in, fo->keyhash, fo->dev_shard);
      if (to_shard(in, fo->dev_shard, 'Q', NULL, fo->frames, fo->nframes, true, NULL) != 0) {
        fq_buf_reset(&in->out);
        fq_wire_reply_error(&in->out, FQ_EBUSY,
                            "fleetqd is saturated (shard queue full); retry later", NULL, 0);
        fq_metrics_submit(FQ_EBUSY);
        reply_client(in, fo->frames, fo->nframes - 1, in->out.data, in->out.len);
      }
    }
    fq_zmsg_close(fo->frames, fo->nframes);
    fo->nframes = 0;
    fo->token = 0;
    fo->check = false;
    return;
  }
  fo->remaining--;
  if ((found && !fo->answered) || (fo->remaining == 0 && !fo->answered)) {
    fo->answered = true;
    relay_reply(in, parts, n);
  }
  if (fo->remaining == 0) fo->token = 0;
}

static bool take(const uint8_t **p, const uint8_t *end, void *out, size_t n) {
  if ((size_t)(end - *p) < n) return false;
  memcpy(out, *p, n);
  *p += n;
  return true;
}

static bool take_part(const uint8_t **p, const uint8_t *end, part_t *out) {
  uint32_t len;
  if (!take(p, end, &len, 4) || (size_t)(end - *p) < len) return false;
  out->p = *p;
  out->n = len;
  *p += len;
  return true;
}

/* One 'B' frame of a shard (format in shard.c): publish its events, then
 * answer its replies.  The bytes come from our own shard thread; a
 * malformed record is a bug, logged and the rest of the frame skipped. */
static void relay_batch(fq_ingress_t *in, const uint8_t *p, size_t len) {
  const uint8_t *end = p + len;
  while (p < end) {
    char kind = (char)*p++;
    part_t parts[REQ_FRAMES];
    uint8_t nenv = 0, found = 1;
    uint64_t token = 0;
    if (kind == 'E') {
      if (!take_part(&p, end, &parts[0]) || !take_part(&p, end, &parts[1])) break;
      if (in->pub) {
        send_parts(in->pub, parts, 2, ZMQ_DONTWAIT);
        fq_metrics_events(1);
      }
      continue;
    }
    if (kind == 'F' && (!take(&p, end, &token, 8) || !take(&p, end, &found, 1))) break;
    if ((kind != 'R' && kind != 'F' && kind != 'C') || !take(&p, end, &nenv, 1) ||
        nenv >= REQ_FRAMES)
      break;
    bool ok = true;
    for (int i = 0; i <= nenv && ok; i++) ok = take_part(&p, end, &parts[i]);
    if (!ok) break;
    if (kind == 'C') {
      if (in->camp_sock && nenv == 1) {
        zmq_send(in->camp_sock, "A", 1, ZMQ_SNDMORE);
        send_parts(in->camp_sock, parts, 2, 0);
      }
    } else if (kind == 'R')
      relay_reply(in, parts, nenv + 1);
    else
      on_lookup_reply(in, token, found, parts, nenv + 1);
  }
  if (p < end) fq_error("ingress", "malformed batch from a shard (%zu bytes left)", (size_t)(end - p));
}

/* Relay everything one peer (shard or auth thread) has sent.  Returns 1
 * when it said 'D'. */
static int handle_shard(fq_ingress_t *in, unsigned idx) {
  int done = 0;
  for (int budget = 0; budget < 4096; budget++) {
    zmq_msg_t f[REQ_FRAMES + 4];
    bool overflow;
    int n = fq_zmsg_recv(in->pairs[idx], f, REQ_FRAMES + 4, ZMQ_DONTWAIT, &overflow);
    if (n <= 0) break;
    char kind = zmq_msg_size(&f[0]) == 1 ? *(const char *)zmq_msg_data(&f[0]) : '?';
    if (kind == 'B' && n == 2) {
      relay_batch(in, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]));
    } else if (kind == 'R' && n >= 3) {
      /* The auth thread answers admin requests frame by frame. */
      reply_client(in, &f[1], n - 2, zmq_msg_data(&f[n - 1]), zmq_msg_size(&f[n - 1]));
    } else if (kind == 'N' && n == 2 && zmq_msg_size(&f[1]) == 8) {
      /* A shard's key count, before its keys: the table is sized for all
       * the shards' keys once (a failure only leaves it growing). */
      uint64_t cnt;
      memcpy(&cnt, zmq_msg_data(&f[1]), 8);
      in->keys_expected += cnt;
      (void)fq_idem_reserve(in->keys, fq_idem_count(in->keys) + (size_t)in->keys_expected);
    } else if (kind == 'K' && n == 2) {
      const uint8_t *p = zmq_msg_data(&f[1]);
      size_t cnt = zmq_msg_size(&f[1]) / 8;
      for (size_t i = 0; i < cnt; i++) {
        uint64_t h;
        memcpy(&h, p + 8 * i, 8);
        fq_idem_put(in->keys, h, idx);
      }
      in->keys_expected -= cnt < in->keys_expected ? cnt : in->keys_expected;
    } else if (kind == 'X' && n == 2 && zmq_msg_size(&f[1]) >= 8) {
      /* Keys the shard no longer holds, as of its upto-th message. */
      const uint8_t *p = zmq_msg_data(&f[1]);
      size_t cnt = (zmq_msg_size(&f[1]) - 8) / 8;
      uint64_t upto;
      memcpy(&upto, p, 8);
      for (size_t i = 0; i < cnt; i++) {
        uint64_t h;
        memcpy(&h, p + 8 + 8 * i, 8);
        key_drop(in, h, idx, upto);
      }
    } else if (kind == 'H' && n == 3) {
      on_health_answer(in, idx, &f[1], &f[2]);
    } else if (kind == 'L') {
      in->loaded++;
    } else if (kind == 'D') {
      done = 1;
    }
    fq_zmsg_close(f, n);
  }
  return done;
}

int fq_ingress_run(fq_ingress_t *in) {
  unsigned nshards = in->o.nshards;
  unsigned ns = nshards + (in->pairs[nshards] ? 1 : 0); /* peers: shards + auth */
  /* After the peers: stop fd, router, then the CURVE side (ZAP, monitors,
   * XPUB subscriptions) and the reload fd. */
  enum { X_STOP, X_ROUTER, X_ZAP, X_MONR, X_MONP, X_PUB, X_RELOAD, X_CAMP, X_N };
  zmq_pollitem_t *items = calloc(ns + X_N + FWD_PEERS, sizeof *items);
  bool *done = calloc(ns, sizeof *done);
  if (!items || !done) {
    free(items);
    free(done);
    return -ENOMEM;
  }
  bool stopping = false;
  unsigned ndone = 0;
  int64_t pub_retry = 0;
  while (ndone < ns) {
    for (unsigned i = 0; i < ns; i++) items[i] = (zmq_pollitem_t){in->pairs[i], 0, ZMQ_POLLIN, 0};
    zmq_pollitem_t *x = items + ns;
    x[X_STOP] = (zmq_pollitem_t){NULL, in->o.stop_fd, ZMQ_POLLIN, 0};
    /* Clients wait (ZeroMQ queues their requests) until every shard has
     * announced its keys: dedupe must see every stored key. */
    bool serving = !stopping && in->loaded >= nshards;
    x[X_ROUTER] = (zmq_pollitem_t){in->router, 0, serving ? ZMQ_POLLIN : 0, 0};
    /* Sockets that do not exist are polled as an fd of -1 (ignored). */
    x[X_ZAP] = (zmq_pollitem_t){in->zap, -1, in->zap ? ZMQ_POLLIN : 0, 0};
    x[X_MONR] = (zmq_pollitem_t){in->mon_router, -1, in->mon_router ? ZMQ_POLLIN : 0, 0};
    x[X_MONP] = (zmq_pollitem_t){in->mon_pub, -1, in->mon_pub ? ZMQ_POLLIN : 0, 0};
    bool xpub = in->curve && in->pub;
    x[X_PUB] = (zmq_pollitem_t){xpub ? in->pub : NULL, -1, xpub ? ZMQ_POLLIN : 0, 0};
    x[X_RELOAD] = (zmq_pollitem_t){NULL, in->o.reload_fd, in->o.reload_fd >= 0 ? ZMQ_POLLIN : 0,
                                   0};
    /* At least once a second: the reply ledger is swept (below). */
    long timeout = stopping ? 100 : 1000;
    if (in->o.heartbeat && timeout > in->o.heartbeat_ms) timeout = in->o.heartbeat_ms;
    long hwait = health_expire(in);
    if (hwait >= 0 && hwait < timeout) timeout = hwait;
    if (serving && !in->camp_serving) {
      in->camp_serving = true;
      camp_signal(in, 'G');
    }
    /* The campaign manager's messages, unless one waits for a full shard
     * queue: then that is tried again soon. */
    if (in->camp_nheld && camp_flush(in) != 0 && timeout > 5) timeout = 5;
    bool camp_in = in->camp_sock && !in->camp_nheld;
    x[X_CAMP] = (zmq_pollitem_t){camp_in ? in->camp_sock : NULL, -1, camp_in ? ZMQ_POLLIN : 0, 0};
    /* Cluster mode: replies to forwarded requests. */
    zmq_pollitem_t *fw = x + X_N;
    for (int k = 0; k < FWD_PEERS; k++)
      fw[k] = (zmq_pollitem_t){in->fwd[k].sock, -1, in->fwd[k].sock ? ZMQ_POLLIN : 0, 0};
    int rc = zmq_poll(items, (int)(ns + X_N + FWD_PEERS), timeout);
    if (in->o.heartbeat) atomic_fetch_add(in->o.heartbeat, 1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      if (errno == ETERM) break;
    }
    for (unsigned i = 0; i < ns; i++)
      if ((items[i].revents & ZMQ_POLLIN) && handle_shard(in, i) && !done[i]) {
        done[i] = true;
        ndone++;
      }
    if (x[X_ZAP].revents & ZMQ_POLLIN) {
      for (int k = 0; k < 64; k++) {
        zmq_pollitem_t it = {in->zap, 0, ZMQ_POLLIN, 0};
        if (k && zmq_poll(&it, 1, 0) <= 0) break;
        handle_zap(in);
      }
    }
    if (x[X_MONR].revents & ZMQ_POLLIN) handle_monitor(in, in->mon_router, "request");
    if (x[X_MONP].revents & ZMQ_POLLIN) handle_monitor(in, in->mon_pub, "status");
    if (xpub && (x[X_PUB].revents & ZMQ_POLLIN)) handle_subscriptions(in);
    if (x[X_RELOAD].revents & ZMQ_POLLIN) reload_clients(in);
    if (x[X_CAMP].revents & ZMQ_POLLIN) handle_campaigns(in);
    for (int k = 0; k < FWD_PEERS; k++)
      if (fw[k].revents & ZMQ_POLLIN) handle_forwarded(in, in->fwd[k].sock);
    health_expire(in);
    if (fq_now_ms() - in->last_sweep >= 1000) {
      in->last_sweep = fq_now_ms();
      sweep_replies(in);
    }
    if (!in->pub && fq_now_ms() - pub_retry >= 1000) {
      pub_retry = fq_now_ms();
      reopen_pub(in);
    }
    if (!stopping && (x[X_STOP].revents & ZMQ_POLLIN)) {
      stopping = true;
      camp_signal(in, 'H');
      /* The table grows with the keys inside the dedupe window and shrinks
       * as they leave it (16 bytes a key, shard.h 'X'). */
      fq_info("ingress", "stopping: draining %u shard(s)%s; %zu key(s) in the dedupe table",
              nshards, ns > nshards ? " and the auth thread" : "", fq_idem_count(in->keys));
      for (unsigned i = 0; i < ns; i++) {
        char t = 'T';
        /* Blocking send: the stop request must get through even when the
         * shard's queue is full, and the shard keeps draining it. */
        zmq_send(in->pairs[i], &t, 1, 0);
      }
    }
    if (serving && (x[X_ROUTER].revents & ZMQ_POLLIN)) {
      /* Fairness: a bounded burst of client requests, then the shards. */
      for (int k = 0; k < 256 && handle_client(in); k++) {
      }
    }
  }
  free(items);
  free(done);
  return 0;
}
