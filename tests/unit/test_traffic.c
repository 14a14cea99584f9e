/*
 * Unit tests of traffic.c: write / read round trip, the writer's refusals,
 * `req` splicing, and the strict reader against every truncation and
 * 3000 seeded byte mutations of a valid file (each must be refused or
 * read back as a valid file, never crash or read out of bounds).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleetq/client.h"
#include "fleetq/wire.h"
#include "fq_test.h"
#include "traffic.h"
#include "util.h"

static void make_submit(fq_buf_t *b, int i, bool with_req) {
  char key[32];
  snprintf(key, sizeof key, "k-%d", i);
  fq_pval_t pv = {.name = "percent", .name_len = 7, .type = FQ_PT_INT, .v.i = 50 + i % 50};
  fq_submit_args_t a = {.tenant = "t", .key = key, .account = "a", .vin = "5YJ3E1EA7KF000001",
                        .command = "set_charge_limit", .params = &pv, .nparams = 1,
                        .has_req = with_req, .req = 9};
  fq_buf_reset(b);
  fq_req_submit(b, &a);
}

static char g_path[64];

static void tmp_path(void) {
  snprintf(g_path, sizeof g_path, "/tmp/fq-traffic-%d.fqt", (int)getpid());
}

static void write_file(int n) {
  fq_err_t e;
  fq_buf_t b;
  fq_buf_init(&b, 4096);
  fq_traffic_writer_t *w = fq_traffic_writer_new(g_path, 1700000000000, "unit test", &e);
  CHECK(w != NULL);
  for (int i = 0; w && i < n; i++) {
    make_submit(&b, i, false);
    CHECK_INT(fq_traffic_write(w, (uint64_t)i * 500, b.data, b.len, &e), 0);
  }
  CHECK_INT(fq_traffic_writer_close(&w, &e), 0);
  CHECK(w == NULL);
  fq_buf_free(&b);
}

FQ_TEST(traffic_roundtrip) {
  tmp_path();
  write_file(20);
  fq_err_t e;
  fq_traffic_t *t = fq_traffic_open(g_path, &e);
  CHECK(t != NULL);
  if (!t) {
    fprintf(stderr, "  open: %s\n", e.msg);
    return;
  }
  CHECK_INT(fq_traffic_count(t), 20);
  CHECK_INT(fq_traffic_origin_ms(t), 1700000000000);
  CHECK_STR(fq_traffic_note(t), "unit test");
  fq_buf_t b;
  fq_buf_init(&b, 4096);
  for (size_t i = 0; i < 20; i++) {
    const fq_traffic_rec_t *r = fq_traffic_rec(t, i);
    CHECK_INT(r->offset_us, i * 500);
    make_submit(&b, (int)i, false);
    CHECK_MEM(r->body, r->len, b.data, b.len);
  }
  CHECK(fq_traffic_rec(t, 20) == NULL);
  fq_buf_free(&b);
  fq_traffic_close(&t);
  CHECK(t == NULL);
  unlink(g_path);
}

FQ_TEST(traffic_writer_refuses) {
  tmp_path();
  fq_err_t e;
  fq_buf_t b;
  fq_buf_init(&b, 4096);
  fq_traffic_writer_t *w = fq_traffic_writer_new(g_path, 0, NULL, &e);
  make_submit(&b, 1, false);
  CHECK_INT(fq_traffic_write(w, 1000, b.data, b.len, &e), 0);
  /* Time going backwards. */
  CHECK_INT(fq_traffic_write(w, 999, b.data, b.len, &e), FQ_ERANGE);
  /* A body carrying req. */
  make_submit(&b, 2, true);
  CHECK_INT(fq_traffic_write(w, 2000, b.data, b.len, &e), FQ_EBADREQ);
  /* Not a submit. */
  fq_buf_reset(&b);
  fq_req_ping(&b, false, 0);
  CHECK_INT(fq_traffic_write(w, 2000, b.data, b.len, &e), FQ_EBADREQ);
  CHECK_INT(fq_traffic_writer_count(w), 1);
  fq_traffic_writer_destroy(&w);
  CHECK(access(g_path, F_OK) != 0); /* an abandoned file is removed */
  /* Notes with control characters are refused. */
  CHECK(fq_traffic_writer_new(g_path, 0, "bad\x1b[2J", &e) == NULL);
  fq_buf_free(&b);
}

FQ_TEST(traffic_with_req_splices) {
  fq_buf_t b, out;
  fq_buf_init(&b, 4096);
  fq_buf_init(&out, 4096);
  make_submit(&b, 3, false);
  CHECK_INT(fq_traffic_with_req(b.data, b.len, 123456789, &out), 0);
  fq_request_t q;
  fq_err_t e;
  CHECK_INT(fq_wire_decode_request(out.data, out.len, &q, &e), 0);
  CHECK(q.req_raw != NULL);
  fq_msg_t m;
  CHECK_INT(fq_msg_decode(&m, out.data, out.len, &e), 0);
  int64_t v = 0;
  CHECK(fq_mp_int(fq_mp_get(m.root, "req"), &v));
  CHECK_INT(v, 123456789);
  fq_msg_free(&m);
  /* Not a map. */
  CHECK_INT(fq_traffic_with_req((const uint8_t *)"\x92\x01\x02", 3, 1, &out), FQ_EBADREQ);
  fq_buf_free(&b);
  fq_buf_free(&out);
}

static int check_blob(const uint8_t *p, size_t n) {
  FILE *f = fopen(g_path, "wb");
  fwrite(p, 1, n, f);
  fclose(f);
  fq_err_t e;
  fq_traffic_t *t = fq_traffic_open(g_path, &e);
  if (!t) return 0;
  /* Accepted: then every record must be a valid submit in bounds. */
  for (size_t i = 0; i < fq_traffic_count(t); i++) {
    const fq_traffic_rec_t *r = fq_traffic_rec(t, i);
    CHECK(fq_traffic_check_body(r->body, r->len, NULL) == 0);
  }
  fq_traffic_close(&t);
  return 1;
}

FQ_TEST(traffic_reader_is_strict) {
  tmp_path();
  write_file(5);
  char *data = NULL;
  size_t len = 0;
  CHECK_INT(fq_read_file(g_path, 1 << 20, &data, &len), 0);
  if (!data) return;
  /* Every truncation is refused. */
  int accepted = 0;
  for (size_t n = 0; n < len; n++) accepted += check_blob((uint8_t *)data, n);
  CHECK_INT(accepted, 0);
  /* Seeded mutations never crash; most are refused. */
  uint32_t seed = 20261129u, rng = seed;
  printf("  traffic mutation seed %u\n", seed);
  uint8_t *m = malloc(len);
  int refused = 0;
  for (int k = 0; k < 3000; k++) {
    memcpy(m, data, len);
    for (int f = 0; f < 1 + k % 4; f++) {
      rng = rng * 1664525u + 1013904223u;
      size_t at = (rng >> 8) % len;
      rng = rng * 1664525u + 1013904223u;
      m[at] = (uint8_t)(rng >> 24);
    }
    refused += !check_blob(m, len);
  }
  CHECK(refused > 1000);
  free(m);
  free(data);
  unlink(g_path);
}
