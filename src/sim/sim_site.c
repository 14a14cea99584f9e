/*
 * fleetsim energy sites: the six settings endpoints of a Powerwall site
 * (backup reserve, operation mode, storm mode, grid import/export,
 * off-grid vehicle charging reserve, time-of-use tariff) with the value
 * checks Tesla applies, each change recorded in the ground-truth log and
 * visible in site_info.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_int.h"

void fq__sim_site_defaults(fq__sim_site_t *s) {
  s->backup_reserve = 20;
  s->off_grid_reserve = 0;
  snprintf(s->mode, sizeof s->mode, "self_consumption");
  s->storm = true;
  s->disallow_grid_charge = false;
  snprintf(s->export_rule, sizeof s->export_rule, "battery_ok");
  json_decref(s->tou);
  s->tou = NULL;
}

static bool one_of(const char *s, const char *const *choices) {
  for (size_t i = 0; s && choices[i]; i++)
    if (strcmp(s, choices[i]) == 0) return true;
  return false;
}

/* The only keys a body may carry; anything else is refused like Tesla's
 * invalid_field. */
static int only_keys(const json_t *body, const char *const *keys, fq_err_t *err) {
  const char *k;
  json_t *x;
  json_object_foreach((json_t *)body, k, x) {
    if (!one_of(k, keys)) return fq_errf(err, FQ_EBADPARAM, "unknown field %.60s", k);
  }
  return 0;
}

static int percent(const json_t *body, const char *key, int *out, fq_err_t *err) {
  json_t *x = json_object_get(body, key);
  if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > 100)
    return fq_errf(err, FQ_EBADPARAM, "%s: want an integer 0..100", key);
  *out = (int)json_integer_value(x);
  return 0;
}

int fq__sim_site_command(fq__sim_world_t *w, fq__sim_site_t *s, const char *what,
                         const json_t *body, const char *raw, size_t rawlen, fq_buf_t *out,
                         fq_err_t *err) {
  if (!json_is_object(body)) return fq_errf(err, FQ_EBADPARAM, "the body must be a JSON object");
  int rc = 0;
  if (strcmp(what, "backup") == 0) {
    static const char *const k[] = {"backup_reserve_percent", NULL};
    int v = 0;
    if ((rc = only_keys(body, k, err)) || (rc = percent(body, k[0], &v, err))) return rc;
    s->backup_reserve = v;
  } else if (strcmp(what, "operation") == 0) {
    static const char *const k[] = {"default_real_mode", NULL};
    static const char *const modes[] = {"autonomous", "self_consumption", "backup", NULL};
    if ((rc = only_keys(body, k, err))) return rc;
    const char *m = json_string_value(json_object_get(body, k[0]));
    if (!one_of(m, modes))
      return fq_errf(err, FQ_EBADPARAM,
                     "default_real_mode: want autonomous, self_consumption or backup");
    snprintf(s->mode, sizeof s->mode, "%s", m);
  } else if (strcmp(what, "storm_mode") == 0) {
    static const char *const k[] = {"enabled", NULL};
    if ((rc = only_keys(body, k, err))) return rc;
    json_t *x = json_object_get(body, "enabled");
    if (!json_is_boolean(x)) return fq_errf(err, FQ_EBADPARAM, "enabled: want true or false");
    s->storm = json_is_true(x);
  } else if (strcmp(what, "grid_import_export") == 0) {
    static const char *const k[] = {"disallow_charge_from_grid_with_solar_installed",
                                    "customer_preferred_export_rule", NULL};
    static const char *const rules[] = {"battery_ok", "pv_only", "never", NULL};
    if ((rc = only_keys(body, k, err))) return rc;
    json_t *d = json_object_get(body, k[0]), *r = json_object_get(body, k[1]);
    if (!d && !r) return fq_errf(err, FQ_EBADPARAM, "give at least one of %s, %s", k[0], k[1]);
    if (d && !json_is_boolean(d)) return fq_errf(err, FQ_EBADPARAM, "%s: want true or false", k[0]);
    if (r && !one_of(json_string_value(r), rules))
      return fq_errf(err, FQ_EBADPARAM, "%s: want battery_ok, pv_only or never", k[1]);
    if (d) s->disallow_grid_charge = json_is_true(d);
    if (r) snprintf(s->export_rule, sizeof s->export_rule, "%s", json_string_value(r));
  } else if (strcmp(what, "off_grid_vehicle_charging_reserve") == 0) {
    static const char *const k[] = {"off_grid_vehicle_charging_reserve_percent", NULL};
    int v = 0;
    if ((rc = only_keys(body, k, err)) || (rc = percent(body, k[0], &v, err))) return rc;
    s->off_grid_reserve = v;
  } else if (strcmp(what, "time_of_use_settings") == 0) {
    static const char *const k[] = {"tou_settings", NULL};
    if ((rc = only_keys(body, k, err))) return rc;
    json_t *t = json_object_get(body, "tou_settings");
    if (!json_is_object(t) || !json_is_object(json_object_get(t, "tariff_content_v2")))
      return fq_errf(err, FQ_EBADPARAM, "tou_settings: want an object with tariff_content_v2");
    json_decref(s->tou);
    s->tou = json_deep_copy(t);
  } else {
    return fq_errf(err, FQ_EUNKCMD, "unknown energy site command %.40s", what);
  }
  if (raw) {
    char dev[32];
    snprintf(dev, sizeof dev, "%" PRIu64, s->id);
    fq__sim_exec_record(w, dev, true, 0, 0, what, (const uint8_t *)raw, rawlen);
  }
  return fq_buf_append_str(out, "{\"response\":{\"code\":201,\"message\":\"Updated\"}}");
}

json_t *fq__sim_site_json(const fq__sim_site_t *s) {
  json_t *j = json_pack(
      "{s:I, s:I, s:i, s:s, s:{s:b}, s:{s:b, s:b, s:b, s:b, s:b, s:s, s:b, s:b}, s:i, s:i, "
      "s:s}",
      "id", (json_int_t)s->id, "energy_site_id", (json_int_t)s->id, "backup_reserve_percent",
      s->backup_reserve, "default_real_mode", s->mode, "user_settings", "storm_mode_enabled",
      s->storm, "components", "battery", 1, "solar", 1, "grid", 1, "tou_capable", 1,
      "storm_mode_capable", 1, "customer_preferred_export_rule", s->export_rule,
      "disallow_charge_from_grid_with_solar_installed", s->disallow_grid_charge,
      "off_grid_vehicle_charging_reserve_supported", 1, "off_grid_vehicle_charging_reserve_percent",
      s->off_grid_reserve, "battery_count", 2, "version", "24.44.1 fleetsim");
  if (j && s->tou) json_object_set(j, "tou_settings", s->tou);
  return j;
}
