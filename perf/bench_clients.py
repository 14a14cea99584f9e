#!/usr/bin/env python3
"""Submit loops of the client packages against one fleetqd (issue 15's
goal: at least 20,000 acknowledged submits per second from each client).

    perf/bench_clients.py [--bin build/bin] [--count 50000] [--rounds 3] [--quick]
                          [--out perf/results/clients.md]

Starts its own fleetqd (4 shards, fsync on, loopback TCP) with an
account whose Fleet API is a closed local port, so that dispatch does
almost nothing (each car's first command waits in `retrying`) and the
figure is the clients' and the ingest's.  For each client, `rounds`
rounds of `count` submits (`set_charge_limit` over 1,000 cars, fresh keys,
one connection, up to `window` in flight, every reply checked ok); the
median round is reported.  A closed loop without pipelining (one request
at a time) is measured too, for scale.  Writes a Markdown report and
prints one RESULT line per client."""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import benchenv

ROOT = benchenv.ROOT
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from lib import fqlib  # noqa: E402

import fleetq_client  # noqa: E402
from fleetq_client import aio  # noqa: E402

ACCOUNT = "bench"
CARS = [fqlib.vin(i, prefix="5YJ3E7EB") for i in range(1000)]


def commands(tag, n):
    return [{"tenant": "bench", "key": f"{tag}-{i}", "account": ACCOUNT,
             "command": "set_charge_limit", "vin": CARS[i % len(CARS)],
             "params": {"percent": 50 + i % 51}} for i in range(n)]


def check(replies, n):
    bad = [r for r in replies if not isinstance(r, dict) or not r.get("ok") or r.get("dup")]
    if len(replies) != n or bad:
        raise RuntimeError(f"{len(bad)} of {n} submits not acknowledged as new: {bad[:3]!r}")


def py_sync(ep, tag, n, window):
    with fleetq_client.Client(ep, timeout=30) as c:
        c.ping()
        cmds = commands(tag, n)
        t0, c0 = time.perf_counter(), time.process_time()
        out = c.submit_many(cmds, window=window)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    check(out, n)
    return n / dt, cpu / n * 1e6


def py_aio(ep, tag, n, window):
    import asyncio

    async def main():
        async with aio.Client(ep, timeout=30) as c:
            await c.ping()
            cmds = commands(tag, n)
            t0, c0 = time.perf_counter(), time.process_time()
            out = await c.submit_many(cmds, window=window)
            return out, time.perf_counter() - t0, time.process_time() - c0

    out, dt, cpu = asyncio.run(main())
    check(out, n)
    return n / dt, cpu / n * 1e6


def py_serial(ep, tag, n, window):
    with fleetq_client.Client(ep, timeout=30) as c:
        c.ping()
        cmds = commands(tag, n)
        t0, c0 = time.perf_counter(), time.process_time()
        for m in cmds:
            r = c.submit(**m)
            if r.get("dup"):
                raise RuntimeError("duplicate")
        return n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1e6


def node(ep, tag, n, window, serial=False):
    r = subprocess.run(["node", os.path.join(ROOT, "perf", "bench_clients.js"), ep, tag, str(n),
                        str(window), "serial" if serial else "pipelined"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"bench_clients.js failed: {r.stderr.strip()[-500:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return float(res["rate"]), float(res["cpu_us"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.environ.get("FQ_BIN") or os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--count", type=int, default=50000)
    ap.add_argument("--serial-count", type=int, default=3000)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20,000 submits, 1 round")
    ap.add_argument("--out", default=os.path.join(ROOT, "perf", "results", "clients.md"))
    a = ap.parse_args()
    if a.quick:
        a.count, a.rounds, a.serial_count = 20000, 1, 1000
    os.environ["FQ_BIN"] = a.bin
    fqlib.BIN = a.bin
    have_node = shutil.which("node") and os.path.isdir(
        os.path.join(ROOT, "clients", "node", "node_modules", "zeromq"))

    d = fqlib.Daemon(shards=4, log_level="warn")  # on free loopback ports, temp data
    d.start()
    try:
        with fleetq_client.Client(d.endpoint) as c:
            # Fleet API on a closed port: a car's first command waits in
            # `retrying`, the others queue behind it; nothing else to do.
            c.account_add(ACCOUNT, "bench-access-token", "bench-refresh-token", "bench-client",
                          base_url="http://127.0.0.1:9")
            version = c.ping()["version"]
        runs = [("Python, blocking Client.submit_many", py_sync),
                ("Python, asyncio Client.submit_many", py_aio)]
        if have_node:
            runs.append(("Node, Client.submitMany", lambda *x: node(*x)))
        results = []
        for name, fn in runs:
            rates, cpus = [], []
            for r in range(a.rounds):
                rate, cpu_us = fn(d.endpoint, f"{name[:4]}-{r}-{time.monotonic_ns()}", a.count,
                                  a.window)
                rates.append(rate)
                cpus.append(cpu_us)
                print(f"bench_clients: {name} round {r + 1}: {rate:.0f} acked submits/s, "
                      f"client CPU {cpu_us:.1f} us/submit", file=sys.stderr, flush=True)
            results.append((name, "pipelined", a.count, a.window, rates, cpus))
        serial = [("Python, blocking Client.submit", py_serial)]
        if have_node:
            serial.append(("Node, await client.submit", lambda ep, t, n, w: node(ep, t, n, 1, True)))
        for name, fn in serial:
            rate, cpu_us = fn(d.endpoint, f"s-{name[:4]}-{time.monotonic_ns()}", a.serial_count, 1)
            print(f"bench_clients: {name} one at a time: {rate:.0f} submits/s", file=sys.stderr)
            results.append((name, "one at a time", a.serial_count, 1, [rate], [cpu_us]))
    finally:
        d.term()

    cpu, git = benchenv.machine()
    node_v = subprocess.run(["node", "--version"], capture_output=True,
                            text=True).stdout.strip() if have_node else "absent"
    run = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu} x {os.cpu_count()}; "
           f"fleetq {git} ({version}); Python {platform.python_version()}, pyzmq "
           f"{__import__('zmq').__version__}, msgpack {'.'.join(map(str, __import__('msgpack').version))}; "
           f"Node {node_v}")
    L = ["# Client packages: acknowledged submits per second", "",
         "`perf/bench_clients.py`: one fleetqd (4 shards, fsync on, loopback TCP), one client "
         "connection each, `set_charge_limit` over 1,000 cars with fresh idempotency keys; a "
         "submit counts when its reply (`ok`, not a duplicate) is back, i.e. the command is on "
         "disk. Dispatch is kept idle (the account's Fleet API is a closed port). Pipelined rows: "
         f"{a.rounds} round(s), median; the machine is shared, so figures move by 10-30 % "
         "between runs.", "",
         "| client | mode | submits | in flight | acked submits/s (median) | rounds | "
         "client CPU us/submit | run |",
         "|---|---|---|---|---|---|---|---|"]
    for name, mode, n, window, rates, cpus in results:
        L.append(f"| {name} | {mode} | {n:,} | {window} | {statistics.median(rates):,.0f} | "
                 f"{', '.join(f'{x:,.0f}' for x in rates)} | {statistics.median(cpus):.1f} | {run} |")
        print(f"RESULT client={name.split(',')[0].lower()} api=\"{name.split(', ')[1]}\" "
              f"mode={mode.replace(' ', '-')} rate={statistics.median(rates):.0f}")
    L += ["", "Client CPU: user + system time of the client process (its ZeroMQ I/O thread "
          "included) per submit, which moves much less than the rate with the machine's other "
          "load; fleetqd needs about 6 us per ack besides (perf/RESULTS.md section 1).", "",
          "Goal (issue 15): at least 20,000 acknowledged submits/s from each client's "
          "pipelined submit loop."]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"bench_clients: wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
