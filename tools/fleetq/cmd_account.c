/*
 * `fleetq account add | list | get | remove | retry`: manage the Tesla accounts
 * whose OAuth tokens fleetqd uses, through `op: "admin"` requests (see
 * docs/accounts.md).  Tokens are secrets: they come only from files or
 * stdin, never from the command line (where `ps` and shell history show
 * them: --access-token / --refresh-token are parsed only to refuse them
 * with the reason), are never printed, and are wiped from memory after use.
 *
 * Exit status: 0 success, 1 the daemon refused or did not answer, 2 usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "fleetq/client.h"

#define REQ_TIMEOUT_S 10.0
#define TOKEN_CAP 8192 /* FQ_TOKEN_MAX of the daemon */

enum {
  O_ENDPOINT = 1000, O_JSON, O_TIMEOUT, O_ACCOUNT, O_ACCESS, O_ACCESS_FILE, O_REFRESH,
  O_REFRESH_FILE, O_CLIENT, O_REGION, O_BASE_URL, O_HELP, O_VERSION, O_CURVE_KEY, O_SERVER_KEY,
};

/* Entries of the action tables.  --access-token / --refresh-token are
 * hidden entries of every table: parsed only to refuse them with the
 * reason (refuse_token_flag). */
#define A_COMMON_HEAD FQ_OPT_HELP(O_HELP), FQ_OPT_VERSION(O_VERSION)
#define A_ACCOUNT {"account", 0, "ID", O_ACCOUNT, "the account: 1-64 of A-Z a-z 0-9 . _ @ : -"}
#define A_COMMON_TAIL                                                          \
  FQ_CLI_OPT_ENDPOINT(O_ENDPOINT),                                             \
      {"json", 0, NULL, O_JSON, "print the daemon's reply as one JSON object"}, \
      FQ_CLI_OPT_TIMEOUT(O_TIMEOUT, "wait at most S seconds for the answer (default 10)"), \
      FQ_CLI_OPT_CURVE(O_CURVE_KEY, O_SERVER_KEY),                             \
      {"access-token", 0, "T", O_ACCESS, NULL}, {"refresh-token", 0, "T", O_REFRESH, NULL}, \
      {NULL, 0, NULL, 0, NULL}

static const fq_opt_t g_add_opts[] = {
    A_COMMON_HEAD,
    A_ACCOUNT,
    {"client-id", 0, "C", O_CLIENT, "the OAuth client id of your Tesla developer app"},
    {"region", 0, "R", O_REGION, "na, eu or cn: Tesla's Fleet API host of that region"},
    {"base-url", 0, "URL", O_BASE_URL,
     "a Fleet API base URL instead (https://; http:// only\n"
     "for a simulator on 127.0.0.1 / localhost)"},
    {"access-token-file", 0, "F", O_ACCESS_FILE,
     "read the access token from file F ('-' = stdin);\n"
     "trailing newlines are ignored"},
    {"refresh-token-file", 0, "F", O_REFRESH_FILE, "read the refresh token likewise"},
    A_COMMON_TAIL,
};

static const fq_opt_t g_list_opts[] = {A_COMMON_HEAD, A_COMMON_TAIL};
static const fq_opt_t g_one_opts[] = {A_COMMON_HEAD, A_ACCOUNT, A_COMMON_TAIL};

typedef struct aopts {
  char prog[64]; /* "fleetq account add" */
  const char *endpoint, *curve_key, *server_key;
  bool json;
  double timeout_s;
  const char *account, *access_file, *refresh_file, *client, *region, *base_url;
} aopts_t;

static const char g_about[] =
    "Register the Tesla account whose OAuth tokens fleetqd uses to send commands\n"
    "(a submit names it with \"account\"), list the registered ones, show one,\n"
    "remove one, or retry one Fleet API refused.  fleetqd stores the tokens\n"
    "encrypted (AES-256-GCM, key in <data dir>/token.key), reads the scopes and\n"
    "expiry from the access token, and refreshes it by itself about 5 minutes\n"
    "before it expires.  Adding an account that exists replaces its tokens (do\n"
    "that when `get` shows a refresh failure).  Replies never contain tokens.\n"
    "\n"
    "When Fleet API refuses a whole account (HTTP 412: the app's partner account is\n"
    "not registered in that region; 451; 401 mobile_access_disabled), fleetqd\n"
    "fails that account's later commands at once without sending them, and `get`\n"
    "shows the refusal.  Fix the cause, then `retry` (or `add` again) sends them\n"
    "again.\n";

static const char g_notes[] =
    "Security: tokens are read only from files or standard input.  --access-token\n"
    "and --refresh-token are refused (exit 2): a token on the command line is\n"
    "visible to every local user (ps, /proc) and stays in your shell history.\n"
    "Keep the token files mode 0600, e.g.\n"
    "  fleetq account add --account me --client-id C --region na \\\n"
    "      --access-token-file at.txt --refresh-token-file - < rt.txt\n"
    "Admin requests need a client key with the admin role when fleetqd runs with\n"
    "CURVE; without CURVE fleetqd listens on this host only.\n"
    "\n" FQ_CLI_CURVE_NOTE;

static const char g_exit[] = "0 ok, 1 the daemon refused (not_found, bad_param, ...) or did\n"
                             "not answer, 2 usage error.";

/* The actions: their table and the request action they send. */
typedef struct action {
  const char *name;
  const fq_opt_t *opts;
  const char *op; /* the admin action */
  fq_cli_doc_t doc;
} action_t;

static const action_t g_actions[] = {
    {"add", g_add_opts, "account_add",
     {.usage = "fleetq account add --account ID --client-id C\n"
               "                          --access-token-file F --refresh-token-file F\n"
               "                          (--region na|eu|cn | --base-url URL) [--json]",
      .about = "Register an account, or replace the tokens of one; prints what fleetqd\n"
               "read from the access token (scopes, expiry).\n",
      .notes = g_notes,
      .exit = g_exit}},
    {"list", g_list_opts, "account_list",
     {.usage = "fleetq account list [--json]",
      .about = "List the registered accounts: region, access token expiry, scopes, status.\n",
      .notes = FQ_CLI_CURVE_NOTE,
      .exit = g_exit}},
    {"get", g_one_opts, "account_get",
     {.usage = "fleetq account get --account ID [--json]",
      .about = "Show one account, with its refresh failure or refusal if any.\n",
      .notes = FQ_CLI_CURVE_NOTE,
      .exit = g_exit}},
    {"remove", g_one_opts, "account_remove",
     {.usage = "fleetq account remove --account ID [--json]",
      .about = "Remove an account and its tokens.\n",
      .notes = FQ_CLI_CURVE_NOTE,
      .exit = g_exit}},
    {"retry", g_one_opts, "account_retry",
     {.usage = "fleetq account retry --account ID [--json]",
      .about = "Clear the refusal recorded for an account, so that its next commands\n"
               "are sent again.\n",
      .notes = FQ_CLI_CURVE_NOTE,
      .exit = g_exit}},
};

/* `fleetq account --help`: every action, then the options of add (the
 * others take a subset). */
static void overview(FILE *f) {
  fq_cli_doc_t d = {.usage = "fleetq account add --account ID --client-id C\n"
                             "                          --access-token-file F --refresh-token-file F\n"
                             "                          (--region na|eu|cn | --base-url URL)\n"
                             "       fleetq account list\n"
                             "       fleetq account get --account ID\n"
                             "       fleetq account remove --account ID\n"
                             "       fleetq account retry --account ID\n"
                             "common options: [--endpoint EP] [--json] [--timeout S]\n"
                             "                [--curve-key FILE --server-key Z85]\n"
                             "'fleetq account <action> --help' describes one action.",
                    .about = g_about,
                    .notes = g_notes,
                    .exit = g_exit};
  fq_cli_help(f, &d, g_add_opts);
}

/* --access-token / --refresh-token: refuse, say why and what instead.  The
 * value is wiped from argv, so that it stops showing in /proc/<pid>/cmdline
 * for the rest of this (short) run; it has been visible until now, which
 * is the point of the refusal. */
static int refuse_token_flag(const aopts_t *o, const char *flag, char *value) {
  if (value) OPENSSL_cleanse(value, strlen(value));
  return fq_opt_usage_error(
      o->prog,
      "%s is refused: a token on the command line is visible to every local user "
      "(ps, /proc) and is kept in your shell history; put it in a file readable only "
      "by you and use %s-file F, or %s-file - to read it from standard input",
      flag, flag, flag);
}

/* Parse the options after the action word.  -1: fine; 0: --help or
 * --version shown; 2: usage error. */
static int parse_opts(int argc, char **argv, const action_t *act, aopts_t *o) {
  memset(o, 0, sizeof *o);
  snprintf(o->prog, sizeof o->prog, "fleetq account %s", act->name);
  o->endpoint = FQ_CLI_DEFAULT_ENDPOINT;
  o->timeout_s = REQ_TIMEOUT_S;
  fq_opt_parser_t p;
  fq_opt_init(&p, o->prog, act->opts, argc, argv);
  int c;
  while ((c = fq_opt_next(&p)) != FQ_OPT_END) {
    const char *v = p.value;
    switch (c) {
    case FQ_OPT_ERROR: return 2;
    case O_HELP: fq_cli_help(stdout, &act->doc, act->opts); return 0;
    case O_VERSION: return fq_opt_version(o->prog);
    case O_ENDPOINT: o->endpoint = v; break;
    case O_CURVE_KEY: o->curve_key = v; break;
    case O_SERVER_KEY: o->server_key = v; break;
    case O_JSON: o->json = true; break;
    case O_TIMEOUT: {
      char *end = NULL;
      o->timeout_s = strtod(v, &end);
      if (!end || *end || !(o->timeout_s > 0) || o->timeout_s > 3600)
        return fq_opt_usage_error(o->prog, "--timeout wants seconds > 0, got '%s'", v);
      break;
    }
    case O_ACCOUNT: o->account = v; break;
    case O_ACCESS: return refuse_token_flag(o, "--access-token", (char *)v);
    case O_ACCESS_FILE: o->access_file = v; break;
    case O_REFRESH: return refuse_token_flag(o, "--refresh-token", (char *)v);
    case O_REFRESH_FILE: o->refresh_file = v; break;
    case O_CLIENT: o->client = v; break;
    case O_REGION: o->region = v; break;
    case O_BASE_URL: o->base_url = v; break;
    default: return fq_opt_usage_error(o->prog, "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next < argc) return fq_opt_usage_error(o->prog, "unexpected argument '%s'", argv[p.next]);
  fq_client_opts_t co = {.curve_key_file = o->curve_key, .server_key = o->server_key};
  int rc = fq_cli_conn_resolve(o->prog + strlen("fleetq "), &co);
  if (rc >= 0) return rc;
  o->curve_key = co.curve_key_file;
  o->server_key = co.server_key;
  return -1;
}

/* Read one token from path ("-" = stdin) into out[TOKEN_CAP + 1]:
 * trailing whitespace dropped, must be non-empty.  Returns 0, or 2 after
 * reporting a usage error. */
static int read_token(const char *prog, const char *path, const char *what, char *out) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
  if (!f)
    return fq_opt_usage_error(prog, "cannot open %s file %s: %s", what, path, fq_strerror(-errno));
  if (f != stdin) {
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
      fprintf(stderr,
              "fleetq account: warning: %s file %s is readable by other users (chmod 600 it)\n",
              what, path);
  }
  size_t n = fread(out, 1, TOKEN_CAP + 1, f);
  bool more = n > TOKEN_CAP;
  if (f != stdin) fclose(f);
  if (more) {
    OPENSSL_cleanse(out, TOKEN_CAP + 1);
    return fq_opt_usage_error(prog, "%s in %s is longer than %d bytes", what, path, TOKEN_CAP);
  }
  while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' ||
                   out[n - 1] == '\t'))
    n--;
  out[n] = 0;
  if (n == 0) return fq_opt_usage_error(prog, "%s file %s is empty", what, path);
  return 0;
}

static int buf_write(void *data, const char *b, size_t len) {
  return fq_buf_append(data, b, len) ? -1 : 0;
}

static void pstr(msgpack_packer *pk, const char *s) { msgpack_pack_str_with_body(pk, s, strlen(s)); }

static void pkv(msgpack_packer *pk, const char *k, const char *v) {
  pstr(pk, k);
  pstr(pk, v);
}

/* UTC time of a Unix second, and how far away it is. */
static void fmt_exp(int64_t s, char *out, size_t cap) {
  time_t t = (time_t)s;
  struct tm tm;
  if (s <= 0 || !gmtime_r(&t, &tm)) {
    snprintf(out, cap, "unknown (not a JWT)");
    return;
  }
  char day[40];
  strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%SZ", &tm);
  int64_t d = s - (int64_t)time(NULL);
  if (d < 0)
    snprintf(out, cap, "%s (expired)", day);
  else
    snprintf(out, cap, "%s (in %" PRId64 "h%02" PRId64 "m)", day, d / 3600, d % 3600 / 60);
}

static int sfield(const msgpack_object *map, const char *key, const char **p) {
  size_t n = 0;
  if (!fq_mp_str(fq_mp_get(map, key), p, &n)) {
    *p = "-";
    return 1;
  }
  return (int)n;
}

static void scopes_text(const msgpack_object *acc, char *out, size_t cap) {
  const msgpack_object *sc = fq_mp_get(acc, "scopes");
  size_t k = 0;
  out[0] = 0;
  if (sc && sc->type == MSGPACK_OBJECT_ARRAY)
    for (uint32_t i = 0; i < sc->via.array.size; i++) {
      const char *p;
      size_t n;
      if (!fq_mp_str(&sc->via.array.ptr[i], &p, &n)) continue;
      int w = snprintf(out + k, cap - k, "%s%.*s", k ? "," : "", (int)n, p);
      if (w < 0 || (size_t)w >= cap - k) break;
      k += (size_t)w;
    }
  if (!out[0]) snprintf(out, cap, "-");
}

static void print_account(const msgpack_object *acc) {
  const char *id, *client, *region, *base, *fail;
  int in = sfield(acc, "id", &id), cn = sfield(acc, "client_id", &client),
      rn = sfield(acc, "region", &region), bn = sfield(acc, "base_url", &base),
      fn = sfield(acc, "refresh_failure", &fail);
  const char *refused, *refused_code;
  int fdn = sfield(acc, "refused", &refused), fcn = sfield(acc, "refused_error", &refused_code);
  int64_t exp = 0;
  fq_mp_int(fq_mp_get(acc, "access_expires"), &exp);
  char when[80], scopes[256];
  fmt_exp(exp, when, sizeof when);
  scopes_text(acc, scopes, sizeof scopes);
  printf("account         %.*s\n", in, id);
  printf("client_id       %.*s\n", cn, client);
  if (strcmp(region, "-") != 0) printf("region          %.*s\n", rn, region);
  if (strcmp(base, "-") != 0) printf("base_url        %.*s\n", bn, base);
  printf("scopes          %s\n", scopes);
  printf("access_expires  %s\n", when);
  if (strcmp(fail, "-") != 0) printf("refresh_failure %.*s\n", fn, fail);
  if (strcmp(refused, "-") != 0)
    printf("refused         %.*s: %.*s\n", fcn, refused_code, fdn, refused);
}

/* Send req and decode the reply; 0 when ok: true (m live), 1 otherwise. */
static int round_trip(const aopts_t *o, const fq_buf_t *req, fq_buf_t *raw, fq_msg_t *m) {
  fq_err_t e;
  bool ok = false;
  memset(m, 0, sizeof *m);
  fq_client_opts_t co = {.endpoint = o->endpoint, .timeout_ms = (int)(o->timeout_s * 1000),
                         .curve_key_file = o->curve_key, .server_key = o->server_key};
  fq_client_t *c = fq_client_new_opts(&co, &e);
  if (!c) {
    fprintf(stderr, "%s: %s: %s\n", o->prog, fq_errname(e.code), e.msg);
    return 1;
  }
  int rc = fq_client_request(c, req->data, req->len, raw, &e);
  fq_client_destroy(&c);
  if (rc) {
    fprintf(stderr, "%s: %s: %s\n", o->prog, rc == -ETIMEDOUT ? "timeout" : fq_errname(rc),
            rc == -ETIMEDOUT ? "no answer from fleetqd (is it running? --endpoint?)" : e.msg);
    return 1;
  }
  if (o->json) {
    fq_buf_t js;
    fq_buf_init(&js, 4 * FQ_CLIENT_MAX_REPLY);
    if (fq_msgpack_to_json(raw->data, raw->len, &js, 0) == 0)
      printf("%.*s\n", (int)js.len, (const char *)js.data);
    fq_buf_free(&js);
  }
  if (fq_msg_decode(m, raw->data, raw->len, &e)) {
    fprintf(stderr, "%s: bad_reply: %s\n", o->prog, e.msg);
    return 1;
  }
  if (!fq_mp_bool(fq_mp_get(m->root, "ok"), &ok) || !ok) {
    const char *code, *msg;
    int cn = sfield(m->root, "error", &code), mn = sfield(m->root, "message", &msg);
    fprintf(stderr, "%s: %.*s: %.*s\n", o->prog, cn, code, mn, msg);
    fq_msg_free(m);
    return 1;
  }
  return 0;
}

static int do_add(const aopts_t *o, fq_buf_t *req) {
  const char *prog = o->prog;
  if (!o->account || !o->client)
    return fq_opt_usage_error(prog, "add needs --account and --client-id");
  if (!o->access_file)
    return fq_opt_usage_error(prog, "add needs --access-token-file F ('-' = stdin)");
  if (!o->refresh_file)
    return fq_opt_usage_error(prog, "add needs --refresh-token-file F ('-' = stdin)");
  if (!!o->region == !!o->base_url)
    return fq_opt_usage_error(prog, "give one of --region and --base-url");
  if (strcmp(o->access_file, "-") == 0 && strcmp(o->refresh_file, "-") == 0)
    return fq_opt_usage_error(prog, "only one of the tokens can come from stdin");
  int rc = 2;
  char *at = calloc(1, TOKEN_CAP + 2), *rt = calloc(1, TOKEN_CAP + 2);
  if (!at || !rt) {
    fprintf(stderr, "%s: out of memory\n", prog);
    rc = 1;
    goto out;
  }
  if (read_token(prog, o->access_file, "access token", at)) goto out;
  if (read_token(prog, o->refresh_file, "refresh token", rt)) goto out;
  msgpack_packer pk;
  msgpack_packer_init(&pk, req, buf_write);
  msgpack_pack_map(&pk, 7);
  pkv(&pk, "op", "admin");
  pkv(&pk, "action", "account_add");
  pkv(&pk, "account", o->account);
  pkv(&pk, "access_token", at);
  pkv(&pk, "refresh_token", rt);
  pkv(&pk, "client_id", o->client);
  if (o->region) pkv(&pk, "region", o->region);
  else pkv(&pk, "base_url", o->base_url);
  rc = -1;
out:
  if (at) OPENSSL_cleanse(at, TOKEN_CAP + 2);
  if (rt) OPENSSL_cleanse(rt, TOKEN_CAP + 2);
  free(at);
  free(rt);
  return rc;
}

static int cmd_account(int argc, char **argv) {
  if (argc < 2) {
    overview(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    overview(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) return fq_opt_version("fleetq");
  const char *action = argv[1];
  const action_t *act = NULL;
  for (size_t i = 0; i < sizeof g_actions / sizeof g_actions[0]; i++)
    if (strcmp(action, g_actions[i].name) == 0) act = &g_actions[i];
  if (!act) {
    /* An option first ("--account x list") is the most likely slip. */
    if (action[0] == '-')
      return fq_opt_usage_error("fleetq account",
                                "expected an action (add, list, get, remove, retry) before '%s'",
                                action);
    return fq_opt_usage_error("fleetq account",
                              "unknown action '%s' (add, list, get, remove, retry)", action);
  }
  aopts_t o;
  int rc = parse_opts(argc - 1, argv + 1, act, &o);
  if (rc >= 0) return rc;
  bool add = act->opts == g_add_opts, get = strcmp(action, "get") == 0, rem = strcmp(action, "remove") == 0,
       retry = strcmp(action, "retry") == 0;
  if ((get || rem || retry) && !o.account)
    return fq_opt_usage_error(o.prog, "--account ID is required");

  fq_buf_t req, raw;
  fq_msg_t m;
  fq_buf_init(&req, 64 * 1024);
  fq_buf_init(&raw, FQ_CLIENT_MAX_REPLY);
  if (add) {
    if ((rc = do_add(&o, &req)) >= 0) goto out;
  } else {
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req, buf_write);
    msgpack_pack_map(&pk, o.account ? 3 : 2);
    pkv(&pk, "op", "admin");
    pkv(&pk, "action", act->op);
    if (o.account) pkv(&pk, "account", o.account);
  }
  rc = round_trip(&o, &req, &raw, &m);
  if (rc) goto out;
  if (!o.json) {
    if (add) {
      const msgpack_object *acc = fq_mp_get(m.root, "account");
      int64_t exp = 0;
      printf("account added\n");
      print_account(acc);
      if (!fq_mp_int(fq_mp_get(acc, "access_expires"), &exp))
        printf("note: the access token is not a JWT, so its scopes and expiry are unknown;\n"
               "      fleetqd refreshes it when Fleet API answers 401\n");
    } else if (get) {
      print_account(fq_mp_get(m.root, "account"));
    } else if (rem) {
      printf("account %s removed\n", o.account);
    } else if (retry) {
      bool cleared = false;
      fq_mp_bool(fq_mp_get(m.root, "cleared"), &cleared);
      printf(cleared ? "account %s: refusal cleared, its next commands are sent\n"
                     : "account %s: no refusal recorded, nothing to clear\n",
             o.account);
    } else {
      const msgpack_object *arr = fq_mp_get(m.root, "accounts");
      uint32_t n = arr && arr->type == MSGPACK_OBJECT_ARRAY ? arr->via.array.size : 0;
      if (n == 0) {
        printf("no accounts (add one with 'fleetq account add')\n");
      } else {
        printf("%-24s %-6s %-34s %-30s %s\n", "ACCOUNT", "REGION", "ACCESS EXPIRES", "SCOPES",
               "STATUS");
        for (uint32_t i = 0; i < n; i++) {
          const msgpack_object *a = &arr->via.array.ptr[i];
          const char *id, *region, *fail, *refused;
          int in = sfield(a, "id", &id), rn = sfield(a, "region", &region);
          sfield(a, "refresh_failure", &fail);
          sfield(a, "refused", &refused);
          int64_t exp = 0;
          fq_mp_int(fq_mp_get(a, "access_expires"), &exp);
          char when[80], scopes[256];
          fmt_exp(exp, when, sizeof when);
          scopes_text(a, scopes, sizeof scopes);
          printf("%-24.*s %-6.*s %-34s %-30s %s\n", in, id, rn, region, when, scopes,
                 strcmp(fail, "-")      ? "REFRESH FAILED (see 'fleetq account get')"
                 : strcmp(refused, "-") ? "REFUSED (see 'fleetq account get')"
                                        : "ok");
        }
      }
    }
  }
  fq_msg_free(&m);
  rc = 0;
out:
  /* The request of an add holds both tokens. */
  if (req.data) OPENSSL_cleanse(req.data, req.alloc);
  fq_buf_free(&req);
  fq_buf_free(&raw);
  return rc;
}

FQ_CLI_COMMAND("account", cmd_account,
               "add, list, get, remove or retry Tesla accounts (admin)")
