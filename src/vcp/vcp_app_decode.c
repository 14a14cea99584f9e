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
    } else if (!m->fronttrunk &&
               m->reartrunk == VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_OPEN) {
      name = "open_trunk";
    } else if (!m->fronttrunk &&
               m->reartrunk == VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_CLOSE) {
      name = "close_trunk";
    } else if (!m->reartrunk &&
               m->fronttrunk == VCSEC__CLOSURE_MOVE_TYPE__E__CLOSURE_MOVE_TYPE_OPEN) {
      name = "open_frunk";
    }
  }
  if (!name) rc = fq_errf(err, FQ_EUNKCMD, "VCSEC message is none of our commands");
  else snprintf(c->name, sizeof c->name, "%s", name);
  vcsec__unsigned_message__free_unpacked(u, NULL);
  return rc;
}

#define VA(x) CAR_SERVER__VEHICLE_ACTION__VEHICLE_ACTION_MSG_##x

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
  /* Issue 16. */
  case VA(ADD_CHARGE_SCHEDULE_ACTION): {
    const CarServer__ChargeSchedule *m = va->addchargescheduleaction;
    name = "add_charge_schedule";
    add_int(c, "id", (int64_t)m->id);
    add_int(c, "days_of_week", m->days_of_week);
    add_bool(c, "start_enabled", m->start_enabled);
    add_int(c, "start_time", m->start_time);
    add_bool(c, "end_enabled", m->end_enabled);
    add_int(c, "end_time", m->end_time);
    add_bool(c, "one_time", m->one_time);
    add_bool(c, "enabled", m->enabled);
    add_float(c, "lat", m->latitude);
    add_float(c, "lon", m->longitude);
    break;
  }
  case VA(ADD_PRECONDITION_SCHEDULE_ACTION): {
    const CarServer__PreconditionSchedule *m = va->addpreconditionscheduleaction;
    name = "add_precondition_schedule";
    add_int(c, "id", (int64_t)m->id);
    add_int(c, "days_of_week", m->days_of_week);
    add_int(c, "precondition_time", m->precondition_time);
    add_bool(c, "one_time", m->one_time);
    add_bool(c, "enabled", m->enabled);
    add_float(c, "lat", m->latitude);
    add_float(c, "lon", m->longitude);
    break;
  }
  case VA(REMOVE_CHARGE_SCHEDULE_ACTION):
    name = "remove_charge_schedule";
    add_int(c, "id", (int64_t)va->removechargescheduleaction->id);
    break;
  case VA(REMOVE_PRECONDITION_SCHEDULE_ACTION):
    name = "remove_precondition_schedule";
    add_int(c, "id", (int64_t)va->removepreconditionscheduleaction->id);
    break;
  case VA(SCHEDULED_DEPARTURE_ACTION): {
    const CarServer__ScheduledDepartureAction *m = va->scheduleddepartureaction;
    name = "set_scheduled_departure";
    add_bool(c, "enable", m->enabled);
    add_int(c, "departure_time", m->departure_time);
    add_int(c, "end_off_peak_time", m->off_peak_hours_end_time);
    int pre = m->preconditioning_times ? (int)m->preconditioning_times->times_case : 0;
    int off = m->off_peak_charging_times ? (int)m->off_peak_charging_times->times_case : 0;
    add_bool(c, "preconditioning_enabled", pre == CAR_SERVER__PRECONDITIONING_TIMES__TIMES_ALL_WEEK);
    add_bool(c, "preconditioning_weekdays_only", pre == CAR_SERVER__PRECONDITIONING_TIMES__TIMES_WEEKDAYS);
    add_bool(c, "off_peak_charging_enabled", off == CAR_SERVER__OFF_PEAK_CHARGING_TIMES__TIMES_ALL_WEEK);
    add_bool(c, "off_peak_charging_weekdays_only", off == CAR_SERVER__OFF_PEAK_CHARGING_TIMES__TIMES_WEEKDAYS);
    break;
  }
  case VA(HVAC_CLIMATE_KEEPER_ACTION):
    name = "set_climate_keeper_mode";
    add_int(c, "climate_keeper_mode", va->hvacclimatekeeperaction->climatekeeperaction);
    add_bool(c, "manual_override", va->hvacclimatekeeperaction->manual_override);
    break;
  case VA(HVAC_BIOWEAPON_MODE_ACTION):
    name = "set_bioweapon_mode";
    add_bool(c, "on", va->hvacbioweaponmodeaction->on);
    add_bool(c, "manual_override", va->hvacbioweaponmodeaction->manual_override);
    break;
  case VA(SET_COP_TEMP_ACTION):
    name = "set_cop_temp";
    add_int(c, "cop_temp", va->setcoptempaction->copactivationtemp);
    break;
  case VA(HVAC_SEAT_HEATER_ACTIONS): {
    /* We send one seat per command; the first is the one read here. */
    const CarServer__HvacSeatHeaterActions *m = va->hvacseatheateractions;
    if (m->n_hvacseatheateraction < 1) break;
    const CarServer__HvacSeatHeaterActions__HvacSeatHeaterAction *h = m->hvacseatheateraction[0];
    int level = (int)h->seat_heater_level_case - 2, seat = (int)h->seat_position_case - 7;
    if (level < 0 || seat < 0) break; /* unknown or unset: none of ours */
    name = "remote_seat_heater_request";
    add_int(c, "seat_position", seat);
    add_int(c, "level", level);
    break;
  }
  case VA(HVAC_SEAT_COOLER_ACTIONS): {
    const CarServer__HvacSeatCoolerActions *m = va->hvacseatcooleractions;
    if (m->n_hvacseatcooleraction < 1) break;
    name = "remote_seat_cooler_request";
    add_int(c, "seat_position", m->hvacseatcooleraction[0]->seat_position);
    add_int(c, "seat_cooler_level", m->hvacseatcooleraction[0]->seat_cooler_level);
    break;
  }
  case VA(AUTO_SEAT_CLIMATE_ACTION): {
    const CarServer__AutoSeatClimateAction *m = va->autoseatclimateaction;
    if (m->n_carseat < 1) break;
    name = "remote_auto_seat_climate_request";
    add_int(c, "auto_seat_position", m->carseat[0]->seat_position);
    add_bool(c, "auto_climate_on", m->carseat[0]->on);
    break;
  }
  case VA(HVAC_STEERING_WHEEL_HEATER_ACTION):
    name = "remote_steering_wheel_heater_request";
    add_bool(c, "on", va->hvacsteeringwheelheateraction->power_on);
    break;
  case VA(VEHICLE_CONTROL_SET_VALET_MODE_ACTION): {
    const CarServer__VehicleControlSetValetModeAction *m = va->vehiclecontrolsetvaletmodeaction;
    name = "set_valet_mode";
    add_bool(c, "on", m->on);
    if (m->password && m->password[0]) add_str(c, "password", m->password);
    break;
  }
  case VA(VEHICLE_CONTROL_SET_PIN_TO_DRIVE_ACTION): {
    const CarServer__VehicleControlSetPinToDriveAction *m = va->vehiclecontrolsetpintodriveaction;
    name = "set_pin_to_drive";
    add_bool(c, "on", m->on);
    if (m->password && m->password[0]) add_str(c, "password", m->password);
    break;
  }
  case VA(VEHICLE_CONTROL_RESET_VALET_PIN_ACTION): name = "reset_valet_pin"; break;
  case VA(DRIVING_SPEED_LIMIT_ACTION): {
    const CarServer__DrivingSpeedLimitAction *m = va->drivingspeedlimitaction;
    name = m->activate ? "speed_limit_activate" : "speed_limit_deactivate";
    add_str(c, "pin", m->pin ? m->pin : "");
    break;
  }
  case VA(DRIVING_SET_SPEED_LIMIT_ACTION):
    name = "speed_limit_set_limit";
    add_float(c, "limit_mph", va->drivingsetspeedlimitaction->limit_mph);
    break;
  case VA(GUEST_MODE_ACTION):
    name = "guest_mode";
    add_bool(c, "enable", va->guestmodeaction->guestmodeactive);
    break;
  case VA(VEHICLE_CONTROL_SUNROOF_OPEN_CLOSE_ACTION):
    switch (va->vehiclecontrolsunroofopencloseaction->action_case) {
    case CAR_SERVER__VEHICLE_CONTROL_SUNROOF_OPEN_CLOSE_ACTION__ACTION_VENT:
      name = "sun_roof_control";
      add_str(c, "state", "vent");
      break;
    case CAR_SERVER__VEHICLE_CONTROL_SUNROOF_OPEN_CLOSE_ACTION__ACTION_CLOSE:
      name = "sun_roof_control";
      add_str(c, "state", "close");
      break;
    case CAR_SERVER__VEHICLE_CONTROL_SUNROOF_OPEN_CLOSE_ACTION__ACTION_OPEN:
      name = "sun_roof_control";
      add_str(c, "state", "open");
      break;
    default: break;
    }
    break;
  case VA(VEHICLE_CONTROL_TRIGGER_HOMELINK_ACTION): {
    const CarServer__LatLong *ll = va->vehiclecontroltriggerhomelinkaction->location;
    name = "trigger_homelink";
    add_float(c, "lat", ll ? ll->latitude : 0);
    add_float(c, "lon", ll ? ll->longitude : 0);
    break;
  }
  case VA(VEHICLE_CONTROL_SCHEDULE_SOFTWARE_UPDATE_ACTION):
    name = "schedule_software_update";
    add_int(c, "offset_sec", va->vehiclecontrolschedulesoftwareupdateaction->offset_sec);
    break;
  case VA(VEHICLE_CONTROL_CANCEL_SOFTWARE_UPDATE_ACTION): name = "cancel_software_update"; break;
  case VA(MEDIA_PLAY_ACTION): name = "media_toggle_playback"; break;
  case VA(MEDIA_NEXT_TRACK): name = "media_next_track"; break;
  case VA(MEDIA_PREVIOUS_TRACK): name = "media_prev_track"; break;
  case VA(MEDIA_NEXT_FAVORITE): name = "media_next_fav"; break;
  case VA(MEDIA_PREVIOUS_FAVORITE): name = "media_prev_fav"; break;
  case VA(MEDIA_UPDATE_VOLUME): {
    const CarServer__MediaUpdateVolume *m = va->mediaupdatevolume;
    if (m->media_volume_case == CAR_SERVER__MEDIA_UPDATE_VOLUME__MEDIA_VOLUME_VOLUME_ABSOLUTE_FLOAT) {
      name = "adjust_volume";
      add_float(c, "volume", m->volume_absolute_float);
    } else if (m->media_volume_case == CAR_SERVER__MEDIA_UPDATE_VOLUME__MEDIA_VOLUME_VOLUME_DELTA &&
               m->volume_delta == 1) {
      name = "media_volume_up";
    } else if (m->media_volume_case == CAR_SERVER__MEDIA_UPDATE_VOLUME__MEDIA_VOLUME_VOLUME_DELTA &&
               m->volume_delta == -1) {
      name = "media_volume_down";
    }
    break;
  }
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
