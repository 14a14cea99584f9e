#!/usr/bin/python3
"""Issue 18: one fleetqd cluster node's contract, apart from faults
(test_cluster_fault has those).

* Options: --cluster without --node-id (and the reverse), --cluster with
  --curve-secret, and a bad node id are refused at start with a message
  that says why; a data directory holding single-node commands is refused.
* Balance by handover: node0 starts alone and takes all 6 shards; node1
  joins an idle cluster: node0 hands 3 over, one at a time, within 25 s
  (a handover's drain used to wait for its whole timeout, 15 s, when no
  request woke the shard); then node2 joins while traffic runs (200
  commands/s over the nodes): each of the others hands one shard over,
  drained first, so no command ends `unknown`; afterwards each node owns 2.
* Forwarding, each kind of request through the node that does NOT own the
  shard: submit (accepted, executed), get by id, cancel by id (a command
  scheduled far ahead), history of a shard owned elsewhere; the answers
  equal the owner's.
* What cluster mode refuses, with its reason: get / cancel by tenant and
  key without id (bad_param), campaigns (bad_request).
* `fleetq health` on each node names each shard's owner ("owner: this
  node" / "owner: node X (standby here)").
"""

import os
import subprocess
import sys
import time

from lib import cluster as lc
from lib import fqlib
from lib.fqlib import BIN, Client, log
from lib.nats import available


def fleetqd_refuses(c, args, want, what):
    r = subprocess.run([os.path.join(BIN, "fleetqd")] + args, capture_output=True, text=True,
                       timeout=60)
    c.ok(r.returncode != 0 and want in r.stderr, what, r.returncode, r.stderr[-400:])


def options(c, fc):
    d = fqlib.tempfile.mkdtemp(prefix="fq-clopt-")
    fqlib._cleanups.append(lambda: subprocess.run(["rm", "-rf", d]))
    urls = fc.nats.urls()
    fleetqd_refuses(c, ["--data", d + "/a", "--cluster", urls], "--cluster and --node-id go together",
                    "--cluster without --node-id: refused")
    fleetqd_refuses(c, ["--data", d + "/b", "--node-id", "n9"], "--cluster and --node-id go together",
                    "--node-id without --cluster: refused")
    key = os.path.join(d, "server.key")
    subprocess.run([os.path.join(BIN, "fleetq"), "curve-keygen", "--out", key], capture_output=True)
    fleetqd_refuses(c, ["--data", d + "/c", "--cluster", urls, "--node-id", "n9", "--curve-secret",
                        key, "--clients", key], "not supported yet",
                    "--cluster with --curve-secret: refused (forwarding is plaintext)")
    fleetqd_refuses(c, ["--data", d + "/d", "--cluster", urls, "--node-id", "bad id!",
                        "--listen", f"tcp://127.0.0.1:{fqlib.free_port()}",
                        "--publish", f"tcp://127.0.0.1:{fqlib.free_port()}"], "node",
                    "a node id with a space and '!': refused")
    # A single node's data directory, with a command in it, cannot join.
    single = fqlib.Daemon(shards=4, extra=["--no-dispatch"], name="single")
    single.start()
    fqlib.add_account(single.endpoint, lc.ACCOUNT)
    cl = Client(single.endpoint)
    r = cl.call({"op": "submit", "tenant": lc.TENANT, "key": "solo", "account": lc.ACCOUNT,
                 "vin": fc.cars[0], "command": "honk_horn"})
    cl.close()
    c.ok(r.get("ok"), "a single node took a command", r)
    single.term()
    fleetqd_refuses(c, ["--data", single.data, "--shards", "4", "--cluster", urls,
                        "--node-id", "n9", "--listen", f"tcp://127.0.0.1:{fqlib.free_port()}",
                        "--publish", f"tcp://127.0.0.1:{fqlib.free_port()}"],
                    "holds commands of a single node",
                    "a data directory with single-node commands cannot join a cluster")


def owners(fc):
    return {n.node_id: sorted(n.owned() or ()) for n in fc.live()}


def body(c):
    if not available():
        log("SKIP test_cluster_node: nats-server is not installed (scripts/deps.sh installs it)")
        sys.exit(77)
    cars = lc.cars(200)
    fc = lc.FleetCluster("node", cars, nodes=3, shards=6)
    fc.sim.start()
    fc.nats.start()
    options(c, fc)

    # node0 alone: it takes every shard.
    n0, n1, n2 = fc.nodes
    n0.start(timeout=60)
    fc.add_account(n0)
    fc.wait_owned(timeout=30)
    c.eq(owners(fc), {"node0": [0, 1, 2, 3, 4, 5]}, "node0 alone owns all 6 shards")

    def wait_balanced(want, limit):
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            o = owners(fc)
            if sorted(len(v) for v in o.values()) == want and \
                    sum(len(v) for v in o.values()) == fc.shards:
                return time.monotonic() - t0
            time.sleep(0.1)
        return None

    # node1 joins an idle cluster: 3 handovers with nothing to wake the
    # shards but the handover itself.
    n1.start(timeout=60)
    fc.add_account(n1)
    idle_bal = wait_balanced([3, 3], 60)
    log(f"  node1 joined an idle cluster: balanced 3 + 3 after "
        f"{idle_bal if idle_bal is None else round(idle_bal, 2)} s; owners {owners(fc)}")
    c.ok(idle_bal is not None and idle_bal < 25, "idle: node0 hands 3 shards to node1 within "
         "25 s (5 s still, then one handover about every 2.5 s)", idle_bal, owners(fc))

    # Traffic over both, then node2 joins: the shards spread 2 + 2 + 2.
    tr = lc.Traffic([n0.endpoint, n1.endpoint], cars, 200, seed=18, timeout=3.0)
    tr.start()
    time.sleep(2)
    n2.start(timeout=60)
    fc.add_account(n2)
    tr.endpoints.append(n2.endpoint)
    balanced = wait_balanced([2, 2, 2], 60)
    log(f"  node2 joined under traffic: balanced after "
        f"{balanced if balanced is None else round(balanced, 2)} s; owners {owners(fc)}")
    c.ok(balanced is not None, "after node2 joins each node owns 2 of the 6 shards", owners(fc))
    time.sleep(3)
    tr.stop()
    c.ok(tr.wait_done(120), "every started submit was acked")
    acked = list(tr.acked)
    log(f"  traffic: {len(acked)} acked, {tr.retry_busy} busy retries, "
        f"{tr.retry_timeout} timeout retries, {len(tr.refused)} refused")
    c.eq(tr.refused, [], "no submit refused")
    final, left, wrong = lc.wait_terminal(lambda: fc.live()[0].endpoint, acked, 120)
    c.eq((left[:5], wrong[:5]), ([], []), "every acked command is terminal and is the one acked")
    states = {}
    for a in acked:
        st = final.get(a.id, (None,))[0]
        states[st] = states.get(st, 0) + 1
    log(f"  terminal states: {states}")
    c.eq(set(states), {"succeeded"}, "every command of the traffic succeeded: a handover drains "
         "what is in flight, so nothing is left `unknown`", states)
    takeovers = {}
    for n in fc.live():
        for line in (n.metrics() or "").splitlines():
            if line.startswith("fleetq_cluster_takeovers_total{"):
                takeovers[(n.node_id, line.split('"')[1])] = float(line.split()[-1])
    log(f"  takeovers per (node, shard): {takeovers}")

    # Forwarding: each request through the node that does not own its shard.
    o = owners(fc)
    by_shard = {s: name for name, ss in o.items() for s in ss}
    nodes = {n.node_id: n for n in fc.live()}
    probe = None
    for car in cars:
        # The car's shard: ask the owner for a command of it after a submit.
        cl = Client(n1.endpoint)
        r = cl.call({"op": "submit", "tenant": lc.TENANT, "key": f"fwd-{car}", "account": lc.ACCOUNT,
                     "vin": car, "command": "flash_lights"})
        cl.close()
        if not r.get("ok"):
            continue
        shard = int(r["id"][:2], 16)
        if by_shard.get(shard) == "node0":
            probe = (car, r["id"], shard)
            break
    c.ok(probe is not None, "a submit through node1 for a car of a node0 shard was accepted "
         "(forwarded)", probe)
    if probe:
        car, id_, shard = probe
        # Compared once it has ended: a command in flight may move between
        # two reads.
        lc.wait_terminal(lambda: n0.endpoint, [lc.Acked(f"fwd-{car}", id_, car, "flash_lights",
                                                        None, 0, 0, 1, False, 0)], 60)
        g1 = lc.get_all(n1.endpoint, [id_])
        g0 = lc.get_all(n0.endpoint, [id_])
        c.ok(g1.get(id_) and g1[id_].get("id") == id_ and g1[id_].get("vin") == car,
             "get by id through the other node", g1)
        c.eq(g1.get(id_, {}).get("state"), g0.get(id_, {}).get("state"),
             "the forwarded get answers what the owner does")
        cl = Client(n1.endpoint)
        far = int(time.time() * 1000) + 3600_000
        r = cl.call({"op": "submit", "tenant": lc.TENANT, "key": f"later-{car}",
                     "account": lc.ACCOUNT, "vin": car, "command": "honk_horn", "not_before": far})
        c.ok(r.get("ok") and r.get("state") == "scheduled", "a scheduled submit through node1", r)
        x = cl.call({"op": "cancel", "id": r.get("id")})
        c.ok(x.get("ok") and (x.get("command") or {}).get("state") == "cancelled",
             "cancel by id through node1", x)
        h1 = cl.call({"op": "history", "shard": shard, "after": 0, "limit": 50})
        cl.close()
        cl0 = Client(n0.endpoint)
        h0 = cl0.call({"op": "history", "shard": shard, "after": 0, "limit": 50})
        cl0.close()
        c.ok(h1.get("ok") and h1.get("events"), "history of a node0 shard through node1", h1)
        c.eq([e["seq"] for e in h1.get("events", [])], [e["seq"] for e in h0.get("events", [])],
             "the forwarded history equals the owner's")

    # What cluster mode refuses.
    cl = Client(n1.endpoint)
    r = cl.call({"op": "get", "tenant": lc.TENANT, "key": "k-1"})
    c.ok(r.get("error") == "bad_param" and "cluster mode" in r.get("message", ""),
         "get by tenant and key: bad_param, give the id", r)
    r = cl.call({"op": "campaign", "tenant": lc.TENANT, "key": "camp", "command": "flash_lights",
                 "devices": [{"vin": v, "account": lc.ACCOUNT} for v in cars[:2]]})
    c.ok(r.get("error") in ("bad_request", "bad_param") and "cluster" in r.get("message", ""),
         "campaigns are refused in cluster mode", r)
    cl.close()

    # fleetq health names the owners.
    for n in fc.live():
        h = subprocess.run([os.path.join(BIN, "fleetq"), "health", "--endpoint", n.endpoint],
                           capture_output=True, text=True, timeout=30)
        mine = sum("owner: this node" in l for l in h.stdout.splitlines())
        other = sum("(standby here)" in l for l in h.stdout.splitlines())
        c.ok(mine == len(o[n.node_id]) and mine + other == fc.shards,
             f"fleetq health on {n.node_id} names the owner of every shard", h.stdout)


fqlib.run_test("test_cluster_node", body)
