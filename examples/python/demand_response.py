#!/usr/bin/env python3
"""Demand response: set the charging current of a list of cars at once
and print what happened to each.

    demand_response.py --tenant grid --account fleet-ops --amps 8 VIN [VIN ...]
    demand_response.py --tenant grid --account fleet-ops --amps 8 --vins-file cars.txt

Every car gets set_charging_amps with coalesce (a newer set-point replaces
one still queued) and an event id in its key, so re-running the same
event (--event) never sends a car the same command twice.  All commands
are in flight at once on one connection (the asyncio client)."""

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "clients", "python"))
from fleetq_client import FleetqError  # noqa: E402
from fleetq_client import aio  # noqa: E402


async def one(c, a, vin):
    try:
        r = await c.submit(a.tenant, f"{a.event}/{vin}", a.account, "set_charging_amps", vin=vin,
                           params={"charging_amps": a.amps}, coalesce=True, ttl_ms=a.ttl_ms,
                           wait=True)
        return vin, r["event"]["state"], r["event"]["reason"]
    except FleetqError as e:
        return vin, f"refused ({e.code})", e.message


async def run(a, vins):
    t0 = time.monotonic()
    async with aio.Client(a.endpoint, publish=a.publish) as c:
        results = await asyncio.gather(*(one(c, a, v) for v in vins))
    width = max(len(v) for v in vins)
    for vin, state, reason in results:
        print(f"{vin:<{width}}  {state:<12} {reason}")
    ok = sum(1 for _, s, _ in results if s == "succeeded")
    print(f"\n{ok} of {len(vins)} cars set to {a.amps} A in {time.monotonic() - t0:.1f} s")
    return 0 if ok == len(vins) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    ap.add_argument("--publish")
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--account", required=True)
    ap.add_argument("--amps", type=int, required=True)
    ap.add_argument("--event", default=time.strftime("dr-%Y%m%dT%H%M"),
                    help="demand-response event id, part of each idempotency key")
    ap.add_argument("--ttl-ms", type=int, default=300000)
    ap.add_argument("--vins-file")
    ap.add_argument("vins", nargs="*")
    a = ap.parse_args()
    vins = list(a.vins)
    if a.vins_file:
        with open(a.vins_file) as f:
            vins += [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if not vins:
        ap.error("no cars given")
    return asyncio.run(run(a, vins))


if __name__ == "__main__":
    sys.exit(main())
