"""Shared harness of the fleetq integration tests.

Starts a real `fleetqd` (from $FQ_BIN) on free loopback ports with a
temporary data dir, waits for its "fleetqd: ready" line, and offers:
DEALER / REQ clients (with pipelining), a SUB helper, kill -9 / SIGTERM /
restart helpers, a CLI runner, and a tiny check/report API that prints both
sides of every failed comparison and ends with "N passed, N failed".

Everything started here is cleaned up at exit (daemons killed, temp dirs
removed unless FQ_KEEP=1), whatever happened.
"""

import atexit
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import msgpack
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("FQ_SRC") or os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("FQ_BIN") or os.path.join(SRC, "build", "bin")

# A VIN alphabet without I, O, Q; test VINs are synthetic but well formed.
VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"

TERMINAL = {"succeeded", "failed", "unknown", "expired", "cancelled", "superseded"}
EVENT_KEYS = {"id", "tenant", "key", "command", "state", "prev", "at", "attempt",
              "reason", "error", "http", "fault", "shard", "seq", "tseq"}

_ZCTX = zmq.Context.instance()
_cleanups = []


def log(*a):
    print(*a, flush=True)


def vin(n, prefix="5YJ3E1EA"):
    """A deterministic, valid-looking 17-char VIN for device number n."""
    s = ""
    x = n
    for _ in range(17 - len(prefix)):
        s = VIN_CHARS[x % len(VIN_CHARS)] + s
        x //= len(VIN_CHARS)
    return prefix + s


def seeded(name, default=None):
    """A random.Random with a fixed seed (FQ_SEED overrides), logged."""
    seed = int(os.environ.get("FQ_SEED", default if default is not None else 12345))
    log(f"[{name}] random seed {seed} (set FQ_SEED to change)")
    return random.Random(seed)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# checks


class Checks:
    """Assertions that keep going and print both sides on failure."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def ok(self, cond, what, *detail):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            log(f"FAIL [{self.name}] {what}")
            for d in detail:
                log(f"      {d!r}" if not isinstance(d, str) else f"      {d}")
        return bool(cond)

    def eq(self, got, want, what, *detail):
        return self.ok(got == want, what, f"got:  {got!r}", f"want: {want!r}", *detail)

    def finish(self):
        log(f"{self.name}: {self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)


def run_test(name, fn):
    """Run fn(checks) and exit with its verdict; an exception is a failure."""
    c = Checks(name)
    try:
        fn(c)
    except Exception:  # report, then fail: cleanup still runs via atexit
        traceback.print_exc()
        c.failed += 1
    c.finish()


# --------------------------------------------------------------------------
# the daemon


class Daemon:
    """One fleetqd process on loopback, restartable on the same data dir."""

    def __init__(self, shards=4, config=None, extra=(), log_level="info", name="fleetqd",
                 accounts=()):
        """accounts: ids added with `fleetq account add` after the first
        start (fleetqd refuses submits for accounts it does not have, with
        unknown_account).  They hold an opaque token and a loopback base
        URL where nothing listens: with --no-dispatch (extra) nothing is
        ever sent; without it a command sent for them fails to connect."""
        self.exe = os.path.join(BIN, "fleetqd")
        self.accounts = list(accounts)
        if not os.access(self.exe, os.X_OK):
            raise RuntimeError(f"{self.exe} not found: build fleetqd first (FQ_BIN={BIN})")
        self.shards = shards
        self.config = config
        self.extra = list(extra)
        self.log_level = log_level
        self.tmp = tempfile.mkdtemp(prefix="fq-it-")
        self.data = os.path.join(self.tmp, "data")
        self.port = free_port()
        self.pub_port = free_port()
        while self.pub_port == self.port:
            self.pub_port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.publish = f"tcp://127.0.0.1:{self.pub_port}"
        self.proc = None
        self.starts = 0
        self.logpath = None
        _cleanups.append(self.cleanup)

    def start(self, timeout=30):
        self.starts += 1
        self.logpath = os.path.join(self.tmp, f"fleetqd.{self.starts}.log")
        args = [self.exe, "--data", self.data, "--listen", self.endpoint,
                "--publish", self.publish, "--shards", str(self.shards)]
        # log_level=None: no flag, so that a --config file's log_level counts.
        if self.log_level is not None:
            args += ["--log-level", self.log_level]
        args += self.extra
        if self.config:
            args += ["--config", self.config]
        logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.logpath, "rb") as f:
                if b"fleetqd: ready" in f.read():
                    if self.starts == 1:
                        for a in self.accounts:
                            add_account(self.endpoint, a)
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleetqd exited with {self.proc.returncode} before ready:\n"
                                   + self.log_tail())
            time.sleep(0.02)
        raise RuntimeError(f"fleetqd not ready after {timeout} s:\n" + self.log_tail())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def term(self, timeout=30):
        """SIGTERM and wait; returns the exit status (None if it hung)."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def restart(self):
        self.kill9()
        return self.start()

    def log_tail(self, n=40):
        try:
            with open(self.logpath, "r", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except (OSError, TypeError):
            return ""

    def cleanup(self):
        try:
            self.kill9()
        finally:
            if os.environ.get("FQ_KEEP"):
                log(f"keeping {self.tmp}")
            else:
                import shutil
                shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if exc[0] is not None:
            log("---- fleetqd log tail ----\n" + self.log_tail())
        self.cleanup()
        return False


@atexit.register
def _cleanup_all():
    for fn in reversed(_cleanups):
        try:
            fn()
        except Exception:
            pass


# --------------------------------------------------------------------------
# clients


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def unpack(b):
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


class Client:
    """A DEALER to the daemon's ingress.  call() is request/reply; send() and
    recv() pipeline (tell replies apart by their echoed `req`)."""

    def __init__(self, endpoint, timeout=10.0, kind=zmq.DEALER, curve=None):
        self.endpoint = endpoint
        self.timeout = timeout
        self.kind = kind
        self.sock = _ZCTX.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve:
            set_curve(self.sock, curve)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        # A DEALER without a peer blocks in send, and one whose handshake
        # was refused (plaintext, unlisted key) has none left once libzmq
        # dropped the session: a send then must fail (zmq.Again), never
        # hang the test.
        self.sock.setsockopt(zmq.SNDTIMEO, max(1, int(timeout * 1000)))
        self.sock.connect(endpoint)
        self._next = 0

    def close(self):
        self.sock.close(0)

    def send_raw(self, frames):
        """Send a list of frames as they are (no envelope added)."""
        self.sock.send_multipart(frames)

    def send(self, obj):
        body = obj if isinstance(obj, (bytes, bytearray)) else pack(obj)
        self.sock.send(body)

    def recv_frames(self, timeout=None):
        t = self.timeout if timeout is None else timeout
        if not self.sock.poll(int(t * 1000)):
            return None
        return self.sock.recv_multipart()

    def recv(self, timeout=None):
        """Next reply as a dict, or None on timeout."""
        frames = self.recv_frames(timeout)
        if frames is None:
            return None
        return unpack(frames[-1])

    def call(self, obj, timeout=None):
        self.send(obj)
        r = self.recv(timeout)
        if r is None:
            raise TimeoutError(f"no reply from {self.endpoint} to {obj!r:.200}")
        return r

    def next_req(self):
        self._next += 1
        return self._next

    # shorthands -------------------------------------------------------
    def submit(self, tenant, key, command="door_lock", vin_=None, site=None, account="acct1",
               params=None, **kw):
        m = {"op": "submit", "tenant": tenant, "key": key, "account": account,
             "command": command}
        if site is not None:
            m["site"] = site
        else:
            m["vin"] = vin_ or vin(0)
        if params is not None:
            m["params"] = params
        m.update(kw)
        return self.call(m)

    def get(self, id_=None, tenant=None, key=None):
        m = {"op": "get"}
        if id_ is not None:
            m["id"] = id_
        else:
            m.update(tenant=tenant, key=key)
        return self.call(m)

    def cancel(self, id_=None, tenant=None, key=None):
        m = {"op": "cancel"}
        if id_ is not None:
            m["id"] = id_
        else:
            m.update(tenant=tenant, key=key)
        return self.call(m)

    def ping(self, timeout=None):
        return self.call({"op": "ping"}, timeout)

    def history(self, shard, after=0, limit=1000, tenant=None):
        m = {"op": "history", "shard": shard, "after": after, "limit": limit}
        if tenant is not None:
            m["tenant"] = tenant  # then after / next count the tenant's tseq
        return self.call(m)

    def history_all(self, shard, after=0):
        """Every stored event of a shard after `after`, following `next`."""
        out = []
        while True:
            r = self.history(shard, after)
            if not r.get("ok"):
                raise RuntimeError(f"history failed: {r!r}")
            out += r["events"]
            if not r["events"]:
                return out
            # Continue after the last event returned (which `next` should
            # equal; tests of `next` itself check it separately).
            nxt = r["events"][-1]["seq"]
            if nxt <= after:
                return out
            after = nxt


def pipeline(client, requests, window=500, timeout=30.0):
    """Send requests (dicts; each gets a fresh `req`) keeping at most `window`
    in flight.  Returns {req: reply} and the list of reqs in send order."""
    replies, order, inflight = {}, [], set()
    it = iter(requests)
    done = False
    deadline = time.monotonic() + timeout
    while not done or inflight:
        while not done and len(inflight) < window:
            try:
                m = dict(next(it))
            except StopIteration:
                done = True
                break
            m["req"] = client.next_req()
            client.send(m)
            order.append(m["req"])
            inflight.add(m["req"])
        if inflight:
            left = deadline - time.monotonic()
            r = client.recv(max(left, 0.01))
            if r is None:
                raise TimeoutError(f"{len(inflight)} replies missing after {timeout} s")
            inflight.discard(r.get("req"))
            replies[r.get("req")] = r
    return replies, order


def set_curve(sock, curve):
    """curve = (client public, client secret, server public), Z85 bytes."""
    pub, sec, server = (k.encode() if isinstance(k, str) else k for k in curve)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, pub)
    sock.setsockopt(zmq.CURVE_SECRETKEY, sec)
    sock.setsockopt(zmq.CURVE_SERVERKEY, server)


class Sub:
    """A SUB socket on the daemon's publisher with topic prefix filters."""

    def __init__(self, endpoint, prefixes=("",), curve=None):
        self.sock = _ZCTX.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        if curve:
            set_curve(self.sock, curve)
        mon = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        for p in prefixes:
            self.sock.setsockopt(zmq.SUBSCRIBE, p.encode() if isinstance(p, str) else p)
        self.sock.connect(endpoint)
        # Wait for the handshake; the subscription follows on the same
        # connection, a short pause lets the publisher apply it.
        ok = mon.poll(5000)
        if ok:
            mon.recv_multipart()
        self.sock.disable_monitor()
        mon.close(0)
        time.sleep(0.2)
        if not ok:
            raise RuntimeError(f"cannot reach publisher {endpoint}")

    def recv(self, timeout=5.0):
        """(topic str, event dict) or None on timeout."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        frames = self.sock.recv_multipart()
        if len(frames) != 2:
            raise AssertionError(f"event with {len(frames)} frames: {frames!r:.200}")
        return frames[0].decode(), unpack(frames[1])

    def collect(self, n=None, timeout=5.0, until=None):
        """Events until n were received, or until(ev) is true, or silence of
        `timeout` seconds."""
        out = []
        while n is None or len(out) < n:
            r = self.recv(timeout)
            if r is None:
                break
            out.append(r)
            if until and until(r[1]):
                break
        return out

    def close(self):
        self.sock.close(0)


def wait_for(pred, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


# --------------------------------------------------------------------------
# the CLI


def cli(*args, timeout=30, input_=None):
    """Run bin/fleetq; returns CompletedProcess (text)."""
    exe = os.path.join(BIN, "fleetq")
    return subprocess.run([exe] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, input=input_)


def add_account(endpoint, account, token=None, refresh="refresh-not-a-secret",
                base_url="http://127.0.0.1:9", client_id="test-client"):
    """`fleetq account add` against the daemon at endpoint.  The CLI takes
    tokens only from files or stdin: the access token goes through a 0600
    temporary file (removed at once), the refresh token through stdin.  The
    default token is opaque (no expiry known, so no refresh is started) and
    the default base URL a loopback port where nothing listens."""
    token = token or f"{account}-opaque-token"
    fd, atf = tempfile.mkstemp(prefix="fq-at-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        r = cli("account", "add", "--endpoint", endpoint, "--account", account,
                "--access-token-file", atf, "--refresh-token-file", "-",
                "--client-id", client_id, "--base-url", base_url, input_=refresh + "\n")
    finally:
        os.unlink(atf)
    if r.returncode != 0:
        raise RuntimeError(f"fleetq account add {account} failed ({r.returncode}): "
                           f"{r.stdout}{r.stderr}")
    return r


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def bg(fn, *a):
    """Run fn(*a) in a daemon thread; returns (thread, result list)."""
    res = []

    def run():
        try:
            res.append(fn(*a))
        except Exception as e:  # the caller checks res for an exception
            res.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, res
