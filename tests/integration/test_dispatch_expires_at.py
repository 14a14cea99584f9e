"""Signing at dispatch time with `expires_at` never past the command's
deadline.  The relay keeps the bodies: from the handshake reply we take the
car's clock (SessionInfo.clock_time, decoded with the spec-only client in
vcp_client.py), from each signed command its HMAC_Personalized_data
expires_at.  A command with a long deadline gets the default lifetime
(about 5 s of car time ahead); one whose deadline is 2 s away gets an
expiry no later than its deadline in car time."""
import base64
import json

from lib import dispatch as dl
from lib import vcp_client as vc

V = dl.vin(140)


def signed(recs):
    """(record, decoded RoutableMessage request, decoded reply) per
    signed_command that got an answer."""
    out = []
    for r in recs:
        if not r["path"].endswith("/signed_command") or r["status"] != 200:
            continue
        req = vc.decode_routable(base64.b64decode(json.loads(r["req"])["routable_message"]))
        rep = vc.decode_routable(base64.b64decode(json.loads(r["resp"])["response"]))
        out.append((r, req, rep))
    return out


def expires_at(req):
    sd = vc.decode(req["raw"][13][-1])
    hm = vc.decode(sd[8][-1])
    return vc.first(hm, 3)


def body(c, w):
    w.tap.keep_bodies = True
    a = w.submit("ex-long", "set_charge_limit", V, params={"percent": 61})
    c.ok(w.wait_terminal(a, 20), "long: terminal", w.states(a))
    w.check_final(c, a, "succeeded", error=None)
    # Keep the next one's deadline close: 2 s.
    m = w.tap.mark()
    b = w.submit("ex-short", "set_charge_limit", V, params={"percent": 62}, ttl_ms=2000)
    c.ok(w.wait_terminal(b, 20), "short: terminal", w.states(b))
    w.check_final(c, b, "succeeded", error=None)
    deadline_b = w.get(b)["deadline"] / 1000.0
    recs = signed(w.tap.records())
    hs = [(r, rep) for r, req, rep in recs if rep["session_info"] and req["payload"] is None]
    if not c.ok(hs, "a handshake went through the relay", [x[0]["path"] for x in recs]):
        return
    info = vc.decode_session_info(hs[0][1]["session_info"])
    offset = hs[0][0]["wall"] - info["clock_time"]  # wall - car clock, within the RTT
    cmds = [(r, req) for r, req, rep in recs if req["payload"] is not None]
    c.eq(len(cmds), 2, "two signed commands", [x[0]["path"] for x in cmds])
    if len(cmds) != 2:
        return
    (ra, qa), (rb, qb) = cmds
    car_now_a = ra["t"] - hs[0][0]["t"] + info["clock_time"]
    life_a = expires_at(qa) - car_now_a
    c.ok(3 <= life_a <= 7, "long deadline: about the default 5 s lifetime", life_a)
    car_deadline_b = deadline_b - offset
    c.ok(expires_at(qb) <= car_deadline_b + 1, "short deadline: expiry not past the deadline",
         f"expires_at {expires_at(qb)}, deadline in car time {car_deadline_b:.2f}")
    c.ok(expires_at(qb) > rb["wall"] - offset - 1, "short deadline: expiry still ahead",
         f"expires_at {expires_at(qb)}, sent at car time {rb['wall'] - offset:.2f}")
    c.eq(len([1 for r in w.tap.records(m) if r["path"].endswith("/signed_command")]), 1,
         "short one: one request")
    w.check_execs(c, ["set_charge_limit", "set_charge_limit"], V)
    w.check_seq(c)


dl.run("test_dispatch_expires_at", body, vehicles=[dl.default_vehicle(V)])
