/*
 * Application payloads of the Vehicle Command Protocol as the car sees
 * them (see vcp.h): classification of the car's application replies
 * (CarServer.Response, VCSEC.FromVCSECMessage) on the client side, and on
 * the car side (the simulator) the decoding of command payloads back into
 * our command names and the building of application replies.
 */
#include <stdio.h>
#include <string.h>

#include "car_server.pb-c.h"
#include "fleetq/commands.h"
#include "vcp.h"
#include "vcsec.pb-c.h"

/* reason = prefix followed by text. */
static void set(fq_vcp_outcome_t *o, fq_vcp_action_t a, int error, const char *prefix,
                const char *text) {
  o->action = a;
  o->fault = -1;
  o->error = error;
  snprintf(o->reason, sizeof o->reason, "%s%.*s", prefix, (int)sizeof o->reason - 1, text);
  /* The car's text ends up in status events, logs and JSON: keep it to
   * printable ASCII so a hostile or broken reply cannot inject control
   * bytes or invalid UTF-8. */
  for (char *p = o->reason; *p; p++)
    if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) *p = '?';
}

static const char *const nominal_names[] = {
    "NONE", "UNKNOWN", "CLOSURES_OPEN", "ALREADY_ON", "DISABLED_FOR_USER_COMMAND",
    "VEHICLE_NOT_IN_PARK", "UNAUTHORIZED", "NOT_ALLOWED_OVER_TRANSPORT"};

int fq_vcp_classify_app_reply(int domain, const uint8_t *p, size_t n, fq_vcp_outcome_t *out) {
  if (n == 0) {
    set(out, FQ_VCP_OK, 0, "", "");
    return 0;
  }
  if (domain == FQ_VCP_DOMAIN_VCSEC) {
    VCSEC__FromVCSECMessage *m = vcsec__from_vcsecmessage__unpack(NULL, n, p);
    if (!m) {
      set(out, FQ_VCP_FAIL, FQ_EPROTO, "", "undecodable VCSEC reply");
      return FQ_EPROTO;
    }
    if (m->sub_message_case == VCSEC__FROM_VCSECMESSAGE__SUB_MESSAGE_NOMINAL_ERROR) {
      unsigned e = (unsigned)m->nominalerror->genericerror;
      char num[16];
      snprintf(num, sizeof num, "%u", e);
      if (e == 0) set(out, FQ_VCP_OK, 0, "", "");
      else
        set(out, FQ_VCP_FAIL, FQ_EFAULT, "vcsec could not execute command: ",
            e < sizeof nominal_names / sizeof nominal_names[0] ? nominal_names[e] : num);
    } else if (m->sub_message_case == VCSEC__FROM_VCSECMESSAGE__SUB_MESSAGE_COMMAND_STATUS) {
      switch (m->commandstatus->operationstatus) {
      case VCSEC__OPERATION_STATUS__E__OPERATIONSTATUS_OK: set(out, FQ_VCP_OK, 0, "", ""); break;
      case VCSEC__OPERATION_STATUS__E__OPERATIONSTATUS_WAIT:
        set(out, FQ_VCP_RETRY, FQ_EBUSY, "", "vehicle busy or finishing wake-up");
        break;
      default:
        set(out, FQ_VCP_FAIL, FQ_EFAULT, "", "vcsec could not execute command: error status");
        break;
      }
    } else {
      set(out, FQ_VCP_OK, 0, "", "");
    }
    vcsec__from_vcsecmessage__free_unpacked(m, NULL);
    return 0;
  }
  CarServer__Response *r = car_server__response__unpack(NULL, n, p);
  if (!r) {
    set(out, FQ_VCP_FAIL, FQ_EPROTO, "", "undecodable CarServer reply");
    return FQ_EPROTO;
  }
  if (r->actionstatus && r->actionstatus->result != CAR_SERVER__OPERATION_STATUS__E__OPERATIONSTATUS_OK) {
    const CarServer__ResultReason *rr = r->actionstatus->result_reason;
    const char *why = rr && rr->reason_case == CAR_SERVER__RESULT_REASON__REASON_PLAIN_TEXT &&
                              rr->plain_text && rr->plain_text[0]
                          ? rr->plain_text
                          : "unspecified error";
    /* The car's own words ("already_set", "is_charging") are what users
     * and upstream code match on: copy them as they are. */
    set(out, FQ_VCP_FAIL, FQ_EFAULT, "", why);
  } else {
    set(out, FQ_VCP_OK, 0, "", "");
  }
  car_server__response__free_unpacked(r, NULL);
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Car side                                                                */

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

static int pack_into(const ProtobufCMessage *m, fq_buf_t *out) {
  size_t n = protobuf_c_message_get_packed_size(m);
  int rc = fq_buf_reserve(out, n);
  if (rc) return rc;
  out->len += protobuf_c_message_pack(m, out->data + out->len);
  return 0;
}

int fq_vcp_app_carserver_reply(bool ok, const char *reason, fq_buf_t *out) {
  CarServer__Response r;
  CarServer__ActionStatus st;
  CarServer__ResultReason rr;
  car_server__response__init(&r);
  car_server__action_status__init(&st);
  car_server__result_reason__init(&rr);
  st.result = ok ? CAR_SERVER__OPERATION_STATUS__E__OPERATIONSTATUS_OK
                 : CAR_SERVER__OPERATION_STATUS__E__OPERATIONSTATUS_ERROR;
  if (reason && reason[0]) {
    rr.reason_case = CAR_SERVER__RESULT_REASON__REASON_PLAIN_TEXT;
    rr.plain_text = (char *)reason;
    st.result_reason = &rr;
  }
  r.actionstatus = &st;
  return pack_into(&r.base, out);
}

int fq_vcp_app_vcsec_reply(int op_status, int nominal_error, fq_buf_t *out) {
  VCSEC__FromVCSECMessage m;
  VCSEC__CommandStatus cs;
  Errors__NominalError ne;
  vcsec__from_vcsecmessage__init(&m);
  vcsec__command_status__init(&cs);
  errors__nominal_error__init(&ne);
  if (nominal_error > 0) {
    ne.genericerror = (Errors__GenericErrorE)nominal_error;
    m.sub_message_case = VCSEC__FROM_VCSECMESSAGE__SUB_MESSAGE_NOMINAL_ERROR;
    m.nominalerror = &ne;
  } else if (op_status >= 0) {
    cs.operationstatus = (VCSEC__OperationStatusE)op_status;
    m.sub_message_case = VCSEC__FROM_VCSECMESSAGE__SUB_MESSAGE_COMMAND_STATUS;
    m.commandstatus = &cs;
  }
  return pack_into(&m.base, out);
}
