/*
 * Unit tests of src/cluster that need no NATS server: the write-set
 * message (round trip, marks, every truncation and a set of hostile
 * messages refused) and fq_cl_connect's option checks, plus a connect to
 * a port nobody listens on (FQ_CL_EUNAVAIL, within the timeout).  The
 * parts that need JetStream are in tests/integration/test_cluster_lease.py.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster.h"
#include "fq_test.h"
#include "util.h"
#include "writeset.h"

typedef struct seen {
  int n;
  unsigned db[8];
  int op[8];
  char key[8][32];
  char val[8][64];
  bool has_val[8];
} seen_t;

static int collect(void *ud, unsigned db, int op, const uint8_t *k, size_t kn, const uint8_t *v,
                   size_t vn) {
  seen_t *s = ud;
  if (s->n >= 8) return 99;
  int i = s->n++;
  s->db[i] = db;
  s->op[i] = op;
  snprintf(s->key[i], sizeof s->key[i], "%.*s", (int)kn, (const char *)k);
  s->has_val[i] = v != NULL;
  if (v) snprintf(s->val[i], sizeof s->val[i], "%.*s", (int)vn, (const char *)v);
  return 0;
}

FQ_TEST(writeset_round_trip) {
  fq_ws_t w;
  fq_ws_init(&w, 0);
  CHECK_INT(fq_ws_put(&w, 1, "cmd-1", 5, "record", 6), 0);
  CHECK_INT(fq_ws_del(&w, 3, "active-1", 8), 0);
  CHECK_INT(fq_ws_put(&w, 4, "ev", 2, "", 0), 0); /* an empty value is a value */
  fq_buf_t out = {0};
  CHECK_INT(fq_ws_encode(&w, 7, UINT64_C(1) << 40, "node-a", &out), 0);
  fq_ws_head_t h;
  seen_t s = {0};
  fq_err_t e = {0};
  CHECK_INT(fq_ws_decode(out.data, out.len, &h, collect, &s, &e), 0);
  CHECK(!h.genesis);
  CHECK_INT(h.shard, 7);
  CHECK(h.commit == UINT64_C(1) << 40);
  CHECK_STR(h.node, "node-a");
  CHECK_INT(h.nops, 3);
  CHECK_INT(s.n, 3);
  CHECK_INT(s.db[0], 1);
  CHECK_INT(s.op[0], FQ_WS_PUT);
  CHECK_STR(s.key[0], "cmd-1");
  CHECK_STR(s.val[0], "record");
  CHECK_INT(s.op[1], FQ_WS_DEL);
  CHECK_STR(s.key[1], "active-1");
  CHECK(!s.has_val[1]);
  CHECK(s.has_val[2]);
  CHECK_STR(s.val[2], "");
  fq_buf_free(&out);
  fq_ws_free(&w);
}

FQ_TEST(writeset_genesis_and_many_ops) {
  fq_ws_head_t h;
  fq_err_t e = {0};
  CHECK_INT(fq_ws_decode(NULL, 0, &h, NULL, NULL, &e), 0);
  CHECK(h.genesis);
  /* Past 15 and 65535 operations the array header grows; long values
   * take the wider bin headers. */
  fq_ws_t w;
  fq_ws_init(&w, 0);
  static uint8_t big[70000];
  memset(big, 'x', sizeof big);
  for (int i = 0; i < 70000; i++) {
    char k[16];
    int kn = snprintf(k, sizeof k, "k%d", i);
    CHECK_INT(fq_ws_put(&w, (unsigned)(i % 10), k, (size_t)kn, big, i == 5 ? sizeof big : 300),
              0);
  }
  fq_buf_t out = {0};
  CHECK_INT(fq_ws_encode(&w, 0, 1, "n", &out), 0);
  CHECK_INT(fq_ws_decode(out.data, out.len, &h, NULL, NULL, &e), 0);
  CHECK_INT(h.nops, 70000);
  fq_buf_free(&out);
  fq_ws_free(&w);
}

FQ_TEST(writeset_mark_rollback_and_cap) {
  fq_ws_t w;
  fq_ws_init(&w, 64);
  CHECK_INT(fq_ws_put(&w, 0, "a", 1, "1", 1), 0);
  fq_ws_mark_t m = fq_ws_mark(&w);
  CHECK_INT(fq_ws_del(&w, 2, "b", 1), 0);
  CHECK_INT(fq_ws_del(&w, 2, "c", 1), 0);
  fq_ws_rollback(&w, m); /* the nested transaction was aborted */
  CHECK_INT(w.nops, 1);
  /* Past the cap: refused whole, the set stays as it was. */
  uint8_t v[80] = {0};
  fq_ws_mark_t before = fq_ws_mark(&w);
  CHECK_INT(fq_ws_put(&w, 0, "z", 1, v, sizeof v), FQ_ETOOLARGE);
  CHECK_INT(w.nops, before.nops);
  CHECK(w.ops.len == before.len);
  CHECK_INT(fq_ws_put(&w, FQ_WS_DB_MAX, "z", 1, "", 0), FQ_EBADPARAM);
  fq_buf_t out = {0};
  CHECK_INT(fq_ws_encode(&w, 1, 2, "node", &out), 0);
  fq_ws_head_t h;
  seen_t s = {0};
  fq_err_t e = {0};
  CHECK_INT(fq_ws_decode(out.data, out.len, &h, collect, &s, &e), 0);
  CHECK_INT(s.n, 1);
  CHECK_STR(s.key[0], "a");
  fq_buf_free(&out);
  fq_ws_free(&w);
}

FQ_TEST(writeset_refuses_damaged_messages) {
  fq_ws_t w;
  fq_ws_init(&w, 0);
  fq_ws_put(&w, 1, "key", 3, "value", 5);
  fq_ws_del(&w, 2, "gone", 4);
  fq_buf_t out = {0};
  CHECK_INT(fq_ws_encode(&w, 3, 9, "node-b", &out), 0);
  fq_ws_head_t h;
  fq_err_t e = {0};
  /* Every truncation. */
  for (size_t n = 1; n < out.len; n++) {
    int rc = fq_ws_decode(out.data, n, &h, NULL, NULL, &e);
    if (rc != FQ_EPROTO) {
      printf("  truncated to %zu bytes: rc %d\n", n, rc);
      CHECK(false);
    }
  }
  /* A byte too many. */
  uint8_t *more = malloc(out.len + 1);
  memcpy(more, out.data, out.len);
  more[out.len] = 0xc0;
  CHECK_INT(fq_ws_decode(more, out.len + 1, &h, NULL, NULL, &e), FQ_EPROTO);
  CHECK(strstr(e.msg, "bytes after") != NULL);
  free(more);
  /* Hand-made hostile ones. */
  static const struct {
    const char *what;
    const uint8_t b[24];
    size_t n;
  } bad[] = {
      {"not an array", {0xc0}, 1},
      {"4 elements", {0x94, 1, 0, 0, 0xa1, 'n'}, 6},
      {"version 2", {0x95, 2, 0, 0, 0xa1, 'n', 0x90}, 7},
      {"empty node", {0x95, 1, 0, 0, 0xa0, 0x90}, 6},
      {"ops count beyond the bytes", {0x95, 1, 0, 0, 0xa1, 'n', 0xdd, 0xff, 0xff, 0xff, 0xff}, 11},
      {"db out of range", {0x95, 1, 0, 0, 0xa1, 'n', 0x91, 0x94, 32, 0, 0xc4, 1, 'k', 0xc4, 0}, 15},
      {"op 2", {0x95, 1, 0, 0, 0xa1, 'n', 0x91, 0x94, 1, 2, 0xc4, 1, 'k', 0xc0}, 14},
      {"del with a value", {0x95, 1, 0, 0, 0xa1, 'n', 0x91, 0x94, 1, 1, 0xc4, 1, 'k', 0xc4, 0}, 15},
      {"put without a value", {0x95, 1, 0, 0, 0xa1, 'n', 0x91, 0x94, 1, 0, 0xc4, 1, 'k', 0xc0}, 14},
      {"empty key", {0x95, 1, 0, 0, 0xa1, 'n', 0x91, 0x94, 1, 1, 0xc4, 0, 0xc0}, 13},
      {"key as str", {0x95, 1, 0, 0, 0xa1, 'n', 0x91, 0x94, 1, 1, 0xa1, 'k', 0xc0}, 13},
      {"bin longer than the bytes", {0x95, 1, 0, 0, 0xa1, 'n', 0x91, 0x94, 1, 1, 0xc6, 0xff, 0xff, 0xff, 0xff}, 15},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = fq_ws_decode(bad[i].b, bad[i].n, &h, NULL, NULL, &e);
    if (rc != FQ_EPROTO) {
      printf("  %s: rc %d\n", bad[i].what, rc);
      CHECK(false);
    }
  }
  /* The hand-made layout is right: the same bytes with a valid op pass. */
  static const uint8_t good[] = {0x95, 1, 0, 0, 0xa1, 'n', 0x91, 0x94, 1, 1, 0xc4, 1, 'k', 0xc0};
  CHECK_INT(fq_ws_decode(good, sizeof good, &h, NULL, NULL, &e), 0);
  CHECK_INT(h.nops, 1);
  fq_buf_free(&out);
  fq_ws_free(&w);
}

static int try_connect(const char *urls, const char *node, int64_t timeout, fq_err_t *e) {
  fq_cl_opts_t o;
  fq_cl_opts_init(&o);
  o.urls = urls;
  o.node_id = node;
  if (timeout) o.timeout_ms = timeout;
  fq_cl_t *c = NULL;
  int rc = fq_cl_connect(&o, &c, e);
  CHECK(rc != 0 || c != NULL);
  fq_cl_close(&c);
  return rc;
}

FQ_TEST(connect_checks_options) {
  fq_err_t e = {0};
  CHECK_INT(try_connect("", "n1", 0, &e), FQ_EBADPARAM);
  CHECK_INT(try_connect("nats://127.0.0.1:1", "", 0, &e), FQ_EBADPARAM);
  CHECK_INT(try_connect("nats://127.0.0.1:1", "a b", 0, &e), FQ_EBADPARAM);
  CHECK_INT(try_connect("nats://127.0.0.1:1", "n123456789012345678901234567890123", 0, &e),
            FQ_EBADPARAM);
  CHECK_INT(try_connect("http://127.0.0.1:1", "n1", 0, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "nats://") != NULL);
  CHECK_INT(try_connect(" , ,", "n1", 0, &e), FQ_EBADPARAM);
  CHECK_INT(try_connect("nats://127.0.0.1:1", "n1", 5, &e), FQ_EBADPARAM);
  fq_cl_opts_t o;
  fq_cl_opts_init(&o);
  o.urls = "nats://127.0.0.1:1";
  o.node_id = "n1";
  o.lease_ttl_ms = 100;
  fq_cl_t *c = NULL;
  CHECK_INT(fq_cl_connect(&o, &c, &e), FQ_EBADPARAM);
  CHECK(strstr(e.msg, "TTL") != NULL);
  CHECK_STR(fq_cl_strerror(FQ_CL_EFENCED), "fenced: another node appended to the shard's log");
  CHECK_STR(fq_cl_strerror(FQ_EBADPARAM), fq_strerror(FQ_EBADPARAM));
}

FQ_TEST(connect_to_nobody_is_unavailable) {
  /* A port that was free a moment ago: nobody answers there. */
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  CHECK_INT(bind(s, (struct sockaddr *)&a, sizeof a), 0);
  CHECK_INT(getsockname(s, (struct sockaddr *)&a, &al), 0);
  close(s);
  char url[64];
  snprintf(url, sizeof url, "nats://127.0.0.1:%u,nats://127.0.0.1:%u", ntohs(a.sin_port),
           ntohs(a.sin_port));
  fq_err_t e = {0};
  int64_t t0 = fq_mono_ns();
  CHECK_INT(try_connect(url, "n1", 500, &e), FQ_CL_EUNAVAIL);
  CHECK((fq_mono_ns() - t0) / 1000000 < 5000);
  CHECK(strstr(e.msg, "connect") != NULL);
}
