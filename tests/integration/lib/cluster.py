"""A fleetq cluster on loopback for the cluster fault test, the demo, the
soak and the cluster benchmark (issue 18): a real 3-node NATS JetStream
cluster (lib/nats.py), N fleetqd nodes started with --cluster, and one
fleetsim as Fleet API, plus a traffic generator and the end-of-run checks.

Written against the contract of docs/cluster.md ("Clients connect to any
node") as the lead's brief states it:

  fleetqd --cluster nats://...,nats://... --node-id ID [--cluster-advertise EP]
  the same --shards on every node, its own --data/--listen/--publish/--metrics;
  any node takes any request (forwarded to the owner; `busy` while a shard
  has no owner: retried with the same key);
  fleetq_cluster_shard_owned{shard="I"} 1 on the metrics of the node that
  owns shard I; every node publishes the events of every shard; history
  works on any node.

Classes:

  FleetCluster  keygen, fleetsim with generated cars, the NATS cluster,
                the nodes (Node: a fqlib.Daemon with fixed ports, so a
                restart comes back where it was), accounts, who owns what
  Traffic       a thread submitting at a fixed rate over many cars and all
                nodes, one command in flight per car (so a car's submit
                order is well defined), each retried with the same key on
                `busy` or a timeout until acknowledged; optionally
                subscribed to one node's events
  Outcome       the checks after quiescence: every acked command terminal,
                no non-idempotent command executed twice (fleetsim's log),
                per-car execution order = submit order, history gap-free,
                published events = stored ones, dedupe cluster-wide

Everything started here is stopped at exit (fqlib's cleanup list).
"""

import collections
import bisect
import heapq
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request

import zmq

from . import dispatch as dl
from . import fqlib
from . import vcp_client as vc
from .fqlib import TERMINAL, Client, cli, free_port, pack, unpack
from .nats import NatsCluster
from .sim import Sim

TENANT = "cl"
ACCOUNT = "acct1"

# What the traffic sends: (command, weight, idempotent).  honk_horn and
# flash_lights are the non-idempotent ones (executed twice is visible to
# people around the car); the others may be retried by a new owner.
MIX = (("honk_horn", 20, False), ("flash_lights", 15, False), ("door_lock", 15, True),
       ("door_unlock", 10, True), ("set_charge_limit", 25, True),
       ("set_charging_amps", 15, True))
NON_IDEMPOTENT = {c for c, _, idem in MIX if not idem}

# The dispatch tests' short timers, with a longer HTTP timeout: the
# machine runs 3 nats-servers, 3 nodes, fleetsim and the generator.
NODE_OPTS = {"--wake-poll-ms": 200, "--retry-backoff-ms": 200, "--http-timeout-ms": 5000}

_OWNED = re.compile(r'^fleetq_cluster_shard_owned\{[^}]*shard="(\d+)"[^}]*\}\s+([0-9.eE+-]+)',
                    re.M)


def cpu_s(pid):
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def fleetqd_has_cluster():
    """True when this fleetqd knows --cluster (its --help says so)."""
    import subprocess
    exe = os.path.join(fqlib.BIN, "fleetqd")
    try:
        r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--cluster" in (r.stdout + r.stderr)


class Node(fqlib.Daemon):
    """One fleetqd node: a Daemon with a node id, a metrics port and the
    cluster flags (or none: a single-node fleetqd, for comparisons)."""

    def __init__(self, name, shards, extra, nats_urls=None, log_level="info"):
        self.node_id = name
        self.metrics_port = free_port()
        flags = list(extra) + ["--metrics", f"127.0.0.1:{self.metrics_port}"]
        if nats_urls:
            flags += ["--cluster", nats_urls, "--node-id", name]
        super().__init__(shards=shards, extra=flags, log_level=log_level, name=name)
        if nats_urls:
            # The endpoint other nodes forward to: the same as --listen.
            self.extra += ["--cluster-advertise", self.endpoint]
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self, timeout=1.0):
        """The metrics text, or None when the node does not answer."""
        if not self.alive():
            return None
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=timeout) as r:
                return r.read().decode(errors="replace")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def owned(self):
        """The shards this node says it owns (a set), None if it does not
        answer."""
        text = self.metrics()
        if text is None:
            return None
        return {int(m.group(1)) for m in _OWNED.finditer(text) if float(m.group(2)) == 1.0}

    def cpu(self):
        return cpu_s(self.proc.pid) if self.alive() else 0.0


class FleetCluster:
    """fleetsim + (optionally) a NATS cluster + nodes + the account.

    nodes=3, cluster=True: 3 fleetqd nodes with --cluster on 3 nats-servers;
    cluster=False: `nodes` must be 1, a plain single-node fleetqd (the
    comparison of the benchmark, and a dry run of the checks)."""

    def __init__(self, name, cars, nodes=3, shards=6, cluster=True, node_opts=None,
                 no_dispatch=False, log_level="info", seed=None):
        self.name = name
        self.cars = list(cars)
        self.shards = shards
        self.cluster = cluster
        self.seed = dl.seed() if seed is None else seed
        self.tmp = fqlib.tempfile.mkdtemp(prefix="fq-cluster-")
        fqlib._cleanups.append(self._rmtmp)
        keydir = os.path.join(self.tmp, "key")
        r = cli("keygen", "--out", keydir)
        if r.returncode != 0:
            raise RuntimeError(f"fleetq keygen failed: {r.stdout}{r.stderr}")
        self.sim_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.sim_port}"
        self.token = dl.make_jwt(ACCOUNT, dl.ALL_SCOPES, [self.base_url])
        self.refresh = f"{ACCOUNT}-refresh-{self.seed}"
        cfg = {"seed": self.seed, "fleet_public_key": os.path.join(keydir, "public.pem"),
               "wake_ms": 1000,
               "accounts": [{"id": ACCOUNT, "scopes": dl.ALL_SCOPES, "vins": self.cars,
                             "sites": [], "token": self.token,
                             "refresh_token": self.refresh}],
               "vehicles": [dl.default_vehicle(v) for v in self.cars], "sites": []}
        self.sim = Sim(cfg, dir=self.tmp, port=self.sim_port, name="fleetsim")
        self.nats = NatsCluster(3, name="fqc") if cluster else None
        opts = dict(NODE_OPTS)
        opts.update(node_opts or {})
        extra = ["--key", os.path.join(keydir, "private.pem"),
                 "--pairing-domain", dl.PAIRING_DOMAIN]
        for k, v in opts.items():
            if v is not None:
                extra += [k] if v is True else [k, str(v)]
        if no_dispatch:
            extra.append("--no-dispatch")
        if not cluster and nodes != 1:
            raise ValueError("a fleetqd without --cluster is one node")
        self.nodes = [Node(f"node{i}", shards, extra,
                           self.nats.urls() if cluster else None, log_level)
                      for i in range(nodes)]

    def _rmtmp(self):
        if not os.environ.get("FQ_KEEP"):
            import shutil
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- life cycle -------------------------------------------------------

    def start(self, stagger=0.0):
        """fleetsim, the NATS servers, the nodes (`stagger` seconds apart:
        the first one started usually takes every shard), the account on
        every node; then wait until every shard has an owner."""
        self.sim.start()
        if self.nats:
            self.nats.start()
        for i, n in enumerate(self.nodes):
            n.start(timeout=60)
            if stagger and i + 1 < len(self.nodes):
                self.wait_owned(timeout=30)
                time.sleep(stagger)
        for n in self.nodes:
            self.add_account(n)
        if self.cluster:
            self.wait_owned(timeout=30)
        return self

    def add_account(self, node):
        """The account on one node.  The contract leaves open whether
        accounts are replicated: a node that already knows the account
        (replicated from another) may refuse the add; that is fine."""
        try:
            dl.add_account(node.endpoint, ACCOUNT, self.token, self.refresh, self.base_url)
        except RuntimeError as e:
            if "exist" not in str(e):
                raise

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def endpoints(self):
        return [n.endpoint for n in self.nodes]

    def ownership(self):
        """{shard: [node names claiming it]} over the live nodes that answer."""
        out = {s: [] for s in range(self.shards)}
        for n in self.live():
            for s in n.owned() or ():
                out.setdefault(s, []).append(n.node_id)
        return out

    def wait_owned(self, timeout=30.0, shards=None, among=None):
        """Wait until each shard (all, or `shards`) is owned by exactly one
        live node (of `among`, when given).  Returns the ownership map,
        raises on timeout."""
        want = range(self.shards) if shards is None else shards
        end = time.monotonic() + timeout
        while True:
            own = self.ownership()
            ok = all(len(own.get(s, [])) == 1 and
                     (among is None or own[s][0] in among) for s in want)
            if ok:
                return own
            if time.monotonic() > end:
                raise RuntimeError(f"shards without exactly one owner after {timeout} s: {own}")
            time.sleep(0.05)

    def owner_lines(self):
        own = self.ownership()
        by = collections.defaultdict(list)
        for s, names in sorted(own.items()):
            by[",".join(names) or "(none)"].append(s)
        return [f"  {name}: shards {' '.join(map(str, ss))}" for name, ss in sorted(by.items())]

    def takeover(self, victim, timeout=20.0, step=0.02):
        """kill -9 `victim` and measure, per shard it owned, the seconds
        until a survivor's metrics show it owned.  Returns (owned before,
        {shard: seconds or None})."""
        before = victim.owned() or set()
        t0 = time.monotonic()
        victim.kill9()
        times = {}
        left = set(before)
        while left and time.monotonic() - t0 < timeout:
            now = time.monotonic() - t0
            for n in self.live():
                for s in (n.owned() or set()) & left:
                    times[s] = now
                    left.discard(s)
            time.sleep(step)
        for s in left:
            times[s] = None
        return before, times

    def close(self):
        for n in self.nodes:
            n.term(timeout=20)
        if self.nats:
            self.nats.cleanup()
        return self.sim.stop()


def cars(n, prefix="5YJ3C1A0"):
    return [fqlib.vin(i, prefix=prefix) for i in range(n)]


# --------------------------------------------------------------------------
# the traffic


def expected_payload(cmd, params):
    """The application payload (hex) fleetsim logs for a command with
    params, or None for a command matched by its name only."""
    if cmd == "set_charge_limit":
        return vc.set_charge_limit(params["percent"])[1].hex()
    if cmd == "set_charging_amps":
        return vc.set_charging_amps(params["charging_amps"])[1].hex()
    return None


class Pending:
    __slots__ = ("car", "msg", "first_t", "attempt", "sent_t", "node")

    def __init__(self, car, msg, now):
        self.car, self.msg, self.first_t = car, msg, now
        self.attempt = 0
        self.sent_t = 0.0
        self.node = -1


class Acked:
    """One acknowledged command (compact: a soak acks millions)."""
    __slots__ = ("key", "id", "car", "command", "params", "t", "lat", "tries", "dup", "ttl_ms")

    def __init__(self, key, id_, car, command, params, t, lat, tries, dup, ttl_ms):
        self.key, self.id, self.car, self.command, self.params = key, id_, car, command, params
        self.t, self.lat, self.tries, self.dup, self.ttl_ms = t, lat, tries, dup, ttl_ms

    def msg(self):
        """The submit exactly as it was sent (without `req`)."""
        m = {"op": "submit", "tenant": TENANT, "key": self.key, "account": ACCOUNT,
             "vin": self.car, "command": self.command, "ttl_ms": self.ttl_ms}
        if self.params is not None:
            m["params"] = self.params
        return m


class Traffic(threading.Thread):
    """Submits `rate` commands/s over `cars`, to the nodes' endpoints in
    turn (random), at most one command per car in flight.  A submit is
    retried with the same key and body on another node after `busy` (50 -
    150 ms later) or when no reply came within `timeout`, until it is
    acknowledged; any other error is counted as refused.  After stop()
    (or `limit` commands) no new command starts; the thread ends once every started command was
    acknowledged (or `drain_s` passed).

    acked: a list of Acked, in ack order.  With `observe` (an endpoint)
    it also subscribes to that node's events, checks per shard that seqs
    only go up on one subscription, and keeps (shard, seq) -> (id, state)
    of the events whose seq is a multiple of `pub_sample` (all by
    default; a soak keeps a sample)."""

    def __init__(self, endpoints, cars_, rate, seed, mix=MIX, timeout=2.0, observe=None,
                 key_prefix="k", ttl_ms=600000, drain_s=120.0, pub_sample=1, limit=None):
        super().__init__(daemon=True)
        self.endpoints = list(endpoints)
        self.cars = list(cars_)
        self.rate = float(rate)
        self.rng = random.Random(seed)
        self.mix = [(c, w) for c, w, _ in mix]
        self.timeout = timeout
        self.key_prefix = key_prefix
        self.ttl_ms = ttl_ms
        self.drain_s = drain_s
        self.pub_sample = max(1, int(pub_sample))
        self.limit = limit
        self.pub_count = 0
        self._stop = threading.Event()
        self._done = threading.Event()
        self._observe_to = observe
        self._observe_req = None
        self._observe_ack = threading.Event()
        self.lock = threading.Lock()
        self.acked = []
        self.refused = []
        self.retry_busy = 0
        self.retry_timeout = 0
        self.stale = 0
        self.started = 0
        self.starved = 0
        self.per_car_n = collections.Counter()
        self.ack_times = []          # monotonic ack times, for gaps and timelines
        self.events = {}             # (shard, seq) -> (id, state) as published
        self.pub_backwards = []      # (epoch, shard, prev seq, seq) where a seq did not go up
        self.pub_epoch = 0
        self.error = None
        self.t_start = None
        self.t_stop = None

    # ---- control from other threads --------------------------------------

    def stop(self):
        self._stop.set()

    def wait_done(self, timeout=None):
        return self._done.wait(timeout)

    def observe(self, endpoint, timeout=10.0):
        """Move the event subscription to another node (a new epoch: seqs
        are compared within one subscription only)."""
        self._observe_ack.clear()
        self._observe_req = endpoint
        if not self._observe_ack.wait(timeout):
            raise RuntimeError("the traffic thread did not move its subscription")

    def count(self):
        with self.lock:
            return len(self.acked)

    def max_gap(self, t0, t1):
        """Longest stretch without an ack between monotonic t0 and t1."""
        with self.lock:
            ts = [t for t in self.ack_times if t0 <= t <= t1]
        pts = [t0] + ts + [t1]
        return max((b - a for a, b in zip(pts, pts[1:])), default=0.0)

    # ---- the loop ----------------------------------------------------------

    def _new_command(self, car, now):
        i = self.started
        self.started += 1
        r = self.rng.random() * sum(w for _, w in self.mix)
        cmd = self.mix[-1][0]
        for c, w in self.mix:
            if r < w:
                cmd = c
                break
            r -= w
        msg = {"op": "submit", "tenant": TENANT, "key": f"{self.key_prefix}-{i}",
               "account": ACCOUNT, "vin": car, "command": cmd, "ttl_ms": self.ttl_ms}
        # Params that differ from one command of that name for the car to
        # the next: fleetsim's log tells them apart, and the car never
        # answers "already_set" (success without an execution) to a value
        # it does not have yet.
        k = self.per_car_n[(car, cmd)]
        self.per_car_n[(car, cmd)] += 1
        if cmd == "set_charge_limit":
            msg["params"] = {"percent": 50 + (k * 7) % 51}
        elif cmd == "set_charging_amps":
            msg["params"] = {"charging_amps": 8 + (k * 5) % 25}
        return Pending(car, msg, now)

    def _subscribe(self, endpoint):
        if self._sub is not None:
            self._poller.unregister(self._sub)
            self._sub.close(0)
            self._sub = None
        if endpoint:
            s = self._ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(endpoint)
            self._sub = s
            self._poller.register(s, zmq.POLLIN)
            self.pub_epoch += 1
            self._pub_last = {}

    def _on_event(self, frames):
        ev = unpack(frames[-1])
        sh, seq = ev.get("shard"), ev.get("seq")
        if sh is None or seq is None:
            return
        last = self._pub_last.get(sh)
        if last is not None and seq <= last:
            self.pub_backwards.append((self.pub_epoch, sh, last, seq))
        self._pub_last[sh] = seq
        self.pub_count += 1
        if seq % self.pub_sample == 0:
            self.events[(sh, seq)] = (ev.get("id"), ev.get("state"))

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the caller
            import traceback
            traceback.print_exc()
            self.error = e
        finally:
            self._done.set()

    def _run(self):
        self._ctx = zmq.Context.instance()
        socks = []
        for ep in self.endpoints:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            s.setsockopt(zmq.SNDTIMEO, 0)
            s.setsockopt(zmq.RECONNECT_IVL, 50)
            s.connect(ep)
            socks.append(s)
        self._poller = zmq.Poller()
        for s in socks:
            self._poller.register(s, zmq.POLLIN)
        self._sub = None
        self._pub_last = {}
        if self._observe_to:
            self._subscribe(self._observe_to)
        idle = collections.deque(self.rng.sample(self.cars, len(self.cars)))
        cur = {}            # car -> Pending
        reqs = {}           # req -> (car, key, attempt)
        timers = []         # heap of (due, seq, kind, car, attempt)
        tseq = 0
        nreq = 0
        period = 1.0 / self.rate
        self.t_start = now = time.monotonic()
        next_t = now
        stop_at = None

        def send(p, avoid=-1):
            nonlocal nreq, tseq
            choices = [i for i in range(len(socks)) if i != avoid] or list(range(len(socks)))
            i = self.rng.choice(choices)
            nreq += 1
            p.attempt += 1
            p.node = i
            p.sent_t = time.monotonic()
            m = dict(p.msg)
            m["req"] = nreq
            reqs[nreq] = (p.car, p.msg["key"], p.attempt)
            try:
                socks[i].send(pack(m), zmq.NOBLOCK)
            except zmq.Again:
                pass  # no pipe to that node right now: the timeout retries
            tseq += 1
            heapq.heappush(timers, (p.sent_t + self.timeout, tseq, "timeout", p.car, p.attempt))

        while True:
            now = time.monotonic()
            if self._observe_req is not None:
                self._subscribe(self._observe_req)
                self._observe_req = None
                self._observe_ack.set()
            if self.limit is not None and self.started >= self.limit:
                self._stop.set()
            if self._stop.is_set() and stop_at is None:
                stop_at = now
                self.t_stop = now
            if stop_at is None:
                while next_t <= now:
                    if idle:
                        car = idle.popleft()
                        p = self._new_command(car, now)
                        cur[car] = p
                        send(p)
                    else:
                        self.starved += 1
                    next_t += period
            elif not cur or now - stop_at > self.drain_s:
                break
            while timers and timers[0][0] <= now:
                _, _, kind, car, att = heapq.heappop(timers)
                p = cur.get(car)
                if p is None or p.attempt != att:
                    continue
                if kind == "timeout":
                    self.retry_timeout += 1
                    send(p, avoid=p.node)
                else:
                    send(p)
            wait = 0.05
            if stop_at is None:
                wait = min(wait, max(0.0, next_t - now))
            if timers:
                wait = min(wait, max(0.0, timers[0][0] - now))
            for s, _ in self._poller.poll(int(wait * 1000)):
                if s is self._sub:
                    while True:
                        try:
                            self._on_event(s.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                    continue
                while True:
                    try:
                        frames = s.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    r = unpack(frames[-1])
                    ref = reqs.pop(r.get("req"), None)
                    if ref is None:
                        self.stale += 1
                        continue
                    car, key, att = ref
                    p = cur.get(car)
                    if p is None or p.msg["key"] != key:
                        self.stale += 1  # a late answer to a command already acked
                        continue
                    t = time.monotonic()
                    if r.get("ok"):
                        del cur[car]
                        idle.append(car)
                        with self.lock:
                            self.acked.append(Acked(key, r.get("id"), car, p.msg["command"],
                                                    p.msg.get("params"), t, t - p.first_t,
                                                    p.attempt, bool(r.get("dup")), self.ttl_ms))
                            self.ack_times.append(t)
                    elif r.get("error") == "busy":
                        if att == p.attempt:
                            self.retry_busy += 1
                            tseq += 1
                            # Invalidate the attempt's timeout, retry soon.
                            p.attempt += 1
                            heapq.heappush(timers, (t + self.rng.uniform(0.05, 0.15), tseq,
                                                    "retry", car, p.attempt))
                    else:
                        del cur[car]
                        idle.append(car)
                        with self.lock:
                            self.refused.append((key, r.get("error"), r.get("message")))
        self.unacked = list(cur.values())
        for s in socks:
            s.close(0)
        if self._sub is not None:
            self._sub.close(0)

    def timeline(self, t0, step=5.0):
        """Acks per second in `step`-second windows from t0."""
        with self.lock:
            ts = list(self.ack_times)
        if not ts:
            return []
        nwin = int((ts[-1] - t0) // step) + 1
        out = [0] * max(nwin, 0)
        for t in ts:
            w = int((t - t0) // step)
            if 0 <= w < len(out):
                out[w] += 1
        return [round(x / step) for x in out]


# --------------------------------------------------------------------------
# the checks


def get_all(endpoint, ids, window=500, timeout=60.0):
    """`get` of every id through one node: {id: command map, or the error
    reply}."""
    cl = Client(endpoint, timeout=timeout)
    out = {}
    try:
        for i in range(0, len(ids), 20000):
            part = ids[i:i + 20000]
            replies, order = fqlib.pipeline(cl, [{"op": "get", "id": x} for x in part],
                                            window=window, timeout=timeout)
            for x, req in zip(part, order):
                r = replies.get(req) or {}
                out[x] = r.get("command") if r.get("ok") else r
    finally:
        cl.close()
    return out


def wait_terminal(endpoint_fn, acked, settle_s, step=1.0):
    """Poll `get` (through endpoint_fn(), a live node's endpoint) until
    every acked command is terminal or settle_s passed.  Returns ({id:
    (state, command, reason)}, [ids not terminal], [(key, what get says)
    where get names another key or car than the one acked])."""
    final = {}
    want = {a.id: a for a in acked}
    left = list(want)
    wrong = []
    end = time.monotonic() + settle_s
    while True:
        got = get_all(endpoint_fn(), left)
        still = []
        for i in left:
            cmd = got.get(i) or {}
            if cmd.get("state") in TERMINAL:
                a = want[i]
                if cmd.get("key") != a.key or cmd.get("vin") != a.car:
                    wrong.append((a.key, a.car, cmd.get("key"), cmd.get("vin")))
                final[i] = (cmd["state"], cmd.get("command"), (cmd.get("reason") or "")[:80])
            else:
                still.append(i)
        left = still
        if not left or time.monotonic() > end:
            return final, left, wrong
        time.sleep(step)


def iter_history(endpoint, shard, page=1000):
    """The stored events of one shard, page by page through one node."""
    cl = Client(endpoint, timeout=60)
    after = 0
    try:
        while True:
            r = cl.history(shard, after, limit=page)
            if not r.get("ok"):
                raise RuntimeError(f"history of shard {shard} after {after}: {r!r}")
            evs = r["events"]
            if not evs:
                return
            yield from evs
            if evs[-1]["seq"] <= after:
                return
            after = evs[-1]["seq"]
    finally:
        cl.close()


def executions(sim, cars_):
    """fleetsim's execution log; per car when the whole list is too large
    for one answer."""
    try:
        return sim.executions()
    except RuntimeError:
        out = []
        for v in cars_:
            out += sim.executions(vin=v)
        return out


def match_order(cmds, execs):
    """Match fleetsim's executions of one car against the car's acked
    commands in submit order.  cmds: [(command, payload or None,
    idempotent, must)], `must` for a command that has to be in the log (it
    ended succeeded); execs: [(command, payload)] in execution order.

    An execution either repeats the command matched just before it, when
    that one is idempotent (a retry: a new owner re-sends what was in
    flight), or is the next command at or after the position reached with
    the same name (and payload, when known); the commands passed over were
    not executed.  Several matchings can fit (two door_lock in a row
    executed twice: a retry of the first, or both?), so this keeps every
    position reachable after each execution with the fewest `must`
    commands passed over (a small dynamic programme).  Returns (the fewest
    `must` commands left unexecuted, None) or (None, the first execution
    no order-keeping matching explains)."""
    n = len(cmds)
    must_before = [0]
    for c in cmds:
        must_before.append(must_before[-1] + (1 if c[3] else 0))
    by_name = collections.defaultdict(list)
    for k, c in enumerate(cmds):
        by_name[c[0]].append(k)

    def fits(k, name, payload):
        c = cmds[k]
        return c[0] == name and (c[1] is None or c[1] == payload)

    def candidates(pos, name, payload):
        """The first command at or after pos the execution fits, and the
        first such that must have run (when it is another): matching a
        later one than these only passes over more."""
        lst = by_name.get(name, ())
        out = []
        for k in lst[bisect.bisect_left(lst, pos):]:
            if fits(k, name, payload):
                out.append(k)
                if cmds[k][3]:
                    break
        return out[:1] + out[-1:] if len(out) > 1 else out

    frontier = {0: 0}   # position reached -> fewest `must` passed over
    for j, (name, payload) in enumerate(execs):
        nxt = {}
        for pos, cost in frontier.items():
            if pos > 0 and cmds[pos - 1][2] and fits(pos - 1, name, payload):
                if cost < nxt.get(pos, cost + 1):
                    nxt[pos] = cost
            for k in candidates(pos, name, payload):
                c2 = cost + must_before[k] - must_before[pos]
                if c2 < nxt.get(k + 1, c2 + 1):
                    nxt[k + 1] = c2
        if not nxt:
            return None, (j, name, payload)
        frontier = nxt
    return min(cost + must_before[n] - must_before[pos] for pos, cost in frontier.items()), None


STATE_CH = {"scheduled": "S", "queued": "q", "dispatching": "d", "waking": "w",
            "retrying": "r", "sent": "s", "succeeded": "O", "failed": "F", "unknown": "U",
            "expired": "E", "cancelled": "C", "superseded": "X"}
CH_STATE = {v: k for k, v in STATE_CH.items()}
TERMINAL_CH = {STATE_CH[x] for x in TERMINAL}


class Outcome:
    """The end-of-run checks over what Traffic acked, through live nodes.
    Memory stays small for a soak's millions of commands: states are kept
    as one character each, history is read page by page."""

    def __init__(self, fc, traffic):
        self.fc = fc
        self.tr = traffic

    def endpoint(self):
        return self.fc.live()[0].endpoint

    def check(self, c, settle_s=120.0, dedupe_sample=500):
        tr = self.tr
        acked = tr.acked
        ids = [a.id for a in acked]
        figures = {"acked": len(acked)}
        c.eq(len(set(ids)), len(ids), "acked ids are distinct (one command per key)")
        del ids
        c.eq(tr.refused[:5], [], "no submit refused (other than busy)", f"{len(tr.refused)} refused")
        c.eq(len(getattr(tr, "unacked", [])), 0, "every started submit was acked in the end")
        t0 = time.monotonic()
        final, left, wrong = wait_terminal(self.endpoint, acked, settle_s)
        figures["settle_s"] = round(time.monotonic() - t0, 1)
        c.eq(left[:5], [], "every acked command reaches a terminal state (get, any node)",
             f"{len(left)} not terminal after {settle_s} s")
        c.eq(wrong[:5], [], "get answers the command each id was acked for")
        states = collections.Counter(f[0] for f in final.values())
        figures["states"] = dict(sorted(states.items()))
        why = collections.Counter(f for f in final.values() if f[0] != "succeeded")
        figures["not_succeeded"] = why.most_common(6)
        self.check_execs(c, acked, final, figures)
        self.check_history(c, acked, final, figures)
        self.check_dedupe(c, acked, dedupe_sample, figures)
        return figures

    def check_execs(self, c, acked, final, figures):
        ex = executions(self.fc.sim, self.fc.cars)
        per_car = collections.defaultdict(list)
        for e in ex:
            per_car[e.get("vin")].append((e["command"], e["payload"], e.get("domain"),
                                          e.get("counter")))
        figures["executions"] = len(ex)
        figures["nonidem_executed"] = sum(1 for e in ex if e["command"] in NON_IDEMPOTENT)
        del ex
        idem = {cmd: i for cmd, _, i in MIX}
        by_car = collections.defaultdict(list)
        for a in acked:
            by_car[a.car].append(a)
        twice, order_bad, succ_unexec, counter_bad = [], [], [], []
        for car, lst in by_car.items():
            execs = per_car.get(car, [])
            st = [(final.get(a.id) or ("?",))[0] for a in lst]
            # None executed twice: per non-idempotent command, what the car
            # executed is at most what ended succeeded or unknown (and at
            # least what succeeded).
            for name in NON_IDEMPOTENT:
                n_exec = sum(1 for e in execs if e[0] == name)
                mine = [x for a, x in zip(lst, st) if a.command == name]
                ok, maybe = mine.count("succeeded"), mine.count("unknown")
                if n_exec > ok + maybe or n_exec < ok:
                    twice.append((car, name, f"executed {n_exec}", f"succeeded {ok}",
                                  f"unknown {maybe}"))
            # Per-car order.
            cmds = [(a.command, expected_payload(a.command, a.params), idem.get(a.command, False),
                     x == "succeeded") for a, x in zip(lst, st)]
            missing, bad = match_order(cmds, [(e[0], e[1]) for e in execs])
            if bad is not None:
                order_bad.append((car, bad, [x[0] for x in cmds][:12], [e[0] for e in execs][:12]))
            elif missing:
                succ_unexec.append((car, missing))
            # Session counters never reused: per domain, strictly going up.
            last = {}
            for e in execs:
                d, ctr = e[2], e[3]
                if d in last and ctr is not None and ctr <= last[d]:
                    counter_bad.append((car, d, last[d], ctr))
                last[d] = ctr
        c.eq(twice[:5], [], "no non-idempotent command executed twice (fleetsim's log)",
             f"{len(twice)} cars")
        c.eq(order_bad[:3], [], "per-car order: fleetsim executed each car's commands in "
             "submit order", f"{len(order_bad)} cars")
        c.eq(succ_unexec[:5], [], "every succeeded command is in fleetsim's log "
             "(car, how many are not)", f"{len(succ_unexec)} cars")
        c.eq(counter_bad[:5], [], "session counters only go up per car and domain",
             f"{len(counter_bad)} times")
        figures["order_checked_cars"] = len(by_car)

    def check_history(self, c, acked, final, figures):
        """Each shard's history, read through one live node page by page:
        seq 1..N without a hole, tseq 1..n per tenant, each command's
        events one life (prev = the state before, one terminal state,
        last), published events equal to the stored ones."""
        ep = self.endpoint()
        lives = {}          # id -> states, one character each
        bad_prev = []
        pub = self.tr.events
        pub_bad, pub_found = [], 0
        figures["events_per_shard"] = {}
        for s in range(self.fc.shards):
            n, nxt, holes, back = 0, 1, [], []
            tseq = collections.Counter()
            tseq_bad = []
            for e in iter_history(ep, s):
                n += 1
                q = e["seq"]
                if q < nxt:
                    back.append(q)
                elif q > nxt:
                    holes.append((nxt, q - 1))
                nxt = max(nxt, q + 1)
                t = e.get("tenant")
                tseq[t] += 1
                if e.get("tseq") != tseq[t]:
                    if len(tseq_bad) < 5:
                        tseq_bad.append((t, q, e.get("tseq"), tseq[t]))
                    tseq[t] = e.get("tseq") or tseq[t]
                i, stc = e["id"], STATE_CH.get(e["state"], "?")
                life = lives.get(i, "")
                prev = CH_STATE.get(life[-1]) if life else None
                if e.get("prev") != prev and len(bad_prev) < 5:
                    bad_prev.append((i, q, e.get("prev"), prev))
                lives[i] = life + stc
                if (s, q) in pub:
                    pub_found += 1
                    if pub[(s, q)] != (i, e["state"]):
                        pub_bad.append(((s, q), pub[(s, q)], (i, e["state"])))
            figures["events_per_shard"][s] = n
            c.eq(holes[:5], [], f"shard {s}: history gap-free (seq 1..{nxt - 1}, {n} events)")
            c.eq(back[:5], [], f"shard {s}: history seqs go up, none twice")
            c.eq(tseq_bad, [], f"shard {s}: tseq 1..n per tenant")
        figures["events"] = sum(figures["events_per_shard"].values())
        c.eq(bad_prev, [], "every event's prev is the state before it")
        bad = []
        for a in acked:
            life = lives.get(a.id, "")
            fin = STATE_CH.get((final.get(a.id) or ("?",))[0])
            term = [x for x in life if x in TERMINAL_CH]
            if not life or life[0] not in "qS" or term != [life[-1]] or life[-1] != fin:
                bad.append((a.key, a.id, "".join(CH_STATE.get(x, x) + " " for x in life),
                            CH_STATE.get(fin)))
        c.eq(bad[:5], [], "each acked command's history is one life: queued ... one terminal "
             "state, the one get shows", f"{len(bad)} commands")
        figures["published_seen"] = self.tr.pub_count
        figures["published_compared"] = pub_found
        c.eq(pub_bad[:5], [], "every published event is the stored one (shard, seq, id, state)",
             f"{len(pub_bad)} of {pub_found} compared")
        c.eq(len(pub) - pub_found, 0, "every published event is stored")
        c.eq(self.tr.pub_backwards[:5], [], "published seqs only go up per shard "
             "(one subscription)")

    def check_dedupe(self, c, acked, sample, figures):
        """A sample of acked keys sent again, each to a live node in turn:
        `dup` with the same id (dedupe is cluster-wide)."""
        rng = random.Random(7)
        pick = rng.sample(acked, min(sample, len(acked)))
        live = self.fc.live()
        bad = []
        for k, node in enumerate(live):
            mine = pick[k::len(live)]
            if not mine:
                continue
            cl = Client(node.endpoint, timeout=60)
            try:
                replies, order = fqlib.pipeline(cl, [a.msg() for a in mine], window=200,
                                                timeout=60)
            finally:
                cl.close()
            for a, req in zip(mine, order):
                r = replies.get(req) or {}
                if not (r.get("ok") and r.get("dup") is True and r.get("id") == a.id):
                    bad.append((node.node_id, a.key, a.id, r))
        figures["dedupe_checked"] = len(pick)
        c.eq(bad[:5], [], "acked keys submitted again to any node are dups of the same id",
             f"{len(bad)} of {len(pick)}")
