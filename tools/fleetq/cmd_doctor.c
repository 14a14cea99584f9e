/*
 * fleetq doctor: check, against Fleet API, what an account needs before
 * fleetqd's commands can work, and say what to fix where.
 *
 * The checks: the access token (present, not expired, accepted), its
 * OAuth scopes (vehicle_cmds, vehicle_charging_cmds, energy_cmds), the
 * account's region (GET /api/1/users/region: the host fleetqd would use
 * must be the account's), the app's public key registered for the domain
 * (GET /api/1/partner_accounts/public_key?domain=) against the fleet key
 * fleetqd signs with, and per VIN whether that key is paired and whether
 * the car needs signed commands (POST /api/1/vehicles/fleet_status).
 *
 * Like `fleetq backup`, it reads the data directory directly (the account
 * store and token.key, so it runs on fleetqd's host as its user): the
 * daemon never hands tokens out, by design.  It only reads the stored
 * access token: it never refreshes it (Tesla refresh tokens are single
 * use, and fleetqd owns them).  Tokens never appear in its output.
 *
 * Exit status: 0 every check passed, 1 one failed, 2 usage error, 3 Fleet
 * API could not be reached (transport failure or a 5xx answer).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "accounts.h"
#include "cli.h"
#include "fleetapi.h"
#include "fleetstatus.h"
#include "fleetq/commands.h"
#include "fleetq/error.h"
#include "http.h"
#include "util.h"
#include "vcp.h"

#define DOCTOR_MAX_VINS 100
#define DOCTOR_MAX_CHECKS (DOCTOR_MAX_VINS + 8)
#define DOCTOR_EXIT_UNREACHABLE 3
#define PORTAL_LINK "https://developer.tesla.com/dashboard"
#define REGISTER_LINK \
  "https://developer.tesla.com/docs/fleet-api/endpoints/partner-endpoints#register"

enum {
  D_HELP = 1000, D_VERSION, D_ACCOUNT, D_VIN, D_DATA, D_KEY, D_DOMAIN, D_CONFIG, D_CA_FILE,
  D_PARTNER_TOKEN, D_TIMEOUT, D_JSON,
};

static const fq_opt_t g_opts[] = {
    FQ_OPT_HELP(D_HELP),
    FQ_OPT_VERSION(D_VERSION),
    {"account", 0, "ID", D_ACCOUNT, "the account to check (required)"},
    {"vin", 0, "VIN", D_VIN, "also check this car (repeatable, up to 100)"},
    {"config", 0, "FILE", D_CONFIG,
     "fleetqd's JSON config: data, key, pairing_domain and\n"
     "ca_file are taken from it unless given as flags"},
    {"data", 0, "DIR", D_DATA, "fleetqd's data directory (default ./fleetq-data)"},
    {"key", 0, "PEM", D_KEY, "the fleet key fleetqd signs with (its --key; the\n"
                             "public key PEM does as well) (required)"},
    {"domain", 0, "D", D_DOMAIN, "the app's domain (fleetqd's --pairing-domain)\n"
                                 "(required)"},
    {"ca-file", 0, "PEM", D_CA_FILE, "extra trusted CA for Fleet API TLS (a simulator's)"},
    {"partner-token-file", 0, "F", D_PARTNER_TOKEN,
     "a partner token for the public key lookup ('-' =\n"
     "stdin); default: the account's access token"},
    FQ_CLI_OPT_TIMEOUT(D_TIMEOUT, "wait at most S seconds per request (default 10)"),
    {"json", 0, NULL, D_JSON, "print the checks as one JSON object"},
    {NULL, 0, NULL, 0, NULL},
};

static const fq_cli_doc_t g_doc = {
    .usage = "fleetq doctor --account ID [--vin VIN ...] [--config FILE]\n"
             "                     [--data DIR] [--key PEM] [--domain D] [--ca-file PEM]\n"
             "                     [--partner-token-file F] [--timeout S] [--json]",
    .about =
        "Check an account against Fleet API and say what to fix: its access token\n"
        "and OAuth scopes (vehicle_cmds, vehicle_charging_cmds, energy_cmds), its\n"
        "region (GET /api/1/users/region), the public key the app registered for\n"
        "the domain against the fleet key (GET\n"
        "/api/1/partner_accounts/public_key?domain=D), and for each --vin whether\n"
        "the key is paired and the car needs signed commands (POST\n"
        "/api/1/vehicles/fleet_status).  Each check prints pass or FAIL; a FAIL\n"
        "says what to do and where (the pairing link https://tesla.com/_ak/D, the\n"
        "developer portal, the consent page).\n",
    .notes = "It reads the account's stored access token from the data directory\n"
             "(accounts/ and token.key), so run it on fleetqd's host as fleetqd's\n"
             "user; it never refreshes the token and never prints it.  Tesla answers\n"
             "the public key lookup only to a partner token: with a user token it may\n"
             "refuse (then give --partner-token-file).  The requests are billed like\n"
             "any other (two or three per run).\n",
    .exit = "0 every check passed, 1 a check failed (or the account or the\n"
            "fleet key could not be read), 2 usage error, 3 Fleet API could not be\n"
            "reached (connection failed, timed out, or answered 5xx).",
};

static const char g_prog[] = "fleetq doctor";

typedef struct dopts {
  const char *account, *data, *key, *domain, *ca_file, *config, *partner_file;
  const char *vins[DOCTOR_MAX_VINS];
  size_t nvins;
  double timeout_s;
  bool json;
  json_t *cfg; /* the parsed --config, owning the strings taken from it */
} dopts_t;

/* One check's outcome. */
typedef struct check {
  char name[40];
  bool ok;
  char detail[512];
  char fix[512];
  char link[300];
} check_t;

typedef struct doctor {
  dopts_t *o;
  check_t checks[DOCTOR_MAX_CHECKS];
  size_t nchecks;
  bool unreachable;
  char unreachable_why[512];
  fq_http_t *http;
  char base[FQ_BASE_URL_MAX + 1]; /* the account's Fleet API base URL, no trailing '/' */
} doctor_t;

static check_t *add_check(doctor_t *d, const char *name, bool ok) {
  check_t *c = &d->checks[d->nchecks < DOCTOR_MAX_CHECKS ? d->nchecks++ : DOCTOR_MAX_CHECKS - 1];
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "%s", name);
  c->ok = ok;
  return c;
}

/* ---- options ------------------------------------------------------------- */

static bool valid_vin(const char *v) {
  if (strlen(v) != 17) return false;
  for (const char *p = v; *p; p++)
    if (!isalnum((unsigned char)*p)) return false;
  return true;
}

static bool valid_domain(const char *d) {
  size_t n = strlen(d);
  if (n == 0 || n > 253) return false;
  for (const char *p = d; *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-') return false;
  return true;
}

/* A string setting of fleetqd's config file: "pairing_domain" or
 * "pairing-domain" alike (fleetqd accepts both). */
static const char *cfg_str(json_t *cfg, const char *under, const char *dash) {
  json_t *v = json_object_get(cfg, under);
  if (!v) v = json_object_get(cfg, dash);
  return json_string_value(v);
}

static int parse_opts(int argc, char **argv, dopts_t *o) {
  memset(o, 0, sizeof *o);
  o->timeout_s = 10.0;
  fq_opt_parser_t p;
  fq_opt_init(&p, g_prog, g_opts, argc, argv);
  int c;
  while ((c = fq_opt_next(&p)) != FQ_OPT_END) {
    const char *v = p.value;
    switch (c) {
    case FQ_OPT_ERROR: return 2;
    case D_HELP: fq_cli_help(stdout, &g_doc, g_opts); return 0;
    case D_VERSION: return fq_opt_version(g_prog);
    case D_ACCOUNT: o->account = v; break;
    case D_VIN:
      if (!valid_vin(v))
        return fq_opt_usage_error(g_prog, "--vin wants 17 letters and digits, got '%s'", v);
      if (o->nvins == DOCTOR_MAX_VINS)
        return fq_opt_usage_error(g_prog, "at most %d --vin", DOCTOR_MAX_VINS);
      o->vins[o->nvins++] = v;
      break;
    case D_DATA: o->data = v; break;
    case D_KEY: o->key = v; break;
    case D_DOMAIN: o->domain = v; break;
    case D_CONFIG: o->config = v; break;
    case D_CA_FILE: o->ca_file = v; break;
    case D_PARTNER_TOKEN: o->partner_file = v; break;
    case D_TIMEOUT: {
      char *end = NULL;
      o->timeout_s = strtod(v, &end);
      if (!end || *end || !(o->timeout_s > 0) || o->timeout_s > 600)
        return fq_opt_usage_error(g_prog, "--timeout wants seconds in (0, 600], got '%s'", v);
      break;
    }
    case D_JSON: o->json = true; break;
    default: return fq_opt_usage_error(g_prog, "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next < argc) return fq_opt_usage_error(g_prog, "unexpected argument '%s'", argv[p.next]);
  if (!o->account) return fq_opt_usage_error(g_prog, "--account ID is required");
  if (o->config) {
    json_error_t je;
    o->cfg = json_load_file(o->config, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o->cfg))
      return fq_opt_usage_error(g_prog, "--config %s: %s (line %d)", o->config,
                                o->cfg ? "not a JSON object" : je.text, je.line);
    if (!o->data) o->data = cfg_str(o->cfg, "data", "data");
    if (!o->key) o->key = cfg_str(o->cfg, "key", "key");
    if (!o->domain) o->domain = cfg_str(o->cfg, "pairing_domain", "pairing-domain");
    if (!o->ca_file) o->ca_file = cfg_str(o->cfg, "ca_file", "ca-file");
  }
  if (!o->data) o->data = "./fleetq-data";
  if (!o->key)
    return fq_opt_usage_error(g_prog, "the fleet key is needed: --key PEM (or \"key\" in --config)");
  if (!o->domain)
    return fq_opt_usage_error(g_prog, "the app's domain is needed: --domain D (or "
                                      "\"pairing_domain\" in --config)");
  if (!valid_domain(o->domain))
    return fq_opt_usage_error(g_prog, "--domain wants a host name, got '%s'", o->domain);
  return -1;
}

/* ---- the fleet key ----------------------------------------------------------- */

/* The uncompressed public point of the key in path: a private key (what
 * fleetqd's --key names; checked like fleetqd does: 0600, no symlink) or
 * a public key PEM.  Returns 0, or 1 after printing why. */
static int fleet_public_key(const char *path, uint8_t out[FQ_VCP_PUBKEY_LEN]) {
  fq_vcp_key_t *k = NULL;
  fq_err_t e;
  fq_err_clear(&e);
  if (fq_vcp_key_load(path, &k, &e) == 0) {
    memcpy(out, fq_vcp_key_public(k), FQ_VCP_PUBKEY_LEN);
    fq_vcp_key_destroy(&k);
    return 0;
  }
  /* Not a private key we may read: maybe the public half. */
  FILE *f = fopen(path, "r");
  EVP_PKEY *pk = f ? PEM_read_PUBKEY(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  size_t n = 0;
  int ok = pk && EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out,
                                                 FQ_VCP_PUBKEY_LEN, &n) &&
           n == FQ_VCP_PUBKEY_LEN && out[0] == 4;
  EVP_PKEY_free(pk);
  if (ok) return 0;
  return fq_opt_fail(g_prog, "cannot read the fleet key %s: %s", path, e.msg);
}

/* ---- HTTP -------------------------------------------------------------------- */

typedef struct hres {
  bool done;
  fq_http_outcome_t outcome;
  long status;
  json_t *body; /* parsed JSON body, NULL when none or not JSON */
  char detail[300];
} hres_t;

static void on_resp(void *ud, const fq_http_resp_t *r) {
  hres_t *h = ud;
  h->done = true;
  h->outcome = r->outcome;
  h->status = r->status;
  if (r->outcome != FQ_HTTP_COMPLETE) {
    snprintf(h->detail, sizeof h->detail, "%s", r->err.msg[0] ? r->err.msg : "transfer failed");
    return;
  }
  json_error_t je;
  h->body = r->body_len ? json_loadb((const char *)r->body, r->body_len, 0, &je) : NULL;
}

/* One request, waited for.  Returns 0 with *out filled (complete or not),
 * or -1 when it could not even start (detail says why). */
static int http_call(doctor_t *d, fq_http_method_t m, const char *url, const char *bearer,
                     const char *body, hres_t *out) {
  memset(out, 0, sizeof *out);
  fq_http_req_t req = {.method = m, .url = url, .bearer = bearer, .body = body,
                       .body_len = body ? strlen(body) : 0};
  uint64_t id;
  fq_err_t e;
  fq_err_clear(&e);
  if (fq_http_request(d->http, &req, on_resp, out, &id, &e) != 0) {
    snprintf(out->detail, sizeof out->detail, "%s", e.msg);
    return -1;
  }
  while (!out->done) {
    if (fq_http_run_once(d->http, 200, &e) < 0) {
      fq_http_cancel(d->http, id);
      snprintf(out->detail, sizeof out->detail, "%s", e.msg);
      return -1;
    }
  }
  return 0;
}

/* The error text of a Fleet API answer ("error" / "error_description"). */
static void answer_text(const hres_t *h, char *out, size_t cap) {
  const char *e = json_string_value(json_object_get(h->body, "error"));
  const char *ed = json_string_value(json_object_get(h->body, "error_description"));
  snprintf(out, cap, "HTTP %ld%s%s%s%s", h->status, e ? ": " : "", e ? e : "",
           ed && *ed ? ": " : "", ed && *ed ? ed : "");
}

/* Whether the answer lets the check go on (2xx); otherwise records the
 * failure in c (or marks the run unreachable) and returns false. */
static bool answered(doctor_t *d, const hres_t *h, int started, const char *url, check_t *c) {
  if (started != 0 || h->outcome != FQ_HTTP_COMPLETE || h->status >= 500) {
    d->unreachable = true;
    if (started != 0 || h->outcome != FQ_HTTP_COMPLETE)
      snprintf(d->unreachable_why, sizeof d->unreachable_why, "%s: %s", url, h->detail);
    else
      snprintf(d->unreachable_why, sizeof d->unreachable_why, "%s answered HTTP %ld", url,
               h->status);
    c->ok = false;
    snprintf(c->detail, sizeof c->detail, "Fleet API could not be reached: %.400s",
             d->unreachable_why);
    snprintf(c->fix, sizeof c->fix, "check the network, the base URL and --ca-file; try again");
    return false;
  }
  if (h->status >= 200 && h->status < 300) return true;
  char t[300];
  answer_text(h, t, sizeof t);
  c->ok = false;
  if (h->status == 401) {
    snprintf(c->detail, sizeof c->detail, "Fleet API refused the access token (%s)", t);
    snprintf(c->fix, sizeof c->fix,
             "fleetqd refreshes tokens by itself: see 'fleetq account get' for a refresh "
             "failure, or add the account again with fresh tokens");
  } else if (h->status == 421) {
    snprintf(c->detail, sizeof c->detail, "the account belongs to another region (%s)", t);
    snprintf(c->fix, sizeof c->fix, "add the account again with its region (--region)");
  } else if (h->status == 412) {
    snprintf(c->detail, sizeof c->detail, "the app is not registered in this region (%s)", t);
    snprintf(c->fix, sizeof c->fix,
             "call POST /api/1/partner_accounts with a partner token in this region");
    snprintf(c->link, sizeof c->link, "%s", REGISTER_LINK);
  } else {
    snprintf(c->detail, sizeof c->detail, "Fleet API refused the request (%s)", t);
  }
  return false;
}

/* ---- the checks -------------------------------------------------------------- */

static void check_token(doctor_t *d, const fq_account_t *a) {
  int64_t now = (int64_t)time(NULL);
  bool ok = a->access_exp == 0 || a->access_exp > now;
  check_t *c = add_check(d, "token", ok);
  if (a->access_exp == 0)
    snprintf(c->detail, sizeof c->detail,
             "access token stored; its expiry is unknown (not a JWT)");
  else if (ok)
    snprintf(c->detail, sizeof c->detail, "access token valid for %" PRId64 " more minutes",
             (a->access_exp - now) / 60);
  else {
    snprintf(c->detail, sizeof c->detail, "the stored access token expired %" PRId64
             " minutes ago", (now - a->access_exp) / 60);
    snprintf(c->fix, sizeof c->fix,
             "fleetqd refreshes it before it expires: is fleetqd running? 'fleetq account get "
             "--account %s' shows a refresh failure; add the account again if it has one",
             a->id);
  }
}

static void check_scopes(doctor_t *d, const fq_account_t *a) {
  static const struct {
    unsigned bit;
    const char *name, *what;
  } need[] = {
      {FQ_SCOPE_VEHICLE_CMDS, "vehicle_cmds", "vehicle commands and wake_up"},
      {FQ_SCOPE_VEHICLE_CHARGING_CMDS, "vehicle_charging_cmds", "charging commands"},
      {FQ_SCOPE_ENERGY_CMDS, "energy_cmds", "Powerwall / energy site commands"},
  };
  if (a->scopes & FQ_SCOPES_UNKNOWN) {
    check_t *c = add_check(d, "scopes", false);
    snprintf(c->detail, sizeof c->detail,
             "the access token is not a JWT: its scopes cannot be read");
    snprintf(c->fix, sizeof c->fix, "add the account with a Tesla access token (a JWT)");
    return;
  }
  char missing[200] = "", what[300] = "";
  size_t mk = 0, wk = 0;
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
    if (a->scopes & need[i].bit) continue;
    mk += (size_t)snprintf(missing + mk, sizeof missing - mk, "%s%s", mk ? ", " : "",
                           need[i].name);
    wk += (size_t)snprintf(what + wk, sizeof what - wk, "%s%s", wk ? ", " : "", need[i].what);
  }
  check_t *c = add_check(d, "scopes", mk == 0);
  if (mk == 0) {
    snprintf(c->detail, sizeof c->detail,
             "the token grants vehicle_cmds, vehicle_charging_cmds and energy_cmds");
    return;
  }
  snprintf(c->detail, sizeof c->detail, "missing OAuth scope(s) %s: fleetqd refuses %.200s", missing,
           what);
  snprintf(c->fix, sizeof c->fix,
           "have the user grant them: revoke the app's access at the link, connect again "
           "asking for the scopes, then 'fleetq account add' the new tokens");
  snprintf(c->link, sizeof c->link,
           "https://auth.tesla.com/user/revoke/consent?revoke_client_id=%.230s", a->client_id);
}

static void trim_slash(char *s) {
  size_t n = strlen(s);
  while (n > 0 && s[n - 1] == '/') s[--n] = 0;
}

static void check_region(doctor_t *d, const fq_account_t *a) {
  char url[FQ_BASE_URL_MAX + 64];
  snprintf(url, sizeof url, "%s/api/1/users/region", d->base);
  hres_t h;
  check_t *c = add_check(d, "region", false);
  int st = http_call(d, FQ_HTTP_GET, url, a->access_token, NULL, &h);
  if (answered(d, &h, st, url, c)) {
    json_t *r = json_object_get(h.body, "response");
    const char *region = json_string_value(json_object_get(r, "region"));
    const char *ub = json_string_value(json_object_get(r, "fleet_api_base_url"));
    char theirs[FQ_BASE_URL_MAX + 1];
    snprintf(theirs, sizeof theirs, "%s", ub ? ub : "");
    trim_slash(theirs);
    if (!region || !ub) {
      snprintf(c->detail, sizeof c->detail, "GET /api/1/users/region: unexpected answer");
    } else if (strcasecmp(theirs, d->base) != 0) {
      snprintf(c->detail, sizeof c->detail,
               "the account is in region %s, served by %.200s, but fleetqd uses %.200s for it", region,
               theirs, d->base);
      snprintf(c->fix, sizeof c->fix,
               "add the account again with --region %s (or --base-url %s)", region, theirs);
    } else if (a->region[0] && strcasecmp(a->region, region) != 0) {
      snprintf(c->detail, sizeof c->detail, "the account is in region %s, stored as %s",
               region, a->region);
      snprintf(c->fix, sizeof c->fix, "add the account again with --region %s", region);
    } else {
      c->ok = true;
      snprintf(c->detail, sizeof c->detail, "region %s, Fleet API %s", region, theirs);
    }
  }
  json_decref(h.body);
}

static void check_public_key(doctor_t *d, const char *bearer, const uint8_t fleet[65]) {
  char url[FQ_BASE_URL_MAX + 400];
  snprintf(url, sizeof url, "%s/api/1/partner_accounts/public_key?domain=%s", d->base,
           d->o->domain);
  char mine[131];
  fq_hex_encode(fleet, 65, mine);
  hres_t h;
  check_t *c = add_check(d, "public_key", false);
  int st = http_call(d, FQ_HTTP_GET, url, bearer, NULL, &h);
  if (st == 0 && h.outcome == FQ_HTTP_COMPLETE && h.status == 404) {
    snprintf(c->detail, sizeof c->detail, "no public key is registered for %s", d->o->domain);
    snprintf(c->fix, sizeof c->fix,
             "host the fleet key's public PEM at https://%s/.well-known/appspecific/"
             "com.tesla.3p.public-key.pem and register the domain (POST "
             "/api/1/partner_accounts with a partner token) in every region",
             d->o->domain);
    snprintf(c->link, sizeof c->link, "%s", REGISTER_LINK);
  } else if (answered(d, &h, st, url, c)) {
    const char *theirs =
        json_string_value(json_object_get(json_object_get(h.body, "response"), "public_key"));
    if (!theirs) {
      snprintf(c->detail, sizeof c->detail, "the answer holds no public_key");
    } else if (strcasecmp(theirs, mine) != 0) {
      snprintf(c->detail, sizeof c->detail,
               "the key registered for %s (%.16s...) is not the fleet key (%.16s...): cars "
               "paired through the link refuse fleetqd's signatures",
               d->o->domain, theirs, mine);
      snprintf(c->fix, sizeof c->fix,
               "host the public key of fleetqd's --key at https://%s/.well-known/appspecific/"
               "com.tesla.3p.public-key.pem and register the domain again (or point --key at "
               "the key that is registered)",
               d->o->domain);
      snprintf(c->link, sizeof c->link, "%s", PORTAL_LINK);
    } else {
      c->ok = true;
      snprintf(c->detail, sizeof c->detail, "the key registered for %s is the fleet key (%.16s...)",
               d->o->domain, mine);
    }
  } else if (h.status == 401 || h.status == 403) {
    /* The account's token serves the other checks; this one is the
     * partner token's business. */
    if (d->o->partner_file)
      snprintf(c->fix, sizeof c->fix,
               "Fleet API refused the partner token of --partner-token-file: get a new one "
               "(client_credentials grant with the app's client id and secret)");
    else
      snprintf(c->fix, sizeof c->fix,
               "Tesla answers this lookup to a partner token: give one with "
               "--partner-token-file");
  }
  json_decref(h.body);
}

static void check_vins(doctor_t *d, const fq_account_t *a) {
  if (d->o->nvins == 0) return;
  char url[FQ_BASE_URL_MAX + 64];
  snprintf(url, sizeof url, "%s/api/1/vehicles/fleet_status", d->base);
  json_t *vins = json_array();
  for (size_t i = 0; i < d->o->nvins; i++) json_array_append_new(vins, json_string(d->o->vins[i]));
  json_t *req = json_pack("{s:o}", "vins", vins);
  char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
  json_decref(req);
  hres_t h;
  check_t probe;
  memset(&h, 0, sizeof h);
  memset(&probe, 0, sizeof probe);
  int st = body ? http_call(d, FQ_HTTP_POST, url, a->access_token, body, &h) : -1;
  if (!body) snprintf(h.detail, sizeof h.detail, "out of memory");
  free(body);
  bool ok = answered(d, &h, st, url, &probe);
  for (size_t i = 0; i < d->o->nvins; i++) {
    const char *vin = d->o->vins[i];
    char name[40];
    snprintf(name, sizeof name, "vin %s", vin);
    check_t *c = add_check(d, name, false);
    if (!ok) {
      snprintf(c->detail, sizeof c->detail, "%s", probe.detail);
      snprintf(c->fix, sizeof c->fix, "%s", probe.fix);
      snprintf(c->link, sizeof c->link, "%s", probe.link);
      continue;
    }
    /* The parser fleetqd's pre-check uses (src/fleet/fleetstatus.c). */
    fq_fs_vin_t fs;
    fq_fs_find(h.body, vin, &fs);
    bool needs = fs.protocol_required != 0; /* unknown: assume it does, as fleetqd does */
    const char *signing = fs.protocol_required >= 0
                              ? (needs ? "the car needs signed commands"
                                       : "the car takes unsigned REST commands (no Vehicle "
                                         "Command Protocol)")
                              : "whether it needs signed commands is not known";
    if (fs.paired == 1) {
      c->ok = true;
      snprintf(c->detail, sizeof c->detail, "key paired; %s", signing);
    } else if (fs.paired == 0) {
      if (!needs) {
        c->ok = true;
        snprintf(c->detail, sizeof c->detail, "key not paired, not needed: %s", signing);
      } else {
        snprintf(c->detail, sizeof c->detail, "key not paired: %s and refuses them", signing);
        snprintf(c->fix, sizeof c->fix,
                 "open the link on the phone with the Tesla app of the car's owner (the car "
                 "online and near) and approve the key");
        snprintf(c->link, sizeof c->link, "https://tesla.com/_ak/%s", d->o->domain);
      }
    } else {
      snprintf(c->detail, sizeof c->detail,
               "unknown VIN: Fleet API does not list it for account %s", a->id);
      snprintf(c->fix, sizeof c->fix,
               "check the VIN, and that the car belongs to (or is shared with) this Tesla "
               "account");
    }
  }
  json_decref(h.body);
}

/* ---- output ---------------------------------------------------------------- */

static void print_text(const doctor_t *d, const fq_account_t *a) {
  printf("account %s, Fleet API %s, domain %s\n", a->id, d->base, d->o->domain);
  size_t failed = 0;
  for (size_t i = 0; i < d->nchecks; i++) {
    const check_t *c = &d->checks[i];
    failed += !c->ok;
    printf("%-4s  %-24s %s\n", c->ok ? "pass" : "FAIL", c->name, c->detail);
    if (c->fix[0]) printf("      %-24s fix: %s\n", "", c->fix);
    if (c->link[0]) printf("      %-24s link: %s\n", "", c->link);
  }
  if (d->unreachable)
    printf("Fleet API could not be reached (%s): the checks that need it are not done\n",
           d->unreachable_why);
  printf("%zu check(s) passed, %zu failed\n", d->nchecks - failed, failed);
}

static void print_json(const doctor_t *d, const fq_account_t *a, int status) {
  json_t *arr = json_array();
  size_t failed = 0;
  for (size_t i = 0; i < d->nchecks; i++) {
    const check_t *c = &d->checks[i];
    failed += !c->ok;
    json_t *o = json_pack("{s:s, s:b, s:s}", "check", c->name, "ok", c->ok, "detail", c->detail);
    if (c->fix[0]) json_object_set_new(o, "fix", json_string(c->fix));
    if (c->link[0]) json_object_set_new(o, "link", json_string(c->link));
    json_array_append_new(arr, o);
  }
  json_t *j = json_pack("{s:s, s:s, s:s, s:b, s:b, s:I, s:I, s:i, s:o}", "account", a->id,
                        "base_url", d->base, "domain", d->o->domain, "ok", status == 0,
                        "unreachable", d->unreachable, "passed",
                        (json_int_t)(d->nchecks - failed), "failed", (json_int_t)failed,
                        "exit", status, "checks", arr);
  if (j && d->unreachable) json_object_set_new(j, "unreachable_why", json_string(d->unreachable_why));
  char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  if (txt) printf("%s\n", txt);
  free(txt);
  json_decref(j);
}

/* ---- the command --------------------------------------------------------------- */

/* Read a partner token file ("-" = stdin) into out[cap]. Returns 0 or 2. */
static int read_token_file(const char *path, char *out, size_t cap) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
  if (!f)
    return fq_opt_usage_error(g_prog, "cannot open %s: %s", path, fq_strerror(-errno));
  size_t n = fread(out, 1, cap - 1, f);
  bool more = n == cap - 1 && fgetc(f) != EOF;
  if (f != stdin) fclose(f);
  if (more) return fq_opt_usage_error(g_prog, "the token in %s is too long", path);
  while (n > 0 && isspace((unsigned char)out[n - 1])) n--;
  out[n] = 0;
  if (n == 0) return fq_opt_usage_error(g_prog, "%s is empty", path);
  return 0;
}

/* Open the account store without creating anything: fq_accounts_open()
 * would make a missing directory and a fresh key, which here would only
 * hide a wrong --data. */
static fq_accounts_t *open_store(const char *data) {
  char p[4200];
  struct stat st;
  snprintf(p, sizeof p, "%s/accounts/data.mdb", data);
  if (stat(data, &st) != 0) {
    fq_opt_fail(g_prog, "data directory %s does not exist (check --data)", data);
    return NULL;
  }
  if (stat(p, &st) != 0) {
    fq_opt_fail(g_prog, "%s has no account store (%s): check --data", data, p);
    return NULL;
  }
  snprintf(p, sizeof p, "%s/token.key", data);
  if (lstat(p, &st) != 0) {
    fq_opt_fail(g_prog, "%s is missing: the stored tokens cannot be read without it", p);
    return NULL;
  }
  fq_err_t e;
  fq_err_clear(&e);
  fq_accounts_t *s = fq_accounts_open(data, &e);
  if (!s) fq_opt_fail(g_prog, "cannot open the account store in %s: %s", data, e.msg);
  return s;
}

static int cmd_doctor(int argc, char **argv) {
  dopts_t o;
  int rc = parse_opts(argc, argv, &o);
  if (rc >= 0) {
    json_decref(o.cfg);
    return rc;
  }
  doctor_t *d = calloc(1, sizeof *d);
  fq_account_t *a = fq_account_new();
  fq_accounts_t *store = NULL;
  char *partner = NULL;
  rc = 1;
  if (!d || !a) {
    fq_opt_fail(g_prog, "out of memory");
    goto out;
  }
  d->o = &o;
  uint8_t fleet[FQ_VCP_PUBKEY_LEN];
  if (fleet_public_key(o.key, fleet)) goto out;
  if (o.partner_file) {
    if (!(partner = calloc(1, FQ_TOKEN_MAX + 2))) goto out;
    if ((rc = read_token_file(o.partner_file, partner, FQ_TOKEN_MAX + 2))) goto out;
    rc = 1;
  }
  if (!(store = open_store(o.data))) goto out;
  fq_err_t e;
  fq_err_clear(&e);
  int grc = fq_accounts_get(store, o.account, a, &e);
  fq_accounts_destroy(&store);
  if (grc == FQ_ENOTFOUND) {
    fq_opt_fail(g_prog,
                "account %s is not registered in %s: add it with 'fleetq account add'",
                o.account, o.data);
    goto out;
  }
  if (grc) {
    fq_opt_fail(g_prog, "account %s: %s", o.account, e.msg);
    goto out;
  }
  const char *base = a->base_url[0] ? a->base_url : fq_fa_region_base_url(a->region);
  if (!base) {
    fq_opt_fail(g_prog, "account %s has neither a region nor a base URL", o.account);
    goto out;
  }
  snprintf(d->base, sizeof d->base, "%s", base);
  trim_slash(d->base);
  fq_http_opts_t ho = {.ca_file = o.ca_file, .total_timeout_ms = (long)(o.timeout_s * 1000),
                       .connect_timeout_ms = (long)(o.timeout_s * 1000),
                       .max_body = 1 << 20, .user_agent = "fleetq-doctor/" FQ_VERSION};
  if (!(d->http = fq_http_new(&ho, &e))) {
    fq_opt_fail(g_prog, "%s", e.msg);
    goto out;
  }

  check_token(d, a);
  check_scopes(d, a);
  check_region(d, a);
  if (!d->unreachable) check_public_key(d, partner ? partner : a->access_token, fleet);
  if (!d->unreachable) check_vins(d, a);

  size_t failed = 0;
  for (size_t i = 0; i < d->nchecks; i++) failed += !d->checks[i].ok;
  rc = d->unreachable ? DOCTOR_EXIT_UNREACHABLE : failed ? 1 : 0;
  if (o.json) print_json(d, a, rc);
  else print_text(d, a);
  if (d->unreachable)
    fprintf(stderr, "%s: Fleet API could not be reached: %s\n", g_prog, d->unreachable_why);
out:
  if (d) fq_http_destroy(&d->http);
  free(d);
  fq_account_free(&a);
  if (partner) OPENSSL_cleanse(partner, FQ_TOKEN_MAX + 2);
  free(partner);
  json_decref(o.cfg);
  return rc;
}

FQ_CLI_COMMAND("doctor", cmd_doctor,
               "check an account's token, scopes, region, key and cars against Fleet API")
