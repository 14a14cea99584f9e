/*
 * Unit tests of the client library (src/client/client.c): request builders read
 * back through the reply reader, CLI parameter typing, JSON parameters, the
 * bounded msgpack check, the JSON printer, and the sockets against a real
 * ROUTER / PUB on loopback (a peer thread plays the daemon), plaintext and
 * CURVE: requests through a CURVE server, the CURVE options surviving the
 * reconnect after a timeout, and each kind of refused handshake (wrong
 * server key, plaintext against CURVE and the reverse, a ZAP refusal)
 * reported quickly as FQ_EAUTH.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "curvekey.h"
#include "fleetq/client.h"
#include "fleetq/wire.h"
#include "fq_test.h"
#include "rng.h"

static void to_json(const uint8_t *p, size_t n, char *out, size_t cap) {
  fq_buf_t b;
  fq_buf_init(&b, 0);
  int rc = fq_msgpack_to_json(p, n, &b, 0);
  if (rc) {
    snprintf(out, cap, "<error %d>", rc);
  } else {
    snprintf(out, cap, "%.*s", (int)b.len, (const char *)b.data);
  }
  fq_buf_free(&b);
}

FQ_TEST(submit_builder_round_trips) {
  fq_buf_t b;
  fq_buf_init(&b, 4096);
  fq_pval_t pv[3];
  fq_err_t e;
  CHECK_INT(fq_param_parse("percent=80", &pv[0], &e), 0);
  CHECK_INT(fq_param_parse("on=true", &pv[1], &e), 0);
  CHECK_INT(fq_param_parse("name=Front Door", &pv[2], &e), 0);
  fq_submit_args_t a = {.tenant = "acme", .key = "k1", .account = "acct",
                        .vin = "5YJ3E1EA7KF000001", .command = "set_charge_limit",
                        .params = pv, .nparams = 3, .ttl_ms = 300, .coalesce = true,
                        .has_req = true, .req = 42};
  CHECK_INT(fq_req_submit(&b, &a), 0);
  char js[1024];
  to_json(b.data, b.len, js, sizeof js);
  CHECK_STR(js, "{\"op\":\"submit\",\"tenant\":\"acme\",\"key\":\"k1\",\"account\":\"acct\","
                "\"vin\":\"5YJ3E1EA7KF000001\",\"command\":\"set_charge_limit\","
                "\"params\":{\"percent\":80,\"on\":true,\"name\":\"Front Door\"},"
                "\"ttl_ms\":300,\"coalesce\":true,\"req\":42}");
  fq_msg_t m;
  CHECK_INT(fq_msg_decode(&m, b.data, b.len, &e), 0);
  int64_t v = 0;
  CHECK(fq_mp_int(fq_mp_get(m.root, "req"), &v));
  CHECK_INT(v, 42);
  CHECK(fq_mp_str_eq(fq_mp_get(m.root, "op"), "submit"));
  CHECK(fq_mp_get(m.root, "site") == NULL);
  fq_msg_free(&m);

  fq_buf_reset(&b);
  fq_submit_args_t s = {.tenant = "t", .key = "k", .account = "a", .site = 42,
                        .command = "backup"};
  CHECK_INT(fq_req_submit(&b, &s), 0);
  to_json(b.data, b.len, js, sizeof js);
  CHECK_STR(js, "{\"op\":\"submit\",\"tenant\":\"t\",\"key\":\"k\",\"account\":\"a\","
                "\"site\":42,\"command\":\"backup\"}");
  fq_buf_free(&b);
}

FQ_TEST(other_builders) {
  fq_buf_t b;
  char js[512];
  fq_buf_init(&b, 4096);
  CHECK_INT(fq_req_lookup(&b, "get", "fq-1", NULL, NULL, false, 0), 0);
  to_json(b.data, b.len, js, sizeof js);
  CHECK_STR(js, "{\"op\":\"get\",\"id\":\"fq-1\"}");
  fq_buf_reset(&b);
  CHECK_INT(fq_req_lookup(&b, "cancel", NULL, "acme", "k9", true, -3), 0);
  to_json(b.data, b.len, js, sizeof js);
  CHECK_STR(js, "{\"op\":\"cancel\",\"tenant\":\"acme\",\"key\":\"k9\",\"req\":-3}");
  fq_buf_reset(&b);
  CHECK_INT(fq_req_history(&b, 3, 17, 1000, false, 0), 0);
  to_json(b.data, b.len, js, sizeof js);
  CHECK_STR(js, "{\"op\":\"history\",\"shard\":3,\"after\":17,\"limit\":1000}");
  fq_buf_reset(&b);
  /* By tenant: `after` counts the tenant's tseq; the daemon's decoder
   * takes the request as built. */
  CHECK_INT(fq_req_history_tenant(&b, 1, "acme", 5, 20, true, 9), 0);
  to_json(b.data, b.len, js, sizeof js);
  CHECK_STR(js, "{\"op\":\"history\",\"shard\":1,\"tenant\":\"acme\",\"after\":5,\"limit\":20,"
                "\"req\":9}");
  fq_request_t rq;
  fq_err_t e;
  CHECK_INT(fq_wire_decode_request(b.data, b.len, &rq, &e), 0);
  CHECK_INT(rq.op, FQ_OP_HISTORY);
  CHECK(rq.tenant.n == 4 && memcmp(rq.tenant.p, "acme", 4) == 0);
  CHECK_INT(rq.after, 5);
  fq_buf_reset(&b);
  CHECK_INT(fq_req_history_tenant(&b, 3, NULL, 17, 1000, false, 0), 0);
  to_json(b.data, b.len, js, sizeof js);
  CHECK_STR(js, "{\"op\":\"history\",\"shard\":3,\"after\":17,\"limit\":1000}");
  fq_buf_reset(&b);
  CHECK_INT(fq_req_ping(&b, true, 7), 0);
  to_json(b.data, b.len, js, sizeof js);
  CHECK_STR(js, "{\"op\":\"ping\",\"req\":7}");
  fq_buf_free(&b);

  /* The buffer's cap is honoured and reported. */
  fq_buf_init(&b, 8);
  CHECK_INT(fq_req_history(&b, 3, 17, 1000, false, 0), FQ_ETOOLARGE);
  fq_buf_free(&b);
}

FQ_TEST(param_typing) {
  fq_pval_t pv;
  fq_err_t e;
  CHECK_INT(fq_param_parse("a=false", &pv, &e), 0);
  CHECK_INT(pv.type, FQ_PT_BOOL);
  CHECK_INT(pv.v.b, 0);
  CHECK_INT(fq_param_parse("a=-12", &pv, &e), 0);
  CHECK_INT(pv.type, FQ_PT_INT);
  CHECK_INT(pv.v.i, -12);
  CHECK_INT(fq_param_parse("a=21.5", &pv, &e), 0);
  CHECK_INT(pv.type, FQ_PT_FLOAT);
  CHECK(pv.v.f == 21.5);
  CHECK_INT(fq_param_parse("a=1e3", &pv, &e), 0);
  CHECK_INT(pv.type, FQ_PT_FLOAT);
  static const char *strs[] = {"a=nan", "a=inf", "a=0x10", "a=", "a=12abc", "a=True", "a=-",
                               "a=99999999999999999999999"};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    CHECK_INT(fq_param_parse(strs[i], &pv, &e), 0);
    if (pv.type != FQ_PT_STR) fprintf(stderr, "  %s typed as %d\n", strs[i], pv.type);
    CHECK_INT(pv.type, FQ_PT_STR);
  }
  CHECK_INT(pv.name_len, 1);
  CHECK_INT(fq_param_parse("novalue", &pv, &e), FQ_EBADPARAM);
  CHECK_INT(fq_param_parse("=1", &pv, &e), FQ_EBADPARAM);
}

FQ_TEST(params_from_json) {
  fq_buf_t store, b;
  fq_pval_t pv[FQ_MAX_PARAMS];
  size_t n = 0;
  fq_err_t e;
  char js[512];
  fq_buf_init(&store, 4096);
  fq_buf_init(&b, 4096);
  CHECK_INT(fq_params_from_json("{\"percent\": 80, \"temp\": 21.5, \"on\": true,"
                                " \"mode\": \"x\", \"sched\": {\"days\": [1, 2]}}",
                                &store, pv, FQ_MAX_PARAMS, &n, &e),
            0);
  CHECK_INT(n, 5);
  fq_submit_args_t a = {.tenant = "t", .key = "k", .account = "a", .vin = "V",
                        .command = "c", .params = pv, .nparams = n};
  CHECK_INT(fq_req_submit(&b, &a), 0);
  to_json(b.data, b.len, js, sizeof js);
  CHECK(strstr(js, "\"params\":{\"percent\":80,\"temp\":21.5,\"on\":true,\"mode\":\"x\","
                   "\"sched\":{\"days\":[1,2]}}") != NULL);
  if (!strstr(js, "\"sched\"")) fprintf(stderr, "  got %s\n", js);
  CHECK_INT(fq_params_from_json("[1]", &store, pv, FQ_MAX_PARAMS, &n, &e), FQ_EBADPARAM);
  CHECK_INT(fq_params_from_json("{\"a\": null}", &store, pv, FQ_MAX_PARAMS, &n, &e),
            FQ_EBADPARAM);
  CHECK(strstr(e.msg, "params.a") != NULL);
  CHECK_INT(fq_params_from_json("{bad", &store, pv, FQ_MAX_PARAMS, &n, &e), FQ_EBADPARAM);
  CHECK_INT(fq_params_from_json("{\"a\":1,\"b\":2}", &store, pv, 1, &n, &e), FQ_EBADPARAM);
  fq_buf_free(&store);
  fq_buf_free(&b);
}

FQ_TEST(msgpack_check_rejects_lies) {
  fq_err_t e;
  /* array32 declaring 2^32-1 elements with 1 byte behind it */
  static const uint8_t huge_arr[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
  static const uint8_t huge_map[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01, 0x01};
  static const uint8_t huge_str[] = {0xdb, 0xff, 0xff, 0xff, 0xf0, 'a'};
  static const uint8_t trunc_u32[] = {0xce, 0x01, 0x02};
  static const uint8_t trailing[] = {0x80, 0x00};
  static const uint8_t never[] = {0xc1};
  static const uint8_t ok_map[] = {0x81, 0xa1, 'a', 0x92, 0x01, 0xc0};
  CHECK_INT(fq_msgpack_check(huge_arr, sizeof huge_arr, &e), FQ_EBADREQ);
  CHECK_INT(fq_msgpack_check(huge_map, sizeof huge_map, &e), FQ_EBADREQ);
  CHECK_INT(fq_msgpack_check(huge_str, sizeof huge_str, &e), FQ_EBADREQ);
  CHECK_INT(fq_msgpack_check(trunc_u32, sizeof trunc_u32, &e), FQ_EBADREQ);
  CHECK_INT(fq_msgpack_check(trailing, sizeof trailing, &e), FQ_EBADREQ);
  CHECK_INT(fq_msgpack_check(never, sizeof never, &e), FQ_EBADREQ);
  CHECK_INT(fq_msgpack_check(ok_map, sizeof ok_map, &e), 0);
  CHECK_INT(fq_msgpack_check(NULL, 0, &e), FQ_EBADREQ);
  /* Nesting: 40 single-element arrays is past the depth bound. */
  uint8_t deep[41];
  memset(deep, 0x91, 40);
  deep[40] = 0x01;
  CHECK_INT(fq_msgpack_check(deep, sizeof deep, &e), FQ_EBADREQ);
  CHECK_INT(fq_msgpack_check(deep + 20, sizeof deep - 20, &e), 0);
  fq_msg_t m;
  CHECK_INT(fq_msg_decode(&m, huge_arr, sizeof huge_arr, &e), FQ_EBADREQ);
  static const uint8_t not_map[] = {0x92, 0x01, 0x02};
  CHECK_INT(fq_msg_decode(&m, not_map, sizeof not_map, &e), FQ_EBADREQ);
}

FQ_TEST(json_printer) {
  char js[512];
  /* {"s": "a\"b\n", 1: bin(de ad), "f": 1.5, "g": 2.0, "n": -5, "x": nil,
   *  "bad": "\xff"} */
  static const uint8_t in[] = {
      0x87, 0xa1, 's', 0xa4, 'a', '"', 'b', '\n', 0x01, 0xc4, 0x02, 0xde, 0xad,
      0xa1, 'f', 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xa1, 'g', 0xca, 0x40, 0x00,
      0x00, 0x00, 0xa1, 'n', 0xfb, 0xa1, 'x', 0xc0, 0xa3, 'b', 'a', 'd', 0xa1, 0xff};
  to_json(in, sizeof in, js, sizeof js);
  CHECK_STR(js, "{\"s\":\"a\\\"b\\u000a\",\"1\":\"dead\",\"f\":1.5,\"g\":2.0,\"n\":-5,"
                "\"x\":null,\"bad\":\"\\ufffd\"}");
  static const uint8_t utf8[] = {0xa3, 0xc3, 0xa9, 'z'};
  to_json(utf8, sizeof utf8, js, sizeof js);
  CHECK_STR(js, "\"\xc3\xa9z\"");
  static const uint8_t arr[] = {0x92, 0x90, 0x80};
  fq_buf_t b;
  fq_buf_init(&b, 0);
  CHECK_INT(fq_msgpack_to_json(arr, sizeof arr, &b, 1), 0);
  CHECK_MEM(b.data, b.len, "[\n  [],\n  {}\n]", 14);
  /* Errors leave the output as it was. */
  size_t before = b.len;
  static const uint8_t bad[] = {0x92, 0x01};
  CHECK_INT(fq_msgpack_to_json(bad, sizeof bad, &b, 0), FQ_EBADREQ);
  CHECK_INT(b.len, before);
  fq_buf_free(&b);
}

/* A ROUTER on loopback playing the daemon: answers each request by echoing
 * the envelope and the body, except that it holds back the first request
 * whose body is "slow" and answers it only after the next request. */
typedef struct peer {
  void *ctx;
  char ep[64];
  int nreq;
} peer_t;

static void *router_main(void *arg) {
  peer_t *p = arg;
  void *r = zmq_socket(p->ctx, ZMQ_ROUTER);
  int linger = 0;
  zmq_setsockopt(r, ZMQ_LINGER, &linger, sizeof linger);
  zmq_bind(r, "tcp://127.0.0.1:*");
  size_t len = sizeof p->ep;
  zmq_getsockopt(r, ZMQ_LAST_ENDPOINT, p->ep, &len);
  zmq_msg_t held_id;
  bool holding = false;
  zmq_msg_init(&held_id);
  for (;;) {
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, r, 0) < 0) break;
    zmq_msg_recv(&body, r, 0);
    p->nreq++;
    if (zmq_msg_size(&body) == 4 && memcmp(zmq_msg_data(&body), "quit", 4) == 0) {
      zmq_msg_close(&id);
      zmq_msg_close(&body);
      break;
    }
    if (zmq_msg_size(&body) == 4 && memcmp(zmq_msg_data(&body), "slow", 4) == 0) {
      zmq_msg_copy(&held_id, &id);
      holding = true;
      zmq_msg_close(&id);
      zmq_msg_close(&body);
      continue;
    }
    if (holding) {
      /* The late answer to the timed-out request goes to its old identity. */
      zmq_msg_send(&held_id, r, ZMQ_SNDMORE);
      zmq_send(r, "late", 4, 0);
      holding = false;
    }
    zmq_msg_send(&id, r, ZMQ_SNDMORE);
    zmq_msg_send(&body, r, 0);
  }
  zmq_msg_close(&held_id);
  zmq_close(r);
  return NULL;
}

static void wait_bound(peer_t *p) {
  for (int i = 0; i < 500 && !p->ep[0]; i++) usleep(2000);
}

FQ_TEST(client_request_timeout_and_pipelining) {
  peer_t p = {0};
  pthread_t th;
  p.ctx = zmq_ctx_new();
  pthread_create(&th, NULL, router_main, &p);
  wait_bound(&p);
  CHECK(p.ep[0] != 0);
  fq_err_t e;
  fq_client_t *c = fq_client_new(p.ep, 300, &e);
  CHECK(c != NULL);
  fq_buf_t reply;
  fq_buf_init(&reply, 1024);
  CHECK_INT(fq_client_request(c, (const uint8_t *)"hello", 5, &reply, &e), 0);
  CHECK_MEM(reply.data, reply.len, "hello", 5);
  CHECK_INT(fq_client_request(c, (const uint8_t *)"slow", 4, &reply, &e), -ETIMEDOUT);
  CHECK(strstr(e.msg, "300 ms") != NULL);
  /* The late "late" reply must not be taken for the answer to "again". */
  CHECK_INT(fq_client_request(c, (const uint8_t *)"again", 5, &reply, &e), 0);
  CHECK_MEM(reply.data, reply.len, "again", 5);
  CHECK_INT(fq_client_recv(c, &reply, 100, &e), -ETIMEDOUT);
  /* Pipelining: 200 requests out, 200 replies back, in order over one
   * connection to one peer. */
  char msg[16];
  int sent_ok = 1, got_ok = 1;
  for (int i = 0; i < 200; i++) {
    int n = snprintf(msg, sizeof msg, "m%d", i);
    if (fq_client_send(c, (const uint8_t *)msg, (size_t)n, &e)) sent_ok = 0;
  }
  for (int i = 0; i < 200; i++) {
    int n = snprintf(msg, sizeof msg, "m%d", i);
    if (fq_client_recv(c, &reply, 2000, &e) || reply.len != (size_t)n ||
        memcmp(reply.data, msg, (size_t)n)) {
      got_ok = 0;
      fprintf(stderr, "  reply %d: %.*s\n", i, (int)reply.len, (const char *)reply.data);
      break;
    }
  }
  CHECK(sent_ok);
  CHECK(got_ok);
  /* A reply above the buffer cap is refused, not truncated. */
  fq_buf_t small;
  fq_buf_init(&small, 3);
  CHECK_INT(fq_client_request(c, (const uint8_t *)"toolong", 7, &small, &e), FQ_ETOOLARGE);
  fq_buf_free(&small);
  fq_client_send(c, (const uint8_t *)"quit", 4, &e);
  pthread_join(th, NULL);
  fq_client_destroy(&c);
  CHECK(c == NULL);
  fq_client_destroy(&c); /* NULL is fine */
  fq_buf_free(&reply);
  zmq_ctx_term(p.ctx);
}

FQ_TEST(subscriber_filters_by_prefix) {
  void *ctx = zmq_ctx_new();
  void *pub = zmq_socket(ctx, ZMQ_PUB);
  int linger = 0;
  char ep[64];
  size_t len = sizeof ep;
  zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
  CHECK_INT(zmq_bind(pub, "tcp://127.0.0.1:*"), 0);
  zmq_getsockopt(pub, ZMQ_LAST_ENDPOINT, ep, &len);
  fq_err_t e;
  const char *pf[] = {"acme/5YJ"};
  fq_sub_t *s = fq_sub_new(ep, pf, 1, &e);
  CHECK(s != NULL);
  CHECK_INT(fq_sub_wait_connected(s, 2000, &e), 0);
  /* The subscription travels after the handshake; publish until the first
   * matching message arrives instead of sleeping a guessed time. */
  fq_buf_t topic, body;
  fq_buf_init(&topic, 256);
  fq_buf_init(&body, 256);
  int rc = -1;
  for (int i = 0; i < 100 && rc != 0; i++) {
    zmq_send(pub, "other/5YJ", 9, ZMQ_SNDMORE);
    zmq_send(pub, "\x80", 1, 0);
    zmq_send(pub, "acme/5YJ1", 9, ZMQ_SNDMORE);
    zmq_send(pub, "\x81\xa1x\x01", 4, 0);
    rc = fq_sub_recv(s, &topic, &body, 20, &e);
  }
  CHECK_INT(rc, 0);
  CHECK_MEM(topic.data, topic.len, "acme/5YJ1", 9);
  CHECK_MEM(body.data, body.len, "\x81\xa1x\x01", 4);
  /* Drain: everything that arrives matches the prefix. */
  int foreign = 0;
  while (fq_sub_recv(s, &topic, &body, 50, &e) == 0)
    if (topic.len < 8 || memcmp(topic.data, "acme/5YJ", 8) != 0) foreign++;
  CHECK_INT(foreign, 0);
  /* A one-frame message is not an event. */
  zmq_send(pub, "acme/5YJ9", 9, 0);
  CHECK_INT(fq_sub_recv(s, &topic, &body, 1000, &e), FQ_EBADREQ);
  CHECK_INT(fq_sub_recv(s, &topic, &body, 10, &e), -ETIMEDOUT);
  fq_sub_destroy(&s);
  CHECK(s == NULL);
  fq_buf_free(&topic);
  fq_buf_free(&body);
  zmq_close(pub);
  zmq_ctx_term(ctx);
}

/* The base generator, seed printed. */
static fq_rng_t g_rng;
static uint64_t rnd64(void) { return fq_rng_next(&g_rng); }

/* Mutated and random bytes: the bounded reader, msgpack-c and the JSON
 * printer must agree on what is well formed, and whatever the printer
 * emits must parse as JSON.  Under AddressSanitizer msgpack-c's attempts
 * at the huge allocations that mutated sizes declare are slow (well over
 * a minute on a busy 2-core machine, under a second in release), hence
 * its own timeout, inside ctest's 300 s for the binary. */
FQ_TEST_WITH_TIMEOUT(reader_agrees_with_msgpack_c_on_mutations, 280) {
  uint64_t rng_seed = 0x9e3779b97f4a7c15ULL;
  fq_rng_seed(&g_rng, rng_seed);
  fprintf(stderr, "  seed 0x%016" PRIx64 "\n", rng_seed);
  fq_buf_t seed, js;
  fq_buf_init(&seed, 4096);
  fq_buf_init(&js, 0);
  fq_pval_t pv[2];
  fq_err_t e;
  fq_param_parse("percent=80", &pv[0], &e);
  fq_param_parse("name=x\xc3\xa9y", &pv[1], &e);
  fq_submit_args_t a = {.tenant = "acme", .key = "k", .account = "a", .vin = "5YJ3E1EA7KF000001",
                        .command = "c", .params = pv, .nparams = 2, .ttl_ms = 5,
                        .has_req = true, .req = -70000};
  fq_req_submit(&seed, &a);
  uint8_t buf[512];
  int disagree_unpack = 0, disagree_json = 0, bad_json = 0, accepted = 0;
  for (int it = 0; it < 20000; it++) {
    size_t n;
    if (it % 4 == 0) {
      n = rnd64() % 40;
      for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rnd64();
    } else {
      n = seed.len;
      memcpy(buf, seed.data, n);
      int edits = 1 + (int)(rnd64() % 3);
      for (int k = 0; k < edits && n > 0; k++) {
        size_t pos = rnd64() % n;
        switch (rnd64() % 3) {
        case 0: buf[pos] = (uint8_t)rnd64(); break;
        case 1: n = pos + (n - pos) / 2; break; /* truncate */
        default: buf[pos] ^= (uint8_t)(1u << (rnd64() % 8)); break;
        }
      }
    }
    int chk = fq_msgpack_check(buf, n, &e);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int ur = n ? msgpack_unpack_next(&up, (const char *)buf, n, &off) : MSGPACK_UNPACK_CONTINUE;
    bool ref_ok = ur == MSGPACK_UNPACK_SUCCESS && off == n;
    msgpack_unpacked_destroy(&up);
    /* Inputs under 33 bytes cannot nest past the depth bound, so there the
     * two decoders must agree exactly. */
    if (n < 33 && (chk == 0) != ref_ok) {
      if (disagree_unpack++ < 3) fprintf(stderr, "  it %d: check %d, msgpack-c %d\n", it, chk, ur);
    }
    if (chk == 0 && !ref_ok) disagree_unpack++;
    fq_buf_reset(&js);
    int jr = fq_msgpack_to_json(buf, n, &js, (int)(it & 1));
    if ((jr == 0) != (chk == 0)) disagree_json++;
    if (jr == 0) {
      accepted++;
      json_error_t je;
      /* jansson cannot hold NUL in object keys; that JSON is still valid. */
      json_t *j = json_loadb((const char *)js.data, js.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
      if (!j && !strstr(je.text, "NUL byte in object key")) {
        if (bad_json++ < 3)
          fprintf(stderr, "  it %d: %s: %.*s\n", it, je.text, (int)js.len, (const char *)js.data);
      }
      json_decref(j);
    }
  }
  fprintf(stderr, "  %d of 20000 inputs well formed\n", accepted);
  CHECK_INT(disagree_unpack, 0);
  CHECK_INT(disagree_json, 0);
  CHECK_INT(bad_json, 0);
  CHECK(accepted > 100);
  fq_buf_free(&seed);
  fq_buf_free(&js);
}

/* ------------------------------------------------------------------ */
/* CURVE                                                                */

/* A fresh directory for key files (each test runs in its own process,
 * which ends with exit(): the atexit handler removes it). */
static char g_keydir[64];

static void rm_keydir(void) {
  char cmd[128];
  if (!g_keydir[0]) return;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_keydir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_keydir);
}

static void keydir(void) {
  snprintf(g_keydir, sizeof g_keydir, "/tmp/fq-client-curve-XXXXXX");
  if (!mkdtemp(g_keydir)) abort();
  atexit(rm_keydir);
}

/* Write a client key file named name; its public key into pub. */
static void client_keyfile(const char *name, char *path, size_t cap, char pub[41]) {
  fq_err_t e;
  snprintf(path, cap, "%s/%s", g_keydir, name);
  if (fq_curve_keyfile_write(path, pub, &e)) {
    fprintf(stderr, "keyfile %s: %s\n", path, e.msg);
    abort();
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

FQ_TEST(curve_creds_both_or_neither) {
  keydir();
  char path[128], pub[41], spub[41], ssec[41];
  client_keyfile("c.key", path, sizeof path, pub);
  CHECK_INT(zmq_curve_keypair(spub, ssec), 0);
  fq_curve_creds_t cc;
  fq_err_t e;
  fq_client_opts_t o = {.endpoint = "tcp://127.0.0.1:1"};
  CHECK_INT(fq_curve_creds_load(&cc, &o, &e), 0);
  CHECK(!cc.on);
  o.curve_key_file = path;
  CHECK_INT(fq_curve_creds_load(&cc, &o, &e), FQ_ECONFIG);
  CHECK(strstr(e.msg, "not the server's public key") != NULL);
  CHECK(!cc.on);
  o.curve_key_file = NULL;
  o.server_key = spub;
  CHECK_INT(fq_curve_creds_load(&cc, &o, &e), FQ_ECONFIG);
  CHECK(strstr(e.msg, "not a client key file") != NULL);
  o.curve_key_file = path;
  o.server_key = "not-a-key";
  CHECK_INT(fq_curve_creds_load(&cc, &o, &e), FQ_ECONFIG);
  CHECK(strstr(e.msg, "9 characters") != NULL);
  o.server_key = spub;
  CHECK_INT(fq_curve_creds_load(&cc, &o, &e), 0);
  CHECK(cc.on);
  CHECK_STR(cc.pub, pub);
  CHECK_STR(cc.server, spub);
  char derived[41];
  CHECK_INT(zmq_curve_public(derived, cc.sec), 0);
  CHECK_STR(derived, pub);
  fq_curve_creds_wipe(&cc);
  CHECK(!cc.on);
  CHECK_INT(cc.sec[0], 0);
  /* The key file's own checks come through, with its path. */
  chmod(path, 0644);
  CHECK_INT(fq_curve_creds_load(&cc, &o, &e), FQ_EKEYFILE);
  CHECK(strstr(e.msg, "chmod 600") != NULL);
  /* And fq_client_new_opts / fq_sub_new_opts refuse the same way. */
  CHECK(fq_client_new_opts(&o, &e) == NULL);
  CHECK_INT(e.code, FQ_EKEYFILE);
  CHECK(fq_sub_new_opts(&o, NULL, 0, &e) == NULL);
  CHECK_INT(e.code, FQ_EKEYFILE);
  chmod(path, 0600);
  o.server_key = NULL;
  CHECK(fq_client_new_opts(&o, &e) == NULL);
  CHECK_INT(e.code, FQ_ECONFIG);
}

FQ_TEST(curve_opts_from_env_flag_wins) {
  setenv(FQ_ENV_CURVE_KEY, "/env/key", 1);
  setenv(FQ_ENV_SERVER_KEY, "envserver", 1);
  fq_client_opts_t o = {0};
  fq_client_opts_from_env(&o);
  CHECK_STR(o.curve_key_file, "/env/key");
  CHECK_STR(o.server_key, "envserver");
  fq_client_opts_t f = {.curve_key_file = "/flag/key"};
  fq_client_opts_from_env(&f);
  CHECK_STR(f.curve_key_file, "/flag/key");
  CHECK_STR(f.server_key, "envserver");
  setenv(FQ_ENV_CURVE_KEY, "", 1);
  unsetenv(FQ_ENV_SERVER_KEY);
  fq_client_opts_t u = {0};
  fq_client_opts_from_env(&u);
  CHECK(u.curve_key_file == NULL);
  CHECK(u.server_key == NULL);
}

/* A CURVE (or plaintext) ROUTER in a thread, as fleetqd's ingress would
 * be: echoes each request, except "slow", whose late answer goes out only
 * with the next reply.  With zap_deny, a ZAP handler on its context
 * refuses every client (status 400), as fleetqd does an unlisted key. */
typedef struct curve_peer {
  void *ctx;
  const char *secret; /* server secret key (Z85), NULL: plaintext */
  bool zap_deny;
  int type;           /* ZMQ_ROUTER or ZMQ_PUB */
  char ep[64];
  atomic_int stop;
  atomic_int nreq, nzap;
} curve_peer_t;

static void *zap_main(void *arg) {
  curve_peer_t *p = arg;
  void *z = zmq_socket(p->ctx, ZMQ_REP);
  int linger = 0, tmo = 50;
  zmq_setsockopt(z, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(z, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
  if (zmq_bind(z, "inproc://zeromq.zap.01")) abort();
  while (!atomic_load(&p->stop)) {
    /* version, request id, domain, address, identity, mechanism, creds */
    zmq_msg_t f[8];
    int nf = 0;
    bool more = true;
    while (more && nf < 8) {
      zmq_msg_init(&f[nf]);
      if (zmq_msg_recv(&f[nf], z, 0) < 0) {
        zmq_msg_close(&f[nf]);
        break;
      }
      more = zmq_msg_more(&f[nf]);
      nf++;
    }
    if (nf < 2) {
      for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
      continue;
    }
    atomic_fetch_add(&p->nzap, 1);
    zmq_send(z, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(z, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    zmq_send(z, "400", 3, ZMQ_SNDMORE);
    zmq_send(z, "key not listed", 14, ZMQ_SNDMORE);
    zmq_send(z, "", 0, ZMQ_SNDMORE);
    zmq_send(z, "", 0, 0);
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
  }
  zmq_close(z);
  return NULL;
}

static void *curve_peer_main(void *arg) {
  curve_peer_t *p = arg;
  void *r = zmq_socket(p->ctx, p->type);
  int linger = 0, one = 1, tmo = 20;
  zmq_setsockopt(r, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(r, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
  if (p->secret) {
    zmq_setsockopt(r, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(r, ZMQ_CURVE_SECRETKEY, p->secret, 41);
  }
  zmq_bind(r, "tcp://127.0.0.1:*");
  size_t len = sizeof p->ep;
  zmq_getsockopt(r, ZMQ_LAST_ENDPOINT, p->ep, &len);
  zmq_msg_t held;
  bool holding = false;
  zmq_msg_init(&held);
  while (!atomic_load(&p->stop)) {
    if (p->type == ZMQ_PUB) {
      /* Publish until stopped: a subscriber joining at any time sees
       * events within a few milliseconds. */
      zmq_send(r, "acme/5YJ1", 9, ZMQ_SNDMORE);
      zmq_send(r, "\x81\xa1x\x01", 4, 0);
      usleep(5000);
      continue;
    }
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, r, 0) < 0) {
      zmq_msg_close(&id);
      zmq_msg_close(&body);
      continue;
    }
    zmq_msg_recv(&body, r, 0);
    atomic_fetch_add(&p->nreq, 1);
    if (zmq_msg_size(&body) == 4 && memcmp(zmq_msg_data(&body), "slow", 4) == 0) {
      zmq_msg_copy(&held, &id);
      holding = true;
    } else {
      if (holding) {
        zmq_msg_send(&held, r, ZMQ_SNDMORE);
        zmq_send(r, "late", 4, 0);
        holding = false;
      }
      zmq_msg_send(&id, r, ZMQ_SNDMORE);
      zmq_msg_send(&body, r, 0);
    }
    zmq_msg_close(&id);
    zmq_msg_close(&body);
  }
  zmq_msg_close(&held);
  zmq_close(r);
  return NULL;
}

typedef struct peer_run {
  curve_peer_t p;
  pthread_t th, zth;
  bool zap;
} peer_run_t;

static void peer_start(peer_run_t *pr, int type, const char *secret, bool zap_deny) {
  memset(pr, 0, sizeof *pr);
  pr->p.ctx = zmq_ctx_new();
  pr->p.type = type;
  pr->p.secret = secret;
  pr->p.zap_deny = zap_deny;
  if (zap_deny) {
    pthread_create(&pr->zth, NULL, zap_main, &pr->p);
    pr->zap = true;
    usleep(20000); /* the ZAP endpoint must be bound before handshakes */
  }
  pthread_create(&pr->th, NULL, curve_peer_main, &pr->p);
  for (int i = 0; i < 500 && !pr->p.ep[0]; i++) usleep(2000);
  if (!pr->p.ep[0]) abort();
}

static void peer_stop(peer_run_t *pr) {
  atomic_store(&pr->p.stop, 1);
  pthread_join(pr->th, NULL);
  if (pr->zap) pthread_join(pr->zth, NULL);
  zmq_ctx_term(pr->p.ctx);
}

FQ_TEST(curve_client_request_and_reconnect) {
  keydir();
  char path[128], cpub[41], spub[41], ssec[41];
  client_keyfile("c.key", path, sizeof path, cpub);
  CHECK_INT(zmq_curve_keypair(spub, ssec), 0);
  peer_run_t pr;
  peer_start(&pr, ZMQ_ROUTER, ssec, false);
  fq_err_t e;
  fq_client_opts_t o = {.endpoint = pr.p.ep, .timeout_ms = 400, .curve_key_file = path,
                        .server_key = spub};
  fq_client_t *c = fq_client_new_opts(&o, &e);
  CHECK(c != NULL);
  fq_buf_t reply;
  fq_buf_init(&reply, 1024);
  int rc = fq_client_request(c, (const uint8_t *)"hello", 5, &reply, &e);
  if (rc) FQ__FAIL("request over CURVE: %d %s", rc, e.msg);
  CHECK_MEM(reply.data, reply.len, "hello", 5);
  /* A timeout reopens the socket: the new one must be a CURVE client too
   * (a plaintext one would be refused by this server), and the late
   * answer to "slow" must not be read. */
  CHECK_INT(fq_client_request(c, (const uint8_t *)"slow", 4, &reply, &e), -ETIMEDOUT);
  rc = fq_client_request(c, (const uint8_t *)"again", 5, &reply, &e);
  if (rc) FQ__FAIL("request after reconnect: %d %s", rc, e.msg);
  CHECK_MEM(reply.data, reply.len, "again", 5);
  CHECK_INT(fq_client_recv(c, &reply, 100, &e), -ETIMEDOUT);
  CHECK_INT(atomic_load(&pr.p.nreq), 3);
  fq_client_destroy(&c);
  fq_buf_free(&reply);
  peer_stop(&pr);
}

/* A request that must fail fast with FQ_EAUTH and a message holding frag
 * or frag2 (the client's timeout is 10 s; the refusal must come well
 * before).  Two texts because a mechanism mismatch shows either as such or,
 * when the other side's reset wins the race, as a connection closed
 * mid-handshake. */
static void expect_refused_fast(const fq_client_opts_t *o, const char *frag, const char *frag2) {
  fq_err_t e;
  fq_client_t *c = fq_client_new_opts(o, &e);
  CHECK(c != NULL);
  if (!c) return;
  fq_buf_t reply;
  fq_buf_init(&reply, 1024);
  double t0 = now_s();
  int rc = fq_client_request(c, (const uint8_t *)"hello", 5, &reply, &e);
  double took = now_s() - t0;
  CHECK_INT(rc, FQ_EAUTH);
  if (!strstr(e.msg, frag) && (!frag2 || !strstr(e.msg, frag2)))
    FQ__FAIL("message \"%s\" lacks \"%s\"", e.msg, frag);
  if (took > 3.0) FQ__FAIL("refusal took %.2f s", took);
  /* The client stays usable (a fresh socket), and is refused again. */
  CHECK_INT(fq_client_request(c, (const uint8_t *)"hello", 5, &reply, &e), FQ_EAUTH);
  fq_client_destroy(&c);
  fq_buf_free(&reply);
}

FQ_TEST(curve_client_refusals_are_reported) {
  keydir();
  char path[128], cpub[41], spub[41], ssec[41], other_pub[41], other_sec[41];
  client_keyfile("c.key", path, sizeof path, cpub);
  CHECK_INT(zmq_curve_keypair(spub, ssec), 0);
  CHECK_INT(zmq_curve_keypair(other_pub, other_sec), 0);
  peer_run_t pr;
  peer_start(&pr, ZMQ_ROUTER, ssec, false);
  /* The wrong server key: the server cannot open the client's HELLO. */
  fq_client_opts_t o = {.endpoint = pr.p.ep, .timeout_ms = 10000, .curve_key_file = path,
                        .server_key = other_pub};
  expect_refused_fast(&o, "refused the CURVE handshake", NULL);
  /* A plaintext client against the CURVE server. */
  fq_client_opts_t plain = {.endpoint = pr.p.ep, .timeout_ms = 10000};
  expect_refused_fast(&plain, "requires CURVE", "probably requires CURVE");
  CHECK_INT(atomic_load(&pr.p.nreq), 0);
  peer_stop(&pr);
  /* A CURVE client against a plaintext server. */
  peer_start(&pr, ZMQ_ROUTER, NULL, false);
  fq_client_opts_t o2 = {.endpoint = pr.p.ep, .timeout_ms = 10000, .curve_key_file = path,
                         .server_key = spub};
  expect_refused_fast(&o2, "does not use CURVE", "or it does not use CURVE");
  CHECK_INT(atomic_load(&pr.p.nreq), 0);
  peer_stop(&pr);
  /* The right keys, but the server's ZAP handler refuses this client. */
  peer_start(&pr, ZMQ_ROUTER, ssec, true);
  fq_client_opts_t o3 = {.endpoint = pr.p.ep, .timeout_ms = 10000, .curve_key_file = path,
                         .server_key = spub};
  expect_refused_fast(&o3, "ZAP status 400", NULL);
  CHECK(atomic_load(&pr.p.nzap) >= 1);
  CHECK_INT(atomic_load(&pr.p.nreq), 0);
  peer_stop(&pr);
}

FQ_TEST(curve_subscriber) {
  keydir();
  char path[128], cpub[41], spub[41], ssec[41], other_pub[41], other_sec[41];
  client_keyfile("c.key", path, sizeof path, cpub);
  CHECK_INT(zmq_curve_keypair(spub, ssec), 0);
  CHECK_INT(zmq_curve_keypair(other_pub, other_sec), 0);
  peer_run_t pr;
  peer_start(&pr, ZMQ_PUB, ssec, false);
  fq_err_t e;
  const char *pf[] = {"acme/"};
  fq_client_opts_t o = {.endpoint = pr.p.ep, .curve_key_file = path, .server_key = spub};
  fq_sub_t *s = fq_sub_new_opts(&o, pf, 1, &e);
  CHECK(s != NULL);
  int rc = fq_sub_wait_connected(s, 3000, &e);
  if (rc) FQ__FAIL("wait_connected over CURVE: %d %s", rc, e.msg);
  fq_buf_t topic, body;
  fq_buf_init(&topic, 256);
  fq_buf_init(&body, 256);
  CHECK_INT(fq_sub_recv(s, &topic, &body, 3000, &e), 0);
  CHECK_MEM(topic.data, topic.len, "acme/5YJ1", 9);
  fq_sub_destroy(&s);
  /* The wrong server key: refused quickly, not a 5 s wait. */
  o.server_key = other_pub;
  s = fq_sub_new_opts(&o, pf, 1, &e);
  CHECK(s != NULL);
  double t0 = now_s();
  CHECK_INT(fq_sub_wait_connected(s, 5000, &e), FQ_EAUTH);
  CHECK(now_s() - t0 < 3.0);
  CHECK(strstr(e.msg, "publisher") != NULL);
  CHECK(strstr(e.msg, "refused the CURVE handshake") != NULL);
  CHECK_INT(fq_sub_recv(s, &topic, &body, 100, &e), -ETIMEDOUT);
  fq_sub_destroy(&s);
  /* A plaintext subscriber to the CURVE publisher. */
  s = fq_sub_new(pr.p.ep, pf, 1, &e);
  CHECK(s != NULL);
  CHECK_INT(fq_sub_wait_connected(s, 5000, &e), FQ_EAUTH);
  CHECK(strstr(e.msg, "requires CURVE") != NULL); /* either text has it */
  fq_sub_destroy(&s);
  fq_buf_free(&topic);
  fq_buf_free(&body);
  peer_stop(&pr);
}
