"""fleetqd --metrics (issue 14, point 1): GET /metrics parsed with a real
Prometheus text parser (prometheus_client) after known traffic against
fleetsim, every value checked exactly:

* 4 commands that succeed (3 on an awake car, 1 on an asleep car that
  needs one wake_up), 1 that fails (key not paired), a duplicate submit
  and a refused one (bad_param): submits accepted 5, duplicate 1,
  bad_param 1; commands succeeded 4, failed 1; both histograms count 5;
* fleetq_fleet_api_requests_total{kind,code} equals what the recording
  relay in front of fleetsim saw, request by request, and its sum equals
  fleetsim's own request counter; wakeups 1 (fleetsim counted 1);
  billable requests per account and kind follow from those answers;
* events published equal the events the subscriber received; gauges back
  to 0; store bytes and map ratio of every shard plausible; build_info's
  version is `fleetqd --version`'s.

Then the edges: other paths 404, other methods 405; bad --metrics values
are usage errors (exit 2, message naming the value); a port in use is a
clear start-up error (exit 1); scrapers that stall (connections that
never finish their request, one that never reads) neither stop a normal
scrape nor slow submits down."""
import collections
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from lib import dispatch as dl
from lib import fqlib

V_AWAKE = dl.vin(141)
V_ASLEEP = dl.vin(142)
V_UNPAIRED = dl.vin(143)
PORT = fqlib.free_port()
URL = f"http://127.0.0.1:{PORT}/metrics"

NAMES = ["fleetq_submits_total", "fleetq_commands_total", "fleetq_commands_queued",
         "fleetq_commands_scheduled", "fleetq_campaigns",
         "fleetq_campaign_device_commands_total",
         "fleetq_commands_in_flight", "fleetq_ack_seconds", "fleetq_dispatch_seconds",
         "fleetq_fleet_api_requests_total", "fleetq_wakeups_total",
         "fleetq_billable_requests_total", "fleetq_token_refreshes_total", "fleetq_store_bytes",
         "fleetq_store_map_used_ratio", "fleetq_events_published_total", "fleetq_build_info"]


def scrape(url=URL, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def samples(text):
    """{(sample name, frozenset(labels)): value} and the family types."""
    out, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out, types


def val(smp, name, **labels):
    return smp.get((name, frozenset(labels.items())))


def by_label(smp, name, *keys):
    """{label values tuple: value} of every sample of name."""
    res = {}
    for (n, labels), v in smp.items():
        if n == name:
            d = dict(labels)
            res[tuple(d.get(k) for k in keys)] = v
    return res


def tap_kind(rec):
    """The metrics' kind of one request the relay saw."""
    p = rec["path"]
    if "/oauth2/" in p:
        return "token"
    if p.endswith("/signed_command"):
        return "signed_command"
    if "/command/" in p:
        return "command"
    if p.endswith("/wake_up"):
        return "wake_up"
    if p.endswith("/vehicles/fleet_status"):
        return "fleet_status"
    if "/energy_sites/" in p:
        return "energy"
    if rec["method"] == "GET" and re.search(r"/api/1/vehicles/\w+$", p):
        return "vehicle"
    return "other:" + p


def traffic(c, w):
    ids = [w.submit(f"m-{i}", "set_charge_limit", V_AWAKE, params={"percent": 60 + i})
           for i in range(3)]
    ids.append(w.submit("m-wake", "door_lock", V_ASLEEP))
    ids.append(w.submit("m-unpaired", "door_lock", V_UNPAIRED))
    dup = w.client.call({"op": "submit", "tenant": dl.TENANT, "key": "m-0", "account": "acct1",
                         "command": "set_charge_limit", "vin": V_AWAKE,
                         "params": {"percent": 60}})
    c.ok(dup.get("ok") and dup.get("id") == ids[0], "the same submit again: the original", dup)
    bad = w.client.call({"op": "submit", "tenant": dl.TENANT, "key": "m-bad", "account": "acct1",
                         "command": "set_charge_limit", "vin": V_AWAKE,
                         "params": {"percent": 200}})
    c.eq((bad.get("ok"), bad.get("error")), (False, "bad_param"), "percent 200 refused", bad)
    c.ok(w.wait_terminal(ids, 45), "all terminal", [w.states(i) for i in ids])
    finals = [w.final(i)["state"] for i in ids]
    c.eq(finals, ["succeeded"] * 4 + ["failed"], "final states")
    return ids


def check_values(c, w, smp, types):
    for n in NAMES:
        # The parser names a counter's family without its _total suffix.
        fam = n[:-len("_total")] if n.endswith("_total") else n
        c.ok(fam in types, f"family {n} present", sorted(types))
        if n.endswith("_total"):
            c.eq(types.get(fam), "counter", f"{n} is a counter")
    c.eq(types.get("fleetq_ack_seconds"), "histogram", "ack is a histogram")
    c.eq(types.get("fleetq_dispatch_seconds"), "histogram", "dispatch is a histogram")
    c.eq(types.get("fleetq_commands_queued"), "gauge", "queued is a gauge")
    c.eq(val(smp, "fleetq_submits_total", result="accepted"), 5.0, "submits accepted")
    c.eq(val(smp, "fleetq_submits_total", result="duplicate"), 1.0, "submits duplicate")
    c.eq(val(smp, "fleetq_submits_total", result="bad_param"), 1.0, "submits bad_param")
    c.eq(by_label(smp, "fleetq_commands_total", "state"),
         {("succeeded",): 4.0, ("failed",): 1.0, ("unknown",): 0.0, ("expired",): 0.0,
          ("cancelled",): 0.0, ("superseded",): 0.0}, "commands by terminal state")
    for h in ("fleetq_ack_seconds", "fleetq_dispatch_seconds"):
        c.eq(val(smp, h + "_count"), 5.0, f"{h}_count")
        c.eq(val(smp, h + "_bucket", le="+Inf"), 5.0, f"{h} +Inf bucket")
        c.ok((val(smp, h + "_sum") or 0) > 0, f"{h}_sum > 0", val(smp, h + "_sum"))
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in smp.items()
                         if k[0] == h + "_bucket")
        c.ok(all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])),
             f"{h} buckets cumulative", buckets)
    # Where a dispatched command waits (issue 17): the 4 that succeeded
    # had a first request leave and ended on an answer (the one for the
    # unpaired car failed on fleet_status, with no request of its own);
    # every dispatch request (not the fleet_status pre-check, not token
    # refreshes) had its round trip timed.
    disp_reqs = sum(v for k, v in smp.items() if k[0] == "fleetq_fleet_api_requests_total"
                    and dict(k[1]).get("kind") not in ("fleet_status", "token"))
    for h, want in (("fleetq_dispatch_send_wait_seconds", 4.0),
                    ("fleetq_dispatch_request_seconds", disp_reqs),
                    ("fleetq_dispatch_settle_wait_seconds", 4.0)):
        c.eq(types.get(h), "histogram", f"{h} is a histogram")
        c.eq(val(smp, h + "_count"), want, f"{h}_count")
        c.ok((val(smp, h + "_sum") or 0) > 0, f"{h}_sum > 0", val(smp, h + "_sum"))
    c.ok(disp_reqs >= 6, "dispatch requests counted (a wake_up among them)", disp_reqs)
    # The asleep car needed a wake: the dispatch of at least one command
    # took longer than the fastest acks.
    c.ok(val(smp, "fleetq_dispatch_seconds_sum") > val(smp, "fleetq_ack_seconds_sum"),
         "dispatch time above ack time")
    for s in range(2):
        c.eq(val(smp, "fleetq_commands_queued", shard=str(s)), 0.0, f"shard {s} queued 0")
        c.eq(val(smp, "fleetq_commands_in_flight", shard=str(s)), 0.0, f"shard {s} in flight 0")
        b = val(smp, "fleetq_store_bytes", shard=str(s))
        c.ok(b is not None and 4096 <= b < 64 << 20, f"shard {s} store bytes", b)
        r = val(smp, "fleetq_store_map_used_ratio", shard=str(s))
        c.ok(r is not None and 0 < r < 0.5, f"shard {s} map ratio", r)
    c.eq(val(smp, "fleetq_commands_queued", shard="2"), None, "no third shard")
    c.eq(val(smp, "fleetq_wakeups_total"), 1.0, "wakeups")
    c.eq(w.sim.vehicle(V_ASLEEP)["wake_ups"], 1, "fleetsim counted one wake_up")
    ver = subprocess.run([os.path.join(fqlib.BIN, "fleetqd"), "--version"], capture_output=True,
                         text=True).stdout.split()[-1]
    c.eq(by_label(smp, "fleetq_build_info", "version"), {(ver,): 1.0}, "build_info version")
    w.drain(0.5)
    c.eq(val(smp, "fleetq_events_published_total"), float(len(w.all_events)),
         "events published == events received")


def check_fleet_api(c, w, smp):
    recs = w.tap.records()
    want = collections.Counter((tap_kind(r), str(r["status"] or 0)) for r in recs)
    got = {k: v for k, v in by_label(smp, "fleetq_fleet_api_requests_total", "kind",
                                     "code").items()}
    c.eq(got, {k: float(v) for k, v in want.items()},
         "requests by kind and code == what the relay saw", w.tap.paths())
    c.eq(sum(got.values()), float(w.sim.daemon_requests()),
         "requests == fleetsim's own request counter")
    c.ok(("wake_up", "200") in got and ("signed_command", "200") in got,
         "wake_up and signed_command answers counted", got)
    c.ok(("fleet_status", "200") in got, "the fleet_status pre-check's requests counted", got)
    bill = collections.Counter()
    for (kind, code), n in want.items():
        if kind != "token" and 0 < int(code) < 500:
            bill["wake_up" if kind == "wake_up" else "data" if kind in ("vehicle", "fleet_status")
                 else "command"] += n
    c.eq(by_label(smp, "fleetq_billable_requests_total", "account", "kind"),
         {("acct1", k): float(v) for k, v in bill.items()},
         "billable requests per account and kind")
    c.eq(val(smp, "fleetq_billable_requests_total", account="acct1", kind="wake_up"), 1.0,
         "one billed wake_up")


def check_http(c):
    st, ctype, text = scrape()
    c.eq(st, 200, "GET /metrics 200")
    c.ok(ctype and ctype.startswith("text/plain; version=0.0.4"), "content type", ctype)
    for n in NAMES:
        c.ok(f"# HELP {n} " in text and f"# TYPE {n} " in text, f"{n} HELP and TYPE")
    for path, method, want in (("/", "GET", 404), ("/metrics/x", "GET", 404),
                               ("/metrics", "POST", 405), ("/metrics", "DELETE", 405)):
        req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", method=method,
                                     data=b"x" if method == "POST" else None)
        try:
            urllib.request.urlopen(req, timeout=5)
            code, body = 200, ""
        except urllib.error.HTTPError as e:
            code, body = e.code, e.read().decode()
        c.eq(code, want, f"{method} {path}")
        c.ok(0 < len(body) < 200, f"{method} {path}: short text body", body)


def check_slow_scrapers(c, w):
    """Connections that never finish their request or never read must not
    hold up a scrape or a submit."""
    stalled = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never end
        stalled.append(s)
    nonreader = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    nonreader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    try:
        for _ in range(50):  # pipelined: the answers pile up unread
            nonreader.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    except OSError as e:  # the server may cut such a client off: fine too
        fqlib.log(f"non-reading scraper cut off: {e!r}")
    stalled.append(nonreader)
    t0 = time.monotonic()
    st, _, _ = scrape(timeout=5)
    c.eq(st, 200, "a scrape beside 21 stalled connections")
    c.ok(time.monotonic() - t0 < 2.0, "that scrape is quick", time.monotonic() - t0)
    # Submits meanwhile, each acked only once it is on disk.
    t0 = time.monotonic()
    n = 200
    for i in range(n):
        r = w.client.call({"op": "submit", "tenant": dl.TENANT, "key": f"slow-{i}",
                           "account": "acct1", "command": "door_lock", "vin": V_UNPAIRED,
                           "ttl_ms": 1000})
        if not r.get("ok"):
            c.ok(False, "submit beside stalled scrapers", r)
            break
    dt = time.monotonic() - t0
    c.ok(dt < 20, f"{n} submits beside stalled scrapers", f"{dt:.2f} s")
    smp, _ = samples(scrape()[2])
    c.eq(val(smp, "fleetq_submits_total", result="accepted"), 5.0 + n,
         "those submits counted")
    for s in stalled:
        s.close()


def check_flags(c):
    exe = os.path.join(fqlib.BIN, "fleetqd")
    tmp = w_tmp = __import__("tempfile").mkdtemp(prefix="fq-metrics-")
    fqlib._cleanups.append(lambda: __import__("shutil").rmtree(w_tmp, ignore_errors=True))
    for bad in ("abc", ":0", "70000", "127.0.0.1:", "example.com:9464", "::1:9464",
                "[::1]9464", "1.2.3.4:12x"):
        r = subprocess.run([exe, "--data", os.path.join(tmp, "d"), "--metrics", bad],
                           capture_output=True, text=True, timeout=20)
        c.eq(r.returncode, 2, f"--metrics {bad!r}: usage error", r.stderr)
        c.ok(r.stderr.startswith("fleetqd: metrics:") and bad.split(":")[0][:5] in r.stderr,
             f"--metrics {bad!r}: message names the value", r.stderr)
    # The config file key is `metrics`, checked the same way.
    cfg = os.path.join(tmp, "bad.json")
    with open(cfg, "w") as f:
        f.write('{"metrics": "nope"}')
    r = subprocess.run([exe, "--data", os.path.join(tmp, "d"), "--config", cfg],
                       capture_output=True, text=True, timeout=20)
    c.eq(r.returncode, 2, "config key metrics: usage error", r.stderr)
    # A port in use: a clear start-up error, nothing left running.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        d = fqlib.Daemon(shards=1, extra=["--no-dispatch", "--metrics", f":{busy}"])
        try:
            d.start(timeout=10)
            c.ok(False, "fleetqd started on a port in use")
        except RuntimeError as e:
            msg = str(e)
            c.ok("exited with 1" in msg, "port in use: exit 1", msg)
            c.ok(f"cannot listen on 127.0.0.1:{busy}: Address already in use" in msg,
                 "port in use: says so", msg)


def body(c, w):
    traffic(c, w)
    # Answers reach the relay's log a moment before fleetqd acts on them:
    # scrape until the request counts agree (or give up and report).
    deadline = time.monotonic() + 10
    while True:
        smp, types = samples(scrape()[2])
        n = sum(by_label(smp, "fleetq_fleet_api_requests_total", "kind", "code").values())
        if n == w.sim.daemon_requests() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check_values(c, w, smp, types)
    check_fleet_api(c, w, smp)
    check_http(c)
    check_slow_scrapers(c, w)
    check_flags(c)
    w.check_seq(c)


dl.run("test_metrics", body,
       vehicles=[dl.default_vehicle(V_AWAKE),
                 dl.default_vehicle(V_ASLEEP, asleep=True, wake_ms=300),
                 dl.default_vehicle(V_UNPAIRED, paired=False)],
       daemon_opts={"--metrics": f"127.0.0.1:{PORT}", "--wake-poll-ms": 500})
