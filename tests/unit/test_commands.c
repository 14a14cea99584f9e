/*
 * Unit tests of the command table (commands.c): every command of the
 * vehicle and energy tables is present with the right device, domain,
 * scopes and idempotency; parameter validation accepts both edges of every
 * range and refuses one step beyond them; every entry keeps the table's
 * invariants (well-formed specs, a builder for each signed command that
 * uses each of its parameters); and section 9 of proto/wire-protocol.md
 * states what the table says.
 */
#include <math.h>
#include <stdlib.h>

#include "fleetq/commands.h"
#include "fq_test.h"

static const char *const vehicle_cmds[] = {
    "door_lock", "door_unlock", "remote_start_drive", "actuate_trunk", "charge_start",
    "charge_stop", "charge_standard", "charge_max_range", "set_charge_limit",
    "set_charging_amps", "auto_conditioning_start", "auto_conditioning_stop", "set_temps",
    "set_preconditioning_max", "set_cabin_overheat_protection", "set_sentry_mode", "honk_horn",
    "flash_lights", "window_control", "charge_port_door_open", "charge_port_door_close",
    "set_scheduled_charging", "set_vehicle_name", "wake_up",
    /* issue 16 */
    "add_charge_schedule", "remove_charge_schedule", "add_precondition_schedule",
    "remove_precondition_schedule", "set_scheduled_departure", "set_climate_keeper_mode",
    "set_bioweapon_mode", "set_cop_temp", "remote_seat_heater_request",
    "remote_seat_cooler_request", "remote_steering_wheel_heater_request",
    "remote_auto_seat_climate_request", "set_valet_mode", "reset_valet_pin", "set_pin_to_drive",
    "speed_limit_activate", "speed_limit_deactivate", "speed_limit_set_limit", "guest_mode",
    "sun_roof_control", "trigger_homelink", "schedule_software_update", "cancel_software_update",
    "media_toggle_playback", "media_next_track", "media_prev_track", "media_next_fav",
    "media_prev_fav", "media_volume_up", "media_volume_down", "adjust_volume",
    "navigation_request", "open_trunk", "close_trunk", "open_frunk",
};
static const char *const site_cmds[] = {
    "backup", "operation", "storm_mode", "grid_import_export",
    "off_grid_vehicle_charging_reserve", "time_of_use_settings",
};
static const char *const charging_set[] = {
    "charge_start", "charge_stop", "charge_standard", "charge_max_range", "set_charge_limit",
    "set_charging_amps", "charge_port_door_open", "charge_port_door_close",
    "set_scheduled_charging", "add_charge_schedule", "remove_charge_schedule",
    "set_scheduled_departure",
};
static const char *const not_idempotent[] = {
    "honk_horn", "flash_lights", "actuate_trunk", "remote_start_drive",
    /* issue 16 */
    "add_charge_schedule", "add_precondition_schedule", "trigger_homelink",
    "media_toggle_playback", "media_next_track", "media_prev_track", "media_next_fav",
    "media_prev_fav", "media_volume_up", "media_volume_down",
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static bool in(const char *const *list, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(list[i], name) == 0) return true;
  return false;
}

static const fq_cmd_t *veh(const char *name) {
  return fq_cmd_find(name, strlen(name), FQ_DEV_VEHICLE, NULL);
}
static const fq_cmd_t *site(const char *name) {
  return fq_cmd_find(name, strlen(name), FQ_DEV_SITE, NULL);
}

FQ_TEST(every_command_is_found_once) {
  CHECK_INT(fq_cmd_count(), N(vehicle_cmds) + N(site_cmds));
  for (size_t i = 0; i < N(vehicle_cmds); i++) {
    const fq_cmd_t *c = veh(vehicle_cmds[i]);
    if (!c) {
      fprintf(stderr, "  missing vehicle command %s\n", vehicle_cmds[i]);
      fq_test_failures++;
      continue;
    }
    CHECK_STR(c->name, vehicle_cmds[i]);
    CHECK_INT(c->dev, FQ_DEV_VEHICLE);
    CHECK(site(vehicle_cmds[i]) == NULL);
  }
  for (size_t i = 0; i < N(site_cmds); i++) {
    const fq_cmd_t *c = site(site_cmds[i]);
    if (!c) {
      fprintf(stderr, "  missing site command %s\n", site_cmds[i]);
      fq_test_failures++;
      continue;
    }
    CHECK_INT(c->dev, FQ_DEV_SITE);
    CHECK_INT(c->domain, FQ_DOMAIN_NONE);
    CHECK_STR(c->rest_suffix, site_cmds[i]);
  }
  /* Every table entry is one of the listed names, and names are unique. */
  for (size_t i = 0; i < fq_cmd_count(); i++) {
    const fq_cmd_t *c = fq_cmd_at(i);
    CHECK(in(vehicle_cmds, N(vehicle_cmds), c->name) || in(site_cmds, N(site_cmds), c->name));
    for (size_t j = 0; j < i; j++) CHECK(strcmp(fq_cmd_at(j)->name, c->name) != 0);
  }
  CHECK(fq_cmd_at(fq_cmd_count()) == NULL);
}

FQ_TEST(lookup_is_exact_and_reports_other_device) {
  bool other = true;
  CHECK(fq_cmd_find("door_lock", 9, FQ_DEV_VEHICLE, &other) != NULL);
  CHECK(!other);
  CHECK(fq_cmd_find("door_loc", 8, FQ_DEV_VEHICLE, &other) == NULL);
  CHECK(!other);
  CHECK(fq_cmd_find("door_lockx", 10, FQ_DEV_VEHICLE, &other) == NULL);
  /* A NUL inside the name must not match a prefix. */
  CHECK(fq_cmd_find("backup\0xx", 9, FQ_DEV_SITE, &other) == NULL);
  CHECK(fq_cmd_find("", 0, FQ_DEV_SITE, &other) == NULL);
  CHECK(fq_cmd_find("backup", 6, FQ_DEV_VEHICLE, &other) == NULL);
  CHECK(other);
  other = false;
  CHECK(fq_cmd_find("honk_horn", 9, FQ_DEV_SITE, &other) == NULL);
  CHECK(other);
}

FQ_TEST(domains_and_rest_suffixes) {
  CHECK_INT(veh("door_lock")->domain, FQ_DOMAIN_VCSEC);
  CHECK_INT(veh("door_unlock")->domain, FQ_DOMAIN_VCSEC);
  CHECK_INT(veh("remote_start_drive")->domain, FQ_DOMAIN_VCSEC);
  CHECK_INT(veh("actuate_trunk")->domain, FQ_DOMAIN_VCSEC);
  CHECK_INT(veh("wake_up")->domain, FQ_DOMAIN_NONE);
  CHECK_STR(veh("wake_up")->rest_suffix, "wake_up");
  for (size_t i = 0; i < N(vehicle_cmds); i++) {
    const fq_cmd_t *c = veh(vehicle_cmds[i]);
    if (strcmp(c->name, "wake_up") == 0) continue;
    char want[80];
    snprintf(want, sizeof want, "command/%s", c->name);
    CHECK_STR(c->rest_suffix, want);
    /* navigation_request alone goes unsigned (Fleet API's REST only). */
    if (strcmp(c->name, "navigation_request") == 0) CHECK_INT(c->domain, FQ_DOMAIN_NONE);
    else if (c->domain != FQ_DOMAIN_VCSEC) CHECK_INT(c->domain, FQ_DOMAIN_INFOTAINMENT);
    CHECK(!c->wake);
  }
  CHECK(veh("wake_up")->wake);
}

/* Only fleetq's non-toggling closures lack a REST form (Fleet API has no
 * command/<name> for them): a car without the protocol is refused them at
 * dispatch.  Each is signed, so a car with the protocol gets it. */
FQ_TEST(signed_only_is_the_closures) {
  size_t n = 0;
  for (size_t i = 0; i < fq_cmd_count(); i++) {
    const fq_cmd_t *c = fq_cmd_at(i);
    if (!c->signed_only) continue;
    n++;
    CHECK(c->dev == FQ_DEV_VEHICLE && c->build_payload && c->domain == FQ_DOMAIN_VCSEC);
    CHECK(strcmp(c->name, "open_trunk") == 0 || strcmp(c->name, "close_trunk") == 0 ||
          strcmp(c->name, "open_frunk") == 0);
  }
  CHECK_INT(n, 3);
  CHECK(!veh("actuate_trunk")->signed_only);
}

FQ_TEST(scopes_follow_the_safe_rule) {
  unsigned veh_only = FQ_SCOPE_VEHICLE_CMDS, charging = FQ_SCOPE_VEHICLE_CHARGING_CMDS,
           data = FQ_SCOPE_VEHICLE_DEVICE_DATA, energy = FQ_SCOPE_ENERGY_CMDS;
  for (size_t i = 0; i < N(vehicle_cmds); i++) {
    const fq_cmd_t *c = veh(vehicle_cmds[i]);
    bool is_charging = in(charging_set, N(charging_set), c->name);
    bool is_wake = strcmp(c->name, "wake_up") == 0;
    if (!fq_cmd_allowed(c, veh_only)) FQ__FAIL("%s not allowed by vehicle_cmds", c->name);
    if (fq_cmd_allowed(c, charging) != (is_charging || is_wake))
      FQ__FAIL("%s: vehicle_charging_cmds allows = %d", c->name, fq_cmd_allowed(c, charging));
    if (fq_cmd_allowed(c, data) != is_wake)
      FQ__FAIL("%s: vehicle_device_data allows = %d", c->name, fq_cmd_allowed(c, data));
    CHECK(!fq_cmd_allowed(c, energy));
    CHECK(!fq_cmd_allowed(c, 0));
  }
  for (size_t i = 0; i < N(site_cmds); i++) {
    const fq_cmd_t *c = site(site_cmds[i]);
    CHECK(fq_cmd_allowed(c, energy));
    CHECK(!fq_cmd_allowed(c, veh_only | charging | data | FQ_SCOPE_ENERGY_DEVICE_DATA));
  }
}

FQ_TEST(scope_parsing) {
  CHECK_INT(fq_scope_parse("openid offline_access vehicle_cmds"), FQ_SCOPE_VEHICLE_CMDS);
  CHECK_INT(fq_scope_parse("vehicle_charging_cmds,energy_cmds"),
            FQ_SCOPE_VEHICLE_CHARGING_CMDS | FQ_SCOPE_ENERGY_CMDS);
  CHECK_INT(fq_scope_parse(" vehicle_device_data ,, energy_device_data "),
            FQ_SCOPE_VEHICLE_DEVICE_DATA | FQ_SCOPE_ENERGY_DEVICE_DATA);
  CHECK_INT(fq_scope_parse("vehicle_cmdsx vehicle_cmd"), 0);
  CHECK_INT(fq_scope_parse(""), 0);
  CHECK_INT(fq_scope_parse(NULL), 0);
  CHECK_STR(fq_scope_name(FQ_SCOPE_ENERGY_CMDS), "energy_cmds");
  CHECK_STR(fq_scope_name(FQ_SCOPE_VEHICLE_CHARGING_CMDS), "vehicle_charging_cmds");
}

FQ_TEST(idempotency_flags) {
  for (size_t i = 0; i < fq_cmd_count(); i++) {
    const fq_cmd_t *c = fq_cmd_at(i);
    bool want = !in(not_idempotent, N(not_idempotent), c->name);
    if (c->idempotent != want) FQ__FAIL("%s: idempotent = %d, want %d", c->name, c->idempotent, want);
  }
}

/* ---- validation ---------------------------------------------------------- */

static fq_pval_t pi(const char *name, int64_t v) {
  return (fq_pval_t){.name = name, .name_len = strlen(name), .type = FQ_PT_INT, .v.i = v};
}
static fq_pval_t pf(const char *name, double v) {
  return (fq_pval_t){.name = name, .name_len = strlen(name), .type = FQ_PT_FLOAT, .v.f = v};
}
static fq_pval_t pb(const char *name, bool v) {
  return (fq_pval_t){.name = name, .name_len = strlen(name), .type = FQ_PT_BOOL, .v.b = v};
}
static fq_pval_t ps(const char *name, const char *v) {
  return (fq_pval_t){.name = name, .name_len = strlen(name), .type = FQ_PT_STR,
                     .v.s = {v, strlen(v)}};
}

/* Validate and check the code and, on error, the exact message. */
static void expect(const char *cmd, fq_devtype_t dev, const fq_pval_t *p, size_t n, int code,
                   const char *msg, int line) {
  const fq_cmd_t *c = fq_cmd_find(cmd, strlen(cmd), dev, NULL);
  if (!c) {
    FQ__FAIL("line %d: no command %s", line, cmd);
    return;
  }
  fq_err_t e;
  fq_err_clear(&e);
  int rc = fq_cmd_validate(c, p, n, &e);
  if (rc != code) FQ__FAIL("line %d: %s: rc %d (%s), want %d", line, cmd, rc, e.msg, code);
  if (msg && strcmp(e.msg, msg) != 0)
    FQ__FAIL("line %d: %s: message \"%s\", want \"%s\"", line, cmd, e.msg, msg);
}
#define OK(cmd, dev, ...)                                                          \
  do {                                                                             \
    fq_pval_t p_[] = {__VA_ARGS__};                                                \
    expect(cmd, dev, p_, N(p_), 0, NULL, __LINE__);                                \
  } while (0)
#define BAD(cmd, dev, msg, ...)                                                    \
  do {                                                                             \
    fq_pval_t p_[] = {__VA_ARGS__};                                                \
    expect(cmd, dev, p_, N(p_), FQ_EBADPARAM, msg, __LINE__);                      \
  } while (0)
/* The same without parameters. */
#define OK0(cmd, dev) expect(cmd, dev, NULL, 0, 0, NULL, __LINE__)
#define BAD0(cmd, dev, msg) expect(cmd, dev, NULL, 0, FQ_EBADPARAM, msg, __LINE__)
#define V FQ_DEV_VEHICLE
#define S FQ_DEV_SITE

FQ_TEST(int_ranges_at_both_edges) {
  OK("set_charge_limit", V, pi("percent", 50));
  OK("set_charge_limit", V, pi("percent", 100));
  BAD("set_charge_limit", V, "params.percent: 49 is out of range 50..100", pi("percent", 49));
  BAD("set_charge_limit", V, "params.percent: 120 is out of range 50..100", pi("percent", 120));
  BAD("set_charge_limit", V, "params.percent: 101 is out of range 50..100", pi("percent", 101));
  OK("set_charging_amps", V, pi("charging_amps", 0));
  OK("set_charging_amps", V, pi("charging_amps", 80));
  BAD("set_charging_amps", V, "params.charging_amps: -1 is out of range 0..80",
      pi("charging_amps", -1));
  BAD("set_charging_amps", V, "params.charging_amps: 81 is out of range 0..80",
      pi("charging_amps", 81));
  OK("set_scheduled_charging", V, pb("enable", true), pi("time", 0));
  OK("set_scheduled_charging", V, pb("enable", true), pi("time", 1439));
  OK("set_scheduled_charging", V, pb("enable", false));
  BAD("set_scheduled_charging", V, "params.time: 1440 is out of range 0..1439", pb("enable", true),
      pi("time", 1440));
  BAD("set_scheduled_charging", V, "params.time: -1 is out of range 0..1439", pb("enable", true),
      pi("time", -1));
  OK("backup", S, pi("backup_reserve_percent", 0));
  OK("backup", S, pi("backup_reserve_percent", 100));
  BAD("backup", S, "params.backup_reserve_percent: 101 is out of range 0..100",
      pi("backup_reserve_percent", 101));
  BAD("backup", S, "params.backup_reserve_percent: -1 is out of range 0..100",
      pi("backup_reserve_percent", -1));
  OK("off_grid_vehicle_charging_reserve", S, pi("off_grid_vehicle_charging_reserve_percent", 0));
  OK("off_grid_vehicle_charging_reserve", S, pi("off_grid_vehicle_charging_reserve_percent", 100));
  BAD("off_grid_vehicle_charging_reserve", S,
      "params.off_grid_vehicle_charging_reserve_percent: 101 is out of range 0..100",
      pi("off_grid_vehicle_charging_reserve_percent", 101));
  BAD("set_charge_limit", V, "params.percent: -9223372036854775808 is out of range 50..100",
      pi("percent", INT64_MIN));
}

FQ_TEST(float_ranges_accept_ints) {
  OK("set_temps", V, pf("driver_temp", 15), pf("passenger_temp", 28));
  OK("set_temps", V, pi("driver_temp", 15), pi("passenger_temp", 28));
  OK("set_temps", V, pf("driver_temp", 21.5), pi("passenger_temp", 20));
  BAD("set_temps", V, "params.driver_temp: 14.9 is out of range 15..28", pf("driver_temp", 14.9),
      pf("passenger_temp", 20));
  BAD("set_temps", V, "params.passenger_temp: 28.1 is out of range 15..28",
      pf("driver_temp", 20), pf("passenger_temp", 28.1));
  BAD("set_temps", V, "params.passenger_temp: 29 is out of range 15..28", pf("driver_temp", 20),
      pi("passenger_temp", 29));
  BAD("set_temps", V, "params.driver_temp: nan is out of range 15..28", pf("driver_temp", NAN),
      pf("passenger_temp", 20));
  BAD("set_temps", V, "params.passenger_temp: required", pf("driver_temp", 20));
  OK("window_control", V, ps("command", "close"), pf("lat", -90), pf("lon", 180));
  OK("window_control", V, ps("command", "vent"), pf("lat", 90), pf("lon", -180));
  BAD("window_control", V, "params.lat: 90.5 is out of range -90..90", ps("command", "close"),
      pf("lat", 90.5));
  BAD("window_control", V, "params.lon: -181 is out of range -180..180", ps("command", "close"),
      pi("lon", -181));
}

FQ_TEST(strings_choices_and_lengths) {
  OK("actuate_trunk", V, ps("which_trunk", "rear"));
  OK("actuate_trunk", V, ps("which_trunk", "front"));
  BAD("actuate_trunk", V, "params.which_trunk: \"side\" is not one of rear, front",
      ps("which_trunk", "side"));
  BAD("actuate_trunk", V, "params.which_trunk: \"Rear\" is not one of rear, front",
      ps("which_trunk", "Rear"));
  BAD0("actuate_trunk", V, "params.which_trunk: required");
  BAD("window_control", V, "params.command: \"open\" is not one of vent, close",
      ps("command", "open"));
  OK("operation", S, ps("default_real_mode", "autonomous"));
  OK("operation", S, ps("default_real_mode", "self_consumption"));
  OK("operation", S, ps("default_real_mode", "backup"));
  BAD("operation", S,
      "params.default_real_mode: \"off\" is not one of autonomous, self_consumption, backup",
      ps("default_real_mode", "off"));
  OK("set_vehicle_name", V, ps("vehicle_name", "x"));
  char name64[65], name65[66];
  memset(name64, 'n', 64);
  name64[64] = '\0';
  memset(name65, 'n', 65);
  name65[65] = '\0';
  OK("set_vehicle_name", V, ps("vehicle_name", name64));
  BAD("set_vehicle_name", V, "params.vehicle_name: length 65 is out of range 1..64 bytes",
      ps("vehicle_name", name65));
  BAD("set_vehicle_name", V, "params.vehicle_name: length 0 is out of range 1..64 bytes",
      ps("vehicle_name", ""));
}

FQ_TEST(bools_types_unknown_and_required) {
  OK("set_sentry_mode", V, pb("on", true));
  OK("set_preconditioning_max", V, pb("on", true), pb("manual_override", false));
  OK("set_preconditioning_max", V, pb("on", false));
  OK("set_cabin_overheat_protection", V, pb("fan_only", true), pb("on", true));
  OK("storm_mode", S, pb("enabled", false));
  BAD("set_sentry_mode", V, "params.on: expected bool, got string", ps("on", "true"));
  BAD("set_sentry_mode", V, "params.on: expected bool, got integer", pi("on", 1));
  BAD0("set_sentry_mode", V, "params.on: required");
  BAD("set_charge_limit", V, "params.percent: expected integer, got float", pf("percent", 80));
  BAD("set_charge_limit", V, "params.colour: unknown parameter for set_charge_limit",
      pi("percent", 80), ps("colour", "red"));
  BAD("set_charge_limit", V, "params.percent: duplicate parameter", pi("percent", 80),
      pi("percent", 81));
  BAD("honk_horn", V, "params.loud: unknown parameter for honk_horn", pb("loud", true));
  OK0("honk_horn", V);
  BAD("set_temps", V, "params.driver_temp: expected number, got string", ps("driver_temp", "20"),
      pf("passenger_temp", 20));
  BAD("time_of_use_settings", S, "params.tou_settings: expected map, got integer",
      pi("tou_settings", 1));
  BAD0("time_of_use_settings", S, "params.tou_settings: required");
}

FQ_TEST(grid_import_export_needs_one) {
  OK("grid_import_export", S, pb("disallow_charge_from_grid_with_solar_installed", true));
  OK("grid_import_export", S, ps("customer_preferred_export_rule", "pv_only"));
  OK("grid_import_export", S, ps("customer_preferred_export_rule", "never"),
     pb("disallow_charge_from_grid_with_solar_installed", false));
  BAD0("grid_import_export", S,
       "params: grid_import_export needs at least one of "
       "disallow_charge_from_grid_with_solar_installed, customer_preferred_export_rule");
  BAD("grid_import_export", S,
      "params.customer_preferred_export_rule: \"sometimes\" is not one of battery_ok, pv_only, "
      "never",
      ps("customer_preferred_export_rule", "sometimes"));
}

FQ_TEST(pval_helpers) {
  fq_pval_t p[] = {pi("a", 3), pf("bb", 2.5), ps("c", "x")};
  CHECK(fq_pval_get(p, 3, "bb") == &p[1]);
  CHECK(fq_pval_get(p, 3, "b") == NULL);
  CHECK(fq_pval_get(p, 3, "cc") == NULL);
  CHECK(fq_pval_num(&p[0]) == 3.0);
  CHECK(fq_pval_num(&p[1]) == 2.5);
  CHECK(fq_pval_num(&p[2]) == 0.0);
  CHECK_STR(fq_ptype_name(FQ_PT_FLOAT), "number");
}

static fq_pval_t pm(const char *name, const char *mp, size_t n) {
  return (fq_pval_t){.name = name, .name_len = strlen(name), .type = FQ_PT_MAP,
                     .v.raw = {(const uint8_t *)mp, n}};
}
#define PM(name, lit) pm(name, lit, sizeof lit - 1)

FQ_TEST(navigation_request_needs_a_destination) {
  const char *share = "share_ext_content_raw";
  OK("navigation_request", V, ps("type", share),
     PM("value", "\x81\xb9" "android.intent.extra.TEXT" "\xa9" "Paris, FR"),
     ps("locale", "en-US"), ps("timestamp_ms", "1700000000000"));
  /* Other keys of the intent pass; the destination may come after them. */
  OK("navigation_request", V, ps("type", share),
     PM("value", "\x82\xa1k\x91\x01\xb9" "android.intent.extra.TEXT" "\xa1x"));
  BAD("navigation_request", V,
      "params.value.android.intent.extra.TEXT: required (the destination, an address or a place "
      "name)",
      ps("type", share), PM("value", "\x80"));
  BAD("navigation_request", V,
      "params.value.android.intent.extra.TEXT: expected the destination as a string of 1..512 "
      "bytes",
      ps("type", share), PM("value", "\x81\xb9" "android.intent.extra.TEXT" "\x01"));
  BAD("navigation_request", V,
      "params.value.android.intent.extra.TEXT: expected the destination as a string of 1..512 "
      "bytes",
      ps("type", share), PM("value", "\x81\xb9" "android.intent.extra.TEXT" "\xa0"));
  BAD("navigation_request", V, "params.type: \"share\" is not one of share_ext_content_raw",
      ps("type", "share"), PM("value", "\x81\xb9" "android.intent.extra.TEXT" "\xa1x"));
  BAD("navigation_request", V, "params.value: required", ps("type", share));
  BAD("navigation_request", V,
      "params.timestamp_ms: must be unix milliseconds written as digits", ps("type", share),
      PM("value", "\x81\xb9" "android.intent.extra.TEXT" "\xa1x"), ps("timestamp_ms", "12a"));
  BAD("navigation_request", V,
      "params.locale: not a language tag (letters, digits, '-', e.g. en-US)", ps("type", share),
      PM("value", "\x81\xb9" "android.intent.extra.TEXT" "\xa1x"), ps("locale", "en US"));
}

FQ_TEST(every_command_accepts_its_minimal_params) {
  /* Build the smallest valid parameter set for each command from its own
   * spec, so a table entry whose spec cannot be satisfied is caught. */
  /* A map every map parameter takes: navigation_request's value needs the
   * destination under android.intent.extra.TEXT (25 bytes, fixstr 0xb9). */
  static const char dummy_map[] = "\x81\xb9" "android.intent.extra.TEXT" "\xa1x";
  for (size_t i = 0; i < fq_cmd_count(); i++) {
    const fq_cmd_t *c = fq_cmd_at(i);
    fq_pval_t p[FQ_MAX_PARAMS];
    size_t n = 0;
    for (size_t k = 0; k < c->nparams; k++) {
      const fq_param_spec_t *sp = &c->params[k];
      if (!sp->required && !(c->need_any_param && n == 0)) continue;
      fq_pval_t v = {.name = sp->name, .name_len = strlen(sp->name), .type = sp->type};
      if (sp->type == FQ_PT_INT) v.v.i = (int64_t)sp->min;
      if (sp->type == FQ_PT_FLOAT) v.v.f = sp->max;
      if (sp->type == FQ_PT_STR) {
        const char *s = sp->choices ? sp->choices[0] : sp->check ? sp->examples[0] : "x";
        v.v.s.p = s;
        v.v.s.n = strlen(s);
      }
      if (sp->type == FQ_PT_MAP) {
        v.v.raw.p = (const uint8_t *)dummy_map;
        v.v.raw.n = sizeof dummy_map - 1;
      }
      p[n++] = v;
    }
    fq_err_t e;
    fq_err_clear(&e);
    int rc = fq_cmd_validate(c, p, n, &e);
    if (rc) FQ__FAIL("%s: minimal params refused: %s", c->name, e.msg);
  }
}

/* ---- the table's own invariants -------------------------------------------
 * Walks every entry, so a wrong one (a range the wrong way round, a signed
 * command without a builder, a builder that ignores a parameter) fails here
 * whatever command it is. */

/* Two different valid values of a parameter: which = 0 or 1. */
static fq_pval_t sample(const fq_param_spec_t *sp, int which) {
  fq_pval_t v = {.name = sp->name, .name_len = strlen(sp->name), .type = sp->type};
  switch (sp->type) {
  case FQ_PT_BOOL: v.v.b = which == 1; break;
  case FQ_PT_INT: v.v.i = (int64_t)(which ? sp->max : sp->min); break;
  case FQ_PT_FLOAT: v.v.f = which ? sp->max : sp->min; break;
  case FQ_PT_STR: {
    const char *s = which ? "y" : "x";
    if (sp->choices) s = sp->choices[which && sp->choices[1] ? 1 : 0];
    /* A string with a further rule names two values it accepts. */
    if (sp->check) s = sp->examples[which];
    v.v.s.p = s;
    v.v.s.n = strlen(s);
    break;
  }
  case FQ_PT_MAP:
    v.v.raw.p = (const uint8_t *)(which ? "\x81\xa1k\x01" : "\x80"); /* {"k": 1} / {} */
    v.v.raw.n = which ? 4 : 1;
    break;
  }
  return v;
}

static void check_spec(const fq_cmd_t *c, const fq_param_spec_t *sp) {
  const char *cn = c->name, *pn = sp->name ? sp->name : "(null)";
  if (!sp->name || !sp->name[0]) FQ__FAIL("%s: a parameter without a name", cn);
  bool numeric = sp->type == FQ_PT_INT || sp->type == FQ_PT_FLOAT;
  switch (sp->type) {
  case FQ_PT_INT:
    /* Builders write int32 fields; %.0f prints the range exactly. */
    if (!(sp->min >= INT32_MIN && sp->max <= INT32_MAX) || sp->min != floor(sp->min) ||
        sp->max != floor(sp->max))
      FQ__FAIL("%s.%s: integer range %g..%g is not within int32", cn, pn, sp->min, sp->max);
    /* fall through */
  case FQ_PT_FLOAT:
    if (!(isfinite(sp->min) && isfinite(sp->max) && sp->min < sp->max))
      FQ__FAIL("%s.%s: range %g..%g is empty or not finite", cn, pn, sp->min, sp->max);
    break;
  case FQ_PT_STR:
    /* Choices are compared exactly: a length limit beside them would be a
     * second statement of the same rule. */
    if ((sp->max_len < 1) == !sp->choices)
      FQ__FAIL("%s.%s: a string needs exactly one of choices and max_len", cn, pn);
    for (const char *const *ch = sp->choices; ch && *ch; ch++) {
      if (!**ch) FQ__FAIL("%s.%s: empty choice", cn, pn);
      for (const char *const *o = sp->choices; o < ch; o++)
        if (strcmp(*o, *ch) == 0) FQ__FAIL("%s.%s: choice \"%s\" twice", cn, pn, *ch);
    }
    /* One choice is a constant Fleet API demands in the body
     * (navigation_request's type): only a required parameter may be one. */
    if (sp->choices && (!sp->choices[0] || (!sp->choices[1] && !sp->required)))
      FQ__FAIL("%s.%s: fewer than two choices", cn, pn);
    break;
  case FQ_PT_BOOL:
  case FQ_PT_MAP: break;
  default: FQ__FAIL("%s.%s: type %d is no fq_ptype_t", cn, pn, (int)sp->type);
  }
  /* A limit on a type that has none would be a misplaced one. */
  if (!numeric && (sp->min != 0 || sp->max != 0)) FQ__FAIL("%s.%s: range on a %s", cn, pn,
                                                          fq_ptype_name(sp->type));
  if (sp->type != FQ_PT_STR && (sp->max_len || sp->choices))
    FQ__FAIL("%s.%s: length or choices on a %s", cn, pn, fq_ptype_name(sp->type));
  if (sp->check && (sp->type != FQ_PT_STR || sp->choices || !sp->examples[0] ||
                    !sp->examples[1] || strcmp(sp->examples[0], sp->examples[1]) == 0 ||
                    sp->check(sp->examples[0], strlen(sp->examples[0])) ||
                    sp->check(sp->examples[1], strlen(sp->examples[1]))))
    FQ__FAIL("%s.%s: a check needs a free-text string and two different examples it accepts",
             cn, pn);
  if (sp->gates && sp->type != FQ_PT_BOOL) FQ__FAIL("%s.%s: only a bool gates", cn, pn);
  if (sp->rest_only && (!c->build_payload || sp->required))
    FQ__FAIL("%s.%s: rest_only needs a signed command and an optional parameter", cn, pn);
}

/* Build cmd's signed payload for params that must validate; returns its
 * length (0 on failure, reported). */
static size_t build(const fq_cmd_t *c, const fq_pval_t *p, size_t n, uint8_t *out, size_t cap) {
  fq_err_t e;
  fq_err_clear(&e);
  if (fq_cmd_validate(c, p, n, &e)) {
    FQ__FAIL("%s: sample params refused: %s", c->name, e.msg);
    return 0;
  }
  fq_buf_t b = {.data = out, .alloc = cap, .cap = cap};
  int rc = c->build_payload(c, p, n, &b, &e);
  if (rc || b.len == 0) FQ__FAIL("%s: build_payload rc %d, %zu bytes: %s", c->name, rc, b.len, e.msg);
  return rc ? 0 : b.len;
}

/* Every parameter reaches the payload: changing only it changes the bytes
 * (a rest_only one must not). */
static void check_builder(const fq_cmd_t *c) {
  fq_pval_t base[FQ_MAX_PARAMS];
  uint8_t a[512], b[512];
  /* The minimal valid params (the required ones) build a payload. */
  size_t n = 0;
  for (size_t k = 0; k < c->nparams; k++)
    if (c->params[k].required || (c->need_any_param && k == 0))
      base[n++] = sample(&c->params[k], 0);
  build(c, base, n, a, sizeof a);
  /* So do all of them, each changing the payload.  A gating bool (the
   * others count only when it is true) is true in the base and varied to
   * false. */
  for (size_t k = 0; k < c->nparams; k++) base[k] = sample(&c->params[k], c->params[k].gates);
  size_t al = build(c, base, c->nparams, a, sizeof a);
  for (size_t k = 0; k < c->nparams; k++) {
    fq_pval_t var[FQ_MAX_PARAMS];
    memcpy(var, base, sizeof var);
    var[k] = sample(&c->params[k], !c->params[k].gates);
    size_t bl = build(c, var, c->nparams, b, sizeof b);
    bool same = al == bl && memcmp(a, b, al) == 0;
    if (same != c->params[k].rest_only)
      FQ__FAIL("%s.%s: the payload %s with the parameter", c->name, c->params[k].name,
               same ? "does not change" : "changes");
  }
}

FQ_TEST(every_entry_is_well_formed) {
  for (size_t i = 0; i < fq_cmd_count(); i++) {
    const fq_cmd_t *c = fq_cmd_at(i);
    const char *cn = c->name;
    CHECK(cn && cn[0]);
    for (const char *q = cn; *q; q++)
      if (!((*q >= 'a' && *q <= 'z') || *q == '_')) FQ__FAIL("%s: name not [a-z_]", cn);
    if (c->dev != FQ_DEV_VEHICLE && c->dev != FQ_DEV_SITE) FQ__FAIL("%s: device %d", cn, c->dev);
    /* Scopes: at least one, each a known one. */
    if (!c->scopes) FQ__FAIL("%s: no scope allows it", cn);
    for (unsigned bit = 1; bit; bit <<= 1)
      if ((c->scopes & bit) && strcmp(fq_scope_name(bit), "?") == 0)
        FQ__FAIL("%s: unknown scope bit %#x", cn, bit);
    /* Signed exactly when it has a domain; then the path is command/<name>. */
    if (c->domain != FQ_DOMAIN_NONE && c->domain != FQ_DOMAIN_VCSEC &&
        c->domain != FQ_DOMAIN_INFOTAINMENT)
      FQ__FAIL("%s: domain %d", cn, c->domain);
    if (c->dev == FQ_DEV_SITE && c->domain != FQ_DOMAIN_NONE) FQ__FAIL("%s: a signed site", cn);
    if ((c->domain != FQ_DOMAIN_NONE) != (c->build_payload != NULL))
      FQ__FAIL("%s: domain %d but build_payload %s", cn, c->domain,
               c->build_payload ? "set" : "NULL");
    if (c->build_arg && !c->build_payload) FQ__FAIL("%s: build_arg without a builder", cn);
    /* What has params can be sent as REST (sites, legacy cars). */
    if ((c->nparams || c->domain != FQ_DOMAIN_NONE || c->dev == FQ_DEV_SITE) && !c->build_json)
      FQ__FAIL("%s: no JSON body builder", cn);
    char want[96];
    /* A vehicle command's path is command/<name>, signed or not; the wake_up
     * endpoint and the site endpoints are named after themselves. */
    if (c->wake != (strcmp(cn, "wake_up") == 0)) FQ__FAIL("%s: wake flag %d", cn, c->wake);
    if (c->wake && c->domain != FQ_DOMAIN_NONE) FQ__FAIL("%s: a signed wake", cn);
    snprintf(want, sizeof want, "%s%s",
             c->dev == FQ_DEV_VEHICLE && !c->wake ? "command/" : "", cn);
    if (!c->rest_suffix || strcmp(c->rest_suffix, want) != 0)
      FQ__FAIL("%s: rest_suffix \"%s\", want \"%s\"", cn, c->rest_suffix ? c->rest_suffix : "",
               want);
    /* Params. */
    if (c->nparams > FQ_MAX_PARAMS || (c->nparams > 0) != (c->params != NULL))
      FQ__FAIL("%s: %zu params at %p", cn, c->nparams, (const void *)c->params);
    size_t required = 0;
    for (size_t k = 0; k < c->nparams; k++) {
      check_spec(c, &c->params[k]);
      required += c->params[k].required;
      for (size_t j = 0; j < k; j++)
        if (strcmp(c->params[j].name, c->params[k].name) == 0)
          FQ__FAIL("%s.%s: declared twice", cn, c->params[k].name);
    }
    if (c->need_any_param && (required || c->nparams < 2))
      FQ__FAIL("%s: need_any_param wants two or more optional parameters", cn);
    /* Coalescing is for set-points: something to set, and safe to resend. */
    if (c->coalesce && (!c->nparams || !c->idempotent))
      FQ__FAIL("%s: coalesce without params or not idempotent", cn);
    if (c->build_payload) check_builder(c);
  }
}

FQ_TEST(builders_take_what_validation_leaves) {
  /* Optional parameters left out still build (proto3 zero values), and a
   * free-text string with a NUL is refused before any builder sees it. */
  const fq_cmd_t *c = veh("set_scheduled_charging");
  fq_pval_t p[] = {pb("enable", true)};
  uint8_t out[64];
  CHECK(build(c, p, 1, out, sizeof out) > 0);
  fq_pval_t nul = {.name = "vehicle_name", .name_len = 12, .type = FQ_PT_STR,
                   .v.s = {.p = "ab\0cd", .n = 5}};
  BAD("set_vehicle_name", V, "params.vehicle_name: NUL at byte 2", nul);
  /* JSON bodies carry what was sent, for sites and legacy cars alike. */
  fq_buf_t b;
  fq_buf_init(&b, 256);
  fq_err_t e;
  fq_err_clear(&e);
  c = site("backup");
  fq_pval_t bp = pi("backup_reserve_percent", 30);
  CHECK_INT(c->build_json(c, &bp, 1, &b, &e), 0);
  CHECK_MEM(b.data, b.len, "{\"backup_reserve_percent\":30}", 29);
  fq_buf_free(&b);
}

/* ---- section 9 of the protocol doc -------------------------------------------
 * proto/wire-protocol.md shows the table to client authors; these tests
 * hold it to the code, so a range changed in one place only fails. */

/* The doc's words for one parameter, e.g. "`percent` integer req, 50..100". */
static void spec_text(const fq_param_spec_t *sp, char *out, size_t cap) {
  int o = snprintf(out, cap, "`%s` %s%s", sp->name, fq_ptype_name(sp->type),
                   sp->required ? " req" : "");
  const char *sep = sp->required ? ", " : " ";
  if (sp->choices) {
    o += snprintf(out + o, cap - (size_t)o, ":");
    for (const char *const *ch = sp->choices; *ch; ch++)
      o += snprintf(out + o, cap - (size_t)o, " %s`%s`", ch == sp->choices ? "" : "\\| ", *ch);
  } else if (sp->type == FQ_PT_INT) {
    snprintf(out + o, cap - (size_t)o, "%s%.0f..%.0f", sep, sp->min, sp->max);
  } else if (sp->type == FQ_PT_FLOAT) {
    snprintf(out + o, cap - (size_t)o, "%s%g..%g", sep, sp->min, sp->max);
  } else if (sp->type == FQ_PT_STR) {
    snprintf(out + o, cap - (size_t)o, "%s1..%zu bytes", sep, sp->max_len);
  }
}

/* Split a markdown table row in place at '|' not escaped as "\|"; returns
 * the number of cells, each trimmed. */
static int split_row(char *line, char **cells, int max) {
  int n = 0;
  char *p = line + 1, *start = p;
  for (; *p && n < max; p++) {
    if (*p != '|' || p[-1] == '\\') continue;
    *p = '\0';
    while (*start == ' ') start++;
    for (char *e = p - 1; e >= start && *e == ' '; e--) *e = '\0';
    cells[n++] = start;
    start = p + 1;
  }
  return n;
}

static void check_doc_params(const fq_cmd_t *c, const char *cell) {
  if (c->nparams == 0) {
    if (strcmp(cell, "-") != 0) FQ__FAIL("doc %s: params \"%s\", want -", c->name, cell);
    return;
  }
  size_t listed = cell[0] == '`';
  for (const char *q = cell; (q = strstr(q, "; `")) != NULL; q++) listed++;
  if (listed != c->nparams) FQ__FAIL("doc %s: %zu params, table %zu", c->name, listed, c->nparams);
  for (size_t k = 0; k < c->nparams; k++) {
    char want[256];
    spec_text(&c->params[k], want, sizeof want);
    const char *at = strstr(cell, want);
    char next = at ? at[strlen(want)] : 0;
    if (!at || (next != '\0' && next != ';' && next != ' '))
      FQ__FAIL("doc %s: params \"%s\" do not say \"%s\"", c->name, cell, want);
  }
  if (c->need_any_param && !strstr(cell, "at least one"))
    FQ__FAIL("doc %s: does not say that at least one parameter is needed", c->name);
}

static void check_doc_vehicle(const fq_cmd_t *c, char **cells, int n) {
  if (n != 6) {
    FQ__FAIL("doc %s: %d cells, want 6", c->name, n);
    return;
  }
  const char *dom = c->domain == FQ_DOMAIN_VCSEC         ? "VCSEC"
                    : c->domain == FQ_DOMAIN_INFOTAINMENT ? "INFO"
                                                          : "none (";
  if (strncmp(cells[1], dom, strlen(dom)) != 0 || (c->domain && strcmp(cells[1], dom) != 0))
    FQ__FAIL("doc %s: domain \"%s\", want %s", c->name, cells[1], dom);
  check_doc_params(c, cells[2]);
  char scopes[160] = "";
  for (unsigned bit = 1; bit; bit <<= 1)
    if (c->scopes & bit)
      snprintf(scopes + strlen(scopes), sizeof scopes - strlen(scopes), "%s%s",
               scopes[0] ? ", " : "", fq_scope_name(bit));
  if (strcmp(cells[3], scopes) != 0)
    FQ__FAIL("doc %s: scopes \"%s\", want \"%s\"", c->name, cells[3], scopes);
  const char *idem = c->idempotent ? "yes" : "**no**";
  if (strncmp(cells[4], idem, strlen(idem)) != 0)
    FQ__FAIL("doc %s: idempotent \"%s\", want %s", c->name, cells[4], idem);
  if (strcmp(cells[5], c->coalesce ? "yes" : "-") != 0)
    FQ__FAIL("doc %s: coalesce \"%s\", want %s", c->name, cells[5], c->coalesce ? "yes" : "-");
}

FQ_TEST(protocol_doc_matches_the_table) {
  FILE *f = fopen("../proto/wire-protocol.md", "r");
  if (!f) {
    FQ__FAIL("cannot open ../proto/wire-protocol.md");
    return;
  }
  char line[1024];
  bool in9 = false;
  fq_devtype_t dev = 0;
  size_t rows = 0;
  bool seen[128] = {false};
  CHECK(fq_cmd_count() <= 128);
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "## ", 3) == 0) in9 = strncmp(line, "## 9. ", 6) == 0;
    if (!in9) continue;
    if (strncmp(line, "### Vehicles", 12) == 0) dev = FQ_DEV_VEHICLE;
    if (strncmp(line, "### Energy sites", 16) == 0) dev = FQ_DEV_SITE;
    if (strncmp(line, "| `", 3) != 0) continue;
    char *cells[8];
    int n = split_row(line, cells, 8);
    size_t len = strlen(cells[0]);
    const fq_cmd_t *c = len > 2 ? fq_cmd_find(cells[0] + 1, len - 2, dev, NULL) : NULL;
    if (!c) {
      FQ__FAIL("doc: %s is no command of that device type", cells[0]);
      continue;
    }
    size_t idx = (size_t)(c - fq_cmd_at(0));
    if (seen[idx]) FQ__FAIL("doc: %s listed twice", c->name);
    seen[idx] = true;
    rows++;
    if (dev == FQ_DEV_VEHICLE) {
      check_doc_vehicle(c, cells, n);
    } else if (n != 2) {
      FQ__FAIL("doc %s: %d cells, want 2", c->name, n);
    } else {
      /* The prose above the sites' table says they all need energy_cmds,
       * are idempotent and suit coalescing. */
      check_doc_params(c, cells[1]);
      CHECK(c->scopes == FQ_SCOPE_ENERGY_CMDS && c->idempotent && c->coalesce);
    }
  }
  fclose(f);
  CHECK_INT(rows, fq_cmd_count());
}
