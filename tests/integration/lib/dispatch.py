"""Harness of the end-to-end dispatch tests (issue 5): a real fleetsim, a
real fleetqd wired to it, a real account added with `fleetq account add`.

One `World` per test:

* makes the fleet key with `fleetq keygen` (private.pem 0600 for fleetqd's
  --key, public.pem as fleetsim's `fleet_public_key`);
* builds JWT-shaped access tokens (the daemon reads scopes from `scp`) and
  uses the same string as the simulator account's `token`;
* starts fleetsim (sim.Sim) on a loopback port with a generated config
  (seed logged), optionally over HTTPS with a throwaway CA (tls.make_tls);
* by default puts a recording HTTP relay ("tap") between fleetqd and a
  plain-HTTP fleetsim: it forwards every request unchanged to the
  simulator and keeps (method, path, status) so tests can count what the
  daemon actually sent (wake_up calls, token refreshes, "never sent").  It
  answers nothing itself: when the simulator closes a connection without an
  answer, the relay closes the daemon's connection without one too;
* starts fleetqd (fqlib.Daemon) with short wake / backoff / timeout
  settings, adds the accounts, and offers submit / wait-for-terminal /
  event-sequence / history / execution-log helpers.

Everything is cleaned up at exit (fqlib's atexit hook plus World.close()).
Checks print both sides on failure (fqlib.Checks).
"""

import base64
import http.client
import json
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import fqlib
from .fqlib import BIN, TERMINAL, Checks, Client, Daemon, Sub, cli, free_port, log  # noqa: F401
from .sim import Sim  # noqa: F401  (tests use dl.Sim)
from .tls import make_tls  # noqa: F401  (tests use dl.make_tls)

TENANT = "e2e"
PAIRING_DOMAIN = "fleet.example.com"
CLIENT_ID = "e2e-client-0001"
PAIRING_PREFIX = "vehicle rejected request: your public key has not been paired with the vehicle"
PAIRING_LINK = "https://tesla.com/_ak/" + PAIRING_DOMAIN
CONSENT_LINK = "https://auth.tesla.com/user/revoke/consent?revoke_client_id=" + CLIENT_ID
ALL_SCOPES = ["openid", "offline_access", "vehicle_device_data", "vehicle_cmds",
              "vehicle_charging_cmds", "energy_device_data", "energy_cmds"]

# Short timers so the suite stays quick; individual tests override.
DEFAULT_DAEMON_OPTS = {
    "--wake-poll-ms": 200,
    "--retry-backoff-ms": 200,
    "--http-timeout-ms": 2000,
}

NONTERMINAL = {"scheduled", "queued", "dispatching", "waking", "retrying", "sent"}
STATES = NONTERMINAL | TERMINAL


def seed():
    s = int(os.environ.get("FQ_SEED", "42"))
    return s


def vin(n):
    """Synthetic but valid VINs (no I, O, Q), distinct per test number."""
    return fqlib.vin(n, prefix="5YJ3E2E0")


# --------------------------------------------------------------------------
# tokens


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(sub, scopes, aud, ttl=3600):
    """JWT-shaped access token: base64url(header).base64url(payload).base64url("sig")."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {"iss": "https://auth.tesla.com/oauth2/v3/nts", "sub": sub, "scp": list(scopes),
               "iat": now, "exp": now + ttl, "aud": list(aud)}
    return ".".join([b64u(json.dumps(header, separators=(",", ":")).encode()),
                     b64u(json.dumps(payload, separators=(",", ":")).encode()),
                     b64u(b"sig")])


# --------------------------------------------------------------------------
# the recording relay


_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailers", "transfer-encoding", "upgrade", "host", "content-length"}


class _TapHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _relay(self):
        tap = self.server.tap
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        rec = {"t": time.monotonic(), "method": self.command, "path": self.path, "status": None}
        tap._add(rec)
        up = getattr(self, "_up", None)
        if up is None:
            up = self._up = http.client.HTTPConnection("127.0.0.1", tap.up_port, timeout=120)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        try:
            up.request(self.command, self.path, body=body, headers=hdrs)
            resp = up.getresponse()
            data = resp.read()
        except Exception as e:  # the simulator hung up: so do we, without an answer
            rec["status"] = 0
            rec["error"] = type(e).__name__
            up.close()
            self._up = None
            self.close_connection = True
            return
        rec["status"] = resp.status
        rec["wall"] = time.time()
        if tap.keep_bodies:
            rec["req"], rec["resp"] = body or b"", data
        hook = tap.on_response
        if hook:
            # Lets a test act on the simulator (through its /sim control
            # endpoints) at an exact point, before the daemon sees the
            # answer; the answer itself is relayed unchanged.
            hook(rec)
        try:
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and k.lower() not in ("server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the daemon gave up on this request (its timeout)
            self.close_connection = True
        if resp.getheader("Connection", "").lower() == "close":
            up.close()
            self._up = None

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _relay


class Tap:
    """Loopback HTTP relay in front of a plain-HTTP fleetsim, recording
    every request the daemon makes."""

    def __init__(self, up_port, port=0):
        self.up_port = up_port
        self.lock = threading.Lock()
        self.log = []
        self.on_response = None
        self.keep_bodies = False  # True: records keep "req" / "resp" bytes
        self.srv = ThreadingHTTPServer(("127.0.0.1", port), _TapHandler)
        self.srv.daemon_threads = True
        # A daemon killed mid-request resets its connection: expected in
        # crash tests, not worth a traceback.
        self.srv.handle_error = lambda request, client_address: None
        self.srv.tap = self
        self.port = self.srv.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def _add(self, rec):
        with self.lock:
            self.log.append(rec)

    def records(self, since=0):
        with self.lock:
            return [dict(r) for r in self.log[since:]]

    def mark(self):
        with self.lock:
            return len(self.log)

    def paths(self, since=0):
        return [r["method"] + " " + r["path"] for r in self.records(since)]

    def count(self, pattern, since=0):
        """Requests whose "METHOD /path" matches the regex (search)."""
        rx = re.compile(pattern)
        return sum(1 for p in self.paths(since) if rx.search(p))

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


# --------------------------------------------------------------------------
# one test's world


def add_account(endpoint, account, token, refresh, base_url, client_id=CLIENT_ID):
    """`fleetq account add` against the daemon at endpoint (fqlib.add_account)."""
    return fqlib.add_account(endpoint, account, token=token, refresh=refresh,
                             base_url=base_url, client_id=client_id)


def default_vehicle(v, **kw):
    d = {"vin": v, "paired": True, "asleep": False, "legacy": False}
    d.update(kw)
    return d


class World:
    """fleetsim (+ tap) + fleetqd + accounts for one test.

    accounts: list of dicts {"id", "scopes", "vins", "sites", plus any
    simulator account keys}; each gets a JWT token and refresh token.
    """

    def __init__(self, name, vehicles=(), sites=(), accounts=None, tls=False, tap=None, shards=2,
                 daemon_opts=None, sim_extra=None, sim_args=(), start=True):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="fq-e2e-")
        fqlib._cleanups.append(self._rmtmp)
        self.seed = seed()
        log(f"[{name}] seed {self.seed} (FQ_SEED overrides), work dir {self.tmp}")
        self.keydir = os.path.join(self.tmp, "key")
        r = cli("keygen", "--out", self.keydir)
        if r.returncode != 0:
            raise RuntimeError(f"fleetq keygen failed: {r.stdout}{r.stderr}")
        self.private_pem = os.path.join(self.keydir, "private.pem")
        self.public_pem = os.path.join(self.keydir, "public.pem")
        self.tls = make_tls(self.tmp) if tls else None
        self.use_tap = (not tls) if tap is None else tap
        if self.use_tap and tls:
            raise ValueError("the tap relays plain HTTP only")
        self.vehicles = list(vehicles)
        self.sites = list(sites)
        vins = [v["vin"] for v in self.vehicles]
        site_ids = [s["id"] for s in self.sites]
        if accounts is None:
            accounts = [{"id": "acct1", "scopes": ALL_SCOPES, "vins": vins, "sites": site_ids}]
        self.accounts = [dict(a) for a in accounts]
        self.sim_port = free_port()
        self.tap = None
        if self.use_tap:
            # Bind the relay first so its URL can go into the tokens' aud.
            self.tap = Tap(self.sim_port)
            fqlib._cleanups.append(self.tap.close)
        sim_base = f"{'https' if tls else 'http'}://127.0.0.1:{self.sim_port}"
        self.base_url = self.tap.base if self.tap else sim_base
        for a in self.accounts:
            a.setdefault("scopes", ALL_SCOPES)
            a.setdefault("refresh_token", f"{a['id']}-refresh-{self.seed}")
            # opaque=True: a token that is not a JWT (fleetqd cannot read its scopes).
            a["token"] = (f"{a['id']}-opaque-{self.seed}" if a.get("opaque")
                          else make_jwt(a["id"], a["scopes"], [self.base_url]))
        cfg = {"seed": self.seed, "fleet_public_key": self.public_pem, "wake_ms": 1000,
               "accounts": [{k: v for k, v in a.items() if k not in ("client_id", "fleetq_base_url", "fleetq", "opaque")}
                            for a in self.accounts],
               "vehicles": self.vehicles, "sites": self.sites}
        if sim_extra:
            cfg.update(sim_extra)
        self.sim = Sim(cfg, dir=self.tmp, tls=self.tls, port=self.sim_port, extra_args=sim_args)
        opts = dict(DEFAULT_DAEMON_OPTS)
        opts.update(daemon_opts or {})
        self.daemon_opts = opts
        extra = ["--key", self.private_pem, "--pairing-domain", PAIRING_DOMAIN]
        if self.tls:
            extra += ["--ca-file", self.tls[2]]
        for k, v in opts.items():
            if v is None:
                continue
            extra += [k] if v is True else [k, str(v)]
        self.daemon = Daemon(shards=shards, extra=extra, name="fleetqd")
        self.client = None
        self.sub = None
        self.events = {}        # id -> [event...] from the publisher
        self.all_events = []    # every published event, in arrival order
        self.ids = {}           # key -> id
        if start:
            self.start()

    def _rmtmp(self):
        if os.environ.get("FQ_KEEP"):
            log(f"keeping {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- life cycle -------------------------------------------------------

    def start(self):
        self.sim.start()
        self.start_daemon()
        for a in self.accounts:
            if a.get("fleetq", True):  # "fleetq": False = known to the simulator only
                self.add_account(a)
        return self

    def start_daemon(self):
        self.daemon.start()
        self.client = Client(self.daemon.endpoint, timeout=15)
        self.sub = Sub(self.daemon.publish)

    def add_account(self, a, base_url=None):
        return add_account(self.daemon.endpoint, a["id"], a["token"], a["refresh_token"],
                           base_url or a.get("fleetq_base_url") or self.base_url,
                           a.get("client_id", CLIENT_ID))

    def restart_daemon(self, kill9=True):
        """kill -9 (or SIGTERM) the daemon and start it again on the same
        data dir; events published meanwhile are fetched with history."""
        self.drain()
        if self.sub:
            self.sub.close()
        if self.client:
            self.client.close()
        if kill9:
            self.daemon.kill9()
        else:
            rc = self.daemon.term()
            if rc != 0:
                raise RuntimeError(f"fleetqd exited with {rc} on SIGTERM")
        self.start_daemon()

    def close(self):
        for x in (self.sub, self.client):
            if x:
                try:
                    x.close()
                except Exception:
                    pass
        rc_d = self.daemon.term() if self.daemon.alive() else 0
        rc = self.sim.stop()
        if self.tap:
            self.tap.close()
        return rc_d, rc

    # ---- commands and events ---------------------------------------------

    def submit(self, key, command, vin_=None, site=None, params=None, account="acct1", **kw):
        m = {"op": "submit", "tenant": TENANT, "key": key, "account": account,
             "command": command}
        if site is not None:
            m["site"] = site
        else:
            m["vin"] = vin_
        if params is not None:
            m["params"] = params
        m.update(kw)
        r = self.client.call(m)
        if not r.get("ok"):
            raise RuntimeError(f"submit {key} refused: {r!r}")
        self.ids[key] = r["id"]
        self.events.setdefault(r["id"], [])
        return r["id"]

    def drain(self, timeout=0.0):
        """Move published events into self.events."""
        if not self.sub:
            return
        while True:
            r = self.sub.recv(timeout)
            if r is None:
                return
            ev = r[1]
            self.all_events.append(ev)
            self.events.setdefault(ev["id"], []).append(ev)
            timeout = 0.0

    def state(self, id_):
        evs = self.events.get(id_) or []
        return evs[-1]["state"] if evs else None

    def wait_state(self, ids, states, timeout=60.0):
        """Wait until every id has reached one of `states` (a set) at least
        once, in the published events or, every half second, in the
        stored history (events published while no subscriber was
        connected, e.g. those settled at a restart).  True when all did."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        deadline = time.monotonic() + timeout
        next_hist = time.monotonic() + 0.5
        hist = {}

        def reached(i):
            return any(e["state"] in states for e in self.events.get(i, []) + hist.get(i, []))

        while True:
            self.drain()
            if all(reached(i) for i in ids):
                return True
            if time.monotonic() >= next_hist:
                hist = self.fill_from_history()
                next_hist = time.monotonic() + 0.5
                if all(reached(i) for i in ids):
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.drain(min(left, 0.1))

    def wait_terminal(self, ids, timeout=60.0):
        ok = self.wait_state(ids, TERMINAL, timeout)
        self.fill_from_history()
        return ok

    def fill_from_history(self):
        """Replace each known command's events with the stored history
        (covers events published while no subscriber was connected)."""
        hist = self.history()
        by_id = {}
        for ev in hist:
            by_id.setdefault(ev["id"], []).append(ev)
        self.hist_by_id = by_id
        return by_id

    def history(self):
        out = []
        shards = self.client.ping()["shards"]
        for s in range(shards):
            out += self.client.history_all(s)
        return out

    def final(self, id_):
        evs = self.hist_by_id.get(id_) if hasattr(self, "hist_by_id") else None
        evs = evs or self.events.get(id_) or []
        return evs[-1] if evs else None

    def evs(self, id_):
        evs = self.hist_by_id.get(id_) if hasattr(self, "hist_by_id") else None
        return evs or self.events.get(id_) or []

    def states(self, id_):
        return [e["state"] for e in self.evs(id_)]

    def get(self, id_):
        r = self.client.get(id_)
        if not r.get("ok"):
            raise RuntimeError(f"get {id_}: {r!r}")
        return r["command"]

    # ---- common checks ---------------------------------------------------

    def check_events(self, c, id_, pattern=None, what=""):
        """The event list of one command is a well-formed life: starts
        `queued` (or `scheduled`, then `queued`) with prev nil, every prev is the state before, exactly one
        terminal state and it is last, attempts never go down, all keys
        present; `pattern` (regex over the space-joined states) when given."""
        evs = self.evs(id_)
        sts = [e["state"] for e in evs]
        tag = f"{what or id_}: states {' '.join(sts)}"
        if not c.ok(evs, f"{tag}: has events"):
            return sts
        # A command submitted with a not_before ahead starts `scheduled`.
        c.ok(sts[0] == "queued" or sts[:2] == ["scheduled", "queued"]
             or sts == ["scheduled", "cancelled"] or sts == ["scheduled", "expired"],
             f"{tag}: first state", sts[:2])
        c.eq(evs[0]["prev"], None, f"{tag}: first prev")
        for a, b in zip(evs, evs[1:]):
            c.eq(b["prev"], a["state"], f"{tag}: prev of {b['state']} (seq {b['seq']})")
            c.ok(b["attempt"] >= a["attempt"], f"{tag}: attempt went down", a, b)
        c.ok(all(s in STATES for s in sts), f"{tag}: unknown state", sts)
        c.eq([s for s in sts if s in TERMINAL], [sts[-1]] if sts[-1] in TERMINAL else [],
             f"{tag}: exactly one terminal state, last")
        c.ok(sts[-1] in TERMINAL, f"{tag}: ends terminal")
        c.eq(len({e["shard"] for e in evs}), 1, f"{tag}: one shard")
        for e in evs:
            missing = {"id", "tenant", "key", "command", "state", "prev", "at", "attempt",
                       "reason", "error", "http", "fault", "shard", "seq", "tseq"} - set(e)
            c.eq(missing, set(), f"{tag}: event keys", e)
        if pattern is not None:
            c.ok(re.fullmatch(pattern, " ".join(sts)), f"{tag}: state sequence",
                 f"got:  {' '.join(sts)}", f"want: /{pattern}/")
        # What was published agrees with what is stored.
        pub = self.events.get(id_) or []
        hist = {(e["shard"], e["seq"]): e for e in evs}
        for e in pub:
            h = hist.get((e["shard"], e["seq"]))
            c.ok(h == e, f"{tag}: published event equals stored one", e, h)
        return sts

    def check_seq(self, c):
        """Per shard, stored seqs are 1..n without a gap, and every
        published event we saw is one of them."""
        hist = self.history()
        per = {}
        for e in hist:
            per.setdefault(e["shard"], []).append(e["seq"])
        for s, seqs in sorted(per.items()):
            c.eq(seqs, list(range(1, len(seqs) + 1)), f"shard {s}: seq contiguous from 1")
        # and each tenant's tseq within a shard, in seq order
        pert = {}
        for e in hist:
            pert.setdefault((e["shard"], e["tenant"]), []).append(e.get("tseq"))
        for (s, t), tseqs in sorted(pert.items()):
            c.eq(tseqs, list(range(1, len(tseqs) + 1)), f"shard {s} tenant {t}: tseq contiguous from 1")
        stored = {(e["shard"], e["seq"]) for e in hist}
        for e in self.all_events:
            c.ok((e["shard"], e["seq"]) in stored, "published event is stored", e)
        pubper = {}
        for e in self.all_events:
            pubper.setdefault(e["shard"], []).append(e["seq"])
        for s, seqs in pubper.items():
            srt = sorted(seqs)
            c.eq(seqs, srt, f"shard {s}: published in seq order")

    def check_final(self, c, id_, state, error=Ellipsis, reason_has=(), reason_prefix=None,
                    http=Ellipsis, fault=Ellipsis, what=""):
        ev = self.final(id_)
        tag = what or id_
        if not c.ok(ev is not None, f"{tag}: has a final event"):
            return None
        c.eq(ev["state"], state, f"{tag}: final state", f"reason: {ev['reason']!r}",
             f"error: {ev['error']!r} http {ev['http']!r} fault {ev['fault']!r}")
        if error is not Ellipsis:
            c.eq(ev["error"], error, f"{tag}: error code", f"reason: {ev['reason']!r}")
        for s in reason_has:
            c.ok(s in (ev["reason"] or ""), f"{tag}: reason contains {s!r}",
                 f"reason: {ev['reason']!r}")
        clauses = [x.strip() for x in re.split(r"[;.]\s", ev["reason"] or "") if x.strip()]
        c.eq(len(clauses), len(set(clauses)), f"{tag}: reason says each thing once",
             f"reason: {ev['reason']!r}")
        if reason_prefix is not None:
            c.ok((ev["reason"] or "").startswith(reason_prefix),
                 f"{tag}: reason starts with {reason_prefix!r}", f"reason: {ev['reason']!r}")
        if http is not Ellipsis:
            c.eq(ev["http"], http, f"{tag}: http")
        if fault is not Ellipsis:
            c.eq(ev["fault"], fault, f"{tag}: fault")
        # `get` agrees with the last event.
        g = self.get(id_)
        c.eq((g["state"], g.get("reason"), g.get("error")),
             (ev["state"], ev["reason"], ev["error"]), f"{tag}: get agrees with the last event")
        return ev

    def execs(self, vin_=None, site=None):
        return self.sim.executions(vin=vin_, site=site)

    def check_execs(self, c, want, vin_=None, site=None, what=""):
        """want: list of command names, in order (exactly these)."""
        got = [e["command"] for e in self.execs(vin_, site)]
        c.eq(got, list(want), f"{what or (vin_ or site)}: simulator execution log")
        return got

    def dump(self):
        """Diagnostics printed when a test fails."""
        log("---- fleetqd log tail ----")
        log(self.daemon.log_tail(60))
        log("---- fleetsim stderr tail ----")
        log(self.sim.err_tail(20))
        if self.tap:
            log("---- requests the daemon made (tap) ----")
            for r in self.tap.records()[-60:]:
                log(f"  {r['method']} {r['path']} -> {r['status']}")
        log("---- events ----")
        for id_, evs in self.events.items():
            log(f"  {id_}: " + " ".join(f"{e['state']}({e['error'] or ''}|{e['http']}|{e['fault']})"
                                        for e in evs))
            if evs:
                log(f"     last reason: {evs[-1]['reason']!r}")


def run(name, fn, **world_kw):
    """Build a World, run fn(c, world), print diagnostics on failure, clean
    up, and exit with the verdict."""
    c = Checks(name)
    w = None
    try:
        w = World(name, **world_kw)
        fn(c, w)
    except Exception:
        traceback.print_exc()
        c.failed += 1
    if w is not None:
        if c.failed:
            try:
                w.dump()
            except Exception:
                traceback.print_exc()
        try:
            rc_d, rc_s = w.close()
            c.ok(rc_d in (0, None), "fleetqd exits 0 on SIGTERM", rc_d)
            c.eq(rc_s, 0, "fleetsim exits 0")
        except Exception:
            traceback.print_exc()
            c.failed += 1
    c.finish()


def hexs(s):
    return s.encode().hex()


def elapsed_between(evs, a_state, b_state):
    """Seconds from the first `a_state` event to the first later `b_state`."""
    ta = next((e["at"] for e in evs if e["state"] == a_state), None)
    if ta is None:
        return None
    tb = next((e["at"] for e in evs if e["state"] == b_state and e["at"] >= ta), None)
    return None if tb is None else (tb - ta) / 1000.0
