"""Both clients over CURVE against a fleetqd with a clients file: a
tenant's service submits, waits and watches; another tenant is forbidden;
the admin key manages accounts; a plaintext client and a key file that
others may read are refused."""

import asyncio
import os
import time

import pytest

from conftest import ACCOUNT, VINS, fleetq_client
from fleetq_client import Forbidden, aio


def test_curve_submit_wait_watch(curve_world):
    cw = curve_world
    with cw.client("acme", timeout=5) as c:
        assert c.ping()["ok"]
        watch = c.watch(tenant="acme", idle=0.3)
        r = c.submit("acme", "curve-1", ACCOUNT, "door_unlock", vin=VINS[0], wait=True,
                     timeout=30)
        assert r["event"]["state"] == "succeeded"
        got = []
        while (ev := watch.get(timeout=2.0)) is not None:
            got.append(ev)
        assert [e["state"] for e in got][0] == "queued" and got[-1] == r["event"]
        assert all(e["id"] == r["id"] for e in got)
        watch.close()
        with pytest.raises(Forbidden) as ei:
            c.submit("globex", "g-1", ACCOUNT, "door_lock", vin=VINS[0])
        assert "globex" in ei.value.message
        with pytest.raises(Forbidden):
            c.account_list()


def test_curve_admin_and_aio(curve_world):
    cw = curve_world
    with cw.client("ops") as ops:
        assert [a["id"] for a in ops.account_list()] == [ACCOUNT]

    async def main():
        async with aio.Client(cw.endpoint, cw.key_files["globex"], cw.server_pub,
                              publish=cw.publish, timeout=5) as c:
            r = await c.submit("globex", "g-2", ACCOUNT, "door_lock", vin=VINS[1], wait=True,
                               timeout=30)
            assert r["event"]["state"] == "succeeded" and r["event"]["tenant"] == "globex"

    asyncio.run(main())


def test_curve_refusals(curve_world, tmp_path, monkeypatch):
    cw = curve_world
    plain = fleetq_client.Client(cw.endpoint, timeout=0.5, retries=0)
    h = plain.health(timeout=0.5)
    assert h["ok"] is False and h["error"] == "timeout"
    plain.close()
    loose = tmp_path / "loose.key"
    loose.write_text(open(cw.key_files["acme"]).read())
    os.chmod(loose, 0o644)
    with pytest.raises(PermissionError):
        fleetq_client.Client(cw.endpoint, str(loose), cw.server_pub)
    with pytest.raises(ValueError):
        fleetq_client.Client(cw.endpoint, cw.key_files["acme"], None)
    # The environment of the CLI works too.
    monkeypatch.setenv("FLEETQ_CURVE_KEY", cw.key_files["acme"])
    monkeypatch.setenv("FLEETQ_SERVER_KEY", cw.server_pub)
    with fleetq_client.Client(cw.endpoint, timeout=5) as c:
        assert c.ping()["ok"]


def test_refused_key_fails_fast_never_hangs(curve_world, tmp_path):
    """A key fleetqd does not list gets no session; libzmq then drops the
    connection, and a DEALER without one would block in send forever.  Every
    call must end in Timeout instead, in both clients."""
    cw = curve_world
    pub, sec = (k.decode() for k in fleetq_client_zmq().curve_keypair())
    kf = tmp_path / "stranger.key"
    fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"public {pub}\nsecret {sec}\n")
    t0 = time.monotonic()
    with fleetq_client.Client(cw.endpoint, str(kf), cw.server_pub, timeout=0.5,
                              retries=0) as c:
        for i in range(6):
            with pytest.raises(fleetq_client.Timeout):
                c.submit("acme", f"stranger-{i}", ACCOUNT, "door_lock", vin=VINS[0])
            time.sleep(0.2)
    assert time.monotonic() - t0 < 15

    async def aio_part():
        async with aio.Client(cw.endpoint, str(kf), cw.server_pub, timeout=0.5,
                              retries=0) as ac:
            for i in range(6):
                with pytest.raises(fleetq_client.Timeout):
                    await asyncio.wait_for(
                        ac.submit("acme", f"stranger-a{i}", ACCOUNT, "door_lock", vin=VINS[0]),
                        10)
                await asyncio.sleep(0.2)
    asyncio.run(aio_part())


def fleetq_client_zmq():
    import zmq
    return zmq
