/*
 * fleetsim configuration: turns the JSON config (docs/fleetsim.md) into the
 * simulated world (accounts, vehicles, energy sites, their failure
 * scenarios), applies run-time patches from the /sim control endpoints,
 * generates large fleets for load tests, and keeps the ground-truth log of
 * executed commands.  The helpers the other sim modules share (string map,
 * injected failures, the execution log) are in sim_common.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleetq/commands.h"
#include "sim_int.h"
#include "util.h"

/* ---- configuration values -------------------------------------------------- */

static int get_int(const json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   const char *who, fq_err_t *err) {
  json_t *v = json_object_get(o, key);
  if (!v) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
    return fq_errf(err, FQ_ECONFIG, "%s.%s: want an integer %" PRId64 "..%" PRId64, who, key,
                   lo, hi);
  *out = json_integer_value(v);
  return 0;
}

static int get_bool(const json_t *o, const char *key, bool *out, const char *who, fq_err_t *err) {
  json_t *v = json_object_get(o, key);
  if (!v) return 0;
  if (!json_is_boolean(v)) return fq_errf(err, FQ_ECONFIG, "%s.%s: want true or false", who, key);
  *out = json_is_true(v);
  return 0;
}

/* {"next": N} or {"prob": p}; null clears. */
static int inject_apply(fq__sim_inject_t *in, const json_t *v, const char *who, const char *name,
                        fq_err_t *err) {
  memset(in, 0, sizeof *in);
  if (json_is_null(v)) return 0;
  if (!json_is_object(v)) return fq_errf(err, FQ_ECONFIG, "%s.fail.%s: want an object", who, name);
  int64_t next = 0;
  int rc = get_int(v, "next", 0, INT64_MAX, &next, who, err);
  if (rc) return rc;
  in->next = next;
  json_t *p = json_object_get(v, "prob");
  if (p) {
    if (!json_is_number(p) || json_number_value(p) < 0 || json_number_value(p) > 1)
      return fq_errf(err, FQ_ECONFIG, "%s.fail.%s.prob: want a number 0..1", who, name);
    in->prob = json_number_value(p);
  }
  return 0;
}

int fq__sim_faults_apply(fq__sim_faults_t *f, const json_t *o, const char *who, fq_err_t *err) {
  int rc = 0;
  int64_t v;
  json_t *x;
  if ((x = json_object_get(o, "seed"))) {
    if (!json_is_integer(x)) return fq_errf(err, FQ_ECONFIG, "%s.seed: want an integer", who);
    fq_rng_seed(&f->rng, (uint64_t)json_integer_value(x));
  }
  if ((x = json_object_get(o, "latency"))) {
    f->latency_ms = f->jitter_ms = 0;
    if (!json_is_null(x)) {
      if (!json_is_object(x)) return fq_errf(err, FQ_ECONFIG, "%s.latency: want an object", who);
      if ((rc = get_int(x, "fixed_ms", 0, 3600000, &f->latency_ms, who, err))) return rc;
      if ((rc = get_int(x, "jitter_ms", 0, 3600000, &f->jitter_ms, who, err))) return rc;
    }
  }
  if ((x = json_object_get(o, "rate_limit"))) {
    f->rl_limit = 0;
    f->rl_window_ms = 60000;
    f->rl_count = 0;
    f->rl_start_ms = 0;
    if (!json_is_null(x)) {
      if (!json_is_object(x)) return fq_errf(err, FQ_ECONFIG, "%s.rate_limit: want an object", who);
      if ((rc = get_int(x, "limit", 0, INT32_MAX, &f->rl_limit, who, err))) return rc;
      v = 60;
      if ((rc = get_int(x, "window_s", 1, 86400 * 31, &v, who, err))) return rc;
      f->rl_window_ms = v * 1000;
      if ((rc = get_int(x, "window_ms", 1, 86400000ll * 31, &f->rl_window_ms, who, err)))
        return rc;
      if ((rc = get_int(x, "retry_after", 0, 86400 * 31, &f->retry_after_s, who, err))) return rc;
    }
  }
  if ((x = json_object_get(o, "fail"))) {
    if (json_is_null(x)) {
      fq_rng_t rng = f->rng;
      int64_t lat = f->latency_ms, jit = f->jitter_ms, rl = f->rl_limit, rw = f->rl_window_ms;
      int64_t ra = f->retry_after_s;
      memset(f, 0, sizeof *f);
      f->rng = rng;
      f->latency_ms = lat;
      f->jitter_ms = jit;
      f->rl_limit = rl;
      f->rl_window_ms = rw;
      f->retry_after_s = ra;
      return 0;
    }
    if (!json_is_object(x)) return fq_errf(err, FQ_ECONFIG, "%s.fail: want an object", who);
    const char *k;
    json_t *e;
    json_object_foreach((json_t *)x, k, e) {
      fq__sim_inject_t *in = NULL;
      if (strcmp(k, "http_429") == 0) in = &f->http429;
      else if (strcmp(k, "http_503") == 0) in = &f->http503;
      else if (strcmp(k, "http_500") == 0) in = &f->http500;
      else if (strcmp(k, "timeout") == 0) in = &f->hold;
      else if (strcmp(k, "drop_reply") == 0) in = &f->drop;
      else if (strcmp(k, "vehicle_fault") == 0) in = &f->fault;
      else if (strcmp(k, "http_451") == 0) in = &f->http451;
      else if (strcmp(k, "mobile_access_disabled") == 0) in = &f->mobile_off;
      else if (strcmp(k, "garbled_reply") == 0) in = &f->garble;
      else if (strcmp(k, "plaintext_reply") == 0) in = &f->plaintext;
      else if (strcmp(k, "protocol_required") == 0) in = &f->protocol;
      else if (strcmp(k, "session_info_clock_back") == 0) in = &f->info_back;
      else if (strcmp(k, "session_info_late") == 0) in = &f->info_late;
      else return fq_errf(err, FQ_ECONFIG, "%s.fail.%s: unknown failure", who, k);
      if ((rc = inject_apply(in, e, who, k, err))) return rc;
      if (!json_is_object(e)) continue;
      if (in == &f->http429 && (rc = get_int(e, "retry_after", 0, 86400 * 31, &f->retry_after_s,
                                             who, err)))
        return rc;
      if (in == &f->hold) {
        f->hold_ms = 15000;
        if ((rc = get_int(e, "hold_ms", 0, 3600000, &f->hold_ms, who, err))) return rc;
      }
      if (in == &f->drop) {
        int64_t st = 504;
        if ((rc = get_int(e, "status", 0, 599, &st, who, err))) return rc;
        if (st != 0 && st != 500 && st != 502 && st != 504 && st != 540)
          return fq_errf(err, FQ_ECONFIG,
                         "%s.fail.drop_reply.status: want 500, 502, 504, 540 or 0", who);
        f->drop_status = (int)st;
        f->drop_delay_ms = 0;
        if ((rc = get_int(e, "delay_ms", 0, 3600000, &f->drop_delay_ms, who, err))) return rc;
      }
      if (in == &f->info_back) {
        f->info_back_s = 60;
        if ((rc = get_int(e, "back_s", 1, 86400, &f->info_back_s, who, err))) return rc;
      }
      if (in == &f->info_late) {
        f->info_late_ms = 11000;
        if ((rc = get_int(e, "delay_ms", 0, 3600000, &f->info_late_ms, who, err))) return rc;
      }
      if (in == &f->fault) {
        int64_t code = 1;
        if ((rc = get_int(e, "code", 1, 28, &code, who, err))) return rc;
        f->fault_code = (int)code;
      }
    }
  }
  return 0;
}

/* ---- keys -------------------------------------------------------------------- */

static char *path_join(const char *dir, const char *name) {
  if (name[0] == '/' || !dir || !*dir) return strdup(name);
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* A client public key as 65 uncompressed bytes, from hex or a PEM file
 * (public or private key). */
static int load_pub(const char *dir, const char *spec, uint8_t out[65], fq_err_t *err) {
  if (strlen(spec) == 130 && fq_hex_decode(spec, out, 65) == 65 && out[0] == 4) return 0;
  int rc = 0;
  char *path = path_join(dir, spec);
  if (!path) return -ENOMEM;
  EVP_PKEY *pk = NULL;
  FILE *f = fopen(path, "r");
  if (!f) {
    rc = fq_errf(err, FQ_EKEYFILE, "%s: %s", path, fq_strerror(-errno));
    goto out;
  }
  pk = PEM_read_PUBKEY(f, NULL, NULL, NULL);
  if (!pk) {
    rewind(f);
    pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  }
  fclose(f);
  size_t n = 0;
  if (!pk || !EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out, 65,
                                              &n) ||
      n != 65 || out[0] != 4) {
    rc = fq_errf(err, FQ_EKEYFILE, "%s: not a P-256 public key in PEM", path);
    goto out;
  }
out:
  EVP_PKEY_free(pk);
  free(path);
  return rc;
}

static int load_priv(const char *dir, const char *spec, fq_vcp_key_t **out, fq_err_t *err) {
  char *path = path_join(dir, spec);
  if (!path) return -ENOMEM;
  char *pem = NULL;
  size_t len = 0;
  int rc = fq_read_file(path, 16384, &pem, &len);
  if (rc) rc = fq_errf(err, FQ_EKEYFILE, "%s: %s", path, fq_strerror(rc));
  else rc = fq_vcp_key_from_pem(pem, len, out, err);
  free(pem);
  free(path);
  return rc;
}

/* ---- entities -------------------------------------------------------------------- */

/* Each entity draws from its own sequence, fixed by the world's seed and
 * its id, so adding a car does not change what the others draw. */
static void seed_for(fq_rng_t *rng, const fq__sim_world_t *w, const char *id) {
  fq_rng_seed(rng, w->seed ^ fq_hash64(id, strlen(id)));
}

static int add_index(size_t **arr, size_t *n, size_t v) {
  for (size_t i = 0; i < *n; i++)
    if ((*arr)[i] == v) return 0;
  size_t *p = realloc(*arr, (*n + 1) * sizeof *p);
  if (!p) return -ENOMEM;
  p[(*n)++] = v;
  *arr = p;
  return 0;
}

static fq__sim_vehicle_t *vehicle_new(fq__sim_world_t *w, const char *vin, fq_err_t *err) {
  if (!*vin || strlen(vin) >= FQ__SIM_MAX_ID) {
    fq_errf(err, FQ_ECONFIG, "vehicle vin \"%.20s\": want 1..%d characters", vin,
            FQ__SIM_MAX_ID - 1);
    return NULL;
  }
  for (const char *c = vin; *c; c++)
    if (!((*c >= '0' && *c <= '9') || (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z'))) {
      /* VINs go into URLs and hand-built JSON: letters and digits only. */
      fq_errf(err, FQ_ECONFIG, "vehicle vin \"%.20s\": letters and digits only", vin);
      return NULL;
    }
  if (fq__sim_map_get(&w->vin_map, vin, strlen(vin))) {
    fq_errf(err, FQ_ECONFIG, "vehicle %s listed twice", vin);
    return NULL;
  }
  if ((w->nvehicles & (w->nvehicles - 1)) == 0) {
    size_t ncap = w->nvehicles ? w->nvehicles * 2 : 16;
    fq__sim_vehicle_t **p = realloc(w->vehicles, ncap * sizeof *p);
    if (!p) goto nomem;
    w->vehicles = p;
  }
  fq__sim_vehicle_t *v = calloc(1, sizeof *v);
  if (!v) goto nomem;
  snprintf(v->vin, sizeof v->vin, "%s", vin);
  v->id = 100000 + w->nvehicles;
  v->paired = true;
  v->wake_ms = w->default_wake_ms;
  v->asleep_status = 408;
  seed_for(&v->faults.rng, w, vin);
  fq__sim_vehicle_defaults(v);
  if (fq__sim_map_put(&w->vin_map, v->vin, v)) {
    free(v);
    goto nomem;
  }
  v->idx = w->nvehicles;
  w->vehicles[w->nvehicles++] = v;
  return v;
nomem:
  fq_errf(err, -ENOMEM, "out of memory");
  return NULL;
}

fq__sim_site_t *fq__sim_site_find(fq__sim_world_t *w, uint64_t id) {
  for (size_t i = 0; i < w->nsites; i++)
    if (w->sites[i]->id == id) return w->sites[i];
  return NULL;
}

static fq__sim_site_t *site_new(fq__sim_world_t *w, uint64_t id, fq_err_t *err) {
  fq__sim_site_t **p = realloc(w->sites, (w->nsites + 1) * sizeof *p);
  if (!p) goto nomem;
  w->sites = p;
  fq__sim_site_t *s = calloc(1, sizeof *s);
  if (!s) goto nomem;
  s->id = id;
  char ids[32];
  snprintf(ids, sizeof ids, "site%" PRIu64, id);
  seed_for(&s->faults.rng, w, ids);
  fq__sim_site_defaults(s);
  w->sites[w->nsites++] = s;
  return s;
nomem:
  fq_errf(err, -ENOMEM, "out of memory");
  return NULL;
}

int fq__sim_vehicle_apply(fq__sim_world_t *w, fq__sim_vehicle_t *v, const json_t *o,
                          fq_err_t *err) {
  static const char *const known[] = {
      "vin", "id", "paired", "paired_keys", "asleep", "offline", "legacy", "wake_ms",
      "vcsec_key", "infotainment_key", "name", "locked", "charge_limit",
      "charging_amps", "charging_amps_max", "battery_level", "cable_connected",
      "charging_state", "latency", "rate_limit", "fail", "seed", "asleep_status",
      "infotainment_lag_ms", NULL};
  const char *who = v->vin;
  const char *k;
  json_t *x;
  json_object_foreach((json_t *)o, k, x) {
    size_t i = 0;
    while (known[i] && strcmp(known[i], k) != 0) i++;
    if (!known[i]) return fq_errf(err, FQ_ECONFIG, "vehicle %s: unknown key \"%s\"", who, k);
  }
  int rc;
  int64_t n;
  if ((rc = get_bool(o, "paired", &v->paired, who, err))) return rc;
  if ((rc = get_bool(o, "offline", &v->offline, who, err))) return rc;
  if ((rc = get_bool(o, "legacy", &v->legacy, who, err))) return rc;
  if ((x = json_object_get(o, "asleep"))) {
    if ((rc = get_bool(o, "asleep", &v->asleep, who, err))) return rc;
    v->wake_at_ms = 0;
  }
  if ((rc = get_int(o, "wake_ms", 0, 3600000, &v->wake_ms, who, err))) return rc;
  if ((x = json_object_get(o, "asleep_status"))) {
    n = 0;
    if ((rc = get_int(o, "asleep_status", 408, 503, &n, who, err))) return rc;
    if (n != 408 && n != 503)
      return fq_errf(err, FQ_ECONFIG, "vehicle %s.asleep_status: 408 or 503, not %lld", who,
                     (long long)n);
    v->asleep_status = (int)n;
  }
  if ((rc = get_int(o, "infotainment_lag_ms", 0, 3600000, &v->infotainment_lag_ms, who, err)))
    return rc;
  if ((x = json_object_get(o, "id"))) {
    n = 0;
    if ((rc = get_int(o, "id", 1, INT64_MAX, &n, who, err))) return rc;
    v->id = (uint64_t)n;
  }
  if ((x = json_object_get(o, "paired_keys"))) {
    if (!json_is_array(x)) return fq_errf(err, FQ_ECONFIG, "vehicle %s.paired_keys: want an array", who);
    free(v->extra_keys);
    v->extra_keys = NULL;
    v->nextra = 0;
    size_t cnt = json_array_size(x);
    if (cnt) {
      v->extra_keys = calloc(cnt, 65);
      if (!v->extra_keys) return -ENOMEM;
    }
    for (size_t i = 0; i < cnt; i++) {
      const char *s = json_string_value(json_array_get(x, i));
      if (!s) return fq_errf(err, FQ_ECONFIG, "vehicle %s.paired_keys: want strings", who);
      if ((rc = load_pub(w->base_dir, s, v->extra_keys[i], err))) return rc;
      v->nextra++;
    }
  }
  static const char *const keyname[2] = {"vcsec_key", "infotainment_key"};
  for (int d = 0; d < 2; d++) {
    const char *s = json_string_value(json_object_get(o, keyname[d]));
    if (!s) continue;
    fq_vcp_key_t *key = NULL;
    if ((rc = load_priv(w->base_dir, s, &key, err))) return rc;
    /* A new key is a new car as far as sessions go. */
    fq_vcp_vdomain_destroy(&v->vd[d]);
    fq_vcp_key_destroy(&v->key[d]);
    v->key[d] = key;
  }
  if ((x = json_object_get(o, "name"))) {
    const char *s = json_string_value(x);
    if (!s || strlen(s) > FQ__SIM_MAX_NAME)
      return fq_errf(err, FQ_ECONFIG, "vehicle %s.name: want a string of at most %d bytes", who,
                     FQ__SIM_MAX_NAME);
    snprintf(v->name, sizeof v->name, "%s", s);
  }
  if ((rc = get_bool(o, "locked", &v->locked, who, err))) return rc;
  if ((rc = get_bool(o, "cable_connected", &v->cable, who, err))) return rc;
  n = v->charge_limit;
  if ((rc = get_int(o, "charge_limit", 50, 100, &n, who, err))) return rc;
  v->charge_limit = (int)n;
  n = v->charge_amps_max;
  if ((rc = get_int(o, "charging_amps_max", 1, 80, &n, who, err))) return rc;
  v->charge_amps_max = (int)n;
  n = v->charge_amps;
  if ((rc = get_int(o, "charging_amps", 0, 80, &n, who, err))) return rc;
  v->charge_amps = (int)n;
  n = v->battery_level;
  if ((rc = get_int(o, "battery_level", 0, 100, &n, who, err))) return rc;
  v->battery_level = (int)n;
  if ((x = json_object_get(o, "charging_state"))) {
    const char *s = json_string_value(x);
    if (!s || (strcmp(s, "Disconnected") && strcmp(s, "Stopped") && strcmp(s, "Charging") &&
               strcmp(s, "Complete")))
      return fq_errf(err, FQ_ECONFIG,
                     "vehicle %s.charging_state: want Disconnected, Stopped, Charging or Complete",
                     who);
    snprintf(v->charging, sizeof v->charging, "%s", s);
    if (strcmp(s, "Disconnected") == 0) v->cable = false;
  }
  if (!v->cable) snprintf(v->charging, sizeof v->charging, "Disconnected");
  fq__sim_vehicle_repair(w, v);
  return fq__sim_faults_apply(&v->faults, o, who, err);
}

static int scopes_from_json(fq__sim_account_t *a, const json_t *x, fq_err_t *err) {
  json_t *arr = NULL;
  if (json_is_string(x)) {
    arr = json_array();
    char *dup = strdup(json_string_value(x));
    if (!arr || !dup) {
      free(dup);
      json_decref(arr);
      return -ENOMEM;
    }
    for (char *save = NULL, *t = strtok_r(dup, " ,", &save); t; t = strtok_r(NULL, " ,", &save))
      json_array_append_new(arr, json_string(t));
    free(dup);
  } else if (json_is_array(x)) {
    arr = json_deep_copy(x);
  } else {
    return fq_errf(err, FQ_ECONFIG, "account %s.scopes: want an array of names", a->id);
  }
  unsigned bits = 0;
  size_t i;
  json_t *e;
  json_array_foreach(arr, i, e) {
    if (!json_is_string(e)) {
      json_decref(arr);
      return fq_errf(err, FQ_ECONFIG, "account %s.scopes: want strings", a->id);
    }
    bits |= fq_scope_parse(json_string_value(e));
  }
  json_decref(a->scope_names);
  a->scope_names = arr;
  a->scopes = bits;
  return 0;
}

int fq__sim_account_apply(fq__sim_world_t *w, fq__sim_account_t *a, const json_t *o,
                          fq_err_t *err) {
  static const char *const known[] = {"id", "token", "refresh_token", "scopes", "region",
                                      "base_url", "expires_in", "token_expired", "vins",
                                      "sites", "latency", "rate_limit", "fail", "seed",
                                      "registered", "fleet_status_status", NULL};
  const char *k;
  json_t *x;
  json_object_foreach((json_t *)o, k, x) {
    size_t i = 0;
    while (known[i] && strcmp(known[i], k) != 0) i++;
    if (!known[i]) return fq_errf(err, FQ_ECONFIG, "account %s: unknown key \"%s\"", a->id, k);
  }
  int rc;
  size_t ai = (size_t)(a - w->accounts);
  if ((x = json_object_get(o, "scopes")) && (rc = scopes_from_json(a, x, err))) return rc;
  if ((x = json_object_get(o, "region"))) {
    const char *s = json_string_value(x);
    if (!s || strlen(s) >= sizeof a->region)
      return fq_errf(err, FQ_ECONFIG, "account %s.region: want \"na\", \"eu\" or \"cn\"", a->id);
    snprintf(a->region, sizeof a->region, "%s", s);
  }
  if ((x = json_object_get(o, "base_url"))) {
    free(a->base_url);
    a->base_url = NULL;
    if (!json_is_null(x)) {
      if (!json_is_string(x)) return fq_errf(err, FQ_ECONFIG, "account %s.base_url: want a URL", a->id);
      if (!(a->base_url = strdup(json_string_value(x)))) return -ENOMEM;
    }
  }
  if ((rc = get_int(o, "expires_in", 1, 86400 * 365, &a->expires_in_s, a->id, err))) return rc;
  if ((x = json_object_get(o, "fleet_status_status"))) {
    json_int_t st = json_integer_value(x);
    if (!json_is_integer(x) || (st != 0 && (st < 400 || st > 599)))
      return fq_errf(err, FQ_ECONFIG,
                     "account %s.fleet_status_status: want 0 (answer normally) or an HTTP "
                     "error status 400..599",
                     a->id);
    a->fleet_status_status = st;
  }
  if ((x = json_object_get(o, "registered"))) {
    if (!json_is_boolean(x))
      return fq_errf(err, FQ_ECONFIG, "account %s.registered: want true or false", a->id);
    a->unregistered = !json_is_true(x);
  }
  if ((x = json_object_get(o, "token_expired"))) {
    if (!json_is_boolean(x))
      return fq_errf(err, FQ_ECONFIG, "account %s.token_expired: want true or false", a->id);
    /* Expire every token issued so far; a refresh issues a valid one. */
    a->min_gen = json_is_true(x) ? a->gen : 0;
  }
  if ((x = json_object_get(o, "token"))) {
    const char *s = json_string_value(x);
    if (!s || !*s || strlen(s) >= FQ__SIM_MAX_TOKEN)
      return fq_errf(err, FQ_ECONFIG, "account %s.token: want a string", a->id);
    if (a->token) {
      free(fq__sim_map_get(&w->tok_map, a->token, strlen(a->token)));
      fq__sim_map_del(&w->tok_map, a->token);
    }
    free(a->token);
    if (!(a->token = strdup(s))) return -ENOMEM;
    if ((rc = fq__sim_token_add(w, a->token, ai, a->gen++, 0))) return rc;
  }
  if ((x = json_object_get(o, "refresh_token"))) {
    const char *s = json_string_value(x);
    if (!s || !*s || strlen(s) >= FQ__SIM_MAX_TOKEN)
      return fq_errf(err, FQ_ECONFIG, "account %s.refresh_token: want a string", a->id);
    if (a->refresh) fq__sim_map_del(&w->ref_map, a->refresh);
    free(a->refresh);
    if (!(a->refresh = strdup(s))) return -ENOMEM;
    if (fq__sim_map_put(&w->ref_map, a->refresh, a)) return -ENOMEM;
  }
  if ((x = json_object_get(o, "vins"))) {
    if (!json_is_array(x)) return fq_errf(err, FQ_ECONFIG, "account %s.vins: want an array", a->id);
    size_t i;
    json_t *e;
    json_array_foreach(x, i, e) {
      const char *vin = json_string_value(e);
      if (!vin) return fq_errf(err, FQ_ECONFIG, "account %s.vins: want strings", a->id);
      fq__sim_vehicle_t *v = fq__sim_map_get(&w->vin_map, vin, strlen(vin));
      if (!v && !(v = vehicle_new(w, vin, err))) return err ? err->code : FQ_ECONFIG;
      if ((rc = add_index(&a->vehicles, &a->nvehicles, v->idx))) return rc;
      if ((rc = add_index(&v->accounts, &v->naccounts, ai))) return rc;
    }
  }
  if ((x = json_object_get(o, "sites"))) {
    if (!json_is_array(x)) return fq_errf(err, FQ_ECONFIG, "account %s.sites: want an array", a->id);
    size_t i;
    json_t *e;
    json_array_foreach(x, i, e) {
      if (!json_is_integer(e) || json_integer_value(e) <= 0)
        return fq_errf(err, FQ_ECONFIG, "account %s.sites: want positive integers", a->id);
      uint64_t id = (uint64_t)json_integer_value(e);
      fq__sim_site_t *s = fq__sim_site_find(w, id);
      if (!s && !(s = site_new(w, id, err))) return err ? err->code : FQ_ECONFIG;
      uint64_t *p = realloc(a->sites, (a->nsites + 1) * sizeof *p);
      if (!p) return -ENOMEM;
      a->sites = p;
      a->sites[a->nsites++] = id;
      if ((rc = add_index(&s->accounts, &s->naccounts, ai))) return rc;
    }
  }
  return fq__sim_faults_apply(&a->faults, o, a->id, err);
}

int fq__sim_site_apply(fq__sim_world_t *w, fq__sim_site_t *s, const json_t *o, fq_err_t *err) {
  char who[32];
  snprintf(who, sizeof who, "site %" PRIu64, s->id);
  const char *k;
  json_t *x;
  json_object_foreach((json_t *)o, k, x) {
    if (strcmp(k, "id") == 0 || strcmp(k, "latency") == 0 || strcmp(k, "rate_limit") == 0 ||
        strcmp(k, "fail") == 0 || strcmp(k, "seed") == 0)
      continue;
    /* Anything else is a setting, checked exactly as the command would. */
    static const struct {
      const char *key, *cmd;
    } map[] = {{"backup_reserve_percent", "backup"},
               {"default_real_mode", "operation"},
               {"storm_mode_enabled", "storm_mode"},
               {"customer_preferred_export_rule", "grid_import_export"},
               {"disallow_charge_from_grid_with_solar_installed", "grid_import_export"},
               {"off_grid_vehicle_charging_reserve_percent", "off_grid_vehicle_charging_reserve"}};
    size_t i = 0;
    while (i < sizeof map / sizeof map[0] && strcmp(map[i].key, k) != 0) i++;
    if (i == sizeof map / sizeof map[0])
      return fq_errf(err, FQ_ECONFIG, "%s: unknown key \"%s\"", who, k);
    json_t *body = json_pack("{sO}", strcmp(k, "storm_mode_enabled") == 0 ? "enabled" : k, x);
    fq_buf_t out;
    fq_buf_init(&out, 4096);
    int rc = fq__sim_site_command(w, s, map[i].cmd, body, NULL, 0, &out, err);
    fq_buf_free(&out);
    json_decref(body);
    if (rc) return fq_errf(err, FQ_ECONFIG, "%s: %s", who, err ? err->msg : "bad value");
  }
  return fq__sim_faults_apply(&s->faults, o, who, err);
}

fq__sim_account_t *fq__sim_account_find(fq__sim_world_t *w, const char *id_or_token) {
  for (size_t i = 0; i < w->naccounts; i++)
    if (strcmp(w->accounts[i].id, id_or_token) == 0) return &w->accounts[i];
  fq__sim_token_t *t = fq__sim_map_get(&w->tok_map, id_or_token, strlen(id_or_token));
  return t ? &w->accounts[t->acct] : NULL;
}

/* ---- world -------------------------------------------------------------------- */

static const char *const default_urls[][2] = {
    {"na", "https://fleet-api.prd.na.vn.cloud.tesla.com"},
    {"eu", "https://fleet-api.prd.eu.vn.cloud.tesla.com"},
    {"cn", "https://fleet-api.prd.cn.vn.cloud.tesla.cn"},
};

int fq__sim_world_load(fq__sim_world_t *w, json_t *config, const char *base_dir, fq_err_t *err) {
  int rc = 0;
  json_t *x;
  if (!json_is_object(config)) return fq_errf(err, FQ_ECONFIG, "config: want a JSON object");
  static const char *const known[] = {"fleet_public_key", "accounts", "vehicles", "sites",
                                      "seed", "region", "base_urls", "wake_ms",
                                      "max_executions", "partner_keys", NULL};
  const char *k;
  json_object_foreach(config, k, x) {
    size_t i = 0;
    while (known[i] && strcmp(known[i], k) != 0) i++;
    if (!known[i]) return fq_errf(err, FQ_ECONFIG, "config: unknown key \"%s\"", k);
  }
  if (w->config != config) {
    json_incref(config);
    json_decref(w->config);
    w->config = config;
  }
  if (w->base_dir != base_dir) {
    free(w->base_dir);
    w->base_dir = strdup(base_dir ? base_dir : ".");
    if (!w->base_dir) return -ENOMEM;
  }
  int64_t seed = 1;
  if ((rc = get_int(config, "seed", INT64_MIN, INT64_MAX, &seed, "config", err))) return rc;
  w->seed = (uint64_t)seed;
  snprintf(w->region, sizeof w->region, "na");
  if ((x = json_object_get(config, "region"))) {
    if (!json_is_string(x) || json_string_length(x) >= sizeof w->region)
      return fq_errf(err, FQ_ECONFIG, "config.region: want \"na\", \"eu\" or \"cn\"");
    snprintf(w->region, sizeof w->region, "%s", json_string_value(x));
  }
  json_decref(w->base_urls);
  w->base_urls = json_object();
  if (!w->base_urls) return -ENOMEM;
  for (size_t i = 0; i < 3; i++)
    json_object_set_new(w->base_urls, default_urls[i][0], json_string(default_urls[i][1]));
  if ((x = json_object_get(config, "base_urls"))) {
    if (!json_is_object(x)) return fq_errf(err, FQ_ECONFIG, "config.base_urls: want an object");
    json_object_update(w->base_urls, x);
  }
  w->default_wake_ms = 1000;
  if ((rc = get_int(config, "wake_ms", 0, 3600000, &w->default_wake_ms, "config", err))) return rc;
  int64_t maxe = 4000000;
  if ((rc = get_int(config, "max_executions", 0, INT32_MAX, &maxe, "config", err))) return rc;
  w->max_execs = (size_t)maxe;
  w->have_fleet_pub = false;
  if ((x = json_object_get(config, "fleet_public_key"))) {
    if (!json_is_string(x))
      return fq_errf(err, FQ_ECONFIG, "config.fleet_public_key: want a PEM file name");
    if ((rc = load_pub(w->base_dir, json_string_value(x), w->fleet_pub, err))) return rc;
    w->have_fleet_pub = true;
  }
  json_decref(w->partner_keys);
  w->partner_keys = NULL;
  if ((x = json_object_get(config, "partner_keys"))) {
    /* The domains the app registered (POST /api/1/partner_accounts) and
     * the key each one serves: lets a test register a key other than the
     * one the cars are paired with, or none for a domain. */
    if (!json_is_object(x))
      return fq_errf(err, FQ_ECONFIG, "config.partner_keys: want an object {domain: key}");
    if (!(w->partner_keys = json_object())) return -ENOMEM;
    const char *dom;
    json_t *kv;
    json_object_foreach(x, dom, kv) {
      uint8_t pub[65];
      char hex[131];
      if (!json_is_string(kv))
        return fq_errf(err, FQ_ECONFIG,
                       "config.partner_keys.%s: want a PEM file name or 130 hex digits", dom);
      if ((rc = load_pub(w->base_dir, json_string_value(kv), pub, err))) return rc;
      fq_hex_encode(pub, sizeof pub, hex);
      json_object_set_new(w->partner_keys, dom, json_string(hex));
    }
  }
  if (RAND_bytes(w->jwt_key, sizeof w->jwt_key) != 1)
    return fq_errf(err, FQ_ECRYPTO, "RAND_bytes failed");

  /* Vehicles and sites first so that accounts can refer to them. */
  json_t *vs = json_object_get(config, "vehicles");
  if (vs && !json_is_array(vs)) return fq_errf(err, FQ_ECONFIG, "config.vehicles: want an array");
  size_t i;
  json_t *e;
  json_array_foreach(vs, i, e) {
    const char *vin = json_string_value(json_object_get(e, "vin"));
    if (!json_is_object(e) || !vin)
      return fq_errf(err, FQ_ECONFIG, "config.vehicles[%zu]: want an object with \"vin\"", i);
    fq__sim_vehicle_t *v = vehicle_new(w, vin, err);
    if (!v) return err ? err->code : FQ_ECONFIG;
    if ((rc = fq__sim_vehicle_apply(w, v, e, err))) return rc;
  }
  json_t *ss = json_object_get(config, "sites");
  if (ss && !json_is_array(ss)) return fq_errf(err, FQ_ECONFIG, "config.sites: want an array");
  json_array_foreach(ss, i, e) {
    json_t *id = json_object_get(e, "id");
    if (!json_is_integer(id) || json_integer_value(id) <= 0)
      return fq_errf(err, FQ_ECONFIG, "config.sites[%zu]: want an object with a positive \"id\"", i);
    if (fq__sim_site_find(w, (uint64_t)json_integer_value(id)))
      return fq_errf(err, FQ_ECONFIG, "config.sites[%zu]: id listed twice", i);
    fq__sim_site_t *s = site_new(w, (uint64_t)json_integer_value(id), err);
    if (!s) return err ? err->code : FQ_ECONFIG;
    if ((rc = fq__sim_site_apply(w, s, e, err))) return rc;
  }
  json_t *as = json_object_get(config, "accounts");
  if (!json_is_array(as) || json_array_size(as) == 0)
    return fq_errf(err, FQ_ECONFIG, "config.accounts: want a non-empty array");
  w->accounts = calloc(json_array_size(as), sizeof *w->accounts);
  if (!w->accounts) return -ENOMEM;
  json_array_foreach(as, i, e) {
    if (!json_is_object(e) || !json_is_string(json_object_get(e, "token")))
      return fq_errf(err, FQ_ECONFIG, "config.accounts[%zu]: want an object with \"token\"", i);
    fq__sim_account_t *a = &w->accounts[w->naccounts++];
    const char *id = json_string_value(json_object_get(e, "id"));
    if (id && strlen(id) >= sizeof a->id)
      return fq_errf(err, FQ_ECONFIG, "config.accounts[%zu].id: too long", i);
    if (id) snprintf(a->id, sizeof a->id, "%s", id);
    else snprintf(a->id, sizeof a->id, "account%zu", i);
    for (size_t j = 0; j + 1 < w->naccounts; j++)
      if (strcmp(w->accounts[j].id, a->id) == 0)
        return fq_errf(err, FQ_ECONFIG, "config.accounts[%zu]: id %s listed twice", i, a->id);
    snprintf(a->region, sizeof a->region, "%s", w->region);
    a->expires_in_s = 28800;
    seed_for(&a->faults.rng, w, a->id);
    if (!json_object_get(e, "scopes")) {
      json_t *def = json_pack("[sssss]", "openid", "offline_access", "vehicle_device_data",
                              "vehicle_cmds", "vehicle_charging_cmds");
      rc = scopes_from_json(a, def, err);
      json_decref(def);
      if (rc) return rc;
    }
    if (fq__sim_map_get(&w->tok_map, json_string_value(json_object_get(e, "token")),
                        json_string_length(json_object_get(e, "token"))))
      return fq_errf(err, FQ_ECONFIG, "config.accounts[%zu].token: used by two accounts", i);
    if ((rc = fq__sim_account_apply(w, a, e, err))) return rc;
  }
  return 0;
}

int fq__sim_world_gen(fq__sim_world_t *w, uint32_t n, fq_err_t *err) {
  char vin[32];
  for (uint32_t i = 0; i < n; i++) {
    snprintf(vin, sizeof vin, "SMGEN%012" PRIu32, i);
    fq__sim_vehicle_t *v = vehicle_new(w, vin, err);
    if (!v) return err ? err->code : -ENOMEM;
    size_t vi = w->nvehicles - 1;
    for (size_t a = 0; a < w->naccounts; a++) {
      int rc = add_index(&w->accounts[a].vehicles, &w->accounts[a].nvehicles, vi);
      if (!rc) rc = add_index(&v->accounts, &v->naccounts, a);
      if (rc) return fq_errf(err, rc, "out of memory");
    }
  }
  w->gen_vehicles = n;
  return 0;
}

void fq__sim_world_clear(fq__sim_world_t *w) {
  for (size_t i = 0; i < w->naccounts; i++) {
    fq__sim_account_t *a = &w->accounts[i];
    free(a->token);
    free(a->refresh);
    for (size_t j = 0; j < a->nissued; j++) free(a->issued[j]);
    free(a->issued);
    json_decref(a->scope_names);
    free(a->base_url);
    free(a->vehicles);
    free(a->sites);
  }
  free(w->accounts);
  w->accounts = NULL;
  w->naccounts = 0;
  for (size_t i = 0; i < w->nvehicles; i++) {
    fq__sim_vehicle_free(w->vehicles[i]);
    free(w->vehicles[i]);
  }
  free(w->vehicles);
  w->vehicles = NULL;
  w->nvehicles = 0;
  for (size_t i = 0; i < w->nsites; i++) {
    json_decref(w->sites[i]->tou);
    free(w->sites[i]->accounts);
    free(w->sites[i]);
  }
  free(w->sites);
  w->sites = NULL;
  w->nsites = 0;
  fq__sim_map_free(&w->tok_map, free);
  fq__sim_map_free(&w->ref_map, NULL);
  fq__sim_map_free(&w->vin_map, NULL);
  for (size_t i = 0; i < w->nexecs; i++) free(w->execs[i].payload_hex);
  free(w->execs);
  w->execs = NULL;
  w->nexecs = w->execs_alloc = 0;
  w->exec_seq = w->execs_dropped = 0;
  w->st_requests = w->st_signed_ok = w->st_signed_fault = w->st_handshakes = w->st_rest = 0;
  w->st_fleet_status = w->st_fleet_status_vins = 0;
  json_decref(w->base_urls);
  w->base_urls = NULL;
  json_decref(w->partner_keys);
  w->partner_keys = NULL;
}
