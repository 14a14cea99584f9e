/*
 * The queue subcommands of the fleetq CLI: send, get, cancel, watch,
 * history and ping.  Each builds one wire-protocol request with the client
 * library, prints the reply readably (or as one JSON object per line with
 * --json, for scripts) and maps the outcome to the exit status: 0 success,
 * 1 the daemon refused or did not answer, 2 usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "fleetq/client.h"
#include "fleetq/commands.h"
#include "util.h"

#define REQ_TIMEOUT_S 5.0

/* Every option any queue subcommand takes.  Each subcommand has its own
 * table of the ones it accepts (below, beside its code), which parses its
 * options and prints its --help; anything else is refused, so a typo
 * never silently does nothing. */
enum {
  O_ENDPOINT = 1000, O_PUBLISH, O_JSON, O_TIMEOUT, O_TENANT, O_KEY, O_ACCOUNT, O_VIN, O_SITE,
  O_COMMAND, O_PARAM, O_PARAMS, O_TTL, O_COALESCE, O_WAIT, O_ID, O_DEVICE, O_COUNT, O_FILL,
  O_SHARD, O_AFTER, O_LIMIT, O_HELP, O_VERSION, O_NO_WAKE, O_CURVE_KEY, O_SERVER_KEY,
  O_NOT_BEFORE,
};

/* Table entries several subcommands share. */
#define E_HELP FQ_OPT_HELP(O_HELP)
#define E_VERSION FQ_OPT_VERSION(O_VERSION)
#define E_ENDPOINT FQ_CLI_OPT_ENDPOINT(O_ENDPOINT)
#define E_PUBLISH FQ_CLI_OPT_PUBLISH(O_PUBLISH)
#define E_CURVE FQ_CLI_OPT_CURVE(O_CURVE_KEY, O_SERVER_KEY)
#define E_TIMEOUT FQ_CLI_OPT_TIMEOUT(O_TIMEOUT, "wait at most S seconds for the answer (default 5)")
#define E_END {NULL, 0, NULL, 0, NULL}

typedef struct qopts {
  char prog[64];                      /* "fleetq send": the prefix of messages */
  const char *endpoint, *publish;
  const char *curve_key, *server_key; /* both or neither, after parse_opts */
  bool json;
  double timeout_s;
  bool timeout_set;
  const char *tenant, *key, *account, *vin, *command, *id, *device;
  uint64_t site;
  fq_pval_t params[FQ_MAX_PARAMS];
  size_t nparams;
  const char *params_json;
  int64_t ttl_ms;
  int64_t not_before;                 /* unix ms; 0: not sent */
  bool coalesce, wait, fill, no_wake;
  uint64_t shard, after, limit, count;
  bool shard_set;
} qopts_t;

static bool parse_u64(const char *s, uint64_t *v) {
  char *end = NULL;
  if (!s || !*s || *s == '-' || *s == '+') return false;
  errno = 0;
  unsigned long long x = strtoull(s, &end, 10);
  if (errno || !end || *end) return false;
  *v = x;
  return true;
}

/* Parse argv for subcommand argv[0] with its option table; --help prints
 * doc around the table.  Returns -1 when the options were fine, 0 after
 * --help or --version, 2 on a usage error (printed). */
/* --param types a value as the shell user means it ("80" a number,
 * "true" a bool), but a parameter the command table wants as a string
 * keeps the text as typed: a PIN such as 0042 or 1234 is no number. */
static void keep_text_params(qopts_t *o) {
  if (!o->command) return;
  const fq_cmd_t *c = fq_cmd_find(o->command, strlen(o->command),
                                  o->site ? FQ_DEV_SITE : FQ_DEV_VEHICLE, NULL);
  for (size_t i = 0; c && i < o->nparams; i++) {
    fq_pval_t *pv = &o->params[i];
    if (pv->type == FQ_PT_STR || pv->type == FQ_PT_MAP) continue;
    for (size_t k = 0; k < c->nparams; k++) {
      const fq_param_spec_t *sp = &c->params[k];
      if (sp->type != FQ_PT_STR || strlen(sp->name) != pv->name_len ||
          memcmp(sp->name, pv->name, pv->name_len) != 0)
        continue;
      /* fq_param_parse() points name at "name=value". */
      const char *text = pv->name + pv->name_len + 1;
      pv->type = FQ_PT_STR;
      pv->v.s.p = text;
      pv->v.s.n = strlen(text);
    }
  }
}

static int parse_opts(int argc, char **argv, const fq_opt_t *opts, const fq_cli_doc_t *doc,
                      qopts_t *o) {
  memset(o, 0, sizeof *o);
  snprintf(o->prog, sizeof o->prog, "fleetq %s", argv[0]);
  const char *cmd = o->prog;
  o->endpoint = FQ_CLI_DEFAULT_ENDPOINT;
  o->publish = FQ_CLI_DEFAULT_PUBLISH;
  o->timeout_s = REQ_TIMEOUT_S;
  o->limit = 100;
  fq_opt_parser_t p;
  fq_opt_init(&p, cmd, opts, argc, argv);
  int c;
  while ((c = fq_opt_next(&p)) != FQ_OPT_END) {
    const char *v = p.value;
    uint64_t u = 0;
    switch (c) {
    case FQ_OPT_ERROR: return 2;
    case O_HELP: fq_cli_help(stdout, doc, opts); return 0;
    case O_VERSION: return fq_opt_version(cmd);
    case O_ENDPOINT: o->endpoint = v; break;
    case O_PUBLISH: o->publish = v; break;
    case O_CURVE_KEY: o->curve_key = v; break;
    case O_SERVER_KEY: o->server_key = v; break;
    case O_JSON: o->json = true; break;
    case O_TIMEOUT: {
      char *end = NULL;
      o->timeout_s = strtod(v, &end);
      if (!end || *end || !(o->timeout_s > 0) || o->timeout_s > 86400 * 7)
        return fq_opt_usage_error(cmd, "--timeout wants seconds > 0, got '%s'", v);
      o->timeout_set = true;
      break;
    }
    case O_TENANT: o->tenant = v; break;
    case O_KEY: o->key = v; break;
    case O_ACCOUNT: o->account = v; break;
    case O_VIN: o->vin = v; break;
    case O_SITE:
      if (!parse_u64(v, &o->site) || o->site == 0)
        return fq_opt_usage_error(cmd, "--site wants a positive integer, got '%s'", v);
      break;
    case O_COMMAND: o->command = v; break;
    case O_PARAM: {
      fq_err_t e;
      if (o->nparams == FQ_MAX_PARAMS) return fq_opt_usage_error(cmd, "too many --param");
      if (fq_param_parse(v, &o->params[o->nparams], &e))
        return fq_opt_usage_error(cmd, "%s", e.msg);
      o->nparams++;
      break;
    }
    case O_PARAMS: o->params_json = v; break;
    case O_TTL:
      if (!parse_u64(v, &u) || u == 0 || u > INT64_MAX)
        return fq_opt_usage_error(cmd, "--ttl-ms wants a positive integer, got '%s'", v);
      o->ttl_ms = (int64_t)u;
      break;
    case O_COALESCE: o->coalesce = true; break;
    case O_NO_WAKE: o->no_wake = true; break;
    case O_NOT_BEFORE:
      if (!fq_cli_parse_when(v, fq_now_ms(), &o->not_before) || o->not_before <= 0)
        return fq_opt_usage_error(cmd,
                                  "--not-before wants unix ms, an RFC 3339 time "
                                  "(2026-12-04T18:00:00Z) or +N with a unit of ms/s/m/h/d "
                                  "(+30s, +5m, +2h), got '%s'",
                                  v);
      break;
    case O_WAIT: o->wait = true; break;
    case O_ID: o->id = v; break;
    case O_DEVICE: o->device = v; break;
    case O_COUNT:
      if (!parse_u64(v, &o->count) || o->count == 0)
        return fq_opt_usage_error(cmd, "--count wants a positive integer, got '%s'", v);
      break;
    case O_FILL: o->fill = true; break;
    case O_SHARD:
      if (!parse_u64(v, &o->shard) || o->shard > UINT32_MAX)
        return fq_opt_usage_error(cmd, "--shard wants a shard number, got '%s'", v);
      o->shard_set = true;
      break;
    case O_AFTER:
      if (!parse_u64(v, &o->after))
        return fq_opt_usage_error(cmd, "--after wants a sequence number, got '%s'", v);
      break;
    case O_LIMIT:
      if (!parse_u64(v, &o->limit) || o->limit == 0 || o->limit > UINT32_MAX)
        return fq_opt_usage_error(cmd, "--limit wants a positive integer, got '%s'", v);
      break;
    default: return fq_opt_usage_error(cmd, "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next < argc) return fq_opt_usage_error(cmd, "unexpected argument '%s'", argv[p.next]);
  keep_text_params(o);
  fq_client_opts_t co = {.curve_key_file = o->curve_key, .server_key = o->server_key};
  int rc = fq_cli_conn_resolve(argv[0], &co);
  if (rc >= 0) return rc;
  o->curve_key = co.curve_key_file;
  o->server_key = co.server_key;
  return -1;
}

/* ------------------------------------------------------------------ */
/* Output helpers                                                       */

/* A string field for printing: "-" when absent or nil. */
static int sfield(const msgpack_object *map, const char *key, const char **p) {
  size_t n = 0;
  if (!fq_mp_str(fq_mp_get(map, key), p, &n)) {
    *p = "-";
    return 1;
  }
  return (int)n;
}

static int obj_pack_write(void *data, const char *buf, size_t len) {
  return fq_buf_append(data, buf, len) ? -1 : 0;
}

/* Print any object as one JSON line on stdout. */
static void print_obj_json(const msgpack_object *o) {
  fq_buf_t mp, js;
  msgpack_packer pk;
  fq_buf_init(&mp, FQ_CLIENT_MAX_REPLY);
  fq_buf_init(&js, 4 * FQ_CLIENT_MAX_REPLY);
  msgpack_packer_init(&pk, &mp, obj_pack_write);
  if (msgpack_pack_object(&pk, *o) == 0 && fq_msgpack_to_json(mp.data, mp.len, &js, 0) == 0)
    printf("%.*s\n", (int)js.len, (const char *)js.data);
  fq_buf_free(&mp);
  fq_buf_free(&js);
}

static void print_raw_json(const fq_buf_t *raw) {
  fq_buf_t js;
  fq_buf_init(&js, 4 * FQ_CLIENT_MAX_REPLY);
  if (fq_msgpack_to_json(raw->data, raw->len, &js, 0) == 0)
    printf("%.*s\n", (int)js.len, (const char *)js.data);
  fq_buf_free(&js);
  fflush(stdout);
}

/* "<tenant>/<vin or site>" of an event or a command record. */
static void device_of(const msgpack_object *ev, char *out, size_t cap, bool with_tenant) {
  const char *t, *v;
  int tn = sfield(ev, "tenant", &t);
  int64_t site = 0;
  size_t vn = 0;
  if (fq_mp_str(fq_mp_get(ev, "vin"), &v, &vn) && vn) {
    if (with_tenant)
      snprintf(out, cap, "%.*s/%.*s", tn, t, (int)vn, v);
    else
      snprintf(out, cap, "%.*s", (int)vn, v);
  } else if (fq_mp_int(fq_mp_get(ev, "site"), &site)) {
    if (with_tenant)
      snprintf(out, cap, "%.*s/%" PRId64, tn, t, site);
    else
      snprintf(out, cap, "%" PRId64, site);
  } else {
    snprintf(out, cap, "%.*s/?", tn, t);
  }
}

/* One readable line per event: time, tenant/device, command,
 * prev -> state, reason, then the ids that let a person look it up. */
static void print_event(const msgpack_object *ev, bool json, const char *mark) {
  if (json) {
    print_obj_json(ev);
    fflush(stdout);
    return;
  }
  char when[40], dev[256];
  int64_t at = 0, shard = -1, seq = -1, attempt = 0, http = 0, fault = 0;
  const char *cmd, *prev, *state, *reason, *id, *err;
  fq_mp_int(fq_mp_get(ev, "at"), &at);
  fq_mp_int(fq_mp_get(ev, "shard"), &shard);
  fq_mp_int(fq_mp_get(ev, "seq"), &seq);
  fq_mp_int(fq_mp_get(ev, "attempt"), &attempt);
  fq_cli_fmt_time(at, when, sizeof when);
  device_of(ev, dev, sizeof dev, true);
  int cn = sfield(ev, "command", &cmd), pn = sfield(ev, "prev", &prev),
      sn = sfield(ev, "state", &state), rn = sfield(ev, "reason", &reason),
      in = sfield(ev, "id", &id), en = sfield(ev, "error", &err);
  printf("%s %s %.*s %.*s -> %.*s", when, dev, cn, cmd, pn, prev, sn, state);
  if (rn > 0 && strcmp(reason, "-") != 0) printf(": %.*s", rn, reason);
  if (strcmp(err, "-") != 0) printf(" [error %.*s]", en, err);
  if (fq_mp_int(fq_mp_get(ev, "http"), &http)) printf(" [http %" PRId64 "]", http);
  if (fq_mp_int(fq_mp_get(ev, "fault"), &fault)) printf(" [fault %" PRId64 "]", fault);
  printf("  (id %.*s, attempt %" PRId64 ", shard %" PRId64 " seq %" PRId64 ")%s%s\n", in, id,
         attempt, shard, seq, mark ? " " : "", mark ? mark : "");
  fflush(stdout);
}

/* Print an error reply as "fleetq <command>: <code>: <message>" on
 * stderr: the daemon's error code is the stable part scripts match. */
static void print_error_reply(const qopts_t *o, const msgpack_object *r) {
  const char *code, *msg, *state;
  int cn = sfield(r, "error", &code), mn = sfield(r, "message", &msg);
  int sn = sfield(r, "state", &state);
  fprintf(stderr, "%s: %.*s: %.*s", o->prog, cn, code, mn, msg);
  if (strcmp(state, "-") != 0) fprintf(stderr, " (state: %.*s)", sn, state);
  fputc('\n', stderr);
}

/* Send one request and decode its reply.  Returns 0 when the daemon said
 * ok: true (m is then live and the caller frees it), 1 otherwise (already
 * reported; m is freed). */
static int round_trip(fq_client_t *c, const qopts_t *o, const fq_buf_t *req, fq_buf_t *raw,
                      fq_msg_t *m) {
  fq_err_t e;
  bool ok = false;
  memset(m, 0, sizeof *m);
  int rc = fq_client_request(c, req->data, req->len, raw, &e);
  if (rc) {
    fprintf(stderr, "%s: %s: %s\n", o->prog, rc == -ETIMEDOUT ? "timeout" : fq_errname(rc),
            e.msg);
    return 1;
  }
  if (o->json) print_raw_json(raw);
  if (fq_msg_decode(m, raw->data, raw->len, &e)) {
    fprintf(stderr, "%s: bad_reply: %s\n", o->prog, e.msg);
    return 1;
  }
  if (!fq_mp_bool(fq_mp_get(m->root, "ok"), &ok) || !ok) {
    print_error_reply(o, m->root);
    fq_msg_free(m);
    return 1;
  }
  return 0;
}

static fq_client_t *open_client(const qopts_t *o) {
  fq_err_t e;
  fq_client_opts_t co = {.endpoint = o->endpoint, .timeout_ms = (int)(o->timeout_s * 1000),
                         .curve_key_file = o->curve_key, .server_key = o->server_key};
  fq_client_t *c = fq_client_new_opts(&co, &e);
  if (!c) fprintf(stderr, "%s: %s: %s\n", o->prog, fq_errname(e.code), e.msg);
  return c;
}

/* A subscriber to the status publisher with the same CURVE keys: fleetqd
 * serves both sockets with one key pair. */
static fq_sub_t *open_sub(const qopts_t *o, const char *const *prefixes, size_t n) {
  fq_err_t e;
  fq_client_opts_t co = {.endpoint = o->publish, .curve_key_file = o->curve_key,
                         .server_key = o->server_key};
  fq_sub_t *s = fq_sub_new_opts(&co, prefixes, n, &e);
  if (!s) fprintf(stderr, "%s: %s: %s\n", o->prog, fq_errname(e.code), e.msg);
  return s;
}

/* ------------------------------------------------------------------ */
/* get / cancel output                                                  */

/* Integer fields holding Unix milliseconds, shown as UTC times. */
static bool is_time_key(const char *k, size_t n) {
  static const char *const names[] = {"at", "created", "updated", "deadline", "not_before",
                                      NULL};
  for (const char *const *p = names; *p; p++)
    if (strlen(*p) == n && memcmp(*p, k, n) == 0) return true;
  return n > 3 && memcmp(k + n - 3, "_at", 3) == 0;
}

/* The command record: every field as "name value", then its transitions
 * as a table.  Field names come from the daemon, so unknown ones are
 * printed too rather than dropped. */
static void print_command(const msgpack_object *cmd) {
  const msgpack_object *trans = NULL;
  if (!cmd || cmd->type != MSGPACK_OBJECT_MAP) return;
  for (uint32_t i = 0; i < cmd->via.map.size; i++) {
    const msgpack_object *k = &cmd->via.map.ptr[i].key, *v = &cmd->via.map.ptr[i].val;
    if (k->type != MSGPACK_OBJECT_STR) continue;
    if (k->via.str.size == 11 && memcmp(k->via.str.ptr, "transitions", 11) == 0) {
      trans = v;
      continue;
    }
    printf("%-12.*s ", (int)k->via.str.size, k->via.str.ptr);
    fq_cli_print_value(v, is_time_key(k->via.str.ptr, k->via.str.size));
    putchar('\n');
  }
  if (!trans || trans->type != MSGPACK_OBJECT_ARRAY) return;
  printf("transitions:\n");
  printf("  %-24s  %-11s    %-11s  %s\n", "at", "prev", "state", "reason");
  for (uint32_t i = 0; i < trans->via.array.size; i++) {
    const msgpack_object *t = &trans->via.array.ptr[i];
    int64_t at = 0;
    char when[40];
    const char *prev, *state, *reason;
    fq_mp_int(fq_mp_get(t, "at"), &at);
    fq_cli_fmt_time(at, when, sizeof when);
    int pn = sfield(t, "prev", &prev), sn = sfield(t, "state", &state),
        rn = sfield(t, "reason", &reason);
    /* A transition record may leave out `prev`: it is the state before. */
    if (strcmp(prev, "-") == 0 && i > 0) pn = sfield(&trans->via.array.ptr[i - 1], "state", &prev);
    printf("  %-24s  %-11.*s -> %-11.*s  %.*s\n", when, pn, prev, sn, state,
           strcmp(reason, "-") ? rn : 0, reason);
  }
}

static int lookup_args_ok(const qopts_t *o) {
  if (o->id && (o->tenant || o->key))
    return fq_opt_usage_error(o->prog, "give either --id or --tenant and --key");
  if (!o->id && (!o->tenant || !o->key))
    return fq_opt_usage_error(o->prog, "give --id ID, or --tenant T and --key K");
  return -1;
}

/* get and cancel take the same options. */
static const fq_opt_t g_lookup_opts[] = {
    E_HELP,
    E_VERSION,
    {"id", 0, "ID", O_ID, "the command's id (from send)"},
    {"tenant", 0, "T", O_TENANT, "or the tenant and ..."},
    {"key", 0, "K", O_KEY, "... the idempotency key it was sent with"},
    E_ENDPOINT,
    {"json", 0, NULL, O_JSON, "print the daemon's reply as one JSON object"},
    E_TIMEOUT,
    E_CURVE,
    E_END,
};

static const fq_cli_doc_t g_get_doc = {
    .usage = "fleetq get (--id ID | --tenant T --key K) [--endpoint EP] [--json] [--timeout S]",
    .about = "Show one command: its fields, state, reason, error, attempts, timestamps\n"
             "and the table of its state transitions.\n",
    .notes = FQ_CLI_CURVE_NOTE,
    .exit = "0 the command was found, 1 the daemon refused (not_found, ...) or\n"
            "did not answer, 2 usage error.",
};

/* get and cancel differ only in the op and in what they print. */
typedef void (*lookup_show_fn)(const qopts_t *o, const fq_msg_t *m);

static int run_lookup(int argc, char **argv, const char *op, const fq_cli_doc_t *doc,
                      lookup_show_fn show) {
  qopts_t o;
  int rc = parse_opts(argc, argv, g_lookup_opts, doc, &o);
  if (rc >= 0) return rc;
  if ((rc = lookup_args_ok(&o)) >= 0) return rc;
  fq_buf_t req, raw;
  fq_msg_t m;
  fq_buf_init(&req, 64 * 1024);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  fq_client_t *c = open_client(&o);
  rc = 1;
  if (!c || fq_req_lookup(&req, op, o.id, o.tenant, o.key, false, 0)) goto out;
  if (round_trip(c, &o, &req, &raw, &m)) goto out;
  if (!o.json) show(&o, &m);
  fq_msg_free(&m);
  rc = 0;
out:
  fq_client_destroy(&c);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

static void show_get(const qopts_t *o, const fq_msg_t *m) {
  (void)o;
  print_command(fq_mp_get(m->root, "command"));
}

static int cmd_get(int argc, char **argv) {
  return run_lookup(argc, argv, "get", &g_get_doc, show_get);
}

static const fq_cli_doc_t g_cancel_doc = {
    .usage = "fleetq cancel (--id ID | --tenant T --key K) [--endpoint EP] [--json]",
    .about = "Cancel a command that is still queued; prints its state and id.  Once\n"
             "dispatch has started the daemon answers not_cancellable with the\n"
             "current state.\n",
    .notes = FQ_CLI_CURVE_NOTE,
    .exit = "0 cancelled, 1 the daemon refused (not_cancellable, not_found, ...)\n"
            "or did not answer, 2 usage error.",
};

static void show_cancel(const qopts_t *o, const fq_msg_t *m) {
  const msgpack_object *cmd = fq_mp_get(m->root, "command");
  const char *id, *state;
  int in = sfield(cmd ? cmd : m->root, "id", &id);
  int sn = sfield(m->root, "state", &state);
  if (strcmp(state, "-") == 0) sn = sfield(cmd, "state", &state);
  if (strcmp(id, "-") == 0 && o->id) in = (int)strlen(id = o->id);
  printf("%.*s %.*s\n", sn, state, in, id);
}

static int cmd_cancel(int argc, char **argv) {
  return run_lookup(argc, argv, "cancel", &g_cancel_doc, show_cancel);
}

/* ------------------------------------------------------------------ */
/* send                                                                 */

static const fq_opt_t g_send_opts[] = {
    E_HELP,
    E_VERSION,
    {"tenant", 0, "T", O_TENANT, "the tenant the command belongs to (required)"},
    {"key", 0, "K", O_KEY,
     "idempotency key (required): sending again with the\n"
     "same key and content returns the original command"},
    {"account", 0, "A", O_ACCOUNT, "the Tesla account whose token is used (required)"},
    {"vin", 0, "VIN", O_VIN, "the vehicle, or ..."},
    {"site", 0, "ID", O_SITE, "... the energy site (exactly one of the two)"},
    {"command", 0, "C", O_COMMAND, "the command, from the command table (required)"},
    {"param", 0, "NAME=VALUE", O_PARAM,
     "a parameter (repeatable): true/false are booleans,\n"
     "integers and decimals numbers, the rest strings;\n"
     "a string parameter keeps its text (pin=0042)"},
    {"params", 0, "JSON", O_PARAMS, "parameters as a JSON object (--param wins)"},
    {"ttl-ms", 0, "N", O_TTL, "deadline in ms (default: the daemon's)"},
    {"coalesce", 0, NULL, O_COALESCE, "supersede a queued command of the same kind"},
    {"no-wake", 0, NULL, O_NO_WAKE,
     "send wake: false: an asleep car fails the command\n"
     "(vehicle_asleep) instead of being woken"},
    {"not-before", 0, "TIME", O_NOT_BEFORE,
     "schedule it: held (state scheduled) until TIME, unix ms,\n"
     "RFC 3339 (2026-12-04T18:00:00Z) or +30s/+5m/+2h from now;\n"
     "the TTL counts from then"},
    {"wait", 0, NULL, O_WAIT, "follow the command's events to its end"},
    {"timeout", 0, "S", O_TIMEOUT,
     "wait at most S seconds for the answer (default 5);\n"
     "with --wait for the end (default the TTL + 30 s)"},
    E_ENDPOINT,
    E_PUBLISH,
    {"json", 0, NULL, O_JSON, "print the reply (and with --wait each event) as JSON"},
    E_CURVE,
    E_END,
};

static const fq_cli_doc_t g_send_doc = {
    .usage = "fleetq send --tenant T --key K --account A (--vin VIN | --site ID)\n"
             "                   --command C [--param name=value ...] [--params JSON]\n"
             "                   [--ttl-ms N] [--coalesce] [--no-wake] [--not-before TIME]\n"
             "                   [--wait] [--timeout S]\n"
             "                   [--endpoint EP] [--publish EP] [--json]",
    .about = "Submit one command; the daemon answers once it is durable, and this\n"
             "prints \"accepted <id> <state>\" (\"duplicate ...\" for a retry).\n"
             "--wait subscribes to the command's device first, then submits and\n"
             "follows its status events until a terminal state.\n"
             "With --not-before the command waits (state scheduled) until that time,\n"
             "then enters its device's queue; its TTL counts from then.\n",
    .notes = FQ_CLI_CURVE_NOTE,
    .exit = "0 accepted (with --wait: the command succeeded), 1 the daemon\n"
            "refused it or did not answer (with --wait also: it ended otherwise\n"
            "than succeeded, or --timeout passed first), 2 usage error.",
};

/* Follow a submitted command to its end.  Events are the fast path; a
 * `get` whenever the publisher has been silent for a while covers events
 * that were missed (slow subscription, reconnect, dropped at the HWM). */
static int follow(fq_client_t *c, fq_sub_t *sub, const qopts_t *o, const char *id,
                  double wait_s) {
  fq_buf_t topic, body, req, raw;
  int rc = 1;
  fq_buf_init(&topic, 4096);
  fq_buf_init(&body, FQ_CLIENT_MAX_REPLY);
  fq_buf_init(&req, 4096);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  double last_poll = 0;
  for (;;) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
    if (fq_cli_stop) goto out;
    if (el >= wait_s) {
      fprintf(stderr, "%s: timeout: command %s not finished after %.1f s\n", o->prog, id,
              wait_s);
      goto out;
    }
    fq_err_t e;
    int wait_ms = (int)((wait_s - el) * 1000) + 1;
    if (wait_ms > 500) wait_ms = 500;
    int r = sub ? fq_sub_recv(sub, &topic, &body, wait_ms, &e) : -ETIMEDOUT;
    if (r == 0) {
      fq_msg_t m;
      if (fq_msg_decode(&m, body.data, body.len, &e)) continue;
      if (fq_mp_str_eq(fq_mp_get(m.root, "id"), id)) {
        const char *st;
        size_t sn = 0;
        print_event(m.root, o->json, NULL);
        if (fq_mp_str(fq_mp_get(m.root, "state"), &st, &sn) && fq_cli_is_terminal(st, sn)) {
          rc = sn == 9 && memcmp(st, "succeeded", 9) == 0 ? 0 : 1;
          fq_msg_free(&m);
          goto out;
        }
      }
      fq_msg_free(&m);
      continue;
    }
    if (r == -EINTR) goto out;
    if (!sub) {
      struct timespec ts = {0, 500 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    if (el - last_poll < 2.0) continue;
    last_poll = el;
    fq_msg_t m;
    fq_buf_reset(&req);
    if (fq_req_lookup(&req, "get", id, NULL, NULL, false, 0)) goto out;
    qopts_t quiet = *o;
    quiet.json = false;
    if (round_trip(c, &quiet, &req, &raw, &m)) goto out;
    const msgpack_object *cmd = fq_mp_get(m.root, "command");
    const char *st;
    size_t sn = 0;
    if (fq_mp_str(fq_mp_get(cmd, "state"), &st, &sn) && fq_cli_is_terminal(st, sn)) {
      if (o->json) {
        print_obj_json(cmd);
      } else {
        const char *reason;
        int rn = sfield(cmd, "reason", &reason);
        printf("%s %.*s%s%.*s\n", id, (int)sn, st, rn > 0 && strcmp(reason, "-") ? ": " : "",
               strcmp(reason, "-") ? rn : 0, reason);
      }
      rc = sn == 9 && memcmp(st, "succeeded", 9) == 0 ? 0 : 1;
      fq_msg_free(&m);
      goto out;
    }
    fq_msg_free(&m);
  }
out:
  fflush(stdout);
  fq_buf_free(&topic);
  fq_buf_free(&body);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

static int cmd_send(int argc, char **argv) {
  qopts_t o;
  int rc = parse_opts(argc, argv, g_send_opts, &g_send_doc, &o);
  if (rc >= 0) return rc;
  if (!o.tenant || !o.key || !o.account || !o.command)
    return fq_opt_usage_error(o.prog, "--tenant, --key, --account and --command are required");
  if ((o.vin != NULL) == (o.site != 0))
    return fq_opt_usage_error(o.prog, "give exactly one of --vin and --site");

  fq_buf_t store, req, raw;
  fq_msg_t m;
  fq_sub_t *sub = NULL;
  fq_client_t *c = NULL;
  fq_pval_t all[FQ_MAX_PARAMS];
  size_t nall = 0;
  fq_buf_init(&store, 64 * 1024);
  fq_buf_init(&req, FQ_CLIENT_MAX_REPLY);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  rc = 2;
  if (o.params_json) {
    fq_err_t e;
    if (fq_params_from_json(o.params_json, &store, all, FQ_MAX_PARAMS, &nall, &e)) {
      fq_opt_usage_error(o.prog, "%s", e.msg);
      goto out;
    }
  }
  for (size_t i = 0; i < o.nparams; i++) {
    /* --param overrides a same-named entry of --params. */
    size_t j = 0;
    while (j < nall && !(all[j].name_len == o.params[i].name_len &&
                         memcmp(all[j].name, o.params[i].name, all[j].name_len) == 0))
      j++;
    if (j == nall && nall == FQ_MAX_PARAMS) {
      fq_opt_usage_error(o.prog, "more than 16 parameters");
      goto out;
    }
    all[j] = o.params[i];
    if (j == nall) nall++;
  }
  rc = 1;
  char topic[256];
  if (o.vin)
    snprintf(topic, sizeof topic, "%s/%s", o.tenant, o.vin);
  else
    snprintf(topic, sizeof topic, "%s/%" PRIu64, o.tenant, o.site);
  if (o.wait) {
    /* Subscribe before submitting, so the first events are not missed. */
    fq_err_t e;
    const char *pf[] = {topic};
    fq_cli_catch_stop();
    sub = open_sub(&o, pf, 1);
    if (!sub) goto out;
    int wr = fq_sub_wait_connected(sub, 2000, &e);
    if (wr == FQ_EAUTH) {
      /* The request socket would be refused the same way. */
      fprintf(stderr, "%s: %s: %s\n", o.prog, fq_errname(wr), e.msg);
      goto out;
    }
    if (wr)
      fprintf(stderr, "%s: warning: status publisher %s not reached (%s); polling instead\n",
              o.prog, o.publish, e.msg);
  }
  c = open_client(&o);
  if (!c) goto out;
  fq_submit_args_t a = {.tenant = o.tenant, .key = o.key, .account = o.account, .vin = o.vin,
                        .site = o.site, .command = o.command, .params = all, .nparams = nall,
                        .ttl_ms = o.ttl_ms, .coalesce = o.coalesce,
                        .no_wake = o.no_wake, .not_before = o.not_before};
  if (fq_req_submit(&req, &a)) {
    fprintf(stderr, "%s: too_large: request does not fit in %zu bytes\n", o.prog, req.cap);
    goto out;
  }
  if (round_trip(c, &o, &req, &raw, &m)) goto out;
  const char *id, *state;
  bool dup = false;
  int in = sfield(m.root, "id", &id), sn = sfield(m.root, "state", &state);
  fq_mp_bool(fq_mp_get(m.root, "dup"), &dup);
  if (!o.json) printf("%s %.*s %.*s\n", dup ? "duplicate" : "accepted", in, id, sn, state);
  fflush(stdout);
  rc = 0;
  if (o.wait) {
    char idz[256];
    snprintf(idz, sizeof idz, "%.*s", in, id);
    if (fq_cli_is_terminal(state, (size_t)sn)) {
      rc = strncmp(state, "succeeded", (size_t)sn) == 0 && sn == 9 ? 0 : 1;
    } else {
      double wait_s = o.timeout_set ? o.timeout_s
                                    : (double)(o.ttl_ms ? o.ttl_ms : 60000) / 1000.0 + 30.0;
      /* A scheduled command's TTL starts at its time. */
      int64_t ahead = o.not_before - fq_now_ms();
      if (!o.timeout_set && ahead > 0) wait_s += (double)ahead / 1000.0;
      rc = follow(c, sub, &o, idz, wait_s);
    }
  }
  fq_msg_free(&m);
out:
  fq_sub_destroy(&sub);
  fq_client_destroy(&c);
  fq_buf_free(&store);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

/* ------------------------------------------------------------------ */
/* history                                                              */

static const fq_opt_t g_history_opts[] = {
    E_HELP,
    E_VERSION,
    {"shard", 0, "N", O_SHARD, "the shard whose events to print (required)"},
    {"tenant", 0, "T", O_TENANT, "only tenant T's events, paged by their tseq"},
    {"after", 0, "SEQ", O_AFTER, "start after this seq (tseq with --tenant; default 0)"},
    {"limit", 0, "L", O_LIMIT, "at most L events (default 100, max 1000)"},
    E_ENDPOINT,
    {"json", 0, NULL, O_JSON, "print the daemon's reply as one JSON object"},
    E_TIMEOUT,
    E_CURVE,
    E_END,
};

static const fq_cli_doc_t g_history_doc = {
    .usage = "fleetq history --shard N [--tenant T] [--after SEQ] [--limit L]\n"
             "                      [--endpoint EP] [--json]",
    .about = "Print the stored status events of one shard with seq > SEQ, then\n"
             "\"next <seq>\", the seq to continue after.  With --tenant, only tenant T's\n"
             "events of the shard, in the order of their per-tenant sequence tseq:\n"
             "--after and the `next` printed count tseq (1, 2, 3... for each tenant\n"
             "and shard) instead of seq.\n",
    .notes = FQ_CLI_CURVE_NOTE,
    .exit = "0 the page was printed, 1 the daemon refused or did not answer,\n"
            "2 usage error.",
};

static int cmd_history(int argc, char **argv) {
  qopts_t o;
  int rc = parse_opts(argc, argv, g_history_opts, &g_history_doc, &o);
  if (rc >= 0) return rc;
  if (!o.shard_set) return fq_opt_usage_error(o.prog, "--shard is required");
  fq_buf_t req, raw;
  fq_msg_t m;
  fq_buf_init(&req, 4096);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  fq_client_t *c = open_client(&o);
  rc = 1;
  if (!c || fq_req_history_tenant(&req, (uint32_t)o.shard, o.tenant, o.after, (uint32_t)o.limit,
                                  false, 0))
    goto out;
  if (round_trip(c, &o, &req, &raw, &m)) goto out;
  if (!o.json) {
    const msgpack_object *evs = fq_mp_get(m.root, "events");
    int64_t next = 0, tseq = 0, first = 0;
    char mark[40];
    /* Events older than the daemon's retention are gone: say so rather
     * than let the page look like the start of history. */
    if (fq_mp_int(fq_mp_get(m.root, "first"), &first) && first > 0 &&
        (uint64_t)first - 1 > (uint64_t)o.after)
      fprintf(stderr, "note: %s before %" PRId64 " were pruned (retention); history begins there\n",
              o.tenant ? "this tenant's events (tseq)" : "events (seq)", first);
    /* By tenant the page counts tseq: show it beside each event. */
    if (evs && evs->type == MSGPACK_OBJECT_ARRAY)
      for (uint32_t i = 0; i < evs->via.array.size; i++) {
        const msgpack_object *ev = &evs->via.array.ptr[i];
        bool t = o.tenant && fq_mp_int(fq_mp_get(ev, "tseq"), &tseq);
        if (t) snprintf(mark, sizeof mark, "tseq %" PRId64, tseq);
        print_event(ev, false, t ? mark : NULL);
      }
    if (fq_mp_int(fq_mp_get(m.root, "next"), &next)) printf("next %" PRId64 "\n", next);
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
/* watch                                                                */

static const fq_opt_t g_watch_opts[] = {
    E_HELP,
    E_VERSION,
    {"tenant", 0, "T", O_TENANT, "only tenant T's events"},
    {"device", 0, "VIN|SITE", O_DEVICE, "only this device's events (needs --tenant)"},
    {"count", 0, "N", O_COUNT, "stop after N events"},
    {"timeout", 0, "S", O_TIMEOUT, "stop after S seconds"},
    {"fill", 0, NULL, O_FILL, "fetch missed events with `history` and print them"},
    E_PUBLISH,
    {"endpoint", 0, "EP", O_ENDPOINT, "fleetqd's request endpoint, for --fill (default\n"
                                        FQ_CLI_DEFAULT_ENDPOINT ")"},
    {"json", 0, NULL, O_JSON, "print each event as one JSON object"},
    E_CURVE,
    E_END,
};

static const fq_cli_doc_t g_watch_doc = {
    .usage = "fleetq watch [--tenant T [--device VIN|SITE]] [--count N] [--timeout S]\n"
             "                    [--fill] [--publish EP] [--endpoint EP] [--json]",
    .about =
        "Print status events as they are published, one per line: time,\n"
        "tenant/device, command, prev -> state, reason.  Sequence gaps within a\n"
        "shard (events the publisher dropped) are reported on stderr; with --fill\n"
        "the missing events are fetched with `history` from --endpoint and printed\n"
        "(marked \"(filled)\").  Events carry tseq, a gap-free sequence per tenant\n"
        "and shard: a jump in it is a loss even when the watch sees only some\n"
        "tenants (--tenant, or a CURVE key limited to its tenants), and --fill\n"
        "fetches that tenant's missing events.  With --device, seq and tseq jumps\n"
        "are normal (other devices share them), so only --fill can detect losses.\n"
        "--fill also looks past the last event seen whenever the stream is quiet\n"
        "for half a second, because events dropped at the end of a burst leave no\n"
        "later seq to reveal them.  A history page fleetqd answers busy (or\n"
        "internal) is asked again, up to 8 times with growing pauses (a timeout:\n"
        "once more); events it still could not fetch are named on stderr.\n",
    .notes = FQ_CLI_CURVE_NOTE,
    .exit = "0 after N events, after S seconds without --count, or on Ctrl-C;\n"
            "1 fewer than N events arrived within S seconds, or the publisher\n"
            "refused the key; 2 usage error.",
};

/* Last seq seen per shard; a shard beyond the table is not tracked. */
#define WATCH_MAX_SHARDS 4096

/* Last tseq seen per (shard, tenant): events carry a gap-free sequence per
 * tenant and shard, which stays gap-free for a subscriber that sees only
 * some tenants (a CURVE key limited to its tenants, or --tenant), where
 * seq jumps are normal. */
#define WATCH_MAX_TENANTS 4096

typedef struct watch_tenant {
  uint32_t shard;
  char tenant[65];
  uint64_t last;
} watch_tenant_t;

typedef struct watch_state {
  const qopts_t *o;
  const char *prefix;
  fq_client_t *c;
  uint64_t last[WATCH_MAX_SHARDS];
  bool seen[WATCH_MAX_SHARDS];
  /* With --fill, the shard's last seq when the watch began: every event
   * after it is this watch's to print. */
  uint64_t start[WATCH_MAX_SHARDS];
  bool started[WATCH_MAX_SHARDS];
  uint64_t printed;
  watch_tenant_t *tenants;
  size_t ntenants;
} watch_state_t;

/* The tseq slot of (shard, tenant), created with last 0; NULL when the
 * table is full. */
static watch_tenant_t *watch_tenant(watch_state_t *w, uint32_t shard, const char *t, size_t tl) {
  for (size_t i = 0; i < w->ntenants; i++)
    if (w->tenants[i].shard == shard && strlen(w->tenants[i].tenant) == tl &&
        !memcmp(w->tenants[i].tenant, t, tl))
      return &w->tenants[i];
  if (tl > 64 || w->ntenants >= WATCH_MAX_TENANTS) return NULL;
  if (!w->tenants && !(w->tenants = calloc(WATCH_MAX_TENANTS, sizeof *w->tenants))) return NULL;
  watch_tenant_t *x = &w->tenants[w->ntenants++];
  x->shard = shard;
  memcpy(x->tenant, t, tl);
  x->tenant[tl] = 0;
  x->last = 0;
  return x;
}

/* Whether an event fetched from history is new to this watch: false when
 * its tenant's tseq shows it was printed already (live or from an earlier
 * fetch).  Moves the tenant's tseq on. */
static bool watch_fresh(watch_state_t *w, const msgpack_object *ev) {
  int64_t tseq = 0, shard = -1;
  const char *tn;
  size_t tnl;
  if (w->o->device || !fq_mp_int(fq_mp_get(ev, "tseq"), &tseq) || tseq <= 0 ||
      !fq_mp_int(fq_mp_get(ev, "shard"), &shard) || shard < 0 || shard >= WATCH_MAX_SHARDS ||
      !fq_mp_str(fq_mp_get(ev, "tenant"), &tn, &tnl))
    return true;
  watch_tenant_t *wt = watch_tenant(w, (uint32_t)shard, tn, tnl);
  if (!wt) return true;
  if ((uint64_t)tseq <= wt->last) return false;
  wt->last = (uint64_t)tseq;
  return true;
}

static bool event_matches(const msgpack_object *ev, const char *prefix) {
  char dev[512];
  device_of(ev, dev, sizeof dev, true);
  return strncmp(dev, prefix, strlen(prefix)) == 0;
}

/* One history page for watch_fill, tried again while fleetqd answers
 * `busy` or `internal`, or not in time (it is when a flood of submits
 * makes a watcher fall behind that its pages are most likely refused): a
 * page given up leaves a hole in what the watch prints (a timeout is
 * tried once more only).  0 with *m to
 * free, or 1 (said on stderr) after the last attempt or a refusal no
 * retry can change. */
#define WATCH_PAGE_TRIES 8

static int history_page(watch_state_t *w, const fq_buf_t *req, fq_buf_t *raw, fq_msg_t *m) {
  qopts_t quiet = *w->o;
  quiet.json = false;
  long pause_ms = 100;
  for (int attempt = 1;; attempt++) {
    fq_err_t e;
    fq_err_clear(&e);
    memset(m, 0, sizeof *m);
    bool again = false;
    int rc = fq_client_request(w->c, req->data, req->len, raw, &e);
    if (rc) {
      /* Each wait is a whole --timeout: one more, not seven. */
      again = rc == -ETIMEDOUT && attempt < 2;
      if (!again)
        fprintf(stderr, "%s: history: %s: %s\n", w->o->prog,
                rc == -ETIMEDOUT ? "timeout" : fq_errname(rc), e.msg);
    } else if (fq_msg_decode(m, raw->data, raw->len, &e)) {
      fprintf(stderr, "%s: history: bad_reply: %s\n", w->o->prog, e.msg);
    } else {
      bool ok = false;
      if (fq_mp_bool(fq_mp_get(m->root, "ok"), &ok) && ok) return 0;
      const char *code = "";
      size_t cn = 0;
      fq_mp_str(fq_mp_get(m->root, "error"), &code, &cn);
      again = (cn == 4 && !memcmp(code, "busy", 4)) || (cn == 8 && !memcmp(code, "internal", 8));
      if (!again || attempt == WATCH_PAGE_TRIES) print_error_reply(&quiet, m->root);
      fq_msg_free(m);
    }
    if (!again || attempt == WATCH_PAGE_TRIES || fq_cli_stop) return 1;
    struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    if (pause_ms < 2000) pause_ms *= 2;
  }
}

/* Fetch events (after, upto) of a shard with history and print the ones
 * that match the watch filter and have a seq above min_seq (0: all);
 * returns how many were printed.  With tenant, only that tenant's events,
 * and after / upto / *last count its tseq; else seq.  *last (may be NULL)
 * receives the highest one fetched.  `tail` marks a look past the last
 * event seen, where an empty history is the normal answer. */
static uint64_t watch_fill(watch_state_t *w, uint32_t shard, const char *tenant, uint64_t after,
                           uint64_t upto, uint64_t *last, bool tail, uint64_t min_seq) {
  uint64_t printed = 0;
  fq_buf_t req, raw;
  fq_buf_init(&req, 4096);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  if (!w->c) w->c = open_client(w->o);
  while (w->c && after + 1 < upto && !fq_cli_stop) {
    fq_msg_t m;
    uint64_t want = upto - after - 1;
    fq_buf_reset(&req);
    if (fq_req_history_tenant(&req, shard, tenant, after,
                              (uint32_t)(want > 1000 ? 1000 : want), false, 0))
      break;
    if (history_page(w, &req, &raw, &m)) break;
    const msgpack_object *evs = fq_mp_get(m.root, "events");
    uint64_t before = after;
    if (evs && evs->type == MSGPACK_OBJECT_ARRAY) {
      for (uint32_t i = 0; i < evs->via.array.size; i++) {
        const msgpack_object *ev = &evs->via.array.ptr[i];
        int64_t seq = 0;
        if (!fq_mp_int(fq_mp_get(ev, tenant ? "tseq" : "seq"), &seq) || (uint64_t)seq >= upto)
          continue;
        if ((uint64_t)seq > after) after = (uint64_t)seq;
        int64_t at = 0;
        if (min_seq && (!fq_mp_int(fq_mp_get(ev, "seq"), &at) || (uint64_t)at <= min_seq))
          continue; /* published before the watch began */
        if (event_matches(ev, w->prefix) && watch_fresh(w, ev) &&
            (w->o->count == 0 || w->printed < w->o->count)) {
          print_event(ev, w->o->json, "(filled)");
          w->printed++;
          printed++;
        }
      }
    }
    fq_msg_free(&m);
    if (after == before) {
      if (!tail)
        fprintf(stderr, "%s: history of shard %u has nothing after %" PRIu64 "\n", w->o->prog,
                shard, after);
      break;
    }
  }
  if (last) *last = after;
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return printed;
}

/* One history request: does shard have an event after seq x?  Returns 1,
 * 0, or -1 when the daemon did not answer. */
static int has_event_after(watch_state_t *w, uint32_t shard, uint64_t x) {
  fq_buf_t req, raw;
  fq_msg_t m;
  int out = -1;
  fq_buf_init(&req, 256);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  qopts_t quiet = *w->o;
  quiet.json = false;
  if (!fq_req_history(&req, shard, x, 1, false, 0) &&
      !round_trip(w->c, &quiet, &req, &raw, &m)) {
    const msgpack_object *evs = fq_mp_get(m.root, "events");
    out = evs && evs->type == MSGPACK_OBJECT_ARRAY && evs->via.array.size > 0;
    fq_msg_free(&m);
  }
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return out;
}

/* With --fill, start every shard at its current last seq, found with
 * about 2 log2(seq) one-event history requests, so that losses on a shard
 * are caught even before its first live event arrives.  Done before
 * subscribing: anything published in between shows up as a gap. */
static void watch_start_points(watch_state_t *w) {
  fq_buf_t req, raw;
  fq_msg_t m;
  int64_t shards = 0;
  fq_buf_init(&req, 256);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  qopts_t quiet = *w->o;
  quiet.json = false;
  if (!w->c) w->c = open_client(w->o);
  if (w->c && !fq_req_ping(&req, false, 0) && !round_trip(w->c, &quiet, &req, &raw, &m)) {
    fq_mp_int(fq_mp_get(m.root, "shards"), &shards);
    fq_msg_free(&m);
  }
  fq_buf_free(&req);
  fq_buf_free(&raw);
  for (int64_t sh = 0; sh < shards && sh < WATCH_MAX_SHARDS; sh++) {
    uint64_t hi = 1;
    int r;
    while ((r = has_event_after(w, (uint32_t)sh, hi)) == 1 && hi < (UINT64_C(1) << 62)) hi *= 2;
    if (r < 0) continue;
    uint64_t lo = hi / 2; /* lo has an event after it (or is 0), hi does not */
    if (lo == 0 && has_event_after(w, (uint32_t)sh, 0) != 1) hi = 0;
    while (hi && hi - lo > 1) {
      uint64_t mid = lo + (hi - lo) / 2;
      r = has_event_after(w, (uint32_t)sh, mid);
      if (r < 0) break;
      if (r) lo = mid;
      else hi = mid;
    }
    if (r < 0) continue;
    w->last[sh] = hi; /* the last seq stored (0: none yet) */
    w->seen[sh] = true;
    w->start[sh] = hi;
    w->started[sh] = true;
  }
}

/* One tenant history request: the seq of the tenant's first event on
 * shard with a tseq above x.  Returns 0 with *seq, 1 when there is none,
 * -1 when the daemon did not answer. */
static int tenant_seq_after(watch_state_t *w, uint32_t shard, const char *tenant, uint64_t x,
                            uint64_t *seq) {
  fq_buf_t req, raw;
  fq_msg_t m;
  int out = -1;
  fq_buf_init(&req, 256);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  qopts_t quiet = *w->o;
  quiet.json = false;
  if (!fq_req_history_tenant(&req, shard, tenant, x, 1, false, 0) &&
      !round_trip(w->c, &quiet, &req, &raw, &m)) {
    const msgpack_object *evs = fq_mp_get(m.root, "events");
    int64_t s = 0;
    out = 1;
    if (evs && evs->type == MSGPACK_OBJECT_ARRAY && evs->via.array.size > 0 &&
        fq_mp_int(fq_mp_get(&evs->via.array.ptr[0], "seq"), &s) && s >= 0) {
      *seq = (uint64_t)s;
      out = 0;
    }
    fq_msg_free(&m);
  }
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return out;
}

/* The first event of a tenant on a shard this watch receives, with
 * --fill: no tseq jump can show what of that tenant's went missing before
 * it (published before the subscription reached the publisher, or dropped
 * at its high-water mark), so fetch them now.  They are the tenant's events
 * with a seq between the shard's start point and this event's: at most
 * one per seq in between, so the tseq range right below this event's that
 * long holds them all.  When that range is longer than a page, a binary
 * search (one-event requests) finds where the events after the start point
 * begin, so that a tenant with a long past costs a few requests, not pages
 * of events that are not the watch's to print. */
static void watch_fill_first(watch_state_t *w, uint32_t shard, watch_tenant_t *wt, uint64_t t,
                             const msgpack_object *ev) {
  int64_t seq = 0;
  if (!w->started[shard] || t <= 1 || !fq_mp_int(fq_mp_get(ev, "seq"), &seq) ||
      (uint64_t)seq <= w->start[shard] + 1)
    return;
  uint64_t start = w->start[shard];
  uint64_t between = (uint64_t)seq - start - 1;
  uint64_t after = t - 1 > between ? t - 1 - between : 0;
  if (!w->c) w->c = open_client(w->o);
  if (!w->c) return;
  uint64_t at = 0;
  if (t - 1 - after > 1000 && tenant_seq_after(w, shard, wt->tenant, after, &at) == 0 &&
      at <= start) {
    /* The event after tseq lo is at or before the start point, the one
     * after hi (this event) past it. */
    uint64_t lo = after, hi = t - 1;
    while (hi - lo > 1) {
      uint64_t mid = lo + (hi - lo) / 2;
      int r = tenant_seq_after(w, shard, wt->tenant, mid, &at);
      if (r < 0) break;
      if (r == 0 && at <= start) lo = mid;
      else hi = mid;
    }
    after = lo;
  }
  uint64_t got = watch_fill(w, shard, wt->tenant, after, t, NULL, true, start);
  if (got)
    fprintf(stderr,
            "fleetq watch: tenant %s on shard %" PRIu32 ": recovered %" PRIu64
            " event(s) published before its first one received (tseq %" PRIu64 ")\n",
            wt->tenant, shard, got, t);
}

static int cmd_watch(int argc, char **argv) {
  qopts_t o;
  int rc = parse_opts(argc, argv, g_watch_opts, &g_watch_doc, &o);
  if (rc >= 0) return rc;
  if (o.device && !o.tenant)
    return fq_opt_usage_error(o.prog, "--device needs --tenant (topics are tenant/device)");
  char prefix[512];
  snprintf(prefix, sizeof prefix, "%s%s%s", o.tenant ? o.tenant : "", o.tenant ? "/" : "",
           o.device ? o.device : "");
  watch_state_t *w = calloc(1, sizeof *w);
  fq_buf_t topic, body;
  fq_err_t e;
  if (!w) return 1;
  w->o = &o;
  w->prefix = prefix;
  fq_buf_init(&topic, 4096);
  fq_buf_init(&body, FQ_CLIENT_MAX_REPLY);
  fq_cli_catch_stop();
  if (o.fill) watch_start_points(w);
  const char *pf[] = {prefix};
  fq_sub_t *sub = open_sub(&o, pf, 1);
  rc = 1;
  if (!sub) goto out;
  /* Say so when the publisher is not there, instead of waiting silently;
   * ZeroMQ keeps reconnecting, so the watch goes on. */
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int conn_ms = o.timeout_set && o.timeout_s < 2.0 ? (int)(o.timeout_s * 1000) : 2000;
  int wr = fq_sub_wait_connected(sub, conn_ms, &e);
  if (wr == -ETIMEDOUT)
    fprintf(stderr, "%s: publisher %s not reached yet; still trying\n", o.prog, o.publish);
  if (wr == FQ_EAUTH) {
    /* Retrying cannot help a refused key or a missing one. */
    fprintf(stderr, "%s: %s: %s\n", o.prog, fq_errname(wr), e.msg);
    goto out;
  }
  for (;;) {
    if (o.count && w->printed >= o.count) {
      rc = 0;
      break;
    }
    int wait_ms = -1;
    if (o.timeout_set) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      double el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
      if (el >= o.timeout_s) {
        if (o.count) {
          fprintf(stderr, "%s: timeout after %.1f s with %" PRIu64 " of %" PRIu64 " events\n",
                  o.prog, o.timeout_s, w->printed, o.count);
          rc = 1;
        } else {
          rc = 0;
        }
        break;
      }
      wait_ms = (int)((o.timeout_s - el) * 1000) + 1;
    }
    /* With --fill, a quiet stream is also a reason to look: events dropped
     * at the very end of a burst leave no later seq to reveal the gap. */
    bool idle_check = o.fill && (wait_ms < 0 || wait_ms > 500);
    if (idle_check) wait_ms = 500;
    int r = fq_sub_recv(sub, &topic, &body, wait_ms, &e);
    if (fq_cli_stop || r == -EINTR) {
      rc = 0;
      break;
    }
    if (r == -ETIMEDOUT) {
      if (idle_check) {
        for (int sh = 0; sh < WATCH_MAX_SHARDS; sh++) {
          if (!w->seen[sh]) continue;
          uint64_t upto = UINT64_MAX, last = w->last[sh];
          uint64_t got = watch_fill(w, (uint32_t)sh, NULL, w->last[sh], upto, &last, true, 0);
          if (got)
            fprintf(stderr,
                    "fleetq watch: shard %d: recovered %" PRIu64 " event(s) missed after seq %" PRIu64
                    "\n",
                    sh, got, w->last[sh]);
          if (last > w->last[sh]) w->last[sh] = last;
        }
      }
      continue;
    }
    if (r) {
      fprintf(stderr, "%s: dropped a malformed event: %s\n", o.prog, e.msg);
      continue;
    }
    fq_msg_t m;
    if (fq_msg_decode(&m, body.data, body.len, &e)) {
      fprintf(stderr, "%s: dropped a malformed event: %s\n", o.prog, e.msg);
      continue;
    }
    int64_t shard = -1, seq = -1, tseq = 0;
    const char *tn = NULL;
    size_t tnl = 0;
    watch_tenant_t *wt = NULL;
    /* A whole tenant is watched (not one device): its tseq tells losses
     * apart from the seq jumps of events this subscriber does not get. */
    if (!o.device && fq_mp_int(fq_mp_get(m.root, "tseq"), &tseq) && tseq > 0 &&
        fq_mp_int(fq_mp_get(m.root, "shard"), &shard) && shard >= 0 &&
        shard < WATCH_MAX_SHARDS && fq_mp_str(fq_mp_get(m.root, "tenant"), &tn, &tnl))
      wt = watch_tenant(w, (uint32_t)shard, tn, tnl);
    if (wt) {
      uint64_t t = (uint64_t)tseq;
      if (t <= wt->last) {
        fq_msg_free(&m); /* already printed from history */
        continue;
      }
      if (!wt->last && o.fill) watch_fill_first(w, (uint32_t)shard, wt, t, m.root);
      if (wt->last && t > wt->last + 1) {
        if (!o.fill) {
          fprintf(stderr,
                  "fleetq watch: gap in tenant %s on shard %" PRId64 ": tseq %" PRIu64 "..%" PRIu64
                  " missed (--fill fetches them)\n",
                  wt->tenant, shard, wt->last + 1, t - 1);
        } else {
          uint64_t from = wt->last + 1, reached = wt->last;
          uint64_t got = watch_fill(w, (uint32_t)shard, wt->tenant, wt->last, t, &reached, true, 0);
          fprintf(stderr,
                  "fleetq watch: tenant %s on shard %" PRId64 ": recovered %" PRIu64
                  " missed event(s) from history (tseq %" PRIu64 "..%" PRIu64 ")\n",
                  wt->tenant, shard, got, from, t - 1);
          if (reached + 1 < t)
            fprintf(stderr,
                    "fleetq watch: tenant %s on shard %" PRId64 ": tseq %" PRIu64 "..%" PRIu64
                    " could not be fetched: those events are missing from this output\n",
                    wt->tenant, shard, reached + 1, t - 1);
        }
      }
      if (t > wt->last) wt->last = t;
      /* The shard's seq still moves the quiet-stream look of --fill on. */
      if (fq_mp_int(fq_mp_get(m.root, "seq"), &seq) && seq >= 0 &&
          (!w->seen[shard] || (uint64_t)seq > w->last[shard]))
        w->last[shard] = (uint64_t)seq;
      w->seen[shard] = true;
    } else if (fq_mp_int(fq_mp_get(m.root, "shard"), &shard) &&
        fq_mp_int(fq_mp_get(m.root, "seq"), &seq) && shard >= 0 && shard < WATCH_MAX_SHARDS &&
        seq >= 0) {
      uint64_t s = (uint64_t)seq;
      if (o.fill && w->seen[shard] && s <= w->last[shard]) {
        /* Already printed from history while the stream was quiet. */
        fq_msg_free(&m);
        continue;
      }
      if (w->seen[shard] && s > w->last[shard] + 1) {
        /* The PUB socket drops at its high-water mark and a SUB that was
         * reconnecting misses what was sent meanwhile.  Unfiltered, every
         * jump is a loss: say so, and fetch the range on request.  With a
         * topic filter, jumps are normal (other devices share the shard);
         * only history can tell whether a matching event was lost. */
        uint64_t from = w->last[shard] + 1, to = s - 1;
        if (!prefix[0]) {
          fprintf(stderr,
                  "fleetq watch: gap in shard %" PRId64 ": events %" PRIu64 "..%" PRIu64 " missed%s\n",
                  shard, from, to, o.fill ? ", fetching them" : "");
          if (o.fill) watch_fill(w, (uint32_t)shard, NULL, w->last[shard], s, NULL, false, 0);
        } else if (o.fill) {
          uint64_t got = watch_fill(w, (uint32_t)shard, NULL, w->last[shard], s, NULL, false, 0);
          if (got)
            fprintf(stderr,
                    "fleetq watch: shard %" PRId64 ": recovered %" PRIu64
                    " missed event(s) from history (seq %" PRIu64 "..%" PRIu64 ")\n",
                    shard, got, from, to);
        }
      }
      if (!w->seen[shard] || s > w->last[shard]) w->last[shard] = s;
      w->seen[shard] = true;
    }
    if (!o.count || w->printed < o.count) {
      print_event(m.root, o.json, NULL);
      w->printed++;
    }
    fq_msg_free(&m);
  }
out:
  fq_sub_destroy(&sub);
  fq_client_destroy(&w->c);
  fq_buf_free(&topic);
  fq_buf_free(&body);
  free(w->tenants);
  free(w);
  return rc;
}

/* ------------------------------------------------------------------ */
/* ping                                                                 */

static const fq_opt_t g_ping_opts[] = {
    E_HELP,
    E_VERSION,
    E_ENDPOINT,
    {"json", 0, NULL, O_JSON, "print the daemon's reply as one JSON object"},
    E_TIMEOUT,
    E_CURVE,
    E_END,
};

static const fq_cli_doc_t g_ping_doc = {
    .usage = "fleetq ping [--endpoint EP] [--json] [--timeout S]",
    .about = "Check that the daemon answers; prints \"ok <endpoint> version <v> shards <n>\".\n",
    .notes = FQ_CLI_CURVE_NOTE,
    .exit = "0 the daemon answered, 1 it refused or did not answer, 2 usage error.",
};

static int cmd_ping(int argc, char **argv) {
  qopts_t o;
  int rc = parse_opts(argc, argv, g_ping_opts, &g_ping_doc, &o);
  if (rc >= 0) return rc;
  fq_buf_t req, raw;
  fq_msg_t m;
  fq_buf_init(&req, 256);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  fq_client_t *c = open_client(&o);
  rc = 1;
  if (!c || fq_req_ping(&req, false, 0)) goto out;
  if (round_trip(c, &o, &req, &raw, &m)) goto out;
  if (!o.json) {
    const char *ver;
    int vn = sfield(m.root, "version", &ver);
    int64_t shards = 0;
    fq_mp_int(fq_mp_get(m.root, "shards"), &shards);
    printf("ok %s version %.*s shards %" PRId64 "\n", o.endpoint, vn, ver, shards);
  }
  fq_msg_free(&m);
  rc = 0;
out:
  fq_client_destroy(&c);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

FQ_CLI_COMMAND("send", cmd_send, "submit a command (optionally --wait for its outcome)")
FQ_CLI_COMMAND("get", cmd_get, "show a command, its state and transitions")
FQ_CLI_COMMAND("cancel", cmd_cancel, "cancel a command that is still queued")
FQ_CLI_COMMAND("watch", cmd_watch, "print status events as they happen")
FQ_CLI_COMMAND("history", cmd_history, "print the stored events of one shard")
FQ_CLI_COMMAND("ping", cmd_ping, "check that the daemon answers")
