"""fleetqd's command line and config file: --help, a JSON config applied
and overridden by flags, unknown settings named, non-loopback binds
refused, one daemon per data directory (exit 1), a data directory's shard
count fixed (exit 2), key files with loose permissions refused, SIGHUP
logged without stopping the daemon, --drain-timeout-ms checked."""
import json
import os
import signal
import subprocess
import time

from lib import fqlib
from lib.fqlib import Daemon, run_test

EXE = os.path.join(fqlib.BIN, "fleetqd")


def run(args, timeout=20):
    p = subprocess.run([EXE] + args, capture_output=True, timeout=timeout, text=True)
    return p.returncode, p.stdout + p.stderr


def test(c):
    rc, out = run(["--help"])
    c.eq(rc, 0, "--help exits 0")
    for flag in ("--data", "--listen", "--publish", "--shards", "--config", "--key",
                 "--ca-file", "--pairing-domain", "--drain-timeout-ms", "--max-store-mb",
                 "--no-dispatch"):
        c.ok(flag in out, f"--help documents {flag}")

    rc, out = run(["--colour", "blue"])
    c.eq(rc, 2, "unknown flag exits 2")
    c.ok("--colour" in out, "unknown flag is named", out)

    rc, out = run(["--shards"])
    c.eq(rc, 2, "flag without value exits 2")

    rc, out = run(["--shards", "0"])
    c.ok(rc == 2 and "out of range" in out, "shards 0 refused with the range", out)

    rc, out = run(["--drain-timeout-ms", "-1"])
    c.ok(rc == 2 and "drain-timeout-ms" in out and "out of range" in out,
         "negative drain timeout refused with the range", out)

    # The map never shrinks: a growth limit below the map size is refused,
    # from flags or the config file alike.
    rc, out = run(["--map-size-mb", "32", "--max-store-mb", "20"])
    c.ok(rc == 2 and "max-store-mb (20) is below map-size-mb (32)" in out,
         "--max-store-mb below --map-size-mb refused", out)
    rc, out = run(["--max-store-mb", "8"])
    c.ok(rc == 2 and "max-store-mb" in out and "out of range" in out,
         "--max-store-mb below 16 refused with the range", out)

    rc, out = run(["--listen", "tcp://0.0.0.0:5999"])
    c.ok(rc == 2 and "non-loopback" in out, "non-loopback bind refused", out)

    # tcp://localhost:P passes the loopback check, and binds (as 127.0.0.1):
    # before, it was accepted as loopback and then could not be bound.
    lh = Daemon(shards=1)
    lh.extra = []
    lp, pp = fqlib.free_port(), fqlib.free_port()
    lh.endpoint, lh.publish = f"tcp://localhost:{lp}", f"tcp://localhost:{pp}"
    try:
        lh.start(timeout=15)
        for ep in (f"tcp://localhost:{lp}", f"tcp://127.0.0.1:{lp}"):
            cl = fqlib.Client(ep, timeout=5)
            c.eq(cl.ping().get("ok"), True, f"--listen tcp://localhost: ping via {ep}")
            cl.close()
        sub = fqlib.Sub(f"tcp://localhost:{pp}")
        sub.close()
        with open(lh.logpath, "rb") as f:
            c.ok(b"binding localhost as 127.0.0.1" in f.read(), "the rewrite is logged")
        c.eq(lh.term(), 0, "localhost daemon stops cleanly")
    except RuntimeError as e:
        c.ok(False, "fleetqd --listen tcp://localhost:P starts", str(e)[-400:])

    d = Daemon(shards=2, accounts=["nobody"])
    cfg = os.path.join(d.tmp, "fleetqd.json")
    with open(cfg, "w") as f:
        json.dump({"colour": "blue"}, f)
    rc, out = run(["--config", cfg, "--data", d.data])
    c.ok(rc == 2 and "colour" in out, "unknown config key named", out)
    with open(cfg, "w") as f:
        f.write("{not json")
    rc, out = run(["--config", cfg, "--data", d.data])
    c.ok(rc == 2 and cfg in out, "malformed config names the file", out)

    # A fraction for a rate is a JSON number like any other.
    with open(cfg, "w") as f:
        json.dump({"shards": 2, "device_rate": 2.5}, f)
    rc, out = run(["--config", cfg, "--data", d.data, "--help"])
    c.ok(rc == 0, "a JSON real for device_rate is accepted", out)
    with open(cfg, "w") as f:
        json.dump({"shards": 2.5}, f)
    rc, out = run(["--config", cfg, "--data", d.data])
    c.ok(rc == 2 and "shards" in out, "a fraction for an integer setting is refused", out)

    # A config file takes effect (default_ttl_ms), and flags override it.
    with open(cfg, "w") as f:
        json.dump({"default_ttl_ms": 250, "shards": 2, "log_level": "info",
                   "drain_timeout_ms": 2000, "map_size_mb": 16, "max_store_mb": 32,
                   "device_rate": 0.5, "device_burst": 2, "no_dispatch": True}, f)
    d.config = cfg
    d.start()
    cl = fqlib.Client(d.endpoint)
    r = cl.call({"op": "submit", "tenant": "t", "key": "k1", "account": "nobody",
                 "vin": fqlib.vin(1), "command": "door_lock"})
    c.ok(r.get("ok"), "submit accepted", r)
    g = cl.call({"op": "get", "id": r.get("id")})
    c.eq(g.get("command", {}).get("ttl_ms"), 250, "config default_ttl_ms applied")
    # no_dispatch: nothing is sent, so the command expires queued (the
    # account's base URL is a port where nothing listens).
    exp = fqlib.wait_for(lambda: cl.call({"op": "get", "id": r.get("id")})["command"]["state"]
                         == "expired", timeout=5)
    g = cl.call({"op": "get", "id": r.get("id")}).get("command", {})
    c.ok(exp, "config no_dispatch: expired without being sent", g)
    c.eq([t.get("state") for t in g.get("transitions", [])], ["queued", "expired"],
         "config no_dispatch: queued -> expired", g.get("reason"))
    with open(d.logpath, "rb") as f:
        c.ok(b"--no-dispatch" in f.read(), "no_dispatch is logged as a warning")
    c.eq(cl.call({"op": "ping"}).get("shards"), 2, "config shards applied")
    # SIGHUP is logged and never stops the daemon.
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    c.ok(d.alive(), "alive after SIGHUP")
    c.eq(cl.call({"op": "ping"}).get("shards"), 2, "serves after SIGHUP")
    with open(d.logpath, "rb") as f:
        c.ok(b"SIGHUP received" in f.read(), "SIGHUP is logged")

    # A second daemon on the same data directory is refused before it
    # serves, with exit status 1 and the directory named, and the first one
    # goes on serving.
    rc, out = run(["--data", d.data, "--listen", "tcp://127.0.0.1:%d" % fqlib.free_port(),
                   "--publish", "tcp://127.0.0.1:%d" % fqlib.free_port()])
    c.eq(rc, 1, "second daemon on one data dir exits 1")
    c.ok("in use by another fleetqd" in out and d.data in out,
         "second daemon on one data dir refused, naming it", out)
    c.ok("ready" not in out, "refused before serving", out)
    c.eq(cl.call({"op": "ping"}).get("shards"), 2, "first daemon still serves")
    c.eq(d.term(), 0, "SIGTERM exits 0")

    # The shard count of a data directory cannot change: exit status 2, the
    # count to start with named, the recorded count kept.
    rc, out = run(["--data", d.data, "--shards", "3", "--listen",
                   "tcp://127.0.0.1:%d" % fqlib.free_port(), "--publish",
                   "tcp://127.0.0.1:%d" % fqlib.free_port()])
    c.eq(rc, 2, "changed shard count exits 2")
    c.ok("shard count" in out and "created with 2 shard(s)" in out and "--shards 2" in out,
         "changed shard count refused, naming the count to use", out)
    with open(os.path.join(d.data, "SHARDS")) as f:
        c.eq(f.read(), "2\n", "recorded shard count kept")
    # The refused start released the lock: the right count starts again,
    # with the command stored before.
    d.start()
    cl2 = fqlib.Client(d.endpoint)
    g = cl2.call({"op": "get", "id": r.get("id")})
    c.eq(g.get("command", {}).get("id"), r.get("id"), "restart with the recorded count keeps data", g)
    c.eq(d.term(), 0, "SIGTERM exits 0 after the restart")

    # A fleet key readable by others is refused, with the fix named.
    key = os.path.join(d.tmp, "key.pem")
    subprocess.run([os.path.join(fqlib.BIN, "fleetq"), "keygen", "--out",
                    os.path.join(d.tmp, "keys")], check=True, capture_output=True)
    os.rename(os.path.join(d.tmp, "keys", "private.pem"), key)
    os.chmod(key, 0o644)
    rc, out = run(["--data", d.data, "--shards", "2", "--key", key])
    c.ok(rc != 0 and "chmod 600" in out, "world-readable key refused", out)


run_test("daemon_options", test)
