#!/usr/bin/python3
"""What clients that never read cost a fleetqd (issue 13, defect 6).

Starts a fleetqd (--fleetqd PATH, default build/bin/fleetqd) on loopback
and measures its RSS (/proc) before and after each scenario, and again
after the clients left:

  pings    one DEALER sends 2,000 pings with a 200 KB `req` and never reads
  gets     one DEALER sends 20,000 `get`s of a command with 15 KB of params
  history  one DEALER sends 500 `history` requests of 1,000 events each
  subs     10 SUBs subscribe to everything and never read, while a reading
           producer submits 100,000 commands (one `queued` event each)
  events   the same producer without subscribers: what the 100,000 stored
           commands cost by themselves (LMDB pages, queues, dedupe), to
           subtract from `subs`

A client that does not read is a socket with ZMQ_RCVHWM 1 and a 4 KB
kernel receive buffer: once those are full, TCP pushes back and what the
daemon sends it stays in the daemon.  Every scenario gets a fresh daemon.
The daemon's features decide the set-up: with --no-dispatch (and accounts
checked) the accounts are added first and nothing is sent to a Fleet API;
an older fleetqd takes the submits as they are.

usage: bench_slow_clients.py [--fleetqd PATH] [--fleetq PATH] [--only NAME,...]
                        [--out FILE]
Prints one line per scenario and, with --out, a Markdown table.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
CTX = zmq.Context.instance()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def settle(pid, quiet_s=1.5, limit_s=60):
    """RSS once it has not grown for quiet_s (or after limit_s)."""
    t_end = time.monotonic() + limit_s
    last, since = rss_mb(pid), time.monotonic()
    while time.monotonic() < t_end:
        time.sleep(0.25)
        now = rss_mb(pid)
        if now > last + 0.5:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return rss_mb(pid)


VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def vin(n):
    s = ""
    for _ in range(9):
        s = VIN_CHARS[n % 33] + s
        n //= 33
    return "5YJ3E1EA" + s


class Daemon:
    def __init__(self, exe, cli, extra=()):
        self.tmp = tempfile.mkdtemp(prefix="fq-bc-")
        self.ep = f"tcp://127.0.0.1:{free_port()}"
        self.pub = f"tcp://127.0.0.1:{free_port()}"
        help_ = subprocess.run([exe, "--help"], capture_output=True, text=True).stdout
        self.new = "--no-dispatch" in help_
        args = [exe, "--data", os.path.join(self.tmp, "data"), "--listen", self.ep,
                "--publish", self.pub, "--shards", "2", "--log-level", "error"] + list(extra)
        if self.new:
            args.append("--no-dispatch")
        self.log = open(os.path.join(self.tmp, "log"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while b"fleetqd: ready" not in open(os.path.join(self.tmp, "log"), "rb").read():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("fleetqd did not start")
            time.sleep(0.05)
        if self.new:
            tok = os.path.join(self.tmp, "at")
            with open(tok, "w") as f:
                f.write("bench-opaque-token\n")
            os.chmod(tok, 0o600)
            r = subprocess.run([cli, "account", "add", "--endpoint", self.ep, "--account", "acct1",
                                "--client-id", "bench", "--base-url", "http://127.0.0.1:9",
                                "--access-token-file", tok, "--refresh-token-file", "-"],
                               input="bench-refresh\n", capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError("account add: " + r.stderr)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def reader(ep):
    s = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(ep)
    return s


def non_reader(ep, kind=zmq.DEALER):
    s = CTX.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVHWM, 1)
    s.setsockopt(zmq.RCVBUF, 4096)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(ep)
    return s


def call(s, m):
    s.send(msgpack.packb(m, use_bin_type=True))
    if not s.poll(20000):
        raise RuntimeError(f"no reply to {m.get('op')}")
    return msgpack.unpackb(s.recv(), raw=False)


def submits(s, n, tenant, params_of=None, site=False):
    """Pipelined submits (window 500); returns the replies' ids."""
    ids, sent, got = [], 0, 0
    while got < n:
        while sent < n and sent - got < 500:
            m = {"op": "submit", "tenant": tenant, "key": f"{tenant}-{sent}", "account": "acct1",
                 "command": "door_lock", "vin": vin(sent % 5000), "ttl_ms": 3600000}
            if site:
                m.pop("vin")
                m.update(site=1000 + sent, command="time_of_use_settings",
                         params=params_of(sent))
            s.send(msgpack.packb(m, use_bin_type=True))
            sent += 1
        if not s.poll(20000):
            raise RuntimeError("submits stalled")
        r = msgpack.unpackb(s.recv(), raw=False)
        if not r.get("ok"):
            raise RuntimeError(f"submit refused: {r}")
        ids.append(r["id"])
        got += 1
    return ids


def scenario(d, name):
    pid = d.proc.pid
    if name == "pings":
        s = non_reader(d.ep)
        time.sleep(0.3)
        before = settle(pid, 1.0)
        req = b"x" * (200 * 1024)
        for _ in range(2000):
            s.send(msgpack.packb({"op": "ping", "req": req}, use_bin_type=True))
        what = "2,000 pings with a 200 KB req"
    elif name == "gets":
        w = reader(d.ep)
        tou = {"tariff_content_v2": {"version": 1, "name": "t" * 15000}}
        ids = submits(w, 1, "bc-get", params_of=lambda i: {"tou_settings": tou}, site=True)
        s = non_reader(d.ep)
        time.sleep(0.3)
        before = settle(pid, 1.0)
        body = msgpack.packb({"op": "get", "id": ids[0]}, use_bin_type=True)
        for _ in range(20000):
            s.send(body)
        w.close()
        what = "20,000 gets of a command with 15 KB of params"
    elif name == "history":
        w = reader(d.ep)
        submits(w, 2400, "bc-hist")
        w.close()
        s = non_reader(d.ep)
        time.sleep(0.3)
        before = settle(pid, 1.0)
        body = msgpack.packb({"op": "history", "shard": 0, "limit": 1000}, use_bin_type=True)
        for _ in range(500):
            s.send(body)
        what = "500 history pages of 1,000 events"
    elif name in ("subs", "events"):
        subs = []
        for _ in range(10 if name == "subs" else 0):
            x = non_reader(d.pub, zmq.SUB)
            x.setsockopt(zmq.SUBSCRIBE, b"")
            subs.append(x)
        time.sleep(1.0)
        before = settle(pid, 1.0)
        w = reader(d.ep)
        submits(w, 100000, "bc-sub")
        w.close()
        s = subs
        what = ("10 SUBs that never read, 100,000 events" if subs else
                "no subscriber, 100,000 events (the baseline of the row above)")
    else:
        raise ValueError(name)
    during = settle(pid)
    for x in (s if isinstance(s, list) else [s]):  # the clients leave
        x.close(0)
    time.sleep(2.0)
    after = settle(pid, 1.5, 20)
    return what, before, during, after


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(HERE)
    ap.add_argument("--fleetqd", default=os.path.join(root, "build", "bin", "fleetqd"))
    ap.add_argument("--fleetq", default=None)
    ap.add_argument("--only", default="pings,gets,history,subs,events")
    ap.add_argument("--out", default=None)
    ap.add_argument("--label", default=None)
    a = ap.parse_args()
    cli = a.fleetq or os.path.join(os.path.dirname(a.fleetqd), "fleetq")
    rows = []
    for name in a.only.split(","):
        d = Daemon(a.fleetqd, cli)
        try:
            what, b, m, after = scenario(d, name)
        finally:
            d.stop()
        line = (f"{name}: {what}: RSS {b:.1f} MB before, {m:.1f} MB with the clients "
                f"(+{m - b:.1f}), {after:.1f} MB after they left")
        print(line, flush=True)
        rows.append((what, b, m, m - b, after))
    if a.out:
        with open(a.out, "a") as f:
            f.write(f"\n{a.label or a.fleetqd}\n\n| scenario | RSS before MB | with the clients MB "
                    f"| growth MB | after they left MB |\n|---|---|---|---|---|\n")
            for what, b, m, g, after in rows:
                f.write(f"| {what} | {b:.1f} | {m:.1f} | +{g:.1f} | {after:.1f} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
