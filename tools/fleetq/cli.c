/*
 * What the fleetq subcommands share (cli.h): the layout of their --help
 * around the option list their table prints, and the connection options
 * (CURVE keys from --curve-key / --server-key or the environment, checked
 * once after parsing so that a wrong or half setup is a usage error naming
 * the flag, not a timeout), and the parsing of times.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "cli.h"
#include "fleetq/client.h"

void fq_cli_help(FILE *f, const fq_cli_doc_t *doc, const fq_opt_t *opts) {
  fprintf(f, "usage: %s\n", doc->usage);
  if (doc->about) fprintf(f, "\n%s", doc->about);
  fprintf(f, "\nOptions:\n");
  fq_opt_print(f, opts);
  if (doc->notes) fprintf(f, "\n%s", doc->notes);
  if (doc->exit) fprintf(f, "\nExit status: %s\n", doc->exit);
}

int fq_cli_conn_resolve(const char *cmd, fq_client_opts_t *o) {
  fq_err_t e;
  fq_err_clear(&e);
  if (fq_client_opts_resolve(o, &e) == 0) return -1;
  fprintf(stderr, "fleetq %s: %s\n", cmd, e.msg);
  return 2;
}

bool fq_cli_parse_time(const char *s, int64_t *ms) {
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

bool fq_cli_parse_when(const char *s, int64_t now_ms, int64_t *ms) {
  if (*s != '+') return fq_cli_parse_time(s, ms);
  /* +N followed by one unit: ms, s, m, h or d. */
  const char *p = s + 1;
  if (!isdigit((unsigned char)*p)) return false;
  char *end = NULL;
  errno = 0;
  unsigned long long n = strtoull(p, &end, 10);
  if (errno || end == p) return false;
  int64_t unit;
  if (strcmp(end, "ms") == 0) unit = 1;
  else if (strcmp(end, "s") == 0) unit = 1000;
  else if (strcmp(end, "m") == 0) unit = 60000;
  else if (strcmp(end, "h") == 0) unit = 3600000;
  else if (strcmp(end, "d") == 0) unit = 86400000;
  else return false;
  /* A year ahead is far past what the daemon takes: refuse before any
   * overflow, the daemon's own bound says the rest. */
  if (n > (unsigned long long)(366LL * 86400000 / unit)) return false;
  *ms = now_ms + (int64_t)n * unit;
  return true;
}

/* ---- one-request subcommands ------------------------------------------------ */

int fq_cli_conn_finish(const char *cmd, fq_client_opts_t *o, const char *endpoint,
                       double timeout_s) {
  int crc = fq_cli_conn_resolve(cmd, o);
  if (crc >= 0) return crc;
  o->endpoint = endpoint;
  o->timeout_ms = (int)(timeout_s * 1000);
  return -1;
}

int fq_cli_parse_timeout(const char *prog, const char *v, double *s) {
  char *end = NULL;
  *s = strtod(v, &end);
  if (!end || *end || !(*s > 0) || *s > 3600)
    return fq_opt_usage_error(prog, "--timeout wants seconds > 0, got '%s'", v);
  return 0;
}

int fq_cli_request_opts(const char *cmd, const fq_opt_t *opts, const fq_cli_doc_t *doc, int argc,
                        char **argv, fq_client_opts_t *co, bool *json, fq_cli_own_opt_fn own,
                        void *ctx) {
  char prog[64];
  snprintf(prog, sizeof prog, "fleetq %s", cmd);
  const char *endpoint = FQ_CLI_DEFAULT_ENDPOINT;
  double timeout_s = 5;
  *json = false;
  fq_opt_parser_t p;
  fq_opt_init(&p, prog, opts, argc, argv);
  int oc;
  while ((oc = fq_opt_next(&p)) != FQ_OPT_END) {
    const char *v = p.value;
    int rc;
    switch (oc) {
    case FQ_OPT_ERROR: return 2;
    case FQ_CLI_O_HELP: fq_cli_help(stdout, doc, opts); return 0;
    case FQ_CLI_O_VERSION: return fq_opt_version(prog);
    case FQ_CLI_O_JSON: *json = true; break;
    case FQ_CLI_O_ENDPOINT: endpoint = v; break;
    case FQ_CLI_O_CURVE_KEY: co->curve_key_file = v; break;
    case FQ_CLI_O_SERVER_KEY: co->server_key = v; break;
    case FQ_CLI_O_TIMEOUT:
      if (fq_cli_parse_timeout(prog, v, &timeout_s)) return 2;
      break;
    default:
      rc = oc >= FQ_CLI_O_OWN && own ? own(ctx, prog, oc, v) : -1;
      if (rc < 0) return fq_opt_usage_error(prog, "option --%s is not handled", p.opt->name);
      if (rc) return rc;
    }
  }
  if (p.next < argc) return fq_opt_usage_error(prog, "unexpected argument '%s'", argv[p.next]);
  return fq_cli_conn_finish(cmd, co, endpoint, timeout_s);
}

int fq_cli_ask(const char *prog, const fq_client_opts_t *o, const fq_buf_t *req, fq_buf_t *raw,
               fq_msg_t *m) {
  fq_err_t e;
  fq_err_clear(&e);
  int rc = FQ_CLI_ASK_FAILED;
  bool decoded = false;
  fq_client_t *c = fq_client_new_opts(o, &e);
  if (!c) {
    fprintf(stderr, "%s: %s: %s\n", prog, fq_errname(e.code), e.msg);
    return rc;
  }
  int qrc = fq_client_request(c, req->data, req->len, raw, &e);
  if (qrc) {
    bool away = qrc == -ETIMEDOUT;
    fprintf(stderr, "%s: %s%s: %s\n", prog, away ? "cannot reach fleetqd at " : fq_errname(qrc),
            away ? o->endpoint : "", e.msg);
    if (away) rc = FQ_CLI_ASK_UNREACHABLE;
    goto out;
  }
  if (fq_msg_decode(m, raw->data, raw->len, &e)) {
    fprintf(stderr, "%s: bad_reply: %s\n", prog, e.msg);
    goto out;
  }
  decoded = true;
  bool ok = false;
  if (!fq_mp_bool(fq_mp_get(m->root, "ok"), &ok) || !ok) {
    const char *code = "error", *msg = "";
    size_t cn = 5, mn = 0;
    fq_mp_str(fq_mp_get(m->root, "error"), &code, &cn);
    fq_mp_str(fq_mp_get(m->root, "message"), &msg, &mn);
    fprintf(stderr, "%s: %.*s: %.*s\n", prog, (int)cn, code, (int)mn, msg);
    goto out;
  }
  rc = FQ_CLI_ASK_OK;
out:
  if (decoded && rc != FQ_CLI_ASK_OK) fq_msg_free(m);
  fq_client_destroy(&c);
  return rc;
}

void fq_cli_print_json(const fq_buf_t *raw) {
  fq_buf_t js;
  fq_buf_init(&js, 4 * FQ_CLIENT_MAX_REPLY);
  if (fq_msgpack_to_json(raw->data, raw->len, &js, 0) == 0)
    printf("%.*s\n", (int)js.len, (const char *)js.data);
  fq_buf_free(&js);
}

volatile sig_atomic_t fq_cli_stop;

static void on_stop_signal(int sig) {
  (void)sig;
  fq_cli_stop = 1;
}

void fq_cli_catch_stop(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

void fq_cli_fmt_time(int64_t ms, char *out, size_t cap) {
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  if (ms <= 0 || !gmtime_r(&s, &tm)) {
    snprintf(out, cap, "-");
    return;
  }
  char day[32];
  strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, cap, "%s.%03dZ", day, (int)(ms % 1000));
}

static int pack_to_buf(void *data, const char *b, size_t len) {
  return fq_buf_append(data, b, len) ? -1 : 0;
}

void fq_cli_print_value(const msgpack_object *v, bool as_time) {
  int64_t i;
  switch (v->type) {
  case MSGPACK_OBJECT_STR: printf("%.*s", (int)v->via.str.size, v->via.str.ptr); break;
  case MSGPACK_OBJECT_NIL: printf("-"); break;
  case MSGPACK_OBJECT_BOOLEAN: printf("%s", v->via.boolean ? "true" : "false"); break;
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64: printf("%g", v->via.f64); break;
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    if (as_time && fq_mp_int(v, &i) && i > 0) {
      char when[40];
      fq_cli_fmt_time(i, when, sizeof when);
      printf("%s", when);
    } else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
      printf("%" PRIu64, v->via.u64);
    } else {
      printf("%" PRId64, v->via.i64);
    }
    break;
  default: {
    /* Nested values (params) as compact JSON: msgpack again, then JSON. */
    fq_buf_t mp, js;
    msgpack_packer pk;
    fq_buf_init(&mp, FQ_CLIENT_MAX_REPLY);
    fq_buf_init(&js, FQ_CLIENT_MAX_REPLY);
    msgpack_packer_init(&pk, &mp, pack_to_buf);
    if (msgpack_pack_object(&pk, *v) == 0 && fq_msgpack_to_json(mp.data, mp.len, &js, 0) == 0)
      printf("%.*s", (int)js.len, (const char *)js.data);
    fq_buf_free(&mp);
    fq_buf_free(&js);
  }
  }
}

bool fq_cli_is_terminal(const char *s, size_t n) {
  static const char *const terminal[] = {"succeeded", "failed",    "unknown",
                                         "expired",   "cancelled", "superseded", NULL};
  for (const char *const *t = terminal; *t; t++)
    if (strlen(*t) == n && memcmp(*t, s, n) == 0) return true;
  return false;
}
