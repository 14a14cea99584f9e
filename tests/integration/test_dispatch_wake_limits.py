"""Wake limits (issue 12, points 3 and 4), one car each, with --wake-max 2
and a 500 ms poll interval:

* asleep_status 503: the car answers a plain 503 while asleep; the daemon
  takes the wake path (one wake_up), then the command succeeds, executed once;
* `wake: false`: an asleep car fails the command at once (vehicle_asleep,
  "nothing was sent"), no wake_up, never executed;
* infotainment_lag_ms: INFOTAINMENT answers 408 for a while after the car
  came online; the daemon polls and sends again, one wake_up only;
* an offline car: two wake_ups (--wake-max 2), then failed naming the limit.
Each checks the events, the final record (`get` wakes), the simulator's
execution log and its wake_ups."""
from lib import dispatch as dl

VA = dl.vin(151)  # asleep, 503 while asleep
VB = dl.vin(152)  # asleep, wake: false
VC = dl.vin(153)  # asleep, infotainment lag after waking
VD = dl.vin(154)  # offline
POLL_MS = 500
LAG_MS = 1200


def body(c, w):
    a = w.submit("wl-503", "set_charge_limit", VA, params={"percent": 61})
    b = w.submit("wl-nowake", "set_charge_limit", VB, params={"percent": 62}, wake=False)
    cc = w.submit("wl-lag", "set_charge_limit", VC, params={"percent": 63})
    d = w.submit("wl-max", "set_charge_limit", VD, params={"percent": 64}, ttl_ms=30000)
    ids = [a, b, cc, d]
    c.ok(w.wait_terminal(ids, 30), "terminal", [w.states(i) for i in ids])

    # 503 asleep -> the wake path.
    w.check_events(c, a, r"queued dispatching waking( \w+)* sent succeeded", what="503")
    w.check_final(c, a, "succeeded", error=None, what="503")
    wk = [e for e in w.evs(a) if e["state"] == "waking"]
    c.ok(wk and wk[0]["http"] == 503, "503: waking came from the 503", wk)
    c.eq(w.get(a)["wakes"], 1, "503: get wakes")
    c.eq(w.sim.vehicle(VA)["wake_ups"], 1, "503: fleetsim wake_ups")
    w.check_execs(c, ["set_charge_limit"], VA, what="503")

    # wake: false -> vehicle_asleep, nothing sent, no wake_up.
    w.check_events(c, b, r"queued dispatching failed", what="nowake")
    w.check_final(c, b, "failed", error="vehicle_asleep", what="nowake",
                  reason_has=("vehicle is asleep (HTTP 408)", "wake: false",
                              "nothing was sent to the car", "no wake_up"))
    g = w.get(b)
    c.eq((g["wakes"], g["wake"]), (0, False), "nowake: get wakes and wake")
    c.eq(w.sim.vehicle(VB)["wake_ups"], 0, "nowake: fleetsim wake_ups")
    c.eq(w.sim.vehicle(VB)["state"], "asleep", "nowake: the car still sleeps")
    c.eq(w.execs(VB), [], "nowake: never executed")

    # INFOTAINMENT lag -> polls, one wake only.
    w.check_events(c, cc, r"queued dispatching waking( \w+)* sent succeeded", what="lag")
    w.check_final(c, cc, "succeeded", error=None, what="lag")
    # The handshake after the poll that saw the car online got 408 (the
    # lag); the daemon polled again instead of sending another wake_up.
    seen = [(r["method"], r["path"].rsplit("/", 1)[-1], r["status"])
            for r in w.tap.records() if VC in r["path"]]
    first_online = next((k for k, s in enumerate(seen) if s[0] == "GET"), len(seen))
    late = [s for s in seen[first_online:] if s[1] == "signed_command" and s[2] == 408]
    c.ok(late, "lag: 408 after the car reported online", seen)
    c.eq(w.get(cc)["wakes"], 1, "lag: get wakes")
    c.eq(w.sim.vehicle(VC)["wake_ups"], 1, "lag: fleetsim wake_ups")
    c.eq(w.tap.count(VC + r"/wake_up"), 1, "lag: one wake_up request", w.tap.paths())
    w.check_execs(c, ["set_charge_limit"], VC, what="lag")
    c.eq(w.sim.vehicle(VC)["charge_state"]["charge_limit_soc"], 63, "lag: car state")

    # --wake-max 2 reached.
    w.check_events(c, d, r"queued dispatching( \w+)* waking failed", what="max")
    w.check_final(c, d, "failed", error="vehicle_asleep", what="max",
                  reason_has=("after 2 wake_up requests", "--wake-max 2"))
    c.eq(w.get(d)["wakes"], 2, "max: get wakes")
    c.eq(w.sim.vehicle(VD)["wake_ups"], 2, "max: fleetsim wake_ups")
    c.eq(w.execs(VD), [], "max: never executed")
    w.check_seq(c)


dl.run("test_dispatch_wake_limits", body,
       vehicles=[dl.default_vehicle(VA, asleep=True, asleep_status=503, wake_ms=300),
                 dl.default_vehicle(VB, asleep=True),
                 dl.default_vehicle(VC, asleep=True, wake_ms=300, infotainment_lag_ms=LAG_MS),
                 dl.default_vehicle(VD, offline=True)],
       daemon_opts={"--wake-max": 2, "--wake-poll-ms": POLL_MS})
