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
#include <inttypes.h>
#include <jansson.h>
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

enum {
  E_FROM = 1000, E_TO, E_OUT, E_TENANT, E_LIMIT, E_ENDPOINT, E_TIMEOUT, E_HELP, E_VERSION,
  E_JSON, E_CURVE_KEY, E_SERVER_KEY
};

static const fq_opt_t g_opts[] = {
    FQ_OPT_HELP(E_HELP),
    FQ_OPT_VERSION(E_VERSION),
    {"from", 0, "TIME", E_FROM, "first acceptance time to export (required)"},
    {"to", 0, "TIME", E_TO, "last acceptance time to export (required)"},
    {"out", 0, "FILE", E_OUT, "the traffic file to write (required)"},
    {"tenant", 0, "T", E_TENANT, "only tenant T's commands"},
    {"limit", 0, "N", E_LIMIT, "at most N commands (default 10,000,000)"},
    FQ_CLI_OPT_ENDPOINT(E_ENDPOINT),
    FQ_CLI_OPT_TIMEOUT(E_TIMEOUT, "wait at most S seconds for each answer (default 10)"),
    {"json", 0, NULL, E_JSON, "print the summary as one JSON object on stdout"},
    FQ_CLI_OPT_CURVE(E_CURVE_KEY, E_SERVER_KEY),
    {NULL, 0, NULL, 0, NULL},
};

static const fq_cli_doc_t g_doc = {
    .usage = "fleetq export --from TIME --to TIME --out FILE [--tenant T]\n"
             "                     [--limit N] [--endpoint EP] [--timeout S] [--json]\n"
             "                     [--curve-key FILE --server-key Z85]",
    .about = "Write the commands a daemon accepted between --from and --to (inclusive)\n"
             "as a traffic file for fleetq-replay (proto/traffic-format.md): one submit\n"
             "per command with its original tenant, key, account, device, command,\n"
             "params, ttl_ms and coalesce, spaced as they arrived.\n"
             "TIME is unix milliseconds (1795920000000) or ISO-8601 UTC\n"
             "(2026-11-29T03:00:00Z, 2026-11-29T03:00:00.250+01:00, 2026-11-29).\n"
             "Commands purged since (not_found) are skipped and counted.  A summary\n"
             "line goes to stderr (with --json, a JSON object to stdout as well).\n",
    .notes = FQ_CLI_CURVE_NOTE,
    .exit = "0 the file was written, 1 the daemon refused or did not answer, or\n"
            "the file could not be written, 2 usage error.",
};

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
  bool json = false;
  const char *prog = "fleetq export";
  fq_opt_parser_t p;
  fq_opt_init(&p, prog, g_opts, argc, argv);
  int oc;
  while ((oc = fq_opt_next(&p)) != FQ_OPT_END) {
    char *end = NULL;
    const char *v = p.value;
    switch (oc) {
    case FQ_OPT_ERROR: return 2;
    case E_HELP: fq_cli_help(stdout, &g_doc, g_opts); return 0;
    case E_VERSION: return fq_opt_version(prog);
    case E_JSON: json = true; break;
    case E_CURVE_KEY: co.curve_key_file = v; break;
    case E_SERVER_KEY: co.server_key = v; break;
    case E_FROM: from_s = v; break;
    case E_TO: to_s = v; break;
    case E_OUT: out = v; break;
    case E_TENANT: tenant = v; break;
    case E_ENDPOINT: endpoint = v; break;
    case E_LIMIT:
      errno = 0;
      limit = strtoull(v, &end, 10);
      if (errno || !end || *end || *v == '-' || limit == 0 || limit > FQ_TRAFFIC_MAX_RECORDS)
        return fq_opt_usage_error(prog, "--limit wants 1..%llu",
                                  (unsigned long long)FQ_TRAFFIC_MAX_RECORDS);
      break;
    case E_TIMEOUT:
      timeout_s = strtod(v, &end);
      if (!end || *end || !(timeout_s > 0) || timeout_s > 3600)
        return fq_opt_usage_error(prog, "--timeout wants seconds > 0");
      break;
    default: return fq_opt_usage_error(prog, "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next < argc) return fq_opt_usage_error(prog, "unexpected argument '%s'", argv[p.next]);
  int64_t from = 0, to = 0;
  if (!from_s || !to_s || !out)
    return fq_opt_usage_error(prog, "--from, --to and --out are required");
  if (!fq_cli_parse_time(from_s, &from) || !fq_cli_parse_time(to_s, &to) || to < from)
    return fq_opt_usage_error(prog,
                              "--from / --to want unix ms or ISO-8601 times, from <= to "
                              "(got '%s', '%s')",
                              from_s, to_s);
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
  double span = nev ? (double)(evs[nev - 1].at - evs[0].at) / 1000.0 : 0.0;
  fprintf(stderr,
          "fleetq export: wrote %" PRIu64 " commands to %s, spanning %.3f s (%" PRIu64
          " no longer stored, %" PRIu64 " skipped)\n",
          written, out, span, purged, skipped);
  if (json) {
    json_t *j = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:b}", "out", out, "from_ms",
                          (json_int_t)from, "to_ms", (json_int_t)to, "written",
                          (json_int_t)written, "no_longer_stored", (json_int_t)purged, "skipped",
                          (json_int_t)skipped, "span_s", span, "truncated", truncated);
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (txt) printf("%s\n", txt);
    free(txt);
    json_decref(j);
  }
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
