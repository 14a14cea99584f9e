"""Issue 16, "the full command set": every new vehicle command goes through
fleetqd to fleetsim and succeeds, and the car's state as Fleet API shows it
(GET /api/1/vehicles/{vin}, with the account's own token) changes as asked.

Car V takes signed commands (INFOTAINMENT, one session, in submit order:
per-device order makes the sequence deterministic).  Car L is a legacy car:
a few of the same commands as REST calls with JSON bodies, the day list
sent as text.  The simulator's execution log shows each command executed
exactly once.

navigation_request has no signed form (Fleet API takes it only as REST,
the official proxy forwards it): car N, asleep and on the protocol, is
woken first and then gets it as a REST call, as does legacy car L; the
destination shows in drive_state.active_route_destination."""
from lib import dispatch as dl

V = dl.vin(161)
L = dl.vin(162)
N = dl.vin(163)  # wakes (100 ms) before the first poll (200 ms): one wake_up
DEST = "1 Infinite Loop, Cupertino, CA"
NAV = {"type": "share_ext_content_raw", "value": {"android.intent.extra.TEXT": DEST},
       "locale": "en-US", "timestamp_ms": "1700000000000"}

SCHED = {"lat": 37.5, "lon": -122.25, "start_time": 120, "start_enabled": True,
         "end_time": 420, "end_enabled": True, "days_of_week": "Mon,Wed, fri",
         "id": 1700000000, "enabled": True}
PRE = {"lat": 37.5, "lon": -122.25, "precondition_time": 450, "days_of_week": "Weekdays",
       "id": 1700000001, "enabled": True, "one_time": True}

# (command, params) in the order sent to V.
PHASE1 = [
    ("add_charge_schedule", SCHED),
    ("add_charge_schedule", dict(SCHED, id=1700000002, days_of_week="All")),
    ("remove_charge_schedule", {"id": 1700000002}),
    ("add_precondition_schedule", PRE),
    ("add_precondition_schedule", dict(PRE, id=1700000003)),
    ("remove_precondition_schedule", {"id": 1700000003}),
    ("set_scheduled_departure", {"enable": True, "departure_time": 480, "end_off_peak_time": 360,
                                 "preconditioning_enabled": True,
                                 "off_peak_charging_weekdays_only": True}),
    ("set_climate_keeper_mode", {"climate_keeper_mode": 2}),
    ("set_bioweapon_mode", {"on": True, "manual_override": False}),
    ("set_cop_temp", {"cop_temp": 3}),
    ("remote_seat_heater_request", {"seat_position": 4, "level": 2}),
    ("remote_seat_cooler_request", {"seat_position": 2, "seat_cooler_level": 4}),
    ("remote_steering_wheel_heater_request", {"on": True}),
    ("remote_auto_seat_climate_request", {"auto_seat_position": 1, "auto_climate_on": True}),
    ("set_valet_mode", {"on": True, "password": "1234"}),
    ("set_pin_to_drive", {"on": True, "password": "4321"}),
    ("speed_limit_set_limit", {"limit_mph": 70}),
    ("speed_limit_activate", {"pin": "2468"}),
    ("guest_mode", {"enable": True}),
    ("sun_roof_control", {"state": "vent"}),
    ("trigger_homelink", {"lat": 37.5, "lon": -122.25}),
    ("schedule_software_update", {"offset_sec": 7200}),
    ("media_toggle_playback", None),
    ("media_next_track", None),
    ("media_next_track", None),
    ("media_prev_track", None),
    ("media_next_fav", None),
    ("media_next_fav", None),
    ("media_prev_fav", None),
    ("adjust_volume", {"volume": 5.5}),
    ("media_volume_up", None),
    ("media_volume_up", None),
    ("media_volume_down", None),
]
PHASE2 = [
    ("reset_valet_pin", None),
    ("set_valet_mode", {"on": False}),
    ("speed_limit_deactivate", {"pin": "2468"}),
    ("cancel_software_update", None),
    ("set_scheduled_departure", {"enable": False}),
    ("sun_roof_control", {"state": "close"}),
]
TRUNK = [("open_trunk", None), ("open_trunk", None), ("open_frunk", None), ("open_frunk", None)]
LEGACY = [
    ("add_charge_schedule", dict(SCHED, days_of_week="Sun, saturday")),
    ("set_climate_keeper_mode", {"climate_keeper_mode": 3, "manual_override": True}),
    ("remote_seat_heater_request", {"seat_position": 0, "level": 3}),
    ("adjust_volume", {"volume": 2}),
]


def send(w, c, prefix, vin, seq):
    ids = []
    for n, (cmd, params) in enumerate(seq):
        ids.append(w.submit(f"{prefix}-{n}-{cmd}", cmd, vin, params=params))
    c.ok(w.wait_terminal(ids, 60), f"{prefix}: all terminal", [w.state(i) for i in ids])
    for i, (cmd, _) in zip(ids, seq):
        w.check_final(c, i, "succeeded", error=None)
    return ids


def executed(w, vin):
    return [e["command"] for e in w.execs(vin)]


def body(c, w):
    token = w.accounts[0]["token"]
    st = w.sim.state(V, token)
    c.eq(st["climate_state"]["climate_keeper_mode"], "off", "keeper starts off")
    c.eq(st["charge_schedule_data"]["charge_schedules"], [], "no charge schedules at first")

    send(w, c, "p1", V, PHASE1)
    c.eq(executed(w, V), [cmd for cmd, _ in PHASE1], "V executed phase 1 once each, in order")
    c.ok(all(e["domain"] == 3 for e in w.execs(V)), "all signed, INFOTAINMENT", w.execs(V))

    st = w.sim.state(V, token)
    cs, cl, vs = st["charge_state"], st["climate_state"], st["vehicle_state"]
    scheds = st["charge_schedule_data"]["charge_schedules"]
    c.eq([(s["id"], s["days_of_week"], s["start_time"], s["end_time"], s["enabled"],
           s["latitude"], s["longitude"]) for s in scheds],
         [(1700000000, 2 | 8 | 32, 120, 420, True, 37.5, -122.25)],
         "one charge schedule (Mon, Wed, Fri), the second removed")
    pres = st["preconditioning_schedule_data"]["precondition_schedules"]
    c.eq([(p["id"], p["days_of_week"], p["precondition_time"], p["one_time"]) for p in pres],
         [(1700000001, 62, 450, True)], "one precondition schedule (weekdays)")
    c.eq((cs["scheduled_charging_mode"], cs["scheduled_departure_time_minutes"],
          cs["off_peak_hours_end_time"], cs["preconditioning_times"],
          cs["off_peak_charging_times"]),
         ("DepartBy", 480, 360, "all_week", "weekdays"), "scheduled departure")
    c.eq(cl["climate_keeper_mode"], "dog", "climate keeper: dog")
    c.eq(cl["bioweapon_mode"], True, "bioweapon defense on")
    c.eq(cl["cop_activation_temperature"], "High", "COP temperature high")
    c.eq(cl["seat_heater_rear_center"], 2, "rear center seat heater medium")
    c.eq(cl["seat_heater_left"], 0, "other seats untouched")
    c.eq(cl["seat_fan_front_right"], 4, "front right seat cooler high")
    c.eq(cl["steering_wheel_heater"], True, "steering wheel heater on")
    c.eq((cl["auto_seat_climate_left"], cl["auto_seat_climate_right"]), (True, False),
         "auto seat climate front left only")
    c.eq((vs["valet_mode"], vs["valet_pin_needed"]), (True, True), "valet mode on with a PIN")
    c.eq(vs["pin_to_drive_enabled"], True, "PIN to drive on")
    c.eq((vs["speed_limit_mode"]["active"], vs["speed_limit_mode"]["current_limit_mph"],
          vs["speed_limit_mode"]["pin_code_set"]), (True, 70, True), "speed limit mode")
    c.eq(vs["guest_mode_enabled"], True, "guest mode on")
    c.eq(vs["sun_roof_state"], "vent", "sun roof vented")
    c.eq(vs["homelink_count"], 1, "homelink triggered once")
    c.eq(vs["software_update"]["status"], "scheduled", "software update scheduled")
    c.ok(vs["software_update"]["scheduled_time_ms"] > 0, "with its time", vs["software_update"])
    mi = vs["media_info"]
    c.eq((mi["media_playback_status"], mi["track_index"], mi["favorite_index"],
          mi["audio_volume"]), ("Playing", 1, 1, 6.5), "media: playing, tracks, favs, volume")

    send(w, c, "p2", V, PHASE2)
    st = w.sim.state(V, token)
    vs, cs = st["vehicle_state"], st["charge_state"]
    c.eq((vs["valet_mode"], vs["valet_pin_needed"]), (False, False), "valet off, PIN reset")
    c.eq(vs["speed_limit_mode"]["active"], False, "speed limit mode off (same PIN)")
    c.eq(vs["software_update"]["status"], "available", "software update cancelled")
    c.eq(cs["preconditioning_times"], "off", "departure cleared")
    c.eq(cs["scheduled_charging_mode"], "Off", "no departure mode")
    c.eq(vs["sun_roof_state"], "closed", "sun roof closed")

    # The non-toggling closures (VCSEC): a position, so open sent twice stays
    # open (actuate_trunk's MOVE would close it again).
    send(w, c, "tr", V, TRUNK)
    c.eq([(e["command"], e["domain"]) for e in w.execs(V)][-len(TRUNK):],
         [(cmd, 2) for cmd, _ in TRUNK], "trunk commands executed once each, signed VCSEC")
    vs = w.sim.state(V, token)["vehicle_state"]
    c.eq((vs["rt"], vs["ft"]), (True, True), "rear trunk and frunk open after two opens each")
    send(w, c, "tr2", V, [("close_trunk", None), ("close_trunk", None)])
    vs = w.sim.state(V, token)["vehicle_state"]
    c.eq((vs["rt"], vs["ft"]), (False, True), "rear trunk closed (twice), frunk still open")

    # A wrong speed-limit PIN is the car's refusal, and fails the command.
    i = w.submit("p3-wrong-pin", "speed_limit_activate", V, params={"pin": "1111"})
    c.ok(w.wait_terminal(i, 30), "wrong PIN terminal", w.states(i))
    w.check_final(c, i, "failed", reason_has=("incorrect_pin",))

    # The legacy car: REST bodies, day list as text.
    send(w, c, "leg", L, LEGACY)
    c.eq(executed(w, L), [cmd for cmd, _ in LEGACY], "L executed each once")
    c.ok(all(e["domain"] == 0 for e in w.execs(L)), "as REST calls", w.execs(L))
    st = w.sim.state(L, token)
    c.eq([s["days_of_week"] for s in st["charge_schedule_data"]["charge_schedules"]], [65],
         "legacy: schedule on Sunday and Saturday")
    c.eq(st["climate_state"]["climate_keeper_mode"], "camp", "legacy: keeper camp")
    c.eq(st["climate_state"]["seat_heater_left"], 3, "legacy: front left heater high")
    c.eq(st["vehicle_state"]["media_info"]["audio_volume"], 2, "legacy: volume 2")

    navigation(c, w, token)
    w.check_seq(c)


def navigation(c, w, token):
    c.eq(w.sim.state(N, token)["drive_state"]["active_route_destination"], None,
         "N: no route at first")
    c.eq(w.sim.vehicle(N)["state"], "asleep", "N: asleep at first")
    i = w.submit("nav-n", "navigation_request", N, params=NAV)
    c.ok(w.wait_terminal(i, 30), "navigation_request to N terminal", w.states(i))
    w.check_final(c, i, "succeeded", error=None)
    w.check_events(c, i, r"queued dispatching( \w+)* waking( \w+)* sent succeeded")
    c.eq(w.sim.vehicle(N)["wake_ups"], 1, "N: woken once before the command")
    c.eq(w.get(i)["wakes"], 1, "get: one wake for the navigation_request")
    c.eq([(e["command"], e["domain"]) for e in w.execs(N)], [("navigation_request", 0)],
         "N executed it once, as a REST call (not signed)")
    c.eq(w.sim.state(N, token)["drive_state"]["active_route_destination"], DEST,
         "N: the destination is the active route")
    # The legacy car takes it the same way (no wake needed: it is awake).
    j = w.submit("nav-l", "navigation_request", L,
                 params=dict(NAV, value={"android.intent.extra.TEXT": "Paris"}))
    c.ok(w.wait_terminal(j, 30), "navigation_request to L terminal", w.states(j))
    w.check_final(c, j, "succeeded", error=None)
    c.eq(w.sim.state(L, token)["drive_state"]["active_route_destination"], "Paris",
         "L: the destination is the active route")
    # No destination: refused at submit, nothing sent (Tesla would bill it).
    r = w.client.call({"op": "submit", "tenant": dl.TENANT, "key": "nav-bad", "account": "acct1",
                       "command": "navigation_request", "vin": N,
                       "params": {"type": "share_ext_content_raw", "value": {"x": "y"}}})
    c.eq((r.get("ok"), r.get("error")), (False, "bad_param"), "no destination: bad_param", r)
    c.ok("android.intent.extra.TEXT" in r.get("message", ""), "the message names the key", r)
    c.eq(len(w.execs(N)), 1, "N executed nothing more")


dl.run("test_dispatch_commands16", body,
       vehicles=[dl.default_vehicle(V), dl.default_vehicle(L, legacy=True),
                 dl.default_vehicle(N, asleep=True, wake_ms=100)])
