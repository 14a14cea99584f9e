/*
 * `fleetq campaign start | get | abort | watch`: one command to many cars
 * (issue 16; the `campaign`, `campaign_get` and `campaign_abort` ops of
 * proto/wire-protocol.md).  start reads the device list from a CSV or JSON
 * file (campaign_devs.c), splits it into requests below fleetqd's 256 KiB
 * body limit ("part": i, "parts": n, same key) and sends them in order,
 * resending a part after a timeout or `busy` (the same key makes that
 * safe: the daemon answers dup).  watch follows the campaign's progress
 * events (topic "<tenant>/campaign/<id>"), catching up with campaign_get
 * at the start and whenever the stream is quiet, and ends with an exit
 * status that says how the campaign ended.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "campaign_devs.h"
#include "cli.h"
#include "fleetq/client.h"
#include "util.h"

enum {
  C_HELP = 1000, C_VERSION, C_ENDPOINT, C_PUBLISH, C_JSON, C_TIMEOUT, C_CURVE_KEY, C_SERVER_KEY,
  C_TENANT, C_KEY, C_ID, C_COMMAND, C_PARAMS, C_TTL, C_RATE, C_MFR, C_NOT_BEFORE, C_DEVICES,
  C_FORMAT, C_ACCOUNT, C_WATCH,
};

/* Exit statuses of watch (and start --watch), beside 0 for a campaign
 * done without failures. */
#define EXIT_FAILURES 1 /* done with failed devices; also: refused, no answer */
#define EXIT_ABORTED 2  /* aborted (by request or by max_failure_ratio) */
#define EXIT_SIGNAL 130 /* Ctrl-C before the end */

/* How long watch waits without an event before asking campaign_get. */
#define QUIET_MS 5000
/* How often start resends one part that timed out or got `busy`. */
#define PART_TRIES 6

#define E_HELP FQ_OPT_HELP(C_HELP)
#define E_VERSION FQ_OPT_VERSION(C_VERSION)
#define E_ENDPOINT FQ_CLI_OPT_ENDPOINT(C_ENDPOINT)
#define E_PUBLISH FQ_CLI_OPT_PUBLISH(C_PUBLISH)
#define E_CURVE FQ_CLI_OPT_CURVE(C_CURVE_KEY, C_SERVER_KEY)
#define E_JSON(what) {"json", 0, NULL, C_JSON, what}
#define E_END {NULL, 0, NULL, 0, NULL}
#define E_LOOKUP                                                               \
  {"id", 0, "ID", C_ID, "the campaign's id (from start), or ..."},             \
      {"tenant", 0, "T", C_TENANT, "... the tenant and ..."},                  \
      {"key", 0, "K", C_KEY, "... the key it was started with"}

static const fq_opt_t g_start_opts[] = {
    E_HELP,
    E_VERSION,
    {"tenant", 0, "T", C_TENANT, "the tenant (required)"},
    {"key", 0, "K", C_KEY,
     "the campaign's idempotency key, 1-100 bytes (required);\n"
     "device commands get the key K/<vin or site>"},
    {"command", 0, "C", C_COMMAND, "the command every device gets (required)"},
    {"params", 0, "JSON", C_PARAMS, "its parameters as a JSON object"},
    {"ttl-ms", 0, "N", C_TTL, "each device command's deadline in ms"},
    {"rate", 0, "R", C_RATE, "start at most R device commands per second\n(0 < R <= 100000)"},
    {"max-failure-ratio", 0, "X", C_MFR,
     "abort by itself once this share (0..1) of the\n"
     "finished devices failed (after at least 20)"},
    {"not-before", 0, "TIME", C_NOT_BEFORE,
     "start at TIME: unix ms, RFC 3339\n(2026-12-04T18:00:00Z) or +30s/+5m/+2h from now"},
    {"devices", 0, "FILE", C_DEVICES,
     "the device list (required): .csv or .json,\n'-' reads standard input"},
    {"format", 0, "csv|json", C_FORMAT, "the list's format (default: by the file name,\nelse by its first character)"},
    {"account", 0, "A", C_ACCOUNT, "the account of devices the list gives none"},
    {"watch", 0, NULL, C_WATCH, "then follow its progress as `campaign watch` does"},
    {"timeout", 0, "S", C_TIMEOUT,
     "wait at most S seconds for each part's answer\n(default 30); with --watch, also the end"},
    E_ENDPOINT,
    E_PUBLISH,
    E_JSON("print the daemon's last reply (with --watch each\nprogress event) as JSON"),
    E_CURVE,
    E_END,
};

static const fq_opt_t g_get_opts[] = {
    E_HELP,   E_VERSION, E_LOOKUP, E_ENDPOINT, E_JSON("print the daemon's reply as one JSON object"),
    FQ_CLI_OPT_TIMEOUT(C_TIMEOUT, "wait at most S seconds for the answer (default 5)"),
    E_CURVE,  E_END,
};

static const fq_opt_t g_watch_opts[] = {
    E_HELP,
    E_VERSION,
    E_LOOKUP,
    {"timeout", 0, "S", C_TIMEOUT, "give up after S seconds (exit 1); default: wait\nfor the end"},
    E_ENDPOINT,
    E_PUBLISH,
    E_JSON("print each progress event as one JSON object"),
    E_CURVE,
    E_END,
};

static const char g_watch_exit[] =
    "0 the campaign is done and no device failed, 1 it is done and some\n"
    "failed (also: the daemon refused or did not answer, --timeout passed),\n"
    "2 it was aborted (by request or by --max-failure-ratio; also: usage\n"
    "error), 130 interrupted.";

typedef struct action {
  const char *name;
  const fq_opt_t *opts;
  fq_cli_doc_t doc;
} action_t;

static const action_t g_actions[] = {
    {"start", g_start_opts,
     {.usage = "fleetq campaign start --tenant T --key K --command C --devices FILE\n"
               "                             [--params JSON] [--ttl-ms N] [--rate R]\n"
               "                             [--max-failure-ratio X] [--not-before TIME]\n"
               "                             [--format csv|json] [--account A] [--watch]\n"
               "                             [--timeout S] [--endpoint EP] [--json]",
      .about =
          "Start one command on many devices (up to 100,000).  FILE is CSV, a header\n"
          "line naming the columns vin or site, and account (optional with\n"
          "--account), then one device per line; or JSON, an array of\n"
          "{\"vin\" or \"site\", \"account\"} objects.  Bad rows are refused before\n"
          "anything is sent, naming the file and line (bad VIN, missing account,\n"
          "a device listed twice).  Lists too large for one request are sent in\n"
          "parts of at most 256 KiB, in order, with the same key; a part that\n"
          "times out or gets busy is sent again (the daemon answers dup).  Prints\n"
          "\"accepted <id> <n> devices <state>\" (\"duplicate ...\" when the daemon\n"
          "had every part already).\n",
      .notes = FQ_CLI_CURVE_NOTE,
      .exit = "0 accepted (with --watch: see campaign watch), 1 the daemon refused\n"
              "it or did not answer, 2 usage error or a bad device file."}},
    {"get", g_get_opts,
     {.usage = "fleetq campaign get (--id ID | --tenant T --key K) [--json]",
      .about = "Show a campaign: state (receiving, scheduled, running, done, aborted),\n"
               "devices, how many succeeded and failed, counts per command state,\n"
               "its times and, once aborted, why.\n",
      .notes = FQ_CLI_CURVE_NOTE,
      .exit = "0 found, 1 the daemon refused (not_found, ...) or did not answer,\n"
              "2 usage error."}},
    {"abort", g_get_opts,
     {.usage = "fleetq campaign abort (--id ID | --tenant T --key K) [--json]",
      .about = "Abort a campaign: its device commands still scheduled or queued are\n"
               "cancelled (ones already being sent finish).  Prints how many were\n"
               "cancelled.  Aborting an aborted campaign cancels nothing and succeeds.\n",
      .notes = FQ_CLI_CURVE_NOTE,
      .exit = "0 aborted, 1 the daemon refused (not_cancellable: the campaign is\n"
              "done; not_found, ...) or did not answer, 2 usage error."}},
    {"watch", g_watch_opts,
     {.usage = "fleetq campaign watch (--id ID | --tenant T --key K) [--timeout S]\n"
               "                             [--publish EP] [--endpoint EP] [--json]",
      .about = "Follow a campaign's progress: one line per progress event (at most one\n"
               "a second while counts change, and one per state change) with the\n"
               "counts, until the campaign is done or aborted.  It reads the campaign\n"
               "with campaign_get first, and again whenever no event came for 5\n"
               "seconds, so that nothing is missed.\n",
      .notes = FQ_CLI_CURVE_NOTE,
      .exit = g_watch_exit}},
};

#define NACTIONS (sizeof g_actions / sizeof g_actions[0])

typedef struct copts {
  char prog[64];
  const char *endpoint, *publish, *curve_key, *server_key;
  bool json, watch, timeout_set;
  double timeout_s;
  const char *tenant, *key, *id, *command, *params, *devices, *account;
  int format;
  int64_t ttl_ms, not_before;
  double rate, mfr;
  bool has_mfr;
} copts_t;

static bool parse_double(const char *s, double *v) {
  char *end = NULL;
  errno = 0;
  *v = strtod(s, &end);
  return !errno && end && end != s && !*end && *v == *v;
}

static int parse_opts(int argc, char **argv, const action_t *act, copts_t *o) {
  memset(o, 0, sizeof *o);
  snprintf(o->prog, sizeof o->prog, "fleetq campaign %s", act->name);
  const char *cmd = o->prog;
  o->endpoint = FQ_CLI_DEFAULT_ENDPOINT;
  o->publish = FQ_CLI_DEFAULT_PUBLISH;
  o->timeout_s = act->opts == g_start_opts ? 30.0 : 5.0;
  fq_opt_parser_t p;
  fq_opt_init(&p, cmd, act->opts, argc, argv);
  int c;
  while ((c = fq_opt_next(&p)) != FQ_OPT_END) {
    const char *v = p.value;
    double d = 0;
    switch (c) {
    case FQ_OPT_ERROR: return 2;
    case C_HELP: fq_cli_help(stdout, &act->doc, act->opts); return 0;
    case C_VERSION: return fq_opt_version(cmd);
    case C_ENDPOINT: o->endpoint = v; break;
    case C_PUBLISH: o->publish = v; break;
    case C_CURVE_KEY: o->curve_key = v; break;
    case C_SERVER_KEY: o->server_key = v; break;
    case C_JSON: o->json = true; break;
    case C_WATCH: o->watch = true; break;
    case C_TIMEOUT:
      if (!parse_double(v, &o->timeout_s) || !(o->timeout_s > 0) || o->timeout_s > 86400 * 7)
        return fq_opt_usage_error(cmd, "--timeout wants seconds > 0, got '%s'", v);
      o->timeout_set = true;
      break;
    case C_TENANT: o->tenant = v; break;
    case C_KEY:
      if (!*v || strlen(v) > FQ_CAMP_MAX_KEY)
        return fq_opt_usage_error(cmd,
                                  "--key wants 1..%d bytes (device commands get the key "
                                  "<key>/<vin or site>), got %zu",
                                  FQ_CAMP_MAX_KEY, strlen(v));
      o->key = v;
      break;
    case C_ID: o->id = v; break;
    case C_COMMAND: o->command = v; break;
    case C_PARAMS: o->params = v; break;
    case C_DEVICES: o->devices = v; break;
    case C_ACCOUNT: o->account = v; break;
    case C_FORMAT:
      if (strcmp(v, "csv") == 0) o->format = FQ_CAMP_FMT_CSV;
      else if (strcmp(v, "json") == 0) o->format = FQ_CAMP_FMT_JSON;
      else return fq_opt_usage_error(cmd, "--format wants csv or json, got '%s'", v);
      break;
    case C_TTL: {
      char *end = NULL;
      errno = 0;
      long long t = strtoll(v, &end, 10);
      if (errno || !end || *end || end == v || t <= 0)
        return fq_opt_usage_error(cmd, "--ttl-ms wants a positive integer, got '%s'", v);
      o->ttl_ms = t;
      break;
    }
    case C_RATE:
      if (!parse_double(v, &d) || !(d > 0) || d > 100000)
        return fq_opt_usage_error(cmd, "--rate wants commands per second, 0 < R <= 100000, got '%s'",
                                  v);
      o->rate = d;
      break;
    case C_MFR:
      if (!parse_double(v, &d) || d < 0 || d > 1)
        return fq_opt_usage_error(cmd, "--max-failure-ratio wants a number from 0 to 1, got '%s'",
                                  v);
      o->mfr = d;
      o->has_mfr = true;
      break;
    case C_NOT_BEFORE:
      if (!fq_cli_parse_when(v, fq_now_ms(), &o->not_before) || o->not_before <= 0)
        return fq_opt_usage_error(cmd,
                                  "--not-before wants unix ms, an RFC 3339 time "
                                  "(2026-12-04T18:00:00Z) or +N with a unit of ms/s/m/h/d "
                                  "(+30s, +5m, +2h), got '%s'",
                                  v);
      break;
    default: return fq_opt_usage_error(cmd, "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next < argc) return fq_opt_usage_error(cmd, "unexpected argument '%s'", argv[p.next]);
  fq_client_opts_t co = {.curve_key_file = o->curve_key, .server_key = o->server_key};
  int rc = fq_cli_conn_resolve(cmd + strlen("fleetq "), &co);
  if (rc >= 0) return rc;
  o->curve_key = co.curve_key_file;
  o->server_key = co.server_key;
  return -1;
}

/* ------------------------------------------------------------------ */
/* Requests and replies                                                 */

static int buf_write(void *data, const char *b, size_t len) {
  return fq_buf_append(data, b, len) ? -1 : 0;
}

static void pstr(msgpack_packer *pk, const char *s) { msgpack_pack_str_with_body(pk, s, strlen(s)); }

/* campaign_get / campaign_abort by id (tenant optional) or tenant + key. */
static int build_lookup(fq_buf_t *out, const char *op, const char *id, const char *tenant,
                        const char *key) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, buf_write);
  int rc = msgpack_pack_map(&pk, 1 + (id ? 1 : 0) + (tenant ? 1 : 0) + (key ? 1 : 0));
  pstr(&pk, "op");
  pstr(&pk, op);
  if (id) {
    pstr(&pk, "id");
    pstr(&pk, id);
  }
  if (tenant) {
    pstr(&pk, "tenant");
    pstr(&pk, tenant);
  }
  if (key) {
    pstr(&pk, "key");
    pstr(&pk, key);
  }
  return rc;
}

static fq_client_t *open_client(const copts_t *o, double timeout_s) {
  fq_err_t e;
  fq_client_opts_t co = {.endpoint = o->endpoint, .timeout_ms = (int)(timeout_s * 1000),
                         .curve_key_file = o->curve_key, .server_key = o->server_key};
  fq_client_t *c = fq_client_new_opts(&co, &e);
  if (!c) fprintf(stderr, "%s: %s: %s\n", o->prog, fq_errname(e.code), e.msg);
  return c;
}

static int sfield(const msgpack_object *map, const char *key, const char **p) {
  size_t n = 0;
  if (!fq_mp_str(fq_mp_get(map, key), p, &n)) {
    *p = "-";
    return 1;
  }
  return (int)n;
}

static void print_json(const uint8_t *p, size_t n) {
  fq_buf_t js;
  fq_buf_init(&js, 4 * FQ_CLIENT_MAX_REPLY);
  if (fq_msgpack_to_json(p, n, &js, 0) == 0) printf("%.*s\n", (int)js.len, (const char *)js.data);
  fq_buf_free(&js);
  fflush(stdout);
}

static void print_obj_json(const msgpack_object *o) {
  fq_buf_t mp;
  msgpack_packer pk;
  fq_buf_init(&mp, FQ_CLIENT_MAX_REPLY);
  msgpack_packer_init(&pk, &mp, buf_write);
  if (msgpack_pack_object(&pk, *o) == 0) print_json(mp.data, mp.len);
  fq_buf_free(&mp);
}

static void print_error_reply(const char *prog, const char *what, const msgpack_object *r) {
  const char *code, *msg, *state;
  int cn = sfield(r, "error", &code), mn = sfield(r, "message", &msg);
  int sn = sfield(r, "state", &state);
  fprintf(stderr, "%s: %s%.*s: %.*s", prog, what ? what : "", cn, code, mn, msg);
  if (strcmp(state, "-") != 0) fprintf(stderr, " (state: %.*s)", sn, state);
  fputc('\n', stderr);
}

/* Outcome of one request: 0 ok (m live), 1 refused or failed (reported),
 * -ETIMEDOUT / -EBUSY when worth sending again (not reported yet, the
 * message in why). */
static int request(fq_client_t *c, const copts_t *o, const char *what, const fq_buf_t *req,
                   fq_buf_t *raw, fq_msg_t *m, char *why, size_t whycap) {
  fq_err_t e;
  bool ok = false;
  memset(m, 0, sizeof *m);
  int rc = fq_client_request(c, req->data, req->len, raw, &e);
  if (rc == -ETIMEDOUT) {
    snprintf(why, whycap, "timeout: %s", e.msg);
    return -ETIMEDOUT;
  }
  if (rc) {
    fprintf(stderr, "%s: %s%s: %s\n", o->prog, what ? what : "", fq_errname(rc), e.msg);
    return 1;
  }
  if (fq_msg_decode(m, raw->data, raw->len, &e)) {
    fprintf(stderr, "%s: %sbad_reply: %s\n", o->prog, what ? what : "", e.msg);
    return 1;
  }
  if (fq_mp_bool(fq_mp_get(m->root, "ok"), &ok) && ok) return 0;
  if (fq_mp_str_eq(fq_mp_get(m->root, "error"), "busy")) {
    const char *msg;
    int mn = sfield(m->root, "message", &msg);
    snprintf(why, whycap, "busy: %.*s", mn, msg);
    fq_msg_free(m);
    return -EBUSY;
  }
  if (o->json) print_json(raw->data, raw->len);
  print_error_reply(o->prog, what, m->root);
  fq_msg_free(m);
  return 1;
}

/* ------------------------------------------------------------------ */
/* Printing a campaign                                                  */

static int64_t ifield(const msgpack_object *m, const char *k) {
  int64_t v = 0;
  fq_mp_int(fq_mp_get(m, k), &v);
  return v;
}

/* "queued 10, sent 2, ..." of a counts map; *finished gets the devices in
 * a terminal state. */
static void counts_text(const msgpack_object *counts, char *out, size_t cap, int64_t *finished) {
  size_t k = 0;
  *finished = 0;
  out[0] = 0;
  if (!counts || counts->type != MSGPACK_OBJECT_MAP) return;
  for (uint32_t i = 0; i < counts->via.map.size; i++) {
    const msgpack_object *key = &counts->via.map.ptr[i].key;
    int64_t n = 0;
    if (key->type != MSGPACK_OBJECT_STR || !fq_mp_int(&counts->via.map.ptr[i].val, &n)) continue;
    if (fq_cli_is_terminal(key->via.str.ptr, key->via.str.size)) *finished += n;
    int w = snprintf(out + k, cap - k, "%s%.*s %" PRId64, k ? ", " : "", (int)key->via.str.size,
                     key->via.str.ptr, n);
    if (w < 0 || (size_t)w >= cap - k) break;
    k += (size_t)w;
  }
}

static bool state_is(const msgpack_object *m, const char *s) {
  return fq_mp_str_eq(fq_mp_get(m, "state"), s);
}

static bool is_final(const msgpack_object *m) {
  bool fin = false;
  if (fq_mp_bool(fq_mp_get(m, "final"), &fin) && fin) return true;
  return state_is(m, "done") || state_is(m, "aborted");
}

static int exit_of(const msgpack_object *m) {
  if (state_is(m, "aborted")) return EXIT_ABORTED;
  return ifield(m, "failed") > 0 ? EXIT_FAILURES : 0;
}

/* One progress line, from an event or a campaign_get reply. */
static void print_progress(const msgpack_object *m, bool json) {
  if (json) {
    print_obj_json(m);
    return;
  }
  char when[40], counts[1024];
  int64_t at = ifield(m, "at"), finished = 0;
  fq_cli_fmt_time(at ? at : fq_now_ms(), when, sizeof when);
  const char *id, *state, *reason;
  int in = sfield(m, "id", &id), sn = sfield(m, "state", &state), rn = sfield(m, "reason", &reason);
  counts_text(fq_mp_get(m, "counts"), counts, sizeof counts, &finished);
  int64_t devs = ifield(m, "devices");
  printf("%s %.*s %.*s: %" PRId64 "/%" PRId64 " finished (%d%%), succeeded %" PRId64
         ", failed %" PRId64,
         when, in, id, sn, state, finished, devs, devs ? (int)(finished * 100 / devs) : 0,
         ifield(m, "succeeded"), ifield(m, "failed"));
  if (counts[0]) printf(" [%s]", counts);
  if (ifield(m, "rejected") > 0) printf(" rejected %" PRId64, ifield(m, "rejected"));
  if (rn > 0 && strcmp(reason, "-")) printf(": %.*s", rn, reason);
  putchar('\n');
  fflush(stdout);
}

/* A summary of a campaign's progress, to tell a campaign_get that brings
 * nothing new from one that does. */
static void progress_sig(const msgpack_object *m, char *out, size_t cap) {
  char counts[1024];
  int64_t fin;
  const char *state;
  int sn = sfield(m, "state", &state);
  counts_text(fq_mp_get(m, "counts"), counts, sizeof counts, &fin);
  /* Not parts_received: events do not carry it (a get would always look
   * new beside them), and counts move whenever parts come in. */
  snprintf(out, cap, "%.*s|%s", sn, state, counts);
}

static bool is_time_key(const char *k, size_t n) {
  return (n > 3 && memcmp(k + n - 3, "_at", 3) == 0) || (n == 10 && !memcmp(k, "not_before", 10));
}

/* campaign get: the known fields in a fixed order, then whatever else the
 * daemon sent (a newer daemon's fields are shown rather than dropped). */
static void print_campaign(const msgpack_object *r) {
  static const char *const order[] = {
      "id",         "tenant",   "key",    "command",  "state",      "devices",
      "succeeded",  "failed",   "rejected", "counts", "parts", "created_at", "not_before",
      "started_at", "finished_at", "rate", "max_failure_ratio", "reason", NULL};
  static const char *const skip[] = {"ok", "req", "parts_received", NULL};
  for (const char *const *k = order; *k; k++) {
    const msgpack_object *v = fq_mp_get(r, *k);
    if (strcmp(*k, "counts") == 0) {
      char counts[1024];
      int64_t fin;
      counts_text(v, counts, sizeof counts, &fin);
      printf("%-18s %s\n", "counts", counts[0] ? counts : "-");
      continue;
    }
    if (strcmp(*k, "parts") == 0) {
      if (v) printf("%-18s %" PRId64 " of %" PRId64 " received\n", "parts",
                    ifield(r, "parts_received"), ifield(r, "parts"));
      continue;
    }
    if (!v) continue;
    printf("%-18s ", *k);
    if (strcmp(*k, "reason") == 0 && v->type == MSGPACK_OBJECT_STR && v->via.str.size == 0)
      printf("-");
    else
      fq_cli_print_value(v, is_time_key(*k, strlen(*k)));
    putchar('\n');
  }
  for (uint32_t i = 0; r->type == MSGPACK_OBJECT_MAP && i < r->via.map.size; i++) {
    const msgpack_object *k = &r->via.map.ptr[i].key;
    if (k->type != MSGPACK_OBJECT_STR) continue;
    bool known = false;
    for (const char *const *p = order; *p && !known; p++)
      known = strlen(*p) == k->via.str.size && !memcmp(*p, k->via.str.ptr, k->via.str.size);
    for (const char *const *p = skip; *p && !known; p++)
      known = strlen(*p) == k->via.str.size && !memcmp(*p, k->via.str.ptr, k->via.str.size);
    if (known) continue;
    printf("%-18.*s ", (int)k->via.str.size, k->via.str.ptr);
    fq_cli_print_value(&r->via.map.ptr[i].val, is_time_key(k->via.str.ptr, k->via.str.size));
    putchar('\n');
  }
}

/* ------------------------------------------------------------------ */
/* watch                                                                */

static double elapsed_s(const struct timespec *t0) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* One campaign_get by id: 0 with m live, 1 refused (reported), or
 * -ETIMEDOUT / -EBUSY (the reason in why). */
static int get_by_id(fq_client_t *c, const copts_t *o, const char *id, const char *tenant,
                     fq_buf_t *req, fq_buf_t *raw, fq_msg_t *m, char *why, size_t whycap) {
  fq_buf_reset(req);
  if (build_lookup(req, "campaign_get", id, tenant, NULL)) return 1;
  copts_t quiet = *o;
  quiet.json = false;
  return request(c, &quiet, NULL, req, raw, m, why, whycap);
}

/* Print m (a campaign_get reply or a progress event) when it says
 * something the last one printed did not (last, updated), or when it is
 * the campaign's end; m is freed.  -1 while the campaign goes on, else the
 * exit status watch ends with. */
static int show_progress(fq_msg_t *m, bool json, char *last, size_t lastcap) {
  char sig[1200];
  progress_sig(m->root, sig, sizeof sig);
  bool fin = is_final(m->root);
  if (strcmp(sig, last) != 0 || fin) {
    print_progress(m->root, json);
    snprintf(last, lastcap, "%s", sig);
  }
  int rc = fin ? exit_of(m->root) : -1;
  fq_msg_free(m);
  return rc;
}

/* Follow campaign id of tenant until it ends.  sub is subscribed already
 * (before the campaign was started, for start --watch). */
static int watch_loop(const copts_t *o, fq_client_t *c, fq_sub_t *sub, const char *tenant,
                      const char *id) {
  fq_buf_t topic, body, req, raw;
  fq_buf_init(&topic, 4096);
  fq_buf_init(&body, FQ_CLIENT_MAX_REPLY);
  fq_buf_init(&req, 4096);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  char last[1200] = "";
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  double last_heard = 0;
  bool need_get = true, warned = false;
  int rc = EXIT_FAILURES;
  for (;;) {
    if (fq_cli_stop) {
      rc = EXIT_SIGNAL;
      break;
    }
    double el = elapsed_s(&t0);
    if (o->timeout_set && el >= o->timeout_s) {
      fprintf(stderr, "%s: timeout: campaign %s not finished after %.1f s\n", o->prog, id,
              o->timeout_s);
      rc = EXIT_FAILURES;
      break;
    }
    if (need_get || el - last_heard >= QUIET_MS / 1000.0) {
      /* Catch up: at the start, and when the stream has been quiet (a
       * dropped event, a restart of fleetqd, or nothing changing). */
      fq_msg_t m;
      char why[300];
      need_get = false;
      last_heard = el;
      int gr = get_by_id(c, o, id, tenant, &req, &raw, &m, why, sizeof why);
      if (gr == 1) {
        rc = EXIT_FAILURES;
        break;
      }
      if (gr < 0) {
        /* fleetqd restarting or overloaded: the campaign goes on without
         * us; keep listening and ask again after the next quiet spell. */
        if (!warned) fprintf(stderr, "%s: %s; still watching\n", o->prog, why);
        warned = true;
        continue;
      }
      warned = false;
      int end = show_progress(&m, o->json, last, sizeof last);
      if (end >= 0) {
        rc = end;
        break;
      }
    }
    int wait_ms = 500;
    if (o->timeout_set) {
      double left = o->timeout_s - elapsed_s(&t0);
      if (left * 1000 < wait_ms) wait_ms = left > 0 ? (int)(left * 1000) + 1 : 1;
    }
    fq_err_t e;
    int r = sub ? fq_sub_recv(sub, &topic, &body, wait_ms, &e) : -ETIMEDOUT;
    if (r == -EINTR) continue;
    if (r == -ETIMEDOUT) {
      if (!sub) {
        struct timespec ts = {0, 500 * 1000 * 1000};
        nanosleep(&ts, NULL);
      }
      continue;
    }
    if (r) continue;
    fq_msg_t m;
    if (fq_msg_decode(&m, body.data, body.len, &e)) {
      fprintf(stderr, "%s: dropped a malformed event: %s\n", o->prog, e.msg);
      continue;
    }
    /* The topic is a prefix match: "c-1" also selects "c-12". */
    if (!fq_mp_str_eq(fq_mp_get(m.root, "id"), id)) {
      fq_msg_free(&m);
      continue;
    }
    last_heard = elapsed_s(&t0);
    int end = show_progress(&m, o->json, last, sizeof last);
    if (end >= 0) {
      rc = end;
      break;
    }
  }
  fq_buf_free(&topic);
  fq_buf_free(&body);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

/* Subscribe to "<tenant>/campaign/<id>" (id NULL: every campaign of the
 * tenant, for start --watch, which subscribes before it has the id). */
static fq_sub_t *open_sub(const copts_t *o, const char *tenant, const char *id) {
  char prefix[512];
  snprintf(prefix, sizeof prefix, "%s/campaign/%s", tenant, id ? id : "");
  const char *pf[] = {prefix};
  fq_err_t e;
  fq_client_opts_t co = {.endpoint = o->publish, .curve_key_file = o->curve_key,
                         .server_key = o->server_key};
  fq_sub_t *s = fq_sub_new_opts(&co, pf, 1, &e);
  if (!s) {
    fprintf(stderr, "%s: %s: %s\n", o->prog, fq_errname(e.code), e.msg);
    return NULL;
  }
  int wr = fq_sub_wait_connected(s, 2000, &e);
  if (wr == FQ_EAUTH) {
    fprintf(stderr, "%s: %s: %s\n", o->prog, fq_errname(wr), e.msg);
    fq_sub_destroy(&s);
    return NULL;
  }
  if (wr)
    fprintf(stderr, "%s: warning: status publisher %s not reached (%s); polling instead\n",
            o->prog, o->publish, e.msg);
  return s;
}

static int lookup_args_ok(const copts_t *o) {
  if (o->id && o->key) return fq_opt_usage_error(o->prog, "give either --id or --tenant and --key");
  if (!o->id && (!o->tenant || !o->key))
    return fq_opt_usage_error(o->prog, "give --id ID, or --tenant T and --key K");
  return -1;
}

static int do_watch(const copts_t *o) {
  fq_buf_t req, raw;
  fq_msg_t m;
  fq_buf_init(&req, 4096);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  fq_sub_t *sub = NULL;
  int rc = EXIT_FAILURES;
  char id[128], tenant[128];
  fq_cli_catch_stop();
  fq_client_t *c = open_client(o, o->timeout_set && o->timeout_s < 5 ? o->timeout_s : 5.0);
  if (!c) goto out;
  /* The id and tenant name the topic: from a campaign_get first. */
  char why[300];
  if (build_lookup(&req, "campaign_get", o->id, o->tenant, o->key)) goto out;
  copts_t quiet = *o;
  quiet.json = false;
  int r = request(c, &quiet, NULL, &req, &raw, &m, why, sizeof why);
  if (r < 0) fprintf(stderr, "%s: %s\n", o->prog, why);
  if (r) goto out;
  const char *p;
  int n = sfield(m.root, "id", &p);
  snprintf(id, sizeof id, "%.*s", n, p);
  n = sfield(m.root, "tenant", &p);
  snprintf(tenant, sizeof tenant, "%.*s", n, p);
  if (strcmp(tenant, "-") == 0 && o->tenant) snprintf(tenant, sizeof tenant, "%s", o->tenant);
  fq_msg_free(&m);
  sub = open_sub(o, tenant, id);
  if (!sub && fq_cli_stop) goto out;
  rc = watch_loop(o, c, sub, tenant, id);
out:
  fq_sub_destroy(&sub);
  fq_client_destroy(&c);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

/* ------------------------------------------------------------------ */
/* start                                                                */

/* Read a whole file ("-": stdin), at most 64 MiB. */
static int read_all(const copts_t *o, const char *path, fq_buf_t *out) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: cannot open %s: %s\n", o->prog, path, fq_strerror(-errno));
    return 2;
  }
  char chunk[65536];
  size_t n;
  int rc = 0;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (fq_buf_append(out, chunk, n)) {
      fprintf(stderr, "%s: %s is larger than %zu bytes\n", o->prog, path, out->cap);
      rc = 2;
      break;
    }
  if (!rc && ferror(f)) {
    fprintf(stderr, "%s: cannot read %s: %s\n", o->prog, path, fq_strerror(-errno));
    rc = 2;
  }
  if (f != stdin) fclose(f);
  return rc;
}

static int do_start(const copts_t *o) {
  if (!o->tenant || !o->key || !o->command || !o->devices)
    return fq_opt_usage_error(o->prog, "--tenant, --key, --command and --devices are required");
  fq_buf_t text, pstore, params, req, raw;
  fq_camp_devs_t devs = {0};
  size_t *starts = NULL, nparts = 0;
  fq_client_t *c = NULL;
  fq_sub_t *sub = NULL;
  fq_err_t e;
  fq_err_clear(&e);
  fq_buf_init(&text, 64u * 1024 * 1024);
  fq_buf_init(&pstore, 64 * 1024);
  fq_buf_init(&params, 64 * 1024);
  fq_buf_init(&req, FQ_CAMP_BODY_LIMIT);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  int rc = 2;
  fq_camp_req_t cr = {.tenant = o->tenant, .key = o->key, .command = o->command,
                      .ttl_ms = o->ttl_ms, .rate = o->rate,
                      .has_max_failure_ratio = o->has_mfr, .max_failure_ratio = o->mfr,
                      .not_before = o->not_before};
  if (o->params) {
    fq_pval_t pv[FQ_MAX_PARAMS];
    size_t np = 0;
    if (fq_params_from_json(o->params, &pstore, pv, FQ_MAX_PARAMS, &np, &e)) {
      fq_opt_usage_error(o->prog, "--params: %s", e.msg);
      goto out;
    }
    if (np) {
      if (fq_camp_pack_params(&params, pv, np)) {
        fq_opt_usage_error(o->prog, "--params: too large");
        goto out;
      }
      cr.params = params.data;
      cr.params_len = params.len;
    }
  }
  if ((rc = read_all(o, o->devices, &text))) goto out;
  int fmt = o->format ? o->format : fq_camp_format_of(o->devices);
  const char *name = strcmp(o->devices, "-") == 0 ? "<stdin>" : o->devices;
  rc = 2;
  if (fq_camp_parse((const char *)text.data, text.len, fmt, o->account, name, &devs, &e)) {
    fprintf(stderr, "%s: %s\n", o->prog, e.msg);
    goto out;
  }
  fq_buf_free(&text);
  if (fq_camp_split(&cr, &devs, FQ_CAMP_BODY_LIMIT, &starts, &nparts, &e)) {
    fprintf(stderr, "%s: %s: %s\n", o->prog, name, e.msg);
    goto out;
  }
  rc = 1;
  if (o->watch) {
    /* Subscribed before the first part goes, so that no event of the
     * campaign's start is missed; filtered by id once it is known. */
    fq_cli_catch_stop();
    sub = open_sub(o, o->tenant, NULL);
  }
  c = open_client(o, o->timeout_s);
  if (!c) goto out;
  fq_msg_t m;
  bool all_dup = true, have = false;
  char what[64];
  for (size_t i = 0; i < nparts; i++) {
    if (have) fq_msg_free(&m);
    have = false;
    fq_buf_reset(&req);
    if (fq_camp_build(&req, &cr, &devs, starts[i], starts[i + 1], i + 1, nparts, false, 0)) {
      fprintf(stderr, "%s: part %zu of %zu does not fit in %d bytes\n", o->prog, i + 1, nparts,
              FQ_CAMP_BODY_LIMIT);
      goto out;
    }
    if (nparts > 1) snprintf(what, sizeof what, "part %zu of %zu: ", i + 1, nparts);
    else what[0] = 0;
    int r = 0;
    char why[300];
    for (int tries = 1;; tries++) {
      r = request(c, o, what, &req, &raw, &m, why, sizeof why);
      if (r >= 0 || fq_cli_stop) break;
      if (tries == PART_TRIES) {
        fprintf(stderr, "%s: %s%s (sent %d times; sending the same file again resumes)\n",
                o->prog, what, why, tries);
        break;
      }
      /* The same part again: the daemon has it (dup) or takes it now. */
      fprintf(stderr, "%s: %s%s; sending it again\n", o->prog, what, why);
      struct timespec ts = {0, (long)(100 * 1000 * 1000) << (tries < 4 ? tries : 4)};
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec = ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
      }
      nanosleep(&ts, NULL);
    }
    if (r) goto out;
    have = true;
    bool dup = false;
    fq_mp_bool(fq_mp_get(m.root, "dup"), &dup);
    all_dup = all_dup && dup;
  }
  const char *id, *state;
  int in = sfield(m.root, "id", &id), sn = sfield(m.root, "state", &state);
  int64_t ndev = ifield(m.root, "devices");
  if (o->json) print_json(raw.data, raw.len);
  else
  {
    printf("%s %.*s %" PRId64 " devices %.*s", all_dup ? "duplicate" : "accepted", in, id, ndev,
           sn, state);
    if (nparts > 1) printf(" (%zu parts)", nparts);
    putchar('\n');
  }
  int64_t rejected = ifield(m.root, "rejected");
  if (rejected > 0)
    fprintf(stderr,
            "%s: warning: %" PRId64 " device command(s) refused for good at the fan-out (a key "
            "<key>/<device> used before for another request); see campaign get\n",
            o->prog, rejected);
  fflush(stdout);
  rc = 0;
  if (o->watch) {
    char idz[128];
    snprintf(idz, sizeof idz, "%.*s", in, id);
    fq_msg_free(&m);
    have = false;
    rc = watch_loop(o, c, sub, o->tenant, idz);
  }
  if (have) fq_msg_free(&m);
out:
  fq_sub_destroy(&sub);
  fq_client_destroy(&c);
  fq_camp_devs_free(&devs);
  free(starts);
  fq_buf_free(&text);
  fq_buf_free(&pstore);
  fq_buf_free(&params);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

/* ------------------------------------------------------------------ */
/* get, abort                                                           */

static int do_lookup(const copts_t *o, bool abort_it) {
  fq_buf_t req, raw;
  fq_msg_t m;
  fq_buf_init(&req, 4096);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  int rc = 1;
  char why[300];
  fq_client_t *c = open_client(o, o->timeout_s);
  if (!c) goto out;
  if (build_lookup(&req, abort_it ? "campaign_abort" : "campaign_get", o->id, o->tenant, o->key))
    goto out;
  /* abort is not sent again after a timeout: after a lost answer a
   * second abort would report 0 cancelled, hiding what the first did.  It
   * is after `busy` (the campaign's device commands are still being
   * stored), which did nothing. */
  for (int t = 1;; t++) {
    int r = request(c, o, NULL, &req, &raw, &m, why, sizeof why);
    if (r == 0) break;
    if (r == 1) goto out;
    if (t >= 20 || (abort_it && r == -ETIMEDOUT) || (!abort_it && t >= 3) || fq_cli_stop) {
      fprintf(stderr, "%s: %s\n", o->prog, why);
      goto out;
    }
    if (r == -EBUSY) {
      struct timespec ts = {0, 250 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  if (o->json) {
    print_json(raw.data, raw.len);
  } else if (abort_it) {
    const char *id, *state;
    int in = sfield(m.root, "id", &id), sn = sfield(m.root, "state", &state);
    const char *reason;
    int rn = sfield(m.root, "reason", &reason);
    printf("%.*s %.*s: cancelled %" PRId64 " device command(s)", sn, state, in, id,
           ifield(m.root, "cancelled"));
    if (rn > 0 && strcmp(reason, "-")) printf(" (%.*s)", rn, reason);
    putchar('\n');
  } else {
    print_campaign(m.root);
  }
  fq_msg_free(&m);
  rc = 0;
out:
  fq_client_destroy(&c);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

/* ------------------------------------------------------------------ */
/* The group                                                            */

static void overview(FILE *f) {
  fq_cli_doc_t d = {
      .usage = "fleetq campaign start --tenant T --key K --command C --devices FILE [...]\n"
               "       fleetq campaign get (--id ID | --tenant T --key K) [--json]\n"
               "       fleetq campaign abort (--id ID | --tenant T --key K) [--json]\n"
               "       fleetq campaign watch (--id ID | --tenant T --key K) [--json]\n"
               "'fleetq campaign <action> --help' describes one action.",
      .about = "One command to many devices: start it from a CSV or JSON device list,\n"
               "read its state and counts, abort it, or follow its progress.  Each\n"
               "device gets an ordinary command with the key <campaign key>/<vin or\n"
               "site>, so send's get and cancel work on them too.  The options of\n"
               "start follow.\n",
      .notes = FQ_CLI_CURVE_NOTE,
      .exit = "(watch, start --watch) 0 done without failures, 1 done with failures,\n"
              "2 aborted; otherwise 0 ok, 1 refused or no answer, 2 usage error."};
  fq_cli_help(f, &d, g_start_opts);
}

static int cmd_campaign(int argc, char **argv) {
  if (argc < 2) {
    overview(stderr);
    return 2;
  }
  const char *action = argv[1];
  if (strcmp(action, "--help") == 0 || strcmp(action, "-h") == 0) {
    overview(stdout);
    return 0;
  }
  if (strcmp(action, "--version") == 0) return fq_opt_version("fleetq campaign");
  const action_t *act = NULL;
  for (size_t i = 0; i < NACTIONS; i++)
    if (strcmp(g_actions[i].name, action) == 0) act = &g_actions[i];
  if (!act) {
    if (action[0] == '-')
      return fq_opt_usage_error("fleetq campaign",
                                "expected an action (start, get, abort, watch) before '%s'",
                                action);
    return fq_opt_usage_error("fleetq campaign", "unknown action '%s' (start, get, abort, watch)",
                              action);
  }
  copts_t o;
  int rc = parse_opts(argc - 1, argv + 1, act, &o);
  if (rc >= 0) return rc;
  if (act->opts == g_start_opts) return do_start(&o);
  if ((rc = lookup_args_ok(&o)) >= 0) return rc;
  if (strcmp(act->name, "watch") == 0) return do_watch(&o);
  return do_lookup(&o, strcmp(act->name, "abort") == 0);
}

FQ_CLI_COMMAND("campaign", cmd_campaign, "start, get, abort or watch a campaign over many devices")
