"""Per-device token bucket (--device-rate 2 --device-burst 1): five
commands to one car take at least (5-1)/2 = 2 s between the first and the
last execution, while two cars are served side by side (their execution
windows overlap: the limit is per device, not global)."""
from lib import dispatch as dl

CARS = [dl.vin(124), dl.vin(125)]
N = 5
RATE = 2.0


def body(c, w):
    warm = [w.submit(f"rd-warm-{n}", "set_sentry_mode", v, params={"on": True})
            for n, v in enumerate(CARS)]
    c.ok(w.wait_terminal(warm, 20), "warm-up terminal")
    ids = []
    for k in range(N):
        for n, v in enumerate(CARS):
            ids.append(w.submit(f"rd-{n}-{k}", "set_charge_limit", v,
                                params={"percent": 51 + k}))
    c.ok(w.wait_terminal(ids, 60), "terminal")
    for i in ids:
        w.check_final(c, i, "succeeded", error=None)
    spans = []
    for n, v in enumerate(CARS):
        ex = [e for e in w.execs(v) if e["command"] == "set_charge_limit"]
        c.eq(len(ex), N, f"car {n}: all executed once")
        if len(ex) == N:
            span = (ex[-1]["at_ms"] - ex[0]["at_ms"]) / 1000.0
            c.ok(span >= (N - 1) / RATE - 0.25, f"car {n}: paced by its bucket",
                 f"{span:.2f} s for {N} commands at {RATE}/s")
            c.ok(span <= (N - 1) / RATE + 1.5, f"car {n}: about N/rate, not slower",
                 f"{span:.2f} s for {N} commands at {RATE}/s")
            spans.append((ex[0]["at_ms"], ex[-1]["at_ms"]))
    if len(spans) == 2:
        c.ok(spans[1][0] < spans[0][1] and spans[0][0] < spans[1][1],
             "the two cars' windows overlap (per-device, not global)", spans)
    w.check_seq(c)


dl.run("test_dispatch_rate_device", body, vehicles=[dl.default_vehicle(v) for v in CARS],
       daemon_opts={"--device-rate": RATE, "--device-burst": 1})
