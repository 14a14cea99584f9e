/*
 * The campaign manager thread: see campmgr.h.
 */
#include "campmgr.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "byteorder.h"
#include "campaign.h"
#include "log.h"
#include "util.h"
#include "zmsg.h"

/* A request's frames: kind, who, envelope (routing id first), body. */
#define MAX_FRAMES (FQ_WIRE_MAX_ENVELOPE + 5)

struct fq_campmgr {
  void *sock;
  fq_campaigns_t *camps;
  pthread_t th;
  bool started;
  bool ticking, stopped;
};

/* What a request's `who` frame says (see campmgr.h). */
typedef struct who {
  bool all;
  const char *acl;
  size_t len;
} who_t;

static void send_frames(void *s, zmq_msg_t *env, int nenv, const void *head, size_t hlen,
                        const void *body, size_t len) {
  zmq_send(s, head, hlen, ZMQ_SNDMORE);
  for (int i = 0; i < nenv; i++) {
    zmq_msg_t c;
    zmq_msg_init(&c);
    zmq_msg_copy(&c, &env[i]);
    if (zmq_msg_send(&c, s, ZMQ_SNDMORE) < 0) zmq_msg_close(&c);
  }
  zmq_send(s, body, len, 0);
}

static int io_send(void *ud, unsigned shard, const char *camp, const void *env, size_t envlen,
                   const void *body, size_t len, uint64_t keyhash) {
  fq_campmgr_t *m = ud;
  uint8_t head[13];
  head[0] = 'S';
  fq_put_le32(head + 1, shard);
  fq_put_le64(head + 5, keyhash);
  char kf[1 + 64];
  size_t cl = strnlen(camp, 64);
  kf[0] = 'C';
  memcpy(kf + 1, camp, cl);
  zmq_send(m->sock, head, sizeof head, ZMQ_SNDMORE);
  zmq_send(m->sock, kf, 1 + cl, ZMQ_SNDMORE);
  zmq_send(m->sock, env, envlen, ZMQ_SNDMORE);
  zmq_send(m->sock, body, len, 0);
  /* Never refused here: the ingress holds what a full shard queue cannot
   * take yet (campmgr.h). */
  return 0;
}

static void io_reply(void *ud, zmq_msg_t *env, int nenv, const void *body, size_t len) {
  fq_campmgr_t *m = ud;
  send_frames(m->sock, env, nenv, "R", 1, body, len);
}

static void io_publish(void *ud, const char *topic, size_t tlen, const void *body, size_t len) {
  fq_campmgr_t *m = ud;
  zmq_send(m->sock, "P", 1, ZMQ_SNDMORE);
  zmq_send(m->sock, topic, tlen, ZMQ_SNDMORE);
  zmq_send(m->sock, body, len, 0);
}

static bool io_tenant_ok(void *ud, const void *who, const char *tenant, size_t tn) {
  (void)ud;
  const who_t *w = who;
  if (!w || w->all) return true;
  /* Each name followed by one NUL byte (clients.h). */
  for (size_t i = 0; i < w->len;) {
    size_t l = strnlen(w->acl + i, w->len - i);
    if (l == tn && memcmp(w->acl + i, tenant, tn) == 0) return true;
    i += l + 1;
  }
  return false;
}

static void on_request(fq_campmgr_t *m, zmq_msg_t *f, int n) {
  if (n < 4) return; /* kind, who, routing id, body at least */
  fq_request_t req;
  memset(&req, 0, sizeof req);
  fq_err_t err;
  fq_err_clear(&err);
  /* The ingress decoded and authorized it already: this cannot fail. */
  if (fq_wire_decode_request(zmq_msg_data(&f[n - 1]), zmq_msg_size(&f[n - 1]), &req, &err) != 0) {
    fq_error("campaign", "a forwarded request does not decode again: %s", err.msg);
    return;
  }
  who_t w = {false, NULL, 0}, *who = NULL;
  size_t wl = zmq_msg_size(&f[1]);
  const char *wp = zmq_msg_data(&f[1]);
  if (wl) {
    w.all = wp[0] == 'A';
    w.acl = wp + 1;
    w.len = wl - 1;
    who = &w;
  }
  fq_campaigns_request(m->camps, &req, who, &f[2], n - 3);
}

static void *manager_main(void *arg) {
  fq_campmgr_t *m = arg;
  for (;;) {
    long timeout = m->ticking ? fq_campaigns_tick(m->camps, fq_now_ms()) : 1000;
    zmq_pollitem_t it = {m->sock, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&it, 1, timeout);
    if (rc < 0 && errno == ETERM) break;
    if (rc <= 0) continue;
    /* A bounded burst, then a tick. */
    for (int k = 0; k < 4096; k++) {
      zmq_msg_t f[MAX_FRAMES];
      int n = fq_zmsg_recv(m->sock, f, MAX_FRAMES, ZMQ_DONTWAIT, NULL);
      if (n <= 0) break;
      char kind = zmq_msg_size(&f[0]) ? *(const char *)zmq_msg_data(&f[0]) : '?';
      if (kind == 'Q') on_request(m, f, n);
      else if (kind == 'A' && n == 3)
        fq_campaigns_answer(m->camps, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]),
                            zmq_msg_data(&f[2]), zmq_msg_size(&f[2]));
      else if (kind == 'G') m->ticking = !m->stopped;
      else if (kind == 'H') m->ticking = false, m->stopped = true;
      fq_zmsg_close(f, n);
      if (kind == 'T') goto out;
    }
  }
out:
  return NULL;
}

fq_campmgr_t *fq_campmgr_start(const fq_campmgr_opts_t *o, fq_err_t *err) {
  fq_campmgr_t *m = calloc(1, sizeof *m);
  if (!m) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  fq_camp_io_t io = {m, io_send, io_reply, io_publish, io_tenant_ok};
  if (!(m->camps = fq_campaigns_open(o->data_dir, o->nshards, o->accounts, o->retention_ms,
                                     o->dedupe_ms, o->shard_hwm, &io, err))) goto fail;
  m->sock = zmq_socket(o->zmq_ctx, ZMQ_PAIR);
  int zero = 0;
  if (!m->sock || zmq_setsockopt(m->sock, ZMQ_SNDHWM, &zero, sizeof zero) != 0 ||
      zmq_setsockopt(m->sock, ZMQ_RCVHWM, &zero, sizeof zero) != 0 ||
      zmq_setsockopt(m->sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
      zmq_connect(m->sock, o->endpoint) != 0) {
    fq_errf(err, FQ_EINTERNAL, "cannot connect the campaign manager: %s", zmq_strerror(errno));
    goto fail;
  }
  /* pthread_create hands the socket and the campaigns over: from here on
   * only the new thread touches them. */
  int rc = pthread_create(&m->th, NULL, manager_main, m);
  if (rc) {
    fq_errf(err, FQ_EINTERNAL, "cannot start the campaign manager: %s", fq_strerror(-rc));
    goto fail;
  }
  m->started = true;
  return m;
fail:
  fq_campmgr_join(&m);
  return NULL;
}

void fq_campmgr_join(fq_campmgr_t **mp) {
  if (!mp || !*mp) return;
  fq_campmgr_t *m = *mp;
  if (m->started) pthread_join(m->th, NULL);
  if (m->sock) zmq_close(m->sock);
  fq_campaigns_close(&m->camps);
  free(m);
  *mp = NULL;
}
