"""open_trunk, close_trunk and open_frunk to a car without the Vehicle
Command Protocol: they exist only as signed commands (Fleet API has no
command/<name> for them), so fleetqd refuses them at dispatch: `failed`
with error `unknown_command` and a reason naming the command and the way
that works (actuate_trunk), and nothing is sent to Fleet API for them: no
REST call to an endpoint that does not exist, no wake-up, no signed
attempt (here fleet_status said so before the first command;
test_dispatch_legacy_closures_422: a 422 on a signed attempt).  actuate_trunk, which has a
REST form, still goes to the same car as REST."""
from lib import dispatch as dl

V = dl.vin(131)
CLOSURES = ("open_trunk", "close_trunk", "open_frunk")


def refused(c, w, key, command):
    mark = w.tap.mark()
    a = w.submit(key, command, V)
    c.ok(w.wait_terminal(a, 20), f"{command}: terminal", w.states(a))
    w.check_events(c, a, r"queued dispatching failed", what=command)
    w.check_final(c, a, "failed", error="unknown_command", http=None, fault=None,
                  reason_has=(command, "no REST form", "Vehicle Command Protocol",
                              "actuate_trunk"), what=command)
    c.eq([p for p in w.tap.paths(mark) if not p.endswith("/fleet_status")], [],
         f"{command}: nothing sent for it")


def body(c, w):
    for i, command in enumerate(CLOSURES):
        refused(c, w, f"legacy-closure-{i}", command)
    c.eq(w.execs(V), [], "the car executed none of them")
    # The REST way to move the trunk still works on this car.
    mark = w.tap.mark()
    b = w.submit("legacy-actuate", "actuate_trunk", V, params={"which_trunk": "rear"})
    c.ok(w.wait_terminal(b, 20), "actuate_trunk terminal", w.states(b))
    w.check_final(c, b, "succeeded", error=None, http=200)
    c.eq(w.tap.paths(mark), [f"POST /api/1/vehicles/{V}/command/actuate_trunk"],
         "actuate_trunk: one REST call")
    w.check_seq(c)


dl.run("test_dispatch_legacy_closures", body, vehicles=[dl.default_vehicle(V, legacy=True)])
