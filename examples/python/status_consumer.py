#!/usr/bin/env python3
"""A status consumer that never loses or repeats an event.

    status_consumer.py --tenant acme [--cursor-file acme.cursor] [--count N]

Prints one line per status event of the tenant.  fleetqd may restart and
the subscriber may fall behind: the watch notices the gap in the tenant's
per-shard sequence (tseq) and fetches what it missed from history, and it
drops the live copy of anything it already printed.  With --cursor-file
the position is saved after each event, so the consumer itself can be
stopped and started again without losing or repeating anything either."""

import argparse
import json
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "clients", "python"))
from fleetq_client import Client  # noqa: E402


def load(path):
    try:
        with open(path) as f:
            return {int(k): v for k, v in json.load(f).items()}
    except FileNotFoundError:
        return None


def save(path, cursor):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cursor, f)
    os.replace(tmp, path)  # never a half-written cursor


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    ap.add_argument("--publish")
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--cursor-file")
    ap.add_argument("--count", type=int, default=0, help="stop after N events (0: never)")
    ap.add_argument("--json", action="store_true", help="print events as JSON lines")
    a = ap.parse_args()
    cursor = load(a.cursor_file) if a.cursor_file else None
    n = 0
    # Ctrl-C / SIGTERM end the loop between two events, never between
    # printing one and saving the cursor past it.
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    with Client(a.endpoint, publish=a.publish) as c, \
            c.watch(tenant=a.tenant, cursor=cursor) as watch:
        # From here on nothing is missed: the start points are fixed and
        # whatever is published after them is received or fetched.
        print(f"watching {a.tenant} from {watch.cursor}", file=sys.stderr, flush=True)
        while not stopping:
            ev = watch.get(timeout=0.5)
            if ev is None:
                continue
            if a.json:
                print(json.dumps(ev), flush=True)
            else:
                dev = ev.get("vin") or ev.get("site")
                print(f"{ev['shard']}/{ev['tseq']} {dev} {ev['command']} "
                      f"{ev['prev'] or '-'} -> {ev['state']} {ev['reason']}".rstrip(), flush=True)
            if a.cursor_file:
                save(a.cursor_file, watch.cursor)
            n += 1
            if a.count and n >= a.count:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
