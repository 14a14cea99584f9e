"""Per-account token bucket (--account-rate 2 --account-burst 1): six
commands over three cars of one account take at least (6-1)/2 = 2.5 s from
the first to the last execution; a second account is not slowed by it."""
from lib import dispatch as dl

CARS = [dl.vin(126), dl.vin(127), dl.vin(128)]
OTHER = [dl.vin(129), dl.vin(130), dl.vin(131)]
RATE = 2.0


def body(c, w):
    warm = [w.submit(f"ra-warm-{v}", "set_sentry_mode", v, params={"on": True},
                     account="acct1" if v in CARS else "acct2") for v in CARS + OTHER]
    c.ok(w.wait_terminal(warm, 40), "warm-up terminal")
    ids = []
    for k in range(2):
        for v in CARS:
            ids.append(w.submit(f"ra-{v}-{k}", "set_charge_limit", v, params={"percent": 60 + k}))
        for v in OTHER:
            ids.append(w.submit(f"rb-{v}-{k}", "set_charge_limit", v,
                                params={"percent": 60 + k}, account="acct2"))
    c.ok(w.wait_terminal(ids, 60), "terminal")
    for i in ids:
        w.check_final(c, i, "succeeded", error=None)

    def window(cars):
        at = sorted(e["at_ms"] for v in cars for e in w.execs(v)
                    if e["command"] == "set_charge_limit")
        return at

    a1, a2 = window(CARS), window(OTHER)
    shard_of = {w.final(i)["vin"]: w.final(i)["shard"] for i in ids if w.final(i)}
    log_shards = f"shards of the cars: {shard_of}"
    c.eq((len(a1), len(a2)), (6, 6), "all executed once")
    if len(a1) == 6 and len(a2) == 6:
        s1 = (a1[-1] - a1[0]) / 1000.0
        s2 = (a2[-1] - a2[0]) / 1000.0
        c.ok(s1 >= 5 / RATE - 0.3, "account 1 paced by its bucket", f"{s1:.2f} s",
             [t - a1[0] for t in a1], log_shards)
        c.ok(s2 >= 5 / RATE - 0.3, "account 2 paced by its bucket", f"{s2:.2f} s",
             [t - a2[0] for t in a2], log_shards)
        c.ok(a2[0] < a1[-1] and a1[0] < a2[-1], "the accounts run side by side",
             (a1[0], a1[-1]), (a2[0], a2[-1]))
    w.check_seq(c)


dl.run("test_dispatch_rate_account", body,
       vehicles=[dl.default_vehicle(v) for v in CARS + OTHER],
       accounts=[{"id": "acct1", "vins": CARS}, {"id": "acct2", "vins": OTHER}],
       daemon_opts={"--account-rate": RATE, "--account-burst": 1})
