/*
 * bench_sign: how many commands one core signs per second, and how many
 * client-side handshakes (ECDH) it completes, each next to the bare
 * OpenSSL figure for the same primitive measured in the same run:
 *   - fq_vcp_sign() (counter, expiry, metadata, HMAC-SHA256 over M || P,
 *     random uuid, packed RoutableMessage) vs HMAC() one-shot of the same
 *     M || P bytes with the same key K';
 *   - fq_vcp_handshake_finish() (decode reply, ECDH, SHA1, session-info
 *     HMAC check, K' context) vs EVP_PKEY_derive() alone.
 * Several rounds; medians and ratios are printed and written to
 * perf/results/sign.md (or --out PATH).  Single threaded on purpose: the
 * figures are per core.
 *
 *   bench_sign [--rounds N] [--ms MILLIS_PER_MEASUREMENT] [--out PATH]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <protobuf-c/protobuf-c.h>

#include "util.h"
#include "vcp.h"

/* The spec's published test keys and handshake (vectors.json). */
static const char client_pem[] =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEICU4zcKal8GcHpmmN9bPT4yXDBGLVu3h5jI+bRYsSzDboAoGCCqGSM49\n"
    "AwEHoUQDQgAEsra8aMLaBmXOZWgVWUmWxiOU7di+qQX+eBp1T+aoRacUMwkC8iXp\n"
    "Jp1GbgWzSZgf2p2FzCPG+0RKpztikQXcbg==\n"
    "-----END EC PRIVATE KEY-----\n";
static const char vehicle_pub_hex[] =
    "04c7a1f47138486aa4729971494878d33b1a24e39571f748a6e16c5955b3d877d3a6aaa0e955166474af5d32c4"
    "10f439a2234137ad1bb085fd4e8813c958f11d97";
static const char session_info_hex[] =
    "0806124104c7a1f47138486aa4729971494878d33b1a24e39571f748a6e16c5955b3d877d3a6aaa0e955166474"
    "af5d32c410f439a2234137ad1bb085fd4e8813c958f11d971a104c463f9cc0d3d26906e982ed224adde6255a0a"
    "0000";
static const char routing_hex[] = "2c907bd76c640d360b3027dc7404efde";
static const char uuid_hex[] = "1588d5a30eabc6f8fc9a951b11f6fd11";
static const char response_hex[] =
    "321212102c907bd76c640d360b3027dc7404efde3a0208036a2432220a20996c1fe38331be138f8039c194b14d"
    "b2198846ed7d8251e6749284d7b32ea0027a5c0806124104c7a1f47138486aa4729971494878d33b1a24e39571"
    "f748a6e16c5955b3d877d3a6aaa0e955166474af5d32c410f439a2234137ad1bb085fd4e8813c958f11d971a10"
    "4c463f9cc0d3d26906e982ed224adde6255a0a00009203101588d5a30eabc6f8fc9a951b11f6fd11";
#define VIN "5YJ30123456789ABC"

static const uint8_t payload[] = {0x12, 0x04, 0x52, 0x02, 0x08, 0x01}; /* auto_conditioning_start */

typedef struct ctx {
  fq_vcp_key_t *key;
  fq_vcp_session_t *s;
  fq_buf_t out;
  uint8_t kp[32];       /* K' */
  uint8_t mp[160];      /* M || P of one signature */
  size_t mpl;
  EVP_PKEY *own, *peer; /* the same key pair as plain OpenSSL objects */
  uint8_t resp[512];
  size_t resp_len;
  fq_vcp_request_t hreq;
  int64_t now_ms;
  EVP_MAC_CTX *mac; /* keyed with K' once */
} ctx_t;

static volatile uint32_t sink;

static int op_sign(ctx_t *c) {
  fq_vcp_request_t req;
  fq_vcp_sign_opts_t o = {.now_ms = c->now_ms};
  c->out.len = 0;
  int rc = fq_vcp_sign(c->s, payload, sizeof payload, &o, &req, &c->out, NULL);
  sink += c->out.data[c->out.len - 1];
  return rc;
}

static int op_hmac(ctx_t *c) {
  uint8_t tag[32];
  unsigned tl = 0;
  if (!HMAC(EVP_sha256(), c->kp, sizeof c->kp, c->mp, c->mpl, tag, &tl)) return -1;
  sink += tag[0];
  return 0;
}

/* The floor: an HMAC context keyed once, re-initialised per message. */
static int op_mac_prekeyed(ctx_t *c) {
  uint8_t tag[32];
  size_t tl = 0;
  if (!EVP_MAC_init(c->mac, NULL, 0, NULL) || !EVP_MAC_update(c->mac, c->mp, c->mpl) ||
      !EVP_MAC_final(c->mac, tag, &tl, sizeof tag))
    return -1;
  sink += tag[0];
  return 0;
}

static int op_handshake(ctx_t *c) {
  fq_vcp_session_t *s = NULL;
  fq_vcp_outcome_t o;
  int rc = fq_vcp_handshake_finish(c->key, VIN, &c->hreq, c->resp, c->resp_len, c->now_ms, &s, &o,
                                   NULL);
  if (s) sink += fq_vcp_session_counter(s);
  fq_vcp_session_destroy(&s);
  return rc;
}

static int op_derive(ctx_t *c) {
  uint8_t x[32];
  size_t xl = sizeof x;
  EVP_PKEY_CTX *d = EVP_PKEY_CTX_new_from_pkey(NULL, c->own, NULL);
  int ok = d && EVP_PKEY_derive_init(d) == 1 && EVP_PKEY_derive_set_peer(d, c->peer) == 1 &&
           EVP_PKEY_derive(d, x, &xl) == 1;
  EVP_PKEY_CTX_free(d);
  sink += x[0];
  return ok ? 0 : -1;
}

/* The bare ECDH figure is OpenSSL alone, so it gets its own EVP_PKEY
 * objects: the client key parsed from the same PEM, and the vehicle's
 * public point.  NULL on failure. */
static EVP_PKEY *own_key(void) {
  BIO *b = BIO_new_mem_buf(client_pem, (int)sizeof client_pem - 1);
  EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  return k;
}

static EVP_PKEY *peer_key(const uint8_t pub[FQ_VCP_PUBKEY_LEN]) {
  EVP_PKEY *k = NULL;
  char group[] = "prime256v1";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pub, FQ_VCP_PUBKEY_LEN),
      OSSL_PARAM_construct_end()};
  EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
  if (!pc || EVP_PKEY_fromdata_init(pc) != 1 ||
      EVP_PKEY_fromdata(pc, &k, EVP_PKEY_PUBLIC_KEY, params) != 1)
    k = NULL;
  EVP_PKEY_CTX_free(pc);
  return k;
}

/* M of one HMAC_PERSONALIZED signature, built with the public metadata
 * writer in the order the spec gives (what fq_vcp_sign authenticates). */
static size_t command_meta(int domain, const uint8_t epoch[FQ_VCP_EPOCH_LEN],
                           uint32_t expires_at, uint32_t counter, uint32_t flags, uint8_t *out,
                           size_t cap) {
  fq_vcp_meta_t m;
  uint8_t t = FQ_VCP_SIG_HMAC_PERSONALIZED, d = (uint8_t)domain;
  fq_vcp_meta_init(&m, out, cap);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_SIGNATURE_TYPE, &t, 1);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_DOMAIN, &d, 1);
  fq_vcp_meta_add(&m, FQ_VCP_TAG_PERSONALIZATION, VIN, strlen(VIN));
  fq_vcp_meta_add(&m, FQ_VCP_TAG_EPOCH, epoch, FQ_VCP_EPOCH_LEN);
  fq_vcp_meta_add_u32(&m, FQ_VCP_TAG_EXPIRES_AT, expires_at);
  fq_vcp_meta_add_u32(&m, FQ_VCP_TAG_COUNTER, counter);
  if (flags) fq_vcp_meta_add_u32(&m, FQ_VCP_TAG_FLAGS, flags);
  return fq_vcp_meta_end(&m);
}

/* Run op for about ms milliseconds; returns operations per second. */
static double measure(int (*op)(ctx_t *), ctx_t *c, int ms) {
  int64_t start = fq_mono_ns(), deadline = start + (int64_t)ms * 1000000, now;
  long n = 0;
  do {
    for (int i = 0; i < 64; i++)
      if (op(c) != 0) {
        fprintf(stderr, "bench_sign: operation failed\n");
        exit(1);
      }
    n += 64;
    now = fq_mono_ns();
  } while (now < deadline);
  return (double)n * 1e9 / (double)(now - start);
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void cpu_model(char *out, size_t cap) {
  snprintf(out, cap, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) == 0) {
      char *p = strchr(line, ':');
      if (p) {
        p += 2;
        p[strcspn(p, "\n")] = 0;
        snprintf(out, cap, "%s", p);
      }
      break;
    }
  }
  fclose(f);
}

int main(int argc, char **argv) {
  int rounds = 7, ms = 300;
  const char *outp = "perf/results/sign.md";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--ms") == 0 && i + 1 < argc) ms = atoi(argv[++i]);
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) outp = argv[++i];
    else {
      fprintf(stderr, "usage: bench_sign [--rounds N] [--ms MILLIS] [--out PATH]\n");
      return 2;
    }
  }
  if (rounds < 1 || rounds > 101 || ms < 10) {
    fprintf(stderr, "bench_sign: --rounds 1..101, --ms >= 10\n");
    return 2;
  }

  ctx_t c;
  memset(&c, 0, sizeof c);
  c.now_ms = 2650000;
  uint8_t info[256], routing[16], vpub[65];
  size_t il = (size_t)fq_hex_decode(session_info_hex, info, sizeof info);
  fq_hex_decode(routing_hex, routing, sizeof routing);
  fq_hex_decode(vehicle_pub_hex, vpub, sizeof vpub);
  c.resp_len = (size_t)fq_hex_decode(response_hex, c.resp, sizeof c.resp);
  fq_err_t err;
  fq_err_clear(&err);
  if (fq_vcp_key_from_pem(client_pem, sizeof client_pem - 1, &c.key, &err) ||
      fq_vcp_session_from_info(c.key, VIN, 3, info, il, c.now_ms, routing, &c.s, &err)) {
    fprintf(stderr, "bench_sign: setup: %s\n", err.msg);
    return 1;
  }
  fq_buf_init(&c.out, 4096);
  /* The bytes the bare HMAC gets: the metadata of a typical signature and
   * the payload, keyed with K' of the same session. */
  fq_vcp_command_key(fq_vcp_session_k(c.s), c.kp);
  uint8_t epoch[16];
  memcpy(epoch, fq_vcp_session_epoch(c.s), 16);
  c.mpl = command_meta(3, epoch, 2655, 1000, 2, c.mp, sizeof c.mp);
  if (!c.mpl) {
    fprintf(stderr, "bench_sign: metadata does not fit\n");
    return 1;
  }
  memcpy(c.mp + c.mpl, payload, sizeof payload);
  c.mpl += sizeof payload;
  c.own = own_key();
  c.peer = peer_key(vpub);
  EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  char digest[] = "SHA256";
  OSSL_PARAM mp[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
  c.mac = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
  if (!c.mac || !EVP_MAC_init(c.mac, c.kp, sizeof c.kp, mp)) {
    fprintf(stderr, "bench_sign: HMAC context setup failed\n");
    return 1;
  }
  memset(&c.hreq, 0, sizeof c.hreq);
  c.hreq.domain = 3;
  c.hreq.is_handshake = true;
  fq_hex_decode(uuid_hex, c.hreq.uuid, 16);
  if (!c.own || !c.peer || op_handshake(&c) != 0) {
    fprintf(stderr, "bench_sign: handshake setup failed\n");
    return 1;
  }

  double *sign = calloc((size_t)rounds, sizeof(double)), *hm = calloc((size_t)rounds, sizeof(double));
  double *hs = calloc((size_t)rounds, sizeof(double)), *dv = calloc((size_t)rounds, sizeof(double));
  double *pk = calloc((size_t)rounds, sizeof(double));
  measure(op_sign, &c, ms / 3); /* warm up caches and the DRBG */
  measure(op_hmac, &c, ms / 3);
  for (int r = 0; r < rounds; r++) {
    /* Interleave so that a noisy neighbour hits both sides alike. */
    sign[r] = measure(op_sign, &c, ms);
    hm[r] = measure(op_hmac, &c, ms);
    pk[r] = measure(op_mac_prekeyed, &c, ms);
    hs[r] = measure(op_handshake, &c, ms);
    dv[r] = measure(op_derive, &c, ms);
    printf("round %d: sign %.0f/s  hmac %.0f/s  prekeyed mac %.0f/s  handshake %.0f/s  ecdh %.0f/s\n",
           r + 1, sign[r], hm[r], pk[r], hs[r], dv[r]);
    fflush(stdout);
  }
  double ms_sign = median(sign, rounds), ms_hmac = median(hm, rounds);
  double ms_hs = median(hs, rounds), ms_dv = median(dv, rounds), ms_pk = median(pk, rounds);
  double ratio_sign = ms_hmac / ms_sign, ratio_hs = ms_dv / ms_hs;

  char cpu[256], date[64];
  struct utsname u;
  uname(&u);
  cpu_model(cpu, sizeof cpu);
  time_t t = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&t));
  const char *verdict = ratio_sign <= 2.0 ? "PASS" : "FAIL";

  char report[4096];
  snprintf(report, sizeof report,
           "# Signing benchmark (perf/bench_sign.c)\n\n"
           "- date: %s\n- machine: %s, %s %s (%s)\n- OpenSSL: %s\n- protobuf-c: %s\n"
           "- compiler: %s\n- rounds: %d x %d ms per figure, single thread, medians\n\n"
           "| operation | per second (median) | per op |\n|---|---:|---:|\n"
           "| fq_vcp_sign (HMAC_PERSONALIZED, packed RoutableMessage, random uuid) | %.0f | %.2f us |\n"
           "| bare OpenSSL HMAC() one-shot, same %zu bytes, same key | %.0f | %.2f us |\n"
           "| floor: pre-keyed EVP_MAC context (init/update/final), same bytes | %.0f | %.2f us |\n"
           "| fq_vcp_handshake_finish (decode, ECDH, SHA1, tag check, K' context) | %.0f | %.2f us |\n"
           "| bare EVP_PKEY_derive (P-256 ECDH) | %.0f | %.2f us |\n\n"
           "- signing cost / bare HMAC cost = %.2f (budget: at most 2.00) -> %s\n"
           "- signing cost / pre-keyed HMAC floor = %.2f\n"
           "- handshake cost / bare ECDH cost = %.2f\n",
           date, cpu, u.sysname, u.release, u.machine, OpenSSL_version(OPENSSL_VERSION),
           protobuf_c_version(), __VERSION__, rounds, ms, ms_sign, 1e6 / ms_sign, c.mpl, ms_hmac,
           1e6 / ms_hmac, ms_pk, 1e6 / ms_pk, ms_hs, 1e6 / ms_hs, ms_dv, 1e6 / ms_dv, ratio_sign, verdict, ms_pk / ms_sign, ratio_hs);
  printf("\n%s", report);
  FILE *f = fopen(outp, "w");
  if (!f) {
    fprintf(stderr, "bench_sign: cannot write %s (run from the source tree or pass --out)\n", outp);
  } else {
    fputs(report, f);
    fclose(f);
    printf("\nwritten to %s\n", outp);
  }
  free(sign);
  free(hm);
  free(hs);
  free(dv);
  free(pk);
  EVP_MAC_CTX_free(c.mac);
  EVP_MAC_free(hmac);
  EVP_PKEY_free(c.own);
  EVP_PKEY_free(c.peer);
  fq_buf_free(&c.out);
  fq_vcp_session_destroy(&c.s);
  fq_vcp_key_destroy(&c.key);
  return ratio_sign <= 2.0 ? 0 : 1;
}
