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

    /* Not signed: a plain REST call that only wakes the car. */
    {ENDPOINT("wake_up"), .dev = FQ_DEV_VEHICLE, .domain = FQ_DOMAIN_NONE, .scopes = SC_WAKE,
     .idempotent = true},

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
