/*
 * Per-client reply accounting; see replies.h.
 *
 * A client's entry is shared by the table (one reference) and every reply
 * of it still in ZeroMQ's hands (one each).  The free function a reply
 * carries runs in whatever thread ZeroMQ releases it: it takes the reply's
 * charge off the client's counter, then drops its reference and frees the
 * entry when it was the last one.  Nothing else of the owner's state is
 * touched there.
 */
#include "replies.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fleetq/wire.h"
#include "hmap.h"
#include "util.h"

typedef struct peer {
  _Atomic size_t bytes;       /* charged and not yet released */
  _Atomic unsigned refs;      /* the table's + one per reply in flight */
  uint8_t idlen;
  uint8_t id[255];
} peer_t;

/* Sits in front of a reply body in one allocation: the free function's
 * hint. */
typedef struct reply_hdr {
  peer_t *peer;
  size_t charge;
} reply_hdr_t;

struct fq_replies {
  void *router;
  size_t max_bytes;
  fq_hmap_t peers;            /* peer_t * by hash of the routing id */
  uint64_t dropped;
};

typedef struct peer_key {
  const void *p;
  size_t n;
} peer_key_t;

static bool peer_eq(const void *item, const void *key) {
  const peer_t *p = *(peer_t *const *)item;
  const peer_key_t *k = key;
  return p->idlen == k->n && memcmp(p->id, k->p, k->n) == 0;
}

static void peer_unref(peer_t *p) {
  if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) free(p);
}

fq_replies_t *fq_replies_new(void *router, size_t max_bytes) {
  fq_replies_t *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->router = router;
  r->max_bytes = max_bytes;
  fq_hmap_init(&r->peers, sizeof(peer_t *), 50);
  return r;
}

void fq_replies_destroy(fq_replies_t **rp) {
  if (!rp || !*rp) return;
  fq_replies_t *r = *rp;
  size_t pos = 0;
  peer_t **it;
  while ((it = fq_hmap_each(&r->peers, &pos))) peer_unref(*it);
  fq_hmap_free(&r->peers);
  free(r);
  *rp = NULL;
}

static peer_t *peer_find(fq_replies_t *r, const void *id, size_t idlen, uint64_t h) {
  peer_key_t k = {id, idlen};
  peer_t **it = fq_hmap_find(&r->peers, h, peer_eq, &k);
  return it ? *it : NULL;
}

static peer_t *peer_get(fq_replies_t *r, const void *id, size_t idlen) {
  uint64_t h = fq_hash64(id, idlen);
  peer_t *p = peer_find(r, id, idlen, h);
  if (p) return p;
  if (!(p = calloc(1, sizeof *p))) return NULL;
  atomic_init(&p->refs, 1);
  atomic_init(&p->bytes, 0);
  p->idlen = (uint8_t)idlen;
  memcpy(p->id, id, idlen);
  peer_t **slot = fq_hmap_add(&r->peers, h);
  if (!slot) {
    free(p);
    return NULL;
  }
  *slot = p;
  return p;
}

/* ZeroMQ is done with a reply body (sent, or dropped). */
static void reply_free(void *data, void *hint) {
  (void)data;
  reply_hdr_t *hd = hint;
  peer_t *p = hd->peer;
  atomic_fetch_sub_explicit(&p->bytes, hd->charge, memory_order_release);
  free(hd);
  peer_unref(p);
}

int fq_replies_send(fq_replies_t *r, const fq_frame_t *env, int nenv, const void *body,
                    size_t len) {
  /* A routing id is 1..255 bytes; the envelope was checked on the way in,
   * but what is sent here must not depend on that. */
  if (nenv < 1 || env[0].n == 0 || env[0].n > 255) return FQ_EBADREQ;
  size_t charge = len + FQ_REPLIES_REPLY_COST + FQ_REPLIES_FRAME_COST;
  for (int i = 0; i < nenv; i++) charge += env[i].n + FQ_REPLIES_FRAME_COST;
  peer_t *p = peer_get(r, env[0].p, env[0].n);
  if (!p) return -ENOMEM;
  if (r->max_bytes &&
      atomic_load_explicit(&p->bytes, memory_order_acquire) + charge > r->max_bytes) {
    r->dropped++;
    return FQ_EBUSY;
  }
  reply_hdr_t *hd = malloc(sizeof *hd + (len ? len : 1));
  if (!hd) return -ENOMEM;
  hd->peer = p;
  hd->charge = charge;
  if (len) memcpy(hd + 1, body, len);
  zmq_msg_t m;
  if (zmq_msg_init_data(&m, hd + 1, len, reply_free, hd) != 0) {
    free(hd);
    return -ENOMEM;
  }
  /* Charged before ZeroMQ can release it: from here on reply_free owns
   * the charge and the reference. */
  atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->bytes, charge, memory_order_relaxed);
  for (int i = 0; i < nenv; i++) zmq_send(r->router, env[i].p, env[i].n, ZMQ_SNDMORE);
  if (zmq_msg_send(&m, r->router, 0) < 0) zmq_msg_close(&m); /* runs reply_free */
  return 0;
}

size_t fq_replies_queued(fq_replies_t *r, const void *id, size_t idlen) {
  if (idlen == 0 || idlen > 255) return 0;
  peer_t *p = peer_find(r, id, idlen, fq_hash64(id, idlen));
  return p ? atomic_load_explicit(&p->bytes, memory_order_acquire) : 0;
}

size_t fq_replies_sweep(fq_replies_t *r, size_t *held) {
  /* Collect first (the table must not change during a walk), then delete
   * each by its routing id: deleting moves other items. */
  size_t n = fq_hmap_count(&r->peers), k = 0, pos = 0, sum = 0;
  if (held) *held = 0;
  peer_t **idle = n ? malloc(n * sizeof *idle) : NULL;
  if (!idle) return n;
  peer_t **it;
  while ((it = fq_hmap_each(&r->peers, &pos))) {
    sum += atomic_load_explicit(&(*it)->bytes, memory_order_relaxed);
    /* Only the table's reference left: no reply of it in flight (the
     * acquire pairs with reply_free's release, so its last touch of the
     * entry happened before). */
    if (atomic_load_explicit(&(*it)->refs, memory_order_acquire) == 1) idle[k++] = *it;
  }
  if (held) *held = sum;
  for (size_t i = 0; i < k; i++) {
    peer_t *p = idle[i];
    peer_key_t key = {p->id, p->idlen};
    peer_t **slot = fq_hmap_find(&r->peers, fq_hash64(p->id, p->idlen), peer_eq, &key);
    if (slot) fq_hmap_del(&r->peers, slot);
    peer_unref(p);
  }
  free(idle);
  return fq_hmap_count(&r->peers);
}

uint64_t fq_replies_dropped(const fq_replies_t *r) { return r->dropped; }
