/*
 * The command table: every command fleetq accepts, declared once as data
 * (name, device type, domain, scopes, parameters with their types and
 * ranges, idempotency, coalescing, REST path and payload builder), and the
 * central check of a command's parameters.  Tesla bills every request it
 * answers below HTTP 500, so a wrong name, a missing parameter or an
 * out-of-range value is refused here, before anything is stored, signed or
 * sent.  The payload builders live here too, next to the table that names
 * them: they run only on parameters fq_cmd_validate() accepted, so they
 * read values and never test them again.
 *
 * Adding a command: its parameter specs (if it takes any), one entry in
 * cmds[], a builder if none of the existing ones fits, and a test.
 * test_commands.c checks the invariants of every entry by itself.
 *
 * Sources: vehicle commands follow section 3 of the vehicle command
 * protocol notes (REST names, parameter names as the official proxy reads
 * them); energy-site commands follow the Fleet API energy endpoints.
 * Ranges are the ones the car or the Tesla app accepts.
 */
#include "fleetq/commands.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "car_server.pb-c.h"
#include "mpread.h"
#include "payload.h"
#include "util.h"
#include "vcsec.pb-c.h"

/* ---- parameter specs ------------------------------------------------------ */

#define REQ_BOOL(n) {.name = n, .type = FQ_PT_BOOL, .required = true}
#define OPT_BOOL(n) {.name = n, .type = FQ_PT_BOOL, .required = false}

static const char *const trunk_choices[] = {"rear", "front", NULL};
static const char *const window_choices[] = {"vent", "close", NULL};
static const char *const mode_choices[] = {"autonomous", "self_consumption", "backup", NULL};
static const char *const export_choices[] = {"battery_ok", "pv_only", "never", NULL};

static const fq_param_spec_t p_actuate_trunk[] = {
    {.name = "which_trunk", .type = FQ_PT_STR, .required = true, .choices = trunk_choices},
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
/* lat/lon may be sent (older docs ask for them); cars on the protocol
 * ignore them, and so does the signed payload. */
static const fq_param_spec_t p_window_control[] = {
    {.name = "command", .type = FQ_PT_STR, .required = true, .choices = window_choices},
    {.name = "lat", .type = FQ_PT_FLOAT, .min = -90, .max = 90, .rest_only = true},
    {.name = "lon", .type = FQ_PT_FLOAT, .min = -180, .max = 180, .rest_only = true},
};
static const fq_param_spec_t p_scheduled_charging[] = {
    REQ_BOOL("enable"),
    {.name = "time", .type = FQ_PT_INT, .min = 0, .max = 1439},
};
static const fq_param_spec_t p_vehicle_name[] = {
    {.name = "vehicle_name", .type = FQ_PT_STR, .required = true, .max_len = 64},
};

/* ---- issue 16: the rest of the vehicle command set --------------------------
 * Names and required-ness as the official proxy (vehicle-command's
 * pkg/proxy/command.go) reads them; ranges are what the car's enums and the
 * Tesla app allow (see each). */

/* A PIN (valet mode, PIN to drive, speed limit mode) is 4 digits on the
 * car's keypad. */
static const char *check_pin(const char *s, size_t n) {
  if (n != 4) return "must be 4 digits";
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return "must be 4 digits";
  return NULL;
}

static const char *check_days(const char *s, size_t n) {
  return fq_days_of_week_parse(s, n) < 0
             ? "not a comma list of days (Sun..Sat, Sunday..Saturday, All, Weekdays)"
             : NULL;
}

#define PIN(n, req) \
  {.name = n, .type = FQ_PT_STR, .required = req, .max_len = 4, .check = check_pin, \
   .examples = {"1234", "9876"}}
#define DAYS {.name = "days_of_week", .type = FQ_PT_STR, .required = true, .max_len = 96, \
              .check = check_days, .examples = {"All", "Mon,Wed"}}
/* Minutes after local midnight. */
#define MINUTES(n, req) {.name = n, .type = FQ_PT_INT, .required = req, .min = 0, .max = 1439}
#define LAT(req) {.name = "lat", .type = FQ_PT_FLOAT, .required = req, .min = -90, .max = 90}
#define LON(req) {.name = "lon", .type = FQ_PT_FLOAT, .required = req, .min = -180, .max = 180}
/* Schedule ids are unix seconds (the proxy uses the current time for 0);
 * the car's field is a uint64, ours stays within int32 like every INT. */
#define SCHED_ID(req) {.name = "id", .type = FQ_PT_INT, .required = req, .min = 1, .max = INT32_MAX}

static const char *const sunroof_choices[] = {"vent", "close", "open", NULL};

static const fq_param_spec_t p_add_charge_schedule[] = {
    LAT(true), LON(true), MINUTES("start_time", false), REQ_BOOL("start_enabled"),
    MINUTES("end_time", false), REQ_BOOL("end_enabled"), DAYS, SCHED_ID(false),
    REQ_BOOL("enabled"), OPT_BOOL("one_time"),
};
static const fq_param_spec_t p_add_precondition_schedule[] = {
    LAT(true), LON(true), MINUTES("precondition_time", true), OPT_BOOL("one_time"), DAYS,
    SCHED_ID(false), REQ_BOOL("enabled"),
};
static const fq_param_spec_t p_schedule_id[] = {
    SCHED_ID(true),
};
/* enable = false clears the departure: the proxy sends only that. */
static const fq_param_spec_t p_scheduled_departure[] = {
    {.name = "enable", .type = FQ_PT_BOOL, .required = true, .gates = true},
    MINUTES("departure_time", false),
    MINUTES("end_off_peak_time", false),
    OPT_BOOL("preconditioning_enabled"),
    OPT_BOOL("preconditioning_weekdays_only"),
    OPT_BOOL("off_peak_charging_enabled"),
    OPT_BOOL("off_peak_charging_weekdays_only"),
};
/* 0 off, 1 on, 2 dog, 3 camp (HvacClimateKeeperAction.ClimateKeeperAction_E). */
static const fq_param_spec_t p_climate_keeper[] = {
    {.name = "climate_keeper_mode", .type = FQ_PT_INT, .required = true, .min = 0, .max = 3},
    OPT_BOOL("manual_override"),
};
static const fq_param_spec_t p_bioweapon[] = {
    REQ_BOOL("on"),
    REQ_BOOL("manual_override"),
};
/* Passed on as ClimateState.CopActivationTemp, as the proxy does: 1 low,
 * 2 medium, 3 high (0 is the enum's "unspecified"). */
static const fq_param_spec_t p_cop_temp[] = {
    {.name = "cop_temp", .type = FQ_PT_INT, .required = true, .min = 1, .max = 3},
};
/* seat_position indexes the proxy's seat list: 0 front left, 1 front right,
 * 2 rear left, 3 rear left back, 4 rear center, 5 rear right, 6 rear right
 * back, 7 third row left, 8 third row right; level 0 off .. 3 high. */
static const fq_param_spec_t p_seat_heater[] = {
    {.name = "seat_position", .type = FQ_PT_INT, .required = true, .min = 0, .max = 8},
    {.name = "level", .type = FQ_PT_INT, .required = true, .min = 0, .max = 3},
};
/* Front seats only: 1 left, 2 right.  The level goes into the car's enum
 * unchanged, as the proxy sends it: 1 off, 2 low, 3 medium, 4 high. */
static const fq_param_spec_t p_seat_cooler[] = {
    {.name = "seat_position", .type = FQ_PT_INT, .required = true, .min = 1, .max = 2},
    {.name = "seat_cooler_level", .type = FQ_PT_INT, .required = true, .min = 1, .max = 4},
};
static const fq_param_spec_t p_auto_seat[] = {
    {.name = "auto_seat_position", .type = FQ_PT_INT, .required = true, .min = 1, .max = 2},
    REQ_BOOL("auto_climate_on"),
};
static const fq_param_spec_t p_on_password[] = {
    REQ_BOOL("on"),
    PIN("password", false),
};
/* Valet mode: the PIN goes with `on` (the official SDK refuses to enable
 * it without one); turning it off sends none. */
static const fq_param_spec_t p_valet[] = {
    {.name = "on", .type = FQ_PT_BOOL, .required = true, .gates = true},
    PIN("password", false),
};
static const fq_param_spec_t p_pin[] = {
    PIN("pin", true),
};
/* The Tesla app's speed limit mode range. */
static const fq_param_spec_t p_speed_limit[] = {
    {.name = "limit_mph", .type = FQ_PT_FLOAT, .required = true, .min = 50, .max = 120},
};
static const fq_param_spec_t p_enable[] = {
    REQ_BOOL("enable"),
};
static const fq_param_spec_t p_sun_roof[] = {
    {.name = "state", .type = FQ_PT_STR, .required = true, .choices = sunroof_choices},
};
static const fq_param_spec_t p_homelink[] = {
    LAT(true),
    LON(true),
};
static const fq_param_spec_t p_software_update[] = {
    {.name = "offset_sec", .type = FQ_PT_INT, .required = true, .min = 0, .max = INT32_MAX},
};
static const fq_param_spec_t p_volume[] = {
    {.name = "volume", .type = FQ_PT_FLOAT, .required = true, .min = 0, .max = 10},
};

/* navigation_request: Fleet API's REST body as Tesla's app shares a place
 * with the car (an Android share intent): type "share_ext_content_raw",
 * value {"android.intent.extra.TEXT": "<address or place>"}, a locale
 * ("en-US") and the sender's clock as a string of unix ms.  The official
 * proxy cannot sign it and forwards it as REST. */
static const char *const share_choices[] = {"share_ext_content_raw", NULL};

static const char *check_locale(const char *s, size_t n) {
  /* A BCP 47 tag as the app sends it: letters, digits, '-' and '_'. */
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
          (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
      return "not a language tag (letters, digits, '-', e.g. en-US)";
  return NULL;
}

static const char *check_digits(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return "must be unix milliseconds written as digits";
  return NULL;
}

static const fq_param_spec_t p_navigation[] = {
    {.name = "type", .type = FQ_PT_STR, .required = true, .choices = share_choices},
    {.name = "value", .type = FQ_PT_MAP, .required = true},
    {.name = "locale", .type = FQ_PT_STR, .max_len = 35, .check = check_locale,
     .examples = {"en-US", "de"}},
    {.name = "timestamp_ms", .type = FQ_PT_STR, .max_len = 20, .check = check_digits,
     .examples = {"1700000000000", "0"}},
};

static const fq_param_spec_t p_backup[] = {
    {.name = "backup_reserve_percent", .type = FQ_PT_INT, .required = true, .min = 0, .max = 100},
};
static const fq_param_spec_t p_operation[] = {
    {.name = "default_real_mode", .type = FQ_PT_STR, .required = true, .choices = mode_choices},
};
static const fq_param_spec_t p_storm_mode[] = {
    REQ_BOOL("enabled"),
};
static const fq_param_spec_t p_grid_import_export[] = {
    OPT_BOOL("disallow_charge_from_grid_with_solar_installed"),
    {.name = "customer_preferred_export_rule", .type = FQ_PT_STR, .choices = export_choices},
};
static const fq_param_spec_t p_off_grid_reserve[] = {
    {.name = "off_grid_vehicle_charging_reserve_percent", .type = FQ_PT_INT, .required = true,
     .min = 0, .max = 100},
};
static const fq_param_spec_t p_tou_settings[] = {
    {.name = "tou_settings", .type = FQ_PT_MAP, .required = true},
};
/* ping is no user command (see ping_cmd below). */
static const fq_param_spec_t p_ping[] = {
    {.name = "ping_id", .type = FQ_PT_INT, .min = INT32_MIN, .max = INT32_MAX},
};

/* ---- reading checked parameters -------------------------------------------
 * For builders only.  fq_cmd_validate() has checked names, types, ranges and
 * required ones, so these just read; an optional parameter left out reads as
 * zero, which proto3 leaves out of the payload too.  The type test keeps a
 * builder memory safe if it is ever handed unchecked params; it is no check. */

static bool arg_bool(const fq_pval_t *ps, size_t n, const char *name) {
  const fq_pval_t *p = fq_pval_get(ps, n, name);
  return p && p->type == FQ_PT_BOOL && p->v.b;
}

/* Every INT range of the table fits an int32 (test_commands checks it). */
static int32_t arg_int(const fq_pval_t *ps, size_t n, const char *name) {
  const fq_pval_t *p = fq_pval_get(ps, n, name);
  return p && p->type == FQ_PT_INT ? (int32_t)p->v.i : 0;
}

static float arg_float(const fq_pval_t *ps, size_t n, const char *name) {
  const fq_pval_t *p = fq_pval_get(ps, n, name);
  return p ? (float)fq_pval_num(p) : 0;
}

/* True if the string parameter name was sent and equals value. */
static bool arg_is(const fq_pval_t *ps, size_t n, const char *name, const char *value) {
  const fq_pval_t *p = fq_pval_get(ps, n, name);
  return p && p->type == FQ_PT_STR && p->v.s.n == strlen(value) &&
         memcmp(p->v.s.p, value, p->v.s.n) == 0;
}

/* A VehicleAction oneof case by its member's name. */
#define ACTION_CASE(x) CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_##x

/* ---- payload builders -------------------------------------------------------
 * One fq_cmd_builder_fn per payload shape, filling the protobuf-c structs
 * generated from proto/; commands that share a shape differ by their
 * entry's build_arg.  The structs live on the stack and are packed straight
 * into out: no allocation beyond the buffer's growth.  proto3 semantics come
 * from protobuf-c: zero scalars are left out, oneof members are written even
 * when empty (set_sentry_mode off is 1203f20100). */

static int pack(const ProtobufCMessage *m, fq_buf_t *out, fq_err_t *err) {
  size_t n = protobuf_c_message_get_packed_size(m);
  int rc = fq_buf_reserve(out, n);
  if (rc) return fq_errf(err, rc, "payload: no room for %zu bytes", n);
  out->len += protobuf_c_message_pack(m, out->data + out->len);
  return 0;
}

/* Wrap a filled VehicleAction into an Action and pack it. */
static int pack_action(CarServer__VehicleAction *va, fq_buf_t *out, fq_err_t *err) {
  CarServer__Action a;
  car_server__action__init(&a);
  a.vehicleaction = va;
  return pack(&a.base, out, err);
}

/* A table entry whose build_arg its builder does not know: a programmer
 * error that test_commands catches, never a client's. */
static int bad_arg(const fq_cmd_t *cmd, fq_err_t *err) {
  return fq_errf(err, FQ_EINTERNAL, "%s: no payload for build_arg %d", cmd->name, cmd->build_arg);
}

/* VCSEC remote keyless entry; build_arg is the VCSEC__RKEActionE. */
static int b_rke(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                 fq_err_t *err) {
  VCSEC__UnsignedMessage u;
  vcsec__unsigned_message__init(&u);
  u.sub_message_case = VCSEC__UNSIGNED_MESSAGE__SUB_MESSAGE_RKEACTION;
  u.rkeaction = (VCSEC__RKEActionE)cmd->build_arg;
  return pack(&u.base, out, err);
}

static int b_trunk(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                   fq_err_t *err) {
  VCSEC__ClosureMoveRequest c;
  vcsec__closure_move_request__init(&c);
  if (arg_is(ps, n, "which_trunk", "front"))
    c.fronttrunk = VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_MOVE;
  else
    c.reartrunk = VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_MOVE;
  VCSEC__UnsignedMessage u;
  vcsec__unsigned_message__init(&u);
  u.sub_message_case = VCSEC__UNSIGNED_MESSAGE__SUB_MESSAGE_CLOSURE_MOVE_REQUEST;
  u.closuremoverequest = &c;
  return pack(&u.base, out, err);
}

/* The non-toggling closures: build_arg is CLOSURE(part, move type), the
 * move type being OPEN or CLOSE rather than actuate_trunk's MOVE. */
#define CLOSURE_FRONT 0x100
#define CLOSURE(front, type) ((front) | VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_##type)

static int b_closure(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                     fq_err_t *err) {
  VCSEC__ClosureMoveRequest c;
  vcsec__closure_move_request__init(&c);
  VCSEC__ClosureMoveTypeE type = (VCSEC__ClosureMoveTypeE)(cmd->build_arg & 0xff);
  if (cmd->build_arg & CLOSURE_FRONT) c.fronttrunk = type;
  else c.reartrunk = type;
  VCSEC__UnsignedMessage u;
  vcsec__unsigned_message__init(&u);
  u.sub_message_case = VCSEC__UNSIGNED_MESSAGE__SUB_MESSAGE_CLOSURE_MOVE_REQUEST;
  u.closuremoverequest = &c;
  return pack(&u.base, out, err);
}

/* build_arg is the ChargingStartStopAction oneof case; every member is an
 * empty Void. */
static int b_charging(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                      fq_err_t *err) {
  CarServer__Void v;
  car_server__void__init(&v);
  CarServer__ChargingStartStopAction c;
  car_server__charging_start_stop_action__init(&c);
  c.charging_action_case = (CarServer__ChargingStartStopAction__ChargingActionCase)cmd->build_arg;
  switch (c.charging_action_case) {
  case CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_START: c.start = &v; break;
  case CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_STOP: c.stop = &v; break;
  case CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_START_STANDARD:
    c.start_standard = &v;
    break;
  case CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_START_MAX_RANGE:
    c.start_max_range = &v;
    break;
  default: return bad_arg(cmd, err);
  }
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGING_START_STOP_ACTION;
  va.chargingstartstopaction = &c;
  return pack_action(&va, out, err);
}

static int b_charge_limit(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                          fq_err_t *err) {
  CarServer__ChargingSetLimitAction c;
  car_server__charging_set_limit_action__init(&c);
  c.percent = arg_int(ps, n, "percent");
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGING_SET_LIMIT_ACTION;
  va.chargingsetlimitaction = &c;
  return pack_action(&va, out, err);
}

static int b_charging_amps(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                           fq_err_t *err) {
  CarServer__SetChargingAmpsAction c;
  car_server__set_charging_amps_action__init(&c);
  c.charging_amps = arg_int(ps, n, "charging_amps");
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SET_CHARGING_AMPS_ACTION;
  va.setchargingampsaction = &c;
  return pack_action(&va, out, err);
}

/* build_arg is power_on. */
static int b_hvac_auto(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                       fq_err_t *err) {
  CarServer__HvacAutoAction c;
  car_server__hvac_auto_action__init(&c);
  c.power_on = cmd->build_arg != 0;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_HVAC_AUTO_ACTION;
  va.hvacautoaction = &c;
  return pack_action(&va, out, err);
}

static int b_set_temps(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                       fq_err_t *err) {
  /* Both are required by the spec: the official proxy sends 0 °C for a
   * missing one. */
  CarServer__HvacTemperatureAdjustmentAction c;
  car_server__hvac_temperature_adjustment_action__init(&c);
  c.driver_temp_celsius = arg_float(ps, n, "driver_temp");
  c.passenger_temp_celsius = arg_float(ps, n, "passenger_temp");
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case =
      CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_HVAC_TEMPERATURE_ADJUSTMENT_ACTION;
  va.hvactemperatureadjustmentaction = &c;
  return pack_action(&va, out, err);
}

static int b_precondition_max(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                              fq_err_t *err) {
  CarServer__HvacSetPreconditioningMaxAction c;
  car_server__hvac_set_preconditioning_max_action__init(&c);
  c.on = arg_bool(ps, n, "on");
  c.manual_override = arg_bool(ps, n, "manual_override");
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case =
      CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_HVAC_SET_PRECONDITIONING_MAX_ACTION;
  va.hvacsetpreconditioningmaxaction = &c;
  return pack_action(&va, out, err);
}

static int b_cabin_overheat(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                            fq_err_t *err) {
  CarServer__SetCabinOverheatProtectionAction c;
  car_server__set_cabin_overheat_protection_action__init(&c);
  c.on = arg_bool(ps, n, "on");
  c.fan_only = arg_bool(ps, n, "fan_only");
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case =
      CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SET_CABIN_OVERHEAT_PROTECTION_ACTION;
  va.setcabinoverheatprotectionaction = &c;
  return pack_action(&va, out, err);
}

static int b_sentry(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                    fq_err_t *err) {
  CarServer__VehicleControlSetSentryModeAction c;
  car_server__vehicle_control_set_sentry_mode_action__init(&c);
  c.on = arg_bool(ps, n, "on");
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case =
      CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_SET_SENTRY_MODE_ACTION;
  va.vehiclecontrolsetsentrymodeaction = &c;
  return pack_action(&va, out, err);
}

/* The parameterless actions are empty messages: build_arg, the
 * VehicleAction oneof case, alone says what to do. */
static int b_empty(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                   fq_err_t *err) {
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  CarServer__VehicleControlHonkHornAction honk;
  CarServer__VehicleControlFlashLightsAction flash;
  CarServer__ChargePortDoorOpen open;
  CarServer__ChargePortDoorClose close;
  va.vehicle_action_msg_case = (CarServer__VehicleAction__VehicleActionMsgCase)cmd->build_arg;
  switch (va.vehicle_action_msg_case) {
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_HONK_HORN_ACTION:
    car_server__vehicle_control_honk_horn_action__init(&honk);
    va.vehiclecontrolhonkhornaction = &honk;
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_FLASH_LIGHTS_ACTION:
    car_server__vehicle_control_flash_lights_action__init(&flash);
    va.vehiclecontrolflashlightsaction = &flash;
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGE_PORT_DOOR_OPEN:
    car_server__charge_port_door_open__init(&open);
    va.chargeportdooropen = &open;
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGE_PORT_DOOR_CLOSE:
    car_server__charge_port_door_close__init(&close);
    va.chargeportdoorclose = &close;
    break;
  default: return bad_arg(cmd, err);
  }
  return pack_action(&va, out, err);
}

static int b_window(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                    fq_err_t *err) {
  CarServer__Void v;
  car_server__void__init(&v);
  CarServer__VehicleControlWindowAction c;
  car_server__vehicle_control_window_action__init(&c);
  if (arg_is(ps, n, "command", "vent")) {
    c.action_case = CAR_SERVER__VEHICLE_CONTROL_WINDOW_ACTION__ACTION_VENT;
    c.vent = &v;
  } else {
    c.action_case = CAR_SERVER__VEHICLE_CONTROL_WINDOW_ACTION__ACTION_CLOSE;
    c.close = &v;
  }
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_WINDOW_ACTION;
  va.vehiclecontrolwindowaction = &c;
  return pack_action(&va, out, err);
}

static int b_scheduled_charging(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                                fq_err_t *err) {
  CarServer__ScheduledChargingAction c;
  car_server__scheduled_charging_action__init(&c);
  c.enabled = arg_bool(ps, n, "enable");
  c.charging_time = arg_int(ps, n, "time");
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SCHEDULED_CHARGING_ACTION;
  va.scheduledchargingaction = &c;
  return pack_action(&va, out, err);
}

static int b_vehicle_name(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                          fq_err_t *err) {
  /* protobuf-c takes a C string: copy the borrowed bytes (the spec keeps
   * NUL out of them, strndup stops at one anyway). */
  const fq_pval_t *p = fq_pval_get(ps, n, "vehicle_name");
  char *name = p && p->type == FQ_PT_STR ? strndup(p->v.s.p, p->v.s.n) : strdup("");
  if (!name) return fq_errf(err, -ENOMEM, "payload: out of memory");
  CarServer__SetVehicleNameAction c;
  car_server__set_vehicle_name_action__init(&c);
  c.vehiclename = name;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SET_VEHICLE_NAME_ACTION;
  va.setvehiclenameaction = &c;
  int rc = pack_action(&va, out, err);
  free(name);
  return rc;
}

static int b_ping(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                  fq_err_t *err) {
  CarServer__Ping c;
  car_server__ping__init(&c);
  c.ping_id = arg_int(ps, n, "ping_id");
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_PING;
  va.ping = &c;
  return pack_action(&va, out, err);
}

/* ---- issue 16 builders ------------------------------------------------------ */

/* Pack msg as the VehicleAction member whose oneof case is `which`.  Every
 * member of that oneof is a message pointer at the same offset, and
 * protobuf-c finds the member by its case: one pointer serves them all. */
static int pack_va(int which, void *msg, fq_buf_t *out, fq_err_t *err) {
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = (CarServer__VehicleAction__VehicleActionMsgCase)which;
  va.ping = msg;
  return pack_action(&va, out, err);
}

/* A string parameter as a C string for protobuf-c ("" when absent): the
 * spec keeps NUL out, strndup stops at one anyway.  NULL only when out of
 * memory; free it. */
static char *arg_strdup(const fq_pval_t *ps, size_t n, const char *name) {
  const fq_pval_t *p = fq_pval_get(ps, n, name);
  return p && p->type == FQ_PT_STR ? strndup(p->v.s.p, p->v.s.n) : strdup("");
}

static int no_memory(fq_err_t *err) { return fq_errf(err, -ENOMEM, "payload: out of memory"); }

/* Messages without fields: zero bytes whatever their type, so CarServer.Void
 * stands for each.  build_arg is the VehicleAction case. */
static int b_void(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                  fq_err_t *err) {
  CarServer__Void v;
  car_server__void__init(&v);
  return pack_va(cmd->build_arg, &v, out, err);
}

/* build_arg: +1 / -1 steps the volume (media_volume_up / _down), 0 sets
 * `volume` (adjust_volume). */
static int b_volume(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                    fq_err_t *err) {
  CarServer__MediaUpdateVolume c;
  car_server__media_update_volume__init(&c);
  if (cmd->build_arg) {
    c.media_volume_case = CAR_SERVER__MEDIA_UPDATE_VOLUME__MEDIA_VOLUME_VOLUME_DELTA;
    c.volume_delta = cmd->build_arg;
  } else {
    c.media_volume_case = CAR_SERVER__MEDIA_UPDATE_VOLUME__MEDIA_VOLUME_VOLUME_ABSOLUTE_FLOAT;
    c.volume_absolute_float = arg_float(ps, n, "volume");
  }
  return pack_va(ACTION_CASE(MEDIA_UPDATE_VOLUME), &c, out, err);
}

static int b_bioweapon(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                       fq_err_t *err) {
  CarServer__HvacBioweaponModeAction c;
  car_server__hvac_bioweapon_mode_action__init(&c);
  c.on = arg_bool(ps, n, "on");
  c.manual_override = arg_bool(ps, n, "manual_override");
  return pack_va(ACTION_CASE(HVAC_BIOWEAPON_MODE_ACTION), &c, out, err);
}

static int b_climate_keeper(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                            fq_err_t *err) {
  CarServer__HvacClimateKeeperAction c;
  car_server__hvac_climate_keeper_action__init(&c);
  c.climatekeeperaction =
      (CarServer__HvacClimateKeeperAction__ClimateKeeperActionE)arg_int(ps, n, "climate_keeper_mode");
  c.manual_override = arg_bool(ps, n, "manual_override");
  return pack_va(ACTION_CASE(HVAC_CLIMATE_KEEPER_ACTION), &c, out, err);
}

static int b_cop_temp(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                      fq_err_t *err) {
  CarServer__SetCopTempAction c;
  car_server__set_cop_temp_action__init(&c);
  c.copactivationtemp = (CarServer__ClimateState__CopActivationTemp)arg_int(ps, n, "cop_temp");
  return pack_va(ACTION_CASE(SET_COP_TEMP_ACTION), &c, out, err);
}

static int b_seat_heater(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                         fq_err_t *err) {
  CarServer__Void v;
  car_server__void__init(&v);
  CarServer__HvacSeatHeaterActions__HvacSeatHeaterAction one;
  car_server__hvac_seat_heater_actions__hvac_seat_heater_action__init(&one);
  /* Both oneofs hold only Void members, numbered in order: level 0 (off)
   * is case 2 (SEAT_HEATER_OFF), seat 0 (front left) is case 7. */
  one.seat_heater_level_case =
      (CarServer__HvacSeatHeaterActions__HvacSeatHeaterAction__SeatHeaterLevelCase)(
          arg_int(ps, n, "level") + 2);
  one.seat_heater_off = &v;
  one.seat_position_case =
      (CarServer__HvacSeatHeaterActions__HvacSeatHeaterAction__SeatPositionCase)(
          arg_int(ps, n, "seat_position") + 7);
  one.car_seat_front_left = &v;
  CarServer__HvacSeatHeaterActions__HvacSeatHeaterAction *list[1] = {&one};
  CarServer__HvacSeatHeaterActions c;
  car_server__hvac_seat_heater_actions__init(&c);
  c.n_hvacseatheateraction = 1;
  c.hvacseatheateraction = list;
  return pack_va(ACTION_CASE(HVAC_SEAT_HEATER_ACTIONS), &c, out, err);
}

static int b_seat_cooler(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                         fq_err_t *err) {
  CarServer__HvacSeatCoolerActions__HvacSeatCoolerAction one;
  car_server__hvac_seat_cooler_actions__hvac_seat_cooler_action__init(&one);
  one.seat_cooler_level =
      (CarServer__HvacSeatCoolerActions__HvacSeatCoolerLevelE)arg_int(ps, n, "seat_cooler_level");
  one.seat_position =
      (CarServer__HvacSeatCoolerActions__HvacSeatCoolerPositionE)arg_int(ps, n, "seat_position");
  CarServer__HvacSeatCoolerActions__HvacSeatCoolerAction *list[1] = {&one};
  CarServer__HvacSeatCoolerActions c;
  car_server__hvac_seat_cooler_actions__init(&c);
  c.n_hvacseatcooleraction = 1;
  c.hvacseatcooleraction = list;
  return pack_va(ACTION_CASE(HVAC_SEAT_COOLER_ACTIONS), &c, out, err);
}

static int b_auto_seat(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                       fq_err_t *err) {
  CarServer__AutoSeatClimateAction__CarSeat one;
  car_server__auto_seat_climate_action__car_seat__init(&one);
  one.on = arg_bool(ps, n, "auto_climate_on");
  one.seat_position =
      (CarServer__AutoSeatClimateAction__AutoSeatPositionE)arg_int(ps, n, "auto_seat_position");
  CarServer__AutoSeatClimateAction__CarSeat *list[1] = {&one};
  CarServer__AutoSeatClimateAction c;
  car_server__auto_seat_climate_action__init(&c);
  c.n_carseat = 1;
  c.carseat = list;
  return pack_va(ACTION_CASE(AUTO_SEAT_CLIMATE_ACTION), &c, out, err);
}

static int b_wheel_heater(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                          fq_err_t *err) {
  CarServer__HvacSteeringWheelHeaterAction c;
  car_server__hvac_steering_wheel_heater_action__init(&c);
  c.power_on = arg_bool(ps, n, "on");
  return pack_va(ACTION_CASE(HVAC_STEERING_WHEEL_HEATER_ACTION), &c, out, err);
}

/* set_valet_mode and set_pin_to_drive: {on, password}, two messages of the
 * same shape; build_arg is the VehicleAction case. */
static int b_on_password(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                         fq_err_t *err) {
  char *pw = arg_strdup(ps, n, "password");
  if (!pw) return no_memory(err);
  CarServer__VehicleControlSetValetModeAction valet;
  CarServer__VehicleControlSetPinToDriveAction pin;
  void *msg;
  switch (cmd->build_arg) {
  case ACTION_CASE(VEHICLE_CONTROL_SET_VALET_MODE_ACTION):
    car_server__vehicle_control_set_valet_mode_action__init(&valet);
    valet.on = arg_bool(ps, n, "on");
    valet.password = valet.on ? pw : (char *)""; /* as the SDK's DisableValetMode */
    msg = &valet;
    break;
  case ACTION_CASE(VEHICLE_CONTROL_SET_PIN_TO_DRIVE_ACTION):
    car_server__vehicle_control_set_pin_to_drive_action__init(&pin);
    pin.on = arg_bool(ps, n, "on");
    pin.password = pw;
    msg = &pin;
    break;
  default: free(pw); return bad_arg(cmd, err);
  }
  int rc = pack_va(cmd->build_arg, msg, out, err);
  free(pw);
  return rc;
}

/* build_arg is `activate`. */
static int b_speed_limit(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                         fq_err_t *err) {
  char *pin = arg_strdup(ps, n, "pin");
  if (!pin) return no_memory(err);
  CarServer__DrivingSpeedLimitAction c;
  car_server__driving_speed_limit_action__init(&c);
  c.activate = cmd->build_arg != 0;
  c.pin = pin;
  int rc = pack_va(ACTION_CASE(DRIVING_SPEED_LIMIT_ACTION), &c, out, err);
  free(pin);
  return rc;
}

static int b_speed_limit_set(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                             fq_err_t *err) {
  CarServer__DrivingSetSpeedLimitAction c;
  car_server__driving_set_speed_limit_action__init(&c);
  const fq_pval_t *p = fq_pval_get(ps, n, "limit_mph");
  c.limit_mph = p ? fq_pval_num(p) : 0; /* a double on the wire: no float rounding */
  return pack_va(ACTION_CASE(DRIVING_SET_SPEED_LIMIT_ACTION), &c, out, err);
}

static int b_guest_mode(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                        fq_err_t *err) {
  CarServer__VehicleState__GuestMode c;
  car_server__vehicle_state__guest_mode__init(&c);
  c.guestmodeactive = arg_bool(ps, n, "enable");
  return pack_va(ACTION_CASE(GUEST_MODE_ACTION), &c, out, err);
}

static int b_sun_roof(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                      fq_err_t *err) {
  CarServer__Void v;
  car_server__void__init(&v);
  CarServer__VehicleControlSunroofOpenCloseAction c;
  car_server__vehicle_control_sunroof_open_close_action__init(&c);
  if (arg_is(ps, n, "state", "vent")) {
    c.action_case = CAR_SERVER__VEHICLE_CONTROL_SUNROOF_OPEN_CLOSE_ACTION__ACTION_VENT;
    c.vent = &v;
  } else if (arg_is(ps, n, "state", "open")) {
    c.action_case = CAR_SERVER__VEHICLE_CONTROL_SUNROOF_OPEN_CLOSE_ACTION__ACTION_OPEN;
    c.open = &v;
  } else {
    c.action_case = CAR_SERVER__VEHICLE_CONTROL_SUNROOF_OPEN_CLOSE_ACTION__ACTION_CLOSE;
    c.close = &v;
  }
  return pack_va(ACTION_CASE(VEHICLE_CONTROL_SUNROOF_OPEN_CLOSE_ACTION), &c, out, err);
}

static int b_homelink(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                      fq_err_t *err) {
  CarServer__LatLong ll;
  car_server__lat_long__init(&ll);
  ll.latitude = arg_float(ps, n, "lat");
  ll.longitude = arg_float(ps, n, "lon");
  CarServer__VehicleControlTriggerHomelinkAction c;
  car_server__vehicle_control_trigger_homelink_action__init(&c);
  c.location = &ll;
  return pack_va(ACTION_CASE(VEHICLE_CONTROL_TRIGGER_HOMELINK_ACTION), &c, out, err);
}

static int b_software_update(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                             fq_err_t *err) {
  CarServer__VehicleControlScheduleSoftwareUpdateAction c;
  car_server__vehicle_control_schedule_software_update_action__init(&c);
  c.offset_sec = arg_int(ps, n, "offset_sec");
  return pack_va(ACTION_CASE(VEHICLE_CONTROL_SCHEDULE_SOFTWARE_UPDATE_ACTION), &c, out, err);
}

/* The proxy's policy rule: *_weekdays_only wins over *_enabled; neither
 * leaves the message out (off).  Returns the oneof case, 0 for off. */
static int policy(const fq_pval_t *ps, size_t n, const char *enabled, const char *weekdays) {
  if (arg_bool(ps, n, weekdays)) return CAR_SERVER__PRECONDITIONING_TIMES__TIMES_WEEKDAYS;
  if (arg_bool(ps, n, enabled)) return CAR_SERVER__PRECONDITIONING_TIMES__TIMES_ALL_WEEK;
  return 0;
}

static int b_departure(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                       fq_err_t *err) {
  CarServer__Void v;
  car_server__void__init(&v);
  CarServer__PreconditioningTimes pre;
  car_server__preconditioning_times__init(&pre);
  CarServer__OffPeakChargingTimes off;
  car_server__off_peak_charging_times__init(&off);
  CarServer__ScheduledDepartureAction c;
  car_server__scheduled_departure_action__init(&c);
  /* enable = false is the proxy's ClearScheduledDeparture: that field alone. */
  if (arg_bool(ps, n, "enable")) {
    c.enabled = true;
    c.departure_time = arg_int(ps, n, "departure_time");
    c.off_peak_hours_end_time = arg_int(ps, n, "end_off_peak_time");
    /* Both oneofs number all_week 1, weekdays 2. */
    int pc = policy(ps, n, "preconditioning_enabled", "preconditioning_weekdays_only");
    if (pc) {
      pre.times_case = (CarServer__PreconditioningTimes__TimesCase)pc;
      pre.all_week = &v;
      c.preconditioning_times = &pre;
    }
    int oc = policy(ps, n, "off_peak_charging_enabled", "off_peak_charging_weekdays_only");
    if (oc) {
      off.times_case = (CarServer__OffPeakChargingTimes__TimesCase)oc;
      off.all_week = &v;
      c.off_peak_charging_times = &off;
    }
  }
  return pack_va(ACTION_CASE(SCHEDULED_DEPARTURE_ACTION), &c, out, err);
}

/* A schedule's id: the one sent, or now in unix seconds as the proxy does
 * (an id the car has not seen adds a schedule; a known one replaces it). */
static uint64_t schedule_id(const fq_pval_t *ps, size_t n) {
  int32_t id = arg_int(ps, n, "id");
  return id > 0 ? (uint64_t)id : (uint64_t)(fq_now_ms() / 1000);
}

static int days_mask(const fq_pval_t *ps, size_t n) {
  const fq_pval_t *p = fq_pval_get(ps, n, "days_of_week");
  int m = p && p->type == FQ_PT_STR ? fq_days_of_week_parse(p->v.s.p, p->v.s.n) : 0;
  return m < 0 ? 0 : m;
}

static int b_add_charge_schedule(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n,
                                 fq_buf_t *out, fq_err_t *err) {
  CarServer__ChargeSchedule c;
  car_server__charge_schedule__init(&c);
  c.id = schedule_id(ps, n);
  c.days_of_week = days_mask(ps, n);
  c.start_enabled = arg_bool(ps, n, "start_enabled");
  c.start_time = arg_int(ps, n, "start_time");
  c.end_enabled = arg_bool(ps, n, "end_enabled");
  c.end_time = arg_int(ps, n, "end_time");
  c.one_time = arg_bool(ps, n, "one_time");
  c.enabled = arg_bool(ps, n, "enabled");
  c.latitude = arg_float(ps, n, "lat");
  c.longitude = arg_float(ps, n, "lon");
  return pack_va(ACTION_CASE(ADD_CHARGE_SCHEDULE_ACTION), &c, out, err);
}

static int b_add_precondition_schedule(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n,
                                       fq_buf_t *out, fq_err_t *err) {
  CarServer__PreconditionSchedule c;
  car_server__precondition_schedule__init(&c);
  c.id = schedule_id(ps, n);
  c.days_of_week = days_mask(ps, n);
  c.precondition_time = arg_int(ps, n, "precondition_time");
  c.one_time = arg_bool(ps, n, "one_time");
  c.enabled = arg_bool(ps, n, "enabled");
  c.latitude = arg_float(ps, n, "lat");
  c.longitude = arg_float(ps, n, "lon");
  return pack_va(ACTION_CASE(ADD_PRECONDITION_SCHEDULE_ACTION), &c, out, err);
}

/* build_arg is the VehicleAction case: the two remove messages are both {id}. */
static int b_remove_schedule(const fq_cmd_t *cmd, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                             fq_err_t *err) {
  CarServer__RemoveChargeScheduleAction charge;
  CarServer__RemovePreconditionScheduleAction pre;
  void *msg;
  switch (cmd->build_arg) {
  case ACTION_CASE(REMOVE_CHARGE_SCHEDULE_ACTION):
    car_server__remove_charge_schedule_action__init(&charge);
    charge.id = (uint64_t)arg_int(ps, n, "id");
    msg = &charge;
    break;
  case ACTION_CASE(REMOVE_PRECONDITION_SCHEDULE_ACTION):
    car_server__remove_precondition_schedule_action__init(&pre);
    pre.id = (uint64_t)arg_int(ps, n, "id");
    msg = &pre;
    break;
  default: return bad_arg(cmd, err);
  }
  return pack_va(cmd->build_arg, msg, out, err);
}

/* The key of navigation_request's value the car reads the destination from. */
#define SHARE_TEXT "android.intent.extra.TEXT"

/* navigation_request's `value` must carry the destination as a non-empty
 * string under SHARE_TEXT: without it the car has nothing to navigate to,
 * and Tesla would still bill the request.  Other keys pass through (the
 * app sends a few). */
static int check_navigation(const fq_pval_t *ps, size_t n, fq_err_t *err) {
  const fq_pval_t *p = fq_pval_get(ps, n, "value");
  fq__mp_rd_t r;
  fq__mp_obj_t o;
  fq__mp_rd_init(&r, p->v.raw.p, p->v.raw.n);
  if (fq__mp_next(&r, &o, err) || o.kind != FQ__MP_MAP)
    return fq_errf(err, FQ_EBADPARAM, "params.value: not a map");
  for (uint32_t i = 0; i < o.v.count; i++) {
    fq__mp_obj_t k, v;
    if (fq__mp_next(&r, &k, err)) return fq_errf(err, FQ_EBADPARAM, "params.value: %s", err->msg);
    bool ours = k.kind == FQ__MP_STR && k.len == strlen(SHARE_TEXT) &&
                memcmp(k.p, SHARE_TEXT, k.len) == 0;
    if (!ours) {
      if (fq__mp_skip(&r, 2, 8, err)) return fq_errf(err, FQ_EBADPARAM, "params.value: %s", err->msg);
      continue;
    }
    if (fq__mp_next(&r, &v, err)) return fq_errf(err, FQ_EBADPARAM, "params.value: %s", err->msg);
    if (v.kind != FQ__MP_STR || v.len < 1 || v.len > 512)
      return fq_errf(err, FQ_EBADPARAM,
                     "params.value." SHARE_TEXT ": expected the destination as a string of "
                     "1..512 bytes");
    return 0;
  }
  return fq_errf(err, FQ_EBADPARAM,
                 "params.value." SHARE_TEXT ": required (the destination, an address or a "
                 "place name)");
}

static int check_valet(const fq_pval_t *ps, size_t n, fq_err_t *err) {
  if (arg_bool(ps, n, "on") && !fq_pval_get(ps, n, "password"))
    return fq_errf(err, FQ_EBADPARAM, "params.password: required when on is true");
  return 0;
}

/* ---- the table -------------------------------------------------------------
 * One designated initializer per command.  A vehicle command is signed with
 * its build_payload, or sent as REST with the JSON body of its params to a
 * car that does not take signed commands. */

#define PARAMS(a) .params = a, .nparams = sizeof(a) / sizeof((a)[0])
/* The REST path of a vehicle command is "command/<name>"; a wake_up or an
 * energy-site endpoint is named after itself. */
#define CMD(n) .name = n, .rest_suffix = "command/" n
#define ENDPOINT(n) .name = n, .rest_suffix = n

/* Scope sets. */
#define SC_VEH FQ_SCOPE_VEHICLE_CMDS
#define SC_CHARGE (FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_VEHICLE_CHARGING_CMDS)
#define SC_WAKE (FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_VEHICLE_CHARGING_CMDS | FQ_SCOPE_VEHICLE_DEVICE_DATA)
#define SC_ENERGY FQ_SCOPE_ENERGY_CMDS

#define VCSEC .dev = FQ_DEV_VEHICLE, .domain = FQ_DOMAIN_VCSEC, .build_json = fq_payload_build_json
#define INFO .dev = FQ_DEV_VEHICLE, .domain = FQ_DOMAIN_INFOTAINMENT, .build_json = fq_payload_build_json
/* Energy sites set values: all idempotent, all worth coalescing. */
#define SITE .dev = FQ_DEV_SITE, .domain = FQ_DOMAIN_NONE, .scopes = SC_ENERGY, .idempotent = true, \
             .coalesce = true, .build_json = fq_payload_build_json
#define SIGNED(fn) .build_payload = fn
#define SIGNED_ARG(fn, arg) .build_payload = fn, .build_arg = arg
/* Signed and nothing else: no REST endpoint takes it (see signed_only). */
#define SIGNED_ONLY .signed_only = true

/* Oneof cases and enum values, spelled out once here. */
#define RKE(x) VCSEC__RKEACTION__E__RKE_ACTION_##x
#define CHARGING(x) CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_##x
#define ACTION(x) CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_##x

static const fq_cmd_t cmds[] = {
    /* Vehicle security (VCSEC): reachable while infotainment sleeps. */
    {CMD("door_lock"), VCSEC, .scopes = SC_VEH, .idempotent = true, SIGNED_ARG(b_rke, RKE(LOCK))},
    {CMD("door_unlock"), VCSEC, .scopes = SC_VEH, .idempotent = true,
     SIGNED_ARG(b_rke, RKE(UNLOCK))},
    {CMD("remote_start_drive"), VCSEC, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_rke, RKE(REMOTE_DRIVE))},
    /* A trunk "move" toggles: sending it twice closes what the first opened. */
    {CMD("actuate_trunk"), VCSEC, PARAMS(p_actuate_trunk), .scopes = SC_VEH, .idempotent = false,
     SIGNED(b_trunk)},
    /* Issue 16: the non-toggling forms, named like Fleet API's open_tonneau /
     * close_tonneau (tesla-control: trunk-open, trunk-close, frunk-open;
     * Fleet API and the proxy have no name for them).  They ask for a
     * position (OPEN / CLOSE), not a move: sent twice, an open trunk stays
     * open.  Closing works only on cars with a powered liftgate; no car
     * closes its frunk remotely.  Having no REST name, they cannot reach a
     * car without the Vehicle Command Protocol (SIGNED_ONLY). */
    {CMD("open_trunk"), VCSEC, .scopes = SC_VEH, .idempotent = true,
     SIGNED_ONLY, SIGNED_ARG(b_closure, CLOSURE(0, OPEN))},
    {CMD("close_trunk"), VCSEC, .scopes = SC_VEH, .idempotent = true,
     SIGNED_ONLY, SIGNED_ARG(b_closure, CLOSURE(0, CLOSE))},
    {CMD("open_frunk"), VCSEC, .scopes = SC_VEH, .idempotent = true,
     SIGNED_ONLY, SIGNED_ARG(b_closure, CLOSURE(CLOSURE_FRONT, OPEN))},

    /* Infotainment: charging. */
    {CMD("charge_start"), INFO, .scopes = SC_CHARGE, .idempotent = true,
     SIGNED_ARG(b_charging, CHARGING(START))},
    {CMD("charge_stop"), INFO, .scopes = SC_CHARGE, .idempotent = true,
     SIGNED_ARG(b_charging, CHARGING(STOP))},
    {CMD("charge_standard"), INFO, .scopes = SC_CHARGE, .idempotent = true,
     SIGNED_ARG(b_charging, CHARGING(START_STANDARD))},
    {CMD("charge_max_range"), INFO, .scopes = SC_CHARGE, .idempotent = true,
     SIGNED_ARG(b_charging, CHARGING(START_MAX_RANGE))},
    {CMD("set_charge_limit"), INFO, PARAMS(p_set_charge_limit), .scopes = SC_CHARGE,
     .idempotent = true, .coalesce = true, SIGNED(b_charge_limit)},
    {CMD("set_charging_amps"), INFO, PARAMS(p_set_charging_amps), .scopes = SC_CHARGE,
     .idempotent = true, .coalesce = true, SIGNED(b_charging_amps)},
    {CMD("charge_port_door_open"), INFO, .scopes = SC_CHARGE, .idempotent = true,
     SIGNED_ARG(b_empty, ACTION(CHARGE_PORT_DOOR_OPEN))},
    {CMD("charge_port_door_close"), INFO, .scopes = SC_CHARGE, .idempotent = true,
     SIGNED_ARG(b_empty, ACTION(CHARGE_PORT_DOOR_CLOSE))},
    {CMD("set_scheduled_charging"), INFO, PARAMS(p_scheduled_charging), .scopes = SC_CHARGE,
     .idempotent = true, .coalesce = true, SIGNED(b_scheduled_charging)},

    /* Infotainment: climate. */
    {CMD("auto_conditioning_start"), INFO, .scopes = SC_VEH, .idempotent = true,
     SIGNED_ARG(b_hvac_auto, 1)},
    {CMD("auto_conditioning_stop"), INFO, .scopes = SC_VEH, .idempotent = true,
     SIGNED_ARG(b_hvac_auto, 0)},
    {CMD("set_temps"), INFO, PARAMS(p_set_temps), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, SIGNED(b_set_temps)},
    {CMD("set_preconditioning_max"), INFO, PARAMS(p_precondition_max), .scopes = SC_VEH,
     .idempotent = true, .coalesce = true, SIGNED(b_precondition_max)},
    {CMD("set_cabin_overheat_protection"), INFO, PARAMS(p_cabin_overheat), .scopes = SC_VEH,
     .idempotent = true, .coalesce = true, SIGNED(b_cabin_overheat)},

    /* Infotainment: vehicle controls. */
    {CMD("set_sentry_mode"), INFO, PARAMS(p_on), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, SIGNED(b_sentry)},
    /* Honking or flashing twice is visible to people around the car. */
    {CMD("honk_horn"), INFO, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_empty, ACTION(VEHICLE_CONTROL_HONK_HORN_ACTION))},
    {CMD("flash_lights"), INFO, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_empty, ACTION(VEHICLE_CONTROL_FLASH_LIGHTS_ACTION))},
    {CMD("window_control"), INFO, PARAMS(p_window_control), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, SIGNED(b_window)},
    {CMD("set_vehicle_name"), INFO, PARAMS(p_vehicle_name), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, SIGNED(b_vehicle_name)},

    /* Issue 16: schedules (infotainment, charging). */
    /* Without an `id` a resend would add the schedule twice. */
    {CMD("add_charge_schedule"), INFO, PARAMS(p_add_charge_schedule), .scopes = SC_CHARGE,
     .idempotent = false, SIGNED(b_add_charge_schedule)},
    {CMD("remove_charge_schedule"), INFO, PARAMS(p_schedule_id), .scopes = SC_CHARGE,
     .idempotent = true, SIGNED_ARG(b_remove_schedule, ACTION_CASE(REMOVE_CHARGE_SCHEDULE_ACTION))},
    {CMD("add_precondition_schedule"), INFO, PARAMS(p_add_precondition_schedule), .scopes = SC_VEH,
     .idempotent = false, SIGNED(b_add_precondition_schedule)},
    {CMD("remove_precondition_schedule"), INFO, PARAMS(p_schedule_id), .scopes = SC_VEH,
     .idempotent = true,
     SIGNED_ARG(b_remove_schedule, ACTION_CASE(REMOVE_PRECONDITION_SCHEDULE_ACTION))},
    {CMD("set_scheduled_departure"), INFO, PARAMS(p_scheduled_departure), .scopes = SC_CHARGE,
     .idempotent = true, .coalesce = true, SIGNED(b_departure)},

    /* Issue 16: climate. */
    {CMD("set_climate_keeper_mode"), INFO, PARAMS(p_climate_keeper), .scopes = SC_VEH,
     .idempotent = true, .coalesce = true, SIGNED(b_climate_keeper)},
    {CMD("set_bioweapon_mode"), INFO, PARAMS(p_bioweapon), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, SIGNED(b_bioweapon)},
    {CMD("set_cop_temp"), INFO, PARAMS(p_cop_temp), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, SIGNED(b_cop_temp)},
    {CMD("remote_seat_heater_request"), INFO, PARAMS(p_seat_heater), .scopes = SC_VEH,
     .idempotent = true, SIGNED(b_seat_heater)},
    {CMD("remote_seat_cooler_request"), INFO, PARAMS(p_seat_cooler), .scopes = SC_VEH,
     .idempotent = true, SIGNED(b_seat_cooler)},
    {CMD("remote_steering_wheel_heater_request"), INFO, PARAMS(p_on), .scopes = SC_VEH,
     .idempotent = true, .coalesce = true, SIGNED(b_wheel_heater)},
    {CMD("remote_auto_seat_climate_request"), INFO, PARAMS(p_auto_seat), .scopes = SC_VEH,
     .idempotent = true, SIGNED(b_auto_seat)},

    /* Issue 16: security. */
    {CMD("set_valet_mode"), INFO, PARAMS(p_valet), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, .check = check_valet,
     SIGNED_ARG(b_on_password, ACTION_CASE(VEHICLE_CONTROL_SET_VALET_MODE_ACTION))},
    {CMD("reset_valet_pin"), INFO, .scopes = SC_VEH, .idempotent = true,
     SIGNED_ARG(b_void, ACTION_CASE(VEHICLE_CONTROL_RESET_VALET_PIN_ACTION))},
    {CMD("set_pin_to_drive"), INFO, PARAMS(p_on_password), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true,
     SIGNED_ARG(b_on_password, ACTION_CASE(VEHICLE_CONTROL_SET_PIN_TO_DRIVE_ACTION))},
    {CMD("speed_limit_activate"), INFO, PARAMS(p_pin), .scopes = SC_VEH, .idempotent = true,
     SIGNED_ARG(b_speed_limit, 1)},
    {CMD("speed_limit_deactivate"), INFO, PARAMS(p_pin), .scopes = SC_VEH, .idempotent = true,
     SIGNED_ARG(b_speed_limit, 0)},
    {CMD("speed_limit_set_limit"), INFO, PARAMS(p_speed_limit), .scopes = SC_VEH,
     .idempotent = true, .coalesce = true, SIGNED(b_speed_limit_set)},
    {CMD("guest_mode"), INFO, PARAMS(p_enable), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, SIGNED(b_guest_mode)},

    /* Issue 16: openings, homelink, updates. */
    {CMD("sun_roof_control"), INFO, PARAMS(p_sun_roof), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, SIGNED(b_sun_roof)},
    /* Each trigger moves the garage door: a second one reverses it. */
    {CMD("trigger_homelink"), INFO, PARAMS(p_homelink), .scopes = SC_VEH, .idempotent = false,
     SIGNED(b_homelink)},
    {CMD("schedule_software_update"), INFO, PARAMS(p_software_update), .scopes = SC_VEH,
     .idempotent = true, .coalesce = true, SIGNED(b_software_update)},
    {CMD("cancel_software_update"), INFO, .scopes = SC_VEH, .idempotent = true,
     SIGNED_ARG(b_void, ACTION_CASE(VEHICLE_CONTROL_CANCEL_SOFTWARE_UPDATE_ACTION))},

    /* Issue 16: media.  Toggles and steps repeat their effect when sent twice. */
    {CMD("media_toggle_playback"), INFO, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_void, ACTION_CASE(MEDIA_PLAY_ACTION))},
    {CMD("media_next_track"), INFO, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_void, ACTION_CASE(MEDIA_NEXT_TRACK))},
    {CMD("media_prev_track"), INFO, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_void, ACTION_CASE(MEDIA_PREVIOUS_TRACK))},
    {CMD("media_next_fav"), INFO, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_void, ACTION_CASE(MEDIA_NEXT_FAVORITE))},
    {CMD("media_prev_fav"), INFO, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_void, ACTION_CASE(MEDIA_PREVIOUS_FAVORITE))},
    {CMD("media_volume_up"), INFO, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_volume, 1)},
    {CMD("media_volume_down"), INFO, .scopes = SC_VEH, .idempotent = false,
     SIGNED_ARG(b_volume, -1)},
    {CMD("adjust_volume"), INFO, PARAMS(p_volume), .scopes = SC_VEH, .idempotent = true,
     .coalesce = true, SIGNED(b_volume)},

    /* Not signed: a plain REST call that only wakes the car. */
    {ENDPOINT("wake_up"), .dev = FQ_DEV_VEHICLE, .domain = FQ_DOMAIN_NONE, .scopes = SC_WAKE,
     .idempotent = true, .wake = true},
    /* Not signed either (Fleet API shares it with the car through Tesla's
     * servers; the official proxy forwards it as REST): sent as REST to
     * every car, woken first like any command.  The newest destination is
     * the one that counts. */
    {CMD("navigation_request"), .dev = FQ_DEV_VEHICLE, .domain = FQ_DOMAIN_NONE,
     PARAMS(p_navigation), .scopes = SC_VEH, .idempotent = true, .coalesce = true,
     .check = check_navigation, .build_json = fq_payload_build_json},

    /* Energy sites: REST endpoints named after what they set. */
    {ENDPOINT("backup"), SITE, PARAMS(p_backup)},
    {ENDPOINT("operation"), SITE, PARAMS(p_operation)},
    {ENDPOINT("storm_mode"), SITE, PARAMS(p_storm_mode)},
    {ENDPOINT("grid_import_export"), SITE, PARAMS(p_grid_import_export), .need_any_param = true},
    {ENDPOINT("off_grid_vehicle_charging_reserve"), SITE, PARAMS(p_off_grid_reserve)},
    {ENDPOINT("time_of_use_settings"), SITE, PARAMS(p_tou_settings)},
};

#define NCMDS (sizeof cmds / sizeof cmds[0])

/* A signed payload that is no user command: fq_cmd_find() never returns it,
 * fq_payload_build_named("ping") builds it (tests, tools, the car side's
 * decoder round trip). */
static const fq_cmd_t ping_cmd = {.name = "ping", .dev = FQ_DEV_VEHICLE,
                                  .domain = FQ_DOMAIN_INFOTAINMENT, PARAMS(p_ping),
                                  SIGNED(b_ping)};

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

const fq_cmd_t *fq__cmd_signed(const char *name) {
  if (strcmp(name, ping_cmd.name) == 0) return &ping_cmd;
  for (size_t i = 0; i < NCMDS; i++)
    if (cmds[i].build_payload && strcmp(cmds[i].name, name) == 0) return &cmds[i];
  return NULL;
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
    /* Valid UTF-8 may hold U+0000, but a protobuf-c string ends at it: the
     * car would get a shorter text than the one accepted here. */
    const char *nul = memchr(pv->v.s.p, 0, pv->v.s.n);
    if (nul)
      return fq_errf(err, FQ_EBADPARAM, "params.%s: NUL at byte %zu", sp->name,
                     (size_t)(nul - pv->v.s.p));
    if (sp->check) {
      const char *why = sp->check(pv->v.s.p, pv->v.s.n);
      if (why) return fq_errf(err, FQ_EBADPARAM, "params.%s: %s", sp->name, why);
    }
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
  if (cmd->check) {
    int rc = cmd->check(params, n, err);
    if (rc) return rc;
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

/* ---- days of the week ----------------------------------------------------- */

int fq_days_of_week_parse(const char *s, size_t n) {
  /* The names the official proxy knows (dayNamesBitMask), upper-cased. */
  static const struct {
    const char *name;
    int mask;
  } days[] = {
      {"SUN", 1},        {"SUNDAY", 1},    {"MON", 2},       {"MONDAY", 2},  {"TUES", 4},
      {"TUESDAY", 4},    {"WED", 8},       {"WEDNESDAY", 8}, {"THURS", 16},  {"THURSDAY", 16},
      {"FRI", 32},       {"FRIDAY", 32},   {"SAT", 64},      {"SATURDAY", 64}, {"ALL", 127},
      {"WEEKDAYS", 62},
  };
  int mask = 0;
  size_t i = 0;
  for (;;) {
    while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
    size_t start = i;
    while (i < n && s[i] != ',') i++;
    size_t end = i;
    while (end > start && (s[end - 1] == ' ' || s[end - 1] == '\t')) end--;
    int found = 0;
    for (size_t d = 0; d < sizeof days / sizeof days[0] && !found; d++) {
      size_t len = strlen(days[d].name);
      if (len != end - start) continue;
      size_t k = 0;
      while (k < len && (s[start + k] & ~0x20) == days[d].name[k]) k++;
      if (k == len) found = days[d].mask;
    }
    if (!found) return -1;
    mask |= found;
    if (i >= n) return mask;
    i++; /* the comma */
  }
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

/* ---------------------------------------------------------------------- */
/* Car refusals                                                            */

/* The refusals that mean "already as asked".  A NULL command matches every
 * command.  `is_charging` is success only for charge_start: refusing
 * charge_port_door_close because the car charges is a real refusal.
 * `complete` (the battery is at its limit) answers charge_start: charging
 * to the limit is what was asked and it is reached.  `disconnected` (no
 * cable) is not here: nothing the user asked for happened. */
static const struct {
  const char *cmd, *reason;
} refusal_done[] = {
    {NULL, "already_set"},
    {"charge_start", "is_charging"},
    {"charge_start", "complete"},
    {"charge_stop", "not_charging"},
};

fq_refusal_t fq_cmd_refusal(const char *cmd, const char *reason) {
  if (!cmd || !reason) return FQ_REFUSAL_FAILED;
  for (size_t i = 0; i < sizeof refusal_done / sizeof refusal_done[0]; i++)
    if (strcmp(refusal_done[i].reason, reason) == 0 &&
        (!refusal_done[i].cmd || strcmp(refusal_done[i].cmd, cmd) == 0))
      return FQ_REFUSAL_DONE;
  return FQ_REFUSAL_FAILED;
}

int fq_cmd_refusal_reason(char *out, size_t cap, const char *reason) {
  return snprintf(out, cap, "vehicle could not execute the command: %s",
                  reason && *reason ? reason : "no reason given");
}

/* ---------------------------------------------------------------------- */
/* Signed payloads by name (declared in payload.h)                         */

int fq_payload_domain(const char *name) {
  const fq_cmd_t *cmd = fq__cmd_signed(name);
  return cmd ? cmd->domain : 0;
}

int fq_payload_build(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n, fq_buf_t *out,
                     fq_err_t *err) {
  if (!cmd->build_payload)
    return fq_errf(err, FQ_EUNKCMD, "%s: no signed payload for this command", cmd->name);
  size_t before = out->len;
  int rc = cmd->build_payload(cmd, params, n, out, err);
  if (rc) out->len = before;
  return rc;
}

int fq_payload_build_named(const char *name, const fq_pval_t *params, size_t n, int *domain,
                           fq_buf_t *out, fq_err_t *err) {
  const fq_cmd_t *cmd = fq__cmd_signed(name);
  if (!cmd) return fq_errf(err, FQ_EUNKCMD, "%s: no signed payload for this command", name);
  if (domain) *domain = cmd->domain;
  int rc = fq_cmd_validate(cmd, params, n, err);
  if (rc) return rc;
  return fq_payload_build(cmd, params, n, out, err);
}
