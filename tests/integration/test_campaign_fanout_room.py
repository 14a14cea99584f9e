#!/usr/bin/python3
"""Issue 16: the fan-out of a large campaign leaves room in the shards'
queues for ordinary traffic.  With --shard-hwm 256 (one shard):

* the limit is real: a burst of pipelined submits larger than the queue
  gets some `busy` (and every other one is accepted);
* while a 4,000-device campaign is fanned out (at most 64 device commands
  in flight: a quarter of --shard-hwm), ordinary submits made meanwhile are
  all accepted, none `busy`; the campaign stores its 4,000 devices.
"""
import threading
import time

from lib import fqlib
from lib.fqlib import Client, Daemon

HWM = 256
N = 4000
TENANT = "acme"


def body(c):
    d = Daemon(shards=1, accounts=["acct1"], extra=["--no-dispatch", "--shard-hwm", str(HWM)])
    d.start()

    # The limit bites: 20,000 submits pipelined at once.
    cl = Client(d.endpoint, timeout=60)
    reqs = ({"op": "submit", "tenant": TENANT, "key": f"burst-{i}", "account": "acct1",
             "vin": fqlib.vin(100000 + i % 500), "command": "flash_lights"}
            for i in range(20000))
    replies, _ = fqlib.pipeline(cl, reqs, window=20000, timeout=60)
    errs = {}
    for r in replies.values():
        if not r.get("ok"):
            errs[r.get("error")] = errs.get(r.get("error"), 0) + 1
    c.ok(errs.get("busy", 0) > 0 and set(errs) == {"busy"},
         "--shard-hwm 256 is a real limit: a burst gets busy, nothing else fails", errs)
    fqlib.log(f"burst of 20000: {errs.get('busy', 0)} busy")
    cl.close()

    # Ordinary submits while a campaign is fanned out.
    stop = threading.Event()
    results = []  # (time, reply)

    def submitter():
        sc = Client(d.endpoint, timeout=60)
        i = 0
        while not stop.is_set():
            batch = ({"op": "submit", "tenant": TENANT, "key": f"plain-{i + k}",
                      "account": "acct1", "vin": fqlib.vin(200000 + (i + k) % 300),
                      "command": "flash_lights"} for k in range(16))
            rep, _ = fqlib.pipeline(sc, batch, window=16, timeout=60)
            t = time.time()
            results.extend((t, r) for r in rep.values())
            i += 16
        sc.close()

    th = threading.Thread(target=submitter, daemon=True)
    th.start()
    time.sleep(0.3)
    cc = Client(d.endpoint, timeout=120)
    t0 = time.time()
    r = cc.call({"op": "campaign", "tenant": TENANT, "key": "big", "command": "flash_lights",
                 "devices": [{"vin": fqlib.vin(300000 + i), "account": "acct1"}
                             for i in range(N)]})
    t1 = time.time()
    time.sleep(0.3)
    stop.set()
    th.join(60)
    c.ok(r.get("ok") and r.get("devices") == N and r.get("rejected") == 0,
         f"the campaign stored its {N} devices", r)
    during = [x for t, x in results if t0 <= t <= t1]
    busy = [x for _, x in results if x.get("error") == "busy"]
    bad = [x for _, x in results if not x.get("ok")]
    fqlib.log(f"fan-out of {N}: {(t1 - t0) * 1000:.0f} ms; {len(results)} ordinary submits, "
              f"{len(during)} answered during it, {len(busy)} busy")
    c.ok(len(during) >= 64, "ordinary submits were answered during the fan-out", len(during))
    c.eq(len(busy), 0, "none of them busy", busy[:3])
    c.eq(len(bad), 0, "none refused at all", bad[:3])
    g = cc.call({"op": "campaign_get", "tenant": TENANT, "key": "big"})
    c.eq(sum(g.get("counts", {}).values()), N, "every device command counted", g.get("counts"))
    cc.close()
    d.term()


if __name__ == "__main__":
    fqlib.run_test("test_campaign_fanout_room", body)
