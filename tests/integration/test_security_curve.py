#!/usr/bin/env python3
"""CURVE authentication and per-key authorization (issue 11), against a real
fleetqd with real CURVE sockets:

* a plaintext client and an unlisted key get no session (and the refusal is
  logged with the key's prefix);
* each rule of "who may do what": submit / get / cancel / history / admin,
  both ways between two tenants, by id (not_found, never revealing) and by
  tenant + key (forbidden), and missing roles;
* the status stream is confined to a key's tenants whatever it subscribes to;
* SIGHUP reloads the clients file: a removed key loses requests and events at
  once, other clients keep their connections; a broken file changes nothing;
* start-up refusals naming the mistake.
"""
import os
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import zmq  # noqa: E402

import fqlib  # noqa: E402
from fqlib import Client, Daemon, Sub, vin, wait_for  # noqa: E402

import json  # noqa: E402


def keypair():
    pub, sec = zmq.curve_keypair()
    return pub.decode(), sec.decode()


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_clients(path, entries):
    write_private(path + ".tmp", json.dumps(entries, indent=1))
    os.replace(path + ".tmp", path)


def log_text(d):
    with open(d.logpath, errors="replace") as f:
        return f.read()


def no_reply(cl, what, timeout=1.5):
    try:
        cl.send({"op": "ping", "req": 1})
    except zmq.Again:
        # libzmq dropped the refused session before the send (a loaded
        # machine lets the handshake fail first): no session, so no reply.
        return True
    return cl.recv(timeout) is None


def main(c):
    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fq-curve-{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    server_pub, server_sec = keypair()
    keyfile = os.path.join(tmp, "server.key")
    write_private(keyfile, f"public {server_pub}\nsecret {server_sec}\n")
    keys = {n: keypair() for n in ("acme", "globex", "ops", "reader", "stranger", "nosub",
                                   "writer")}
    entries = [
        {"name": "acme-svc", "key": keys["acme"][0], "tenants": ["acme"],
         "roles": ["submit", "read", "cancel", "subscribe"]},
        {"name": "globex-svc", "key": keys["globex"][0], "tenants": ["globex"],
         "roles": ["submit", "read", "cancel", "subscribe"]},
        {"name": "ops", "key": keys["ops"][0], "tenants": ["*"],
         "roles": ["admin", "read", "subscribe"]},
        {"name": "acme-reader", "key": keys["reader"][0], "tenants": ["acme"], "roles": ["read"]},
        {"name": "acme-nosub", "key": keys["nosub"][0], "tenants": ["acme"],
         "roles": ["read", "submit"]},
        {"name": "acme-writer", "key": keys["writer"][0], "tenants": ["acme"],
         "roles": ["submit"]},
    ]
    clients_file = os.path.join(tmp, "clients.json")
    write_clients(clients_file, entries)

    def cur(name):
        return (keys[name][0], keys[name][1], server_pub)

    # --no-dispatch: the commands below stay queued (nothing is sent).
    d = Daemon(shards=2, extra=["--curve-secret", keyfile, "--clients", clients_file,
                                "--no-dispatch"])
    d.start()
    text = log_text(d)
    c.ok(f"server public key {server_pub}" in text, "start-up log names the server public key")
    c.ok("no --curve-secret" not in text, "no plaintext warning with CURVE on")

    # --- admission -----------------------------------------------------
    plain = Client(d.endpoint, timeout=2)
    c.ok(no_reply(plain, "plaintext"), "a plaintext (NULL) client gets no reply")
    stranger = Client(d.endpoint, timeout=2, curve=cur("stranger"))
    c.ok(no_reply(stranger, "stranger"), "an unlisted CURVE key gets no reply")
    wrong_server = Client(d.endpoint, timeout=2,
                          curve=(keys["acme"][0], keys["acme"][1], keypair()[0]))
    c.ok(no_reply(wrong_server, "wrong server key"), "a client with the wrong server key gets none")
    ok = wait_for(lambda: keys["stranger"][0][:8] in log_text(d)
                  and "refused a client on the request socket" in log_text(d), timeout=5)
    c.ok(ok, "refusals are logged, the unlisted key by its prefix",
         [l for l in log_text(d).splitlines() if "refused" in l])
    c.ok(keys["stranger"][0] not in log_text(d), "the whole unlisted key is not logged")
    for cl in (plain, stranger, wrong_server):
        cl.close()
    try:
        Sub(d.publish, curve=cur("stranger"))
        c.ok(False, "an unlisted key's SUB completes no handshake")
    except RuntimeError:
        c.ok(True, "an unlisted key's SUB completes no handshake")

    acme = Client(d.endpoint, timeout=10, curve=cur("acme"))
    globex = Client(d.endpoint, timeout=10, curve=cur("globex"))
    ops = Client(d.endpoint, timeout=10, curve=cur("ops"))
    reader = Client(d.endpoint, timeout=10, curve=cur("reader"))
    for n, cl in (("acme", acme), ("globex", globex), ("ops", ops), ("reader", reader)):
        r = cl.ping()
        c.ok(r.get("ok") is True, f"listed key {n}: ping answered", r)
    # The account the submits below name, added by the admin key (fleetqd
    # refuses submits for accounts it does not have: unknown_account).
    r = ops.call({"op": "admin", "action": "account_add", "account": "acct1",
                  "access_token": "acct1-opaque-token", "refresh_token": "refresh-not-a-secret",
                  "client_id": "test-client", "base_url": "http://127.0.0.1:9"})
    c.ok(r.get("ok") is True, "the admin key adds the account", r)

    # --- the status stream ---------------------------------------------
    sub_acme_all = Sub(d.publish, [""], curve=cur("acme"))
    sub_acme_foreign = Sub(d.publish, ["globex/", "glo"], curve=cur("acme"))
    sub_ops = Sub(d.publish, [""], curve=cur("ops"))
    sub_nosub = Sub(d.publish, [""], curve=cur("nosub"))

    # --- submit ----------------------------------------------------------
    ra = acme.submit("acme", "a-1", vin_=vin(1))
    c.ok(ra.get("ok") is True, "acme submits for acme", ra)
    rg = globex.submit("globex", "g-1", vin_=vin(2))
    c.ok(rg.get("ok") is True, "globex submits for globex", rg)
    r = acme.submit("globex", "a-x", vin_=vin(3))
    c.eq(r.get("error"), "forbidden", "acme submitting for globex", r)
    c.ok("acme-svc" in r.get("message", "") and "globex" in r.get("message", ""),
         "the refusal names the client and the tenant", r)
    r = globex.submit("acme", "g-x", vin_=vin(4))
    c.eq(r.get("error"), "forbidden", "globex submitting for acme", r)
    r = reader.submit("acme", "r-1", vin_=vin(5))
    c.eq(r.get("error"), "forbidden", "a key without the submit role", r)
    c.ok("\"submit\" role" in r.get("message", ""), "the message names the missing role", r)
    aid, gid = ra.get("id"), rg.get("id")

    # --- get / cancel ----------------------------------------------------
    r = acme.get(id_=aid)
    c.ok(r.get("ok") is True, "acme reads its command by id", r)
    r = reader.get(id_=aid)
    c.ok(r.get("ok") is True, "a read-only acme key reads it too", r)
    r = globex.get(id_=aid)
    c.eq(r.get("error"), "not_found", "globex reading acme's command by id", r)
    c.eq(r.get("message"), f'no command with id "{aid}"',
         "the answer is the one for an id that does not exist", r)
    r = acme.get(id_=gid)
    c.eq(r.get("error"), "not_found", "acme reading globex's command by id", r)
    r = globex.cancel(id_=aid)
    c.eq(r.get("error"), "not_found", "globex cancelling acme's command by id", r)
    r = acme.get(id_=aid)
    state_before = r.get("command", {}).get("state")
    c.ok(state_before != "cancelled", "acme's command was not cancelled by globex", r)
    r = globex.get(tenant="acme", key="a-1")
    c.eq(r.get("error"), "forbidden", "globex reading acme's command by tenant + key", r)
    r = globex.cancel(tenant="acme", key="a-1")
    c.eq(r.get("error"), "forbidden", "globex cancelling by acme's tenant + key", r)
    r = acme.get(tenant="globex", key="g-1")
    c.eq(r.get("error"), "forbidden", "acme reading globex's command by tenant + key", r)
    r = acme.get(tenant="acme", key="a-1")
    c.ok(r.get("ok") is True, "acme reads its own by tenant + key", r)
    r = reader.cancel(id_=aid)
    c.eq(r.get("error"), "forbidden", "a key without the cancel role cannot cancel", r)
    r = ops.get(id_=gid)
    c.ok(r.get("ok") is True, "a key holding every tenant reads globex's command", r)
    r = ops.cancel(id_=gid)
    c.eq(r.get("error"), "forbidden", "ops has no cancel role", r)
    r = acme.cancel(id_=aid)
    c.ok(r.get("ok") is True or r.get("error") == "not_cancellable",
         "acme may cancel its own command (or is told it is too late)", r)

    # --- admin -------------------------------------------------------------
    r = acme.call({"op": "admin", "action": "account_list"})
    c.eq(r.get("error"), "forbidden", "admin without the admin role", r)
    r = ops.call({"op": "admin", "action": "account_list"})
    c.ok(r.get("ok") is True, "admin with the admin role", r)

    # --- health: the read role or admin -----------------------------------
    for n, cl in (("reader", reader), ("ops", ops)):
        r = cl.call({"op": "health"})
        c.ok(r.get("ok") is True and len(r.get("shards", [])) == 2, f"health for {n}", r)
    writer = Client(d.endpoint, timeout=10, curve=cur("writer"))
    r = writer.call({"op": "health"})
    c.eq(r.get("error"), "forbidden", "health without the read or admin role", r)
    c.ok("\"read\" role" in r.get("message", ""), "names the role it lacks", r)

    # --- usage (budgets): admin, or read naming one of the key's tenants ---
    r = reader.call({"op": "usage", "tenant": "acme"})
    c.ok(r.get("ok") is True and isinstance(r.get("usage"), list), "usage of acme for reader", r)
    r = reader.call({"op": "usage"})
    c.eq(r.get("error"), "forbidden", "usage of every tenant needs admin", r)
    c.ok("name one" in r.get("message", ""), "says to name a tenant", r)
    r = reader.call({"op": "usage", "tenant": "globex"})
    c.eq(r.get("error"), "forbidden", "usage of another tenant", r)
    r = writer.call({"op": "usage", "tenant": "acme"})
    c.eq(r.get("error"), "forbidden", "usage without the read or admin role", r)
    r = ops.call({"op": "usage", "days": 2})
    c.ok(r.get("ok") is True and isinstance(r.get("usage"), list), "usage of all for admin", r)
    writer.close()

    # --- history -----------------------------------------------------------
    def history_tenants(cl, **kw):
        tenants = set()
        for shard in range(2):
            r = cl.call({"op": "history", "shard": shard, "after": 0, "limit": 1000, **kw})
            if not r.get("ok"):
                return r
            tenants |= {e["tenant"] for e in r["events"]}
        return tenants

    c.eq(history_tenants(acme), {"acme"}, "history of an acme key holds acme's events only")
    c.eq(history_tenants(globex), {"globex"}, "history of a globex key holds globex's only")
    c.eq(history_tenants(ops), {"acme", "globex"}, "history of a '*' key holds both")
    r = acme.call({"op": "history", "shard": 0, "tenant": "globex"})
    c.eq(r.get("error"), "forbidden", "history of another tenant", r)
    c.eq(history_tenants(acme, tenant="acme"), {"acme"}, "history by tenant, own tenant")

    # --- stream isolation ---------------------------------------------------
    for i in range(3):
        acme.submit("acme", f"a-s{i}", vin_=vin(10 + i))
        globex.submit("globex", f"g-s{i}", vin_=vin(20 + i))
    got_all = sub_ops.collect(timeout=2)
    got_acme = sub_acme_all.collect(timeout=1)
    got_foreign = sub_acme_foreign.collect(timeout=0.5)
    got_nosub = sub_nosub.collect(timeout=0.5)
    tops = {t.split("/")[0] for t, _ in got_all}
    c.eq(tops, {"acme", "globex"}, "a '*' subscriber with \"\" receives both tenants")
    c.ok(len(got_acme) >= 3 and all(t.startswith("acme/") for t, _ in got_acme),
         "an acme subscriber with \"\" receives acme/... only",
         [t for t, _ in got_acme][:10])
    c.eq(len(got_foreign), 0, "an acme subscriber to globex/ receives nothing")
    c.eq(len(got_nosub), 0, "a key without the subscribe role receives nothing")

    # fleetq watch with a key limited to acme, subscribed to everything: only
    # acme's events, and the other tenant's share of the shard's seq is not
    # taken for a loss (tseq tells).
    ackey = os.path.join(tmp, "acme.key")
    write_private(ackey, f"public {keys['acme'][0]}\nsecret {keys['acme'][1]}\n")
    env = dict(os.environ, FLEETQ_CURVE_KEY=ackey, FLEETQ_SERVER_KEY=server_pub)
    watch = subprocess.Popen([os.path.join(fqlib.BIN, "fleetq"), "watch", "--json", "--count", "6",
                              "--timeout", "20", "--publish", d.publish, "--endpoint", d.endpoint],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(1.0)
    for i in range(6):
        globex.submit("globex", f"g-w{i}", vin_=vin(60 + i))
        acme.submit("acme", f"a-w{i}", vin_=vin(70 + i))
        globex.submit("globex", f"g-w{i}b", vin_=vin(60 + i))
    out, err = watch.communicate(timeout=30)
    evs = [json.loads(line) for line in out.splitlines() if line.strip()]
    c.eq((watch.returncode, len(evs)), (0, 6), "fleetq watch with the acme key: 6 events", err)
    c.ok(all(e.get("tenant") == "acme" and e.get("tseq", 0) > 0 for e in evs),
         "fleetq watch sees acme's events only, each with tseq", [e.get("tenant") for e in evs])
    c.ok("gap" not in err and "missed" not in err,
         "no false gap from the other tenant's events", err[-300:])

    # --- SIGHUP reload ------------------------------------------------------
    # A broken file: nothing changes.
    with open(clients_file, "w") as f:
        f.write("[{\"name\": \"x\"")
    os.chmod(clients_file, 0o600)
    d.proc.send_signal(signal.SIGHUP)
    ok = wait_for(lambda: "clients file not reloaded" in log_text(d), timeout=5)
    c.ok(ok, "a broken clients file is reported on SIGHUP")
    c.ok(d.alive(), "fleetqd runs on after SIGHUP")
    r = acme.ping()
    c.ok(r.get("ok") is True, "the old table stays in force", r)

    # Remove acme's key.
    write_clients(clients_file, [e for e in entries if e["name"] != "acme-svc"])
    # A request of globex right before the reload is answered after it.
    globex.send({"op": "get", "id": gid, "req": 77})
    d.proc.send_signal(signal.SIGHUP)
    # The six keys of entries but acme's.
    ok = wait_for(lambda: "reloaded: 5 key(s)" in log_text(d), timeout=5)
    c.ok(ok, "the clients file is reloaded on SIGHUP", d.log_tail(5))
    r = globex.recv(5)
    c.ok(r is not None and r.get("req") == 77 and r.get("ok") is True,
         "globex's request in flight across the reload is answered", r)
    r = acme.call({"op": "ping"})
    c.eq(r.get("error"), "forbidden", "the removed key's next request is refused", r)
    r = acme.submit("acme", "a-after", vin_=vin(30))
    c.eq(r.get("error"), "forbidden", "the removed key cannot submit", r)
    r = globex.submit("globex", "g-after", vin_=vin(31))
    c.ok(r.get("ok") is True, "another key keeps its connection and access", r)
    # The status stream: subscribers reconnect and pass the check again.
    sub_ops.collect(timeout=0.5)
    sub_acme_all.collect(timeout=0.5)
    time.sleep(1.0)

    def ops_sees(key):
        acme_r = ops.get(tenant="globex", key=key)
        return acme_r.get("ok") is True

    ops_got = []
    for i in range(20):
        globex.submit("globex", f"g-r{i}", vin_=vin(40 + i % 5))
        ops_got += sub_ops.collect(timeout=0.3)
        if ops_got:
            break
    c.ok(len(ops_got) > 0, "a kept subscriber receives events again after the reload")
    ops2 = Sub(d.publish, [""], curve=cur("ops"))
    globex.submit("globex", "g-fresh", vin_=vin(50))
    got = ops2.collect(timeout=2)
    c.ok(any(t.startswith("globex/") for t, _ in got), "a new subscriber is served")
    # acme's subscriber lost its session: even acme events (from ops?) never reach it.
    leftover = sub_acme_all.collect(timeout=1.5)
    c.eq(len(leftover), 0, "the removed key's subscriber receives nothing after the reload",
         [t for t, _ in leftover][:5])

    for x in (acme, globex, ops, reader):
        x.close()
    for s in (sub_acme_all, sub_acme_foreign, sub_ops, sub_nosub, ops2):
        s.close()
    c.eq(d.term(), 0, "fleetqd stops cleanly")

    # --- start-up refusals --------------------------------------------------
    exe = os.path.join(fqlib.BIN, "fleetqd")

    def refuse(args, want, what):
        p = subprocess.run([exe, "--data", os.path.join(tmp, "d2")] + args,
                           capture_output=True, text=True, timeout=30)
        c.ok(p.returncode == 2 and want in p.stderr, what, p.returncode, p.stderr[-400:])

    refuse(["--curve-secret", keyfile], "needs --clients", "--curve-secret without --clients")
    refuse(["--clients", clients_file], "needs --curve-secret", "--clients without --curve-secret")
    refuse(["--listen", "tcp://0.0.0.0:1"], "non-loopback",
           "a non-loopback bind without CURVE")
    bad = os.path.join(tmp, "bad.json")
    write_clients(bad, [{"name": "svc-a", "key": keys["acme"][0], "tenants": ["acme"],
                         "roles": ["submit", "launch"]}])
    refuse(["--curve-secret", keyfile, "--clients", bad], 'entry 1 ("svc-a")',
           "an unknown role names the entry")
    write_clients(bad, [{"name": "svc-b", "key": "short", "tenants": ["acme"],
                         "roles": ["read"]}])
    refuse(["--curve-secret", keyfile, "--clients", bad], "not a CURVE public key",
           "a bad key is refused")
    write_clients(bad, [{"name": "svc-c", "key": keys["acme"][0], "tenants": ["ac*"],
                         "roles": ["read"]}])
    refuse(["--curve-secret", keyfile, "--clients", bad], "not a tenant name",
           "a tenant pattern other than * is refused")
    write_clients(bad, [{"name": "svc-d", "key": keys["acme"][0], "tenant": ["acme"],
                         "roles": ["read"]}])
    refuse(["--curve-secret", keyfile, "--clients", bad], 'unknown key "tenant"',
           "an unknown key in an entry is refused")
    os.chmod(keyfile, 0o644)
    refuse(["--curve-secret", keyfile, "--clients", clients_file], "server.key",
           "a server key file readable by others is refused")
    os.chmod(keyfile, 0o600)

    # CURVE on a wildcard address: allowed (traffic of this test stays on
    # loopback).
    # (The settings come from the config file this time.)
    conf = os.path.join(tmp, "fleetqd.json")
    with open(conf, "w") as f:
        json.dump({"curve_secret": keyfile, "clients": clients_file}, f)
    wild = Daemon(shards=1, config=conf)
    port = fqlib.free_port()
    wild.extra += ["--listen", f"tcp://0.0.0.0:{port}"]
    wild.endpoint = f"tcp://127.0.0.1:{port}"
    wild.start()
    g2 = Client(wild.endpoint, timeout=10, curve=cur("globex"))
    c.ok(g2.ping().get("ok") is True, "with CURVE fleetqd may bind a non-loopback address")
    g2.close()
    plain2 = Client(wild.endpoint, timeout=2)
    c.ok(no_reply(plain2, "plaintext"), "curve_secret / clients from the config file enforce CURVE")
    plain2.close()
    wild.term()

    # --- without CURVE: warning and ipc modes --------------------------------
    for mode, want in ((None, 0o600), ("0660", 0o660)):
        plainplace = Daemon(shards=1)
        sock = os.path.join(plainplace_dir(tmp, mode), "fq.sock")
        plainplace.extra = ["--listen", f"ipc://{sock}",
                            "--publish", f"ipc://{sock}.pub"] + (["--ipc-mode", mode] if mode else [])
        plainplace.endpoint = f"ipc://{sock}"
        plainplace.start()
        st = os.stat(sock)
        c.eq(stat.S_IMODE(st.st_mode), want, f"ipc socket file mode with --ipc-mode {mode}")
        c.eq(stat.S_IMODE(os.stat(sock + ".pub").st_mode), want, "the PUB socket file too")
        cl = Client(plainplace.endpoint, timeout=10)
        c.ok(cl.ping().get("ok") is True, "a local client is served over ipc without CURVE")
        cl.close()
        c.ok("any local user can send commands" in log_text(plainplace),
             "one warning line at start without CURVE")
        plainplace.term()


def plainplace_dir(tmp, mode):
    p = os.path.join(tmp, f"ipc-{mode or 'default'}")
    os.makedirs(p, exist_ok=True)
    return p


if __name__ == "__main__":
    fqlib.run_test("security_curve", main)
