"""A closure (open_trunk) to a car without the Vehicle Command Protocol
when fleetqd does not know that yet (no fleet_status pre-check): the signed
attempt gets 422, and instead of resending it as command/open_trunk, an
endpoint Fleet API does not have, fleetqd ends it `failed` with
`unknown_command`; the next closure to that car is refused without any
request (test_dispatch_legacy_closures has the pre-check case)."""
from lib import dispatch as dl

V = dl.vin(132)


def body_422(c, w):
    # No fleet_status pre-check: the first command is signed, the car
    # answers 422, and only then is the car known to be without the
    # protocol.  The closure then fails as above instead of being resent.
    a = w.submit("legacy-422", "open_trunk", V)
    c.ok(w.wait_terminal(a, 20), "after a 422: terminal", w.states(a))
    w.check_final(c, a, "failed", error="unknown_command",
                  reason_has=("open_trunk", "no REST form"), what="after a 422")
    c.eq(w.tap.count(r"POST /api/1/vehicles/\w+/command/open_trunk$"), 0,
         "after a 422: no REST call to command/open_trunk", w.tap.paths())
    c.eq(w.execs(V), [], "after a 422: not executed")
    # Remembered: the next closure is refused without a signed attempt.
    mark = w.tap.mark()
    b = w.submit("legacy-422-again", "open_frunk", V)
    c.ok(w.wait_terminal(b, 20), "the next closure: terminal", w.states(b))
    w.check_events(c, b, r"queued dispatching failed", what="the next closure")
    w.check_final(c, b, "failed", error="unknown_command", http=None,
                  reason_has=("open_frunk", "no REST form"), what="the next closure")
    c.eq(w.tap.paths(mark), [], "the next closure: no request at all")
    w.check_seq(c)


dl.run("test_dispatch_legacy_closures_422", body_422,
       vehicles=[dl.default_vehicle(V, legacy=True)],
       daemon_opts={"--fleet-status-ttl": 0})
