#!/usr/bin/env python3
"""Memory and restart time of fleetqd with N stored commands (run-all.sh's
section 3 on its own, for before/after comparisons).

    perf/bench_restart.py --count 1000000 [--fleetqd OLD --fleetqd NEW] [--pairs 2]

Fills a fresh fleetqd (the first --fleetqd) with N queued commands the way
run-all.sh does (fleetq-replay, closed loop, ttl 24 h so nothing expires,
uniform over 10,000 cars, nothing dispatched), stops it with SIGTERM, then
restarts the same data directory `--pairs` times with each binary in turn
(old, new, old, new...): the binaries must read the same store format.
For each restart it reports the time from exec until a `get` of the last
stored command is answered (run-all's "restart until served"), the RSS one
second later split into anonymous and file-backed pages
(/proc/PID/status RssAnon / RssFile), the bytes per stored command over an
empty daemon's RSS, and fleetqd's own start-up lines ("rebuilt ..."), then
the median per binary.  Tools (fleetq, fleetq-replay) come from --bin.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def status_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0])
    return out


def cpu_s(pid):
    """User + system CPU seconds of a process so far: on a shared machine
    the figure that moves least with the other work."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Daemon:
    def __init__(self, binary, data, bindir):
        self.binary, self.data, self.bindir = binary, data, bindir
        self.ep = f"tcp://127.0.0.1:{free_port()}"
        self.pub = f"tcp://127.0.0.1:{free_port()}"
        self.log = data + ".log"
        self.proc = None
        self.t0 = 0.0

    def start(self):
        logf = open(self.log, "wb")
        self.t0 = time.time()
        # info: fleetqd's start-up lines (what the rebuild took) are read
        # from the log.
        self.proc = subprocess.Popen(
            [self.binary, "--data", self.data, "--listen", self.ep, "--publish", self.pub,
             "--log-level", "info", "--default-ttl-ms", "86400000", "--no-dispatch"],
            stdout=subprocess.DEVNULL, stderr=logf)
        logf.close()

    def wait_ping(self, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            r = subprocess.run([os.path.join(self.bindir, "fleetq"), "ping", "--endpoint", self.ep,
                                "--timeout", "0.2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            if self.proc.poll() is not None:
                sys.exit(f"fleetqd exited: see {self.log}")
        sys.exit("fleetqd did not answer a ping")

    def until_served(self, key, timeout=300):
        """Seconds from exec until a `get` of key is answered with ok."""
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 2)
        s.connect(self.ep)
        req = msgpack.packb({"op": "get", "tenant": "replay", "key": key})
        s.send(req)
        end = time.time() + timeout
        try:
            while time.time() < end:
                if self.proc.poll() is not None:
                    sys.exit(f"fleetqd exited: see {self.log}")
                if s.poll(20):
                    if msgpack.unpackb(s.recv(), raw=False).get("ok", False):
                        served = time.time() - self.t0
                        self.cpu_served = cpu_s(self.proc.pid)
                        return served
                    s.send(req)
        finally:
            s.close()
        sys.exit(f"{key} was not served within {timeout} s")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def startup_lines(log):
    with open(log, errors="replace") as f:
        return [l.rstrip() for l in f if re.search(r"rebuilt|loaded|snapshot|settled|checked|opened|announced|ready", l)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100000)
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--fleetqd", action="append", help="binary (repeat to alternate)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"),
                    help="directory of fleetq and fleetq-replay")
    ap.add_argument("--pairs", type=int, default=2, help="restarts per binary")
    ap.add_argument("--keep", help="keep the data directory here (reused when it exists)")
    ap.add_argument("--no-prime", dest="prime", action="store_false",
                    help="time each restart right after the other binary's stop (by default "
                         "each binary is started and stopped once, untimed, before its timed "
                         "restart, so that it starts from its own clean stop: fleetqd keeps "
                         "its dedupe snapshot only for the store state it wrote it for)")
    a = ap.parse_args()
    bins = a.fleetqd or [os.path.join(a.bin, "fleetqd")]
    work = tempfile.mkdtemp(prefix="fq-restart-")
    data = a.keep or os.path.join(work, "data")
    key = f"m{a.count}-{a.count - 1}"
    try:
        # An empty daemon's RSS (the first binary), then the fill.
        fresh = not os.path.exists(data)
        empty = {}
        for b in bins:
            d = Daemon(b, os.path.join(work, "empty"), a.bin)
            d.start()
            d.wait_ping()
            time.sleep(1)
            empty[b] = status_kb(d.proc.pid)
            d.stop()
            shutil.rmtree(d.data)
        if fresh:
            trace = os.path.join(work, "fill.fqt")
            subprocess.run([os.path.join(a.bin, "fleetq-replay"), "gen", "--out", trace,
                            "--count", str(a.count), "--devices", str(a.devices), "--uniform",
                            "--seed", "2", "--ttl-ms", "86400000", "--key-prefix", f"m{a.count}"],
                           check=True, stderr=subprocess.DEVNULL)
            d = Daemon(bins[0], data, a.bin)
            d.start()
            d.wait_ping()
            tok = os.path.join(work, "tok")
            with open(os.open(tok, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                f.write("bench-opaque-token\n")
            subprocess.run([os.path.join(a.bin, "fleetq"), "account", "add", "--endpoint", d.ep,
                            "--account", "replay-acct", "--client-id", "bench", "--base-url",
                            "http://127.0.0.1:9", "--access-token-file", tok,
                            "--refresh-token-file", "-"], input=b"bench-refresh-token\n",
                           check=True, stdout=subprocess.DEVNULL)
            t = time.time()
            r = subprocess.run([os.path.join(a.bin, "fleetq-replay"), "run", trace, "--endpoint",
                                d.ep, "--max-inflight", "256", "--conns", "4", "--drain", "30",
                                "--json"], capture_output=True, text=True)
            fill_s = time.time() - t
            acked = re.search(r'"acked":\s*(\d+)', r.stdout)
            print(f"filled {a.count} commands ({acked.group(1) if acked else '?'} acked) in "
                  f"{fill_s:.1f} s; RSS filled {status_kb(d.proc.pid)['VmRSS'] / 1024:.1f} MB",
                  flush=True)
            d.stop()
            os.unlink(trace)
        du = subprocess.run(["du", "-sk", data], capture_output=True, text=True).stdout.split()[0]
        print(f"data on disk {int(du) / 1024:.1f} MB", flush=True)
        res = {b: [] for b in bins}
        for rnd in range(a.pairs):
            for b in bins:
                if a.prime:
                    d = Daemon(b, data, a.bin)
                    d.start()
                    d.until_served(key)
                    d.stop()
                d = Daemon(b, data, a.bin)
                d.start()
                served = d.until_served(key)
                d.wait_ping()
                time.sleep(1)
                st = status_kb(d.proc.pid)
                d.stop()
                per = (st["VmRSS"] - empty[b]["VmRSS"]) * 1024 / a.count
                res[b].append((served * 1000, st["VmRSS"], st["RssAnon"], st["RssFile"], per,
                               d.cpu_served * 1000))
                print(f"round {rnd + 1} {b}: served after {served * 1000:.0f} ms "
                      f"(CPU {d.cpu_served * 1000:.0f} ms); RSS "
                      f"{st['VmRSS'] / 1024:.1f} MB (anon {st['RssAnon'] / 1024:.1f}, file "
                      f"{st['RssFile'] / 1024:.1f}); empty {empty[b]['VmRSS'] / 1024:.1f} MB; "
                      f"{per:.0f} B per stored command", flush=True)
                for l in startup_lines(d.log):
                    print("   ", l)
        print(f"\nmedians over {a.pairs} restart(s), {a.count} stored commands:")
        print("| fleetqd | restart until served ms | CPU until served ms | RSS MB | anon MB | "
              "file MB | B per command |")
        print("|---|---|---|---|---|---|---|")
        for b in bins:
            m = [statistics.median(x[i] for x in res[b]) for i in range(6)]
            print(f"| {b} | {m[0]:.0f} | {m[5]:.0f} | {m[1] / 1024:.1f} | {m[2] / 1024:.1f} | "
                  f"{m[3] / 1024:.1f} | {m[4]:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
