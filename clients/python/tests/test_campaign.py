"""Campaigns (issue 16) through the Python clients: the device list checked
and split into parts below fleetqd's 256 KiB body limit (no daemon needed),
then against a real fleetqd + fleetsim: a campaign sent in several parts
runs to done with its progress followed by watch_campaign (iterator and
callback), the device commands are ordinary commands with the key
<key>/<vin>, a repeat is a duplicate, abort cancels what is scheduled, and
the asyncio client does the same."""

import asyncio
import time

import pytest

from conftest import ACCOUNT, VINS, fleetq_client, unique
from fleetq_client import NotFound
from fleetq_client import _common as C
import fleetq_client.aio


def vin_of(i):
    return "5YJ3E1EA7KF%06d" % i


# ---- splitting, offline ---------------------------------------------------


def test_parts_fit_the_body_limit_and_keep_the_order():
    devs = [{"vin": vin_of(i), "account": f"acct-{i % 7}"} for i in range(8000)]
    parts = C.campaign_requests("acme", "grid-1", "set_charge_limit", devs,
                                params={"percent": 80.0}, ttl_ms=600000, rate=500,
                                max_failure_ratio=0.25, not_before=1795920000000)
    assert len(parts) == 2
    got = []
    for i, p in enumerate(parts):
        assert len(C.pack(dict(p, req=2 ** 62))) <= C.BODY_LIMIT
        assert p["part"] == i + 1 and p["parts"] == 2 and p["op"] == "campaign"
        assert p["params"] == {"percent": 80} and type(p["params"]["percent"]) is int
        assert p["rate"] == 500 and p["max_failure_ratio"] == 0.25 and p["ttl_ms"] == 600000
        got += p["devices"]
    assert got == devs
    one = C.campaign_requests("acme", "k", "flash_lights", [vin_of(1), 77], account="a")
    assert len(one) == 1 and "part" not in one[0] and "parts" not in one[0]
    assert one[0]["devices"] == [{"vin": vin_of(1), "account": "a"}, {"site": 77, "account": "a"}]
    big = C.campaign_requests("acme", "k", "flash_lights",
                              [{"vin": vin_of(i), "account": "a"} for i in range(100000)])
    assert 10 <= len(big) <= 20 and sum(len(p["devices"]) for p in big) == 100000


def test_bad_lists_are_refused_before_sending():
    with pytest.raises(ValueError, match=r"devices\[2\]: device 5YJ3E1EA7KF000001 is listed twice "
                                         r"\(first at devices\[0\]\)"):
        C.campaign_requests("t", "k", "flash_lights", [vin_of(1), vin_of(2), vin_of(1).lower()],
                            account="a")
    with pytest.raises(ValueError, match=r"devices\[1\]: no account"):
        C.campaign_requests("t", "k", "flash_lights", [{"vin": vin_of(1), "account": "a"},
                                                       {"vin": vin_of(2)}])
    with pytest.raises(ValueError, match="at most 100000"):
        C.campaign_requests("t", "k", "flash_lights", [vin_of(i) for i in range(100001)],
                            account="a")
    with pytest.raises(ValueError, match="rate"):
        C.campaign_requests("t", "k", "flash_lights", [vin_of(1)], account="a", rate=0)
    with pytest.raises(ValueError, match="max_failure_ratio"):
        C.campaign_requests("t", "k", "flash_lights", [vin_of(1)], account="a",
                            max_failure_ratio=1.5)
    with pytest.raises(ValueError, match="1..100 bytes"):
        C.campaign_requests("t", "k" * 101, "flash_lights", [vin_of(1)], account="a")
    with pytest.raises(ValueError, match="empty"):
        C.campaign_requests("t", "k", "flash_lights", [], account="a")


# ---- against fleetqd -------------------------------------------------------


def test_part_sending_resends_on_timeout_and_names_the_refused_part():
    """campaign_send, which both clients drive: a part that times out
    within its budget comes again, the same; a refusal names its part;
    dup is true only when every part was one."""
    from fleetq_client.errors import Timeout, error_for
    parts = C.campaign_requests("acme", "grid-1", "flash_lights",
                                [vin_of(i) for i in range(40)], account="a", part_bytes=300)
    assert len(parts) >= 3
    send = C.campaign_send(parts, 30.0, 1.0, 0)
    sent = [next(send)]
    sent.append(send.throw(Timeout("no answer", code="timeout")))
    assert sent[1][0] is sent[0][0] and 0 < sent[1][1] <= 30.0
    sent.append(send.send({"ok": True, "dup": True}))
    assert sent[2][0] is parts[1]
    with pytest.raises(Exception) as ei:
        send.throw(error_for({"ok": False, "error": "bad_request", "message": "no"}))
    assert ei.value.code == "bad_request" and ei.value.part == 2

    send = C.campaign_send(parts, 0.0, 1.0, 0)  # no budget: a timeout is final
    next(send)
    with pytest.raises(Timeout) as ei:
        send.throw(Timeout("no answer", code="timeout"))
    assert ei.value.part == 1

    send = C.campaign_send(parts, 30.0, 1.0, 0)
    req = next(send)
    for i in range(len(parts)):
        assert req[0] is parts[i]
        try:
            req = send.send({"ok": True, "id": "c-1", "dup": i != 1})
        except StopIteration as stop:
            last = stop.value
    assert last == {"ok": True, "id": "c-1", "dup": False, "parts": len(parts)}


def test_campaign_in_parts_runs_to_done(world, client):
    t = unique("camp")
    devs = [{"vin": v, "account": ACCOUNT} for v in VINS[:6]]
    # Parts of 300 bytes: two or three devices each, so the parts path runs.
    r = client.campaign(t, "flash-1", "flash_lights", devs, ttl_ms=60000, part_bytes=300)
    assert r["ok"] and r["dup"] is False and r["devices"] == 6
    assert r["parts"] >= 2 and r.get("parts_received", r["parts"]) == r["parts"]
    assert isinstance(r["id"], str) and r["id"]
    seen = []
    w = client.watch_campaign(id=r["id"])
    for ev in w:
        assert ev["id"] == r["id"]
        seen.append(ev)
    w.close()
    assert w.final is seen[-1] and seen[-1]["state"] == "done"
    assert seen[-1]["succeeded"] == 6 and seen[-1]["failed"] == 0
    g = client.campaign_get(tenant=t, key="flash-1")
    assert g["id"] == r["id"] and g["state"] == "done" and g["devices"] == 6
    assert g["counts"] == {"succeeded": 6} and g["finished_at"] >= g["started_at"] > 0
    # Each device got an ordinary command with the key <key>/<vin>.
    for v in VINS[:6]:
        d = client.get(tenant=t, key=f"flash-1/{v}")
        assert d["state"] == "succeeded" and d["vin"] == v and d["command"] == "flash_lights"
    # The same campaign again: every part a duplicate.
    r2 = client.campaign(t, "flash-1", "flash_lights", devs, ttl_ms=60000, part_bytes=300)
    assert r2["dup"] is True and r2["id"] == r["id"] and r2["devices"] == 6
    # A callback instead of the iterator: a done campaign ends at once.
    got = []
    client.watch_campaign(tenant=t, key="flash-1", callback=got.append)
    assert got and got[-1]["state"] == "done" and got[-1]["final"] is True
    with pytest.raises(NotFound):
        client.campaign_get(tenant=t, key="no-such-campaign")


def test_abort_cancels_the_scheduled_devices(world, client):
    t = unique("camp")
    at = int(time.time() * 1000) + 600000
    r = client.campaign(t, "later", "door_lock", VINS[:4], account=ACCOUNT, not_before=at)
    assert r["devices"] == 4 and r["state"] == "scheduled"
    g = client.campaign_get(id=r["id"])
    assert g["not_before"] == at and g["counts"] == {"scheduled": 4}
    a = client.campaign_abort(id=r["id"])
    assert a["state"] == "aborted" and a["cancelled"] == 4 and a["reason"] == "aborted by request"
    g = client.campaign_get(id=r["id"])
    assert g["state"] == "aborted" and g["counts"] == {"cancelled": 4}
    assert g["reason"] == "aborted by request" and g["failed"] == 0
    assert client.get(tenant=t, key=f"later/{VINS[0]}")["state"] == "cancelled"
    assert client.campaign_abort(tenant=t, key="later")["cancelled"] == 0
    evs = list(client.watch_campaign(id=r["id"]))
    assert evs[-1]["state"] == "aborted" and evs[-1]["final"] is True


def test_aio_campaign(world):
    async def main():
        async with fleetq_client.aio.Client(world.daemon.endpoint, publish=world.daemon.publish,
                                            timeout=5) as c:
            t = unique("acamp")
            r = await c.campaign(t, "k1", "flash_lights", VINS[6:8], account=ACCOUNT,
                                 part_bytes=160)
            assert r["devices"] == 2 and r["parts"] == 2
            evs = [ev async for ev in c.watch_campaign(id=r["id"])]
            assert evs[-1]["state"] == "done" and evs[-1]["succeeded"] == 2
            g = await c.campaign_get(tenant=t, key="k1")
            assert g["state"] == "done" and g["id"] == r["id"]
            at = int(time.time() * 1000) + 600000
            r = await c.campaign(t, "k2", "door_lock", VINS[6:8], account=ACCOUNT, not_before=at)
            a = await c.campaign_abort(id=r["id"])
            assert a["cancelled"] == 2
    asyncio.run(main())


def test_parts_are_sent_again_while_fleetqd_does_not_answer(world):
    """fleetqd frozen for 1.5 s: each try of the first part times out
    (0.5 s, one retry), campaign() keeps sending it again within its
    `timeout` (safe: dup), and the campaign is complete once fleetqd runs."""
    import os
    import signal
    import threading
    t = unique("camp")
    pid = world.daemon.proc.pid
    c = fleetq_client.Client(world.daemon.endpoint, publish=world.daemon.publish, timeout=0.5,
                             retries=1)
    os.kill(pid, signal.SIGSTOP)
    th = threading.Timer(1.5, os.kill, (pid, signal.SIGCONT))
    th.start()
    try:
        at = int(time.time() * 1000) + 600000
        r = c.campaign(t, "frozen", "door_lock", VINS[:5], account=ACCOUNT, not_before=at,
                       part_bytes=300, timeout=20)
    finally:
        th.join()
        os.kill(pid, signal.SIGCONT)
    assert r["devices"] == 5 and r["parts"] >= 2
    c.timeout = 5
    g = c.campaign_get(id=r["id"])
    assert g["counts"] == {"scheduled": 5} and g["parts_received"] == g["parts"] == r["parts"]
    c.campaign_abort(id=r["id"])
    c.close()
