/*
 * fleetsim cars: each simulated vehicle has two domains (VCSEC and
 * INFOTAINMENT), each with its own P-256 key, epoch, clock and per-key
 * counters, verified by the vehicle side of the vcp module exactly as a
 * car would.  Accepted commands are decoded from their protobuf payload
 * and executed against the car's state (locks, charging, climate, sentry,
 * windows, trunks, charge port, schedule, name), recorded once in the
 * ground-truth log, and answered with a CarServer.Response or
 * VCSEC.FromVCSECMessage, encrypted when the request asked for it.
 * Legacy cars take the same commands as REST calls with JSON params.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleetq/commands.h"
#include "sim_int.h"
#include "util.h"

static const int vcp_domain[2] = {FQ_VCP_DOMAIN_VCSEC, FQ_VCP_DOMAIN_INFOTAINMENT};

void fq__sim_vehicle_defaults(fq__sim_vehicle_t *v) {
  /* The last six characters of the VIN (the whole VIN when shorter). */
  snprintf(v->name, sizeof v->name, "Sim %.6s", v->vin + (strlen(v->vin) > 6 ? strlen(v->vin) - 6 : 0));
  v->locked = true;
  v->remote_start = v->ft_open = v->rt_open = v->sentry = v->port_open = false;
  v->cable = true;
  v->climate_on = v->precond_max = v->cop_on = v->cop_fan_only = v->sched_on = false;
  snprintf(v->windows, sizeof v->windows, "closed");
  snprintf(v->charging, sizeof v->charging, "Stopped");
  snprintf(v->charge_mode, sizeof v->charge_mode, "standard");
  v->charge_limit = 80;
  v->charge_amps = 32;
  v->charge_amps_max = 48;
  v->battery_level = 60;
  v->sched_time = 0;
  v->driver_temp = v->passenger_temp = 21.0;
  v->honks = v->flashes = 0;
  v->keeper = 0;
  v->cop_temp = 2;
  v->bioweapon = v->wheel_heater = v->auto_seat[0] = v->auto_seat[1] = false;
  memset(v->seat_heat, 0, sizeof v->seat_heat);
  v->seat_cool[0] = v->seat_cool[1] = 1;
  v->valet = v->valet_pin_set = v->pin_to_drive = v->guest = false;
  v->speed_limit_on = v->speed_pin_set = false;
  v->speed_pin[0] = 0;
  v->speed_limit_mph = 65;
  snprintf(v->sunroof, sizeof v->sunroof, "closed");
  v->homelinks = 0;
  v->update_at_ms = 0;
  v->playing = false;
  v->volume = 3;
  v->track = v->fav = 0;
  v->dep_on = false;
  v->dep_time = v->dep_off_peak_end = v->dep_pre = v->dep_off = 0;
  v->ncharge_sched = v->npre_sched = 0;
}

void fq__sim_vehicle_free(fq__sim_vehicle_t *v) {
  for (int d = 0; d < 2; d++) {
    fq_vcp_vdomain_destroy(&v->vd[d]);
    fq_vcp_key_destroy(&v->key[d]);
  }
  free(v->extra_keys);
  free(v->accounts);
  free(v->nav_dest);
}

/* Pair the keys the config says are paired. */
static int pair_all(fq__sim_world_t *w, fq__sim_vehicle_t *v, fq_vcp_vdomain_t *vd) {
  fq_err_t err = {0};
  int rc = 0;
  if (v->paired && w->have_fleet_pub) rc = fq_vcp_vdomain_pair(vd, w->fleet_pub, &err);
  for (size_t i = 0; !rc && i < v->nextra; i++) rc = fq_vcp_vdomain_pair(vd, v->extra_keys[i], &err);
  return rc;
}

fq_vcp_vdomain_t *fq__sim_vehicle_vd(fq__sim_world_t *w, fq__sim_vehicle_t *v, int d) {
  if (v->vd[d]) return v->vd[d];
  fq_err_t err = {0};
  if (!v->key[d] && fq_vcp_key_generate(&v->key[d], &err)) return NULL;
  /* The car has been up for a while: its clock is not at 0. */
  int64_t start = fq_now_ms() - 1000 * (int64_t)(1000 + fq_rng_below(&v->faults.rng, 100000));
  if (fq_vcp_vdomain_new(v->vin, vcp_domain[d], v->key[d], NULL, start, &v->vd[d], &err))
    return NULL;
  if (pair_all(w, v, v->vd[d])) {
    fq_vcp_vdomain_destroy(&v->vd[d]);
    return NULL;
  }
  return v->vd[d];
}

void fq__sim_vehicle_repair(fq__sim_world_t *w, fq__sim_vehicle_t *v) {
  for (int d = 0; d < 2; d++) {
    if (!v->vd[d]) continue;
    /* Unpairing drops the key's counters; pairing again starts them at 0,
     * which is what re-enrolling a key in a real car does too. */
    if (w->have_fleet_pub) fq_vcp_vdomain_unpair(v->vd[d], w->fleet_pub);
    for (size_t i = 0; i < v->nextra; i++) fq_vcp_vdomain_unpair(v->vd[d], v->extra_keys[i]);
    if (pair_all(w, v, v->vd[d])) fq_vcp_vdomain_destroy(&v->vd[d]);
  }
}

const char *fq__sim_vehicle_state(fq__sim_vehicle_t *v, int64_t now_ms) {
  if (v->offline) return "offline";
  if (v->asleep && v->wake_at_ms && now_ms >= v->wake_at_ms) {
    v->asleep = false;
    v->online_at_ms = v->wake_at_ms;
    v->wake_at_ms = 0;
  }
  return v->asleep ? "asleep" : "online";
}

/* ---- executing commands ------------------------------------------------------ */

static bool p_bool(const fq_vcp_app_cmd_t *c, const char *name, bool def) {
  for (size_t i = 0; i < c->nparams; i++)
    if (strcmp(c->params[i].name, name) == 0 && c->params[i].type == FQ_PT_BOOL)
      return c->params[i].b;
  return def;
}

static double p_num(const fq_vcp_app_cmd_t *c, const char *name, double def) {
  for (size_t i = 0; i < c->nparams; i++)
    if (strcmp(c->params[i].name, name) == 0) {
      if (c->params[i].type == FQ_PT_INT) return (double)c->params[i].i;
      if (c->params[i].type == FQ_PT_FLOAT) return c->params[i].f;
    }
  return def;
}

static const char *p_str(const fq_vcp_app_cmd_t *c, const char *name) {
  for (size_t i = 0; i < c->nparams; i++)
    if (strcmp(c->params[i].name, name) == 0 && c->params[i].type == FQ_PT_STR)
      return c->params[i].s;
  return NULL;
}

/* days_of_week: the mask a signed payload carries, or the Fleet API's
 * day list a REST body carries.  -1 when neither is valid. */
static int p_days(const fq_vcp_app_cmd_t *c) {
  const char *s = p_str(c, "days_of_week");
  if (s) return fq_days_of_week_parse(s, strlen(s));
  double m = p_num(c, "days_of_week", -1);
  return m >= 1 && m <= 127 && m == floor(m) ? (int)m : -1;
}

/* Add a schedule, or replace the one with its id. */
static const char *sched_put(fq__sim_sched_t *list, size_t *n, const fq__sim_sched_t *s) {
  for (size_t i = 0; i < *n; i++)
    if (list[i].id == s->id) {
      list[i] = *s;
      return NULL;
    }
  if (*n == FQ__SIM_MAX_SCHED) return "too_many_schedules";
  list[(*n)++] = *s;
  return NULL;
}

static const char *sched_remove(fq__sim_sched_t *list, size_t *n, int64_t id) {
  for (size_t i = 0; i < *n; i++)
    if (list[i].id == id) {
      memmove(&list[i], &list[i + 1], (*n - i - 1) * sizeof list[0]);
      (*n)--;
      return NULL;
    }
  return "schedule_not_found";
}

/* A scheduled-departure policy: 0 off, 1 all week, 2 weekdays. */
static int p_policy(const fq_vcp_app_cmd_t *c, const char *enabled, const char *weekdays) {
  return p_bool(c, weekdays, false) ? 2 : p_bool(c, enabled, false) ? 1 : 0;
}

static bool is_pin(const char *s) {
  return s && strlen(s) == 4 && strspn(s, "0123456789") == 4;
}

/* The issue-16 commands.  Returns NULL on success, the refusal reason, or
 * "" when n is none of them. */
static const char *execute_more(fq__sim_vehicle_t *v, const fq_vcp_app_cmd_t *c, int64_t now_ms) {
  const char *n = c->name;
  if (strcmp(n, "add_charge_schedule") == 0 || strcmp(n, "add_precondition_schedule") == 0) {
    bool charge = n[4] == 'c';
    fq__sim_sched_t s = {0};
    s.id = (int64_t)p_num(c, "id", 0);
    if (s.id <= 0) s.id = now_ms / 1000;
    s.days = p_days(c);
    s.start = (int)p_num(c, charge ? "start_time" : "precondition_time", 0);
    s.end = (int)p_num(c, "end_time", 0);
    s.start_enabled = p_bool(c, "start_enabled", false);
    s.end_enabled = p_bool(c, "end_enabled", false);
    s.one_time = p_bool(c, "one_time", false);
    s.enabled = p_bool(c, "enabled", false);
    s.lat = p_num(c, "lat", NAN);
    s.lon = p_num(c, "lon", NAN);
    if (s.days < 1 || s.start < 0 || s.start > 1439 || s.end < 0 || s.end > 1439 ||
        !(s.lat >= -90 && s.lat <= 90) || !(s.lon >= -180 && s.lon <= 180))
      return "invalid_value";
    return charge ? sched_put(v->charge_sched, &v->ncharge_sched, &s)
                  : sched_put(v->pre_sched, &v->npre_sched, &s);
  }
  if (strcmp(n, "remove_charge_schedule") == 0)
    return sched_remove(v->charge_sched, &v->ncharge_sched, (int64_t)p_num(c, "id", 0));
  if (strcmp(n, "remove_precondition_schedule") == 0)
    return sched_remove(v->pre_sched, &v->npre_sched, (int64_t)p_num(c, "id", 0));
  if (strcmp(n, "set_scheduled_departure") == 0) {
    v->dep_on = p_bool(c, "enable", false);
    if (v->dep_on) {
      double t = p_num(c, "departure_time", 0), e = p_num(c, "end_off_peak_time", 0);
      if (t < 0 || t > 1439 || e < 0 || e > 1439) return "invalid_value";
      v->dep_time = (int)t;
      v->dep_off_peak_end = (int)e;
      v->dep_pre = p_policy(c, "preconditioning_enabled", "preconditioning_weekdays_only");
      v->dep_off = p_policy(c, "off_peak_charging_enabled", "off_peak_charging_weekdays_only");
    }
    return NULL;
  }
  if (strcmp(n, "set_climate_keeper_mode") == 0) {
    double m = p_num(c, "climate_keeper_mode", -1);
    if (m < 0 || m > 3 || m != floor(m)) return "invalid_value";
    v->keeper = (int)m;
    return NULL;
  }
  if (strcmp(n, "set_bioweapon_mode") == 0) {
    v->bioweapon = p_bool(c, "on", false);
    return NULL;
  }
  if (strcmp(n, "set_cop_temp") == 0) {
    double t = p_num(c, "cop_temp", -1);
    if (t < 1 || t > 3 || t != floor(t)) return "invalid_value";
    v->cop_temp = (int)t;
    return NULL;
  }
  if (strcmp(n, "remote_seat_heater_request") == 0) {
    double seat = p_num(c, "seat_position", -1), level = p_num(c, "level", -1);
    if (seat < 0 || seat > 8 || level < 0 || level > 3) return "invalid_value";
    v->seat_heat[(int)seat] = (int)level;
    return NULL;
  }
  if (strcmp(n, "remote_seat_cooler_request") == 0) {
    double seat = p_num(c, "seat_position", -1), level = p_num(c, "seat_cooler_level", -1);
    if (seat < 1 || seat > 2 || level < 1 || level > 4) return "invalid_value";
    v->seat_cool[(int)seat - 1] = (int)level;
    return NULL;
  }
  if (strcmp(n, "remote_auto_seat_climate_request") == 0) {
    double seat = p_num(c, "auto_seat_position", -1);
    if (seat < 1 || seat > 2) return "invalid_value";
    v->auto_seat[(int)seat - 1] = p_bool(c, "auto_climate_on", false);
    return NULL;
  }
  if (strcmp(n, "remote_steering_wheel_heater_request") == 0) {
    v->wheel_heater = p_bool(c, "on", false);
    return NULL;
  }
  if (strcmp(n, "set_valet_mode") == 0) {
    const char *pw = p_str(c, "password");
    if (pw && !is_pin(pw)) return "invalid_value";
    v->valet = p_bool(c, "on", false);
    if (v->valet && pw) v->valet_pin_set = true;
    return NULL;
  }
  if (strcmp(n, "reset_valet_pin") == 0) {
    v->valet_pin_set = false;
    return NULL;
  }
  if (strcmp(n, "set_pin_to_drive") == 0) {
    const char *pw = p_str(c, "password");
    if (pw && !is_pin(pw)) return "invalid_value";
    v->pin_to_drive = p_bool(c, "on", false);
    return NULL;
  }
  if (strcmp(n, "speed_limit_activate") == 0 || strcmp(n, "speed_limit_deactivate") == 0) {
    const char *pin = p_str(c, "pin");
    if (!is_pin(pin)) return "invalid_value";
    /* The first activation sets the PIN; after that it must match. */
    if (v->speed_pin_set && strcmp(pin, v->speed_pin) != 0) return "incorrect_pin";
    if (!v->speed_pin_set) {
      snprintf(v->speed_pin, sizeof v->speed_pin, "%s", pin);
      v->speed_pin_set = true;
    }
    v->speed_limit_on = n[12] == 'a';
    return NULL;
  }
  if (strcmp(n, "speed_limit_set_limit") == 0) {
    double mph = p_num(c, "limit_mph", -1);
    if (!(mph >= 50 && mph <= 120)) return "invalid_value";
    v->speed_limit_mph = mph;
    return NULL;
  }
  if (strcmp(n, "guest_mode") == 0) {
    v->guest = p_bool(c, "enable", false);
    return NULL;
  }
  if (strcmp(n, "sun_roof_control") == 0) {
    const char *st = p_str(c, "state");
    if (!st || (strcmp(st, "vent") && strcmp(st, "close") && strcmp(st, "open")))
      return "invalid_value";
    snprintf(v->sunroof, sizeof v->sunroof, "%s", strcmp(st, "close") == 0 ? "closed" : st);
    return NULL;
  }
  if (strcmp(n, "trigger_homelink") == 0) {
    double lat = p_num(c, "lat", NAN), lon = p_num(c, "lon", NAN);
    if (!(lat >= -90 && lat <= 90) || !(lon >= -180 && lon <= 180)) return "invalid_value";
    v->homelinks++;
    return NULL;
  }
  if (strcmp(n, "schedule_software_update") == 0) {
    double off = p_num(c, "offset_sec", -1);
    if (off < 0) return "invalid_value";
    v->update_at_ms = now_ms + (int64_t)off * 1000;
    return NULL;
  }
  if (strcmp(n, "cancel_software_update") == 0) {
    v->update_at_ms = 0;
    return NULL;
  }
  if (strcmp(n, "media_toggle_playback") == 0) v->playing = !v->playing;
  else if (strcmp(n, "media_next_track") == 0) v->track++;
  else if (strcmp(n, "media_prev_track") == 0) v->track--;
  else if (strcmp(n, "media_next_fav") == 0) v->fav++;
  else if (strcmp(n, "media_prev_fav") == 0) v->fav--;
  else if (strcmp(n, "media_volume_up") == 0) v->volume = fmin(10, v->volume + 1);
  else if (strcmp(n, "media_volume_down") == 0) v->volume = fmax(0, v->volume - 1);
  else if (strcmp(n, "adjust_volume") == 0) {
    double vol = p_num(c, "volume", -1);
    if (!(vol >= 0 && vol <= 10)) return "invalid_value";
    v->volume = vol;
  } else {
    return "";
  }
  return NULL;
}

/* Run one command against the car's state.  Returns NULL on success or
 * the reason the car refuses it (what Tesla puts in plain_text / reason). */
static const char *execute(fq__sim_vehicle_t *v, const fq_vcp_app_cmd_t *c) {
  const char *n = c->name;
  const char *more = execute_more(v, c, fq_now_ms());
  if (!more || *more) return more;
  if (strcmp(n, "door_lock") == 0) v->locked = true;
  else if (strcmp(n, "door_unlock") == 0) v->locked = false;
  else if (strcmp(n, "remote_start_drive") == 0) v->remote_start = true;
  else if (strcmp(n, "actuate_trunk") == 0) {
    const char *which = p_str(c, "which_trunk");
    if (!which || strcmp(which, "rear") == 0) v->rt_open = !v->rt_open;
    else if (strcmp(which, "front") == 0) v->ft_open = !v->ft_open;
    else return "invalid_value";
  } else if (strcmp(n, "open_trunk") == 0) {
    v->rt_open = true; /* a position, not a move: open stays open */
  } else if (strcmp(n, "close_trunk") == 0) {
    v->rt_open = false;
  } else if (strcmp(n, "open_frunk") == 0) {
    v->ft_open = true;
  } else if (strcmp(n, "charge_start") == 0) {
    if (!v->cable) return "disconnected";
    if (strcmp(v->charging, "Charging") == 0) return "is_charging";
    if (v->battery_level >= v->charge_limit) return "complete";
    snprintf(v->charging, sizeof v->charging, "Charging");
  } else if (strcmp(n, "charge_stop") == 0) {
    if (strcmp(v->charging, "Charging") != 0) return "not_charging";
    snprintf(v->charging, sizeof v->charging, "Stopped");
  } else if (strcmp(n, "charge_standard") == 0) {
    v->charge_limit = 90;
    snprintf(v->charge_mode, sizeof v->charge_mode, "standard");
  } else if (strcmp(n, "charge_max_range") == 0) {
    v->charge_limit = 100;
    snprintf(v->charge_mode, sizeof v->charge_mode, "max_range");
  } else if (strcmp(n, "set_charge_limit") == 0) {
    double pct = p_num(c, "percent", -1);
    if (pct < 50 || pct > 100 || pct != floor(pct)) return "invalid_value";
    /* A set-point to the value it has: the car says so and does nothing. */
    if ((int)pct == v->charge_limit) return "already_set";
    v->charge_limit = (int)pct;
  } else if (strcmp(n, "set_charging_amps") == 0) {
    double a = p_num(c, "charging_amps", -1);
    if (a < 0 || a > v->charge_amps_max || a != floor(a)) return "invalid_value";
    if ((int)a == v->charge_amps) return "already_set";
    v->charge_amps = (int)a;
  } else if (strcmp(n, "auto_conditioning_start") == 0) v->climate_on = true;
  else if (strcmp(n, "auto_conditioning_stop") == 0) v->climate_on = false;
  else if (strcmp(n, "set_temps") == 0) {
    double d = p_num(c, "driver_temp", NAN), p = p_num(c, "passenger_temp", NAN);
    if (!(d >= 15 && d <= 28) || !(p >= 15 && p <= 28)) return "invalid_value";
    if (d == v->driver_temp && p == v->passenger_temp) return "already_set";
    v->driver_temp = d;
    v->passenger_temp = p;
  } else if (strcmp(n, "set_preconditioning_max") == 0) {
    v->precond_max = p_bool(c, "on", false);
  } else if (strcmp(n, "set_cabin_overheat_protection") == 0) {
    v->cop_on = p_bool(c, "on", false);
    v->cop_fan_only = p_bool(c, "fan_only", false);
  } else if (strcmp(n, "set_sentry_mode") == 0) v->sentry = p_bool(c, "on", false);
  else if (strcmp(n, "honk_horn") == 0) v->honks++;
  else if (strcmp(n, "flash_lights") == 0) v->flashes++;
  else if (strcmp(n, "window_control") == 0) {
    const char *cmd = p_str(c, "command");
    if (cmd && strcmp(cmd, "vent") == 0) snprintf(v->windows, sizeof v->windows, "vented");
    else if (cmd && strcmp(cmd, "close") == 0) snprintf(v->windows, sizeof v->windows, "closed");
    else return "invalid_value";
  } else if (strcmp(n, "charge_port_door_open") == 0) v->port_open = true;
  else if (strcmp(n, "charge_port_door_close") == 0) {
    if (strcmp(v->charging, "Charging") == 0) return "is_charging";
    v->port_open = false;
  } else if (strcmp(n, "set_scheduled_charging") == 0) {
    double t = p_num(c, "time", 0);
    if (t < 0 || t > 1439 || t != floor(t)) return "invalid_value";
    v->sched_on = p_bool(c, "enable", false);
    v->sched_time = (int)t;
  } else if (strcmp(n, "set_vehicle_name") == 0) {
    const char *s = p_str(c, "vehicle_name");
    if (!s || !*s || strlen(s) > FQ__SIM_MAX_NAME) return "invalid_value";
    snprintf(v->name, sizeof v->name, "%s", s);
  } else if (strcmp(n, "ping") != 0) {
    return "unknown_command";
  }
  return NULL;
}

/* ---- signed commands -------------------------------------------------------- */

int fq__sim_peek_command(const uint8_t *msg, size_t len, char *name, size_t cap, int *domain) {
  fq_vcp_msg_t m;
  fq_err_t err = {0};
  name[0] = 0;
  if (fq_vcp_msg_decode(msg, len, &m, &err)) return FQ_EPROTO;
  *domain = m.to_domain;
  if (m.has_payload) {
    fq_vcp_app_cmd_t c;
    if (fq_vcp_app_decode_command(m.to_domain, m.payload, m.payload_len, &c, &err) == 0)
      snprintf(name, cap, "%s", c.name);
  }
  fq_vcp_msg_clear(&m);
  return 0;
}

int fq__sim_vehicle_signed(fq__sim_world_t *w, fq__sim_vehicle_t *v, const uint8_t *msg,
                           size_t len, const fq__sim_reply_opts_t *opts, fq_buf_t *out,
                           fq__sim_signed_result_t *res) {
  static const fq__sim_reply_opts_t plain_answer;
  if (!opts) opts = &plain_answer;
  memset(res, 0, sizeof *res);
  int dom = fq_vcp_peek_domain(msg, len);
  /* Anything not for VCSEC goes to INFOTAINMENT, whose verifier answers
   * INVALID_DOMAINS for a domain it does not serve. */
  int d = dom == FQ_VCP_DOMAIN_VCSEC ? FQ__SIM_VCSEC : FQ__SIM_INFO;
  fq_vcp_vdomain_t *vd = fq__sim_vehicle_vd(w, v, d);
  if (!vd) return FQ_ECRYPTO;
  int64_t now = fq_now_ms();
  fq_err_t err = {0};
  fq_vcp_vrequest_t *vr = malloc(sizeof *vr);
  if (!vr) return -ENOMEM;
  int rc = fq_vcp_vdomain_verify(vd, msg, len, now, vr, &err);
  if (rc) goto out;
  if (vr->is_handshake) {
    w->st_handshakes++;
    rc = fq_vcp_vdomain_handshake_reply(vd, vr, now, out, &err);
    goto out;
  }
  if (vr->fault == 0 && fq__sim_inject_fire(&v->faults.fault, &v->faults.rng))
    vr->fault = v->faults.fault_code;
  fq_vcp_app_cmd_t c;
  if (!vr->fault &&
      (rc = fq_vcp_app_decode_command(vcp_domain[d], vr->payload, vr->payload_len, &c, &err))) {
    /* Authentic but not a command this car knows: the car says so. */
    vr->fault = rc == FQ_EUNKCMD ? FQ_VCP_FAULT_INVALID_COMMAND : FQ_VCP_FAULT_DECODING;
  }
  if (vr->fault) {
    res->fault = vr->fault;
    w->st_signed_fault++;
    /* "session_info_clock_back": the session info the fault reply carries
     * is as the car would have written it info_back_ms earlier (same
     * epoch), like a reordered or replayed answer. */
    size_t before = out->len;
    rc = fq_vcp_vdomain_fault_reply(vd, vr, vr->fault, now - opts->info_back_ms, out, &err);
    fq_vcp_msg_t m;
    if (!rc && fq_vcp_msg_decode(out->data + before, out->len - before, &m, NULL) == 0) {
      res->session_info = m.has_session_info;
      fq_vcp_msg_clear(&m);
    }
    goto out;
  }
  snprintf(res->command, sizeof res->command, "%s", c.name);
  const char *why = execute(v, &c);
  if (!why) {
    res->executed = true;
    fq__sim_exec_record(w, v->vin, false, vcp_domain[d], vr->counter, c.name, vr->payload,
                        vr->payload_len);
  }
  w->st_signed_ok++;
  fq_buf_t app;
  fq_buf_init(&app, FQ_VCP_MAX_PAYLOAD);
  if (opts->garble && !why) {
    /* "garbled_reply": the car ran the command, and its answer, sealed
     * and authentic, holds bytes that are no reply message (a varint
     * that never ends). */
    static const uint8_t junk[] = {0x08, 0xff, 0xff, 0xff, 0xff};
    rc = fq_buf_append(&app, junk, sizeof junk);
  } else if (d == FQ__SIM_INFO) {
    rc = fq_vcp_app_carserver_reply(why == NULL, why, &app);
  } else {
    rc = fq_vcp_app_vcsec_reply(why ? FQ_VCP_OP_ERROR : -1, 0, &app);
  }
  if (!rc && opts->plaintext) {
    /* "plaintext_reply": the answer in clear although the request asked
     * for it encrypted: what a client cannot tell from a forged one. */
    fq_vcp_vrequest_t *clear = malloc(sizeof *clear);
    if (!clear) rc = -ENOMEM;
    else {
      *clear = *vr;
      clear->flags &= ~FQ_VCP_FLAG_ENCRYPT_RESPONSE;
      rc = fq_vcp_vdomain_reply(vd, clear, app.data, app.len, NULL, 0, out, &err);
      free(clear);
    }
  } else if (!rc) {
    rc = fq_vcp_vdomain_reply(vd, vr, app.data, app.len, w->fixed_nonce ? w->nonce : NULL, 0, out,
                              &err);
  }
  fq_buf_free(&app);
out:
  free(vr);
  return rc;
}

/* ---- REST commands (legacy cars) --------------------------------------------- */

/* The answer of a REST command: result and reason, plus the extra fields
 * Fleet API adds (navigation_request's "queued"). */
static int rest_answer(fq_buf_t *out, const char *why, bool queued) {
  json_t *r = json_pack("{s:b, s:s}", "result", why == NULL, "reason", why ? why : "");
  if (r && queued) json_object_set_new(r, "queued", json_true());
  json_t *j = r ? json_pack("{s:o}", "response", r) : NULL;
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s) return -ENOMEM;
  int rc = fq_buf_append_str(out, s);
  free(s);
  return rc;
}

/* navigation_request, read as the car's share handler would: the place in
 * value["android.intent.extra.TEXT"] becomes the active route's
 * destination.  Checked here on its own (not with fq_cmd_validate), so a
 * body fleetq gets wrong shows up as the car's 400. */
static int navigation(fq__sim_world_t *w, fq__sim_vehicle_t *v, const json_t *params,
                      fq_buf_t *out, fq_err_t *err) {
  const char *type = json_string_value(json_object_get(params, "type"));
  json_t *value = json_object_get(params, "value");
  const char *text = json_string_value(json_object_get(value, "android.intent.extra.TEXT"));
  if (!type || strcmp(type, "share_ext_content_raw") != 0)
    return fq_errf(err, FQ_EBADPARAM, "type: want share_ext_content_raw");
  if (!json_is_object(value) || !text || !*text)
    return fq_errf(err, FQ_EBADPARAM, "value: no android.intent.extra.TEXT");
  char *dest = strdup(text);
  if (!dest) return -ENOMEM;
  free(v->nav_dest);
  v->nav_dest = dest;
  v->nav_requests++;
  w->st_rest++;
  char *body = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
  fq__sim_exec_record(w, v->vin, false, 0, 0, "navigation_request",
                      (const uint8_t *)(body ? body : "{}"), body ? strlen(body) : 2);
  free(body);
  return rest_answer(out, NULL, true);
}

int fq__sim_vehicle_rest(fq__sim_world_t *w, fq__sim_vehicle_t *v, const char *name,
                         const json_t *params, fq_buf_t *out, fq_err_t *err) {
  const fq_cmd_t *cmd = fq_cmd_find(name, strlen(name), FQ_DEV_VEHICLE, NULL);
  if (!cmd || cmd->wake) return fq_errf(err, FQ_EUNKCMD, "unknown command %.40s", name);
  if (params && !json_is_object(params))
    return fq_errf(err, FQ_EBADPARAM, "the body must be a JSON object");
  if (strcmp(cmd->name, "navigation_request") == 0) {
    if (!params) return fq_errf(err, FQ_EBADPARAM, "the body must be a JSON object");
    return navigation(w, v, params, out, err);
  }
  fq_pval_t pv[FQ_MAX_PARAMS];
  fq_vcp_app_cmd_t c;
  memset(&c, 0, sizeof c);
  snprintf(c.name, sizeof c.name, "%s", cmd->name);
  size_t n = 0;
  const char *k;
  json_t *x;
  json_object_foreach((json_t *)params, k, x) {
    if (n == FQ_MAX_PARAMS) return fq_errf(err, FQ_EBADPARAM, "too many parameters");
    fq_pval_t *p = &pv[n++];
    memset(p, 0, sizeof *p);
    p->name = k;
    p->name_len = strlen(k);
    if (json_is_boolean(x)) {
      p->type = FQ_PT_BOOL;
      p->v.b = json_is_true(x);
    } else if (json_is_integer(x)) {
      p->type = FQ_PT_INT;
      p->v.i = json_integer_value(x);
    } else if (json_is_real(x)) {
      p->type = FQ_PT_FLOAT;
      p->v.f = json_real_value(x);
    } else if (json_is_string(x)) {
      p->type = FQ_PT_STR;
      p->v.s.p = json_string_value(x);
      p->v.s.n = json_string_length(x);
    } else {
      return fq_errf(err, FQ_EBADPARAM, "params.%.40s: unsupported JSON type", k);
    }
    if (c.nparams < sizeof c.params / sizeof c.params[0]) {
      size_t q = c.nparams++;
      c.params[q].name = k;
      c.params[q].type = p->type;
      c.params[q].b = p->type == FQ_PT_BOOL && p->v.b;
      c.params[q].i = p->type == FQ_PT_INT ? p->v.i : 0;
      c.params[q].f = p->type == FQ_PT_FLOAT ? p->v.f : 0;
      if (p->type == FQ_PT_STR)
        snprintf(c.params[q].s, sizeof c.params[q].s, "%s", json_string_value(x));
    }
  }
  int rc = fq_cmd_validate(cmd, pv, n, err);
  if (rc) return rc;
  const char *why = execute(v, &c);
  w->st_rest++;
  if (!why) {
    char *body = params ? json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    fq__sim_exec_record(w, v->vin, false, 0, 0, cmd->name, (const uint8_t *)(body ? body : "{}"),
                        body ? strlen(body) : 2);
    free(body);
  }
  return rest_answer(out, why, false);
}

/* ---- state ------------------------------------------------------------------ */

/* ---- issue 16 state, named as Tesla's vehicle_data names it where it has
 * a name (climate_keeper_mode, seat_heater_left, speed_limit_mode, ...);
 * the counters are fleetsim's own, like honk_count. */

static void set_new(json_t *o, const char *k, json_t *v) {
  if (o && v) json_object_set_new(o, k, v);
  else json_decref(v);
}

static const char *policy_name(int p) { return p == 2 ? "weekdays" : p == 1 ? "all_week" : "off"; }

static void add_more_state(const fq__sim_vehicle_t *v, json_t *charge, json_t *climate, json_t *vs) {
  static const char *const keeper[] = {"off", "on", "dog", "camp"};
  static const char *const cop[] = {"Unspecified", "Low", "Medium", "High"};
  static const char *const heater[] = {
      "seat_heater_left", "seat_heater_right", "seat_heater_rear_left",
      "seat_heater_rear_left_back", "seat_heater_rear_center", "seat_heater_rear_right",
      "seat_heater_rear_right_back", "seat_heater_third_row_left", "seat_heater_third_row_right"};
  set_new(climate, "climate_keeper_mode", json_string(keeper[v->keeper & 3]));
  set_new(climate, "bioweapon_mode", json_boolean(v->bioweapon));
  set_new(climate, "cop_activation_temperature", json_string(cop[v->cop_temp & 3]));
  for (int i = 0; i < 9; i++) set_new(climate, heater[i], json_integer(v->seat_heat[i]));
  set_new(climate, "seat_fan_front_left", json_integer(v->seat_cool[0]));
  set_new(climate, "seat_fan_front_right", json_integer(v->seat_cool[1]));
  set_new(climate, "auto_seat_climate_left", json_boolean(v->auto_seat[0]));
  set_new(climate, "auto_seat_climate_right", json_boolean(v->auto_seat[1]));
  set_new(climate, "steering_wheel_heater", json_boolean(v->wheel_heater));

  if (v->dep_on) set_new(charge, "scheduled_charging_mode", json_string("DepartBy"));
  set_new(charge, "scheduled_departure_time_minutes", json_integer(v->dep_time));
  set_new(charge, "off_peak_hours_end_time", json_integer(v->dep_off_peak_end));
  set_new(charge, "preconditioning_enabled", json_boolean(v->dep_on && v->dep_pre != 0));
  set_new(charge, "preconditioning_times", json_string(policy_name(v->dep_on ? v->dep_pre : 0)));
  set_new(charge, "off_peak_charging_enabled", json_boolean(v->dep_on && v->dep_off != 0));
  set_new(charge, "off_peak_charging_times", json_string(policy_name(v->dep_on ? v->dep_off : 0)));

  set_new(vs, "valet_mode", json_boolean(v->valet));
  set_new(vs, "valet_pin_needed", json_boolean(v->valet_pin_set));
  set_new(vs, "pin_to_drive_enabled", json_boolean(v->pin_to_drive));
  set_new(vs, "guest_mode_enabled", json_boolean(v->guest));
  set_new(vs, "speed_limit_mode",
          json_pack("{s:b, s:f, s:b, s:i, s:i}", "active", v->speed_limit_on, "current_limit_mph",
                    v->speed_limit_mph, "pin_code_set", v->speed_pin_set, "max_limit_mph", 120,
                    "min_limit_mph", 50));
  set_new(vs, "sun_roof_state", json_string(v->sunroof));
  set_new(vs, "homelink_count", json_integer(v->homelinks));
  set_new(vs, "software_update",
          json_pack("{s:s, s:I, s:s}", "status", v->update_at_ms ? "scheduled" : "available",
                    "scheduled_time_ms", (json_int_t)v->update_at_ms, "version", "2026.44.1"));
  set_new(vs, "media_info",
          json_pack("{s:s, s:f, s:i, s:i}", "media_playback_status",
                    v->playing ? "Playing" : "Paused", "audio_volume", v->volume, "track_index",
                    v->track, "favorite_index", v->fav));
}

static json_t *sched_json(const fq__sim_sched_t *s, bool charge) {
  json_t *o = json_pack("{s:I, s:i, s:b, s:b, s:f, s:f}", "id", (json_int_t)s->id, "days_of_week",
                        s->days, "one_time", s->one_time, "enabled", s->enabled, "latitude",
                        s->lat, "longitude", s->lon);
  if (charge) {
    set_new(o, "start_time", json_integer(s->start));
    set_new(o, "start_enabled", json_boolean(s->start_enabled));
    set_new(o, "end_time", json_integer(s->end));
    set_new(o, "end_enabled", json_boolean(s->end_enabled));
  } else {
    set_new(o, "precondition_time", json_integer(s->start));
  }
  return o;
}

static void add_schedules(const fq__sim_vehicle_t *v, json_t *j) {
  json_t *cs = json_array(), *ps = json_array();
  for (size_t i = 0; i < v->ncharge_sched; i++)
    json_array_append_new(cs, sched_json(&v->charge_sched[i], true));
  for (size_t i = 0; i < v->npre_sched; i++)
    json_array_append_new(ps, sched_json(&v->pre_sched[i], false));
  set_new(j, "charge_schedule_data", json_pack("{s:o}", "charge_schedules", cs));
  set_new(j, "preconditioning_schedule_data", json_pack("{s:o}", "precondition_schedules", ps));
}

json_t *fq__sim_vehicle_json(fq__sim_vehicle_t *v, int64_t now_ms) {
  const char *state = fq__sim_vehicle_state(v, now_ms);
  json_t *charge = json_pack(
      "{s:s, s:i, s:i, s:i, s:b, s:i, s:s, s:i, s:s, s:b}", "charging_state", v->charging,
      "charge_limit_soc", v->charge_limit, "charge_current_request", v->charge_amps,
      "charge_current_request_max", v->charge_amps_max, "charge_port_door_open", v->port_open,
      "battery_level", v->battery_level, "scheduled_charging_mode",
      v->sched_on ? "StartAt" : "Off", "scheduled_charging_start_time_minutes", v->sched_time,
      "charge_mode", v->charge_mode, "charge_cable_connected", v->cable);
  json_t *climate = json_pack("{s:b, s:f, s:f, s:b, s:s}", "is_climate_on", v->climate_on,
                              "driver_temp_setting", v->driver_temp, "passenger_temp_setting",
                              v->passenger_temp, "defrost_mode_max", v->precond_max,
                              "cabin_overheat_protection",
                              !v->cop_on ? "Off" : v->cop_fan_only ? "FanOnly" : "On");
  json_t *vs = json_pack(
      "{s:b, s:b, s:b, s:b, s:s, s:s, s:b, s:I, s:I}", "locked", v->locked, "sentry_mode",
      v->sentry, "ft", v->ft_open, "rt", v->rt_open, "windows", v->windows, "vehicle_name",
      v->name, "remote_start", v->remote_start, "honk_count", (json_int_t)v->honks,
      "flash_count", (json_int_t)v->flashes);
  add_more_state(v, charge, climate, vs);
  /* The last shared destination, as Tesla's drive_state names it. */
  json_t *drive = json_pack("{s:I}", "navigation_request_count", (json_int_t)v->nav_requests);
  set_new(drive, "active_route_destination", v->nav_dest ? json_string(v->nav_dest) : json_null());
  json_t *j = json_pack("{s:I, s:I, s:s, s:s, s:s, s:b, s:s, s:o, s:o, s:o, s:o}", "id",
                        (json_int_t)v->id, "vehicle_id", (json_int_t)v->id, "vin", v->vin,
                        "display_name", v->name, "state", state, "in_service", 0,
                        "command_signing", v->legacy ? "off" : "required", "charge_state",
                        charge, "climate_state", climate, "vehicle_state", vs, "drive_state",
                        drive);
  if (j) add_schedules(v, j);
  return j;
}
