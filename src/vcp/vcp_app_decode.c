/*
 * Command payloads of the Vehicle Command Protocol decoded back into our
 * command names and parameters (see fq_vcp_app_decode_command in vcp.h):
 * the inverse of the payload builders.  Both the simulated car (src/sim)
 * and `fleetq proto decode` read payloads with it.  A file of its own so
 * that fleetqd, which never decodes a command, does not carry it.
 */
#include <stdio.h>
#include <string.h>

#include "car_server.pb-c.h"
#include "fleetq/commands.h"
#include "vcp.h"
#include "vcsec.pb-c.h"

static void add_bool(fq_vcp_app_cmd_t *c, const char *name, bool v) {
  size_t i = c->nparams++;
  c->params[i].name = name;
  c->params[i].type = FQ_PT_BOOL;
  c->params[i].b = v;
}

static void add_int(fq_vcp_app_cmd_t *c, const char *name, int64_t v) {
  size_t i = c->nparams++;
  c->params[i].name = name;
  c->params[i].type = FQ_PT_INT;
  c->params[i].i = v;
}

static void add_float(fq_vcp_app_cmd_t *c, const char *name, double v) {
  size_t i = c->nparams++;
  c->params[i].name = name;
  c->params[i].type = FQ_PT_FLOAT;
  c->params[i].f = v;
}

static void add_str(fq_vcp_app_cmd_t *c, const char *name, const char *v) {
  size_t i = c->nparams++;
  c->params[i].name = name;
  c->params[i].type = FQ_PT_STR;
  snprintf(c->params[i].s, sizeof c->params[i].s, "%s", v);
}

static int decode_vcsec(const uint8_t *p, size_t n, fq_vcp_app_cmd_t *c, fq_err_t *err) {
  int rc = 0;
  VCSEC__UnsignedMessage *u = vcsec__unsigned_message__unpack(NULL, n, p);
  if (!u) return fq_errf(err, FQ_EPROTO, "not a VCSEC.UnsignedMessage");
  const char *name = NULL;
  if (u->sub_message_case == VCSEC__UNSIGNED_MESSAGE__SUB_MESSAGE_RKEACTION) {
    switch (u->rkeaction) {
    case VCSEC__RKEACTION__E__RKE_ACTION_LOCK: name = "door_lock"; break;
    case VCSEC__RKEACTION__E__RKE_ACTION_UNLOCK: name = "door_unlock"; break;
    case VCSEC__RKEACTION__E__RKE_ACTION_REMOTE_DRIVE: name = "remote_start_drive"; break;
    default: break;
    }
  } else if (u->sub_message_case == VCSEC__UNSIGNED_MESSAGE__SUB_MESSAGE_CLOSURE_MOVE_REQUEST) {
    const VCSEC__ClosureMoveRequest *m = u->closuremoverequest;
    bool rear = m->reartrunk == VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_MOVE;
    bool front = m->fronttrunk == VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_MOVE;
    if (rear != front) {
      name = "actuate_trunk";
      add_str(c, "which_trunk", rear ? "rear" : "front");
    }
  }
  if (!name) rc = fq_errf(err, FQ_EUNKCMD, "VCSEC message is none of our commands");
  else snprintf(c->name, sizeof c->name, "%s", name);
  vcsec__unsigned_message__free_unpacked(u, NULL);
  return rc;
}

static int decode_carserver(const uint8_t *p, size_t n, fq_vcp_app_cmd_t *c, fq_err_t *err) {
  int rc = 0;
  const char *name = NULL;
  CarServer__Action *a = car_server__action__unpack(NULL, n, p);
  if (!a) return fq_errf(err, FQ_EPROTO, "not a CarServer.Action");
  const CarServer__VehicleAction *va = a->vehicleaction;
  if (!va) goto out;
  switch (va->vehicle_action_msg_case) {
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGING_SET_LIMIT_ACTION:
    name = "set_charge_limit";
    add_int(c, "percent", va->chargingsetlimitaction->percent);
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGING_START_STOP_ACTION:
    switch (va->chargingstartstopaction->charging_action_case) {
    case CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_START: name = "charge_start"; break;
    case CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_STOP: name = "charge_stop"; break;
    case CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_START_STANDARD:
      name = "charge_standard";
      break;
    case CAR_SERVER__CHARGING_START_STOP_ACTION__CHARGING_ACTION_START_MAX_RANGE:
      name = "charge_max_range";
      break;
    default: break;
    }
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_HVAC_AUTO_ACTION:
    name = va->hvacautoaction->power_on ? "auto_conditioning_start" : "auto_conditioning_stop";
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_HVAC_SET_PRECONDITIONING_MAX_ACTION:
    name = "set_preconditioning_max";
    add_bool(c, "on", va->hvacsetpreconditioningmaxaction->on);
    add_bool(c, "manual_override", va->hvacsetpreconditioningmaxaction->manual_override);
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_HVAC_TEMPERATURE_ADJUSTMENT_ACTION:
    name = "set_temps";
    add_float(c, "driver_temp", va->hvactemperatureadjustmentaction->driver_temp_celsius);
    add_float(c, "passenger_temp", va->hvactemperatureadjustmentaction->passenger_temp_celsius);
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_FLASH_LIGHTS_ACTION:
    name = "flash_lights";
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_HONK_HORN_ACTION:
    name = "honk_horn";
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_SET_SENTRY_MODE_ACTION:
    name = "set_sentry_mode";
    add_bool(c, "on", va->vehiclecontrolsetsentrymodeaction->on);
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_VEHICLE_CONTROL_WINDOW_ACTION:
    switch (va->vehiclecontrolwindowaction->action_case) {
    case CAR_SERVER__VEHICLE_CONTROL_WINDOW_ACTION__ACTION_VENT:
      name = "window_control";
      add_str(c, "command", "vent");
      break;
    case CAR_SERVER__VEHICLE_CONTROL_WINDOW_ACTION__ACTION_CLOSE:
      name = "window_control";
      add_str(c, "command", "close");
      break;
    default: break;
    }
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SCHEDULED_CHARGING_ACTION:
    name = "set_scheduled_charging";
    add_bool(c, "enable", va->scheduledchargingaction->enabled);
    add_int(c, "time", va->scheduledchargingaction->charging_time);
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SET_CHARGING_AMPS_ACTION:
    name = "set_charging_amps";
    add_int(c, "charging_amps", va->setchargingampsaction->charging_amps);
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_PING:
    name = "ping";
    add_int(c, "ping_id", va->ping->ping_id);
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SET_CABIN_OVERHEAT_PROTECTION_ACTION:
    name = "set_cabin_overheat_protection";
    add_bool(c, "on", va->setcabinoverheatprotectionaction->on);
    add_bool(c, "fan_only", va->setcabinoverheatprotectionaction->fan_only);
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_SET_VEHICLE_NAME_ACTION:
    name = "set_vehicle_name";
    add_str(c, "vehicle_name",
            va->setvehiclenameaction->vehiclename ? va->setvehiclenameaction->vehiclename : "");
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGE_PORT_DOOR_CLOSE:
    name = "charge_port_door_close";
    break;
  case CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_CHARGE_PORT_DOOR_OPEN:
    name = "charge_port_door_open";
    break;
  default: break;
  }
out:
  if (!name) rc = fq_errf(err, FQ_EUNKCMD, "CarServer action is none of our commands");
  else snprintf(c->name, sizeof c->name, "%s", name);
  car_server__action__free_unpacked(a, NULL);
  return rc;
}

int fq_vcp_app_decode_command(int domain, const uint8_t *p, size_t n, fq_vcp_app_cmd_t *out,
                              fq_err_t *err) {
  memset(out, 0, sizeof *out);
  if (n > FQ_VCP_MAX_PAYLOAD) return fq_errf(err, FQ_EPROTO, "payload too large");
  if (domain == FQ_VCP_DOMAIN_VCSEC) return decode_vcsec(p, n, out, err);
  if (domain == FQ_VCP_DOMAIN_INFOTAINMENT) return decode_carserver(p, n, out, err);
  return fq_errf(err, FQ_EPROTO, "domain %d carries no commands", domain);
}
