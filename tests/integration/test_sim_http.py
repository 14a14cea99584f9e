"""fleetsim's Fleet API scenarios over real HTTP: tokens (unknown, expired,
refresh rotation, JWT claims, expires_in), scopes, asleep / offline cars and
wake-ups, wrong region (421 + Alt-Svc), legacy cars (422 / REST), rate
limits (next N, N per window, per account and per device, Retry-After),
503 / 500, seeded probabilities, latency, held connections, replies lost
after execution, fleet_status, users/region, energy sites, /sim/reset and
the execution log.
"""
import base64
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from lib.sim import VIN, Sim, base_config, check, finish, run_tests, vc

SIM = None
VIN2 = "5YJ3SIM0000000002"
LEGACY = "LEGACY00000000003"
PROTOCOL_REQUIRED = ("Tesla Vehicle Command Protocol required, please refer to the documentation "
                     "here: https://developer.tesla.com/docs/fleet-api/announcements"
                     "#2023-10-09-rest-api-vehicle-commands-endpoint-deprecation-warning")


def config():
    cfg = base_config()
    cfg["accounts"].append({"id": "charger", "token": "tc", "refresh_token": "rc",
                            "scopes": ["openid", "vehicle_charging_cmds"], "vins": [VIN]})
    cfg["accounts"].append({"id": "nothing", "token": "tn", "refresh_token": "rn",
                            "scopes": ["openid"], "vins": [VIN], "sites": [42]})
    return cfg


def f(token="t1", timeout=10):
    return SIM.fleet(token, timeout=timeout)


def signed_cmd(token, vin, domain, payload):
    """Handshake (with token t1) then send one command with `token`."""
    s, r, si = f().session(SIM.client, vin, domain)
    check(s is not None, r, si)
    msg, req = s.sign(SIM.client.pub, payload)
    st, j, reply = f(token).signed(vin, msg)
    return st, j, (s.open_reply(reply, req) if reply else None)


def oauth(form):
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(SIM.base + "/oauth2/v3/token", data=data, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def reset():
    st, j = SIM.ctl("POST", "/sim/reset", {})
    check(st == 200, st, j)


def jwt_claims(tok):
    parts = tok.split(".")
    check(len(parts) == 3, tok)
    p = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(p))


# ---- tests ----------------------------------------------------------------------------

def test_status_and_region():
    with urllib.request.urlopen(SIM.base + "/status", timeout=5) as r:
        check(r.read() == b"ok")
    st, hd, j = f().call("GET", "/api/1/users/region")
    check(st == 200 and j["response"]["region"] == "na", st, j)
    check(j["response"]["fleet_api_base_url"] == "https://fleet-api.prd.na.vn.cloud.tesla.com", j)


def test_bad_and_missing_tokens():
    st, hd, j = f("nope").call("GET", "/api/1/vehicles/" + VIN)
    check(st == 401 and j["error"] == "invalid bearer token" and j["response"] is None, st, j)
    req = urllib.request.Request(SIM.base + "/api/1/vehicles/" + VIN)
    try:
        urllib.request.urlopen(req, timeout=5)
        check(False, "no token accepted")
    except urllib.error.HTTPError as e:
        check(e.code == 401, e.code)


def test_expired_token_and_refresh_rotation():
    reset()
    SIM.patch_account("acct1", {"token_expired": True, "expires_in": 3600})
    st, hd, j = f().call("GET", "/api/1/vehicles/" + VIN)
    check(st == 401 and "expired" in j["error"], st, j)
    st, j = oauth({"grant_type": "refresh_token", "client_id": "app", "refresh_token": "r1"})
    check(st == 200, st, j)
    check(j["expires_in"] == 3600 and j["token_type"] == "Bearer", j)
    c = jwt_claims(j["access_token"])
    check(c["sub"] == "acct1" and isinstance(c["scp"], list) and "vehicle_cmds" in c["scp"], c)
    check(c["exp"] - c["iat"] == 3600 and any("fleet-api.prd.na" in a for a in c["aud"]), c)
    new_access, new_refresh = j["access_token"], j["refresh_token"]
    check(new_refresh != "r1" and new_refresh.startswith("NA_"), new_refresh)
    st, hd, j2 = f(new_access).call("GET", "/api/1/vehicles/" + VIN)
    check(st == 200, st, j2)
    # Single use: r1 is dead now, the new one works exactly once.
    st, j = oauth({"grant_type": "refresh_token", "client_id": "app", "refresh_token": "r1"})
    check(st == 401 and j["error"] == "login_required", st, j)
    st, j = oauth({"grant_type": "refresh_token", "client_id": "app",
                   "refresh_token": new_refresh})
    check(st == 200, st, j)
    st, j3 = oauth({"grant_type": "refresh_token", "client_id": "app",
                    "refresh_token": new_refresh})
    check(st == 401, st, j3)
    # The old config token is still expired; the newest works.
    st, hd, _ = f("t1").call("GET", "/api/1/vehicles/" + VIN)
    check(st == 401, st)
    st, hd, _ = f(j["access_token"]).call("GET", "/api/1/vehicles/" + VIN)
    check(st == 200, st)
    st, j = oauth({"grant_type": "password", "refresh_token": "x"})
    check(st == 400 and j["error"] == "unsupported_grant_type", st, j)
    # expires_in is honoured.
    SIM.patch_account("acct1", {"expires_in": 1})
    st, j = oauth({"grant_type": "refresh_token", "refresh_token": j3 and SIM.ctl(
        "GET", "/sim/accounts/acct1")[1]["response"]["refresh_token"]})
    check(st == 200 and j["expires_in"] == 1, st, j)
    st, hd, _ = f(j["access_token"]).call("GET", "/api/1/vehicles/" + VIN)
    check(st == 200, st)
    time.sleep(1.1)
    st, hd, j = f(j["access_token"]).call("GET", "/api/1/vehicles/" + VIN)
    check(st == 401, st, j)
    reset()


def test_scopes_follow_the_command_table():
    reset()
    st, j, out = signed_cmd("tc", VIN, vc.DOMAIN_INFOTAINMENT, vc.PAYLOADS["charge_start"][1])
    check(st == 200 and out["fault"] == "NONE", "charging scope allows charge_start", st, j, out)
    st, j, out = signed_cmd("tc", VIN, vc.DOMAIN_VCSEC, vc.PAYLOADS["door_unlock"][1])
    check(st == 403 and j["error"] == "Unauthorized missing scopes", st, j)
    st, j, out = signed_cmd("tn", VIN, vc.DOMAIN_INFOTAINMENT, vc.PAYLOADS["charge_stop"][1])
    check(st == 403 and j["error"] == "Unauthorized missing scopes", st, j)
    st, hd, j = f("tn").call("GET", "/api/1/vehicles/" + VIN)
    check(st == 403, st, j)
    st, hd, j = f("tn").call("POST", "/api/1/energy_sites/42/backup",
                             {"backup_reserve_percent": 30})
    check(st == 403 and j["error"] == "Unauthorized missing scopes", st, j)
    ex = [e["command"] for e in SIM.executions(VIN)]
    check(ex == ["charge_start"], ex)
    # Scopes can change at run time.
    SIM.patch_account("tc", {"scopes": ["vehicle_cmds"]})
    st, j, out = signed_cmd("tc", VIN, vc.DOMAIN_VCSEC, vc.PAYLOADS["door_unlock"][1])
    check(st == 200 and out["fault"] == "NONE", st, j, out)
    reset()


def test_asleep_until_woken():
    reset()
    SIM.patch_vehicle(VIN, {"asleep": True, "wake_ms": 400})
    s, r, si = None, None, None
    msg, req = SIM.client.handshake_request(vc.DOMAIN_INFOTAINMENT)
    st, j, reply = f().signed(VIN, msg)
    check(st == 408 and j["error"] == "vehicle unavailable: vehicle is offline or asleep", st, j)
    check(SIM.state(VIN)["state"] == "asleep")
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/wake_up" % VIN)
    check(st == 200 and j["response"]["state"] == "asleep", st, j)
    st, j, reply = f().signed(VIN, msg)
    check(st == 408, "still waking", st, j)
    time.sleep(0.5)
    check(SIM.state(VIN)["state"] == "online")
    st, j, out = signed_cmd("t1", VIN, vc.DOMAIN_INFOTAINMENT, vc.PAYLOADS["honk_horn"][1])
    check(st == 200 and out["fault"] == "NONE", st, j, out)
    SIM.patch_vehicle(VIN, {"offline": True})
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/wake_up" % VIN)
    check(st == 200 and j["response"]["state"] == "offline", st, j)
    st, j, reply = f().signed(VIN, msg)
    check(st == 408, st, j)
    reset()


def test_wrong_region_421():
    reset()
    SIM.patch_account("acct1", {"region": "eu"})
    st, hd, j = f().call("GET", "/api/1/vehicles/" + VIN)
    check(st == 421, st, j)
    check(j["error"].startswith(
        "user out of region, use base URL: https://fleet-api.prd.eu.vn.cloud.tesla.com/"), j)
    check(hd.get("Alt-Svc", "").startswith("h2=https://fleet-api.prd.eu.vn.cloud.tesla.com"), hd)
    st, hd, j = f().call("GET", "/api/1/users/region")
    check(st == 200 and j["response"]["region"] == "eu", st, j)
    SIM.patch_account("acct1", {"base_url": "https://fleet-api.example.tesla.com"})
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/wake_up" % VIN)
    check(st == 421 and "https://fleet-api.example.tesla.com/" in j["error"], st, j)
    reset()


def test_legacy_cars_and_rest_commands():
    reset()
    msg, req = SIM.client.handshake_request(vc.DOMAIN_INFOTAINMENT)
    st, j, reply = f().signed(LEGACY, msg)
    check(st == 422 and "does not support" in j["error"], st, j)
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/command/door_unlock" % LEGACY, {})
    check(st == 200 and j["response"] == {"result": True, "reason": ""}, st, j)
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/command/set_charge_limit" % LEGACY,
                         {"percent": 65})
    check(st == 200 and j["response"]["result"] is True, st, j)
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/command/set_charge_limit" % LEGACY,
                         {"percent": 120})
    check(st == 400, st, j)
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/command/charge_stop" % LEGACY, {})
    check(st == 200 and j["response"] == {"result": False, "reason": "not_charging"}, st, j)
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/command/no_such_thing" % LEGACY, {})
    check(st == 400 and j["error"] == "invalid_command", st, j)
    stt = SIM.state(LEGACY)
    check(stt["vehicle_state"]["locked"] is False and stt["charge_state"]["charge_limit_soc"] == 65
          and stt["command_signing"] == "off", stt)
    ex = SIM.executions(LEGACY)
    check([e["command"] for e in ex] == ["door_unlock", "set_charge_limit"], ex)
    check(json.loads(bytes.fromhex(ex[1]["payload"])) == {"percent": 65}, ex)
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/command/honk_horn" % VIN, {})
    check(st == 403 and j["error"] == PROTOCOL_REQUIRED and j["response"] is None, st, j)
    reset()


def test_rate_limits():
    reset()
    SIM.patch_account("acct1", {"fail": {"http_429": {"next": 2, "retry_after": 7}}})
    for _ in range(2):
        st, hd, j = f().call("GET", "/api/1/vehicles/" + VIN)
        check(st == 429 and hd.get("Retry-After") == "7", st, hd, j)
    st, hd, j = f().call("GET", "/api/1/vehicles/" + VIN)
    check(st == 200, st, j)
    # Per device: 3 per minute on VIN, VIN2 unaffected.
    SIM.patch_vehicle(VIN, {"rate_limit": {"limit": 3, "window_s": 60}})
    codes = [f().call("GET", "/api/1/vehicles/" + VIN)[0] for _ in range(5)]
    check(codes == [200, 200, 200, 429, 429], codes)
    st, hd, j = f().call("GET", "/api/1/vehicles/" + VIN)
    check(st == 429 and 0 < int(hd["Retry-After"]) <= 60, hd)
    check(f().call("GET", "/api/1/vehicles/" + VIN2)[0] == 200)
    # Per account: everything of the account.
    SIM.patch_vehicle(VIN, {"rate_limit": None})
    SIM.patch_account("acct1", {"rate_limit": {"limit": 2, "window_ms": 500, "retry_after": 1}})
    codes = [f().call("GET", "/api/1/vehicles/" + v)[0] for v in (VIN, VIN2, VIN2)]
    check(codes == [200, 200, 429], codes)
    time.sleep(0.6)
    check(f().call("GET", "/api/1/vehicles/" + VIN2)[0] == 200)
    reset()


def test_5xx_next_n_not_executed():
    reset()
    SIM.patch_vehicle(VIN, {"fail": {"http_503": {"next": 1}, "http_500": {"next": 1}}})
    s, r, si = f().session(SIM.client, VIN, vc.DOMAIN_INFOTAINMENT) if False else (None, 0, 0)
    msg, req = SIM.client.handshake_request(vc.DOMAIN_INFOTAINMENT)
    st1 = f().signed(VIN, msg)[0]
    st2 = f().signed(VIN, msg)[0]
    st3 = f().signed(VIN, msg)[0]
    check((st1, st2, st3) == (503, 500, 200), st1, st2, st3)
    check(SIM.executions(VIN) == [])
    reset()


def test_seeded_probability_is_reproducible():
    reset()
    runs = []
    for _ in range(2):
        SIM.patch_vehicle(VIN, {"seed": 7, "fail": {"http_503": {"prob": 0.5}}})
        runs.append([f().call("GET", "/api/1/vehicles/" + VIN)[0] for _ in range(24)])
    check(runs[0] == runs[1], runs)
    check(200 in runs[0] and 503 in runs[0], runs[0])
    reset()


def test_latency_fixed_and_jitter():
    reset()
    SIM.patch_vehicle(VIN, {"latency": {"fixed_ms": 250, "jitter_ms": 100}})
    t0 = time.time()
    st = f().call("GET", "/api/1/vehicles/" + VIN)[0]
    dt = time.time() - t0
    check(st == 200 and 0.24 <= dt < 1.5, st, dt)
    # Delays never block other requests.
    t0 = time.time()
    check(f().call("GET", "/api/1/vehicles/" + VIN2)[0] == 200)
    check(time.time() - t0 < 0.2, time.time() - t0)
    reset()


def test_timeout_holds_the_connection():
    reset()
    # Held, then closed without an answer: the client sees a hang-up after
    # hold_ms (its own timeout being longer).
    SIM.patch_vehicle(VIN, {"fail": {"timeout": {"next": 1, "hold_ms": 1500}}})
    msg, req = SIM.client.handshake_request(vc.DOMAIN_INFOTAINMENT)
    t0 = time.time()
    try:
        st, j, reply = f().signed(VIN, msg)
        check(False, "the held request answered", st, j)
    except (ConnectionError, urllib.error.URLError) as e:
        check("timed out" not in str(e), e)
    dt = time.time() - t0
    check(dt >= 1.4, dt)
    # With a shorter client timeout the client gives up first; the server
    # keeps serving others meanwhile.
    SIM.patch_vehicle(VIN, {"fail": {"timeout": {"next": 1, "hold_ms": 3000}}})
    t0 = time.time()
    try:
        f(timeout=0.5).call("GET", "/api/1/vehicles/" + VIN)
        check(False, "no timeout")
    except (socket.timeout, TimeoutError, urllib.error.URLError):
        pass
    check(time.time() - t0 < 1.5)
    check(f().call("GET", "/api/1/vehicles/" + VIN)[0] == 200)
    check(SIM.executions(VIN) == [])
    reset()


def test_drop_reply_after_execution():
    reset()
    s, r, si = f().session(SIM.client, VIN, vc.DOMAIN_INFOTAINMENT)
    SIM.patch_vehicle(VIN, {"fail": {"drop_reply": {"next": 1, "status": 504}}})
    msg, req = s.sign(SIM.client.pub, vc.set_charge_limit(55)[1])
    st, j, reply = f().signed(VIN, msg)
    check(st == 504 and reply is None, st, j)
    ex = SIM.executions(VIN)
    check(len(ex) == 1 and ex[0]["command"] == "set_charge_limit" and
          ex[0]["counter"] == req["counter"], ex)
    check(SIM.state(VIN)["charge_state"]["charge_limit_soc"] == 55)
    # 540 on an energy site: executed, reply lost.
    st, j = SIM.ctl("POST", "/sim/sites/42", {"fail": {"drop_reply": {"next": 1, "status": 540}}})
    check(st == 200, st, j)
    st, hd, j = f().call("POST", "/api/1/energy_sites/42/backup", {"backup_reserve_percent": 44})
    check(st == 540, st, j)
    check([e["command"] for e in SIM.executions(site=42)] == ["backup"])
    st, hd, j = f().call("GET", "/api/1/energy_sites/42/site_info")
    check(j["response"]["backup_reserve_percent"] == 44, j)
    # Close without answering.
    SIM.patch_vehicle(VIN, {"fail": {"drop_reply": {"next": 1, "status": 0}}})
    msg, req = s.sign(SIM.client.pub, vc.PAYLOADS["honk_horn"][1])
    try:
        f().signed(VIN, msg)
        check(False, "a dropped reply arrived")
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        check("timed out" not in str(e), e)
    ex = SIM.executions(VIN)
    check(len(ex) == 2 and ex[1]["command"] == "honk_horn", ex)
    # Re-sending the same bytes cannot execute it twice.
    st, j, reply = f().signed(VIN, msg)
    check(st == 200 and s.open_reply(reply, req)["fault"] == "INVALID_TOKEN_OR_COUNTER", st, j)
    check(len(SIM.executions(VIN)) == 2)
    check(SIM.state(VIN)["vehicle_state"]["honk_count"] == 1)
    reset()


def test_fleet_status():
    reset()
    st, hd, j = f().call("POST", "/api/1/vehicles/fleet_status",
                         {"vins": [VIN, VIN2, LEGACY, "NOTMINE0000000000"]})
    check(st == 200, st, j)
    r = j["response"]
    check(sorted(r["key_paired_vins"]) == sorted([VIN, LEGACY]), r)
    check(r["unpaired_vins"] == [VIN2], r)
    check(r["vehicle_info"][VIN]["vehicle_command_protocol_required"] is True, r)
    check(r["vehicle_info"][LEGACY]["vehicle_command_protocol_required"] is False, r)
    check("NOTMINE0000000000" not in r["vehicle_info"], r)
    st, hd, j = f().call("GET", "/api/1/vehicles")
    check(st == 200 and j["count"] == 3, st, j)
    check({v["vin"]: v["command_signing"] for v in j["response"]} ==
          {VIN: "required", VIN2: "required", LEGACY: "off"}, j)


def test_energy_sites():
    reset()
    ok = [("backup", {"backup_reserve_percent": 35}),
          ("operation", {"default_real_mode": "autonomous"}),
          ("storm_mode", {"enabled": False}),
          ("grid_import_export", {"customer_preferred_export_rule": "pv_only",
                                  "disallow_charge_from_grid_with_solar_installed": True}),
          ("off_grid_vehicle_charging_reserve", {"off_grid_vehicle_charging_reserve_percent": 15}),
          ("time_of_use_settings", {"tou_settings": {"tariff_content_v2": {"name": "t"}}})]
    for what, body in ok:
        st, hd, j = f().call("POST", "/api/1/energy_sites/42/" + what, body)
        check(st == 200 and j["response"] == {"code": 201, "message": "Updated"}, what, st, j)
    bad = [("backup", {"backup_reserve_percent": 101}), ("backup", {}),
           ("operation", {"default_real_mode": "turbo"}), ("storm_mode", {"enabled": "yes"}),
           ("grid_import_export", {"customer_preferred_export_rule": "always"}),
           ("grid_import_export", {}),
           ("off_grid_vehicle_charging_reserve", {"off_grid_vehicle_charging_reserve_percent": -1}),
           ("time_of_use_settings", {"tou_settings": 3}), ("backup", {"surprise": 1})]
    for what, body in bad:
        st, hd, j = f().call("POST", "/api/1/energy_sites/42/" + what, body)
        check(st == 400 and j["error"] == "invalid_field", what, body, st, j)
    st, hd, j = f().call("GET", "/api/1/energy_sites/42/site_info")
    check(st == 200, st, j)
    r = j["response"]
    check(r["backup_reserve_percent"] == 35 and r["default_real_mode"] == "autonomous", r)
    check(r["user_settings"]["storm_mode_enabled"] is False, r)
    check(r["components"]["customer_preferred_export_rule"] == "pv_only", r)
    check(r["components"]["disallow_charge_from_grid_with_solar_installed"] is True, r)
    check(r["off_grid_vehicle_charging_reserve_percent"] == 15, r)
    check(r["tou_settings"]["tariff_content_v2"]["name"] == "t", r)
    ex = SIM.executions(site=42)
    check([e["command"] for e in ex] == [w for w, _ in ok], ex)
    check(SIM.executions(vin=VIN) == [], "site executions leak into the VIN filter")
    st, hd, j = f().call("GET", "/api/1/energy_sites/43/site_info")
    check(st == 404, st, j)
    # Site failures: next request 503, then fine.
    st, j = SIM.ctl("POST", "/sim/sites/42", {"fail": {"http_503": {"next": 1}}})
    check(st == 200, st, j)
    check(f().call("POST", "/api/1/energy_sites/42/backup", {"backup_reserve_percent": 5})[0] == 503)
    check(f().call("POST", "/api/1/energy_sites/42/backup", {"backup_reserve_percent": 5})[0] == 200)
    reset()


def test_unknown_devices_and_routes():
    st, hd, j = f().call("GET", "/api/1/vehicles/NOTMINE0000000000")
    check(st == 404, st, j)
    st, hd, j = f("tc").call("GET", "/api/1/vehicles/" + LEGACY)
    check(st == 404, "a VIN of another account", st, j)
    st, hd, j = f().call("GET", "/api/1/nothing")
    check(st == 404, st, j)
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/signed_command" % VIN,
                         {"routable_message": "!!!"})
    check(st == 400, st, j)
    st, j = SIM.ctl("POST", "/sim/vehicles/" + VIN, {"no_such_field": 1})
    check(st == 400, st, j)
    # Valid base64 of bytes that are no RoutableMessage.
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/signed_command" % VIN,
                         {"routable_message": base64.b64encode(b"\xff" * 40).decode()})
    check(st == 400, st, j)
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/signed_command" % VIN, {})
    check(st == 400, st, j)
    # Bodies are capped.
    st, hd, j = f().call("POST", "/api/1/vehicles/%s/signed_command" % VIN,
                         {"routable_message": "A" * 100000})
    check(st == 413, st, j)
    check(SIM.executions(VIN) == [])


def test_reset_restores_the_config():
    st, j, out = signed_cmd("t1", VIN, vc.DOMAIN_VCSEC, vc.PAYLOADS["door_unlock"][1])
    check(out["fault"] == "NONE")
    SIM.patch_account("acct1", {"token_expired": True})
    reset()
    check(SIM.executions() == [])
    stt = SIM.state(VIN)
    check(stt["vehicle_state"]["locked"] is True, stt)


def main():
    global SIM
    SIM = Sim(config(), fleet_key=True).start()
    failed = 1
    try:
        failed = run_tests([test_status_and_region, test_bad_and_missing_tokens,
                   test_expired_token_and_refresh_rotation, test_scopes_follow_the_command_table,
                   test_asleep_until_woken, test_wrong_region_421,
                   test_legacy_cars_and_rest_commands, test_rate_limits,
                   test_5xx_next_n_not_executed, test_seeded_probability_is_reproducible,
                   test_latency_fixed_and_jitter, test_timeout_holds_the_connection,
                   test_drop_reply_after_execution, test_fleet_status, test_energy_sites,
                   test_unknown_devices_and_routes, test_reset_restores_the_config])
    finally:
        finish(SIM, failed)


if __name__ == "__main__":
    main()
