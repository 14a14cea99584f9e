/*
 * Payload builders (see payload.h): one small function per vehicle
 * command filling the protobuf-c structs generated from the proto/ files, and
 * one generic JSON body builder for REST endpoints.
 *
 * The structs live on the stack and are packed straight into the caller's
 * buffer: no allocation beyond the buffer's growth.  proto3 semantics come
 * from protobuf-c: zero scalars are left out, oneof members are written
 * even when empty (set_sentry_mode off is 1203f20100).
 */
#include "payload.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <msgpack.h>

#include "car_server.pb-c.h"
#include "vcsec.pb-c.h"

#define NAME_MAX_LEN 64

/* ---------------------------------------------------------------------- */
/* Parameter access                                                        */

static const fq_pval_t *pget(const fq_pval_t *ps, size_t n, const char *name) {
  size_t l = strlen(name);
  for (size_t i = 0; i < n; i++)
    if (ps[i].name_len == l && memcmp(ps[i].name, name, l) == 0) return &ps[i];
  return NULL;
}

static int need(const fq_pval_t *ps, size_t n, const char *name, fq_ptype_t t,
                const fq_pval_t **out, bool required, fq_err_t *err) {
  const fq_pval_t *p = pget(ps, n, name);
  *out = NULL;
  if (!p) return required ? fq_errf(err, FQ_EBADPARAM, "params.%s: required", name) : 0;
  bool ok = p->type == t || (t == FQ_PT_FLOAT && p->type == FQ_PT_INT);
  if (!ok) return fq_errf(err, FQ_EBADPARAM, "params.%s: wrong type", name);
  *out = p;
  return 0;
}

static int get_bool(const fq_pval_t *ps, size_t n, const char *name, bool required, bool *v,
                    fq_err_t *err) {
  const fq_pval_t *p;
  int rc = need(ps, n, name, FQ_PT_BOOL, &p, required, err);
  *v = p ? p->v.b : false;
  return rc;
}

static int get_int(const fq_pval_t *ps, size_t n, const char *name, bool required, int64_t lo,
                   int64_t hi, int32_t *v, fq_err_t *err) {
  const fq_pval_t *p;
  int rc = need(ps, n, name, FQ_PT_INT, &p, required, err);
  *v = 0;
  if (rc || !p) return rc;
  if (p->v.i < lo || p->v.i > hi)
    return fq_errf(err, FQ_EBADPARAM, "params.%s: %lld is out of range %lld..%lld", name,
                   (long long)p->v.i, (long long)lo, (long long)hi);
  *v = (int32_t)p->v.i;
  return 0;
}

static int get_float(const fq_pval_t *ps, size_t n, const char *name, bool required, double lo,
                     double hi, float *v, fq_err_t *err) {
  const fq_pval_t *p;
  int rc = need(ps, n, name, FQ_PT_FLOAT, &p, required, err);
  *v = 0;
  if (rc || !p) return rc;
  double d = p->type == FQ_PT_INT ? (double)p->v.i : p->v.f;
  if (!isfinite(d) || d < lo || d > hi)
    return fq_errf(err, FQ_EBADPARAM, "params.%s: %g is out of range %g..%g", name, d, lo, hi);
  *v = (float)d;
  return 0;
}

/* A string parameter that must be one of two choices; returns 0 or 1. */
static int get_choice(const fq_pval_t *ps, size_t n, const char *name, bool required,
                      const char *a, const char *b, int dflt, int *which, fq_err_t *err) {
  const fq_pval_t *p;
  int rc = need(ps, n, name, FQ_PT_STR, &p, required, err);
  *which = dflt;
  if (rc || !p) return rc;
  if (p->v.s.n == strlen(a) && memcmp(p->v.s.p, a, p->v.s.n) == 0) *which = 0;
  else if (p->v.s.n == strlen(b) && memcmp(p->v.s.p, b, p->v.s.n) == 0) *which = 1;
  else return fq_errf(err, FQ_EBADPARAM, "params.%s: must be \"%s\" or \"%s\"", name, a, b);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Packing                                                                 */

static int pack(const ProtobufCMessage *m, fq_buf_t *out) {
  size_t n = protobuf_c_message_get_packed_size(m);
  int rc = fq_buf_reserve(out, n);
  if (rc) return rc;
  out->len += protobuf_c_message_pack(m, out->data + out->len);
  return 0;
}

/* Wrap a filled VehicleAction into an Action and pack it. */
static int pack_action(CarServer__VehicleAction *va, fq_buf_t *out) {
  CarServer__Action a;
  car_server__action__init(&a);
  a.vehicleaction = va;
  return pack(&a.base, out);
}

static int pack_rke(VCSEC__RKEActionE act, fq_buf_t *out) {
  VCSEC__UnsignedMessage u;
  vcsec__unsigned_message__init(&u);
  u.sub_message_case = VCSEC__UNSIGNED_MESSAGE__SUB_MESSAGE_RKEACTION;
  u.rkeaction = act;
  return pack(&u.base, out);
}

typedef int (*build_fn)(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                        fq_err_t *err);

static int b_rke(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out, fq_err_t *err) {
  (void)ps, (void)n, (void)err;
  if (strcmp(name, "door_lock") == 0) return pack_rke(VCSEC__RKEACTION__E__RKE_ACTION_LOCK, out);
  if (strcmp(name, "door_unlock") == 0) return pack_rke(VCSEC__RKEACTION__E__RKE_ACTION_UNLOCK, out);
  return pack_rke(VCSEC__RKEACTION__E__RKE_ACTION_REMOTE_DRIVE, out);
}

static int b_trunk(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out, fq_err_t *err) {
  (void)name;
  int which;
  /* The official proxy moves the rear trunk when which_trunk is absent. */
  int rc = get_choice(ps, n, "which_trunk", false, "rear", "front", 0, &which, err);
  if (rc) return rc;
  VCSEC__ClosureMoveRequest c;
  vcsec__closure_move_request__init(&c);
  if (which == 0) c.reartrunk = VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_MOVE;
  else c.fronttrunk = VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_MOVE;
  VCSEC__UnsignedMessage u;
  vcsec__unsigned_message__init(&u);
  u.sub_message_case = VCSEC__UNSIGNED_MESSAGE__SUB_MESSAGE_CLOSURE_MOVE_REQUEST;
  u.closuremoverequest = &c;
  return pack(&u.base, out);
}

static int b_charge_startstop(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                              fq_err_t *err) {
  (void)ps, (void)n, (void)err;
  CarServer__Void v;
  car_server__void__init(&v);
  CarServer__ChargingStartStopAction c;
  car_server__charging_start_stop_action__init(&c);
  if (strcmp(name, "charge_start") == 0) {
    c.charging_action_case = CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_START;
    c.start = &v;
  } else if (strcmp(name, "charge_stop") == 0) {
    c.charging_action_case = CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_STOP;
    c.stop = &v;
  } else if (strcmp(name, "charge_standard") == 0) {
    c.charging_action_case = CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_START_STANDARD;
    c.start_standard = &v;
  } else {
    c.charging_action_case = CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_START_MAX_RANGE;
    c.start_max_range = &v;
  }
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGING_START_STOP_ACTION;
  va.chargingstartstopaction = &c;
  return pack_action(&va, out);
}

static int b_charge_limit(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                          fq_err_t *err) {
  (void)name;
  CarServer__ChargingSetLimitAction c;
  car_server__charging_set_limit_action__init(&c);
  int rc = get_int(ps, n, "percent", true, 50, 100, &c.percent, err);
  if (rc) return rc;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGING_SET_LIMIT_ACTION;
  va.chargingsetlimitaction = &c;
  return pack_action(&va, out);
}

static int b_charging_amps(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                           fq_err_t *err) {
  (void)name;
  CarServer__SetChargingAmpsAction c;
  car_server__set_charging_amps_action__init(&c);
  int rc = get_int(ps, n, "charging_amps", true, 0, 80, &c.charging_amps, err);
  if (rc) return rc;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SET_CHARGING_AMPS_ACTION;
  va.setchargingampsaction = &c;
  return pack_action(&va, out);
}

static int b_hvac_auto(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                       fq_err_t *err) {
  (void)ps, (void)n, (void)err;
  CarServer__HvacAutoAction c;
  car_server__hvac_auto_action__init(&c);
  c.power_on = strcmp(name, "auto_conditioning_start") == 0;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_HVAC_AUTO_ACTION;
  va.hvacautoaction = &c;
  return pack_action(&va, out);
}

static int b_set_temps(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                       fq_err_t *err) {
  (void)name;
  CarServer__HvacTemperatureAdjustmentAction c;
  car_server__hvac_temperature_adjustment_action__init(&c);
  int rc;
  /* Both are required: the official proxy sends 0 °C for a missing one. */
  if ((rc = get_float(ps, n, "driver_temp", true, 15, 28, &c.driver_temp_celsius, err)) ||
      (rc = get_float(ps, n, "passenger_temp", true, 15, 28, &c.passenger_temp_celsius, err)))
    return rc;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case =
      CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_HVAC_TEMPERATURE_ADJUSTMENT_ACTION;
  va.hvactemperatureadjustmentaction = &c;
  return pack_action(&va, out);
}

static int b_precondition_max(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                              fq_err_t *err) {
  (void)name;
  CarServer__HvacSetPreconditioningMaxAction c;
  car_server__hvac_set_preconditioning_max_action__init(&c);
  bool on, mo;
  int rc;
  if ((rc = get_bool(ps, n, "on", true, &on, err)) ||
      (rc = get_bool(ps, n, "manual_override", false, &mo, err)))
    return rc;
  c.on = on;
  c.manual_override = mo;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case =
      CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_HVAC_SET_PRECONDITIONING_MAX_ACTION;
  va.hvacsetpreconditioningmaxaction = &c;
  return pack_action(&va, out);
}

static int b_cabin_overheat(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                            fq_err_t *err) {
  (void)name;
  CarServer__SetCabinOverheatProtectionAction c;
  car_server__set_cabin_overheat_protection_action__init(&c);
  bool on, fan;
  int rc;
  if ((rc = get_bool(ps, n, "on", true, &on, err)) ||
      (rc = get_bool(ps, n, "fan_only", false, &fan, err)))
    return rc;
  c.on = on;
  c.fan_only = fan;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case =
      CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SET_CABIN_OVERHEAT_PROTECTION_ACTION;
  va.setcabinoverheatprotectionaction = &c;
  return pack_action(&va, out);
}

static int b_sentry(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                    fq_err_t *err) {
  (void)name;
  CarServer__VehicleControlSetSentryModeAction c;
  car_server__vehicle_control_set_sentry_mode_action__init(&c);
  bool on;
  int rc = get_bool(ps, n, "on", true, &on, err);
  if (rc) return rc;
  c.on = on;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case =
      CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_SET_SENTRY_MODE_ACTION;
  va.vehiclecontrolsetsentrymodeaction = &c;
  return pack_action(&va, out);
}

/* The parameterless actions are empty messages; their case alone says
 * what to do. */
static int b_empty(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                   fq_err_t *err) {
  (void)ps, (void)n, (void)err;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  CarServer__VehicleControlHonkHornAction honk;
  CarServer__VehicleControlFlashLightsAction flash;
  CarServer__ChargePortDoorOpen open;
  CarServer__ChargePortDoorClose close;
  if (strcmp(name, "honk_horn") == 0) {
    car_server__vehicle_control_honk_horn_action__init(&honk);
    va.vehicle_action_msg_case =
        CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_HONK_HORN_ACTION;
    va.vehiclecontrolhonkhornaction = &honk;
  } else if (strcmp(name, "flash_lights") == 0) {
    car_server__vehicle_control_flash_lights_action__init(&flash);
    va.vehicle_action_msg_case =
        CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_FLASH_LIGHTS_ACTION;
    va.vehiclecontrolflashlightsaction = &flash;
  } else if (strcmp(name, "charge_port_door_open") == 0) {
    car_server__charge_port_door_open__init(&open);
    va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGE_PORT_DOOR_OPEN;
    va.chargeportdooropen = &open;
  } else {
    car_server__charge_port_door_close__init(&close);
    va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGE_PORT_DOOR_CLOSE;
    va.chargeportdoorclose = &close;
  }
  return pack_action(&va, out);
}

static int b_window(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                    fq_err_t *err) {
  (void)name;
  int which;
  /* lat/lon may be sent (older docs ask for them); cars on the protocol
   * ignore them, and so does the payload. */
  int rc = get_choice(ps, n, "command", true, "vent", "close", 0, &which, err);
  if (rc) return rc;
  CarServer__Void v;
  car_server__void__init(&v);
  CarServer__VehicleControlWindowAction c;
  car_server__vehicle_control_window_action__init(&c);
  if (which == 0) {
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
  return pack_action(&va, out);
}

static int b_scheduled_charging(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                                fq_err_t *err) {
  (void)name;
  CarServer__ScheduledChargingAction c;
  car_server__scheduled_charging_action__init(&c);
  bool en;
  int rc;
  if ((rc = get_bool(ps, n, "enable", true, &en, err)) ||
      (rc = get_int(ps, n, "time", false, 0, 1439, &c.charging_time, err)))
    return rc;
  c.enabled = en;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SCHEDULED_CHARGING_ACTION;
  va.scheduledchargingaction = &c;
  return pack_action(&va, out);
}

static int b_vehicle_name(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out,
                          fq_err_t *err) {
  (void)name;
  const fq_pval_t *p;
  char buf[NAME_MAX_LEN + 1];
  int rc = need(ps, n, "vehicle_name", FQ_PT_STR, &p, true, err);
  if (rc) return rc;
  if (p->v.s.n == 0 || p->v.s.n > NAME_MAX_LEN || memchr(p->v.s.p, 0, p->v.s.n))
    return fq_errf(err, FQ_EBADPARAM, "params.vehicle_name: length %zu is out of range 1..%d bytes",
                   p->v.s.n, NAME_MAX_LEN);
  memcpy(buf, p->v.s.p, p->v.s.n);
  buf[p->v.s.n] = 0;
  CarServer__SetVehicleNameAction c;
  car_server__set_vehicle_name_action__init(&c);
  c.vehiclename = buf;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SET_VEHICLE_NAME_ACTION;
  va.setvehiclenameaction = &c;
  return pack_action(&va, out);
}

static int b_ping(const char *name, const fq_pval_t *ps, size_t n, fq_buf_t *out, fq_err_t *err) {
  (void)name;
  CarServer__Ping c;
  car_server__ping__init(&c);
  int rc = get_int(ps, n, "ping_id", false, INT32_MIN, INT32_MAX, &c.ping_id, err);
  if (rc) return rc;
  CarServer__VehicleAction va;
  car_server__vehicle_action__init(&va);
  va.vehicle_action_msg_case = CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_PING;
  va.ping = &c;
  return pack_action(&va, out);
}

static const struct {
  const char *name;
  int domain;
  build_fn fn;
} builders[] = {
    {"door_lock", FQ_DOMAIN_VCSEC, b_rke},
    {"door_unlock", FQ_DOMAIN_VCSEC, b_rke},
    {"remote_start_drive", FQ_DOMAIN_VCSEC, b_rke},
    {"actuate_trunk", FQ_DOMAIN_VCSEC, b_trunk},
    {"charge_start", FQ_DOMAIN_INFOTAINMENT, b_charge_startstop},
    {"charge_stop", FQ_DOMAIN_INFOTAINMENT, b_charge_startstop},
    {"charge_standard", FQ_DOMAIN_INFOTAINMENT, b_charge_startstop},
    {"charge_max_range", FQ_DOMAIN_INFOTAINMENT, b_charge_startstop},
    {"set_charge_limit", FQ_DOMAIN_INFOTAINMENT, b_charge_limit},
    {"set_charging_amps", FQ_DOMAIN_INFOTAINMENT, b_charging_amps},
    {"auto_conditioning_start", FQ_DOMAIN_INFOTAINMENT, b_hvac_auto},
    {"auto_conditioning_stop", FQ_DOMAIN_INFOTAINMENT, b_hvac_auto},
    {"set_temps", FQ_DOMAIN_INFOTAINMENT, b_set_temps},
    {"set_preconditioning_max", FQ_DOMAIN_INFOTAINMENT, b_precondition_max},
    {"set_cabin_overheat_protection", FQ_DOMAIN_INFOTAINMENT, b_cabin_overheat},
    {"set_sentry_mode", FQ_DOMAIN_INFOTAINMENT, b_sentry},
    {"honk_horn", FQ_DOMAIN_INFOTAINMENT, b_empty},
    {"flash_lights", FQ_DOMAIN_INFOTAINMENT, b_empty},
    {"window_control", FQ_DOMAIN_INFOTAINMENT, b_window},
    {"charge_port_door_open", FQ_DOMAIN_INFOTAINMENT, b_empty},
    {"charge_port_door_close", FQ_DOMAIN_INFOTAINMENT, b_empty},
    {"set_scheduled_charging", FQ_DOMAIN_INFOTAINMENT, b_scheduled_charging},
    {"set_vehicle_name", FQ_DOMAIN_INFOTAINMENT, b_vehicle_name},
    {"ping", FQ_DOMAIN_INFOTAINMENT, b_ping},
};

int fq_payload_domain(const char *name) {
  for (size_t i = 0; i < sizeof builders / sizeof builders[0]; i++)
    if (strcmp(builders[i].name, name) == 0) return builders[i].domain;
  return 0;
}

int fq_payload_build_named(const char *name, const fq_pval_t *params, size_t n, int *domain,
                           fq_buf_t *out, fq_err_t *err) {
  for (size_t i = 0; i < sizeof builders / sizeof builders[0]; i++) {
    if (strcmp(builders[i].name, name) != 0) continue;
    if (domain) *domain = builders[i].domain;
    size_t before = out->len;
    int rc = builders[i].fn(name, params, n, out, err);
    if (rc) out->len = before;
    return rc;
  }
  return fq_errf(err, FQ_EUNKCMD, "%s: no signed payload for this command", name);
}

int fq_payload_build(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n, fq_buf_t *out,
                     fq_err_t *err) {
  return fq_payload_build_named(cmd->name, params, n, NULL, out, err);
}

/* ---------------------------------------------------------------------- */
/* JSON bodies                                                             */

#define MP_MAX_DEPTH 16

static json_t *mp_to_json(const msgpack_object *o, int depth, fq_err_t *err) {
  if (depth > MP_MAX_DEPTH) {
    fq_errf(err, FQ_EBADPARAM, "map nested deeper than %d levels", MP_MAX_DEPTH);
    return NULL;
  }
  switch (o->type) {
  case MSGPACK_OBJECT_NIL: return json_null();
  case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    if (o->via.u64 > (uint64_t)INT64_MAX) return json_real((double)o->via.u64);
    return json_integer((json_int_t)o->via.u64);
  case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    if (!isfinite(o->via.f64)) break;
    return json_real(o->via.f64);
  case MSGPACK_OBJECT_STR: return json_stringn(o->via.str.ptr, o->via.str.size);
  case MSGPACK_OBJECT_ARRAY: {
    json_t *a = json_array();
    for (uint32_t i = 0; a && i < o->via.array.size; i++) {
      json_t *v = mp_to_json(&o->via.array.ptr[i], depth + 1, err);
      if (!v || json_array_append_new(a, v)) {
        json_decref(a);
        return NULL;
      }
    }
    return a;
  }
  case MSGPACK_OBJECT_MAP: {
    json_t *m = json_object();
    for (uint32_t i = 0; m && i < o->via.map.size; i++) {
      const msgpack_object_kv *kv = &o->via.map.ptr[i];
      if (kv->key.type != MSGPACK_OBJECT_STR) {
        fq_errf(err, FQ_EBADPARAM, "map keys must be strings to become JSON");
        json_decref(m);
        return NULL;
      }
      json_t *v = mp_to_json(&kv->val, depth + 1, err);
      if (!v || json_object_setn_new(m, kv->key.via.str.ptr, kv->key.via.str.size, v)) {
        json_decref(m);
        return NULL;
      }
    }
    return m;
  }
  default: break;
  }
  fq_errf(err, FQ_EBADPARAM, "map holds a value JSON cannot carry (binary, NaN or extension)");
  return NULL;
}

static json_t *map_param_to_json(const fq_pval_t *p, fq_err_t *err) {
  msgpack_unpacked u;
  size_t off = 0;
  json_t *j = NULL;
  msgpack_unpacked_init(&u);
  msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)p->v.raw.p, p->v.raw.n, &off);
  if (r != MSGPACK_UNPACK_SUCCESS || off != p->v.raw.n || u.data.type != MSGPACK_OBJECT_MAP) {
    fq_errf(err, FQ_EBADPARAM, "params.%.*s: not a single msgpack map", (int)p->name_len, p->name);
  } else {
    j = mp_to_json(&u.data, 0, err);
    if (!j && err && err->code == 0)
      fq_errf(err, FQ_EBADPARAM, "params.%.*s: cannot convert to JSON", (int)p->name_len, p->name);
  }
  msgpack_unpacked_destroy(&u);
  return j;
}

int fq_payload_build_json(const fq_cmd_t *cmd, const fq_pval_t *params, size_t n, fq_buf_t *out,
                          fq_err_t *err) {
  (void)cmd;
  int rc = 0;
  char *text = NULL;
  json_t *o = json_object();
  if (!o) return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const fq_pval_t *p = &params[i];
    json_t *v = NULL;
    switch (p->type) {
    case FQ_PT_BOOL: v = json_boolean(p->v.b); break;
    case FQ_PT_INT: v = json_integer((json_int_t)p->v.i); break;
    case FQ_PT_FLOAT:
      if (!isfinite(p->v.f)) {
        rc = fq_errf(err, FQ_EBADPARAM, "params.%.*s: not a finite number", (int)p->name_len,
                     p->name);
        goto out;
      }
      v = json_real(p->v.f);
      break;
    case FQ_PT_STR: v = json_stringn(p->v.s.p, p->v.s.n); break;
    case FQ_PT_MAP:
      if (!(v = map_param_to_json(p, err))) {
        rc = err && err->code ? err->code : FQ_EBADPARAM;
        goto out;
      }
      break;
    }
    if (!v) {
      rc = fq_errf(err, FQ_EBADPARAM, "params.%.*s: not representable in JSON (invalid UTF-8?)",
                   (int)p->name_len, p->name);
      goto out;
    }
    if (json_object_setn_new(o, p->name, p->name_len, v)) {
      rc = fq_errf(err, FQ_EBADPARAM, "params.%.*s: bad name", (int)p->name_len, p->name);
      goto out;
    }
  }
  text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!text) {
    rc = -ENOMEM;
    goto out;
  }
  rc = fq_buf_append_str(out, text);
out:
  free(text);
  json_decref(o);
  return rc;
}

int fq_pvals_from_json(const json_t *j, fq_pval_t *pv, size_t *n, fq_err_t *err) {
  const char *k;
  json_t *v;
  *n = 0;
  if (!json_is_object(j)) return fq_errf(err, FQ_EBADPARAM, "params: must be a JSON object");
  json_object_foreach((json_t *)j, k, v) {
    if (*n == FQ_MAX_PARAMS)
      return fq_errf(err, FQ_EBADPARAM, "params: at most %d parameters", FQ_MAX_PARAMS);
    fq_pval_t *p = &pv[(*n)++];
    memset(p, 0, sizeof *p);
    p->name = k;
    p->name_len = strlen(k);
    if (json_is_boolean(v)) {
      p->type = FQ_PT_BOOL;
      p->v.b = json_is_true(v);
    } else if (json_is_integer(v)) {
      p->type = FQ_PT_INT;
      p->v.i = json_integer_value(v);
    } else if (json_is_real(v)) {
      p->type = FQ_PT_FLOAT;
      p->v.f = json_real_value(v);
    } else if (json_is_string(v)) {
      p->type = FQ_PT_STR;
      p->v.s.p = json_string_value(v);
      p->v.s.n = json_string_length(v);
    } else {
      return fq_errf(err, FQ_EBADPARAM, "params.%s: null, arrays and objects are not accepted", k);
    }
  }
  return 0;
}
