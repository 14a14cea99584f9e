/*
 * Unit tests of the per-client reply ledger (src/daemon/replies.c) over
 * inproc, where a reply stays charged until the client reads it (no TCP
 * buffer in between): what a client that does not read holds, the replies
 * refused past the limit, release as it reads, other clients unaffected,
 * idle entries swept, and entries outliving the ledger while ZeroMQ still
 * holds replies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fq_test.h"
#include "replies.h"

typedef struct h {
  void *ctx, *router, *a, *b;
  fq_replies_t *r;
} h_t;

static int h_open(h_t *h, size_t max) {
  static int seq;
  char ep[64];
  snprintf(ep, sizeof ep, "inproc://test-replies-%d", seq++);
  memset(h, 0, sizeof *h);
  h->ctx = zmq_ctx_new();
  h->router = zmq_socket(h->ctx, ZMQ_ROUTER);
  int zero = 0;
  zmq_setsockopt(h->router, ZMQ_SNDHWM, &zero, sizeof zero);
  zmq_setsockopt(h->router, ZMQ_LINGER, &zero, sizeof zero);
  if (zmq_bind(h->router, ep) != 0) return -1;
  void **cl[2] = {&h->a, &h->b};
  for (int i = 0; i < 2; i++) {
    *cl[i] = zmq_socket(h->ctx, ZMQ_DEALER);
    zmq_setsockopt(*cl[i], ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(*cl[i], ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(*cl[i], ZMQ_ROUTING_ID, i ? "client-b" : "client-a", 8);
    if (zmq_connect(*cl[i], ep) != 0) return -1;
    /* The ROUTER learns the routing id from a first message. */
    zmq_send(*cl[i], "hi", 2, 0);
    char id[16], buf[8];
    if (zmq_recv(h->router, id, sizeof id, 0) < 0 || zmq_recv(h->router, buf, sizeof buf, 0) < 0)
      return -1;
  }
  h->r = fq_replies_new(h->router, max);
  return h->r ? 0 : -1;
}

static void h_close(h_t *h) {
  fq_replies_destroy(&h->r);
  if (h->a) zmq_close(h->a);
  if (h->b) zmq_close(h->b);
  if (h->router) zmq_close(h->router);
  if (h->ctx) zmq_ctx_term(h->ctx);
}

static int send_to(h_t *h, const char *id, size_t len) {
  static char body[65536];
  memset(body, 'r', sizeof body);
  fq_frame_t env[2] = {{id, strlen(id)}, {"", 0}};
  return fq_replies_send(h->r, env, 2, body, len);
}

/* Read one reply ([delimiter, body]) on s; its body length or -1. */
static int take(void *s) {
  char d[8];
  static char body[65536];
  if (zmq_recv(s, d, sizeof d, ZMQ_DONTWAIT) != 0) return -1;
  return zmq_recv(s, body, sizeof body, ZMQ_DONTWAIT);
}

#define CHARGE(len) ((len) + FQ_REPLIES_REPLY_COST + 3 * FQ_REPLIES_FRAME_COST + 8)

FQ_TEST(a_client_that_does_not_read_holds_at_most_the_limit) {
  h_t h;
  const size_t max = 10 * CHARGE(1000);
  if (h_open(&h, max) != 0) {
    FQ__FAIL("harness: %s", zmq_strerror(zmq_errno()));
    h_close(&h);
    return;
  }
  /* Ten replies of 1000 bytes fit, the eleventh does not. */
  for (int i = 0; i < 10; i++) CHECK_INT(send_to(&h, "client-a", 1000), 0);
  CHECK_INT(fq_replies_queued(h.r, "client-a", 8), 10 * CHARGE(1000));
  CHECK_INT(send_to(&h, "client-a", 1000), FQ_EBUSY);
  CHECK_INT(fq_replies_dropped(h.r), 1);
  /* Another client is not affected. */
  CHECK_INT(send_to(&h, "client-b", 1000), 0);
  CHECK_INT(fq_replies_queued(h.r, "client-b", 8), CHARGE(1000));
  /* As client a reads, its charge goes down and replies fit again. */
  CHECK_INT(take(h.a), 1000);
  CHECK_INT(take(h.a), 1000);
  CHECK_INT(fq_replies_queued(h.r, "client-a", 8), 8 * CHARGE(1000));
  CHECK_INT(send_to(&h, "client-a", 1000), 0);
  int got = 0;
  while (take(h.a) == 1000) got++;
  CHECK_INT(got, 9);
  CHECK_INT(fq_replies_queued(h.r, "client-a", 8), 0);
  /* Sweeping forgets a, which holds nothing, and keeps b. */
  size_t held = 0;
  CHECK_INT(fq_replies_sweep(h.r, &held), 1);
  CHECK_INT(held, CHARGE(1000));
  CHECK_INT(take(h.b), 1000);
  CHECK_INT(fq_replies_sweep(h.r, NULL), 0);
  /* A reply larger than the limit is never sent. */
  CHECK_INT(send_to(&h, "client-a", 20000), FQ_EBUSY);
  /* No routing id, no reply. */
  CHECK_INT(fq_replies_send(h.r, NULL, 0, "x", 1), FQ_EBADREQ);
  h_close(&h);
}

/* Replies still queued when the ledger goes: ZeroMQ releases them when
 * the socket closes, after fq_replies_destroy(), and the entries they
 * reference are freed then (an ASan build shows a use after free or a
 * leak otherwise). */
FQ_TEST(entries_outlive_the_ledger_while_replies_are_queued) {
  h_t h;
  if (h_open(&h, 0) != 0) {
    FQ__FAIL("harness");
    h_close(&h);
    return;
  }
  for (int i = 0; i < 100; i++) CHECK_INT(send_to(&h, "client-a", 100 + i), 0);
  CHECK_INT(send_to(&h, "client-b", 50000), 0);
  CHECK_INT(fq_replies_queued(h.r, "client-b", 8), CHARGE(50000));
  CHECK_INT(take(h.a), 100);
  fq_replies_destroy(&h.r);
  CHECK(h.r == NULL);
  CHECK_INT(take(h.a), 101);
  h_close(&h);
}

/* Many clients coming and going: the table keeps only those owed
 * something. */
FQ_TEST(sweep_keeps_the_table_small) {
  h_t h;
  if (h_open(&h, 0) != 0) {
    FQ__FAIL("harness");
    h_close(&h);
    return;
  }
  /* Unknown routing ids: ZeroMQ drops the replies at once, which
   * releases them. */
  for (int i = 0; i < 1000; i++) {
    char id[16];
    snprintf(id, sizeof id, "gone-%d", i);
    CHECK_INT(send_to(&h, id, 10), 0);
    CHECK_INT(fq_replies_queued(h.r, id, strlen(id)), 0);
  }
  CHECK_INT(send_to(&h, "client-a", 10), 0);
  CHECK_INT(fq_replies_sweep(h.r, NULL), 1);
  CHECK_INT(take(h.a), 10);
  CHECK_INT(fq_replies_sweep(h.r, NULL), 0);
  h_close(&h);
}
