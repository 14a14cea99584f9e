"""Car refusals mean the same on both paths (issue 12, point 7): the same
refusal ends the same way whether the car answered a signed command
(CarServer actionStatus ERROR with plain_text) or Fleet API's REST endpoint
({"result":false,"reason":...}).  `already_set`, `is_charging` for
charge_start and `not_charging` for charge_stop: succeeded with the car's
word as reason, nothing executed; `disconnected`: failed, nothing
executed."""
from lib import dispatch as dl

SIGNED = dl.vin(131)
REST = dl.vin(132)


def body(c, w):
    for v, path in ((SIGNED, "signed_command"), (REST, "command/")):
        ids = []
        # Each refusal against the state set just before it: one at a time.
        steps = [("already_set", None, "set_charge_limit", {"percent": 80}, "succeeded"),
                 ("is_charging", "Charging", "charge_start", None, "succeeded"),
                 ("not_charging", "Stopped", "charge_stop", None, "succeeded"),
                 ("disconnected", "Disconnected", "charge_start", None, "failed")]
        for n, (word, charging, cmd, params, state) in enumerate(steps):
            if charging:
                w.sim.patch_vehicle(v, {"charging_state": charging})
            i = w.submit(f"ref-{v}-{n}", cmd, v, params=params)
            c.ok(w.wait_terminal(i, 20), f"{v} {word} terminal", w.states(i))
            ids.append((word, i, state))
        for word, i, state in ids:
            tag = f"{path} {word}"
            w.check_events(c, i, r"queued dispatching( \w+)* sent " + state, what=tag)
            if state == "succeeded":
                w.check_final(c, i, "succeeded", error=None, what=tag, http=200)
                c.eq(w.final(i)["reason"], word, f"{tag}: the car's word is the reason")
            else:
                w.check_final(c, i, "failed", error="vehicle_fault", what=tag, http=200,
                              reason_prefix="vehicle could not execute the command: disconnected")
        c.eq(w.execs(v), [], f"{path}: nothing executed on the car")
    w.check_seq(c)


dl.run("test_dispatch_refusals", body,
       vehicles=[dl.default_vehicle(SIGNED), dl.default_vehicle(REST, legacy=True)])
