"""The fleet_status pre-check (issue 16): before a car's first command the
daemon asks POST /api/1/vehicles/fleet_status, batched per account, and
keeps the answer for --fleet-status-ttl seconds.

* an unpaired asleep car: the command fails `key_not_paired` with the
  pairing link, and nothing else reaches the car: no wake_up (fleetsim's
  wake_ups stays 0), no signed_command; a second command shares the answer;
* a paired car: several commands, one fleet_status;
* a car without the Vehicle Command Protocol goes to REST at once (no
  signed attempt);
* the VINs of an account that come up while its fleet_status is out go
  together in the next request;
* fleet_status failing (fleetsim's fleet_status_status 503, then 404):
  the commands still go out and succeed, as without the pre-check, and
  the account's pre-check backs off; a 429 parks the account first;
* past the TTL the daemon asks again."""
import json
import time

from lib import dispatch as dl

U = dl.vin(161)      # asleep, key not paired
P = dl.vin(162)      # paired, awake
L = dl.vin(163)      # legacy (REST only)
F = dl.vin(164)      # acct2: fleet_status fails
B = [dl.vin(165 + i) for i in range(4)]   # acct3: slow account, batching
R = dl.vin(170)      # acct4: fleet_status answers 429
TTL = 5
FS = "POST /api/1/vehicles/fleet_status"


def asked(w, since=0):
    """The VIN lists of the fleet_status requests the daemon made."""
    out = []
    for r in w.tap.records(since):
        if r["method"] + " " + r["path"] == FS:
            out.append(sorted(json.loads(r.get("req") or b"{}").get("vins", [])))
    return out


def done(c, w, key, i, state="succeeded", **kw):
    c.ok(w.wait_terminal(i, 20), f"{key} terminal", w.states(i))
    return w.check_final(c, i, state, what=key, **kw)


def body(c, w):
    w.tap.keep_bodies = True

    # Unpaired, asleep: fails at once, no wake_up, nothing signed.
    m = w.tap.mark()
    a = w.submit("pc-unpaired", "set_charge_limit", U, params={"percent": 66})
    done(c, w, "pc-unpaired", a, "failed", error="key_not_paired",
         reason_prefix=dl.PAIRING_PREFIX, reason_has=(dl.PAIRING_LINK, "fleet_status"))
    w.check_events(c, a, r"queued dispatching failed", what="pc-unpaired")
    c.eq(w.tap.paths(m), [FS], "pc-unpaired: only fleet_status went out")
    c.eq(asked(w, m), [[U]], "pc-unpaired: fleet_status asked about the car")
    st = w.sim.vehicle(U)
    c.eq((st["wake_ups"], st["state"]), (0, "asleep"), "pc-unpaired: no wake_up, still asleep")
    # A second command within the TTL shares the answer.
    m = w.tap.mark()
    b = w.submit("pc-unpaired-2", "door_lock", U)
    done(c, w, "pc-unpaired-2", b, "failed", error="key_not_paired",
         reason_has=(dl.PAIRING_LINK,))
    c.eq(w.tap.paths(m), [], "pc-unpaired-2: nothing went out")
    c.eq(w.sim.vehicle(U)["wake_ups"], 0, "pc-unpaired-2: still no wake_up")
    w.check_execs(c, [], U)

    # Paired: three commands, one fleet_status.
    m = w.tap.mark()
    ids = []
    for n, (cmd, params) in enumerate([("set_charge_limit", {"percent": 70}),
                                       ("door_lock", None), ("flash_lights", None)]):
        i = w.submit(f"pc-paired-{n}", cmd, P, params=params)
        done(c, w, f"pc-paired-{n}", i, error=None)
        ids.append(i)
    c.eq(asked(w, m), [[P]], "pc-paired: fleet_status asked once for three commands",
         w.tap.paths(m))
    c.eq(w.tap.paths(m)[0], FS, "pc-paired: asked before the first command")
    w.check_execs(c, ["set_charge_limit", "door_lock", "flash_lights"], P)

    # Legacy: REST at once, no signed attempt.
    m = w.tap.mark()
    i = w.submit("pc-legacy", "door_unlock", L)
    done(c, w, "pc-legacy", i, error=None, http=200)
    w.check_events(c, i, r"queued dispatching sent succeeded", what="pc-legacy")
    c.eq(w.tap.paths(m), [FS, f"POST /api/1/vehicles/{L}/command/door_unlock"],
         "pc-legacy: fleet_status, then REST; no signed_command")
    w.check_execs(c, ["door_unlock"], L)

    # Batching: while acct3's first fleet_status is out (600 ms latency),
    # three more cars come up: asked together in the next one.
    m = w.tap.mark()
    first = w.submit("pc-batch-0", "flash_lights", B[0], account="acct3")
    time.sleep(0.15)
    rest = [w.submit(f"pc-batch-{k}", "flash_lights", B[k], account="acct3")
            for k in range(1, 4)]
    for k, i in enumerate([first] + rest):
        done(c, w, f"pc-batch-{k}", i, error=None)
    c.eq(asked(w, m), [[B[0]], sorted(B[1:])],
         "pc-batch: two fleet_status requests, the second with three VINs")
    stats = w.sim.stats()
    c.eq(stats.get("fleet_status"), len(asked(w)), "fleetsim counted the same fleet_status")

    # fleet_status failing: acct2 answers it 503; the command goes out as
    # before and succeeds; the next one (in the back-off) is not pre-checked.
    m = w.tap.mark()
    i = w.submit("pc-fail", "set_charge_limit", F, params={"percent": 61}, account="acct2")
    done(c, w, "pc-fail", i, error=None)
    recs = [r for r in w.tap.records(m)]
    c.eq([(r["path"].rsplit("/", 1)[-1], r["status"]) for r in recs][:2],
         [("fleet_status", 503), ("signed_command", 200)],
         "pc-fail: fleet_status 503, then the command as before",
         [(r["path"], r["status"]) for r in recs])
    m = w.tap.mark()
    j = w.submit("pc-fail-2", "door_lock", F, account="acct2")
    done(c, w, "pc-fail-2", j, error=None)
    c.eq(w.tap.count("fleet_status", m), 0, "pc-fail-2: backing off, not asked")
    # After the back-off (at most the TTL) it asks again; a 404 (an API
    # without fleet_status) falls back the same way.
    w.sim.patch_account("acct2", {"fleet_status_status": 404})
    time.sleep(TTL + 0.3)
    m = w.tap.mark()
    k = w.submit("pc-fail-404", "flash_lights", F, account="acct2")
    done(c, w, "pc-fail-404", k, error=None)
    c.eq([(r["path"].rsplit("/", 1)[-1], r["status"]) for r in w.tap.records(m)][:1],
         [("fleet_status", 404)], "pc-fail-404: asked again after the back-off")
    w.check_execs(c, ["set_charge_limit", "door_lock", "flash_lights"], F)

    # A 429 to fleet_status: billed like any request, it parks the account
    # (Retry-After 1 s) as a command's 429 does; then the command goes out
    # as before.
    m = w.tap.mark()
    i = w.submit("pc-429", "door_lock", R, account="acct4")
    done(c, w, "pc-429", i, error=None)
    recs = w.tap.records(m)
    c.eq([(r["path"].rsplit("/", 1)[-1], r["status"]) for r in recs][:2],
         [("fleet_status", 429), ("signed_command", 200)],
         "pc-429: fleet_status 429, then the command", [(r["path"], r["status"]) for r in recs])
    if len(recs) >= 2:
        c.ok(recs[1]["t"] - recs[0]["t"] >= 0.8, "pc-429: the account waited the Retry-After",
             recs[1]["t"] - recs[0]["t"])
    w.check_execs(c, ["door_lock"], R)

    # Past the TTL the paired car is asked about again (once).
    m = w.tap.mark()
    i = w.submit("pc-ttl", "door_unlock", P)
    done(c, w, "pc-ttl", i, error=None)
    c.eq(asked(w, m), [[P]], "pc-ttl: asked again past --fleet-status-ttl")
    # And a pairing fault makes it ask again: the key is removed from P.
    w.sim.patch_vehicle(P, {"paired": False})
    m = w.tap.mark()
    i = w.submit("pc-fault", "door_lock", P)
    done(c, w, "pc-fault", i, "failed", error="key_not_paired")
    m2 = w.tap.mark()
    i = w.submit("pc-after-fault", "flash_lights", P)
    done(c, w, "pc-after-fault", i, "failed", error="key_not_paired",
         reason_has=("fleet_status",))
    c.eq(asked(w, m2), [[P]], "pc-after-fault: fleet_status asked again after the fault")
    c.eq(w.tap.paths(m2), [FS], "pc-after-fault: nothing but fleet_status went out")
    w.check_seq(c)


dl.run("test_dispatch_precheck", body, shards=1,
       daemon_opts={"--fleet-status-ttl": TTL},
       vehicles=[dl.default_vehicle(U, paired=False, asleep=True),
                 dl.default_vehicle(P), dl.default_vehicle(L, legacy=True),
                 dl.default_vehicle(F), dl.default_vehicle(R)]
       + [dl.default_vehicle(v) for v in B],
       accounts=[{"id": "acct1", "vins": [U, P, L]},
                 {"id": "acct2", "vins": [F], "fleet_status_status": 503},
                 {"id": "acct3", "vins": B, "latency": {"fixed_ms": 600}},
                 {"id": "acct4", "vins": [R], "fleet_status_status": 429}])
