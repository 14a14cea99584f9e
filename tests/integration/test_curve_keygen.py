#!/usr/bin/python3
"""`fleetq curve-keygen` and the CURVE client options, without fleetqd (its
CURVE side is separate work): the key file's exact form and mode 0600
whatever the umask, the printed key is the file's public key, the pair is a
real pair (pyzmq's curve_public), an existing file is never overwritten.
Then the keys at work against a CURVE ROUTER / PUB made here with pyzmq, a
ZAP handler recording the client keys it is shown: `fleetq ping`, `watch`
and `fleetq-replay run` get through with --curve-key / --server-key or
FLEETQ_CURVE_KEY / FLEETQ_SERVER_KEY (a flag wins), presenting the key
file's public key; a wrong server key, a key the ZAP handler refuses and a
plaintext client each fail fast (exit 1, auth_error); half a setup, a bad
server key and a 0644 key file are usage errors (exit 2)."""

import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time

import msgpack
import zmq
from zmq.utils import z85

from lib import fqlib
from lib.fqlib import BIN, cli, log

Z85 = r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]"
KEYFILE_RX = re.compile(rf"\Apublic ({Z85}{{40}})\nsecret ({Z85}{{40}})\n\Z")


def read_pair(path):
    with open(path) as f:
        text = f.read()
    m = KEYFILE_RX.match(text)
    return (m.group(1), m.group(2)) if m else (None, None)


class CurveServer:
    """A CURVE ROUTER and PUB on loopback playing fleetqd: answers `ping`
    and `submit` (echoing `req`), publishes one event every 10 ms, and runs a
    ZAP handler that admits the keys in self.allowed (all when None) and
    records every client key it sees (Z85)."""

    def __init__(self):
        self.ctx = zmq.Context()
        self.public, self.secret = zmq.curve_keypair()
        self.allowed = None
        self.seen = []
        self.requests = 0
        self.errors = []
        self.stop = threading.Event()
        self.zap = self.ctx.socket(zmq.REP)
        self.zap.linger = 0
        self.zap.bind("inproc://zeromq.zap.01")
        self.router = self._server(zmq.ROUTER)
        self.pub = self._server(zmq.PUB)
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.publish = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _server(self, kind):
        s = self.ctx.socket(kind)
        s.linger = 0
        s.curve_server = True
        s.curve_secretkey = self.secret
        s.bind("tcp://127.0.0.1:*")
        return s

    def _zap_reply(self, frames):
        version, rid, _domain, _addr, _ident, mech = frames[:6]
        key = z85.encode(frames[6]).decode() if mech == b"CURVE" and len(frames) > 6 else ""
        self.seen.append(key)
        ok = self.allowed is None or key in self.allowed
        self.zap.send_multipart([b"1.0", rid, b"200" if ok else b"400",
                                 b"OK" if ok else b"key not listed",
                                 key.encode() if ok else b"", b""])

    def _answer(self, ident, body):
        self.requests += 1
        req = msgpack.unpackb(body, raw=False)
        rep = {"ok": True}
        if req.get("op") == "ping":
            rep.update(version="curve-test", shards=1)
        else:
            rep.update(id=f"fq-{self.requests}", state="queued", dup=False)
        if "req" in req:
            rep["req"] = req["req"]
        self.router.send_multipart([ident, msgpack.packb(rep, use_bin_type=True)])

    def _run(self):
        try:
            self._loop()
        except Exception as e:  # reported by the test, not lost in a thread
            self.errors.append(repr(e))

    def _loop(self):
        poller = zmq.Poller()
        poller.register(self.zap, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        ev = {"id": "fq-ev", "tenant": "acme", "vin": fqlib.vin(1), "command": "door_lock",
              "state": "queued", "prev": None, "at": int(time.time() * 1000), "shard": 0,
              "seq": 1}
        next_pub = 0.0
        while not self.stop.is_set():
            for s, _ in poller.poll(10):
                frames = s.recv_multipart()
                if s is self.zap:
                    self._zap_reply(frames)
                else:
                    self._answer(frames[0], frames[-1])
            if time.monotonic() >= next_pub:
                self.pub.send_multipart([f"acme/{fqlib.vin(1)}".encode(),
                                         msgpack.packb(ev, use_bin_type=True)])
                next_pub = time.monotonic() + 0.01

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for s in (self.router, self.pub, self.zap):
            s.close()
        self.ctx.term()


def replay(*args, env=None, timeout=60):
    exe = os.path.join(BIN, "fleetq-replay")
    return subprocess.run([exe] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def timed_cli(*args, env=None):
    t0 = time.monotonic()
    exe = os.path.join(BIN, "fleetq")
    r = subprocess.run([exe] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=60, env=env)
    return r, time.monotonic() - t0


def body(c):
    tmp = tempfile.mkdtemp(prefix="fq-curve-")
    fqlib._cleanups.append(lambda: shutil.rmtree(tmp, ignore_errors=True))

    # ---- keygen -----------------------------------------------------------
    r = cli("--help")
    c.ok(r.returncode == 0 and "curve-keygen" in r.stdout, "fleetq --help lists curve-keygen",
         r.stdout)
    r = cli("curve-keygen", "--help")
    c.ok(r.returncode == 0 and "public <40-character Z85 public key>" in r.stdout
         and "0600" in r.stdout, "curve-keygen --help", r.stdout)
    r = cli("curve-keygen", "-h")
    c.eq(r.returncode, 0, "curve-keygen -h")
    r = cli("curve-keygen")
    c.ok(r.returncode == 2 and "--out" in r.stderr, "no --out: usage error", r)
    r = cli("curve-keygen", "--out", os.path.join(tmp, "x.key"), "extra")
    c.eq(r.returncode, 2, "stray argument: usage error")
    c.ok(not os.path.exists(os.path.join(tmp, "x.key")), "nothing written on a usage error")

    keys = {}
    old_umask = os.umask(0)  # the child inherits it: the mode must still be 0600
    try:
        for name in ("client.key", "other.key"):
            path = os.path.join(tmp, name)
            r = cli("curve-keygen", "--out", path)
            c.eq(r.returncode, 0, f"keygen {name} rc", r.stderr)
            c.eq(r.stderr, "", f"keygen {name}: nothing on stderr")
            c.ok(re.fullmatch(rf"{Z85}{{40}}\n", r.stdout) is not None,
                 "stdout is one line holding only the key", repr(r.stdout))
            pub, sec = read_pair(path)
            c.ok(pub is not None, "file is exactly 'public <40>\\nsecret <40>\\n'",
                 open(path).read() if os.path.exists(path) else "missing")
            c.eq(r.stdout.strip(), pub, "printed key is the file's public key")
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            c.eq(oct(mode), oct(0o600), f"{name} mode with umask 000")
            if pub and sec:
                c.eq(zmq.curve_public(sec.encode()).decode(), pub,
                     "secret and public are a pair (zmq.curve_public)")
            keys[name] = (path, pub, sec)
    finally:
        os.umask(old_umask)
    c.ok(keys["client.key"][1] != keys["other.key"][1], "two runs, two different keys")

    path, pub, _ = keys["client.key"]
    with open(path) as f:
        before = f.read()
    r = cli("curve-keygen", "--out", path)
    c.eq(r.returncode, 1, "existing file: exit 1", r.stdout, r.stderr)
    c.ok("exists; refusing to overwrite" in r.stderr and path in r.stderr,
         "says it refuses to overwrite", r.stderr)
    c.eq(r.stdout, "", "nothing printed when refused")
    with open(path) as f:
        c.eq(f.read(), before, "file unchanged")
    c.ok(all(k[2] not in r.stdout + r.stderr for k in keys.values()),
         "no secret key in the output")

    # ---- the keys at work -------------------------------------------------
    srv = CurveServer()
    fqlib._cleanups.append(srv.close)
    spub = srv.public.decode()
    ep = ["--endpoint", srv.endpoint]
    curve = ["--curve-key", path, "--server-key", spub]

    r, took = timed_cli("ping", *ep, *curve, "--timeout", "10")
    c.ok(r.returncode == 0 and "version curve-test" in r.stdout, "ping over CURVE", r)
    c.ok(pub in srv.seen, "the server saw the key file's public key", srv.seen, pub)

    r = cli("watch", "--publish", srv.publish, *curve, "--count", "1", "--json",
            "--timeout", "10")
    c.ok(r.returncode == 0 and '"fq-ev"' in r.stdout, "watch over CURVE", r)

    env = dict(os.environ, FLEETQ_CURVE_KEY=path, FLEETQ_SERVER_KEY=spub)
    r, _ = timed_cli("ping", *ep, "--timeout", "10", env=env)
    c.ok(r.returncode == 0, "ping with FLEETQ_CURVE_KEY / FLEETQ_SERVER_KEY", r)
    bad_env = dict(os.environ, FLEETQ_CURVE_KEY=path, FLEETQ_SERVER_KEY=keys["other.key"][1])
    r, _ = timed_cli("ping", *ep, "--server-key", spub, "--timeout", "10", env=bad_env)
    c.ok(r.returncode == 0, "--server-key wins over FLEETQ_SERVER_KEY", r)

    # Refusals: fast, exit 1, auth_error, and a word on the cause.
    for what, args, env_, frag in (
            ("wrong server key", ["--curve-key", path, "--server-key", keys["other.key"][1]],
             None, "server key"),
            ("wrong server key from the environment", [], bad_env, "server key"),
            ("plaintext client", [], None, "CURVE")):
        r, took = timed_cli("ping", *ep, *args, "--timeout", "10", env=env_)
        c.ok(r.returncode == 1 and "auth_error" in r.stderr and frag in r.stderr,
             f"{what}: exit 1, auth_error", r)
        c.ok(took < 5, f"{what}: refused in {took:.2f} s, not after the 10 s timeout")
    srv.allowed = {keys["other.key"][1]}
    r, took = timed_cli("ping", *ep, *curve, "--timeout", "10")
    c.ok(r.returncode == 1 and "auth_error" in r.stderr and "ZAP status 400" in r.stderr,
         "a key the server does not list: exit 1, auth_error", r)
    c.ok(took < 5, f"unlisted key refused in {took:.2f} s")
    r = cli("watch", "--publish", srv.publish, *curve, "--count", "1", "--timeout", "10")
    c.ok(r.returncode == 1 and "auth_error" in r.stderr, "watch with an unlisted key", r)
    srv.allowed = None

    # Usage errors: half a setup, a malformed server key, a loose key file.
    r = cli("ping", *ep, "--curve-key", path)
    c.ok(r.returncode == 2 and "--server-key" in r.stderr, "--curve-key alone: exit 2", r)
    r = cli("get", *ep, "--id", "x", "--server-key", spub)
    c.ok(r.returncode == 2 and "--curve-key" in r.stderr, "--server-key alone: exit 2", r)
    r = cli("ping", *ep, "--curve-key", path, "--server-key", spub[:39])
    c.ok(r.returncode == 2 and "not a CURVE public key" in r.stderr, "short server key: exit 2", r)
    loose = os.path.join(tmp, "loose.key")
    shutil.copy(path, loose)
    os.chmod(loose, 0o644)
    r = cli("ping", *ep, "--curve-key", loose, "--server-key", spub)
    c.ok(r.returncode == 2 and "chmod 600" in r.stderr and loose in r.stderr,
         "0644 key file: exit 2, says chmod 600", r)
    link = os.path.join(tmp, "link.key")
    os.symlink(path, link)
    r = cli("ping", *ep, "--curve-key", link, "--server-key", spub)
    c.ok(r.returncode == 2 and "symbolic link" in r.stderr, "symlinked key file: exit 2", r)

    # fleetq-replay: its own DEALERs and its subscriber use the keys too.
    traffic = os.path.join(tmp, "t.fqt")
    r = replay("gen", "--out", traffic, "--count", "40", "--devices", "4", "--seed", "7")
    c.eq(r.returncode, 0, "replay gen", r.stderr)
    before = srv.requests
    r = replay("run", traffic, "--endpoint", srv.endpoint, "--publish", srv.publish, *curve,
               "--rate", "2000", "--conns", "2", "--drain", "1", "--json")
    c.eq(r.returncode, 0, "replay run over CURVE", r.stdout, r.stderr)
    c.ok(srv.requests - before >= 41, "ping and 40 submits reached the server",
         srv.requests - before)
    r = replay("run", traffic, "--endpoint", srv.endpoint, "--curve-key", path)
    c.ok(r.returncode == 2 and "--server-key" in r.stderr, "replay --curve-key alone: exit 2", r)
    r = replay("run", traffic, "--endpoint", srv.endpoint, "--curve-key", path,
               "--server-key", keys["other.key"][1])
    c.ok(r.returncode == 1 and "server key" in r.stderr, "replay with a wrong server key", r)
    r = replay("run", "--help")
    c.ok("--curve-key FILE" in r.stdout and "FLEETQ_SERVER_KEY" in r.stdout,
         "replay run --help documents the keys", r.stdout)

    c.eq(srv.errors, [], "the test server ran without errors")
    outs = " ".join(str(x) for x in srv.seen)
    c.ok(all(k[2] not in outs for k in keys.values()), "sanity: no secret seen by the server")
    log("curve keygen / client checks done")


fqlib.run_test("test_curve_keygen", body)
