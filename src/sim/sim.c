/*
 * fleetsim's HTTP front: libmicrohttpd (epoll, a pool of internal threads,
 * keep-alive, optional TLS through GnuTLS) serving the Fleet API routes
 * with Tesla's JSON envelopes and status codes, the failure scenarios
 * (401, 403, 408, 421, 422, 429, 5xx, held connections, replies dropped
 * after execution, latency), and the /sim control endpoints tests use to
 * change scenarios at run time and to read the ground-truth execution log.
 *
 * Delays never block a server thread: a delayed answer is prepared at
 * once, its connection suspended, and a timer thread resumes it when due;
 * the handler then sends (or, for a dropped reply, closes without
 * answering).
 */
#include "sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "fleetq/commands.h"
#include "heap.h"
#include "log.h"
#include "sim_int.h"
#include "util.h"

#define MOD "sim"
/* GET /sim/executions may list millions of records. */
#define MAX_LIST_BODY ((size_t)512 << 20)

struct fq_sim {
  fq__sim_world_t w;
  struct MHD_Daemon *mhd;
  uint16_t port;
  char *tls_cert, *tls_key; /* PEM text; MHD reads it while running */
  pthread_t timer;
  bool timer_running, stopping;
  pthread_mutex_t tmu;
  pthread_cond_t tcv;
  fq_heap_t delayed; /* (due, monotonic ns; the suspended MHD connection) */
};

/* What one request gets back, prepared under the world lock and sent
 * (possibly later) without it. */
typedef struct answer {
  int status;         /* 0 = close the connection without answering */
  fq_buf_t body;
  const char *ctype;
  char retry_after[24];
  char rl_limit[24], rl_remaining[24], rl_reset[24]; /* RateLimit-*, "" = none */
  char alt_svc[300];
  int64_t delay_ms;
} answer_t;

typedef struct conn_ctx {
  fq_buf_t req;
  bool too_large;
  bool ready;
  answer_t ans;
} conn_ctx_t;

/* ---- delayed answers ----------------------------------------------------------- */

static void delay_push(fq_sim_t *s, int64_t due_ns, struct MHD_Connection *conn) {
  /* Cannot delay: answer now rather than hang the client forever. */
  if (fq_heap_push(&s->delayed, (fq_heap_ent_t){.key = due_ns, .v.p = conn}) != 0)
    MHD_resume_connection(conn);
}

static void *timer_main(void *arg) {
  fq_sim_t *s = arg;
  pthread_mutex_lock(&s->tmu);
  while (!s->stopping) {
    const fq_heap_ent_t *top = fq_heap_top(&s->delayed);
    if (!top) {
      pthread_cond_wait(&s->tcv, &s->tmu);
      continue;
    }
    int64_t now = fq_mono_ns();
    if (top->key <= now) {
      struct MHD_Connection *conn = fq_heap_pop(&s->delayed).v.p;
      pthread_mutex_unlock(&s->tmu);
      MHD_resume_connection(conn);
      pthread_mutex_lock(&s->tmu);
      continue;
    }
    /* The condvar uses CLOCK_MONOTONIC (see fq_sim_start). */
    struct timespec ts;
    int64_t due = top->key;
    ts.tv_sec = (time_t)(due / 1000000000);
    ts.tv_nsec = (long)(due % 1000000000);
    pthread_cond_timedwait(&s->tcv, &s->tmu, &ts);
  }
  pthread_mutex_unlock(&s->tmu);
  return NULL;
}

/* ---- answers ----------------------------------------------------------------- */

static void ans_json(answer_t *a, int status, json_t *j) {
  a->status = status;
  a->ctype = "application/json; charset=utf-8";
  fq_buf_reset(&a->body);
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s || fq_buf_append_str(&a->body, s)) {
    a->status = 500;
    fq_buf_reset(&a->body);
    fq_buf_append_str(&a->body, "{\"response\":null,\"error\":\"internal\",\"error_description\":\"\"}");
  }
  free(s);
}

/* Tesla's error envelope. */
static void ans_err(answer_t *a, int status, const char *error, const char *desc) {
  ans_json(a, status, json_pack("{s:n, s:s, s:s}", "response", "error", error,
                                "error_description", desc ? desc : ""));
}

/* Fleet API's answer to a REST command for a car that takes only signed
 * ones. */
static void ans_protocol_required(answer_t *a) {
  ans_err(a, 403,
          "Tesla Vehicle Command Protocol required, please refer to the documentation here: "
          "https://developer.tesla.com/docs/fleet-api/announcements"
          "#2023-10-09-rest-api-vehicle-commands-endpoint-deprecation-warning",
          "");
}

static void ans_response(answer_t *a, json_t *response) {
  ans_json(a, 200, json_pack("{s:o}", "response", response));
}

/* ---- failure scenarios ----------------------------------------------------------- */

/* Apply an entity's pre-execution failures.  Returns true when the
 * request is answered (429 / 503 / 500 / held) and must go no further.
 * Latency always accumulates. */
static bool pre_faults(fq__sim_faults_t *f, answer_t *a, int64_t now_ms) {
  a->delay_ms += fq__sim_latency(f);
  bool limited = false;
  int64_t retry = f->retry_after_s;
  if (fq__sim_inject_fire(&f->http429, &f->rng)) {
    limited = true;
    if (retry <= 0) retry = 2;
  } else if (fq__sim_rate_limited(f, now_ms)) {
    limited = true;
    if (retry <= 0) retry = (f->rl_start_ms + f->rl_window_ms - now_ms + 999) / 1000;
  }
  if (limited) {
    char desc[64];
    snprintf(desc, sizeof desc, "Retry in %" PRId64 " seconds", retry);
    ans_err(a, 429, "rate_limited", desc);
    snprintf(a->retry_after, sizeof a->retry_after, "%" PRId64, retry);
    /* The budget is spent: 0 left until the reset (an injected 429
     * without a configured limit reports a budget of 1). */
    snprintf(a->rl_limit, sizeof a->rl_limit, "%" PRId64, f->rl_limit > 0 ? f->rl_limit : 1);
    snprintf(a->rl_remaining, sizeof a->rl_remaining, "0");
    snprintf(a->rl_reset, sizeof a->rl_reset, "%" PRId64, retry);
    return true;
  }
  if (fq__sim_inject_fire(&f->http451, &f->rng)) {
    ans_err(a, 451, "Unavailable For Legal Reasons",
            "the request is not allowed by the user's or vehicle's privacy settings");
    return true;
  }
  if (fq__sim_inject_fire(&f->mobile_off, &f->rng)) {
    ans_err(a, 401, "mobile_access_disabled", "");
    return true;
  }
  if (fq__sim_inject_fire(&f->http503, &f->rng)) {
    ans_err(a, 503, "service_unavailable", "upstream did not respond");
    return true;
  }
  if (fq__sim_inject_fire(&f->http500, &f->rng)) {
    ans_err(a, 500, "internal_error", "");
    return true;
  }
  if (fq__sim_inject_fire(&f->hold, &f->rng)) {
    /* Hold the connection past any sane client timeout, then hang up. */
    a->status = 0;
    a->delay_ms += f->hold_ms;
    return true;
  }
  return false;
}

/* After a command ran: maybe lose the reply.  Checked on the device first,
 * then on the account. */
static void post_faults(fq__sim_faults_t *dev, fq__sim_faults_t *acct, answer_t *a) {
  fq__sim_faults_t *f = NULL;
  if (fq__sim_inject_fire(&dev->drop, &dev->rng)) f = dev;
  else if (fq__sim_inject_fire(&acct->drop, &acct->rng)) f = acct;
  if (!f) return;
  a->delay_ms += f->drop_delay_ms;
  if (f->drop_status == 0) {
    a->status = 0;
  } else {
    ans_err(a, f->drop_status,
            f->drop_status == 504   ? "gateway_timeout"
            : f->drop_status == 540 ? "device_unexpected_response"
                                    : "internal_error",
            "the vehicle did not answer in time");
  }
}

/* ---- routes ---------------------------------------------------------------------- */

/* Next path segment of *p (up to '/' or the end) into out; advances *p
 * past it and one '/'.  false when empty or too long. */
static bool segment(const char **p, char *out, size_t cap) {
  const char *s = *p;
  size_t n = 0;
  while (s[n] && s[n] != '/') n++;
  if (n == 0 || n >= cap) return false;
  memcpy(out, s, n);
  out[n] = 0;
  *p = s + n + (s[n] == '/');
  return true;
}

static bool prefix(const char **p, const char *pre) {
  size_t n = strlen(pre);
  if (strncmp(*p, pre, n) != 0) return false;
  *p += n;
  return true;
}

static const char *base_url(fq__sim_world_t *w, const fq__sim_account_t *a) {
  if (a->base_url) return a->base_url;
  const char *u = json_string_value(json_object_get(w->base_urls, a->region));
  return u ? u : "https://fleet-api.prd.na.vn.cloud.tesla.com";
}

static json_t *parse_body(conn_ctx_t *ctx) {
  if (ctx->req.len == 0) return json_object();
  json_error_t je;
  return json_loadb((const char *)ctx->req.data, ctx->req.len, JSON_REJECT_DUPLICATES, &je);
}

static void route_fleet_status(fq__sim_world_t *w, fq__sim_account_t *a, conn_ctx_t *ctx,
                               answer_t *ans) {
  size_t ai = (size_t)(a - w->accounts);
  json_t *body = parse_body(ctx);
  json_t *vins = json_object_get(body, "vins");
  if (!json_is_array(vins)) {
    json_decref(body);
    ans_err(ans, 400, "invalid_field", "vins: want an array of VINs");
    return;
  }
  w->st_fleet_status++;
  w->st_fleet_status_vins += json_array_size(vins);
  if (a->fleet_status_status) {
    /* A Fleet API without the endpoint (404) or failing it (5xx, 429). */
    long st = (long)a->fleet_status_status;
    json_decref(body);
    ans_err(ans, (int)st,
            st == 404   ? "not_found"
            : st == 429 ? "rate_limited"
            : st >= 500 ? "internal_error"
                        : "invalid_request",
            "fleet_status_status set for this account");
    if (st == 429) snprintf(ans->retry_after, sizeof ans->retry_after, "1");
    return;
  }
  json_t *paired = json_array(), *unpaired = json_array(), *info = json_object();
  size_t i;
  json_t *e;
  json_array_foreach(vins, i, e) {
    const char *vin = json_string_value(e);
    if (!vin) continue;
    fq__sim_vehicle_t *v = fq__sim_map_get(&w->vin_map, vin, strlen(vin));
    if (!v || !fq__sim_account_has_vehicle(a, v, ai)) continue;
    json_array_append_new(v->paired ? paired : unpaired, json_string(vin));
    json_object_set_new(info, vin,
                        json_pack("{s:s, s:b, s:b, s:s, s:i}", "firmware_version", "2025.44.25",
                                  "vehicle_command_protocol_required", !v->legacy,
                                  "discounted_device_data", 0, "fleet_telemetry_version", "1.1.0",
                                  "total_number_of_keys", (int)(1 + v->nextra + v->paired)));
  }
  json_decref(body);
  ans_response(ans, json_pack("{s:o, s:o, s:o}", "key_paired_vins", paired, "unpaired_vins",
                              unpaired, "vehicle_info", info));
}

/* GET /api/1/partner_accounts/public_key?domain=D: the key the app
 * registered for D, as hex of the uncompressed point.  Without
 * "partner_keys" in the config every domain is registered with the
 * fleet_public_key the cars pair with (what a correctly set up app has);
 * with it, only the domains listed, with their keys.  Tesla wants a
 * partner token here; the simulator takes any token it issued. */
static void route_partner_key(fq__sim_world_t *w, struct MHD_Connection *c, answer_t *ans) {
  const char *dom = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "domain");
  if (!dom || !*dom) {
    ans_err(ans, 400, "invalid_field", "domain: required");
    return;
  }
  char hex[131];
  const char *key = NULL;
  if (w->partner_keys) {
    key = json_string_value(json_object_get(w->partner_keys, dom));
  } else if (w->have_fleet_pub) {
    fq_hex_encode(w->fleet_pub, sizeof w->fleet_pub, hex);
    key = hex;
  }
  if (!key) {
    ans_err(ans, 404, "not_found", "no public key is registered for this domain");
    return;
  }
  ans_response(ans, json_pack("{s:s}", "public_key", key));
}

/* GET /api/1/vehicles: the account's cars, as the vehicle list shows them. */
static void route_vehicle_list(fq__sim_world_t *w, fq__sim_account_t *a, answer_t *ans,
                               int64_t now) {
  json_t *list = json_array();
  for (size_t i = 0; list && i < a->nvehicles; i++) {
    fq__sim_vehicle_t *v = w->vehicles[a->vehicles[i]];
    json_array_append_new(list, json_pack("{s:I, s:I, s:s, s:s, s:s, s:s}", "id",
                                          (json_int_t)v->id, "vehicle_id", (json_int_t)v->id,
                                          "vin", v->vin, "display_name", v->name, "state",
                                          fq__sim_vehicle_state(v, now), "command_signing",
                                          v->legacy ? "off" : "required"));
  }
  ans_json(ans, 200, json_pack("{s:o, s:I}", "response", list, "count",
                               (json_int_t)a->nvehicles));
}

/* A command the car cannot take yet: asleep or offline (408, or 503 when
 * the vehicle's asleep_status says so: Tesla's client reads both as "not
 * awake"), or awake with an infotainment computer still starting (408 for
 * infotainment_lag_ms after a wake; VCSEC answers already).  True when it
 * answered. */
static bool not_awake(fq__sim_vehicle_t *v, bool infotainment, answer_t *ans, int64_t now) {
  if (strcmp(fq__sim_vehicle_state(v, now), "online") != 0) {
    if (v->asleep_status == 503 && !v->offline)
      ans_err(ans, 503, "service_unavailable", "");
    else
      ans_err(ans, 408, "vehicle unavailable: vehicle is offline or asleep", "");
    return true;
  }
  if (infotainment && v->online_at_ms && now < v->online_at_ms + v->infotainment_lag_ms) {
    ans_err(ans, 408, "vehicle unavailable: vehicle is offline or asleep", "");
    return true;
  }
  return false;
}

static void route_signed(fq__sim_world_t *w, fq__sim_account_t *a, fq__sim_vehicle_t *v,
                         conn_ctx_t *ctx, answer_t *ans, int64_t now) {
  json_t *body = parse_body(ctx);
  const char *b64 = json_string_value(json_object_get(body, "routable_message"));
  uint8_t *msg = NULL;
  long n = -1;
  if (b64 && strlen(b64) <= 4 * (FQ_VCP_MAX_MSG / 3) + 4 && (msg = malloc(FQ_VCP_MAX_MSG)))
    n = fq_base64_decode(b64, strlen(b64), msg, FQ_VCP_MAX_MSG);
  json_decref(body);
  if (n <= 0) {
    ans_err(ans, 400, "invalid_request", "routable_message: want base64 of a RoutableMessage");
    goto out;
  }
  if (v->legacy) {
    ans_err(ans, 422, "vehicle does not support the Tesla Vehicle Command Protocol, please refer "
                      "to https://developer.tesla.com/docs/fleet-api/endpoints/vehicle-commands",
            "");
    goto out;
  }
  char name[48];
  int dom = -1;
  if (fq__sim_peek_command(msg, (size_t)n, name, sizeof name, &dom)) {
    ans_err(ans, 400, "invalid_request", "routable_message: not a RoutableMessage");
    goto out;
  }
  /* Fleet API reads the plaintext of HMAC-signed commands to enforce
   * scopes before the car ever sees them. */
  bool ok = name[0] ? fq__sim_scope_ok(a, name, FQ_DEV_VEHICLE, FQ_SCOPE_VEHICLE_CMDS)
                    : (a->scopes & (FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_VEHICLE_CHARGING_CMDS |
                                    FQ_SCOPE_VEHICLE_DEVICE_DATA)) != 0;
  if (!ok) {
    ans_err(ans, 403, "Unauthorized missing scopes", "");
    goto out;
  }
  if (not_awake(v, dom != FQ_VCP_DOMAIN_VCSEC, ans, now)) goto out;
  fq_buf_t reply;
  fq_buf_init(&reply, FQ_VCP_MAX_MSG);
  fq__sim_signed_result_t res;
  /* Drawn for commands only, so a handshake never uses up a `next`. */
  fq__sim_reply_opts_t ro = {0};
  int64_t late_ms = 0;
  if (name[0]) {
    ro.garble = fq__sim_inject_fire(&v->faults.garble, &v->faults.rng) ||
                fq__sim_inject_fire(&a->faults.garble, &a->faults.rng);
    ro.plaintext = fq__sim_inject_fire(&v->faults.plaintext, &v->faults.rng) ||
                   fq__sim_inject_fire(&a->faults.plaintext, &a->faults.rng);
    if (fq__sim_inject_fire(&v->faults.info_back, &v->faults.rng))
      ro.info_back_ms = 1000 * v->faults.info_back_s;
    else if (fq__sim_inject_fire(&a->faults.info_back, &a->faults.rng))
      ro.info_back_ms = 1000 * a->faults.info_back_s;
    if (fq__sim_inject_fire(&v->faults.info_late, &v->faults.rng))
      late_ms = v->faults.info_late_ms;
    else if (fq__sim_inject_fire(&a->faults.info_late, &a->faults.rng))
      late_ms = a->faults.info_late_ms;
  }
  int rc = fq__sim_vehicle_signed(w, v, msg, (size_t)n, &ro, &reply, &res);
  /* "session_info_late": only an answer that carries session info waits. */
  if (rc == 0 && res.session_info) ans->delay_ms += late_ms;
  if (rc == FQ_EPROTO) {
    ans_err(ans, 400, "invalid_request", "routable_message: not a RoutableMessage");
  } else if (rc) {
    ans_err(ans, 500, "internal_error", fq_strerror(rc));
  } else {
    char *enc = malloc(4 * ((reply.len + 2) / 3) + 1);
    if (enc) {
      fq_base64_encode(reply.data, reply.len, enc);
      ans_response(ans, json_string(enc));
    } else {
      ans_err(ans, 500, "internal_error", "out of memory");
    }
    free(enc);
    if (name[0]) post_faults(&v->faults, &a->faults, ans);
  }
  fq_buf_free(&reply);
out:
  free(msg);
}

static void route_vehicle(fq__sim_world_t *w, fq__sim_account_t *a, const char *rest,
                          const char *method, conn_ctx_t *ctx, answer_t *ans, int64_t now) {
  char vin[FQ__SIM_MAX_ID];
  size_t ai = (size_t)(a - w->accounts);
  if (!segment(&rest, vin, sizeof vin)) {
    ans_err(ans, 404, "not_found", "");
    return;
  }
  fq__sim_vehicle_t *v = fq__sim_map_get(&w->vin_map, vin, strlen(vin));
  if (!v || !fq__sim_account_has_vehicle(a, v, ai)) {
    ans_err(ans, 404, "not_found", "vehicle not found");
    return;
  }
  if (pre_faults(&v->faults, ans, now)) return;
  bool post = strcmp(method, "POST") == 0;
  if (!*rest && strcmp(method, "GET") == 0) {
    if (!(a->scopes & (FQ_SCOPE_VEHICLE_DEVICE_DATA | FQ_SCOPE_VEHICLE_CMDS)))
      ans_err(ans, 403, "Unauthorized missing scopes", "");
    else ans_response(ans, fq__sim_vehicle_json(v, now));
    return;
  }
  /* "protocol_required": the REST calls of a car (commands and wake_up)
   * get the answer a modern car's REST commands get, before anything runs. */
  if (post && (strcmp(rest, "wake_up") == 0 || strncmp(rest, "command/", 8) == 0) &&
      (fq__sim_inject_fire(&v->faults.protocol, &v->faults.rng) ||
       fq__sim_inject_fire(&a->faults.protocol, &a->faults.rng))) {
    ans_protocol_required(ans);
    return;
  }
  if (post && strcmp(rest, "wake_up") == 0) {
    if (!fq__sim_scope_ok(a, "wake_up", FQ_DEV_VEHICLE,
                          FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_VEHICLE_DEVICE_DATA)) {
      ans_err(ans, 403, "Unauthorized missing scopes", "");
      return;
    }
    v->wake_ups++;
    if (!v->offline && v->asleep && !v->wake_at_ms) v->wake_at_ms = now + v->wake_ms;
    ans_response(ans, json_pack("{s:I, s:s, s:s}", "id", (json_int_t)v->id, "vin", v->vin,
                                "state", fq__sim_vehicle_state(v, now)));
    return;
  }
  if (post && strcmp(rest, "signed_command") == 0) {
    route_signed(w, a, v, ctx, ans, now);
    return;
  }
  if (post && prefix(&rest, "command/")) {
    const fq_cmd_t *cmd = fq_cmd_find(rest, strlen(rest), FQ_DEV_VEHICLE, NULL);
    /* What has no signed form (navigation_request) every car takes as REST. */
    bool rest_only = cmd && cmd->domain == FQ_DOMAIN_NONE && !cmd->wake;
    if (!v->legacy && !rest_only) {
      ans_protocol_required(ans);
      return;
    }
    if (!cmd || cmd->wake) {
      ans_err(ans, 400, "invalid_command", "");
      return;
    }
    if (!fq_cmd_allowed(cmd, a->scopes)) {
      ans_err(ans, 403, "Unauthorized missing scopes", "");
      return;
    }
    if (not_awake(v, true, ans, now)) return;
    json_t *params = parse_body(ctx);
    if (!params) {
      ans_err(ans, 400, "invalid_request", "the body is not JSON");
      return;
    }
    fq_err_t err = {0};
    fq_buf_reset(&ans->body);
    int rc = fq__sim_vehicle_rest(w, v, rest, params, &ans->body, &err);
    json_decref(params);
    if (rc == FQ_EBADPARAM) {
      ans_err(ans, 400, "invalid_field", err.msg);
    } else if (rc) {
      ans_err(ans, 400, "invalid_command", err.msg);
    } else {
      ans->status = 200;
      ans->ctype = "application/json; charset=utf-8";
      post_faults(&v->faults, &a->faults, ans);
    }
    return;
  }
  ans_err(ans, 404, "not_found", "");
}

static void route_site(fq__sim_world_t *w, fq__sim_account_t *a, const char *rest,
                       const char *method, conn_ctx_t *ctx, answer_t *ans, int64_t now) {
  char ids[24];
  if (!segment(&rest, ids, sizeof ids)) {
    ans_err(ans, 404, "not_found", "");
    return;
  }
  char *end;
  uint64_t id = strtoull(ids, &end, 10);
  fq__sim_site_t *s = *end ? NULL : fq__sim_site_find(w, id);
  if (!s || !fq__sim_account_has_site(a, id)) {
    ans_err(ans, 404, "not_found", "energy site not found");
    return;
  }
  if (pre_faults(&s->faults, ans, now)) return;
  if (strcmp(method, "GET") == 0 && strcmp(rest, "site_info") == 0) {
    if (!(a->scopes & (FQ_SCOPE_ENERGY_DEVICE_DATA | FQ_SCOPE_ENERGY_CMDS)))
      ans_err(ans, 403, "Unauthorized missing scopes", "");
    else ans_response(ans, fq__sim_site_json(s));
    return;
  }
  static const char *const cmds[] = {"backup", "operation", "storm_mode", "grid_import_export",
                                     "off_grid_vehicle_charging_reserve", "time_of_use_settings",
                                     NULL};
  size_t i = 0;
  while (cmds[i] && strcmp(cmds[i], rest) != 0) i++;
  if (strcmp(method, "POST") != 0 || !cmds[i]) {
    ans_err(ans, 404, "not_found", "");
    return;
  }
  if (!fq__sim_scope_ok(a, rest, FQ_DEV_SITE, FQ_SCOPE_ENERGY_CMDS)) {
    ans_err(ans, 403, "Unauthorized missing scopes", "");
    return;
  }
  json_t *body = parse_body(ctx);
  if (!body) {
    ans_err(ans, 400, "invalid_request", "the body is not JSON");
    return;
  }
  fq_err_t err = {0};
  fq_buf_reset(&ans->body);
  int rc = fq__sim_site_command(w, s, rest, body, (const char *)ctx->req.data, ctx->req.len,
                                &ans->body, &err);
  json_decref(body);
  if (rc) {
    ans_err(ans, 400, "invalid_field", err.msg);
    return;
  }
  ans->status = 200;
  ans->ctype = "application/json; charset=utf-8";
  post_faults(&s->faults, &a->faults, ans);
}

static void route_api(fq_sim_t *sim, struct MHD_Connection *c, const char *rest,
                      const char *method, conn_ctx_t *ctx, answer_t *ans) {
  fq__sim_world_t *w = &sim->w;
  const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  if (!auth || strncmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) >= FQ__SIM_MAX_TOKEN) {
    ans_err(ans, 401, "invalid bearer token", "");
    return;
  }
  int64_t now = fq_now_ms();
  fq__sim_account_t *a = NULL;
  int rc = fq__sim_auth(w, auth + 7, &a);
  if (rc == FQ_EAUTH) {
    ans_err(ans, 401, "invalid bearer token", "");
    return;
  }
  if (rc == FQ_EEXPIRED) {
    ans_err(ans, 401, "token expired (401)", "");
    return;
  }
  if (prefix(&rest, "users/region") && !*rest && strcmp(method, "GET") == 0) {
    /* Answered correctly from any regional host. */
    ans_response(ans, json_pack("{s:s, s:s}", "region", a->region, "fleet_api_base_url",
                                base_url(w, a)));
    return;
  }
  if (pre_faults(&a->faults, ans, now)) return;
  if (a->faults.rl_limit > 0) {
    /* Every answer carries the account's budget, as Fleet API's do. */
    fq__sim_faults_t *f = &a->faults;
    int64_t left = f->rl_limit - f->rl_count, reset = f->rl_start_ms + f->rl_window_ms - now;
    snprintf(ans->rl_limit, sizeof ans->rl_limit, "%" PRId64, f->rl_limit);
    snprintf(ans->rl_remaining, sizeof ans->rl_remaining, "%" PRId64, left > 0 ? left : 0);
    snprintf(ans->rl_reset, sizeof ans->rl_reset, "%" PRId64, reset > 0 ? (reset + 999) / 1000 : 0);
  }
  if (strcmp(a->region, w->region) != 0) {
    const char *url = base_url(w, a);
    char desc[400];
    snprintf(desc, sizeof desc,
             "user out of region, use base URL: %s/, see "
             "https://developer.tesla.com/docs/fleet-api#regional-requirements",
             url);
    ans_err(ans, 421, desc, "");
    snprintf(ans->alt_svc, sizeof ans->alt_svc, "h2=%s", url);
    return;
  }
  if (a->unregistered && (strncmp(rest, "vehicles", 8) == 0 ||
                          strncmp(rest, "energy_sites/", 13) == 0)) {
    /* The app never called POST /api/1/partner_accounts in this region. */
    char desc[400];
    snprintf(desc, sizeof desc,
             "Account must be registered in the current region %s. See "
             "https://developer.tesla.com/docs/fleet-api/endpoints/partner-endpoints#register "
             "for more information",
             base_url(w, a));
    ans_err(ans, 412, desc, "");
    return;
  }
  if (strcmp(rest, "partner_accounts/public_key") == 0 && strcmp(method, "GET") == 0) {
    route_partner_key(w, c, ans);
    return;
  }
  if (strcmp(rest, "vehicles") == 0 && strcmp(method, "GET") == 0) {
    route_vehicle_list(w, a, ans, now);
    return;
  }
  if (prefix(&rest, "vehicles/")) {
    if (strcmp(rest, "fleet_status") == 0 && strcmp(method, "POST") == 0)
      route_fleet_status(w, a, ctx, ans);
    else route_vehicle(w, a, rest, method, ctx, ans, now);
    return;
  }
  if (prefix(&rest, "energy_sites/")) {
    route_site(w, a, rest, method, ctx, ans, now);
    return;
  }
  ans_err(ans, 404, "not_found", "");
}

/* ---- /sim control endpoints -------------------------------------------------------- */

static json_t *account_json(fq__sim_account_t *a) {
  json_t *vins = json_array();
  return json_pack("{s:s, s:s?, s:s?, s:O, s:s, s:i, s:b, s:o}", "id", a->id, "token",
                   a->nissued ? a->issued[a->nissued - 1] : a->token, "refresh_token",
                   a->refresh, "scopes", a->scope_names, "region", a->region,
                   "token_expired", a->min_gen > 0, "registered", !a->unregistered, "vins",
                   vins);
}

static void route_executions(fq__sim_world_t *w, struct MHD_Connection *c, answer_t *ans) {
  const char *vin = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "vin");
  const char *site = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "site");
  const char *after_s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
  uint64_t after = after_s ? strtoull(after_s, NULL, 10) : 0;
  /* Built by hand: a JSON tree of a million records would cost far more. */
  fq_buf_t *b = &ans->body;
  fq_buf_reset(b);
  b->cap = MAX_LIST_BODY;
  fq_buf_append_str(b, "{\"executions\":[");
  bool first = true;
  int rc = 0;
  for (size_t i = 0; i < w->nexecs && !rc; i++) {
    const fq__sim_exec_t *e = &w->execs[i];
    if (e->seq <= after) continue;
    if (vin && (e->site || strcmp(e->device, vin) != 0)) continue;
    if (site && (!e->site || strcmp(e->device, site) != 0)) continue;
    rc = fq_buf_printf(b,
                       "%s{\"seq\":%" PRIu64 ",\"at_ms\":%" PRId64 ",\"%s\":%s%s%s,\"domain\":%d,"
                       "\"counter\":%" PRIu32 ",\"command\":\"%s\",\"payload\":\"%s\"}",
                       first ? "" : ",", e->seq, e->at_ms, e->site ? "site" : "vin",
                       e->site ? "" : "\"", e->device, e->site ? "" : "\"", e->domain,
                       e->counter, e->command, e->payload_hex);
    first = false;
  }
  if (!rc)
    rc = fq_buf_printf(b, "],\"total\":%" PRIu64 ",\"dropped\":%" PRIu64 "}", w->exec_seq,
                       w->execs_dropped);
  if (rc) {
    ans_err(ans, 500, "internal_error", "execution list too large");
    return;
  }
  ans->status = 200;
  ans->ctype = "application/json; charset=utf-8";
}

static void route_sim(fq_sim_t *sim, struct MHD_Connection *c, const char *rest,
                      const char *method, conn_ctx_t *ctx, answer_t *ans) {
  fq__sim_world_t *w = &sim->w;
  bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
  fq_err_t err = {0};
  if (get && strcmp(rest, "executions") == 0) {
    route_executions(w, c, ans);
    return;
  }
  if (get && strcmp(rest, "stats") == 0) {
    ans_json(ans, 200,
             json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "requests",
                       (json_int_t)w->st_requests, "signed_ok", (json_int_t)w->st_signed_ok,
                       "signed_fault", (json_int_t)w->st_signed_fault, "handshakes",
                       (json_int_t)w->st_handshakes, "rest", (json_int_t)w->st_rest,
                       "executions", (json_int_t)w->exec_seq, "vehicles",
                       (json_int_t)w->nvehicles, "fleet_status",
                       (json_int_t)w->st_fleet_status, "fleet_status_vins",
                       (json_int_t)w->st_fleet_status_vins));
    return;
  }
  if (post && strcmp(rest, "reset") == 0) {
    json_t *cfg = json_incref(w->config);
    char *dir = strdup(w->base_dir ? w->base_dir : ".");
    uint32_t gen = w->gen_vehicles;
    fq__sim_world_clear(w);
    int rc = dir ? fq__sim_world_load(w, cfg, dir, &err) : -ENOMEM;
    if (!rc && gen) rc = fq__sim_world_gen(w, gen, &err);
    json_decref(cfg);
    free(dir);
    if (rc) ans_err(ans, 500, "reset_failed", err.msg);
    else ans_json(ans, 200, json_pack("{s:b}", "reset", 1));
    return;
  }
  char id[FQ__SIM_MAX_TOKEN];
  json_t *patch = NULL;
  if (post) {
    patch = parse_body(ctx);
    if (!json_is_object(patch)) {
      json_decref(patch);
      ans_err(ans, 400, "invalid_request", "want a JSON object");
      return;
    }
  }
  int rc = 0;
  if (prefix(&rest, "vehicles/") && segment(&rest, id, FQ__SIM_MAX_ID)) {
    fq__sim_vehicle_t *v = fq__sim_map_get(&w->vin_map, id, strlen(id));
    if (!v) {
      ans_err(ans, 404, "not_found", "no such vehicle");
    } else if (post && strcmp(rest, "reboot") == 0) {
      /* A reboot starts new epochs: old sessions get INCORRECT_EPOCH. */
      for (int d = 0; d < 2; d++)
        if (v->vd[d]) fq_vcp_vdomain_new_epoch(v->vd[d], NULL, fq_now_ms() - 1000);
      ans_response(ans, fq__sim_vehicle_json(v, fq_now_ms()));
    } else if (!*rest && (get || post)) {
      if (post && json_object_get(patch, "vin"))
        rc = fq_errf(&err, FQ_ECONFIG, "the vin cannot be changed");
      if (post && !rc) rc = fq__sim_vehicle_apply(w, v, patch, &err);
      if (rc) {
        ans_err(ans, 400, "invalid_field", err.msg);
      } else {
        /* The simulator's own view adds what Fleet API does not show. */
        json_t *j = fq__sim_vehicle_json(v, fq_now_ms());
        if (j) json_object_set_new(j, "wake_ups", json_integer((json_int_t)v->wake_ups));
        ans_response(ans, j);
      }
    } else {
      ans_err(ans, 404, "not_found", "");
    }
  } else if (prefix(&rest, "accounts/") && segment(&rest, id, sizeof id) && !*rest) {
    fq__sim_account_t *a = fq__sim_account_find(w, id);
    if (!a) {
      ans_err(ans, 404, "not_found", "no such account");
    } else {
      if (post && (json_object_get(patch, "vins") || json_object_get(patch, "sites") ||
                   json_object_get(patch, "id")))
        rc = fq_errf(&err, FQ_ECONFIG, "id, vins and sites cannot be changed at run time");
      if (post && !rc) rc = fq__sim_account_apply(w, a, patch, &err);
      if (rc) ans_err(ans, 400, "invalid_field", err.msg);
      else ans_response(ans, account_json(a));
    }
  } else if (prefix(&rest, "sites/") && segment(&rest, id, 24) && !*rest) {
    fq__sim_site_t *s = fq__sim_site_find(w, strtoull(id, NULL, 10));
    if (!s) {
      ans_err(ans, 404, "not_found", "no such site");
    } else {
      if (post && json_object_get(patch, "id"))
        rc = fq_errf(&err, FQ_ECONFIG, "the id cannot be changed");
      if (post && !rc) rc = fq__sim_site_apply(w, s, patch, &err);
      if (rc) ans_err(ans, 400, "invalid_field", err.msg);
      else ans_response(ans, fq__sim_site_json(s));
    }
  } else {
    ans_err(ans, 404, "not_found", "");
  }
  json_decref(patch);
}

static void route(fq_sim_t *sim, struct MHD_Connection *c, const char *url, const char *method,
                  conn_ctx_t *ctx, answer_t *ans) {
  fq__sim_world_t *w = &sim->w;
  const char *rest = url;
  pthread_mutex_lock(&w->mu);
  w->st_requests++;
  if (ctx->too_large) {
    ans_err(ans, 413, "invalid_request", "request body too large");
  } else if (prefix(&rest, "/sim/")) {
    route_sim(sim, c, rest, method, ctx, ans);
  } else if (strcmp(url, "/oauth2/v3/token") == 0 && strcmp(method, "POST") == 0) {
    int status = 500;
    fq_buf_reset(&ans->body);
    fq__sim_oauth_token(w, (const char *)ctx->req.data, ctx->req.len, &status, &ans->body);
    ans->status = status;
    ans->ctype = "application/json; charset=utf-8";
  } else if (strcmp(url, "/status") == 0 && strcmp(method, "GET") == 0) {
    ans->status = 200;
    ans->ctype = "text/plain";
    fq_buf_append_str(&ans->body, "ok");
  } else if (prefix(&rest, "/api/1/")) {
    route_api(sim, c, rest, method, ctx, ans);
  } else {
    ans_err(ans, 404, "not_found", "");
  }
  pthread_mutex_unlock(&w->mu);
}

/* ---- libmicrohttpd glue ---------------------------------------------------------- */

static enum MHD_Result send_answer(struct MHD_Connection *c, conn_ctx_t *ctx) {
  answer_t *a = &ctx->ans;
  if (a->status == 0) return MHD_NO; /* drop: close without a reply */
  struct MHD_Response *r =
      MHD_create_response_from_buffer(a->body.len, a->body.data, MHD_RESPMEM_MUST_COPY);
  if (!r) return MHD_NO;
  if (a->ctype) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->ctype);
  if (a->retry_after[0]) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, a->retry_after);
  if (a->alt_svc[0]) MHD_add_response_header(r, "Alt-Svc", a->alt_svc);
  if (a->rl_limit[0]) {
    MHD_add_response_header(r, "RateLimit-Limit", a->rl_limit);
    MHD_add_response_header(r, "RateLimit-Remaining", a->rl_remaining);
    MHD_add_response_header(r, "RateLimit-Reset", a->rl_reset);
  }
  enum MHD_Result ret = MHD_queue_response(c, (unsigned)a->status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
  fq_sim_t *sim = cls;
  conn_ctx_t *ctx = *con_cls;
  (void)version;
  if (!ctx) {
    ctx = calloc(1, sizeof *ctx);
    if (!ctx) return MHD_NO;
    fq_buf_init(&ctx->req, FQ__SIM_MAX_BODY);
    fq_buf_init(&ctx->ans.body, (size_t)64 << 20);
    *con_cls = ctx;
    return MHD_YES;
  }
  if (*upload_size) {
    if (!ctx->too_large && fq_buf_append(&ctx->req, upload_data, *upload_size))
      ctx->too_large = true;
    *upload_size = 0;
    return MHD_YES;
  }
  if (ctx->ready) return send_answer(c, ctx); /* resumed after its delay */
  route(sim, c, url, method, ctx, &ctx->ans);
  ctx->ready = true;
  if (ctx->ans.delay_ms > 0) {
    pthread_mutex_lock(&sim->tmu);
    /* Once shutdown began nobody would resume it: answer now instead. */
    bool later = !sim->stopping;
    if (later) {
      MHD_suspend_connection(c);
      delay_push(sim, fq_mono_ns() + ctx->ans.delay_ms * 1000000, c);
      pthread_cond_signal(&sim->tcv);
    }
    pthread_mutex_unlock(&sim->tmu);
    if (later) return MHD_YES;
  }
  return send_answer(c, ctx);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)c;
  (void)toe;
  conn_ctx_t *ctx = *con_cls;
  if (!ctx) return;
  fq_buf_free(&ctx->req);
  fq_buf_free(&ctx->ans.body);
  free(ctx);
  *con_cls = NULL;
}

/* libmicrohttpd reports a handler's MHD_NO (our deliberate hang-ups) as an
 * "internal error": keep its chatter at debug level.  The format is
 * libmicrohttpd's own (the attribute tells -Wformat-nonliteral so). */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  size_t n = strlen(line);
  while (n && line[n - 1] == '\n') line[--n] = 0;
  fq_debug(MOD, "microhttpd: %s", line);
}

/* ---- lifecycle ------------------------------------------------------------------- */

static fq_sim_t *sim_alloc(void) {
  fq_sim_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  pthread_mutex_init(&s->w.mu, NULL);
  pthread_mutex_init(&s->tmu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->tcv, &ca);
  pthread_condattr_destroy(&ca);
  return s;
}

fq_sim_t *fq_sim_new_json(json_t *config, const char *base_dir, fq_err_t *err) {
  fq_sim_t *s = sim_alloc();
  if (!s) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  if (fq__sim_world_load(&s->w, config, base_dir, err)) {
    fq_sim_destroy(&s);
    return NULL;
  }
  return s;
}

fq_sim_t *fq_sim_new(const char *config_path, fq_err_t *err) {
  json_error_t je;
  json_t *cfg = json_load_file(config_path, JSON_REJECT_DUPLICATES, &je);
  if (!cfg) {
    fq_errf(err, FQ_ECONFIG, "%s:%d: %s", config_path, je.line, je.text);
    return NULL;
  }
  char *copy = strdup(config_path);
  fq_sim_t *s = copy ? fq_sim_new_json(cfg, dirname(copy), err) : NULL;
  if (!copy) fq_errf(err, -ENOMEM, "out of memory");
  free(copy);
  json_decref(cfg);
  return s;
}

int fq_sim_gen_vehicles(fq_sim_t *sim, uint32_t n, fq_err_t *err) {
  pthread_mutex_lock(&sim->w.mu);
  int rc = fq__sim_world_gen(&sim->w, n, err);
  pthread_mutex_unlock(&sim->w.mu);
  return rc;
}

int fq_sim_start(fq_sim_t *sim, const char *host, uint16_t port, const char *tls_cert_path,
                 const char *tls_key_path, fq_err_t *err) {
  if (sim->mhd) return fq_errf(err, FQ_EINTERNAL, "already started");
  if (!tls_cert_path != !tls_key_path)
    return fq_errf(err, FQ_ECONFIG, "give both a TLS certificate and a key, or neither");
  int rc = 0;
  struct addrinfo hints = {0}, *ai = NULL;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char ports[8];
  snprintf(ports, sizeof ports, "%u", (unsigned)port);
  if (getaddrinfo(host && *host ? host : NULL, ports, &hints, &ai) || !ai)
    return fq_errf(err, FQ_ECONFIG, "cannot resolve listen address %s", host ? host : "(any)");
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ERROR_LOG;
  if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  if (tls_cert_path) {
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      rc = fq_errf(err, FQ_ECONFIG, "this libmicrohttpd has no TLS support");
      goto out;
    }
    size_t n;
    if ((rc = fq_read_file(tls_cert_path, 1 << 20, &sim->tls_cert, &n))) {
      rc = fq_errf(err, FQ_ECONFIG, "%s: %s", tls_cert_path, fq_strerror(rc));
      goto out;
    }
    if ((rc = fq_read_file(tls_key_path, 1 << 20, &sim->tls_key, &n))) {
      rc = fq_errf(err, FQ_ECONFIG, "%s: %s", tls_key_path, fq_strerror(rc));
      goto out;
    }
    flags |= MHD_USE_TLS;
  }
  if (pthread_create(&sim->timer, NULL, timer_main, sim)) {
    rc = fq_errf(err, FQ_EINTERNAL, "cannot start the timer thread");
    goto out;
  }
  sim->timer_running = true;
  /* Counted before the server runs: afterwards the world belongs to the
   * handlers (and /sim/reset may rebuild it). */
  pthread_mutex_lock(&sim->w.mu);
  size_t nv = sim->w.nvehicles, ns = sim->w.nsites, na = sim->w.naccounts;
  pthread_mutex_unlock(&sim->w.mu);
  struct MHD_OptionItem tls_opts[] = {
      {MHD_OPTION_HTTPS_MEM_CERT, 0, sim->tls_cert},
      {MHD_OPTION_HTTPS_MEM_KEY, 0, sim->tls_key},
      {MHD_OPTION_END, 0, NULL},
  };
  sim->mhd = MHD_start_daemon(
      flags, port, NULL, NULL, on_request, sim, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
      MHD_OPTION_THREAD_POOL_SIZE, (unsigned)2, MHD_OPTION_CONNECTION_LIMIT, (unsigned)16384,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
      sim, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
      sim, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_ARRAY,
      tls_cert_path ? tls_opts : &tls_opts[2], MHD_OPTION_END);
  if (!sim->mhd) {
    rc = fq_errf(err, FQ_EINTERNAL, "cannot listen on %s:%u (in use, or bad TLS PEM?)",
                 host ? host : "*", (unsigned)port);
    goto out;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(sim->mhd, MHD_DAEMON_INFO_BIND_PORT);
  sim->port = info ? info->port : port;
  fq_info(MOD, "listening on %s:%u (%s), %zu vehicles, %zu sites, %zu accounts, seed %" PRIu64,
          host ? host : "*", (unsigned)sim->port, tls_cert_path ? "https" : "http", nv, ns, na,
          sim->w.seed);
out:
  freeaddrinfo(ai);
  return rc;
}

uint16_t fq_sim_port(const fq_sim_t *sim) { return sim ? sim->port : 0; }

void fq_sim_destroy(fq_sim_t **sp) {
  if (!sp || !*sp) return;
  fq_sim_t *s = *sp;
  *sp = NULL;
  if (s->timer_running) {
    pthread_mutex_lock(&s->tmu);
    s->stopping = true;
    pthread_cond_signal(&s->tcv);
    pthread_mutex_unlock(&s->tmu);
    pthread_join(s->timer, NULL);
    /* MHD refuses to stop with suspended connections: let them go.  No
     * handler adds to the heap once `stopping` is set. */
    pthread_mutex_lock(&s->tmu);
    while (fq_heap_count(&s->delayed)) MHD_resume_connection(fq_heap_pop(&s->delayed).v.p);
    pthread_mutex_unlock(&s->tmu);
  }
  if (s->mhd) MHD_stop_daemon(s->mhd);
  fq__sim_world_clear(&s->w);
  json_decref(s->w.config);
  free(s->w.base_dir);
  fq_heap_free(&s->delayed);
  free(s->tls_cert);
  free(s->tls_key);
  pthread_mutex_destroy(&s->w.mu);
  pthread_mutex_destroy(&s->tmu);
  pthread_cond_destroy(&s->tcv);
  free(s);
}
