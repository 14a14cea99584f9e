#!/usr/bin/env python3
"""Secrets never in the clear (issue 11, point 7).

An account is added with canary tokens (the access token's signature part
and the refresh token are unique marker strings).  The test drives every
admin action (add, list, get, retry, remove, add again), a dispatch that
succeeds, and a failed refresh, with fleetqd logging at debug level, and
then looks for the markers in every file of the data directory (the
encrypted account store included: it must hold them only encrypted), in
fleetqd's log, in every reply, every event and every CLI output.

So that the scan cannot pass by looking in the wrong place, it must find
the markers where they legitimately are (the simulator's configuration).
"""
import os
import secrets
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import dispatch as dl  # noqa: E402
from lib.fqlib import cli  # noqa: E402

V = dl.vin(311)
CANARY_A = "CANARYaccess" + secrets.token_hex(8)
CANARY_R = "CANARYrefresh" + secrets.token_hex(8)
MARKERS = [CANARY_A.encode(), CANARY_R.encode()]

# Access tokens whose signature part is the access marker.
_make_jwt = dl.make_jwt


def canary_jwt(sub, scopes, aud, ttl=3600):
    head, payload, _ = _make_jwt(sub, scopes, aud, ttl).split(".")
    return ".".join([head, payload, CANARY_A])


dl.make_jwt = canary_jwt


def find_markers(blob):
    return [m.decode() for m in MARKERS if m in blob]


def scan_tree(root):
    """{path: [markers]} for every regular file under root holding one."""
    hits = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                with open(p, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            m = find_markers(data)
            if m:
                hits[p] = m
    return hits


def body(c, w):
    seen = []  # every reply and CLI output, as bytes

    def call(msg):
        r = w.client.call(msg)
        seen.append(repr(r).encode())
        return r

    def run_cli(*args, input_=None):
        r = cli(*args, input_=input_)
        seen.append((r.stdout or "").encode() + (r.stderr or "").encode())
        return r

    acct = w.accounts[0]
    c.ok(CANARY_A in acct["token"] and acct["refresh_token"] == CANARY_R,
         "the account carries the canary tokens")

    # Admin actions, over the wire and through the CLI.
    r = call({"op": "admin", "action": "account_list"})
    c.ok(r.get("ok") is True and len(r.get("accounts", [])) == 1, "account_list", r)
    r = call({"op": "admin", "action": "account_get", "account": "acct1"})
    c.ok(r.get("ok") is True, "account_get", r)
    r = call({"op": "admin", "action": "account_retry", "account": "acct1"})
    c.ok(r.get("ok") is True, "account_retry", r)
    for args in (("account", "list"), ("account", "get", "--account", "acct1")):
        p = run_cli(*args, "--endpoint", w.daemon.endpoint)
        c.eq(p.returncode, 0, f"fleetq {' '.join(args)}", p.stderr)

    # A dispatch that succeeds (the access token goes to Fleet API).
    i = w.submit("canary-1", "door_lock", V)
    c.ok(w.wait_terminal(i, 30), "dispatch terminal", w.states(i))
    w.check_final(c, i, "succeeded", error=None)

    # A failed refresh: the access token expires and the refresh token is
    # no longer the simulator's.  The daemon sends the canary refresh
    # token once and is refused.
    w.sim.patch_account("acct1", {"refresh_token": "revoked-by-the-test", "token_expired": True})
    i2 = w.submit("canary-2", "door_unlock", V)
    c.ok(w.wait_terminal(i2, 30), "command after a refused refresh ends", w.states(i2))
    w.check_final(c, i2, "failed")
    r = call({"op": "admin", "action": "account_get", "account": "acct1"})
    c.ok(r.get("ok") is True and r["account"].get("refresh_failure"),
         "account_get reports the refused refresh", r)

    # Remove, then add again straight over the wire (the reply must not
    # echo the tokens it was given).
    r = call({"op": "admin", "action": "account_remove", "account": "acct1"})
    c.ok(r.get("ok") is True, "account_remove", r)
    r = call({"op": "admin", "action": "account_add", "account": "acct1",
              "access_token": acct["token"], "refresh_token": CANARY_R,
              "client_id": dl.CLIENT_ID, "base_url": w.base_url})
    c.ok(r.get("ok") is True, "account_add over the wire", r)
    # And a refused add (bad base URL): its error must not quote the token.
    r = call({"op": "admin", "action": "account_add", "account": "acct2",
              "access_token": acct["token"], "refresh_token": CANARY_R,
              "client_id": dl.CLIENT_ID, "base_url": "https://evil.example.net"})
    c.eq(r.get("ok"), False, "a refused account_add", r)

    # Everything published, and everything stored in history.
    w.drain(0.5)
    events = [repr(e).encode() for e in w.all_events] + [repr(e).encode() for e in w.history()]
    c.ok(len(events) >= 8, "events were collected", len(events))
    data_dir = w.daemon.data
    w.client.close()
    w.client = None
    rc = w.daemon.term()
    c.eq(rc, 0, "fleetqd stops cleanly")

    # The scan.
    hits = scan_tree(data_dir)
    c.eq(hits, {}, "no canary in any file of the data directory (encrypted store included)")
    store = os.path.join(data_dir, "accounts")
    size = sum(os.path.getsize(os.path.join(store, f)) for f in os.listdir(store))
    c.ok(size > 0, "the encrypted account store exists", size)
    mode = stat.S_IMODE(os.stat(data_dir).st_mode)
    c.eq(mode & 0o077, 0, "the data directory is not open to group or others", oct(mode))
    logs = b""
    for f in os.listdir(w.daemon.tmp):
        if f.startswith("fleetqd.") and f.endswith(".log"):
            with open(os.path.join(w.daemon.tmp, f), "rb") as fh:
                logs += fh.read()
    c.ok(b" debug " in logs, "fleetqd logged at debug level", len(logs))
    c.ok(b"refresh" in logs, "the log covers the refresh")
    c.eq(find_markers(logs), [], "no canary in fleetqd's log")
    c.eq([m for b in seen for m in find_markers(b)], [], "no canary in replies or CLI output")
    c.eq([m for b in events for m in find_markers(b)], [], "no canary in events")

    # The scan finds the markers where they do belong: the simulator's
    # own configuration holds both tokens.
    sim_hits = scan_tree(w.sim.dir) if hasattr(w.sim, "dir") else scan_tree(w.tmp)
    found = set(m for ms in sim_hits.values() for m in ms)
    c.eq(found, {CANARY_A, CANARY_R}, "the scan finds the canaries in the simulator's config")


if __name__ == "__main__":
    dl.run("secret_canary", body,
           vehicles=[dl.default_vehicle(V)],
           accounts=[{"id": "acct1", "scopes": dl.ALL_SCOPES, "vins": [V], "sites": [],
                      "refresh_token": CANARY_R}],
           daemon_opts={"--log-level": "debug"})
