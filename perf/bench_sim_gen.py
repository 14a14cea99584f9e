#!/usr/bin/env python3
"""Pre-sign benchmark traffic for fleetsim (perf/bench_sim.sh).

Handshakes with every car over HTTP keep-alive (a real INFOTAINMENT
session each, through the spec-only client tests/integration/lib/vcp_client.py)
and writes one signed_command body per line, "VIN<TAB>{json body}", in
rounds: round r holds counter session+r+1 of every car.  Counters only
increase, each is used once, so the simulator verifies every request fully
(tag, epoch, expiry, counter) with no replay allowance; a benchmark that
runs past the end of the file wraps around and those replays show up as
faults in /sim/stats, not as successes.

usage: bench_sim_gen.py BASE_URL TOKEN FLEET_KEY_PEM CARS ROUNDS OUT
"""
import base64
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from lib import vcp_client as vc  # noqa: E402

PAYLOADS = [vc.PAYLOADS["flash_lights"][1], vc.set_charge_limit(80)[1],
            vc.set_charging_amps(16)[1], vc.PAYLOADS["auto_conditioning_start"][1],
            vc.set_sentry_mode(True)[1]]


def main():
    base, token, keyfile, cars, rounds, out = sys.argv[1:7]
    cars, rounds = int(cars), int(rounds)
    with open(keyfile, "rb") as f:
        client = vc.Client(vc.load_private(f.read()))
    u = urllib.parse.urlparse(base)
    if u.scheme == "https":
        # Benchmark against a throwaway self-signed certificate.
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=30,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    hdr = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    sessions = []
    t0 = time.time()
    for i in range(cars):
        vin = "SMGEN%012d" % i
        msg, req = client.handshake_request(vc.DOMAIN_INFOTAINMENT)
        body = json.dumps({"routable_message": base64.b64encode(msg).decode()})
        conn.request("POST", "/api/1/vehicles/%s/signed_command" % vin, body, hdr)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            sys.exit("handshake %s: HTTP %d %s" % (vin, r.status, data[:200]))
        s, rr, si = client.handshake_finish(vin, base64.b64decode(json.loads(data)["response"]),
                                            req)
        if s is None:
            sys.exit("handshake %s refused: %r" % (vin, si))
        sessions.append(s)
    t1 = time.time()
    n = 0
    with open(out, "w") as f:
        for r in range(rounds):
            p = PAYLOADS[r % len(PAYLOADS)]
            for s in sessions:
                # An hour of lifetime: the run is far shorter, and expiry is
                # still checked on every request.
                msg, req = s.sign(client.pub, p, lifetime=3600)
                f.write("%s\t%s\n" % (s.vin, json.dumps(
                    {"routable_message": base64.b64encode(msg).decode()})))
                n += 1
    print("bench_sim_gen: %d handshakes in %.1fs, %d signed commands in %.1fs"
          % (cars, t1 - t0, n, time.time() - t1))


if __name__ == "__main__":
    main()
