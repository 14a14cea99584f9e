"""Client.watch against a real fleetqd: every event exactly once, in order
per shard, although the subscriber is made to lose events (a receive
high-water mark of 1 and a tiny kernel buffer behind a publisher with a
high-water mark of 20) and fleetqd is killed (-9) and restarted in the
middle; by tenant (tseq), over all tenants (seq), for one device, and
resumed from a cursor."""

import time

import pytest

from conftest import ACCOUNT, VINS, dl, fleetq_client, unique


def burst(c, tenant, n, start=0):
    cmds = [{"tenant": tenant, "key": f"k{i}", "account": ACCOUNT,
             "command": "set_charging_amps", "vin": VINS[i % len(VINS)],
             "params": {"charging_amps": i % 40}, "ttl_ms": 600000}
            for i in range(start, start + n)]
    return [r["id"] for r in c.submit_many(cmds)]


def consume(watch, ids, timeout=120):
    """Events until every id of `ids` had a terminal one."""
    want, got = set(ids), []
    end = time.monotonic() + timeout
    while want and time.monotonic() < end:
        ev = watch.get(timeout=1.0)
        if ev is None:
            continue
        got.append(ev)
        if ev["state"] in fleetq_client.TERMINAL:
            want.discard(ev["id"])
    assert not want, f"{len(want)} commands without a terminal event"
    return got


def stored(c, tenant=None, ranges=None):
    """Stored events: a tenant's on every shard, or each shard's (after,
    upto] of ranges {shard: (after, upto)}."""
    out = []
    shards = c.ping()["shards"]
    for sh in range(shards):
        if tenant is not None:
            out += list(c.iter_history(sh, 0, tenant))
        else:
            a, b = ranges.get(sh, (0, 0))
            out += [e for e in c.iter_history(sh, a) if e["seq"] <= b]
    return out


def check_exactly_once(got, want, key):
    pos = [(e["shard"], e[key]) for e in got]
    assert len(pos) == len(set(pos)), "an event was yielded twice"
    assert set(pos) == {(e["shard"], e[key]) for e in want}, "events missing or extra"
    for sh in {p[0] for p in pos}:
        mine = [p[1] for p in pos if p[0] == sh]
        assert mine == sorted(mine), f"shard {sh} out of order"
    # What was yielded is what is stored, field for field.
    by = {(e["shard"], e[key]): e for e in want}
    assert all(by[(e["shard"], e[key])] == e for e in got)


def test_watch_across_restart_with_forced_gaps():
    w = dl.World("py-watch-restart", vehicles=[dl.default_vehicle(v) for v in VINS], shards=2,
                 daemon_opts={"--pub-hwm": 20})
    try:
        c = fleetq_client.Client(w.daemon.endpoint, publish=w.daemon.publish, timeout=2)
        t = unique("watch")
        watch = c.watch(tenant=t, rcvhwm=1, rcvbuf=4096, idle=0.3)
        ids = burst(c, t, 300)
        time.sleep(1.5)  # nobody reads: the publisher and the SUB drop
        first = [watch.get(timeout=10) for _ in range(20)]
        assert all(first)
        w.daemon.kill9()
        w.daemon.start()
        ids += burst(c, t, 300, start=300)
        got = first + consume(watch, ids)
        # The last events may come after the last terminal one we waited for.
        while (ev := watch.get(timeout=1.5)) is not None:
            got.append(ev)
        want = stored(c, tenant=t)
        check_exactly_once(got, want, "tseq")
        assert watch.filled > 0, "the test lost nothing: it proves nothing"
        print(f"{len(got)} events, {watch.filled} from history, "
              f"{watch.core.skipped} live copies dropped")
        watch.close()
        c.close()
    finally:
        w.close()


@pytest.fixture(scope="module")
def gapworld():
    w = dl.World("py-watch", vehicles=[dl.default_vehicle(v) for v in VINS], shards=2,
                 daemon_opts={"--pub-hwm": 20})
    yield w
    w.close()


def test_watch_all_tenants_by_seq(gapworld):
    w = gapworld
    c = fleetq_client.Client(w.daemon.endpoint, publish=w.daemon.publish, timeout=5)
    watch = c.watch(rcvhwm=1, rcvbuf=4096, idle=0.3)
    start = watch.cursor
    ta, tb = unique("a"), unique("b")
    ids = burst(c, ta, 150) + burst(c, tb, 150)
    time.sleep(1.0)
    got = consume(watch, ids)
    while (ev := watch.get(timeout=1.5)) is not None:
        got.append(ev)
    end = watch.cursor
    want = stored(c, ranges={sh: (start[sh], end[sh]) for sh in end})
    check_exactly_once(got, want, "seq")
    assert {e["tenant"] for e in got} >= {ta, tb}
    assert watch.filled > 0
    watch.close()
    c.close()


def test_watch_one_device_and_resume_from_cursor(gapworld):
    w = gapworld
    c = fleetq_client.Client(w.daemon.endpoint, publish=w.daemon.publish, timeout=5)
    t = unique("dev")
    watch = c.watch(tenant=t, device=VINS[1], idle=0.3)
    ids = burst(c, t, 40)
    mine = [i for n, i in enumerate(ids) if n % len(VINS) == 1]
    got = consume(watch, mine)
    while (ev := watch.get(timeout=1.0)) is not None:
        got.append(ev)
    assert got and all(e["vin"] == VINS[1] and e["tenant"] == t for e in got)
    want = [e for e in stored(c, tenant=t) if e["vin"] == VINS[1]]
    check_exactly_once(got, want, "tseq")
    cursor = watch.cursor
    watch.close()
    # Later, a new watch resumes where that one stopped: only what came since.
    more = burst(c, t, 16, start=40)
    again = c.watch(tenant=t, cursor=cursor, idle=0.3)
    got2 = consume(again, more)
    while (ev := again.get(timeout=1.0)) is not None:
        got2.append(ev)
    after = [e for e in stored(c, tenant=t) if e["tseq"] > cursor.get(e["shard"], 0)]
    check_exactly_once(got2, after, "tseq")
    assert {e["id"] for e in got2} == set(more)
    again.close()
    c.close()
