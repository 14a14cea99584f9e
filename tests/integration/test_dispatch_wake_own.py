"""The user's own `wake_up` command is billed like the dispatcher's wake-ups
(issue 12, point 3), with --wake-max 2 and a 500 ms poll interval:

* a car whose every answer is a 503: the wake_up is sent again after the
  backoff, twice in all, then failed naming the limit (vehicle_asleep);
* an asleep car: one wake_up, a poll finds it online: succeeded, without a
  second wake_up after the poll.
Each checks the events, the final record (`get` wakes), the requests the
daemon made and fleetsim's wake_ups."""
import time

from lib import dispatch as dl

VE = dl.vin(161)  # every request answered 503
VF = dl.vin(162)  # asleep, wakes in 300 ms


def body(c, w):
    w.sim.patch_vehicle(VE, {"fail": {"http_503": {"prob": 1}}})
    e = w.submit("wo-503", "wake_up", VE)
    f = w.submit("wo-asleep", "wake_up", VF)
    c.ok(w.wait_terminal([e, f], 30), "terminal", w.states(e), w.states(f))
    time.sleep(1.0)  # longer than backoff and poll: another wake_up would show

    # 503 every time: two wake_ups (--wake-max 2), then failed.
    w.check_events(c, e, r"queued dispatching sent retrying sent retrying failed", what="503")
    w.check_final(c, e, "failed", error="vehicle_asleep", what="503",
                  reason_has=("vehicle not online after 2 wake_up requests",
                              "the limit (--wake-max 2)", "HTTP 503"))
    c.ok("retrying in" not in (w.final(e)["reason"] or ""), "503: last answer without the plan",
         w.final(e)["reason"])
    c.eq(w.get(e)["wakes"], 2, "503: get wakes")
    c.eq(w.tap.count(VE + "/wake_up$"), 2, "503: two wake_up requests", w.tap.paths())
    c.eq(w.sim.vehicle(VE)["wake_ups"], 0, "503: fleetsim counted none (answered before)")

    # Asleep: one wake_up, then polls until online; done at the poll.
    w.check_events(c, f, r"queued dispatching sent waking succeeded", what="asleep")
    w.check_final(c, f, "succeeded", error=None, what="asleep")
    c.eq(w.get(f)["wakes"], 1, "asleep: get wakes")
    seen = [r["method"] + " " + r["path"].rsplit("/", 1)[-1]
            for r in w.tap.records() if VF in r["path"]]
    c.eq(seen[0], "POST wake_up", "asleep: wake_up first", seen)
    c.eq(seen[-1], "GET " + VF, "asleep: the last request is the poll that saw it online",
         seen)
    c.eq(seen.count("POST wake_up"), 1, "asleep: one wake_up request", seen)
    st = w.sim.vehicle(VF)
    c.eq((st["wake_ups"], st["state"]), (1, "online"), "asleep: fleetsim wake_ups, state")
    c.eq(w.execs(VE) + w.execs(VF), [], "nothing executed")
    w.check_seq(c)


dl.run("test_dispatch_wake_own", body,
       vehicles=[dl.default_vehicle(VE), dl.default_vehicle(VF, asleep=True, wake_ms=300)],
       daemon_opts={"--wake-max": 2, "--wake-poll-ms": 500})
