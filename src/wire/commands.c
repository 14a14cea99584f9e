/*
 * The command table: every command fleetq accepts, declared once as data,
 * and the central check of a command's parameters.  Tesla bills every
 * request it answers below HTTP 500, so a wrong name, a missing parameter
 * or an out-of-range value is refused here, before anything is stored,
 * signed or sent.
 *
 * Sources: vehicle commands follow section 3 of the vehicle command
 * protocol notes (REST names, parameter names as the official proxy reads
 * them); energy-site commands follow the Fleet API energy endpoints.
 * Ranges are the ones the car or the Tesla app accepts.
 */
#include "fleetq/commands.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "mpread.h"
#include "payload.h"

/* ---- parameter specs ------------------------------------------------------ */

#define REQ_BOOL(n) {.name = n, .type = FQ_PT_BOOL, .required = true}
#define OPT_BOOL(n) {.name = n, .type = FQ_PT_BOOL, .required = false}

static const char *const trunk_choices[] = {"rear", "front", NULL};
static const char *const window_choices[] = {"vent", "close", NULL};
static const char *const mode_choices[] = {"autonomous", "self_consumption", "backup", NULL};
static const char *const export_choices[] = {"battery_ok", "pv_only", "never", NULL};

static const fq_param_spec_t p_actuate_trunk[] = {
    {.name = "which_trunk", .type = FQ_PT_STR, .required = true, .max_len = 5,
     .choices = trunk_choices},
};
static const fq_param_spec_t p_set_charge_limit[] = {
    {.name = "percent", .type = FQ_PT_INT, .required = true, .min = 50, .max = 100},
};
static const fq_param_spec_t p_set_charging_amps[] = {
    {.name = "charging_amps", .type = FQ_PT_INT, .required = true, .min = 0, .max = 80},
};
static const fq_param_spec_t p_set_temps[] = {
    {.name = "driver_temp", .type = FQ_PT_FLOAT, .required = true, .min = 15, .max = 28},
    {.name = "passenger_temp", .type = FQ_PT_FLOAT, .required = true, .min = 15, .max = 28},
};
static const fq_param_spec_t p_precondition_max[] = {
    REQ_BOOL("on"),
    OPT_BOOL("manual_override"),
};
static const fq_param_spec_t p_cabin_overheat[] = {
    REQ_BOOL("on"),
    OPT_BOOL("fan_only"),
};
static const fq_param_spec_t p_on[] = {
    REQ_BOOL("on"),
};
static const fq_param_spec_t p_window_control[] = {
    {.name = "command", .type = FQ_PT_STR, .required = true, .max_len = 5,
     .choices = window_choices},
    {.name = "lat", .type = FQ_PT_FLOAT, .min = -90, .max = 90},
    {.name = "lon", .type = FQ_PT_FLOAT, .min = -180, .max = 180},
};
static const fq_param_spec_t p_scheduled_charging[] = {
    REQ_BOOL("enable"),
    {.name = "time", .type = FQ_PT_INT, .min = 0, .max = 1439},
};
static const fq_param_spec_t p_vehicle_name[] = {
    {.name = "vehicle_name", .type = FQ_PT_STR, .required = true, .max_len = 64},
};

static const fq_param_spec_t p_backup[] = {
    {.name = "backup_reserve_percent", .type = FQ_PT_INT, .required = true, .min = 0, .max = 100},
};
static const fq_param_spec_t p_operation[] = {
    {.name = "default_real_mode", .type = FQ_PT_STR, .required = true, .max_len = 16,
     .choices = mode_choices},
};
static const fq_param_spec_t p_storm_mode[] = {
    REQ_BOOL("enabled"),
};
static const fq_param_spec_t p_grid_import_export[] = {
    OPT_BOOL("disallow_charge_from_grid_with_solar_installed"),
    {.name = "customer_preferred_export_rule", .type = FQ_PT_STR, .max_len = 10,
     .choices = export_choices},
};
static const fq_param_spec_t p_off_grid_reserve[] = {
    {.name = "off_grid_vehicle_charging_reserve_percent", .type = FQ_PT_INT, .required = true,
     .min = 0, .max = 100},
};
static const fq_param_spec_t p_tou_settings[] = {
    {.name = "tou_settings", .type = FQ_PT_MAP, .required = true},
};

/* ---- the table -------------------------------------------------------------
 * One designated initializer per command.  build_payload / build_json are
 * filled by the payload module (src/payload.c). */

#define PARAMS(a) .params = a, .nparams = sizeof(a) / sizeof((a)[0])

/* Scope sets. */
#define SC_VEH FQ_SCOPE_VEHICLE_CMDS
#define SC_CHARGE (FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_VEHICLE_CHARGING_CMDS)
#define SC_WAKE (FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_VEHICLE_CHARGING_CMDS | FQ_SCOPE_VEHICLE_DEVICE_DATA)
#define SC_ENERGY FQ_SCOPE_ENERGY_CMDS

#define VCSEC .dev = FQ_DEV_VEHICLE, .domain = FQ_DOMAIN_VCSEC, VEH_BUILDERS
#define INFO .dev = FQ_DEV_VEHICLE, .domain = FQ_DOMAIN_INFOTAINMENT, VEH_BUILDERS
#define SITE .dev = FQ_DEV_SITE, .domain = FQ_DOMAIN_NONE, .scopes = SC_ENERGY, .idempotent = true, \
             .build_json = fq_payload_build_json
/* Signed payload, and the JSON body for cars that only take REST. */
#define VEH_BUILDERS .build_payload = fq_payload_build, .build_json = fq_payload_build_json

static const fq_cmd_t cmds[] = {
    /* Vehicle security (VCSEC): reachable while infotainment sleeps. */
    {.name = "door_lock", VCSEC, .scopes = SC_VEH, .idempotent = true,
     .rest_suffix = "command/door_lock"},
    {.name = "door_unlock", VCSEC, .scopes = SC_VEH, .idempotent = true,
     .rest_suffix = "command/door_unlock"},
    {.name = "remote_start_drive", VCSEC, .scopes = SC_VEH, .idempotent = false,
     .rest_suffix = "command/remote_start_drive"},
    /* A trunk "move" toggles: sending it twice closes what the first opened. */
    {.name = "actuate_trunk", VCSEC, PARAMS(p_actuate_trunk), .scopes = SC_VEH,
     .idempotent = false, .rest_suffix = "command/actuate_trunk"},

    /* Infotainment: charging. */
    {.name = "charge_start", INFO, .scopes = SC_CHARGE, .idempotent = true,
     .rest_suffix = "command/charge_start"},
    {.name = "charge_stop", INFO, .scopes = SC_CHARGE, .idempotent = true,
     .rest_suffix = "command/charge_stop"},
    {.name = "charge_standard", INFO, .scopes = SC_CHARGE, .idempotent = true,
     .rest_suffix = "command/charge_standard"},
    {.name = "charge_max_range", INFO, .scopes = SC_CHARGE, .idempotent = true,
     .rest_suffix = "command/charge_max_range"},
    {.name = "set_charge_limit", INFO, PARAMS(p_set_charge_limit), .scopes = SC_CHARGE,
     .idempotent = true, .rest_suffix = "command/set_charge_limit"},
    {.name = "set_charging_amps", INFO, PARAMS(p_set_charging_amps), .scopes = SC_CHARGE,
     .idempotent = true, .rest_suffix = "command/set_charging_amps"},
    {.name = "charge_port_door_open", INFO, .scopes = SC_CHARGE, .idempotent = true,
     .rest_suffix = "command/charge_port_door_open"},
    {.name = "charge_port_door_close", INFO, .scopes = SC_CHARGE, .idempotent = true,
     .rest_suffix = "command/charge_port_door_close"},
    {.name = "set_scheduled_charging", INFO, PARAMS(p_scheduled_charging), .scopes = SC_CHARGE,
     .idempotent = true, .rest_suffix = "command/set_scheduled_charging"},

    /* Infotainment: climate. */
    {.name = "auto_conditioning_start", INFO, .scopes = SC_VEH, .idempotent = true,
     .rest_suffix = "command/auto_conditioning_start"},
    {.name = "auto_conditioning_stop", INFO, .scopes = SC_VEH, .idempotent = true,
     .rest_suffix = "command/auto_conditioning_stop"},
    {.name = "set_temps", INFO, PARAMS(p_set_temps), .scopes = SC_VEH, .idempotent = true,
     .rest_suffix = "command/set_temps"},
    {.name = "set_preconditioning_max", INFO, PARAMS(p_precondition_max), .scopes = SC_VEH,
     .idempotent = true, .rest_suffix = "command/set_preconditioning_max"},
    {.name = "set_cabin_overheat_protection", INFO, PARAMS(p_cabin_overheat), .scopes = SC_VEH,
     .idempotent = true, .rest_suffix = "command/set_cabin_overheat_protection"},

    /* Infotainment: vehicle controls. */
    {.name = "set_sentry_mode", INFO, PARAMS(p_on), .scopes = SC_VEH, .idempotent = true,
     .rest_suffix = "command/set_sentry_mode"},
    /* Honking or flashing twice is visible to people around the car. */
    {.name = "honk_horn", INFO, .scopes = SC_VEH, .idempotent = false,
     .rest_suffix = "command/honk_horn"},
    {.name = "flash_lights", INFO, .scopes = SC_VEH, .idempotent = false,
     .rest_suffix = "command/flash_lights"},
    {.name = "window_control", INFO, PARAMS(p_window_control), .scopes = SC_VEH,
     .idempotent = true, .rest_suffix = "command/window_control"},
    {.name = "set_vehicle_name", INFO, PARAMS(p_vehicle_name), .scopes = SC_VEH,
     .idempotent = true, .rest_suffix = "command/set_vehicle_name"},

    /* Not signed: a plain REST call that only wakes the car. */
    {.name = "wake_up", .dev = FQ_DEV_VEHICLE, .domain = FQ_DOMAIN_NONE, .scopes = SC_WAKE,
     .idempotent = true, .rest_suffix = "wake_up"},

    /* Energy sites: REST endpoints named after what they set. */
    {.name = "backup", SITE, PARAMS(p_backup), .rest_suffix = "backup"},
    {.name = "operation", SITE, PARAMS(p_operation), .rest_suffix = "operation"},
    {.name = "storm_mode", SITE, PARAMS(p_storm_mode), .rest_suffix = "storm_mode"},
    {.name = "grid_import_export", SITE, PARAMS(p_grid_import_export),
     .rest_suffix = "grid_import_export", .need_any_param = true},
    {.name = "off_grid_vehicle_charging_reserve", SITE, PARAMS(p_off_grid_reserve),
     .rest_suffix = "off_grid_vehicle_charging_reserve"},
    {.name = "time_of_use_settings", SITE, PARAMS(p_tou_settings),
     .rest_suffix = "time_of_use_settings"},
};

#define NCMDS (sizeof cmds / sizeof cmds[0])

/* ---- lookup ------------------------------------------------------------- */

/* name (NUL-terminated, ours) equals the len bytes at p (theirs, which
 * may hold anything, NULs included). */
static bool name_is(const char *name, const char *p, size_t len) {
  return strlen(name) == len && memcmp(name, p, len) == 0;
}

const fq_cmd_t *fq_cmd_find(const char *name, size_t len, fq_devtype_t dev, bool *other) {
  const fq_cmd_t *found = NULL;
  bool elsewhere = false;
  for (size_t i = 0; i < NCMDS; i++) {
    /* The first byte rules out almost every entry before the full compare. */
    if (len == 0 || cmds[i].name[0] != name[0] || !name_is(cmds[i].name, name, len)) continue;
    if (cmds[i].dev == dev) {
      found = &cmds[i];
      break;
    }
    elsewhere = true;
  }
  if (other) *other = !found && elsewhere;
  return found;
}

size_t fq_cmd_count(void) { return NCMDS; }

const fq_cmd_t *fq_cmd_at(size_t i) { return i < NCMDS ? &cmds[i] : NULL; }

const fq_pval_t *fq_pval_get(const fq_pval_t *params, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (name_is(name, params[i].name, params[i].name_len)) return &params[i];
  return NULL;
}

double fq_pval_num(const fq_pval_t *pv) {
  if (pv->type == FQ_PT_INT) return (double)pv->v.i;
  if (pv->type == FQ_PT_FLOAT) return pv->v.f;
  return 0;
}

const char *fq_ptype_name(fq_ptype_t t) {
  switch (t) {
  case FQ_PT_BOOL: return "bool";
  case FQ_PT_INT: return "integer";
  case FQ_PT_FLOAT: return "number";
  case FQ_PT_STR: return "string";
  case FQ_PT_MAP: return "map";
  }
  return "?";
}

/* The type a value was sent as, for "expected X, got Y". */
static const char *sent_type_name(fq_ptype_t t) { return t == FQ_PT_FLOAT ? "float" : fq_ptype_name(t); }

/* ---- validation --------------------------------------------------------- */

/* Parameter names and values come from the client: quote them safely. */
static void safe_name(const fq_pval_t *pv, char *out, size_t cap) {
  fq__mp_quote((const uint8_t *)pv->name, pv->name_len, out, cap);
}

static const fq_param_spec_t *spec_for(const fq_cmd_t *cmd, const fq_pval_t *pv) {
  for (size_t i = 0; i < cmd->nparams; i++)
    if (name_is(cmd->params[i].name, pv->name, pv->name_len)) return &cmd->params[i];
  return NULL;
}

static int check_value(const fq_param_spec_t *sp, const fq_pval_t *pv, fq_err_t *err) {
  bool type_ok = pv->type == sp->type || (sp->type == FQ_PT_FLOAT && pv->type == FQ_PT_INT);
  if (!type_ok)
    return fq_errf(err, FQ_EBADPARAM, "params.%s: expected %s, got %s", sp->name,
                   fq_ptype_name(sp->type), sent_type_name(pv->type));
  switch (sp->type) {
  case FQ_PT_INT:
    if ((double)pv->v.i < sp->min || (double)pv->v.i > sp->max)
      return fq_errf(err, FQ_EBADPARAM, "params.%s: %" PRId64 " is out of range %.0f..%.0f",
                     sp->name, pv->v.i, sp->min, sp->max);
    return 0;
  case FQ_PT_FLOAT: {
    double f = fq_pval_num(pv);
    /* Written so that NaN fails too. */
    if (!(f >= sp->min && f <= sp->max))
      return fq_errf(err, FQ_EBADPARAM, "params.%s: %g is out of range %g..%g", sp->name, f,
                     sp->min, sp->max);
    return 0;
  }
  case FQ_PT_STR:
    if (sp->choices) {
      for (const char *const *c = sp->choices; *c; c++)
        if (name_is(*c, pv->v.s.p, pv->v.s.n)) return 0;
      char list[128] = "";
      size_t o = 0;
      for (const char *const *c = sp->choices; *c && o < sizeof list; c++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", *c);
      char shown[48];
      fq__mp_quote((const uint8_t *)pv->v.s.p, pv->v.s.n, shown, sizeof shown);
      return fq_errf(err, FQ_EBADPARAM, "params.%s: \"%s\" is not one of %s", sp->name, shown,
                     list);
    }
    if (pv->v.s.n < 1 || pv->v.s.n > sp->max_len)
      return fq_errf(err, FQ_EBADPARAM, "params.%s: length %zu is out of range 1..%zu bytes",
                     sp->name, pv->v.s.n, sp->max_len);
    return 0;
  case FQ_PT_BOOL:
  case FQ_PT_MAP:
    return 0;
  }
  return 0;
}

int fq_cmd_validate(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n, fq_err_t *err) {
  char nm[72];
  if (n > FQ_MAX_PARAMS)
    return fq_errf(err, FQ_EBADPARAM, "params: %zu parameters, at most %d", n, FQ_MAX_PARAMS);
  for (size_t i = 0; i < n; i++) {
    const fq_pval_t *pv = &params[i];
    const fq_param_spec_t *sp = spec_for(cmd, pv);
    if (!sp) {
      safe_name(pv, nm, sizeof nm);
      return fq_errf(err, FQ_EBADPARAM, "params.%s: unknown parameter for %s", nm, cmd->name);
    }
    for (size_t j = 0; j < i; j++)
      if (params[j].name_len == pv->name_len && memcmp(params[j].name, pv->name, pv->name_len) == 0)
        return fq_errf(err, FQ_EBADPARAM, "params.%s: duplicate parameter", sp->name);
    int rc = check_value(sp, pv, err);
    if (rc) return rc;
  }
  for (size_t k = 0; k < cmd->nparams; k++) {
    const fq_param_spec_t *sp = &cmd->params[k];
    if (sp->required && !fq_pval_get(params, n, sp->name))
      return fq_errf(err, FQ_EBADPARAM, "params.%s: required", sp->name);
  }
  if (cmd->need_any_param && n == 0) {
    char list[160] = "";
    size_t o = 0;
    for (size_t k = 0; k < cmd->nparams && o < sizeof list; k++)
      o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", k ? ", " : "", cmd->params[k].name);
    return fq_errf(err, FQ_EBADPARAM, "params: %s needs at least one of %s", cmd->name, list);
  }
  return 0;
}

/* ---- scopes ------------------------------------------------------------- */

static const struct {
  unsigned bit;
  const char *name;
} scope_names[] = {
    {FQ_SCOPE_VEHICLE_CMDS, "vehicle_cmds"},
    {FQ_SCOPE_VEHICLE_CHARGING_CMDS, "vehicle_charging_cmds"},
    {FQ_SCOPE_ENERGY_CMDS, "energy_cmds"},
    {FQ_SCOPE_VEHICLE_DEVICE_DATA, "vehicle_device_data"},
    {FQ_SCOPE_ENERGY_DEVICE_DATA, "energy_device_data"},
};

unsigned fq_scope_parse(const char *s) {
  unsigned bits = 0;
  if (!s) return 0;
  while (*s) {
    while (*s == ' ' || *s == ',' || *s == '\t') s++;
    const char *w = s;
    while (*s && *s != ' ' && *s != ',' && *s != '\t') s++;
    size_t len = (size_t)(s - w);
    if (!len) continue;
    for (size_t i = 0; i < sizeof scope_names / sizeof scope_names[0]; i++)
      if (name_is(scope_names[i].name, w, len)) bits |= scope_names[i].bit;
  }
  return bits;
}

const char *fq_scope_name(unsigned bit) {
  for (size_t i = 0; i < sizeof scope_names / sizeof scope_names[0]; i++)
    if (scope_names[i].bit == bit) return scope_names[i].name;
  return "?";
}

bool fq_cmd_allowed(const fq_cmd_t *cmd, unsigned granted) { return (cmd->scopes & granted) != 0; }
