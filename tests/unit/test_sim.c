/*
 * Unit tests of the simulator's car side and helpers: a car built from the
 * published test keys (vectors.json) accepts the vectors' hmac_command,
 * executes it once, and produces exactly the vectors' encrypted_reply given
 * that nonce; a replay of it is refused and not executed.  Also the string
 * map, seeded injections, rate-limit windows and config errors.
 */
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fq_test.h"
#include "sim_int.h"
#include "util.h"

static json_t *vectors(void) {
  static json_t *v;
  if (!v) {
    json_error_t e;
    v = json_load_file("data/vectors.json", 0, &e);
    if (!v) v = json_load_file("../../shared/spec/vectors.json", 0, &e);
    if (!v) {
      fprintf(stderr, "cannot load vectors.json: %s\n", e.text);
      exit(2);
    }
  }
  return v;
}

static const char *vs(const char *a, const char *b) {
  json_t *j = json_object_get(vectors(), a);
  if (b) j = json_object_get(j, b);
  return json_is_string(j) ? json_string_value(j) : "";
}

static size_t unhex(const char *h, uint8_t *out, size_t cap) {
  long n = fq_hex_decode(h, out, cap);
  if (n < 0) {
    fprintf(stderr, "bad hex in vectors: %.40s\n", h);
    exit(2);
  }
  return (size_t)n;
}

/* A world whose one car holds the vectors' vehicle key for INFOTAINMENT and
 * whose fleet key is the vectors' client key. */
static int vector_world(fq__sim_world_t *w, char *dir) {
  snprintf(dir, 64, "/tmp/fq-test-sim-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  char path[128];
  snprintf(path, sizeof path, "%s/car.pem", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const char *pem = vs("keys", "vehicle_private_pem");
  if (fd < 0 || write(fd, pem, strlen(pem)) != (ssize_t)strlen(pem)) return -1;
  close(fd);
  json_t *cfg = json_pack(
      "{s:s, s:[{s:s, s:s, s:[s]}], s:[{s:s, s:s}]}", "fleet_public_key",
      vs("keys", "client_public_uncompressed"), "accounts", "token", "t1", "refresh_token", "r1",
      "vins", vs("vin", NULL), "vehicles", "vin", vs("vin", NULL), "infotainment_key", "car.pem");
  memset(w, 0, sizeof *w);
  pthread_mutex_init(&w->mu, NULL);
  fq_err_t err = {0};
  int rc = fq__sim_world_load(w, cfg, dir, &err);
  if (rc) fprintf(stderr, "world: %s\n", err.msg);
  json_decref(cfg);
  return rc;
}

static void vector_world_free(fq__sim_world_t *w, const char *dir) {
  fq__sim_world_clear(w);
  json_decref(w->config);
  free(w->base_dir);
  pthread_mutex_destroy(&w->mu);
  char path[128];
  snprintf(path, sizeof path, "%s/car.pem", dir);
  unlink(path);
  rmdir(dir);
}

FQ_TEST(car_accepts_vector_command_and_encrypts_reply) {
  fq__sim_world_t w;
  char dir[64];
  CHECK_INT(vector_world(&w, dir), 0);
  const char *vin = vs("vin", NULL);
  fq__sim_vehicle_t *v = fq__sim_map_get(&w.vin_map, vin, strlen(vin));
  CHECK(v != NULL);
  if (!v) return;
  fq_vcp_vdomain_t *vd = fq__sim_vehicle_vd(&w, v, FQ__SIM_INFO);
  CHECK(vd != NULL);
  if (!vd) return;
  uint8_t epoch[16], client[65], msg[1024], want[1024], nonce[12];
  unhex(vs("hmac_command", "epoch"), epoch, sizeof epoch);
  unhex(vs("keys", "client_public_uncompressed"), client, sizeof client);
  /* The vectors' session: clock 2650 now, counter 6. */
  fq_vcp_vdomain_new_epoch(vd, epoch, fq_now_ms() - 2650 * 1000);
  CHECK_INT(fq_vcp_vdomain_set_counter(vd, client, 6), 0);
  w.fixed_nonce = true;
  unhex(vs("encrypted_reply", "nonce"), nonce, sizeof nonce);
  memcpy(w.nonce, nonce, 12);

  size_t n = unhex(vs("hmac_command", "routable_message"), msg, sizeof msg);
  size_t wn = unhex(vs("encrypted_reply", "routable_message"), want, sizeof want);
  fq_buf_t out;
  fq_buf_init(&out, 16384);
  fq__sim_signed_result_t res;
  CHECK_INT(fq__sim_vehicle_signed(&w, v, msg, n, NULL, &out, &res), 0);
  CHECK_INT(res.fault, 0);
  CHECK(res.executed);
  CHECK_STR(res.command, "auto_conditioning_start");
  CHECK_MEM(out.data, out.len, want, wn);
  CHECK(v->climate_on);
  CHECK_INT(w.nexecs, 1);
  if (w.nexecs == 1) {
    CHECK_STR(w.execs[0].command, "auto_conditioning_start");
    CHECK_INT(w.execs[0].counter, 7);
    CHECK_INT(w.execs[0].domain, 3);
    CHECK_STR(w.execs[0].payload_hex, vs("hmac_command", "payload"));
    CHECK_STR(w.execs[0].device, vin);
  }

  /* The same bytes again: refused (counter already used), not executed. */
  fq_buf_reset(&out);
  v->climate_on = false;
  CHECK_INT(fq__sim_vehicle_signed(&w, v, msg, n, NULL, &out, &res), 0);
  CHECK_INT(res.fault, FQ_VCP_FAULT_INVALID_TOKEN_OR_COUNTER);
  CHECK(!res.executed);
  CHECK(!v->climate_on);
  CHECK_INT(w.nexecs, 1);

  /* One flipped byte in the tag: INVALID_SIGNATURE. */
  fq_vcp_vdomain_set_counter(vd, client, 6);
  const char *tag = vs("hmac_command", "tag");
  uint8_t t[32];
  unhex(tag, t, sizeof t);
  for (size_t i = 0; i + 32 <= n; i++)
    if (memcmp(msg + i, t, 32) == 0) {
      msg[i] ^= 1;
      break;
    }
  fq_buf_reset(&out);
  CHECK_INT(fq__sim_vehicle_signed(&w, v, msg, n, NULL, &out, &res), 0);
  CHECK_INT(res.fault, FQ_VCP_FAULT_INVALID_SIGNATURE);
  CHECK_INT(w.nexecs, 1);
  fq_buf_free(&out);
  vector_world_free(&w, dir);
}

FQ_TEST(peek_names_the_command) {
  uint8_t msg[1024];
  size_t n = unhex(vs("hmac_command", "routable_message"), msg, sizeof msg);
  char name[48];
  int dom = -1;
  CHECK_INT(fq__sim_peek_command(msg, n, name, sizeof name, &dom), 0);
  CHECK_STR(name, "auto_conditioning_start");
  CHECK_INT(dom, 3);
  n = unhex(vs("handshake", "request_routable_message"), msg, sizeof msg);
  CHECK_INT(fq__sim_peek_command(msg, n, name, sizeof name, &dom), 0);
  CHECK_STR(name, "");
  CHECK_INT(fq__sim_peek_command((const uint8_t *)"\xff\xff\xff", 3, name, sizeof name, &dom),
            FQ_EPROTO);
}

FQ_TEST(map_put_get_delete_many) {
  fq__sim_map_t m = {0};
  char k[32];
  static int vals[5000];
  for (int i = 0; i < 5000; i++) {
    snprintf(k, sizeof k, "key%d", i);
    CHECK_INT(fq__sim_map_put(&m, k, &vals[i]), 0);
  }
  CHECK_INT(fq__sim_map_count(&m), 5000);
  for (int i = 0; i < 5000; i += 2) {
    snprintf(k, sizeof k, "key%d", i);
    fq__sim_map_del(&m, k);
  }
  int bad = 0;
  for (int i = 0; i < 5000; i++) {
    snprintf(k, sizeof k, "key%d", i);
    void *got = fq__sim_map_get(&m, k, strlen(k));
    if ((i % 2 == 0 && got) || (i % 2 == 1 && got != &vals[i])) bad++;
  }
  CHECK_INT(bad, 0);
  CHECK_INT(fq__sim_map_count(&m), 2500);
  fq__sim_map_free(&m, NULL);
}

FQ_TEST(injections_next_and_seeded_probability) {
  fq__sim_inject_t in = {.next = 2};
  fq_rng_t rng;
  fq_rng_seed(&rng, 12345);
  CHECK(fq__sim_inject_fire(&in, &rng));
  CHECK(fq__sim_inject_fire(&in, &rng));
  CHECK(!fq__sim_inject_fire(&in, &rng));
  /* Same seed, same sequence; roughly the asked share fires. */
  fq__sim_inject_t p = {.prob = 0.3};
  fq_rng_t a, b;
  fq_rng_seed(&a, 99);
  fq_rng_seed(&b, 99);
  int fired = 0, same = 1;
  for (int i = 0; i < 10000; i++) {
    bool x = fq__sim_inject_fire(&p, &a), y = fq__sim_inject_fire(&p, &b);
    fired += x;
    same &= x == y;
  }
  fprintf(stderr, "  seed 99: %d of 10000 fired at p=0.3\n", fired);
  CHECK(same);
  CHECK(fired > 2700 && fired < 3300);
}

FQ_TEST(rate_limit_window) {
  fq__sim_faults_t f = {.rl_limit = 2, .rl_window_ms = 1000};
  CHECK(!fq__sim_rate_limited(&f, 10000));
  CHECK(!fq__sim_rate_limited(&f, 10100));
  CHECK(fq__sim_rate_limited(&f, 10500));
  CHECK(!fq__sim_rate_limited(&f, 11000));
}

FQ_TEST(config_errors_name_the_field) {
  fq__sim_world_t w;
  memset(&w, 0, sizeof w);
  fq_err_t err = {0};
  json_t *cfg = json_pack("{s:[{s:s, s:i}]}", "accounts", "token", "t", "expires_in", -5);
  CHECK_INT(fq__sim_world_load(&w, cfg, ".", &err), FQ_ECONFIG);
  CHECK(strstr(err.msg, "expires_in") != NULL);
  fq__sim_world_clear(&w);
  json_decref(cfg);
  cfg = json_pack("{s:[{s:s}], s:[{s:s, s:s}]}", "accounts", "token", "t", "vehicles", "vin",
                  "X", "charging_state", "Flying");
  fq_err_clear(&err);
  CHECK_INT(fq__sim_world_load(&w, cfg, ".", &err), FQ_ECONFIG);
  CHECK(strstr(err.msg, "charging_state") != NULL);
  fq__sim_world_clear(&w);
  json_decref(cfg);
  json_decref(w.config);
  free(w.base_dir);
}
