/*
 * Ingress: request routing and relaying between clients and shards.  See
 * ingress.h; the shard framing is documented in shard.h.
 */
#include "ingress.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "fleetq/wire.h"
#include "idem.h"
#include "log.h"
#include "store.h"
#include "util.h"
#include "zmsg.h"

#define MAX_FRAMES 16
#define FANOUT_SLOTS 4096

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
  zmq_msg_t frames[16];
} fanout_t;

struct fq_ingress {
  fq_ingress_opts_t o;
  void *router, *pub;
  void **pairs;
  fq_buf_t out;
  uint64_t next_token;
  fq_idem_t *keys;      /* hash(tenant, key) -> shard that stored it */
  unsigned loaded;      /* shards that finished announcing their keys */
  fanout_t fan[FANOUT_SLOTS];
};

static int sockopt_int(void *s, int opt, int v) { return zmq_setsockopt(s, opt, &v, sizeof v); }

fq_ingress_t *fq_ingress_new(const fq_ingress_opts_t *opts, fq_err_t *err) {
  fq_ingress_t *in = calloc(1, sizeof *in);
  if (!in) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  in->o = *opts;
  in->next_token = 1;
  fq_buf_init(&in->out, 0);
  in->keys = fq_idem_new(1 << 16);
  in->pairs = calloc(opts->nshards + 1, sizeof *in->pairs);
  in->router = zmq_socket(opts->zmq_ctx, ZMQ_ROUTER);
  in->pub = zmq_socket(opts->zmq_ctx, ZMQ_PUB);
  if (!in->pairs || !in->router || !in->pub || !in->keys) {
    fq_errf(err, FQ_EINTERNAL, "cannot create sockets: %s", zmq_strerror(errno));
    goto fail;
  }
  int64_t maxmsg = opts->max_msg_size;
  zmq_setsockopt(in->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  sockopt_int(in->router, ZMQ_SNDHWM, opts->client_hwm);
  sockopt_int(in->router, ZMQ_RCVHWM, opts->client_hwm);
  sockopt_int(in->router, ZMQ_LINGER, 0);
  sockopt_int(in->pub, ZMQ_SNDHWM, opts->pub_hwm);
  sockopt_int(in->pub, ZMQ_LINGER, 0);
  if (zmq_bind(in->router, opts->listen) != 0) {
    fq_errf(err, FQ_ECONFIG, "cannot listen on %s: %s", opts->listen, zmq_strerror(errno));
    goto fail;
  }
  if (zmq_bind(in->pub, opts->publish) != 0) {
    fq_errf(err, FQ_ECONFIG, "cannot publish on %s: %s", opts->publish, zmq_strerror(errno));
    goto fail;
  }
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
  if (in->router) zmq_close(in->router);
  if (in->pub) zmq_close(in->pub);
  if (in->pairs) {
    for (unsigned i = 0; i <= in->o.nshards; i++)
      if (in->pairs[i]) zmq_close(in->pairs[i]);
    free(in->pairs);
  }
  fq_buf_free(&in->out);
  fq_idem_destroy(&in->keys);
  for (size_t i = 0; i < FANOUT_SLOTS; i++)
    for (int j = 0; j < in->fan[i].nframes; j++) zmq_msg_close(&in->fan[i].frames[j]);
  free(in);
  *inp = NULL;
}

/* Send envelope frames (copied) then body to the ROUTER. */
static void reply_client(fq_ingress_t *in, zmq_msg_t *env, int nenv, const void *body,
                         size_t len) {
  for (int i = 0; i < nenv; i++) {
    zmq_msg_t c;
    zmq_msg_init(&c);
    zmq_msg_copy(&c, &env[i]);
    if (zmq_msg_send(&c, in->router, ZMQ_SNDMORE) < 0) zmq_msg_close(&c);
  }
  zmq_send(in->router, body, len, 0);
}

static void reply_error(fq_ingress_t *in, zmq_msg_t *env, int nenv, int code, const char *msg,
                        const fq_request_t *req) {
  fq_buf_reset(&in->out);
  fq_wire_reply_error(&in->out, code, msg, req ? req->req_raw : NULL, req ? req->req_raw_len : 0);
  reply_client(in, env, nenv, in->out.data, in->out.len);
}

/* Forward [kind (token) envelope... body] to one shard.  Returns 0 or
 * -EAGAIN when the shard's queue is full. */
static int to_shard(fq_ingress_t *in, unsigned shard, char kind, const uint64_t *token,
                    zmq_msg_t *frames, int n, bool move) {
  void *s = in->pairs[shard];
  if (zmq_send(s, &kind, 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -errno;
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

static bool handle_client(fq_ingress_t *in) {
  zmq_msg_t f[MAX_FRAMES];
  bool overflow;
  int n = fq_zmsg_recv(in->router, f, MAX_FRAMES, ZMQ_DONTWAIT, &overflow);
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
  if (overflow) {
    snprintf(msg, sizeof msg, "too many frames: at most %d envelope frames and one body",
             MAX_FRAMES - 1);
    reply_error(in, f, 1, FQ_EBADREQ, msg, NULL);
    goto out;
  }
  const uint8_t *body = zmq_msg_data(&f[n - 1]);
  size_t blen = zmq_msg_size(&f[n - 1]);
  int rc = fq_wire_decode_request(body, blen, &req, &err);
  if (rc) {
    reply_error(in, f, nenv, rc, err.msg, &req);
    goto out;
  }
  unsigned shard = 0;
  switch (req.op) {
    case FQ_OP_PING:
      fq_buf_reset(&in->out);
      fq_wire_reply_ping(&in->out, FQ_VERSION, in->o.nshards, req.req_raw, req.req_raw_len);
      reply_client(in, f, nenv, in->out.data, in->out.len);
      goto out;
    case FQ_OP_SUBMIT: {
      char dev[FQ_DEVICE_MAX];
      size_t dl = fq_wire_device_key(&req, dev, sizeof dev);
      shard = fq_shard_for_device(dev, dl, in->o.nshards);
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
        if (other == shard) seen_here = true;
        else {
          seen_elsewhere = true;
          where = (unsigned)other;
        }
      }
      if (!seen_elsewhere || seen_here) {
        if (!seen_here && fq_idem_put(in->keys, h, shard) != 0) {
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
      if (to_shard(in, where, 'F', &token, f, n, false) != 0) {
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
          if (to_shard(in, i, 'F', &token, f, n, false) != 0) {
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
  if (to_shard(in, shard, 'Q', NULL, f, n, true) != 0) {
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

/* A shard's answer to a lookup ('F'): parts = envelope frames + reply. */
static void on_lookup_reply(fq_ingress_t *in, uint64_t token, uint8_t found, const part_t *parts,
                            int n) {
  fanout_t *fo = &in->fan[token % FANOUT_SLOTS];
  if (fo->token != token) return;
  if (fo->check) {
    if (found) {
      send_parts(in->router, parts, n, 0);
    } else {
      /* Not there after all (an entry left by a failed batch): the key is
       * new, so the submit goes to its device's shard. */
      fq_idem_del(in->keys, fo->keyhash, fo->check_shard);
      fq_idem_put(in->keys, fo->keyhash, fo->dev_shard);
      if (to_shard(in, fo->dev_shard, 'Q', NULL, fo->frames, fo->nframes, true) != 0) {
        fq_buf_reset(&in->out);
        fq_wire_reply_error(&in->out, FQ_EBUSY,
                            "fleetqd is saturated (shard queue full); retry later", NULL, 0);
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
    send_parts(in->router, parts, n, 0);
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
    part_t parts[MAX_FRAMES + 1];
    uint8_t nenv = 0, found = 1;
    uint64_t token = 0;
    if (kind == 'E') {
      if (!take_part(&p, end, &parts[0]) || !take_part(&p, end, &parts[1])) break;
      send_parts(in->pub, parts, 2, ZMQ_DONTWAIT);
      continue;
    }
    if (kind == 'F' && (!take(&p, end, &token, 8) || !take(&p, end, &found, 1))) break;
    if ((kind != 'R' && kind != 'F') || !take(&p, end, &nenv, 1) || nenv > MAX_FRAMES) break;
    bool ok = true;
    for (int i = 0; i <= nenv && ok; i++) ok = take_part(&p, end, &parts[i]);
    if (!ok) break;
    if (kind == 'R')
      send_parts(in->router, parts, nenv + 1, 0);
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
    zmq_msg_t f[MAX_FRAMES + 4];
    bool overflow;
    int n = fq_zmsg_recv(in->pairs[idx], f, MAX_FRAMES + 4, ZMQ_DONTWAIT, &overflow);
    if (n <= 0) break;
    char kind = zmq_msg_size(&f[0]) == 1 ? *(const char *)zmq_msg_data(&f[0]) : '?';
    if (kind == 'B' && n == 2) {
      relay_batch(in, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]));
    } else if (kind == 'R' && n >= 3) {
      /* The auth thread answers admin requests frame by frame. */
      for (int i = 1; i < n; i++) zmq_msg_send(&f[i], in->router, i + 1 < n ? ZMQ_SNDMORE : 0);
    } else if (kind == 'K' && n == 2) {
      const uint8_t *p = zmq_msg_data(&f[1]);
      size_t cnt = zmq_msg_size(&f[1]) / 8;
      for (size_t i = 0; i < cnt; i++) {
        uint64_t h;
        memcpy(&h, p + 8 * i, 8);
        fq_idem_put(in->keys, h, idx);
      }
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
  zmq_pollitem_t *items = calloc(ns + 2, sizeof *items);
  bool *done = calloc(ns, sizeof *done);
  if (!items || !done) {
    free(items);
    free(done);
    return -ENOMEM;
  }
  bool stopping = false;
  unsigned ndone = 0;
  while (ndone < ns) {
    for (unsigned i = 0; i < ns; i++) items[i] = (zmq_pollitem_t){in->pairs[i], 0, ZMQ_POLLIN, 0};
    items[ns] = (zmq_pollitem_t){NULL, in->o.stop_fd, ZMQ_POLLIN, 0};
    /* Clients wait (ZeroMQ queues their requests) until every shard has
     * announced its keys: dedupe must see every stored key. */
    bool serving = !stopping && in->loaded >= nshards;
    items[ns + 1] = (zmq_pollitem_t){in->router, 0, serving ? ZMQ_POLLIN : 0, 0};
    int rc = zmq_poll(items, (int)ns + 2, stopping ? 100 : -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      if (errno == ETERM) break;
    }
    for (unsigned i = 0; i < ns; i++)
      if ((items[i].revents & ZMQ_POLLIN) && handle_shard(in, i) && !done[i]) {
        done[i] = true;
        ndone++;
      }
    if (!stopping && (items[ns].revents & ZMQ_POLLIN)) {
      stopping = true;
      fq_info("ingress", "stopping: draining %u shard(s)%s", nshards,
              ns > nshards ? " and the auth thread" : "");
      for (unsigned i = 0; i < ns; i++) {
        char t = 'T';
        /* Blocking send: the stop request must get through even when the
         * shard's queue is full, and the shard keeps draining it. */
        zmq_send(in->pairs[i], &t, 1, 0);
      }
    }
    if (serving && (items[ns + 1].revents & ZMQ_POLLIN)) {
      /* Fairness: a bounded burst of client requests, then the shards. */
      for (int k = 0; k < 256 && handle_client(in); k++) {
      }
    }
  }
  free(items);
  free(done);
  return 0;
}
