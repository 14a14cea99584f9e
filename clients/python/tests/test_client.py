"""Every call of the blocking client against a real fleetqd + fleetsim:
ping, health, submit (and wait), get, cancel, history, the admin calls,
errors as exceptions per code, conversions that make fleetqd's strict
typing invisible, big site ids, pipelining 1,000 submits and a retry with
the same key while fleetqd does not answer."""

import datetime
import os
import signal
import threading
import time

import msgpack
import pytest
import zmq

from conftest import ACCOUNT, ASLEEP, BIG_SITE, UNPAIRED, VINS, dl, fleetq_client, unique
from fleetq_client import (BadParam, BadRequest, FleetqError, IdempotencyMismatch,
                           NotCancellable, NotFound, Timeout, UnknownCommand)


def test_ping_and_health(world, client):
    r = client.ping()
    assert r["ok"] is True and r["shards"] == 2 and isinstance(r["version"], str)
    h = client.health()
    assert h["ok"] is True and h["shards"] == 2 and h["latency_ms"] >= 0
    # Nothing listens there: health says so instead of raising.
    dead = fleetq_client.Client(f"tcp://127.0.0.1:{dl.free_port()}", timeout=0.3)
    h = dead.health(timeout=0.3)
    dead.close()
    assert h["ok"] is False and h["error"] == "timeout"


def test_health_report(world, client):
    """The daemon's own health op: its verdict, per shard and account."""
    r = client.health_report()
    assert r["ok"] is True and r["stuck_ms"] == 30000
    assert r["healthy"] is (not r["problems"])
    assert [s["shard"] for s in r["shards"]] == [0, 1]
    assert all(s["answered"] is True and s["read"] == "ok" for s in r["shards"])
    assert isinstance(r["accounts"], list)
    assert client.health_report(stuck_ms=5000, timeout=5)["stuck_ms"] == 5000
    with pytest.raises(BadRequest, match="stuck_ms"):
        client.health_report(stuck_ms=0)
    with pytest.raises(TypeError):
        client.health_report(stuck_ms="soon")


def test_submit_wait_get_history(world, client):
    t = unique("py")
    r = client.submit(t, "lock-1", ACCOUNT, "door_lock", vin=VINS[0], wait=True, timeout=30)
    assert r["ok"] and r["dup"] is False and len(r["id"]) > 0
    ev = r["event"]
    assert ev["id"] == r["id"] and ev["state"] == "succeeded" and ev["tenant"] == t
    assert ev["vin"] == VINS[0] and isinstance(ev["seq"], int) and ev["tseq"] >= 1
    # get, by id and by tenant + key, agree with the event.
    g = client.get(id=r["id"])
    assert g["state"] == "succeeded" and g["key"] == "lock-1" and g["vin"] == VINS[0]
    assert client.get(tenant=t, key="lock-1")["id"] == r["id"]
    # The same again: a duplicate of the finished command, its event read back.
    r2 = client.submit(t, "lock-1", ACCOUNT, "door_lock", vin=VINS[0], wait=True, timeout=30)
    assert r2["dup"] is True and r2["id"] == r["id"] and r2["event"]["seq"] == ev["seq"]
    # history by tenant on the command's shard: its whole life, tseq 1, 2, ...
    h = client.history(ev["shard"], tenant=t)
    assert [e["tseq"] for e in h["events"]] == list(range(1, len(h["events"]) + 1))
    assert [e["state"] for e in h["events"]][0] == "queued"
    assert h["events"][-1] == ev and h["next"] == ev["tseq"]
    seqs = [e["seq"] for e in client.iter_history(ev["shard"], after=ev["seq"] - 1)]
    assert seqs and seqs[0] == ev["seq"]


def test_wait_returns_a_failure_as_an_event(world, client):
    t = unique("py")
    r = client.submit(t, "unpaired", ACCOUNT, "honk_horn", vin=UNPAIRED, wait=True, timeout=30)
    ev = r["event"]
    assert ev["state"] == "failed" and ev["error"] == "key_not_paired"
    assert "tesla.com/_ak/" in ev["reason"]


def test_cancel(world, client):
    t = unique("py")
    # The first command wakes the car; the second waits behind it.
    a = client.submit(t, "c-1", ACCOUNT, "set_charge_limit", vin=ASLEEP, params={"percent": 70})
    b = client.submit(t, "c-2", ACCOUNT, "set_sentry_mode", vin=ASLEEP, params={"on": True})
    assert dl.fqlib.wait_for(lambda: client.get(id=a["id"])["state"] == "waking", 10)
    c = client.cancel(id=b["id"])
    assert c["state"] == "cancelled" and c["id"] == b["id"]
    with pytest.raises(NotCancellable) as ei:
        client.cancel(tenant=t, key="c-1")
    assert ei.value.code == "not_cancellable" and ei.value.state == "waking"
    with pytest.raises(NotFound):
        client.cancel(id="00ffffffffffffff")


def test_errors_are_exceptions_per_code(world, client):
    t = unique("py")
    with pytest.raises(BadParam) as ei:
        client.submit(t, "p", ACCOUNT, "set_charge_limit", vin=VINS[1], params={"percent": 120})
    assert ei.value.code == "bad_param" and "params.percent: 120 is out of range" in ei.value.message
    assert isinstance(ei.value, FleetqError) and ei.value.reply["ok"] is False
    with pytest.raises(UnknownCommand):
        client.submit(t, "u", ACCOUNT, "fly", vin=VINS[1])
    with pytest.raises(BadRequest) as ei:
        client.submit(t, "v", ACCOUNT, "door_lock", vin="5YJ3E1EA7KF00000I")
    assert "invalid character at byte 16" in str(ei.value)
    client.submit(t, "m", ACCOUNT, "set_charge_limit", vin=VINS[1], params={"percent": 60})
    with pytest.raises(IdempotencyMismatch):
        client.submit(t, "m", ACCOUNT, "set_charge_limit", vin=VINS[1], params={"percent": 61})
    with pytest.raises(NotFound):
        client.get(id="00ffffffffffffff")
    # Mistakes caught before anything is sent.
    with pytest.raises(ValueError):
        client.submit(t, "x", ACCOUNT, "door_lock")
    with pytest.raises(ValueError):
        client.submit(t, "x", ACCOUNT, "door_lock", vin=VINS[1], site=5)
    with pytest.raises(TypeError):
        client.submit(t, "x", ACCOUNT, "door_lock", vin=VINS[1], ttl_ms=True)


def test_natural_python_values_are_accepted(world, client):
    """What fleetqd would refuse as sent by a naive encoder, the client
    converts: 1 for true, 80.0 for an integer, an int key, a site id as a
    string, None for "not given", a lower-case VIN."""
    t = unique("py")
    r = client.submit(t, 1001, ACCOUNT, "set_charge_limit", vin=VINS[2].lower(),
                      params={"percent": 80.0}, ttl_ms=30000.0, coalesce=1, wake=None)
    g = client.get(id=r["id"])
    assert g["key"] == "1001" and g["params"] == {"percent": 80} and g["coalesce"] is True
    assert g["ttl_ms"] == 30000 and g["vin"] == VINS[2]
    r = client.submit(t, "sched", ACCOUNT, "set_scheduled_charging", vin=VINS[2],
                      params={"enable": 1, "time": 120.0})
    assert client.get(id=r["id"])["params"] == {"enable": True, "time": 120}
    r = client.submit(t, "temps", ACCOUNT, "set_temps", vin=VINS[2],
                      params={"driver_temp": 21, "passenger_temp": 21.5, "unused": None})
    assert client.get(id=r["id"])["params"] == {"driver_temp": 21, "passenger_temp": 21.5}


def test_not_before_schedules(world, client):
    """not_before (unix ms or an aware datetime) is sent as an integer:
    the command is scheduled, `get` shows the time, cancel works."""
    t = unique("nb")
    at = int(time.time() * 1000) + 600000
    r = client.submit(t, "nb-1", ACCOUNT, "door_lock", vin=VINS[3], not_before=at)
    assert r["state"] == "scheduled" and r["dup"] is False
    g = client.get(id=r["id"])
    assert g["not_before"] == at and g["deadline"] == at + g["ttl_ms"]
    when = datetime.datetime.fromtimestamp(at / 1000, datetime.timezone.utc)
    r2 = client.submit(t, "nb-1", ACCOUNT, "door_lock", vin=VINS[3], not_before=when)
    assert r2["dup"] is True and r2["id"] == r["id"] and r2["state"] == "scheduled"
    with pytest.raises(ValueError):
        client.submit(t, "nb-2", ACCOUNT, "door_lock", vin=VINS[3],
                      not_before=datetime.datetime(2030, 1, 1))
    assert client.cancel(id=r["id"])["state"] == "cancelled"


def test_protocol_forgives_nil_and_names_binary_keys(world):
    """The daemon side of issue 15, as a hand-written client sees it."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(world.daemon.endpoint)

    def call(body):
        s.send(msgpack.packb(body, use_bin_type=True))
        assert s.poll(5000)
        return msgpack.unpackb(s.recv_multipart()[-1], raw=False)

    t = unique("raw")
    # As @msgpack/msgpack writes {vin: undefined, site: ..., ttl_ms: undefined}.
    r = call({"op": "submit", "tenant": t, "key": "nil-1", "account": ACCOUNT, "vin": None,
              "site": BIG_SITE, "command": "backup", "params": {"backup_reserve_percent": 20},
              "ttl_ms": None, "coalesce": None, "wake": None, "v": None, "req": 3})
    assert r["ok"] is True and r["req"] == 3, r
    r = call({"op": "get", "id": None, "tenant": t, "key": "nil-1"})
    assert r["ok"] and r["command"]["site"] == BIG_SITE and r["command"]["ttl_ms"] == 60000
    r = call({"op": "submit", "tenant": None, "key": "k", "account": ACCOUNT, "vin": VINS[0],
              "command": "door_lock"})
    assert r["error"] == "bad_request" and r["message"] == '"tenant": expected string, got nil'
    r = call({b"op": "ping"})
    assert r["error"] == "bad_request"
    assert r["message"] == "key at byte 1: keys must be strings (got binary)"
    r = call({"op": "submit", "tenant": t, "key": "k", "account": ACCOUNT, "vin": VINS[0],
              "command": "door_lock", "coalesce": 1})
    assert r["message"] == '"coalesce": expected bool, got integer'
    s.close(0)


def test_big_site_ids_are_exact(world, client):
    t = unique("py")
    r = client.submit(t, "site-1", ACCOUNT, "backup", site=str(BIG_SITE),
                      params={"backup_reserve_percent": 35}, wait=True, timeout=30)
    ev = r["event"]
    assert ev["state"] == "succeeded" and ev["site"] == BIG_SITE
    assert client.get(id=r["id"])["site"] == BIG_SITE
    assert world.sim.site(BIG_SITE)["backup_reserve_percent"] == 35
    with pytest.raises(ValueError):
        client.submit(t, "site-2", ACCOUNT, "backup", site=float(BIG_SITE),
                      params={"backup_reserve_percent": 35})


def test_pipelining_1000_submits(world, client):
    t = unique("pipe")
    cmds = [{"tenant": t, "key": f"k{i}", "account": ACCOUNT, "command": "set_charging_amps",
             "vin": VINS[i % len(VINS)], "params": {"charging_amps": i % 32}, "ttl_ms": 600000}
            for i in range(1000)]
    t0 = time.monotonic()
    out = client.submit_many(cmds, window=1000)
    took = time.monotonic() - t0
    assert len(out) == 1000 and all(r["ok"] and r["dup"] is False for r in out)
    assert len({r["id"] for r in out}) == 1000
    # Each reply belongs to its own request: the id stored under its key.
    gets = client.call_many([{"op": "get", "tenant": t, "key": f"k{i}"} for i in range(1000)])
    assert [g["command"]["id"] for g in gets] == [r["id"] for r in out]
    assert [g["command"]["params"]["charging_amps"] for g in gets] == [i % 32 for i in range(1000)]
    # And again: every one a duplicate of its original.
    again = client.submit_many(cmds, window=250)
    assert [r["id"] for r in again] == [r["id"] for r in out] and all(r["dup"] for r in again)
    print(f"1000 pipelined submits in {took * 1000:.0f} ms")


def test_retry_with_the_same_key(world):
    """fleetqd stops answering (SIGSTOP) while a submit is in flight: the
    client times out and sends it again with the same key; once fleetqd
    runs again the command exists exactly once."""
    t = unique("retry")
    c = fleetq_client.Client(world.daemon.endpoint, timeout=0.4, retries=8)
    pid = world.daemon.proc.pid
    res = []
    os.kill(pid, signal.SIGSTOP)
    try:
        th = threading.Thread(target=lambda: res.append(
            c.submit(t, "once", ACCOUNT, "set_charge_limit", vin=VINS[3], params={"percent": 77})))
        th.start()
        time.sleep(1.5)  # about three timeouts and resends
    finally:
        os.kill(pid, signal.SIGCONT)
    th.join(10)
    assert res and res[0]["ok"], res
    cid = res[0]["id"]
    assert c.get(tenant=t, key="once")["id"] == cid
    shard = c.get(id=cid)["shard"]
    queued = [e for e in c.history(shard, tenant=t, limit=1000)["events"] if e["state"] == "queued"]
    assert [e["id"] for e in queued] == [cid], "one command, queued once"
    c.close()


def test_timeout_is_an_exception(world):
    c = fleetq_client.Client(f"tcp://127.0.0.1:{dl.free_port()}", timeout=0.2, retries=1)
    t0 = time.monotonic()
    with pytest.raises(Timeout) as ei:
        c.ping()
    assert isinstance(ei.value, TimeoutError) and ei.value.code == "timeout"
    assert time.monotonic() - t0 < 2
    c.close()


def test_admin_calls(world, client):
    accts = client.account_list()
    assert [a["id"] for a in accts] == [ACCOUNT]
    a = client.account_get(ACCOUNT)
    assert a["id"] == ACCOUNT and "access_token" not in a
    assert client.account_retry(ACCOUNT) is False
    with pytest.raises(NotFound):
        client.account_get("nobody")
