#!/usr/bin/env python3
"""The per-commit breakdown of a fleetqd between two scrapes of its metrics.

    batch_stats.py snap URL FILE          # save GET URL (fleetqd --metrics) to FILE
    batch_stats.py diff BEFORE AFTER [REPLAY_JSON]
                                          # one JSON object: what happened in between

The shards count every group commit (fleetq_batch_requests,
fleetq_batch_process_seconds, fleetq_batch_commit_seconds) and the wall
time they spend in batches (fleetq_shard_busy_seconds_total).  Between two
scrapes that gives, for the load that ran in between: batches, the mean
batch size, the mean processing and commit (LMDB page writes + 2 fdatasync)
times, the commit time's p50/p99 (from the histogram buckets, the bucket's
upper bound), each shard's utilization (busy / elapsed), and the server's
own ack latency (fleetq_ack_seconds: shard receipt -> ack sent), to be set
next to the client's.  perf/run-all.sh prints it per offered rate.
With REPLAY_JSON (fleetq-replay run --json of the load that ran in
between) the rates and utilizations are per second of its sending
(duration_s) rather than of the time between the scrapes, which also
holds the replay's start and its wait for the last replies.
"""
import json
import re
import sys
import time
import urllib.request

LINE = re.compile(r'^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+|\+Inf|NaN)$')


def parse(text):
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def snap(url, path):
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read().decode()
    with open(path, "w") as f:
        f.write(f"# at {time.time():.6f}\n")
        f.write(body)


def load(path):
    text = open(path).read()
    at = float(re.match(r"# at ([0-9.]+)", text).group(1))
    return at, parse(text)


def hist(d0, d1, name):
    """Bucket deltas [(upper bound, count)], count, sum."""
    buckets = []
    for (n, lab), v in d1.items():
        if n == name + "_bucket":
            le = re.search(r'le="([^"]+)"', lab).group(1)
            buckets.append((float("inf") if le == "+Inf" else float(le), v - d0.get((n, lab), 0)))
    buckets.sort()
    cnt = d1.get((name + "_count", ""), 0) - d0.get((name + "_count", ""), 0)
    s = d1.get((name + "_sum", ""), 0) - d0.get((name + "_sum", ""), 0)
    return buckets, cnt, s


def quantile(buckets, cnt, q):
    if cnt <= 0:
        return None
    for le, c in buckets:  # cumulative counts
        if c >= q * cnt:
            return le
    return None


def diff(a, b, replay=None):
    t0, d0 = load(a)
    t1, d1 = load(b)
    el = t1 - t0
    if replay:
        try:
            el = float(json.load(open(replay))["duration_s"]) or el
        except (OSError, ValueError, KeyError):
            pass
    bs, nb, sreq = hist(d0, d1, "fleetq_batch_requests")
    pb, _, sproc = hist(d0, d1, "fleetq_batch_process_seconds")
    cb, _, scom = hist(d0, d1, "fleetq_batch_commit_seconds")
    ab, na, _ = hist(d0, d1, "fleetq_ack_seconds")
    busy = {}
    for (n, lab), v in d1.items():
        if n == "fleetq_shard_busy_seconds_total":
            sh = re.search(r'shard="(\d+)"', lab).group(1)
            busy[sh] = round((v - d0.get((n, lab), 0)) / el, 3) if el > 0 else None
    ms = lambda v: None if v is None or v == float("inf") else round(v * 1000, 3)
    out = {
        "seconds": round(el, 3),
        "batches": int(nb),
        "batches_per_s": round(nb / el, 1) if el > 0 else None,
        "mean_batch": round(sreq / nb, 1) if nb else None,
        "p99_batch": (lambda v: None if v is None or v == float("inf") else v)(
            quantile(bs, nb, 0.99)),
        "mean_process_ms": ms(sproc / nb) if nb else None,
        "mean_commit_ms": ms(scom / nb) if nb else None,
        "p50_commit_ms": ms(quantile(cb, nb, 0.5)),
        "p99_commit_ms": ms(quantile(cb, nb, 0.99)),
        "p99_process_ms": ms(quantile(pb, nb, 0.99)),
        "shard_busy": busy,
        "server_ack_p50_ms": ms(quantile(ab, na, 0.5)),
        "server_ack_p99_ms": ms(quantile(ab, na, 0.99)),
    }
    print(json.dumps(out))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "snap":
        snap(sys.argv[2], sys.argv[3])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "diff":
        diff(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
