#!/usr/bin/env python3
"""A real fleetsim + fleetqd + account for the Node tests, started with the
repository's integration harness (tests/integration/lib) and driven over
stdin / stdout:

    world.py [--curve] [--pub-hwm N]

prints one JSON line (endpoints, account, VINs, the big site id as a
string, CURVE keys), then reads commands, one per line, answering each
with a JSON line: "restart" (kill -9 fleetqd and start it again on the
same data), "stop" (or end of input): shut everything down and exit."""

import json
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("FQ_SRC") or os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

import zmq  # noqa: E402

from lib import dispatch as dl  # noqa: E402
from lib import fqlib  # noqa: E402

BIG_SITE = 2 ** 60 + 7


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def keypair():
    pub, sec = zmq.curve_keypair()
    return pub.decode(), sec.decode()


def main():
    curve = "--curve" in sys.argv
    opts = {"--wake-poll-ms": 1500}
    if "--pub-hwm" in sys.argv:
        opts["--pub-hwm"] = int(sys.argv[sys.argv.index("--pub-hwm") + 1])
    vins = [dl.vin(i) for i in range(8)]
    asleep, unpaired = dl.vin(50), dl.vin(51)
    vehicles = ([dl.default_vehicle(v) for v in vins]
                + [dl.default_vehicle(asleep, asleep=True, wake_ms=2500),
                   dl.default_vehicle(unpaired, paired=False)])
    w = dl.World("node-" + ("curve" if curve else "plain"), vehicles=vehicles,
                 sites=[{"id": BIG_SITE}], shards=2, daemon_opts=opts, start=not curve)
    info = {"account": "acct1", "vins": vins, "asleep": asleep, "unpaired": unpaired,
            "bigSite": str(BIG_SITE)}
    if curve:
        d = os.path.join(w.tmp, "curve")
        os.makedirs(d, mode=0o700)
        server_pub, server_sec = keypair()
        server_file = os.path.join(d, "server.key")
        write_private(server_file, f"public {server_pub}\nsecret {server_sec}\n")
        # "stranger" is in no clients file until the `allow` command.
        keys = {n: keypair() for n in ("acme", "ops", "globex", "stranger")}
        files = {}
        for n, (pub, sec) in keys.items():
            files[n] = os.path.join(d, f"{n}.key")
            write_private(files[n], f"public {pub}\nsecret {sec}\n")
        entries = [
            {"name": "acme-svc", "key": keys["acme"][0], "tenants": ["acme"],
             "roles": ["submit", "read", "cancel", "subscribe"]},
            {"name": "globex-svc", "key": keys["globex"][0], "tenants": ["globex"],
             "roles": ["submit", "read", "cancel", "subscribe"]},
            {"name": "ops", "key": keys["ops"][0], "tenants": ["*"],
             "roles": ["admin", "read", "subscribe"]},
        ]
        clients_file = os.path.join(d, "clients.json")
        write_private(clients_file, json.dumps(entries))
        w.daemon.extra += ["--curve-secret", server_file, "--clients", clients_file]
        w.sim.start()
        w.daemon.start()
        ops = fqlib.Client(w.daemon.endpoint, curve=(keys["ops"][0], keys["ops"][1], server_pub))
        a = w.accounts[0]
        r = ops.call({"op": "admin", "action": "account_add", "account": a["id"],
                      "access_token": a["token"], "refresh_token": a["refresh_token"],
                      "client_id": dl.CLIENT_ID, "base_url": w.base_url})
        ops.close()
        if not r.get("ok"):
            raise RuntimeError(f"account_add over CURVE: {r!r}")
        info["curve"] = {"serverKey": server_pub, "keyFiles": files}
    info["endpoint"], info["publish"] = w.daemon.endpoint, w.daemon.publish
    info["pid"] = w.daemon.proc.pid
    print(json.dumps(info), flush=True)
    try:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "restart":
                w.daemon.kill9()
                w.daemon.start()
                print(json.dumps({"ok": True, "pid": w.daemon.proc.pid}), flush=True)
            elif cmd == "allow" and curve:
                # The stranger key gets tenant acme; SIGHUP reloads the file.
                entries.append({"name": "stranger", "key": keys["stranger"][0],
                                "tenants": ["acme"], "roles": ["submit", "read"]})
                write_private(clients_file, json.dumps(entries))
                before = open(w.daemon.logpath, errors="replace").read().count("reloaded:")
                w.daemon.proc.send_signal(signal.SIGHUP)
                ok = fqlib.wait_for(lambda: open(w.daemon.logpath, errors="replace")
                                    .read().count("reloaded:") > before, timeout=10)
                print(json.dumps({"ok": ok}), flush=True)
            elif cmd == "stop":
                break
            elif cmd:
                print(json.dumps({"ok": False, "error": f"unknown command {cmd}"}), flush=True)
    finally:
        w.close()


if __name__ == "__main__":
    main()
