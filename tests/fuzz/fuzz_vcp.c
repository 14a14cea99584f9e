/*
 * Fuzz target for the Vehicle Command Protocol parsers, which read bytes
 * from Fleet API (the car's replies) and, in the simulator, from clients:
 * fq_vcp_msg_decode(), fq_vcp_session_info_decode(), the car's verifier,
 * the client's reply opener and the application payload decoders.  The
 * results are checked, not just survived: lengths stay within their caps,
 * the car never accepts a command it did not see signed, a decoded
 * command is one of ours, and outcomes carry a valid action and a
 * printable reason.
 *
 * Built two ways:
 *  - with -DFQ_LIBFUZZER and -fsanitize=fuzzer (cmake -DFQ_FUZZ=ON, clang):
 *    the libFuzzer target `fuzz_vcp`;
 *  - without it: a plain driver (ctest `fuzz_vcp_vectors`) that runs every
 *    hex string of tests/data/vectors.json, then 100,000 deterministic
 *    mutations of them from a logged seed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "payload.h"
#include "rng.h"
#include "util.h"
#include "vcp.h"
#include "vcp_car.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                     \
  do {                                                \
    fprintf(stderr, "fuzz_vcp: invariant broken: ");  \
    fprintf(stderr, __VA_ARGS__);                     \
    fprintf(stderr, "\n");                            \
    abort();                                          \
  } while (0)

/* The spec's published test keys and session (see vectors.json). */
static const char client_pem[] =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEICU4zcKal8GcHpmmN9bPT4yXDBGLVu3h5jI+bRYsSzDboAoGCCqGSM49\n"
    "AwEHoUQDQgAEsra8aMLaBmXOZWgVWUmWxiOU7di+qQX+eBp1T+aoRacUMwkC8iXp\n"
    "Jp1GbgWzSZgf2p2FzCPG+0RKpztikQXcbg==\n"
    "-----END EC PRIVATE KEY-----\n";
static const char vehicle_pem[] =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIDRO5bRmp88e6xK29QMx2y5exYNO9fS+/P2MvlXCUo1woAoGCCqGSM49\n"
    "AwEHoUQDQgAEx6H0cThIaqRymXFJSHjTOxok45Vx90im4WxZVbPYd9OmqqDpVRZk\n"
    "dK9dMsQQ9DmiI0E3rRuwhf1OiBPJWPEdlw==\n"
    "-----END EC PRIVATE KEY-----\n";
static const char session_info_hex[] =
    "0806124104c7a1f47138486aa4729971494878d33b1a24e39571f748a6e16c5955b3d877d3a6aaa0e955166474"
    "af5d32c410f439a2234137ad1bb085fd4e8813c958f11d971a104c463f9cc0d3d26906e982ed224adde6255a0a"
    "0000";
static const char epoch_hex[] = "4c463f9cc0d3d26906e982ed224adde6";
static const char uuid_hex[] = "58406580528b6a5301391800b4fe9b99";
static const char tag_hex[] = "f3c24554a00e42160e6acef6dd4f1c8ef9c30ed6391ec818d75663bee00a47f0";
static const uint8_t signed_payload[] = {0x12, 0x04, 0x52, 0x02, 0x08, 0x01};
#define VIN "5YJ30123456789ABC"
#define T0_MS 2650000LL

static struct {
  fq_vcp_key_t *ck, *vk;
  fq_vcp_vdomain_t *car;
  fq_vcp_session_t *s;
  fq_vcp_request_t req;
  fq_vcp_vrequest_t vr;
  fq_buf_t out, app;
  unsigned long decoded, judged, opened; /* plain driver statistics */
} g;

static void setup(void) {
  if (g.car) return;
  uint8_t info[256], epoch[16];
  size_t il = (size_t)fq_hex_decode(session_info_hex, info, sizeof info);
  fq_hex_decode(epoch_hex, epoch, sizeof epoch);
  if (fq_vcp_key_from_pem(client_pem, sizeof client_pem - 1, &g.ck, NULL) ||
      fq_vcp_key_from_pem(vehicle_pem, sizeof vehicle_pem - 1, &g.vk, NULL) ||
      fq_vcp_vdomain_new(VIN, 3, g.vk, epoch, 0, &g.car, NULL) ||
      fq_vcp_vdomain_pair(g.car, fq_vcp_key_public(g.ck), NULL) ||
      fq_vcp_session_from_info(g.ck, VIN, 3, info, il, T0_MS, NULL, &g.s, NULL))
    FAIL("setup");
  g.req.domain = 3;
  fq_hex_decode(uuid_hex, g.req.uuid, 16);
  fq_hex_decode(tag_hex, g.req.tag, 32);
  g.req.flags = FQ_VCP_FLAG_ENCRYPT_RESPONSE; /* as every request fq_vcp_sign makes */
  fq_buf_init(&g.out, 1 << 16);
  fq_buf_init(&g.app, 1 << 16);
}

static void check_outcome(const fq_vcp_outcome_t *o, const char *what) {
  if (o->action < FQ_VCP_OK || o->action > FQ_VCP_UNKNOWN) FAIL("%s: action %d", what, o->action);
  size_t n = strnlen(o->reason, sizeof o->reason);
  if (n == sizeof o->reason) FAIL("%s: reason not terminated", what);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)o->reason[i] < 0x20) FAIL("%s: control byte in reason", what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  fq_vcp_msg_t m;
  if (fq_vcp_msg_decode(data, size, &m, NULL) == 0) {
    g.decoded++;
    if (m.has_payload && (m.payload_len > FQ_VCP_MAX_PAYLOAD || (m.payload_len && !m.payload)))
      FAIL("payload length %zu", m.payload_len);
    if (m.uuid_len > FQ_VCP_UUID_LEN || m.request_uuid_len > FQ_VCP_UUID_LEN)
      FAIL("uuid lengths %zu %zu", m.uuid_len, m.request_uuid_len);
    if (m.has_session_info) {
      fq_vcp_session_info_t si;
      fq_vcp_session_info_decode(m.session_info, m.session_info_len, &si, NULL);
    }
    fq_vcp_msg_clear(&m);
  }

  /* The car: fresh counter state, then judge the bytes. */
  fq_vcp_vdomain_set_counter(g.car, fq_vcp_key_public(g.ck), 6);
  fq_buf_reset(&g.out);
  int rc = fq_vcp_vdomain_handle(g.car, data, size, T0_MS, &g.vr, &g.out, NULL);
  if (rc != 0 && rc != FQ_EPROTO) FAIL("vdomain_handle rc %d", rc);
  if (rc == 0) g.judged++;
  if (rc == 0 && !g.vr.is_handshake && g.vr.fault == 0) {
    /* Only the signed vector command can pass: same payload, counter 7. */
    if (g.vr.payload_len != sizeof signed_payload ||
        memcmp(g.vr.payload, signed_payload, sizeof signed_payload) != 0 || g.vr.counter != 7)
      FAIL("car accepted a command that was never signed");
  }

  /* The client: open the bytes as a reply to the vector command. */
  fq_vcp_outcome_t o;
  fq_vcp_request_t r = g.req;
  fq_buf_reset(&g.app);
  rc = fq_vcp_open_reply(g.s, &r, data, size, T0_MS, &g.app, &o, NULL);
  if (rc != 0 && rc != FQ_EPROTO && rc != FQ_EVERIFY && rc != FQ_EREPLAY && rc != -ENOMEM)
    FAIL("open_reply rc %d", rc);
  if (rc != 0 && o.action != FQ_VCP_UNKNOWN) FAIL("refused reply not UNKNOWN");
  if (rc == 0) g.opened++;
  if (rc == 0 && o.action == FQ_VCP_OK) {
    /* Only an AES-GCM reply can be the car's success answer. */
    fq_vcp_msg_t rm;
    if (fq_vcp_msg_decode(data, size, &rm, NULL) != 0) FAIL("opened a reply that does not decode");
    bool gcm = rm.has_gcm_response;
    fq_vcp_msg_clear(&rm);
    if (!gcm) FAIL("plaintext reply accepted as success");
  }
  check_outcome(&o, "open_reply");

  /* Application payload decoders. */
  for (int d = 2; d <= 3; d++) {
    fq_vcp_app_cmd_t c;
    if (fq_vcp_app_decode_command(d, data, size, &c, NULL) == 0 && fq_payload_domain(c.name) != d)
      FAIL("decoded command '%s' is not one of domain %d", c.name, d);
    fq_vcp_classify_app_reply(d, data, size, &o);
    check_outcome(&o, "classify_app_reply");
  }
  return 0;
}

#ifndef FQ_LIBFUZZER
static fq_rng_t rng_state;
static uint64_t rng(void) { return fq_rng_next(&rng_state); }

#define MAX_SEEDS 128

int main(int argc, char **argv) {
  const char *path = argc > 1 ? argv[1] : "data/vectors.json";
  json_error_t e;
  json_t *v = json_load_file(path, 0, &e);
  if (!v) {
    fprintf(stderr, "fuzz_vcp: cannot load %s: %s\n", path, e.text);
    return 2;
  }
  /* Every hex string anywhere in the vectors is a seed. */
  static uint8_t seeds[MAX_SEEDS][1024];
  static size_t lens[MAX_SEEDS];
  size_t nseeds = 0;
  json_t *stack[64];
  size_t sp = 0;
  stack[sp++] = v;
  while (sp) {
    json_t *j = stack[--sp];
    if (json_is_object(j)) {
      const char *k;
      json_t *x;
      json_object_foreach(j, k, x) if (sp < 64) stack[sp++] = x;
    } else if (json_is_string(j) && nseeds < MAX_SEEDS) {
      long n = fq_hex_decode(json_string_value(j), seeds[nseeds], sizeof seeds[0]);
      if (n > 0) lens[nseeds++] = (size_t)n;
    }
  }
  for (size_t i = 0; i < nseeds; i++) LLVMFuzzerTestOneInput(seeds[i], lens[i]);
  uint64_t seed = 0x2545f4914f6cdd1dULL;
  fq_rng_seed(&rng_state, seed);
  /* argv[2]: mutations (scripts/soak.sh runs many more than ctest). */
  long iters = argc > 2 ? atol(argv[2]) : 100000;
  if (iters < 0) iters = 0;
  printf("fuzz_vcp: %zu seeds, %ld mutations, seed 0x%016llx\n", nseeds, iters,
         (unsigned long long)seed);
  uint8_t buf[1100];
  for (long it = 0; it < iters; it++) {
    size_t s = rng() % nseeds, n = lens[s];
    memcpy(buf, seeds[s], n);
    int flips = 1 + (int)(rng() % 4);
    for (int f = 0; f < flips; f++) {
      switch (rng() % 4) {
      case 0: buf[rng() % n] ^= (uint8_t)(1u << (rng() % 8)); break;
      case 1: buf[rng() % n] = (uint8_t)rng(); break;
      case 2: n = 1 + rng() % n; break;
      default:
        if (n < sizeof buf - 8) { /* append a few bytes */
          for (int k = 0; k < 4; k++) buf[n++] = (uint8_t)rng();
        }
      }
    }
    LLVMFuzzerTestOneInput(buf, n);
  }
  printf("fuzz_vcp: ok (%lu decoded as RoutableMessage, %lu judged by the car, %lu opened as replies)\n",
         g.decoded, g.judged, g.opened);
  json_decref(v);
  fq_buf_free(&g.out);
  fq_buf_free(&g.app);
  fq_vcp_session_destroy(&g.s);
  fq_vcp_vdomain_destroy(&g.car);
  fq_vcp_key_destroy(&g.ck);
  fq_vcp_key_destroy(&g.vk);
  return 0;
}
#endif
