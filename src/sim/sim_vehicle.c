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
}

void fq__sim_vehicle_free(fq__sim_vehicle_t *v) {
  for (int d = 0; d < 2; d++) {
    fq_vcp_vdomain_destroy(&v->vd[d]);
    fq_vcp_key_destroy(&v->key[d]);
  }
  free(v->extra_keys);
  free(v->accounts);
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

/* Run one command against the car's state.  Returns NULL on success or
 * the reason the car refuses it (what Tesla puts in plain_text / reason). */
static const char *execute(fq__sim_vehicle_t *v, const fq_vcp_app_cmd_t *c) {
  const char *n = c->name;
  if (strcmp(n, "door_lock") == 0) v->locked = true;
  else if (strcmp(n, "door_unlock") == 0) v->locked = false;
  else if (strcmp(n, "remote_start_drive") == 0) v->remote_start = true;
  else if (strcmp(n, "actuate_trunk") == 0) {
    const char *which = p_str(c, "which_trunk");
    if (!which || strcmp(which, "rear") == 0) v->rt_open = !v->rt_open;
    else if (strcmp(which, "front") == 0) v->ft_open = !v->ft_open;
    else return "invalid_value";
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

int fq__sim_vehicle_rest(fq__sim_world_t *w, fq__sim_vehicle_t *v, const char *name,
                         const json_t *params, fq_buf_t *out, fq_err_t *err) {
  const fq_cmd_t *cmd = fq_cmd_find(name, strlen(name), FQ_DEV_VEHICLE, NULL);
  if (!cmd || cmd->domain == FQ_DOMAIN_NONE)
    return fq_errf(err, FQ_EUNKCMD, "unknown command %.40s", name);
  if (params && !json_is_object(params))
    return fq_errf(err, FQ_EBADPARAM, "the body must be a JSON object");
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
  json_t *j = json_pack("{s:{s:b, s:s}}", "response", "result", why == NULL, "reason",
                        why ? why : "");
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s) return -ENOMEM;
  rc = fq_buf_append_str(out, s);
  free(s);
  return rc;
}

/* ---- state ------------------------------------------------------------------ */

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
  json_t *j = json_pack("{s:I, s:I, s:s, s:s, s:s, s:b, s:s, s:o, s:o, s:o}", "id",
                        (json_int_t)v->id, "vehicle_id", (json_int_t)v->id, "vin", v->vin,
                        "display_name", v->name, "state", state, "in_service", 0,
                        "command_signing", v->legacy ? "off" : "required", "charge_state",
                        charge, "climate_state", climate, "vehicle_state", vs);
  return j;
}
