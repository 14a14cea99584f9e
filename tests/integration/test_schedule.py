#!/usr/bin/python3
"""Issue 16, scheduled commands (--no-dispatch: the queue is what is
checked, nothing is sent): a submit with `not_before` ahead is acked
`scheduled`, enters its device's queue (`queued`) at its time and behind
a command submitted after it; its deadline counts from not_before;
cancel works while scheduled; a restart before the time keeps it
scheduled, one spanning the time releases it at once, one long after
its deadline ends it `expired`; dedupe includes not_before; bad values
are refused; 1,500 due at the same millisecond are all released."""

import re
import time
import urllib.request

from lib import fqlib
from lib.fqlib import Client, Daemon, Sub, vin

T = "sch"


def now_ms():
    return int(time.time() * 1000)


def cmd(cl, id_):
    return cl.get(id_).get("command", {})


def wait_state(cl, id_, state, timeout):
    return fqlib.wait_for(lambda: cmd(cl, id_).get("state") == state, timeout)


def main(c):
    with Daemon(shards=2, extra=["--no-dispatch"], accounts=["acct1"]) as d:
        cl = Client(d.endpoint)
        sub = Sub(d.publish, [f"{T}/"])

        # -- scheduled -> queued at its time -------------------------------
        nb = now_ms() + 1500
        r = cl.submit(T, "s-1", vin_=vin(1), command="door_lock", not_before=nb, ttl_ms=30000,
                      req="r1")
        sid = r.get("id")
        c.eq((r.get("ok"), r.get("state"), r.get("dup"), r.get("req")),
             (True, "scheduled", False, "r1"), "submit with not_before ahead: acked scheduled")
        g = cmd(cl, sid)
        c.eq((g.get("state"), g.get("not_before"), g.get("deadline")),
             ("scheduled", nb, nb + 30000), "get: scheduled, not_before, deadline from not_before")
        ev = sub.collect(timeout=3, until=lambda e: e.get("id") == sid and e.get("state") == "queued")
        mine = [e for _, e in ev if e.get("id") == sid]
        c.eq([(e.get("prev"), e.get("state")) for e in mine],
             [(None, "scheduled"), ("scheduled", "queued")], "events: scheduled, then queued", mine)
        if len(mine) == 2:
            late = mine[1]["at"] - nb
            c.ok(0 <= late <= 600, f"queued at its time (+{late} ms, at most 600)", mine[1])
        g = cmd(cl, sid)
        c.eq([t.get("state") for t in g.get("transitions", [])], ["scheduled", "queued"],
             "transitions scheduled -> queued")

        # -- a later command for the same device is not held behind it ------
        nb = now_ms() + 1200
        a = cl.submit(T, "o-a", vin_=vin(2), command="flash_lights", not_before=nb).get("id")
        b = cl.submit(T, "o-b", vin_=vin(2), command="honk_horn")
        c.eq((b.get("ok"), b.get("state")), (True, "queued"), "later plain submit: queued at once")
        c.ok(wait_state(cl, a, "queued", 3), "scheduled one queued at its time")
        qa, qb = cmd(cl, a).get("queue_seq"), cmd(cl, b.get("id")).get("queue_seq")
        c.ok(isinstance(qa, int) and isinstance(qb, int) and qa > qb,
             "released command is behind the later plain one in the device queue", qa, qb)

        # -- ttl counts from not_before -------------------------------------
        t0 = now_ms()
        e = cl.submit(T, "t-1", vin_=vin(3), command="honk_horn", not_before=t0 + 1000,
                      ttl_ms=1500).get("id")
        time.sleep(max(0, (t0 + 2000 - now_ms()) / 1000))
        c.eq(cmd(cl, e).get("state"), "queued",
             "2 s after submit: still queued (ttl 1.5 s counts from not_before)")
        c.ok(wait_state(cl, e, "expired", 3), "expired after not_before + ttl")
        g = cmd(cl, e)
        c.ok(g.get("updated", 0) >= t0 + 2500, "expired no earlier than not_before + ttl",
             g.get("updated"), t0 + 2500)

        # -- cancel while scheduled ------------------------------------------
        nb = now_ms() + 1000
        x = cl.submit(T, "c-1", vin_=vin(4), command="door_unlock", not_before=nb).get("id")
        cc = cl.call({"op": "cancel", "id": x})
        c.eq((cc.get("ok"), cc.get("command", {}).get("state")), (True, "cancelled"),
             "cancel while scheduled")
        time.sleep(max(0, (nb + 700 - now_ms()) / 1000))
        g = cmd(cl, x)
        c.eq([t.get("state") for t in g.get("transitions", [])], ["scheduled", "cancelled"],
             "cancelled: never queued after its time")
        again = cl.cancel(x)
        c.eq((again.get("ok"), again.get("error")), (False, "not_cancellable"), "cancel again")

        # -- dedupe -------------------------------------------------------
        nb = now_ms() + 60000
        d1 = cl.submit(T, "d-1", vin_=vin(5), command="door_lock", not_before=nb)
        d2 = cl.submit(T, "d-1", vin_=vin(5), command="door_lock", not_before=nb)
        c.eq((d2.get("ok"), d2.get("id"), d2.get("dup"), d2.get("state")),
             (True, d1.get("id"), True, "scheduled"), "same key and body: dup, scheduled")
        d3 = cl.submit(T, "d-1", vin_=vin(5), command="door_lock", not_before=nb + 1)
        c.eq((d3.get("ok"), d3.get("error")), (False, "idempotency_mismatch"),
             "same key, other not_before: idempotency_mismatch")
        d4 = cl.submit(T, "d-1", vin_=vin(5), command="door_lock")
        c.eq((d4.get("ok"), d4.get("error")), (False, "idempotency_mismatch"),
             "same key, without not_before: idempotency_mismatch")
        p1 = cl.submit(T, "d-2", vin_=vin(5), command="door_lock")
        p2 = cl.submit(T, "d-2", vin_=vin(5), command="door_lock", not_before=None)
        c.eq((p2.get("ok"), p2.get("dup")), (True, True), "not_before nil = absent: dup", p1, p2)

        # -- bad values -----------------------------------------------------
        for v, code, what in (("soon", "bad_request", "a string"),
                              (-5, "bad_request", "negative"),
                              (1.5e12, "bad_request", "a float"),
                              (now_ms() + 31 * 86400000, "bad_param", "31 days ahead")):
            br = cl.submit(T, f"b-{what}", vin_=vin(6), command="door_lock", not_before=v)
            c.eq((br.get("ok"), br.get("error")), (False, code), f"not_before {what}: {code}", br)
            c.ok("not_before" in (br.get("message") or ""), "message names not_before", br)
        ok30 = cl.submit(T, "b-29d", vin_=vin(6), command="door_lock",
                         not_before=now_ms() + 29 * 86400000)
        c.eq((ok30.get("ok"), ok30.get("state")), (True, "scheduled"), "29 days ahead: scheduled")
        past = cl.submit(T, "b-past", vin_=vin(6), command="door_lock", not_before=now_ms() - 5000,
                         ttl_ms=20000)
        c.eq((past.get("ok"), past.get("state")), (True, "queued"),
             "not_before in the past: queued as usual")
        g = cmd(cl, past.get("id"))
        c.ok(g.get("deadline", 0) >= g.get("created", 0) + 20000,
             "past not_before: deadline counts from now", g.get("created"), g.get("deadline"))

        # -- the CLI: fleetq send --not-before -------------------------------
        ep = ["--endpoint", d.endpoint]
        base = ["send", "--tenant", T, "--account", "acct1", "--vin", vin(11), "--command",
                "door_lock", *ep]
        t0 = now_ms()
        r = fqlib.cli(*base, "--key", "cli-rel", "--not-before", "+90s")
        c.ok(r.returncode == 0 and r.stdout.startswith("accepted ") and
             r.stdout.split()[-1] == "scheduled", "send --not-before +90s: scheduled", r)
        g = cmd(cl, r.stdout.split()[1]) if r.returncode == 0 else {}
        c.ok(t0 + 90000 <= g.get("not_before", 0) <= now_ms() + 90000,
             "+90s is 90 s from now", g.get("not_before"), t0)
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 // 1000 + 3600))
        for form, want in ((when + "Z", (t0 // 1000 + 3600) * 1000),
                           (when + ".250+00:00", (t0 // 1000 + 3600) * 1000 + 250),
                           (str(t0 + 7200000), t0 + 7200000)):
            r = fqlib.cli(*base, "--key", f"cli-{form}", "--not-before", form)
            g = cmd(cl, r.stdout.split()[1]) if r.returncode == 0 else {}
            c.eq((r.returncode, g.get("state"), g.get("not_before")), (0, "scheduled", want),
                 f"send --not-before {form}", r)
        for bad in ("+5x", "tomorrow", "+", "2026-13-01T00:00:00Z", "-5"):
            r = fqlib.cli(*base, "--key", "cli-bad", "--not-before", bad)
            c.ok(r.returncode == 2 and "--not-before" in r.stderr, f"--not-before {bad}: exit 2",
                 r)
        r = fqlib.cli(*base, "--key", "cli-far", "--not-before", "+40d")
        c.ok(r.returncode == 1 and "bad_param" in r.stderr and "not_before" in r.stderr,
             "--not-before +40d: the daemon's bad_param, exit 1", r)

        # -- many due at once -----------------------------------------------
        nb = now_ms() + 2500
        reqs = [{"op": "submit", "tenant": T, "key": f"m-{i}", "account": "acct1",
                 "vin": vin(100 + i % 300), "command": "flash_lights", "not_before": nb}
                for i in range(1500)]
        replies, order = fqlib.pipeline(cl, reqs)
        many = [replies[q].get("id") for q in order]
        c.eq(sum(1 for q in order if replies[q].get("state") == "scheduled"), 1500,
             "1500 scheduled for the same ms")
        c.ok(nb - now_ms() > 200, "submitted before their time", nb - now_ms())
        fqlib.wait_for(lambda: False, max(0, (nb - now_ms()) / 1000) + 1.5)
        states = {}
        for i in many[::50] + many[-3:]:
            s = cmd(cl, i).get("state")
            states[s] = states.get(s, 0) + 1
        c.eq(list(states), ["queued"], "all released (sampled)", states)
        c.ok(d.alive(), "daemon alive")

        # -- restarts --------------------------------------------------------
        base = now_ms()
        before = cl.submit(T, "r-before", vin_=vin(7), command="door_lock",
                           not_before=base + 6000).get("id")
        span = cl.submit(T, "r-span", vin_=vin(8), command="door_lock", not_before=base + 1500,
                         ttl_ms=60000).get("id")
        gone = cl.submit(T, "r-gone", vin_=vin(9), command="door_lock", not_before=base + 1000,
                         ttl_ms=1000).get("id")
        sub.close()
        cl.close()
        d.kill9()
        time.sleep(max(0, (base + 3000 - now_ms()) / 1000))
        d.start()
        started = now_ms()
        cl = Client(d.endpoint)
        c.ok(wait_state(cl, span, "queued", 2),
             "restart spanning its time: queued at once after start")
        g = cmd(cl, span)
        c.ok(g.get("updated", 0) - started < 1500, "released within 1.5 s of start",
             g.get("updated"), started)
        c.ok("not running" in g.get("reason", ""), "reason says it was late", g.get("reason"))
        g = cmd(cl, gone)
        c.eq((g.get("state"), g.get("error")), ("expired", "expired"),
             "restart after not_before + ttl: expired")
        c.ok("deadline passed" in g.get("reason", ""), "expired reason", g.get("reason"))
        c.eq(cmd(cl, before).get("state"), "scheduled", "restart before its time: still scheduled")
        c.eq(cmd(cl, ok30.get("id")).get("state"), "scheduled", "29-day one still scheduled")
        c.eq(cmd(cl, sid).get("state"), "queued", "released one still queued")
        c.ok(wait_state(cl, before, "queued", 5), "released at its time after the restart")
        g = cmd(cl, before)
        c.ok(base + 6000 <= g.get("updated", 0) <= base + 6800, "at its time",
             g.get("updated", 0) - base - 6000)
        # The queue order survived the restart: the released one is behind.
        c.ok(cmd(cl, a).get("queue_seq", 0) > cmd(cl, b.get("id")).get("queue_seq", 0),
             "queue position of a released command kept across the restart")
        cl.close()

    # -- retention never removes a scheduled command ---------------------
    mport = fqlib.free_port()

    def scheduled_gauge():
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
            m = re.search(r'^fleetq_commands_scheduled\{shard="0"\} (\d+)$', r.read().decode(),
                          re.M)
        return int(m.group(1)) if m else None

    with Daemon(shards=1, extra=["--no-dispatch", "--retention-s", "1", "--dedupe-window-s", "1",
                                 "--metrics", f"127.0.0.1:{mport}"], accounts=["acct1"]) as d:
        cl = Client(d.endpoint)
        nb = now_ms() + 8000
        r = cl.submit(T, "ret-1", vin_=vin(12), command="door_lock", not_before=nb)
        rid = r.get("id")
        c.eq(r.get("state"), "scheduled", "scheduled under a 1 s retention")
        c.eq(scheduled_gauge(), 1, "fleetq_commands_scheduled counts it")
        # Terminal traffic after it, so that pruning has work and runs.
        xs = []
        for i in range(20):
            xs.append(cl.submit(T, f"ret-x-{i}", vin_=vin(13), command="door_lock").get("id"))
            cl.cancel(xs[-1])
        time.sleep(2.5)
        c.ok(fqlib.wait_for(lambda: cl.get(xs[0]).get("error") == "not_found", 3),
             "retention ran: a cancelled command of the same time is gone")
        g = cmd(cl, rid)
        c.ok(now_ms() < nb, "checked before its time", nb - now_ms())
        c.eq(g.get("state"), "scheduled", "past the retention: still stored, scheduled", g)
        c.ok(wait_state(cl, rid, "queued", 8), "released at its time despite the retention")
        c.eq(scheduled_gauge(), 0, "fleetq_commands_scheduled: 0 once released")
        cl.close()


fqlib.run_test("schedule", main)
