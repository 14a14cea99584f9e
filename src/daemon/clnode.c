/*
 * A fleetqd cluster node: the lease thread and the table of owners
 * (clnode.h, docs/cluster.md "Leases" and "Wiring").
 */
#include "clnode.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

/* How often the lease thread looks at every shard: a free shard is taken
 * within one tick of being seen free (docs/cluster.md: 250 ms). */
#define LEASE_TICK_MS 250
/* The renewer looks at the held leases this often, and renews one once
 * TTL/RENEW_DIV has passed since its last renew was sent: with TTL 3 s,
 * every 500 ms, five chances within the 2.5 s the shard may act after a
 * renew (co.act_ms, below). */
#define RENEW_TICK_MS 50
#define RENEW_DIV 6
#define SLOW_RENEW_MS 500
/* A node waits this long after it starts before it takes a free shard, so
 * that it has seen the other nodes' presence and takes only its share. */
#define START_GRACE_MS 1500
/* A free shard this node would not take for its share (it holds its share
 * already) is taken anyway once it has been seen free this many ticks in
 * a row: nobody else wants it (the other nodes are full or gone). */
#define FREE_TICKS_ANYWAY 2
/* After stepping down, a node leaves the shard to others this long. */
#define STEP_DOWN_PAUSE_MS 3000
/* Balance: a node that holds more than its share of the shards while
 * other nodes are alive hands one over (the shard drains what is in
 * flight, then gives the lease back for a node below its share to take),
 * one at a time, HANDOVER_GAP_MS after the previous one was given back. */
#define HANDOVER_GAP_MS 2000
/* ... and only once the cluster has been still this long: no change in
 * the nodes alive and no shard taken here.  Right after a node's death
 * its presence outlives its leases by up to a second, and a survivor that
 * counted it would give away a shard it had just taken. */
#define HANDOVER_STILL_MS 5000
#define NS_PER_MS INT64_C(1000000)
/* How long a starting node retries making the logs and the bucket. */
#define ENSURE_MS 30000

typedef struct clshard {
  fq_cl_lease_t lease;     /* held, rev, sent_ns */
  bool step_down;          /* the shard thread asked for the lease to go */
  bool handover;           /* asked of the shard thread: drain, then step down */
  bool serving;
  int64_t pause_until;     /* no take before (fq_mono_ns) */
  int free_ticks;
  bool known;              /* owner read at least once */
  char owner_node[33];
  char owner_ep[256];
} clshard_t;

struct fq_clnode {
  fq_cl_opts_t co;
  char urls[2048];
  char node[33];
  char advertise[256];
  unsigned nshards;
  fq_cl_t *cl;             /* the manager thread's */
  fq_cl_t *rcl;            /* the renewer thread's */
  pthread_t th, rth;
  bool started;
  atomic_bool stop;
  pthread_mutex_t mu;
  clshard_t *sh;
  unsigned alive;
  int64_t next_handover;   /* no handover asked before (fq_mono_ns) */
  int64_t settled_at;      /* the nodes alive last changed, or this node took a shard */
};

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

fq_clnode_t *fq_clnode_new(const fq_clnode_opts_t *o, fq_err_t *err) {
  if (!o->urls || !*o->urls || !o->node_id || !*o->node_id || !o->nshards) {
    fq_errf(err, FQ_ECONFIG, "cluster: --cluster and --node-id are both needed");
    return NULL;
  }
  if (!o->advertise || !*o->advertise) {
    fq_errf(err, FQ_ECONFIG, "cluster: no endpoint to advertise (--cluster-advertise)");
    return NULL;
  }
  fq_clnode_t *n = calloc(1, sizeof *n);
  if (!n) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&n->mu, NULL);
  n->nshards = o->nshards;
  n->alive = 1;
  snprintf(n->urls, sizeof n->urls, "%s", o->urls);
  snprintf(n->node, sizeof n->node, "%s", o->node_id);
  snprintf(n->advertise, sizeof n->advertise, "%s", o->advertise);
  if (strlen(o->advertise) >= sizeof n->advertise) {
    fq_errf(err, FQ_ECONFIG, "cluster: --cluster-advertise is too long");
    goto fail;
  }
  fq_cl_opts_init(&n->co);
  n->co.urls = n->urls;
  n->co.node_id = n->node;
  if (o->lease_ttl_ms) n->co.lease_ttl_ms = o->lease_ttl_ms;
  /* Act for 5/6 of the TTL after a renew was sent (2.5 s of 3), renew every
   * TTL/6 (500 ms): a renew may be slow or lost four times in a row on a
   * loaded machine before the shard must stop (with TTL/2 and a renew
   * every 750 ms, the CI's loaded run saw every shard of a node step down
   * and come back).  Acting late is safe: the log fences a successor's
   * history (its marker), and a command is only ever sent after its
   * `sent` is in the log, where the successor settles it. */
  n->co.act_ms = n->co.lease_ttl_ms - n->co.lease_ttl_ms / 6;
  if (o->retention_ms > 0) n->co.stream_max_age_ms = o->retention_ms;
  n->sh = calloc(o->nshards, sizeof *n->sh);
  if (!n->sh) {
    fq_errf(err, -ENOMEM, "out of memory");
    goto fail;
  }
  for (unsigned i = 0; i < o->nshards; i++) n->sh[i].lease.shard = i;
  if (fq_cl_connect(&n->co, &n->cl, err) != 0 || fq_cl_connect(&n->co, &n->rcl, err) != 0)
    goto fail;
  /* Nodes starting together race to create the streams, and a stream
   * just created has no leader for a moment: retried for ENSURE_MS,
   * except a stream whose settings differ (never changed by a node). */
  int64_t until = fq_mono_ns() + ENSURE_MS * NS_PER_MS;
  for (;;) {
    int rc = 0;
    for (unsigned i = 0; i < o->nshards && rc == 0; i++) rc = fq_cl_ensure_shard(n->cl, i, err);
    if (rc == 0) rc = fq_cl_ensure_leases(n->cl, err);
    if (rc == 0) rc = fq_cl_ensure_leases(n->rcl, err);
    if (rc == 0) break;
    if (rc == FQ_ECONFIG || fq_mono_ns() >= until) goto fail;
    fq_warn("cluster", "node %s: %s (retrying)", n->node, err->msg);
    sleep_ms(250);
  }
  fq_info("cluster", "node %s: connected to %s; %u shard log(s) and the lease bucket are ready; "
          "requests are forwarded to this node at %s", n->node, n->urls, n->nshards,
          n->advertise);
  return n;
fail:
  fq_clnode_destroy(&n);
  return NULL;
}

const char *fq_clnode_id(const fq_clnode_t *n) { return n->node; }
const char *fq_clnode_advertise(const fq_clnode_t *n) { return n->advertise; }

int fq_clnode_connect(fq_clnode_t *n, fq_cl_t **out, fq_err_t *err) {
  return fq_cl_connect(&n->co, out, err);
}

bool fq_clnode_lease(fq_clnode_t *n, unsigned shard, int64_t now_ns, fq_cl_lease_t *out) {
  pthread_mutex_lock(&n->mu);
  *out = n->sh[shard].lease;
  bool ok = !n->sh[shard].step_down && fq_cl_lease_may_act(n->cl, out, now_ns);
  pthread_mutex_unlock(&n->mu);
  return ok;
}

void fq_clnode_step_down(fq_clnode_t *n, unsigned shard) {
  pthread_mutex_lock(&n->mu);
  n->sh[shard].step_down = true;
  n->sh[shard].serving = false;
  pthread_mutex_unlock(&n->mu);
}

bool fq_clnode_handover(fq_clnode_t *n, unsigned shard) {
  pthread_mutex_lock(&n->mu);
  bool h = n->sh[shard].handover && n->sh[shard].lease.held;
  pthread_mutex_unlock(&n->mu);
  return h;
}

void fq_clnode_serving(fq_clnode_t *n, unsigned shard, bool on) {
  pthread_mutex_lock(&n->mu);
  n->sh[shard].serving = on;
  pthread_mutex_unlock(&n->mu);
  fq_metrics_cluster_owned(shard, on);
}

int fq_clnode_route(fq_clnode_t *n, unsigned shard, char *ep, size_t cap) {
  int r;
  pthread_mutex_lock(&n->mu);
  clshard_t *s = &n->sh[shard];
  if (s->lease.held && !s->step_down)
    r = FQ_CLNODE_LOCAL;
  else if (s->known && s->owner_ep[0] && strcmp(s->owner_node, n->node) != 0) {
    r = FQ_CLNODE_REMOTE;
    snprintf(ep, cap, "%s", s->owner_ep);
  } else
    r = FQ_CLNODE_NONE;
  pthread_mutex_unlock(&n->mu);
  return r;
}

void fq_clnode_owner(fq_clnode_t *n, unsigned shard, char *node, size_t cap, bool *serving) {
  pthread_mutex_lock(&n->mu);
  clshard_t *s = &n->sh[shard];
  if (s->lease.held) snprintf(node, cap, "%s", n->node);
  else snprintf(node, cap, "%s", s->known ? s->owner_node : "");
  *serving = s->serving;
  pthread_mutex_unlock(&n->mu);
}

/* "<node> <endpoint>" -> its two parts. */
static void split_holder(const char *h, char *node, size_t nn, char *ep, size_t ne) {
  const char *sp = strchr(h, ' ');
  size_t k = sp ? (size_t)(sp - h) : strlen(h);
  if (k >= nn) k = nn - 1;
  memcpy(node, h, k);
  node[k] = 0;
  snprintf(ep, ne, "%s", sp ? sp + 1 : "");
}

/* The two threads of a node split the leases by state, so that they never
 * work on the same one: the renewer owns the held leases (renews them,
 * gives them back when the shard steps down, drops the ones lost), the
 * manager the others (who holds them, taking the free ones, presence and
 * balance).  Each decides under the mutex, works on a copy without it,
 * and writes back what it changed; the shard threads only set step_down
 * and serving. */

/* Renewer: one held lease. */
static void renew_shard(fq_clnode_t *n, unsigned i) {
  fq_err_t e;
  fq_err_clear(&e);
  int64_t now = fq_mono_ns();
  pthread_mutex_lock(&n->mu);
  clshard_t s = n->sh[i];
  pthread_mutex_unlock(&n->mu);
  if (!s.lease.held) return;
  int64_t ttl_ns = fq_cl_lease_ttl_ms(n->rcl) * NS_PER_MS;
  bool release = s.step_down, lost = false;
  if (release) {
    int rc = fq_cl_lease_release(n->rcl, &s.lease, &e);
    fq_info("cluster", "shard %u: lease given up (%s)", i, rc == 0 ? "released" : e.msg);
  } else if (now - s.lease.sent_ns >= ttl_ns / RENEW_DIV) {
    int rc = fq_cl_lease_renew(n->rcl, &s.lease, n->advertise, &e);
    int64_t took = (fq_mono_ns() - now) / NS_PER_MS;
    if (took >= SLOW_RENEW_MS)
      fq_warn("cluster", "shard %u: a lease renew took %" PRId64 " ms (%s)", i, took,
              rc == 0 ? "renewed" : "failed");
    if (rc == FQ_CL_ELEASE) {
      fq_warn("cluster", "shard %u: %s; the shard stops here", i, e.msg);
      lost = true;
    } else if (rc) {
      fq_warn("cluster", "shard %u: lease not renewed (retrying): %s", i, e.msg);
    }
  } else {
    return;
  }
  pthread_mutex_lock(&n->mu);
  clshard_t *d = &n->sh[i];
  d->lease = s.lease;
  if (release || lost || !s.lease.held) {
    d->lease.held = false;
    d->serving = false;
    d->known = false;
    if (d->handover) n->next_handover = fq_mono_ns() + HANDOVER_GAP_MS * NS_PER_MS;
    d->handover = false;
    /* Given back (or lost): leave it to the others for a while.  A shard
     * thread that has not seen the loss yet still steps down (its lease
     * copy says so); step_down is cleared by the manager. */
    d->pause_until = fq_mono_ns() + STEP_DOWN_PAUSE_MS * NS_PER_MS;
    if (release) d->step_down = false;
  }
  pthread_mutex_unlock(&n->mu);
}

static void *renew_main(void *arg) {
  fq_clnode_t *n = arg;
  while (!atomic_load(&n->stop)) {
    for (unsigned i = 0; i < n->nshards && !atomic_load(&n->stop); i++) renew_shard(n, i);
    sleep_ms(RENEW_TICK_MS);
  }
  return NULL;
}

/* Manager: one lease this node does not hold. */
static void look_shard(fq_clnode_t *n, unsigned i, unsigned held_count, unsigned share,
                       bool grace_over) {
  fq_err_t e;
  fq_err_clear(&e);
  int64_t now = fq_mono_ns();
  pthread_mutex_lock(&n->mu);
  clshard_t s = n->sh[i];
  if (!s.lease.held && s.step_down) {
    n->sh[i].step_down = false; /* lost already: nothing to give back */
    n->sh[i].handover = false;
    n->sh[i].pause_until = now + STEP_DOWN_PAUSE_MS * NS_PER_MS;
    s = n->sh[i];
  }
  pthread_mutex_unlock(&n->mu);
  if (s.lease.held) return;
  char holder[320];
  uint64_t rev = 0;
  bool took = false;
  fq_cl_lease_t l;
  memset(&l, 0, sizeof l);
  int rc = fq_cl_lease_get(n->cl, i, holder, sizeof holder, &rev, &e);
  if (rc == 0) {
    split_holder(holder, s.owner_node, sizeof s.owner_node, s.owner_ep, sizeof s.owner_ep);
    s.known = true;
    s.free_ticks = 0;
  } else if (rc == FQ_ENOTFOUND) {
    s.known = false;
    s.owner_node[0] = s.owner_ep[0] = 0;
    s.free_ticks++;
    /* Below its share a node takes at once; at its share after
     * FREE_TICKS_ANYWAY looks, and one look later per shard above it, so
     * that a shard handed over for balance goes to a node that has room
     * rather than back and forth (a demo run ended unbalanced). */
    unsigned over = held_count > share ? held_count - share : 0;
    bool want = grace_over && now >= s.pause_until &&
                (held_count < share || s.free_ticks > FREE_TICKS_ANYWAY + (int)over);
    if (want) {
      rc = fq_cl_lease_take(n->cl, i, n->advertise, &l, &e);
      if (rc == 0) {
        fq_info("cluster", "shard %u: lease taken (revision %" PRIu64 ")", i, l.rev);
        took = true;
        s.free_ticks = 0;
      } else if (rc != FQ_CL_ELEASE) {
        fq_warn("cluster", "shard %u: cannot take the free lease: %s", i, e.msg);
      }
    }
  }
  /* FQ_CL_EUNAVAIL: keep what we knew. */
  pthread_mutex_lock(&n->mu);
  clshard_t *d = &n->sh[i];
  d->known = s.known;
  d->free_ticks = s.free_ticks;
  memcpy(d->owner_node, s.owner_node, sizeof d->owner_node);
  memcpy(d->owner_ep, s.owner_ep, sizeof d->owner_ep);
  if (took) {
    n->settled_at = fq_mono_ns();
    d->lease = l;
    d->step_down = false;
    d->handover = false;
  }
  pthread_mutex_unlock(&n->mu);
}

static void *lease_main(void *arg) {
  fq_clnode_t *n = arg;
  int64_t start = fq_mono_ns(), next_presence = 0;
  while (!atomic_load(&n->stop)) {
    int64_t t0 = fq_mono_ns();
    fq_err_t e;
    fq_err_clear(&e);
    if (t0 >= next_presence) {
      unsigned alive = 0;
      if (fq_cl_presence(n->cl, n->advertise, &alive, &e) == 0) {
        pthread_mutex_lock(&n->mu);
        if (alive != n->alive) {
          fq_info("cluster", "node %s: %u node(s) alive", n->node, alive);
          n->settled_at = fq_mono_ns();
        }
        n->alive = alive;
        pthread_mutex_unlock(&n->mu);
      } else {
        fq_debug("cluster", "presence: %s", e.msg);
      }
      next_presence = t0 + 1000 * NS_PER_MS;
    }
    pthread_mutex_lock(&n->mu);
    unsigned held = 0, alive = n->alive;
    for (unsigned i = 0; i < n->nshards; i++) held += n->sh[i].lease.held;
    pthread_mutex_unlock(&n->mu);
    unsigned share = (n->nshards + alive - 1) / alive;
    bool grace_over = t0 - start >= START_GRACE_MS * NS_PER_MS;
    for (unsigned i = 0; i < n->nshards && !atomic_load(&n->stop); i++) {
      look_shard(n, i, held, share, grace_over);
      pthread_mutex_lock(&n->mu);
      held = 0;
      for (unsigned k = 0; k < n->nshards; k++) held += n->sh[k].lease.held;
      pthread_mutex_unlock(&n->mu);
    }
    /* Balance (HANDOVER_GAP_MS): one shard at a time, only when another
     * node is alive to take it and this one holds more than its share. */
    pthread_mutex_lock(&n->mu);
    bool busy = false;
    int pick = -1;
    unsigned others = 0; /* shards other nodes hold, as last read */
    for (unsigned i = 0; i < n->nshards; i++) {
      if (n->sh[i].handover || n->sh[i].step_down) busy = true;
      if (n->sh[i].lease.held && n->sh[i].serving) pick = (int)i;
      if (!n->sh[i].lease.held && n->sh[i].known) others++;
    }
    /* Some other node is below its share only if the others hold fewer
     * than (alive - 1) shares: otherwise the shard would come back. */
    bool room = n->alive > 1 && (n->alive - 1) * share > others;
    int64_t tnow = fq_mono_ns();
    bool still = tnow - n->settled_at >= HANDOVER_STILL_MS * NS_PER_MS;
    if (!busy && pick >= 0 && grace_over && room && still && held > share &&
        tnow >= n->next_handover) {
      n->sh[pick].handover = true;
      n->next_handover = tnow + 4 * HANDOVER_GAP_MS * NS_PER_MS; /* if it never ends */
      fq_info("cluster", "shard %u: handing it over (this node holds %u shard(s), its share "
              "is %u of %u across %u node(s))", (unsigned)pick, held, share, n->nshards,
              n->alive);
    }
    pthread_mutex_unlock(&n->mu);
    int64_t spent = (fq_mono_ns() - t0) / NS_PER_MS;
    if (spent < LEASE_TICK_MS) sleep_ms(LEASE_TICK_MS - spent);
  }
  return NULL;
}

int fq_clnode_start(fq_clnode_t *n, fq_err_t *err) {
  int rc = pthread_create(&n->rth, NULL, renew_main, n);
  if (rc) return fq_errf(err, -rc, "cluster: cannot start the renew thread: %s", fq_strerror(-rc));
  pthread_setname_np(n->rth, "fq-renew");
  rc = pthread_create(&n->th, NULL, lease_main, n);
  if (rc) {
    atomic_store(&n->stop, true);
    pthread_join(n->rth, NULL);
    return fq_errf(err, -rc, "cluster: cannot start the lease thread: %s", fq_strerror(-rc));
  }
  pthread_setname_np(n->th, "fq-cluster");
  n->started = true;
  return 0;
}

void fq_clnode_stop(fq_clnode_t *n) {
  if (!n || !n->started) return;
  atomic_store(&n->stop, true);
  pthread_join(n->th, NULL);
  pthread_join(n->rth, NULL);
  n->started = false;
  int64_t ttl_ns = fq_cl_lease_ttl_ms(n->cl) * NS_PER_MS;
  for (unsigned i = 0; i < n->nshards; i++) {
    if (!n->sh[i].lease.held) continue;
    /* A lease not renewed for a TTL is gone on the servers already: no
     * release to wait for (with NATS unreachable each took its 2 s
     * timeout, 8.3 s to exit with 3 shards). */
    if (fq_mono_ns() - n->sh[i].lease.sent_ns >= ttl_ns) {
      fq_info("cluster", "shard %u: lease expired already at stop", i);
      continue;
    }
    fq_err_t e;
    fq_err_clear(&e);
    if (fq_cl_lease_release(n->cl, &n->sh[i].lease, &e) == 0)
      fq_info("cluster", "shard %u: lease released at stop", i);
    else
      fq_warn("cluster", "shard %u: lease not released at stop (it expires): %s", i, e.msg);
  }
}

void fq_clnode_destroy(fq_clnode_t **np) {
  if (!np || !*np) return;
  fq_clnode_t *n = *np;
  fq_clnode_stop(n);
  fq_cl_close(&n->cl);
  fq_cl_close(&n->rcl);
  free(n->sh);
  pthread_mutex_destroy(&n->mu);
  free(n);
  *np = NULL;
}
