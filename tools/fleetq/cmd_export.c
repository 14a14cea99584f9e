/*
 * fleetq export: write a traffic file (proto/traffic-format.md) from a
 * daemon's history, so that what upstream services sent in a time range
 * can be replayed with fleetq-replay.
 *
 * Walks the stored events of every shard (`ping` tells how many) with
 * `history`, keeps the `queued` events (one per accepted command) whose
 * `at` falls in [--from, --to], looks each command up with `get` for what
 * was submitted (account, device, command, params, ttl_ms, coalesce) and
 * writes one submit per command, in time order, its offset taken from the
 * event times.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "fleetq/client.h"
#include "fleetq/wire.h"
#include "traffic.h"

#define EXPORT_TIMEOUT_MS 10000
/* Lookups in flight at once. */
#define EXPORT_WINDOW 256
#define EXPORT_DEFAULT_LIMIT 10000000ULL

static const char g_export_help[] =
    "usage: fleetq export --from TIME --to TIME --out FILE [--tenant T]\n"
    "                     [--limit N] [--endpoint EP] [--timeout S]\n"
    "                     [--curve-key FILE --server-key Z85]\n"
    "\n"
    "Write the commands a daemon accepted between --from and --to (inclusive)\n"
    "as a traffic file for fleetq-replay (proto/traffic-format.md): one submit\n"
    "per command with its original tenant, key, account, device, command,\n"
    "params, ttl_ms and coalesce, spaced as they arrived.\n"
    "TIME is unix milliseconds (1795920000000) or ISO-8601 UTC\n"
    "(2026-11-29T03:00:00Z, 2026-11-29T03:00:00.250+01:00, 2026-11-29).\n"
    "--tenant keeps one tenant's commands; --limit caps the count (default\n"
    "10,000,000).  Commands purged since (not_found) are skipped and counted.\n";

enum {
  E_FROM = 1000, E_TO, E_OUT, E_TENANT, E_LIMIT, E_ENDPOINT, E_TIMEOUT, E_HELP, E_CURVE_KEY,
  E_SERVER_KEY
};

static const struct option g_opts[] = {
    {"from", required_argument, NULL, E_FROM},
    {"to", required_argument, NULL, E_TO},
    {"out", required_argument, NULL, E_OUT},
    {"tenant", required_argument, NULL, E_TENANT},
    {"limit", required_argument, NULL, E_LIMIT},
    {"endpoint", required_argument, NULL, E_ENDPOINT},
    {"timeout", required_argument, NULL, E_TIMEOUT},
    FQ_CLI_CURVE_LONGOPTS(E_CURVE_KEY, E_SERVER_KEY),
    {"help", no_argument, NULL, E_HELP},
    {NULL, 0, NULL, 0},
};

/* Parse unix ms or ISO-8601 into unix ms.  Returns false when malformed. */
static bool parse_time(const char *s, int64_t *ms) {
  size_t n = strlen(s);
  bool digits = n > 0;
  for (size_t i = 0; i < n; i++) digits = digits && isdigit((unsigned char)s[i]);
  if (digits) {
    if (n > 15) return false;
    *ms = strtoll(s, NULL, 10);
    return true;
  }
  int y, mo, d, h = 0, mi = 0, sec = 0, used = 0;
  if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10) return false;
  const char *p = s + used;
  int64_t frac_ms = 0, off_s = 0;
  if (*p == 'T' || *p == 't' || *p == ' ') {
    p++;
    if (sscanf(p, "%2d:%2d%n", &h, &mi, &used) != 2 || used != 5) return false;
    p += used;
    if (*p == ':') {
      if (sscanf(p + 1, "%2d%n", &sec, &used) != 1 || used != 2) return false;
      p += 3;
      if (*p == '.') {
        int scale = 100, nd = 0;
        for (p++; isdigit((unsigned char)*p); p++, nd++)
          if (scale >= 1) {
            frac_ms += (*p - '0') * scale;
            scale /= 10;
          }
        if (nd == 0) return false;
      }
    }
  }
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om;
    if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &used) != 2 || used != 5 || oh > 23 || om > 59)
      return false;
    off_s = (int64_t)(oh * 3600 + om * 60) * (*p == '+' ? 1 : -1);
    p += 1 + used;
  }
  if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return false;
  struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                  .tm_min = mi, .tm_sec = sec};
  time_t t = timegm(&tm);
  if (t == (time_t)-1) return false;
  *ms = ((int64_t)t - off_s) * 1000 + frac_ms;
  return true;
}

typedef struct qev {
  int64_t at;
  uint32_t shard;
  uint64_t seq;
  char id[65];
} qev_t;

static int cmp_qev(const void *a, const void *b) {
  const qev_t *x = a, *y = b;
  if (x->at != y->at) return x->at < y->at ? -1 : 1;
  if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int pack_write(void *data, const char *buf, size_t len) {
  return fq_buf_append(data, buf, len) ? -1 : 0;
}

/* Copy a str object into a NUL-terminated buffer; false if absent or too
 * long. */
static bool cstr(const msgpack_object *o, char *out, size_t cap) {
  const char *p;
  size_t n;
  if (!fq_mp_str(o, &p, &n) || n >= cap) return false;
  memcpy(out, p, n);
  out[n] = 0;
  return true;
}

/* Build the submit body of one `get` reply's command map.  Returns 0, or
 * an error with e->msg saying what was missing. */
static int submit_from_command(const msgpack_object *cmd, fq_buf_t *body, fq_err_t *e) {
  char tenant[80], key[160], account[160], vin[40], command[80];
  int64_t site = 0, ttl = 0;
  bool coalesce = false;
  fq_buf_t pbuf;
  fq_pval_t pv[FQ_MAX_PARAMS];
  size_t np = 0;
  int rc = 0;
  fq_buf_init(&pbuf, FQ_WIRE_MAX_PARAMS_BYTES + 64);
  if (!cstr(fq_mp_get(cmd, "tenant"), tenant, sizeof tenant) ||
      !cstr(fq_mp_get(cmd, "key"), key, sizeof key) ||
      !cstr(fq_mp_get(cmd, "account"), account, sizeof account) ||
      !cstr(fq_mp_get(cmd, "command"), command, sizeof command)) {
    rc = fq_errf(e, FQ_EPROTO, "command record lacks tenant, key, account or command");
    goto out;
  }
  bool has_vin = cstr(fq_mp_get(cmd, "vin"), vin, sizeof vin) && vin[0];
  if (!has_vin && (!fq_mp_int(fq_mp_get(cmd, "site"), &site) || site <= 0)) {
    rc = fq_errf(e, FQ_EPROTO, "command record has neither vin nor site");
    goto out;
  }
  fq_mp_int(fq_mp_get(cmd, "ttl_ms"), &ttl);
  fq_mp_bool(fq_mp_get(cmd, "coalesce"), &coalesce);
  const msgpack_object *params = fq_mp_get(cmd, "params");
  if (params && params->type == MSGPACK_OBJECT_MAP && params->via.map.size > 0) {
    /* Back to msgpack bytes, then through the wire decoder: the values
     * keep their types (an integer stays an integer). */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &pbuf, pack_write);
    if (msgpack_pack_object(&pk, *params) != 0 ||
        (rc = fq_wire_decode_params(pbuf.data, pbuf.len, pv, &np, e)) != 0) {
      if (!rc) rc = fq_errf(e, FQ_ETOOLARGE, "params too large");
      goto out;
    }
  }
  fq_submit_args_t a = {.tenant = tenant, .key = key, .account = account,
                        .vin = has_vin ? vin : NULL, .site = has_vin ? 0 : (uint64_t)site,
                        .command = command, .params = pv, .nparams = np,
                        .ttl_ms = ttl > 0 && ttl <= FQ_WIRE_MAX_TTL_MS ? ttl : 0,
                        .coalesce = coalesce};
  fq_buf_reset(body);
  if ((rc = fq_req_submit(body, &a)) != 0) fq_errf(e, rc, "submit does not fit");
out:
  fq_buf_free(&pbuf);
  return rc;
}

static int cmd_export(int argc, char **argv) {
  const char *from_s = NULL, *to_s = NULL, *out = NULL, *tenant = NULL;
  const char *endpoint = FQ_CLI_DEFAULT_ENDPOINT;
  fq_client_opts_t co = {0};
  uint64_t limit = EXPORT_DEFAULT_LIMIT;
  double timeout_s = EXPORT_TIMEOUT_MS / 1000.0;
  optind = 0;
  opterr = 0;
  for (;;) {
    int c = getopt_long(argc, argv, "+", g_opts, NULL);
    if (c == -1) break;
    char *end = NULL;
    switch (c) {
    case E_HELP:
      fputs(g_export_help, stdout);
      fputs(FQ_CLI_CURVE_HELP, stdout);
      return 0;
    case E_CURVE_KEY: co.curve_key_file = optarg; break;
    case E_SERVER_KEY: co.server_key = optarg; break;
    case E_FROM: from_s = optarg; break;
    case E_TO: to_s = optarg; break;
    case E_OUT: out = optarg; break;
    case E_TENANT: tenant = optarg; break;
    case E_ENDPOINT: endpoint = optarg; break;
    case E_LIMIT:
      errno = 0;
      limit = strtoull(optarg, &end, 10);
      if (errno || !end || *end || *optarg == '-' || limit == 0 ||
          limit > FQ_TRAFFIC_MAX_RECORDS) {
        fprintf(stderr, "fleetq export: --limit wants 1..%llu (see 'fleetq export --help')\n",
                (unsigned long long)FQ_TRAFFIC_MAX_RECORDS);
        return 2;
      }
      break;
    case E_TIMEOUT:
      timeout_s = strtod(optarg, &end);
      if (!end || *end || !(timeout_s > 0) || timeout_s > 3600) {
        fprintf(stderr, "fleetq export: --timeout wants seconds > 0 (see 'fleetq export --help')\n");
        return 2;
      }
      break;
    default:
      fprintf(stderr, "fleetq export: unknown option or missing value: %s (see 'fleetq export --help')\n",
              optind > 0 && optind <= argc ? argv[optind - 1] : "?");
      return 2;
    }
  }
  int64_t from = 0, to = 0;
  if (optind < argc || !from_s || !to_s || !out) {
    fprintf(stderr, "fleetq export: --from, --to and --out are required (see 'fleetq export --help')\n");
    return 2;
  }
  if (!parse_time(from_s, &from) || !parse_time(to_s, &to) || to < from) {
    fprintf(stderr,
            "fleetq export: --from / --to want unix ms or ISO-8601 times, from <= to "
            "(got '%s', '%s')\n",
            from_s, to_s);
    return 2;
  }
  int crc = fq_cli_conn_resolve("export", &co);
  if (crc >= 0) return crc;
  co.endpoint = endpoint;
  co.timeout_ms = (int)(timeout_s * 1000);

  int rc = 1;
  fq_err_t e;
  fq_buf_t req, raw, body;
  fq_err_clear(&e);
  qev_t *evs = NULL;
  size_t nev = 0, capev = 0;
  uint64_t skipped = 0, purged = 0, written = 0;
  fq_traffic_writer_t *w = NULL;
  fq_msg_t *slots = NULL;
  fq_buf_t *slotraw = NULL;
  bool *have = NULL;
  fq_buf_init(&req, 4096);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  fq_buf_init(&body, FQ_TRAFFIC_MAX_RECORD);
  fq_client_t *c = fq_client_new_opts(&co, &e);
  if (!c) {
    fprintf(stderr, "fleetq export: %s\n", e.msg);
    goto out;
  }

  /* 1. Shard count. */
  fq_msg_t m;
  int64_t shards = 0;
  if (fq_req_ping(&req, false, 0) || fq_client_request(c, req.data, req.len, &raw, &e) ||
      fq_msg_decode(&m, raw.data, raw.len, &e)) {
    fprintf(stderr, "fleetq export: ping %s: %s\n", endpoint, e.msg);
    goto out;
  }
  fq_mp_int(fq_mp_get(m.root, "shards"), &shards);
  fq_msg_free(&m);
  if (shards < 1 || shards > 65536) {
    fprintf(stderr, "fleetq export: the daemon reports %" PRId64 " shards\n", shards);
    goto out;
  }

  /* 2. The queued events in range, from every shard's history. */
  bool truncated = false;
  for (uint32_t sh = 0; sh < (uint32_t)shards && !truncated; sh++) {
    uint64_t after = 0;
    for (;;) {
      fq_buf_reset(&req);
      if (fq_req_history(&req, sh, after, FQ_WIRE_MAX_HISTORY, false, 0) ||
          fq_client_request(c, req.data, req.len, &raw, &e) ||
          fq_msg_decode(&m, raw.data, raw.len, &e)) {
        fprintf(stderr, "fleetq export: history of shard %u: %s\n", sh, e.msg);
        goto out;
      }
      bool ok = false;
      const msgpack_object *arr = fq_mp_get(m.root, "events");
      int64_t next = 0;
      if (!fq_mp_bool(fq_mp_get(m.root, "ok"), &ok) || !ok || !arr ||
          arr->type != MSGPACK_OBJECT_ARRAY || !fq_mp_int(fq_mp_get(m.root, "next"), &next)) {
        fprintf(stderr, "fleetq export: history of shard %u refused\n", sh);
        fq_msg_free(&m);
        goto out;
      }
      uint32_t got = arr->via.array.size;
      for (uint32_t i = 0; i < got; i++) {
        const msgpack_object *ev = &arr->via.array.ptr[i];
        int64_t at = 0, seq = 0;
        if (!fq_mp_str_eq(fq_mp_get(ev, "state"), "queued") ||
            !fq_mp_int(fq_mp_get(ev, "at"), &at) || at < from || at > to)
          continue;
        if (tenant && !fq_mp_str_eq(fq_mp_get(ev, "tenant"), tenant)) continue;
        fq_mp_int(fq_mp_get(ev, "seq"), &seq);
        if (nev == limit) {
          truncated = true;
          break;
        }
        if (nev == capev) {
          size_t nc = capev ? capev * 2 : 1024;
          qev_t *ne = realloc(evs, nc * sizeof *ne);
          if (!ne) {
            fprintf(stderr, "fleetq export: out of memory\n");
            fq_msg_free(&m);
            goto out;
          }
          evs = ne;
          capev = nc;
        }
        qev_t *q = &evs[nev];
        if (!cstr(fq_mp_get(ev, "id"), q->id, sizeof q->id)) continue;
        q->at = at;
        q->shard = sh;
        q->seq = (uint64_t)seq;
        nev++;
      }
      fq_msg_free(&m);
      if (truncated || got < FQ_WIRE_MAX_HISTORY || (uint64_t)next <= after) break;
      after = (uint64_t)next;
    }
  }
  if (truncated)
    fprintf(stderr, "fleetq export: more than %" PRIu64 " commands in range; kept the first "
                    "%" PRIu64 " found (--limit)\n", limit, limit);
  if (nev) qsort(evs, nev, sizeof *evs, cmp_qev); /* qsort(NULL, 0) is undefined */

  /* 3. Each command's submitted content, EXPORT_WINDOW lookups at a time,
   * written in time order. */
  char note[512];
  snprintf(note, sizeof note,
           "fleetq export: %s, queued from %" PRId64 " to %" PRId64 " (unix ms)%s%s, %zu commands",
           endpoint, from, to, tenant ? ", tenant " : "", tenant ? tenant : "", nev);
  w = fq_traffic_writer_new(out, nev ? evs[0].at : from, note, &e);
  if (!w) {
    fprintf(stderr, "fleetq export: %s\n", e.msg);
    goto out;
  }
  slots = calloc(EXPORT_WINDOW, sizeof *slots);
  have = calloc(EXPORT_WINDOW, sizeof *have);
  slotraw = calloc(EXPORT_WINDOW, sizeof *slotraw);
  if (!slots || !have || !slotraw) goto out;
  for (size_t i = 0; i < EXPORT_WINDOW; i++) fq_buf_init(&slotraw[i], FQ_CLIENT_MAX_REPLY);
  for (size_t base = 0; base < nev; base += EXPORT_WINDOW) {
    size_t k = nev - base < EXPORT_WINDOW ? nev - base : EXPORT_WINDOW;
    for (size_t i = 0; i < k; i++) {
      fq_buf_reset(&req);
      if (fq_req_lookup(&req, "get", evs[base + i].id, NULL, NULL, true, (int64_t)i) ||
          fq_client_send(c, req.data, req.len, &e)) {
        fprintf(stderr, "fleetq export: get: %s\n", e.msg);
        goto out;
      }
    }
    for (size_t got = 0; got < k;) {
      if (fq_client_recv(c, &raw, -1, &e)) {
        fprintf(stderr, "fleetq export: get: %s\n", e.code ? e.msg : "no reply");
        goto out;
      }
      fq_msg_t r;
      int64_t idx = -1;
      if (fq_msg_decode(&r, raw.data, raw.len, &e)) continue;
      if (!fq_mp_int(fq_mp_get(r.root, "req"), &idx) || idx < 0 || (size_t)idx >= k ||
          have[idx]) {
        fq_msg_free(&r);
        continue;
      }
      /* The tree's root points into the fq_msg_t itself and its strings
       * into the bytes decoded (msgpack-c does not copy them): keep a copy
       * of the reply per slot and decode it again in place. */
      fq_msg_free(&r);
      fq_buf_reset(&slotraw[idx]);
      if (fq_buf_append(&slotraw[idx], raw.data, raw.len) ||
          fq_msg_decode(&slots[idx], slotraw[idx].data, slotraw[idx].len, &e))
        continue;
      have[idx] = true;
      got++;
    }
    for (size_t i = 0; i < k; i++) {
      const qev_t *q = &evs[base + i];
      bool ok = false;
      fq_mp_bool(fq_mp_get(slots[i].root, "ok"), &ok);
      const msgpack_object *cmd = fq_mp_get(slots[i].root, "command");
      if (!ok || !cmd) {
        purged++;
      } else if (submit_from_command(cmd, &body, &e) ||
                 fq_traffic_write(w, (uint64_t)(q->at - evs[0].at) * 1000, body.data, body.len,
                                  &e)) {
        fprintf(stderr, "fleetq export: command %s skipped: %s\n", q->id, e.msg);
        skipped++;
      } else {
        written++;
      }
      fq_msg_free(&slots[i]);
      have[i] = false;
    }
  }
  if (fq_traffic_writer_close(&w, &e)) {
    fprintf(stderr, "fleetq export: %s\n", e.msg);
    goto out;
  }
  fprintf(stderr,
          "fleetq export: wrote %" PRIu64 " commands to %s, spanning %.3f s (%" PRIu64
          " no longer stored, %" PRIu64 " skipped)\n",
          written, out, nev ? (double)(evs[nev - 1].at - evs[0].at) / 1000.0 : 0.0, purged,
          skipped);
  rc = 0;
out:
  if (slots && have)
    for (size_t i = 0; i < EXPORT_WINDOW; i++)
      if (have[i]) fq_msg_free(&slots[i]);
  if (slotraw)
    for (size_t i = 0; i < EXPORT_WINDOW; i++) fq_buf_free(&slotraw[i]);
  free(slotraw);
  free(slots);
  free(have);
  fq_traffic_writer_destroy(&w);
  fq_client_destroy(&c);
  free(evs);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  fq_buf_free(&body);
  return rc;
}

FQ_CLI_COMMAND("export", cmd_export, "write a traffic file from the daemon's history (for fleetq-replay)")
