#!/usr/bin/python3
"""Issue 16, scheduled commands against fleetsim: a command with
`not_before` runs at its time, and a command submitted after it for the
same car, without not_before, runs first (it is not held behind the
scheduled one); a scheduled command whose time passed while fleetqd was
down runs once fleetqd is back."""
import time

from lib import dispatch as dl
from lib import fqlib

CAR, CAR2 = dl.vin(131), dl.vin(132)


def now_ms():
    return int(time.time() * 1000)


def first_at(evs, state):
    return next((e["at"] for e in evs if e["state"] == state), None)


def body(c, w):
    nb = now_ms() + 2500
    sched = w.submit("sd-late", "set_vehicle_name", vin_=CAR,
                     params={"vehicle_name": "scheduled name"}, not_before=nb)
    plain = w.submit("sd-now", "set_vehicle_name", vin_=CAR, params={"vehicle_name": "plain name"})
    c.ok(w.wait_terminal([plain], 20), "plain command done")
    w.check_final(c, plain, "succeeded", error=None)
    c.ok(w.final(plain)["at"] < nb, "the later plain command ran before the scheduled one's time",
         w.final(plain)["at"], nb)
    c.eq(w.sim.vehicle(CAR)["vehicle_state"]["vehicle_name"], "plain name",
         "car has the plain name before the scheduled time")
    c.eq(w.get(sched)["state"], "scheduled", "scheduled one still scheduled")
    c.ok(w.wait_terminal([sched], 20), "scheduled command done")
    w.check_events(c, sched, r"scheduled queued dispatching sent succeeded")
    w.check_final(c, sched, "succeeded", error=None)
    d_at = first_at(w.evs(sched), "dispatching")
    c.ok(d_at is not None and nb <= d_at <= nb + 1000, "dispatched at its time (within 1 s)",
         d_at, nb)
    c.eq(w.sim.vehicle(CAR)["vehicle_state"]["vehicle_name"], "scheduled name",
         "the scheduled name was set last")
    c.eq(len(w.execs(CAR)), 2, "two executions on the car")

    # fleetqd down over the time: the command runs once it is back.
    nb2 = now_ms() + 1500
    late = w.submit("sd-span", "set_vehicle_name", vin_=CAR2,
                    params={"vehicle_name": "after restart"}, not_before=nb2, ttl_ms=60000)
    w.drain()
    w.sub.close()
    w.client.close()
    w.sub = w.client = None
    w.daemon.kill9()
    time.sleep(max(0, (nb2 + 1500 - now_ms()) / 1000))
    c.eq(w.execs(CAR2), [], "nothing executed while fleetqd was down")
    w.start_daemon()
    started = now_ms()
    c.ok(w.wait_terminal([late], 20), "spanned command done after the restart")
    w.check_events(c, late, r"scheduled queued dispatching sent succeeded")
    w.check_final(c, late, "succeeded", error=None)
    q_at = first_at(w.evs(late), "queued")
    c.ok(q_at is not None and started - 500 <= q_at <= started + 1500,
         "queued at once after the start", q_at, started)
    c.eq(w.sim.vehicle(CAR2)["vehicle_state"]["vehicle_name"], "after restart",
         "executed by the car after the restart")
    w.check_seq(c)


dl.run("test_schedule_dispatch", body, vehicles=[dl.default_vehicle(v) for v in (CAR, CAR2)])
