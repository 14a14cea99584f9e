"""fleetq_client.aio against a real fleetqd + fleetsim: the same calls as
coroutines, concurrent calls pipelined on one socket, wait=True, errors
per code, and an async watch that yields each event exactly once although
its subscriber drops events."""

import asyncio
import time

import pytest

from conftest import ACCOUNT, BIG_SITE, VINS, dl, fleetq_client, unique
from fleetq_client import BadParam, NotFound
from fleetq_client import aio


def run(coro):
    return asyncio.run(coro)


def test_aio_calls(world):
    async def main():
        async with aio.Client(world.daemon.endpoint, publish=world.daemon.publish,
                              timeout=5) as c:
            assert (await c.ping())["shards"] == 2
            assert (await c.health())["ok"] is True
            hr = await c.health_report(stuck_ms=5000)
            assert hr["ok"] is True and hr["stuck_ms"] == 5000 and len(hr["shards"]) == 2
            t = unique("aio")
            r = await c.submit(t, "w1", ACCOUNT, "set_sentry_mode", vin=VINS[4],
                               params={"on": 1}, wait=True, timeout=30)
            assert r["event"]["state"] == "succeeded" and r["event"]["id"] == r["id"]
            g = await c.get(tenant=t, key="w1")
            assert g["id"] == r["id"] and g["params"] == {"on": True}
            h = await c.history(r["event"]["shard"], tenant=t)
            assert h["events"][-1] == r["event"]
            s = await c.submit(t, "s1", ACCOUNT, "backup", site=BIG_SITE,
                               params={"backup_reserve_percent": 10})
            assert (await c.get(id=s["id"]))["site"] == BIG_SITE
            with pytest.raises(BadParam):
                await c.submit(t, "bad", ACCOUNT, "set_charge_limit", vin=VINS[4],
                               params={"percent": 10})
            with pytest.raises(NotFound):
                await c.cancel(id="00ffffffffffffff")
            assert [a["id"] for a in await c.account_list()] == [ACCOUNT]

    run(main())


def test_aio_concurrent_calls_pipeline(world):
    async def main():
        async with aio.Client(world.daemon.endpoint, timeout=10) as c:
            t = unique("aio-pipe")
            t0 = time.monotonic()
            rs = await asyncio.gather(*(
                c.submit(t, f"k{i}", ACCOUNT, "set_charge_limit", vin=VINS[i % len(VINS)],
                         params={"percent": 50 + i % 50}, ttl_ms=600000)
                for i in range(1000)))
            took = time.monotonic() - t0
            assert len({r["id"] for r in rs}) == 1000 and not any(r["dup"] for r in rs)
            gets = await asyncio.gather(*(c.get(tenant=t, key=f"k{i}") for i in range(1000)))
            assert [g["id"] for g in gets] == [r["id"] for r in rs]
            out = await c.submit_many([{"tenant": t, "key": f"k{i}", "account": ACCOUNT,
                                        "command": "set_charge_limit",
                                        "vin": VINS[i % len(VINS)],
                                        "params": {"percent": 50 + i % 50}, "ttl_ms": 600000}
                                       for i in range(1000)], window=200)
            assert [r["id"] for r in out] == [r["id"] for r in rs] and all(r["dup"] for r in out)
            print(f"1000 concurrent submits in {took * 1000:.0f} ms")

    run(main())


def test_aio_watch_exactly_once(world):
    async def main():
        async with aio.Client(world.daemon.endpoint, publish=world.daemon.publish,
                              timeout=5) as c:
            t = unique("aio-watch")
            watch = c.watch(tenant=t, rcvhwm=1, rcvbuf=4096, idle=0.3)
            await watch.start()
            cmds = [{"tenant": t, "key": f"k{i}", "account": ACCOUNT, "command": "door_lock",
                     "vin": VINS[i % len(VINS)]} for i in range(200)]
            ids = {r["id"] for r in await c.submit_many(cmds)}
            await asyncio.sleep(1.0)
            got, want = [], set(ids)
            end = time.monotonic() + 90
            while want and time.monotonic() < end:
                ev = await watch.get(timeout=1.0)
                if ev is not None:
                    got.append(ev)
                    if ev["state"] in fleetq_client.TERMINAL:
                        want.discard(ev["id"])
            while (ev := await watch.get(timeout=1.5)) is not None:
                got.append(ev)
            assert not want
            stored = []
            for sh in range(2):
                h = await c.history(sh, 0, 1000, tenant=t)
                stored += h["events"]
            pos = [(e["shard"], e["tseq"]) for e in got]
            assert len(pos) == len(set(pos))
            assert set(pos) == {(e["shard"], e["tseq"]) for e in stored}
            watch.close()

    run(main())
