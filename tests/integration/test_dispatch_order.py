"""Per-device order: 10 commands to each of two cars, submitted
interleaved and pipelined, are executed per car in submit order (the
car's execution log and its session counters agree), one at a time."""
from lib import dispatch as dl
from lib import fqlib

CARS = [dl.vin(119), dl.vin(120)]
N = 10


def body(c, w):
    reqs, keys = [], []
    for k in range(N):
        for n, v in enumerate(CARS):
            key = f"ord-{n}-{k}"
            keys.append((v, key, f"e2e {n} name {k}"))
            reqs.append({"op": "submit", "tenant": dl.TENANT, "key": key, "account": "acct1",
                         "vin": v, "command": "set_vehicle_name",
                         "params": {"vehicle_name": f"e2e {n} name {k}"}})
    replies, order = fqlib.pipeline(w.client, reqs)
    ids = []
    for req, (v, key, name) in zip(order, keys):
        r = replies[req]
        c.ok(r.get("ok"), "accepted", r)
        ids.append(r.get("id"))
        w.events.setdefault(r.get("id"), [])
    c.ok(w.wait_terminal(ids, 60), "all terminal")
    for i in ids:
        w.check_events(c, i, r"queued dispatching sent succeeded")
        w.check_final(c, i, "succeeded", error=None)
    for n, v in enumerate(CARS):
        ex = w.execs(v)
        want = [dl.hexs(f"e2e {n} name {k}") for k in range(N)]
        got = [next((k for k, h in enumerate(want) if h in e["payload"]), None) for e in ex]
        c.eq(got, list(range(N)), f"car {n}: executed in submit order")
        cn = [e["counter"] for e in ex]
        c.eq(cn, sorted(set(cn)), f"car {n}: counters strictly increase")
        c.eq(w.sim.vehicle(v)["vehicle_state"]["vehicle_name"], f"e2e {n} name {N - 1}",
             f"car {n}: last name wins")
        # One at a time: each command of a car was sent after the previous succeeded.
        mine = [i for i, (vv, _, _) in zip(ids, keys) if vv == v]
        for p, q in zip(mine, mine[1:]):
            done = w.final(p)["at"]
            sent = next((e["at"] for e in w.evs(q) if e["state"] == "dispatching"), None)
            c.ok(sent is not None and sent >= done, f"car {n}: {q} dispatched after {p} ended",
                 done, sent)
    w.check_seq(c)


dl.run("test_dispatch_order", body, vehicles=[dl.default_vehicle(v) for v in CARS])
