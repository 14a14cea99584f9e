#!/usr/bin/python3
"""Issue 16, campaigns against fleetsim: a 2,000-car campaign at rate
500/s finishes with every device succeeded, spread over ~4 s; its progress
events come at most about once a second with counts that only grow, the
last one final with succeeded 2000; campaign_get agrees.  A campaign sent
in 4 parts starts only once every part is in; a part sent again is a dup;
a part with other devices is idempotency_mismatch.  The cars are
fleetsim's --gen-vehicles fleet (SMGEN000000000000 ...: paired, awake,
modern cars in every account), as a load test would use them."""
import time

from lib import dispatch as dl

N = 2000
RATE = 500
NP = 400  # the parted campaign: 4 parts of 100
CARS = ["SMGEN%012d" % i for i in range(N)]
TERMINAL = {"succeeded", "failed", "unknown", "expired", "cancelled", "superseded"}


def now_ms():
    return int(time.time() * 1000)


def campaign(w, key, cars, **kw):
    m = {"op": "campaign", "tenant": dl.TENANT, "key": key, "command": "flash_lights",
         "devices": [{"vin": v, "account": "acct1"} for v in cars]}
    m.update(kw)
    return w.client.call(m, timeout=60)


def get(w, **kw):
    m = {"op": "campaign_get", "tenant": dl.TENANT}
    m.update(kw)
    return w.client.call(m)


def camp_events(w, cid):
    w.drain()
    return [e for e in w.all_events if e.get("type") == "campaign" and e.get("id") == cid]


def wait_final(w, cid, timeout):
    end = time.time() + timeout
    while time.time() < end:
        evs = camp_events(w, cid)
        if evs and evs[-1].get("final"):
            return evs
        w.drain(0.2)
    return camp_events(w, cid)


def body(c, w):
    # ---- the big one -----------------------------------------------------
    t0 = now_ms()
    r = campaign(w, "fleet-flash", CARS, rate=RATE, ttl_ms=120000)
    acked = now_ms()
    c.ok(r.get("ok"), "campaign accepted", r)
    cid = r.get("id", "")
    c.ok(cid.startswith("c-"), "campaign id like c-<hex>", cid)
    c.eq(r.get("devices"), N, "devices in the reply")
    c.eq(r.get("dup"), False, "not a dup")
    c.eq((r.get("parts_received"), r.get("parts")), (1, 1), "one part")
    c.ok(r.get("state") in ("running", "scheduled"), "state after the ack", r.get("state"))
    # Acked only once every device command is durable: each one is there.
    for i in (0, N // 2, N - 1):
        g = w.client.call({"op": "get", "tenant": dl.TENANT, "key": f"fleet-flash/{CARS[i]}"})
        c.ok(g.get("ok"), f"device command {i} exists at the ack", g)
        c.eq(g.get("command", {}).get("campaign"), cid, f"device command {i} names its campaign")
    evs = wait_final(w, cid, 55)
    done_at = now_ms()
    c.ok(evs and evs[-1].get("final"), "a final progress event came", len(evs))
    if not evs:
        return
    last = evs[-1]
    c.eq(last.get("state"), "done", "final state done")
    c.eq(last.get("succeeded"), N, "final event: every device succeeded")
    c.eq(last.get("counts"), {"succeeded": N}, "final counts: only succeeded")
    c.eq(last.get("failed"), 0, "final event: none failed")
    c.eq(sum(1 for e in evs if e.get("final")), 1, "exactly one final event")
    # Progress: at most about one a second (state changes may add one),
    # counts of terminal devices never go down.
    prog = [e for e in evs if not e.get("final")]
    c.ok(len(prog) >= 2, "progress events while running", len(prog))
    gaps = [b["at"] - a["at"] for a, b in zip(prog, prog[1:]) if a["state"] == b["state"]]
    c.ok(all(g >= 900 for g in gaps), "progress events at most about one a second", gaps)
    done_seq = [sum(v for k, v in e["counts"].items() if k in TERMINAL) for e in evs]
    c.ok(all(a <= b for a, b in zip(done_seq, done_seq[1:])), "finished counts are monotone",
         done_seq)
    succ = [e["succeeded"] for e in evs]
    c.ok(all(a <= b for a, b in zip(succ, succ[1:])), "succeeded counts are monotone", succ)
    c.ok(all(e.get("tenant") == dl.TENANT and e.get("command") == "flash_lights" and
             e.get("devices") == N for e in evs), "events name tenant, command, devices")
    # The rate spread the dispatch: N / RATE = 4 s at least.
    g = get(w, key="fleet-flash")
    c.eq(g.get("state"), "done", "campaign_get: done")
    c.eq(g.get("counts"), {"succeeded": N}, "campaign_get: counts")
    c.eq((g.get("succeeded"), g.get("failed")), (N, 0), "campaign_get: succeeded / failed")
    c.eq(g.get("rate"), RATE, "campaign_get: rate")
    c.ok(g.get("started_at") and g.get("finished_at"), "started / finished times", g)
    span = g["finished_at"] - g["started_at"]
    c.ok(span >= (N - 1) * 1000 // RATE - 200, "the rate spreads the commands (>= ~4 s)", span)
    c.ok(done_at - t0 >= 3800, "finished no sooner than the rate allows", done_at - t0)
    last_dev = w.client.call({"op": "get", "tenant": dl.TENANT,
                              "key": f"fleet-flash/{CARS[N - 1]}"})["command"]
    c.ok(last_dev["not_before"] - g["started_at"] >= (N - 1) * 1000 // RATE - 5,
         "the last device's time is start + (N-1)/rate", last_dev["not_before"], g["started_at"])
    c.eq(get(w, id=cid).get("key"), "fleet-flash", "campaign_get by id")
    print(f"     {N} cars at {RATE}/s: acked in {acked - t0} ms, done after {done_at - t0} ms, "
          f"{len(prog)} progress events")
    c.eq(len(w.execs()), N, "fleetsim executed each car's command once")

    # ---- parts -------------------------------------------------------------
    cars = CARS[:NP]
    parts = [cars[i * 100:(i + 1) * 100] for i in range(4)]
    rs = []
    for i in (0, 2, 1):
        rs.append(campaign(w, "parted", parts[i], part=i + 1, parts=4))
        c.eq(rs[-1].get("state"), "receiving", f"part {i + 1}: receiving", rs[-1])
    c.eq([r.get("devices") for r in rs], [100, 200, 300], "devices so far in part replies")
    c.eq(rs[-1].get("parts_received"), 3, "parts_received")
    pid = rs[0]["id"]
    c.ok(all(r["id"] == pid for r in rs), "one id for all parts")
    again = campaign(w, "parted", parts[2], part=3, parts=4)
    c.eq((again.get("ok"), again.get("dup"), again.get("devices")), (True, True, 300),
         "a part sent again is a dup")
    other = campaign(w, "parted", parts[3], part=3, parts=4)
    c.eq(other.get("error"), "idempotency_mismatch", "a part with other devices: mismatch", other)
    diff = campaign(w, "parted", parts[3], part=4, parts=4, ttl_ms=5000)
    c.eq(diff.get("error"), "idempotency_mismatch", "a part with another ttl_ms: mismatch", diff)
    twice = campaign(w, "parted", [cars[0]], part=4, parts=4)
    c.eq(twice.get("error"), "bad_param", "a device of an earlier part: bad_param", twice)
    c.ok(cars[0] in twice.get("message", ""), "the message names it", twice.get("message"))
    pg = get(w, key="parted")
    c.eq((pg.get("state"), pg.get("counts")), ("receiving", {}), "nothing runs before all parts")
    c.eq(w.client.call({"op": "get", "tenant": dl.TENANT, "key": f"parted/{cars[0]}"}).get("error"),
         "not_found", "no device command before the last part")
    last = campaign(w, "parted", parts[3], part=4, parts=4)
    c.eq((last.get("ok"), last.get("devices"), last.get("parts_received"), last.get("state")),
         (True, NP, 4, "running"), "the last part starts it", last)
    evs = wait_final(w, pid, 40)
    c.ok(evs and evs[-1].get("final") and evs[-1].get("succeeded") == NP,
         "the parted campaign finishes with every device succeeded", evs[-1:] if evs else None)
    redo = campaign(w, "parted", parts[0], part=1, parts=4)
    c.eq((redo.get("dup"), redo.get("state")), (True, "done"), "part 1 again after the end: dup")


dl.run("test_campaign", body, sim_args=["--gen-vehicles", str(N)], shards=2, tap=False,
       daemon_opts={"--http-timeout-ms": 15000})
