/*
 * Fuzz target for the wire codec: every byte string is fed to
 * fq_wire_decode_request(), fq_wire_decode_params() and
 * fq_wire_event_unpack(), and the results are checked, not just survived:
 * borrowed views stay inside the input, error codes are wire codes with an
 * ASCII message, accepted submits re-validate and hash, and every reply
 * built from the outcome (including an echoed `req`) is one well-formed
 * msgpack object.
 *
 * Built two ways:
 *  - with -DFQ_LIBFUZZER and -fsanitize=fuzzer (cmake -DFQ_FUZZ=ON, clang):
 *    the libFuzzer target `fuzz_wire`;
 *  - without it: a plain driver (ctest `fuzz_wire_corpus`) that runs every
 *    file of a corpus directory, then a fixed number of deterministic
 *    mutations of them from a logged seed, so CI exercises the same checks.
 */
#include <dirent.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleetq/buf.h"
#include "fleetq/wire.h"
#include "rng.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                            \
  do {                                                       \
    fprintf(stderr, "fuzz_wire: invariant broken: ");        \
    fprintf(stderr, __VA_ARGS__);                            \
    fprintf(stderr, "\n");                                   \
    abort();                                                 \
  } while (0)

static const uint8_t *g_lo, *g_hi;
/* Outcome counts, for the plain driver's summary. */
static unsigned long g_accepted, g_refused;

/* A borrowed view must lie inside the input. */
static void inside(const void *p, size_t n, const char *what) {
  if (!p) {
    if (n) FAIL("%s: NULL with length %zu", what, n);
    return;
  }
  const uint8_t *b = p;
  if (b < g_lo || b > g_hi || n > (size_t)(g_hi - b)) FAIL("%s points outside the input", what);
}

static void str_inside(fq_str_t s, const char *what) { inside(s.p, s.n, what); }

/* msgpack-c must see exactly one complete object. */
static void one_object(const uint8_t *p, size_t n, const char *what) {
  msgpack_unpacked u;
  size_t off = 0;
  msgpack_unpacked_init(&u);
  msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)p, n, &off);
  if (r != MSGPACK_UNPACK_SUCCESS || off != n)
    FAIL("%s: not one msgpack object (ret %d, used %zu of %zu)", what, (int)r, off, n);
  msgpack_unpacked_destroy(&u);
}

static bool is_wire_code(int rc) {
  return rc == FQ_EBADREQ || rc == FQ_EVERSION || rc == FQ_EUNKCMD || rc == FQ_EBADPARAM ||
         rc == FQ_ETOOLARGE;
}

static void check_msg(const fq_err_t *e, int rc, const char *what) {
  if (e->code != rc) FAIL("%s: err.code %d != rc %d", what, e->code, rc);
  if (!e->msg[0]) FAIL("%s: empty message", what);
  for (const char *c = e->msg; *c; c++)
    if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
      FAIL("%s: non-printable byte 0x%02x in message \"%s\"", what, (unsigned char)*c, e->msg);
}

static void check_params(const fq_pval_t *pv, size_t n) {
  if (n > FQ_MAX_PARAMS) FAIL("%zu params", n);
  for (size_t i = 0; i < n; i++) {
    inside(pv[i].name, pv[i].name_len, "param name");
    if (pv[i].type == FQ_PT_STR) inside(pv[i].v.s.p, pv[i].v.s.n, "param string");
    if (pv[i].type == FQ_PT_MAP) {
      inside(pv[i].v.raw.p, pv[i].v.raw.n, "param map");
      one_object(pv[i].v.raw.p, pv[i].v.raw.n, "param map");
    }
  }
}

static void check_request(const uint8_t *data, size_t size) {
  fq_request_t r;
  fq_err_t e;
  fq_buf_t out;
  fq_err_clear(&e);
  fq_buf_init(&out, 1 << 20);
  int rc = fq_wire_decode_request(data, size, &r, &e);
  if (rc)
    g_refused++;
  else
    g_accepted++;
  inside(r.req_raw, r.req_raw_len, "req_raw");
  if (r.req_raw) one_object(r.req_raw, r.req_raw_len, "req_raw");
  if (rc) {
    if (!is_wire_code(rc)) FAIL("decode returned %d (%s), not a wire code", rc, fq_errname(rc));
    check_msg(&e, rc, "request");
    if (fq_wire_reply_error(&out, rc, e.msg, r.req_raw, r.req_raw_len) != 0)
      FAIL("error reply failed");
    one_object(out.data, out.len, "error reply");
    fq_buf_free(&out);
    return;
  }
  if (r.op < FQ_OP_SUBMIT || r.op > FQ_OP_CAMPAIGN_ABORT) FAIL("op %d", r.op);
  str_inside(r.tenant, "tenant");
  str_inside(r.key, "key");
  str_inside(r.account, "account");
  str_inside(r.vin, "vin");
  str_inside(r.command, "command");
  str_inside(r.id, "id");
  str_inside(r.admin_action, "admin_action");
  inside(r.params_raw, r.params_raw_len, "params_raw");
  check_params(r.params, r.nparams);
  if (r.op == FQ_OP_SUBMIT) {
    if (!r.cmd) FAIL("submit without a command");
    if (!r.tenant.n || !r.key.n || !r.account.n) FAIL("submit missing a string field");
    if ((r.vin.p != NULL) == (r.site != 0)) FAIL("submit must have exactly one device");
    if (r.ttl_ms < 0 || r.ttl_ms > FQ_WIRE_MAX_TTL_MS) FAIL("ttl %" PRId64, r.ttl_ms);
    fq_err_t e2;
    if (fq_cmd_validate(r.cmd, r.params, r.nparams, &e2) != 0)
      FAIL("accepted params fail validation: %s", e2.msg);
    /* What was stored decodes the same way later. */
    if (r.params_raw) {
      fq_pval_t again[FQ_MAX_PARAMS];
      size_t n2;
      if (fq_wire_decode_params(r.params_raw, r.params_raw_len, again, &n2, &e2) != 0 ||
          n2 != r.nparams)
        FAIL("stored params do not decode again: %s", e2.msg);
    }
    uint8_t h1[32], h2[32];
    if (fq_wire_request_hash(&r, h1) || fq_wire_request_hash(&r, h2) || memcmp(h1, h2, 32))
      FAIL("hash not deterministic");
    char dk[64];
    if (!fq_wire_device_key(&r, dk, sizeof dk)) FAIL("device key does not fit");
    if (fq_wire_reply_submit(&out, "0-1", FQ_ST_QUEUED, false, r.req_raw, r.req_raw_len))
      FAIL("submit reply failed");
    one_object(out.data, out.len, "submit reply");
  }
  if (r.op == FQ_OP_CAMPAIGN) {
    /* An accepted campaign: its fields in range, and its devices read
     * again one by one without a fault, as the daemon does at fan-out. */
    if (!r.cmd || !r.tenant.n || !r.key.n || r.key.n > FQ_WIRE_MAX_CAMPAIGN_KEY)
      FAIL("campaign fields");
    if (r.ndevices < 1 || r.ndevices > FQ_WIRE_MAX_CAMPAIGN_DEVICES) FAIL("devices %u", r.ndevices);
    if (r.part < 1 || r.part > r.parts || r.parts > FQ_WIRE_MAX_CAMPAIGN_PARTS) FAIL("part");
    if (r.has_rate && !(r.rate > 0 && r.rate <= FQ_WIRE_MAX_CAMPAIGN_RATE)) FAIL("rate");
    if (r.has_ratio && !(r.max_failure_ratio >= 0 && r.max_failure_ratio <= 1)) FAIL("ratio");
    inside(r.devices_raw, r.devices_len, "devices_raw");
    fq_wire_devit_t it;
    fq_wire_device_t d;
    fq_err_t e2;
    uint32_t n = 0, seen = 0;
    if (fq_wire_devices_begin(&it, r.devices_raw, r.devices_len, &n, &e2) || n != r.ndevices)
      FAIL("devices do not read again");
    int dr;
    while ((dr = fq_wire_devices_next(&it, &d, &e2)) == 1) {
      seen++;
      if ((d.vin.p != NULL) == (d.site != 0) || !d.account.n) FAIL("device %u", seen);
      char name[32];
      if (!fq_wire_device_name(&d, name, sizeof name)) FAIL("device name does not fit");
    }
    if (dr != 0 || seen != n) FAIL("devices read %u of %u", seen, n);
  }
  if (r.op == FQ_OP_HISTORY && (r.limit < 1 || r.limit > FQ_WIRE_MAX_HISTORY))
    FAIL("history limit %" PRIu32, r.limit);
  if (r.op == FQ_OP_ADMIN && (r.admin_raw != data || r.admin_raw_len != size))
    FAIL("admin_raw is not the body");
  fq_buf_free(&out);
}

static void check_params_map(const uint8_t *data, size_t size) {
  fq_pval_t pv[FQ_MAX_PARAMS];
  size_t n = 99;
  fq_err_t e;
  fq_err_clear(&e);
  int rc = fq_wire_decode_params(data, size, pv, &n, &e);
  if (rc) {
    if (!is_wire_code(rc)) FAIL("decode_params returned %d", rc);
    check_msg(&e, rc, "params");
    if (n > FQ_MAX_PARAMS) FAIL("decode_params count %zu after error", n);
    return;
  }
  check_params(pv, n);
  /* Whatever decoded must pass or fail validation cleanly for every
   * command (no crash, message well formed). */
  for (size_t i = 0; i < fq_cmd_count(); i++) {
    fq_err_clear(&e);
    rc = fq_cmd_validate(fq_cmd_at(i), pv, n, &e);
    if (rc) check_msg(&e, rc, "validate");
  }
}

static void check_event(const uint8_t *data, size_t size) {
  fq_event_t ev;
  fq_err_t e;
  fq_err_clear(&e);
  int rc = fq_wire_event_unpack(data, size, &ev, &e);
  if (rc) {
    if (rc != FQ_EPROTO) FAIL("event_unpack returned %d", rc);
    return;
  }
  str_inside(ev.id, "event id");
  str_inside(ev.tenant, "event tenant");
  str_inside(ev.vin, "event vin");
  str_inside(ev.command, "event command");
  str_inside(ev.reason, "event reason");
  if (ev.state < 0 || ev.state >= FQ_ST_COUNT_) FAIL("event state %d", ev.state);
  /* Re-packing gives one well-formed map. */
  fq_buf_t out;
  fq_buf_init(&out, 1 << 20);
  if (fq_wire_event_pack(&out, &ev)) FAIL("event repack failed");
  one_object(out.data, out.len, "event repack");
  fq_buf_free(&out);
  char topic[512];
  (void)fq_wire_event_topic(&ev, topic, sizeof topic);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  g_lo = data;
  g_hi = data + size;
  check_request(data, size);
  check_params_map(data, size);
  check_event(data, size);
  return 0;
}

#ifndef FQ_LIBFUZZER
/* ---- plain driver: corpus + deterministic mutations ---------------------- */

#define MUTATIONS 20000
#define FUZZ_MAX_INPUT (64 * 1024)

/* The base generator: reproducible from the logged seed. */
static fq_rng_t rng_state;

static uint64_t rnd(void) { return fq_rng_next(&rng_state); }

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

typedef struct input {
  uint8_t *p;
  size_t n;
} input_t;

/* Bytes that matter to a msgpack parser: container and string headers,
 * the never-used 0xc1, nil, booleans, fixint edges. */
static const uint8_t interesting[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0,
                                      0xc1, 0xc2, 0xc3, 0xc4, 0xc6, 0xc9, 0xca, 0xcb, 0xcf,
                                      0xd3, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};

static size_t mutate(uint8_t *b, size_t n, const input_t *all, size_t nall) {
  int rounds = 1 + (int)rnd_below(4);
  for (int k = 0; k < rounds; k++) {
    switch (rnd_below(8)) {
    case 0: /* flip a bit */
      if (n) b[rnd_below(n)] ^= (uint8_t)(1u << rnd_below(8));
      break;
    case 1: /* an interesting byte */
      if (n) b[rnd_below(n)] = interesting[rnd_below(sizeof interesting)];
      break;
    case 2: /* insert a byte */
      if (n < FUZZ_MAX_INPUT) {
        size_t at = rnd_below(n + 1);
        memmove(b + at + 1, b + at, n - at);
        b[at] = (uint8_t)rnd();
        n++;
      }
      break;
    case 3: /* delete a run */
      if (n) {
        size_t at = rnd_below(n), len = 1 + rnd_below(n - at);
        memmove(b + at, b + at + len, n - at - len);
        n -= len;
      }
      break;
    case 4: /* truncate */
      n = rnd_below(n + 1);
      break;
    case 5: /* a huge 32-bit size header */
      if (n + 5 <= FUZZ_MAX_INPUT) {
        static const uint8_t hdr[] = {0xdb, 0xc6, 0xdd, 0xdf, 0xc9};
        size_t at = rnd_below(n + 1);
        memmove(b + at + 5, b + at, n - at);
        b[at] = hdr[rnd_below(sizeof hdr)];
        memset(b + at + 1, rnd_below(2) ? 0xff : 0x7f, 4);
        n += 5;
      }
      break;
    case 6: /* splice a chunk of another input */
      if (nall) {
        const input_t *o = &all[rnd_below(nall)];
        if (o->n) {
          size_t from = rnd_below(o->n), len = 1 + rnd_below(o->n - from);
          size_t at = rnd_below(n + 1);
          if (n + len <= FUZZ_MAX_INPUT) {
            memmove(b + at + len, b + at, n - at);
            memcpy(b + at, o->p + from, len);
            n += len;
          }
        }
      }
      break;
    default: /* overwrite a byte with a random one */
      if (n) b[rnd_below(n)] = (uint8_t)rnd();
      break;
    }
  }
  return n;
}

/* Run one input from an exact-size heap copy, so AddressSanitizer catches
 * a read one byte past the end. */
static void run(const uint8_t *p, size_t n) {
  uint8_t *copy = malloc(n ? n : 1);
  if (!copy) abort();
  if (n) memcpy(copy, p, n);
  LLVMFuzzerTestOneInput(copy, n);
  free(copy);
}

static int load_dir(const char *dir, input_t **out, size_t *nout) {
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "fuzz_wire: cannot open corpus %s\n", dir);
    return -1;
  }
  struct dirent *de;
  size_t n = 0, cap = 0;
  input_t *all = NULL;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    FILE *f = fopen(path, "rb");
    if (!f) continue;
    uint8_t *buf = malloc(FUZZ_MAX_INPUT);
    size_t len = buf ? fread(buf, 1, FUZZ_MAX_INPUT, f) : 0;
    fclose(f);
    if (!buf) abort();
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      all = realloc(all, cap * sizeof *all);
      if (!all) abort();
    }
    all[n].p = buf;
    all[n].n = len;
    n++;
  }
  closedir(d);
  *out = all;
  *nout = n;
  return 0;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "fuzz/corpus/wire";
  uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : UINT64_C(0x5eed0f1ee7);
  int count = argc > 3 ? atoi(argv[3]) : MUTATIONS;
  input_t *all;
  size_t n;
  if (load_dir(dir, &all, &n) || n == 0) {
    fprintf(stderr, "fuzz_wire: empty corpus in %s\n", dir);
    return 1;
  }
  printf("fuzz_wire: %zu corpus files from %s, %d mutations, seed 0x%" PRIx64 "\n", n, dir,
         count, seed);
  fflush(stdout);
  for (size_t i = 0; i < n; i++) run(all[i].p, all[i].n);
  /* The corpus holds valid requests of every op: if none is accepted, the
   * decoder (or the corpus) is broken and the mutations below prove little. */
  printf("fuzz_wire: corpus: %lu requests accepted, %lu refused\n", g_accepted, g_refused);
  if (g_accepted < 10) {
    fprintf(stderr, "fuzz_wire: too few corpus requests accepted\n");
    return 1;
  }
  g_accepted = g_refused = 0;
  fq_rng_seed(&rng_state, seed);
  uint8_t *buf = malloc(FUZZ_MAX_INPUT);
  if (!buf) abort();
  for (int i = 0; i < count; i++) {
    const input_t *src = &all[rnd_below(n)];
    memcpy(buf, src->p, src->n);
    size_t len = mutate(buf, src->n, all, n);
    run(buf, len);
  }
  free(buf);
  for (size_t i = 0; i < n; i++) free(all[i].p);
  free(all);
  printf("fuzz_wire: mutations: %lu requests accepted, %lu refused\nfuzz_wire: ok\n",
         g_accepted, g_refused);
  return 0;
}
#endif
