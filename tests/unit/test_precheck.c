/*
 * Unit tests of the fleet_status answer parser (src/fleet/fleetstatus.c)
 * and of the pre-check's state (src/daemon/precheck.c): verdicts, the
 * cache and its TTL, batching per account, fallback and back-off.  No
 * network: answers are built by hand.
 */
#include <stdlib.h>

#include "fleetstatus.h"
#include "fq_test.h"
#include "precheck.h"

#define V1 "5YJ3E1EA0KF000001"
#define V2 "5YJ3E1EA0KF000002"
#define V3 "5YJ3E1EA0KF000003"
#define V4 "5YJ3E1EA0KF000004"

static const char ANSWER[] =
    "{\"response\":{\"key_paired_vins\":[\"" V1 "\"],\"unpaired_vins\":[\"" V2 "\",\"" V3
    "\"],\"vehicle_info\":{\"" V1 "\":{\"vehicle_command_protocol_required\":true},\"" V2
    "\":{\"vehicle_command_protocol_required\":true},\"" V3
    "\":{\"vehicle_command_protocol_required\":false},\"5YJ3E1EA0KF000009\":{}}}}";

typedef struct seen {
  char vin[8][18];
  int paired[8], req[8];
  int n;
} seen_t;

static int visit(void *ud, const fq_fs_vin_t *v) {
  seen_t *s = ud;
  if (s->n >= 8) return 1;
  snprintf(s->vin[s->n], sizeof s->vin[0], "%s", v->vin);
  s->paired[s->n] = v->paired;
  s->req[s->n] = v->protocol_required;
  s->n++;
  return 0;
}

FQ_TEST(fs_walk_names_each_vin_once) {
  seen_t s = {0};
  fq_err_t e;
  CHECK_INT(fq_fs_walk(ANSWER, strlen(ANSWER), visit, &s, &e), 0);
  CHECK_INT(s.n, 4);
  CHECK_STR(s.vin[0], V1);
  CHECK_INT(s.paired[0], 1);
  CHECK_INT(s.req[0], 1);
  CHECK_STR(s.vin[1], V2);
  CHECK_INT(s.paired[1], 0);
  CHECK_INT(s.req[1], 1);
  CHECK_STR(s.vin[2], V3);
  CHECK_INT(s.paired[2], 0);
  CHECK_INT(s.req[2], 0);
  /* In vehicle_info only: neither list says whether the key is on it. */
  CHECK_STR(s.vin[3], "5YJ3E1EA0KF000009");
  CHECK_INT(s.paired[3], -1);
  CHECK_INT(s.req[3], -1);
}

FQ_TEST(fs_bad_answers) {
  seen_t s = {0};
  fq_err_t e;
  CHECK_INT(fq_fs_walk("<html>", 6, visit, &s, &e), FQ_EPROTO);
  CHECK_INT(fq_fs_walk("{\"response\":null}", 17, visit, &s, &e), FQ_EPROTO);
  CHECK_INT(fq_fs_walk("", 0, visit, &s, &e), FQ_EPROTO);
  CHECK_INT(s.n, 0);
  /* Lists of the wrong type are read as empty. */
  const char *odd = "{\"response\":{\"key_paired_vins\":7,\"unpaired_vins\":[3]}}";
  CHECK_INT(fq_fs_walk(odd, strlen(odd), visit, &s, &e), 0);
  CHECK_INT(s.n, 0);
}

FQ_TEST(fs_find_case_insensitive) {
  json_error_t je;
  json_t *root = json_loads(ANSWER, 0, &je);
  fq_fs_vin_t v;
  CHECK(fq_fs_find(root, "5yj3e1ea0kf000003", &v));
  CHECK_INT(v.paired, 0);
  CHECK_INT(v.protocol_required, 0);
  CHECK(!fq_fs_find(root, V4, &v));
  CHECK_INT(v.paired, -1);
  CHECK(fq_fs_find(root, "5YJ3E1EA0KF000009", &v)); /* named, nothing known */
  json_decref(root);
}

/* --- the pre-check ----------------------------------------------------- */

static char kicked[256][32];
static int nkicked;

static void kick(void *owner, const char *device) {
  (void)owner;
  if (nkicked < 256) snprintf(kicked[nkicked++], sizeof kicked[0], "%s", device);
}

static bool was_kicked(const char *device) {
  for (int i = 0; i < nkicked; i++)
    if (!strcmp(kicked[i], device)) return true;
  return false;
}

static fq_http_resp_t resp_of(long status, const char *body) {
  fq_http_resp_t r;
  memset(&r, 0, sizeof r);
  r.outcome = FQ_HTTP_COMPLETE;
  r.status = status;
  r.body = (const uint8_t *)body;
  r.body_len = body ? strlen(body) : 0;
  return r;
}

static int look(fq_precheck_t *p, const char *acct, const char *vin, int64_t now, int *sig) {
  char dev[32];
  snprintf(dev, sizeof dev, "v:%s", vin);
  return fq_precheck_look(p, acct, vin, dev, now, sig);
}

#define TTL 3600000

FQ_TEST(pc_batch_cache_verdicts) {
  nkicked = 0;
  fq_precheck_t *p = fq_precheck_new(TTL, kick, NULL);
  int sig;
  int64_t t = 1000000;
  CHECK_INT(look(p, "a", V1, t, &sig), FQ_PC_WAIT);
  CHECK_INT(look(p, "a", V2, t, &sig), FQ_PC_WAIT);
  CHECK_INT(look(p, "a", V3, t, &sig), FQ_PC_WAIT);
  CHECK_INT(look(p, "a", V1, t, &sig), FQ_PC_WAIT); /* asked already: no duplicate */
  const char *acct;
  const void *body;
  size_t len;
  fq_precheck_batch_t *b = fq_precheck_next(p, t, &acct, &body, &len);
  CHECK(b != NULL);
  CHECK_STR(acct, "a");
  const char *want = "{\"vins\":[\"" V1 "\",\"" V2 "\",\"" V3 "\"]}";
  CHECK_MEM(body, len, want, strlen(want));
  /* One request per account out at a time: V4 waits for the next. */
  CHECK(fq_precheck_next(p, t, &acct, &body, &len) == NULL);
  CHECK_INT(look(p, "a", V4, t, &sig), FQ_PC_WAIT);
  CHECK(fq_precheck_next(p, t, &acct, &body, &len) == NULL);
  fq_http_resp_t r = resp_of(200, ANSWER);
  fq_precheck_answer(p, b, &r, t + 10, 0);
  CHECK_INT(nkicked, 3);
  CHECK(was_kicked("v:" V1) && was_kicked("v:" V2) && was_kicked("v:" V3));
  CHECK_INT(look(p, "a", V1, t + 20, &sig), FQ_PC_GO);
  CHECK_INT(sig, 1);
  CHECK_INT(look(p, "a", V2, t + 20, &sig), FQ_PC_UNPAIRED);
  /* Unpaired but no protocol: REST needs no key. */
  CHECK_INT(look(p, "a", V3, t + 20, &sig), FQ_PC_GO);
  CHECK_INT(sig, 0);
  /* V4 goes in the next request; the answer does not name it. */
  fq_precheck_batch_t *b2 = fq_precheck_next(p, t + 20, &acct, &body, &len);
  CHECK(b2 != NULL);
  want = "{\"vins\":[\"" V4 "\"]}";
  CHECK_MEM(body, len, want, strlen(want));
  fq_precheck_answer(p, b2, &r, t + 30, 0);
  CHECK(was_kicked("v:" V4));
  CHECK_INT(look(p, "a", V4, t + 40, &sig), FQ_PC_GO);
  CHECK_INT(sig, -1);
  CHECK(fq_precheck_next(p, t + 40, &acct, &body, &len) == NULL);
  /* The unpaired answer is trusted at most a minute; the others the TTL. */
  CHECK_INT(look(p, "a", V2, t + 10 + FQ_PRECHECK_UNPAIRED_KEEP_MS - 1, &sig), FQ_PC_UNPAIRED);
  CHECK_INT(look(p, "a", V2, t + 10 + FQ_PRECHECK_UNPAIRED_KEEP_MS, &sig), FQ_PC_WAIT);
  CHECK_INT(look(p, "a", V1, t + 10 + TTL - 1, &sig), FQ_PC_GO);
  CHECK_INT(look(p, "a", V1, t + 10 + TTL, &sig), FQ_PC_WAIT);
  /* The car's own word wins until the next answer. */
  CHECK_INT(look(p, "a", V3, t + 50, &sig), FQ_PC_GO);
  fq_precheck_note_signing(p, V3, 1);
  CHECK_INT(look(p, "a", V3, t + 50, &sig), FQ_PC_UNPAIRED);
  fq_precheck_stats_t st;
  fq_precheck_stats(p, &st);
  CHECK_INT(st.requests, 2);
  CHECK_INT(st.vins_asked, 4);
  fq_precheck_destroy(&p);
  CHECK(p == NULL);
}

FQ_TEST(pc_forget_after_pairing_fault) {
  nkicked = 0;
  fq_precheck_t *p = fq_precheck_new(TTL, kick, NULL);
  int sig;
  const char *acct;
  const void *body;
  size_t len;
  CHECK_INT(look(p, "a", V1, 0, &sig), FQ_PC_WAIT);
  fq_precheck_batch_t *b = fq_precheck_next(p, 0, &acct, &body, &len);
  fq_http_resp_t r = resp_of(200, ANSWER);
  fq_precheck_answer(p, b, &r, 0, 0);
  CHECK_INT(look(p, "a", V1, 5, &sig), FQ_PC_GO);
  fq_precheck_forget(p, V1);
  CHECK_INT(look(p, "a", V1, 6, &sig), FQ_PC_WAIT);
  fq_precheck_destroy(&p);
}

FQ_TEST(pc_failures_fall_back_and_back_off) {
  nkicked = 0;
  fq_precheck_t *p = fq_precheck_new(TTL, kick, NULL);
  int sig;
  const char *acct;
  const void *body;
  size_t len;
  int64_t t = 0;
  CHECK_INT(look(p, "a", V1, t, &sig), FQ_PC_WAIT);
  fq_precheck_batch_t *b = fq_precheck_next(p, t, &acct, &body, &len);
  CHECK_INT(look(p, "a", V2, t, &sig), FQ_PC_WAIT); /* waits for the next request */
  fq_http_resp_t r = resp_of(503, "{}");
  fq_precheck_answer(p, b, &r, t, 0);
  /* Both released (dispatched as before), nothing left to send. */
  CHECK(was_kicked("v:" V1) && was_kicked("v:" V2));
  CHECK(fq_precheck_next(p, t, &acct, &body, &len) == NULL);
  CHECK_INT(look(p, "a", V1, t + 1, &sig), FQ_PC_GO);
  CHECK_INT(sig, -1);
  /* Another account is not concerned. */
  CHECK_INT(look(p, "b", V3, t + 1, &sig), FQ_PC_WAIT);
  /* After the back-off (5 s) the account asks again; the second failure
   * in a row waits twice as long. */
  CHECK_INT(look(p, "a", V1, t + FQ_PRECHECK_BACKOFF_MS - 1, &sig), FQ_PC_GO);
  t += FQ_PRECHECK_BACKOFF_MS;
  CHECK_INT(look(p, "a", V1, t, &sig), FQ_PC_WAIT);
  fq_precheck_batch_t *bb = fq_precheck_next(p, t, &acct, &body, &len);
  CHECK(bb != NULL);
  if (bb && !strcmp(acct, "b")) { /* b's request came first */
    fq_http_resp_t ok = resp_of(200, ANSWER);
    fq_precheck_answer(p, bb, &ok, t, 0);
    bb = fq_precheck_next(p, t, &acct, &body, &len);
  }
  CHECK(bb != NULL && !strcmp(acct, "a"));
  fq_http_resp_t lost;
  memset(&lost, 0, sizeof lost);
  lost.outcome = FQ_HTTP_UNKNOWN;
  fq_precheck_answer(p, bb, &lost, t, 0);
  CHECK_INT(look(p, "a", V1, t + 2 * FQ_PRECHECK_BACKOFF_MS - 1, &sig), FQ_PC_GO);
  CHECK_INT(look(p, "a", V1, t + 2 * FQ_PRECHECK_BACKOFF_MS, &sig), FQ_PC_WAIT);
  t += 2 * FQ_PRECHECK_BACKOFF_MS;
  /* 404 (no fleet_status on this API): the whole TTL. */
  b = fq_precheck_next(p, t, &acct, &body, &len);
  CHECK(b != NULL);
  r = resp_of(404, "{}");
  fq_precheck_answer(p, b, &r, t, 0);
  CHECK_INT(look(p, "a", V1, t + TTL - 1, &sig), FQ_PC_GO);
  CHECK_INT(look(p, "a", V1, t + TTL, &sig), FQ_PC_WAIT);
  t += TTL;
  /* 429: the account is parked (2 s here); the back-off (the fourth
   * failure in a row: 40 s) counts from the end of the park, so the
   * commands released go to the car once the park ends instead of asking
   * again. */
  b = fq_precheck_next(p, t, &acct, &body, &len);
  r = resp_of(429, "{}");
  fq_precheck_answer(p, b, &r, t, t + 2000);
  CHECK_INT(look(p, "a", V1, t + 2000, &sig), FQ_PC_GO);
  CHECK_INT(look(p, "a", V1, t + 2000 + 8 * FQ_PRECHECK_BACKOFF_MS - 1, &sig), FQ_PC_GO);
  CHECK_INT(look(p, "a", V1, t + 2000 + 8 * FQ_PRECHECK_BACKOFF_MS, &sig), FQ_PC_WAIT);
  t += 2000 + 8 * FQ_PRECHECK_BACKOFF_MS;
  /* An unreadable 200, and a request that could not be sent. */
  b = fq_precheck_next(p, t, &acct, &body, &len);
  r = resp_of(200, "<html>");
  fq_precheck_answer(p, b, &r, t, 0);
  CHECK_INT(look(p, "a", V1, t + 1, &sig), FQ_PC_GO);
  fq_precheck_destroy(&p);

  nkicked = 0;
  p = fq_precheck_new(TTL, kick, NULL);
  CHECK_INT(look(p, "a", V1, 0, &sig), FQ_PC_WAIT);
  b = fq_precheck_next(p, 0, &acct, &body, &len);
  fq_precheck_not_sent(p, b, 0, "busy");
  CHECK(was_kicked("v:" V1));
  CHECK_INT(look(p, "a", V1, 1, &sig), FQ_PC_GO);
  fq_precheck_destroy(&p);
}

FQ_TEST(pc_batches_are_bounded) {
  nkicked = 0;
  fq_precheck_t *p = fq_precheck_new(TTL, kick, NULL);
  int sig;
  char vin[18];
  for (int i = 0; i < 150; i++) {
    snprintf(vin, sizeof vin, "5YJ3E1EA0KF%06d", i);
    CHECK_INT(look(p, "a", vin, 0, &sig), FQ_PC_WAIT);
  }
  const char *acct;
  const void *body;
  size_t len;
  fq_precheck_batch_t *b = fq_precheck_next(p, 0, &acct, &body, &len);
  CHECK(b != NULL);
  size_t commas = 0;
  for (size_t i = 0; i < len; i++) commas += ((const char *)body)[i] == ',';
  CHECK_INT(commas, FQ_FS_BATCH_MAX - 1);
  fq_http_resp_t r = resp_of(200, "{\"response\":{\"key_paired_vins\":[]}}");
  fq_precheck_answer(p, b, &r, 1, 0);
  CHECK_INT(nkicked, FQ_FS_BATCH_MAX);
  b = fq_precheck_next(p, 1, &acct, &body, &len);
  CHECK(b != NULL);
  commas = 0;
  for (size_t i = 0; i < len; i++) commas += ((const char *)body)[i] == ',';
  CHECK_INT(commas, 49);
  fq_precheck_answer(p, b, &r, 2, 0);
  CHECK_INT(nkicked, 150);
  /* Not a VIN: never put in a body, dispatched as before. */
  CHECK_INT(look(p, "a", "BAD\"VIN", 3, &sig), FQ_PC_GO);
  fq_precheck_destroy(&p);
}
