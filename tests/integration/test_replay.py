"""fleetq-replay against a real fleetqd.

1. gen writes a file that an independent Python reader (written from
   proto/traffic-format.md) parses; the same seed gives the same bytes.
2. run --rate 2000 for 5 s: the achieved rate is within 2 % of the
   target, and the percentiles it reports agree with a second measurement
   taken by a subscriber in this process (arrival time of each command's
   `queued` event, counted from the intended send time that the replayer's
   start time and the schedule give).
3. Open loop: a daemon stopped (SIGSTOP) for 0.5 s during a run shows the
   stall in the latencies instead of hiding it.
4. Refusals: non-loopback endpoints, corrupted files.
5. With dispatch (fleetsim with the file's cars, an account in fleetqd),
   end-to-end latency is measured to the terminal event, and says so.
"""

import json
import os
import signal
import struct
import subprocess
import threading
import time

import msgpack
import zmq

from lib import fqlib
from lib.fqlib import BIN, Daemon, Sub, log, run_test

REPLAY = os.path.join(BIN, "fleetq-replay")
RATE = 2000
COUNT = 10000  # 5 s at RATE
SEED = int(os.environ.get("FQ_SEED", 20261129))


def read_traffic(path):
    """Independent reader of proto/traffic-format.md."""
    data = open(path, "rb").read()
    magic, ver, flags, hlen, count, origin = struct.unpack(">8sHHIQq", data[:32])
    assert magic == b"FQTRAFIC", magic
    assert ver == 1 and flags == 0, (ver, flags)
    note = data[32:hlen].decode()
    off, recs = hlen, []
    for _ in range(count):
        t_us, n = struct.unpack(">QI", data[off:off + 12])
        recs.append((t_us, msgpack.unpackb(data[off + 12:off + 12 + n], raw=False)))
        off += 12 + n
    assert off == len(data), (off, len(data))
    return note, origin, recs


def pct(vals, q):
    """Nearest-rank percentile, as the replayer computes it."""
    v = sorted(vals)
    k = max(1, -(-int(q * 1000) * len(v) // 1000))
    return v[k - 1]


def replay(*args, timeout=120):
    return subprocess.run([REPLAY] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def close(a, b, abs_ms, rel):
    return abs(a - b) <= abs_ms + rel * max(abs(a), abs(b))


def test(c):
    tmp = Daemon(shards=4).tmp  # only for its temp dir (cleaned at exit)
    path = os.path.join(tmp, "t.fqt")

    # ---- 1. gen and the format -------------------------------------------
    r = replay("gen", "--out", path, "--count", COUNT, "--devices", 2000, "--rate", RATE,
               "--seed", SEED, "--dup-ratio", "0.05", "--energy-share", "0.1",
               "--tenant", "rt", "--zipf", "1.1")
    c.eq(r.returncode, 0, "gen exits 0", r.stderr)
    c.ok(f"seed {SEED}" in r.stderr, "gen logs its seed", r.stderr)
    note, origin, recs = read_traffic(path)
    c.eq(len(recs), COUNT, "record count")
    c.eq(origin, 0, "synthetic traffic has origin 0")
    c.ok(f"seed={SEED}" in note, "the note records the seed", note)
    c.ok(all(recs[i][0] <= recs[i + 1][0] for i in range(len(recs) - 1)),
         "offsets never decrease")
    span = recs[-1][0] / 1e6
    c.ok(4.5 < span < 5.5, "poisson arrivals at 2000/s span about 5 s", span)
    keys = [m["key"] for _, m in recs]
    first = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    ndup = COUNT - len(first)
    c.ok(0.03 * COUNT < ndup < 0.07 * COUNT, "about 5 % duplicates", ndup)
    dup_same = all(recs[first[m["key"]]][1] == m for _, m in recs)
    c.ok(dup_same, "a duplicate repeats its original exactly")
    sites = sum(1 for _, m in recs if "site" in m)
    c.ok(0.05 * COUNT < sites < 0.15 * COUNT, "about 10 % energy-site requests", sites)
    c.ok(all(m["op"] == "submit" and "req" not in m and m["tenant"] == "rt" for _, m in recs),
         "every body is a submit without req")
    cmds = {m["command"] for _, m in recs}
    c.ok(len(cmds) >= 10, "the default mix uses many commands", cmds)
    path2 = os.path.join(tmp, "t2.fqt")
    replay("gen", "--out", path2, "--count", COUNT, "--devices", 2000, "--rate", RATE,
           "--seed", SEED, "--dup-ratio", "0.05", "--energy-share", "0.1", "--tenant", "rt",
           "--zipf", "1.1")
    c.ok(open(path, "rb").read() == open(path2, "rb").read(), "same seed, same file")

    # ---- 2. rate and percentiles against a subscriber ----------------------
    # The generated traffic names replay-acct (gen's default); --no-dispatch:
    # the commands stay queued, so the `queued` event is the last one.
    with Daemon(shards=4, log_level="warn", extra=["--no-dispatch"],
                accounts=["replay-acct"]) as d:
        sub = Sub(d.publish, prefixes=("rt/",))
        arrivals = {}
        stamps = {}  # key -> the event's `at` (fleetqd's clock, ms)
        stop = threading.Event()

        def listen():
            while not stop.is_set():
                if not sub.sock.poll(50):
                    continue
                frames = sub.sock.recv_multipart()
                t = time.time()
                ev = msgpack.unpackb(frames[1], raw=False)
                if ev["state"] == "queued":
                    arrivals.setdefault(ev["key"], t)
                    stamps.setdefault(ev["key"], ev["at"])

        th = threading.Thread(target=listen, daemon=True)
        th.start()
        r = replay("run", path, "--endpoint", d.endpoint, "--publish", d.publish,
                   "--rate", RATE, "--conns", 4, "--json")
        stop.set()
        th.join(5)
        sub.close()
        c.eq(r.returncode, 0, "run exits 0 (every request acked)", r.stderr, r.stdout)
        rep = json.loads(r.stdout)
        log("replay report:", json.dumps(rep))
        c.eq(rep["sent"], COUNT, "sent")
        c.eq(rep["acked"], COUNT, "acked")
        c.eq(rep["errors"], {}, "no errors")
        c.eq(rep["dup"], ndup, "duplicates acked as dup: true")
        c.ok(abs(rep["rate"] - RATE) <= 0.02 * RATE, "achieved rate within 2 % of the target",
             rep["rate"])
        for k in ("p50", "p90", "p99", "p999", "max"):
            c.ok(isinstance(rep["ack_latency_ms"][k], float), f"ack_latency_ms.{k} present")
            c.ok(isinstance(rep["e2e_latency_ms"][k], float), f"e2e_latency_ms.{k} present")
        c.eq(rep["e2e_to"], "queued", "nothing dispatches here: e2e is to the queued event")

        # The subscriber's own measurement.
        start = rep["start_unix_ms"] / 1000.0
        lat = []
        for k, i in first.items():
            if k in arrivals:
                lat.append((arrivals[k] - (start + i / RATE)) * 1000.0)
        c.eq(len(lat), len(first), "the subscriber saw a queued event for every command")
        # The rate the commands reached fleetqd at, seen from the events
        # alone: the least-squares slope of each command's `queued` time
        # (the daemon's `at`, not this Python thread's arrival time, which
        # a loaded machine delays by whole scheduler slices) against its
        # place in the send schedule.  A fit over all of them rather than
        # first-to-last, so one late event at either end does not decide.
        pts = [(first[k], stamps[k] / 1000.0) for k in first if k in stamps]
        mx = sum(i for i, _ in pts) / len(pts)
        my = sum(t for _, t in pts) / len(pts)
        slope = sum((i - mx) * (t - my) for i, t in pts) / sum((i - mx) ** 2 for i, _ in pts)
        sub_rate = 1.0 / slope
        c.ok(abs(sub_rate - RATE) <= 0.02 * RATE,
             "subscriber-side rate (event times) within 2 % of the target", sub_rate)
        # Tolerances.  The replayer's e2e figure measures the same thing as
        # this subscriber (arrival of the queued event, from the intended
        # send time, same host clock); the Python subscriber adds its own
        # scheduling delay (GIL, interpreter): agree within 1 ms + 25 % at
        # p50 / p90, 3 ms + 50 % at p99.  The ack travels another path (the
        # reply, not the publisher) and is compared more loosely: 2 ms +
        # 50 %, and 5 ms + 75 % at p99 (on a loaded machine the two paths
        # are scheduled differently).
        tol = {"p50": (1.0, 0.25, 2.0, 0.5), "p90": (1.0, 0.25, 2.0, 0.5),
               "p99": (3.0, 0.5, 5.0, 0.75)}
        q = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
        for k, (a_ms, rel, ack_ms, ack_rel) in tol.items():
            mine = pct(lat, q[k])
            e2e = rep["e2e_latency_ms"][k]
            ack = rep["ack_latency_ms"][k]
            log(f"  {k}: subscriber {mine:.3f} ms, replay e2e {e2e:.3f} ms, replay ack {ack:.3f} ms")
            c.ok(close(mine, e2e, a_ms, rel), f"e2e {k} agrees with the subscriber",
                 f"subscriber {mine:.3f} ms", f"replay {e2e:.3f} ms")
            c.ok(close(mine, ack, ack_ms, ack_rel), f"ack {k} agrees with the subscriber",
                 f"subscriber {mine:.3f} ms", f"replay {ack:.3f} ms")

        # The same file again is all duplicates; with a key prefix it is new.
        r = replay("run", path, "--endpoint", d.endpoint, "--speed", 4, "--json")
        rep = json.loads(r.stdout)
        c.eq(rep["dup"], COUNT, "replaying the same keys: every request is a duplicate")
        r = replay("run", path, "--endpoint", d.endpoint, "--speed", 4, "--key-prefix", "b-",
                   "--json")
        rep = json.loads(r.stdout)
        c.eq(rep["dup"], ndup, "--key-prefix makes the requests new")
        c.eq(rep["acked"], COUNT, "and all are acked")

    # ---- 3. open loop: a stall shows -----------------------------------------
    stall = os.path.join(tmp, "s.fqt")
    replay("gen", "--out", stall, "--count", 3000, "--devices", 300, "--rate", 1000,
           "--arrival", "even", "--seed", 5, "--tenant", "st")
    with Daemon(shards=2, log_level="warn", extra=["--no-dispatch"],
                accounts=["replay-acct"]) as d:
        p = subprocess.Popen([REPLAY, "run", stall, "--endpoint", d.endpoint, "--rate", "1000",
                              "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        time.sleep(1.2)
        d.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        d.proc.send_signal(signal.SIGCONT)
        out, err = p.communicate(60)
        rep = json.loads(out)
        log("stall report:", json.dumps(rep["ack_latency_ms"]))
        c.eq(rep["acked"], 3000, "all acked after the stall", err)
        c.ok(rep["ack_latency_ms"]["max"] >= 400, "the 0.5 s stall shows in max latency",
             rep["ack_latency_ms"])
        c.ok(rep["ack_latency_ms"]["p90"] >= 50,
             "about 500 requests were due during the stall: p90 shows it",
             rep["ack_latency_ms"])
        c.ok(abs(rep["rate"] - 1000) <= 0.05 * 1000, "open loop keeps the offered rate",
             rep["rate"])

    # ---- 4. refusals -----------------------------------------------------------
    for ep in ("tcp://192.0.2.1:5555", "tcp://example.com:5555", "tcp://0.0.0.0:5555"):
        r = replay("run", path, "--endpoint", ep, "--rate", 10, "--duration", 1)
        c.eq(r.returncode, 2, f"non-loopback endpoint {ep} refused", r.stderr)
        c.ok("non-loopback" in r.stderr, "with a clear message", r.stderr)
    r = replay("run", path, "--endpoint", "tcp://127.0.0.1:1", "--publish",
               "tcp://192.0.2.1:5556")
    c.eq(r.returncode, 2, "non-loopback publisher refused", r.stderr)
    data = open(path, "rb").read()
    bad = os.path.join(tmp, "bad.fqt")
    cases = {
        "cut off": data[:-1],
        "version": data[:8] + b"\x00\x02" + data[10:],
        "magic": b"XX" + data[2:],
        "after the last": data + b"\x00",
        "count": data[:16] + struct.pack(">Q", COUNT + 1) + data[24:],
    }
    for what, blob in cases.items():
        open(bad, "wb").write(blob)
        r = replay("run", bad, "--endpoint", "tcp://127.0.0.1:1", "--rate", 10)
        c.ok(r.returncode == 1 and "fleetq-replay run:" in r.stderr,
             f"a corrupted file ({what}) is refused before sending", r.returncode, r.stderr)
    # A body that is not a valid submit: set_charge_limit percent 120.
    note, _, recs2 = read_traffic(path)
    body = msgpack.packb({"op": "submit", "tenant": "t", "key": "k", "account": "a",
                          "vin": "5YJ3E1EA7KF000001", "command": "set_charge_limit",
                          "params": {"percent": 120}})
    hdr = b"FQTRAFIC" + struct.pack(">HHIQq", 1, 0, 32, 1, 0)
    open(bad, "wb").write(hdr + struct.pack(">QI", 0, len(body)) + body)
    r = replay("run", bad, "--endpoint", "tcp://127.0.0.1:1")
    c.ok(r.returncode == 1 and "percent" in r.stderr, "an invalid submit body is refused",
         r.stderr)

    # ---- 5. end to end through dispatch ------------------------------------
    from lib import dispatch as dl
    cars = 20
    w = dl.World("test_replay_dispatch",
                 vehicles=[dl.default_vehicle(fqlib.vin(k)) for k in range(cars)])
    try:
        e2e = os.path.join(w.tmp, "e2e.fqt")
        r = replay("gen", "--out", e2e, "--count", 200, "--devices", cars, "--rate", 100,
                   "--uniform", "--seed", 9, "--account", "acct1", "--tenant", "rd",
                   "--mix", "set_charge_limit=3,door_lock=1,charge_start=1")
        c.eq(r.returncode, 0, "gen for the dispatch run", r.stderr)
        r = replay("run", e2e, "--endpoint", w.daemon.endpoint, "--publish", w.daemon.publish,
                   "--drain", 30, "--json")
        rep = json.loads(r.stdout)
        log("dispatch report:", json.dumps(rep))
        c.eq((rep["acked"], rep["errors"]), (200, {}), "all acked", r.stderr)
        c.eq(rep["e2e_to"], "terminal", "commands are dispatched: e2e is to the terminal event")
        c.eq((rep["e2e_latency_ms"]["count"], rep["e2e_missing"]), (200, 0),
             "every command reached a terminal state within the drain")
        c.ok(rep["e2e_latency_ms"]["p50"] > rep["ack_latency_ms"]["p50"],
             "reaching the car takes longer than being acked", rep["e2e_latency_ms"],
             rep["ack_latency_ms"])
        st = w.sim.stats()
        log("fleetsim stats:", json.dumps(st)[:300])
    finally:
        w.close()


run_test("test_replay", test)
