#!/usr/bin/env python3
"""Submit one command and wait for its outcome.

    submit_and_wait.py --tenant acme --account fleet-ops --vin 5YJ3E1EA7KF000001 \\
        --command set_charge_limit --params '{"percent": 80}' [--key order-1234]

Prints the reply, then the terminal event; exits 0 only if the command
succeeded.  Run it twice with the same --key: the second run is a
duplicate of the first (nothing is sent to the car again)."""

import argparse
import json
import os
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "clients", "python"))
from fleetq_client import Client, FleetqError  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    ap.add_argument("--publish", help="status endpoint (default: endpoint port + 1)")
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--account", required=True)
    ap.add_argument("--vin")
    ap.add_argument("--site")
    ap.add_argument("--command", required=True)
    ap.add_argument("--params", default="{}", help="JSON object")
    ap.add_argument("--key", help="idempotency key (default: a new UUID)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds to wait in all")
    a = ap.parse_args()
    with Client(a.endpoint, publish=a.publish) as c:
        try:
            r = c.submit(a.tenant, a.key or str(uuid.uuid4()), a.account, a.command,
                         vin=a.vin, site=a.site, params=json.loads(a.params), wait=True,
                         timeout=a.timeout)
        except FleetqError as e:
            print(f"refused: {e.code}: {e.message}", file=sys.stderr)
            return 2
        ev = r.pop("event")
        print(f"{'duplicate of' if r['dup'] else 'accepted'} {r['id']}")
        print(f"{ev['state']}" + (f": {ev['reason']}" if ev["reason"] else ""))
        return 0 if ev["state"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
