"""One CLI convention for fleetqd, fleetq, fleetsim and fleetq-replay (issue
14 point 7), checked on every program and subcommand:

* -h and --help print a usage to stdout and exit 0; the help lists its
  options, --version and (where results are printed) --json, and says
  what each exit status means;
* --version prints "<program> <version>" and exits 0;
* an unknown option (and an abbreviated one) exits 2 with
  "<program>[ <subcommand>]: ..." on stderr naming it;
* every option a --help lists is one the command parses (the help and the
  parser come from one table: nothing listed is unknown);
* the --opt=value form works as --opt value does, on real runs: fleetqd
  serving with --data=DIR, fleetsim serving, each fleetq command against
  a real fleetqd, fleetq-replay gen and run; --json output parses;
* failures exit 1 with the "<program>: " prefix;
* the three regressions the issue names: fleetqd --data=DIR was refused,
  fleetq send -h was an error, fleetq --help listed an `account show`
  that does not exist.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

from lib import fqlib
from lib.fqlib import BIN, Daemon, free_port, log, run_test, vin

VERSION_RE = r"\d+\.\d+\.\d+"

FLEETQ_SUBCOMMANDS = ["send", "get", "cancel", "watch", "history", "ping", "health", "export",
                      "keygen", "pubkey", "curve-keygen", "backup", "doctor", "account add",
                      "account list", "account get",
                      "account remove", "account retry", "proto sign", "proto decode", "usage",
                      "campaign start", "campaign get", "campaign abort", "campaign watch"]
# Subcommands that print no result a script would parse: none.  Every one
# takes --json.
REPLAY_SUBCOMMANDS = ["gen", "run"]


def run(prog, *args, timeout=60, input_=None, env=None):
    return subprocess.run([os.path.join(BIN, prog)] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, input=input_, env=env)


def help_options(text):
    """The long options an --help text lists in its option list."""
    return sorted(set(re.findall(r"^\s+(?:-\w, )?--([a-z][a-z0-9-]*)", text, re.M)))


def convention(c, prog, sub, json_expected=True):
    """--help, -h, --version, a bad option, an abbreviation and the help's
    options for `prog sub` (sub: "" or the subcommand words)."""
    words = sub.split()
    name = " ".join([prog] + words)
    r = run(prog, *words, "--help")
    c.ok(r.returncode == 0 and r.stdout.startswith("usage: ") and r.stderr == "",
         f"{name} --help: usage on stdout, exit 0", r.returncode, r.stdout[:200], r.stderr)
    text = r.stdout
    r = run(prog, *words, "-h")
    c.ok(r.returncode == 0 and r.stdout == text, f"{name} -h is --help", r.returncode, r.stderr)
    c.ok("--version" in text, f"{name} --help lists --version")
    c.ok("Exit status" in text or "exit status" in text.lower() or "status |" in text,
         f"{name} --help documents the exit status")
    if json_expected:
        c.ok("--json" in text, f"{name} --help lists --json")
    r = run(prog, *words, "--version")
    c.ok(r.returncode == 0 and re.fullmatch(rf"{prog} {VERSION_RE}\n", r.stdout),
         f"{name} --version prints '{prog} <version>'", r.returncode, r.stdout, r.stderr)
    r = run(prog, *words, "--no-such-option=1")
    c.ok(r.returncode == 2 and r.stderr.startswith(f"{name}: ") and "--no-such-option" in r.stderr,
         f"{name} bad option: exit 2, '{name}: ' naming it", r.returncode, r.stderr)
    r = run(prog, *words, "--no-such-option")
    c.ok(r.returncode == 2 and r.stderr.startswith(f"{name}: ") and "--no-such-option" in r.stderr,
         f"{name} bad option (no value): exit 2", r.returncode, r.stderr)
    # Every option the help lists is parsed: given with a value or not, it
    # is never "unknown" (a wrong value or a missing one may be refused).
    opts = help_options(text)
    c.ok(len(opts) >= 2, f"{name} --help lists options", opts)
    for o in opts:
        if o in ("help", "version"):
            continue
        r = run(prog, *words, f"--{o}=x", "--help", timeout=20)
        c.ok("unknown option" not in r.stderr and "unrecognized" not in r.stderr,
             f"{name}: --{o} from the help is an option", r.returncode, r.stderr)
    return text


def fleetq_checks(c, tmp, d):
    r = run("fleetq", "--help")
    c.ok(r.returncode == 0, "fleetq --help", r.stderr)
    top = r.stdout
    acc = re.search(r"^\s+account\s+(.*)$", top, re.M)
    c.ok("account show" not in top and acc and "show" not in acc.group(1),
         "fleetq --help lists no `account show`", top)
    c.ok(acc and all(w in acc.group(1) for w in ("add", "list", "get", "remove", "retry")),
         "fleetq --help names the account actions that exist", acc and acc.group(0))
    listed = re.findall(r"^  ([a-z-]+)\s{2,}", top, re.M)
    for sub in ("send", "get", "cancel", "watch", "history", "ping", "account", "export",
                "keygen", "pubkey", "curve-keygen", "proto", "backup", "doctor", "campaign"):
        c.ok(sub in listed, f"fleetq --help lists {sub}", listed)
    r = run("fleetq", "--version")
    c.ok(r.returncode == 0 and re.fullmatch(rf"fleetq {VERSION_RE}\n", r.stdout),
         "fleetq --version", r.stdout)
    r = run("fleetq", "--bogus")
    c.ok(r.returncode == 2 and r.stderr.startswith("fleetq: ") and "--bogus" in r.stderr,
         "fleetq --bogus: exit 2, 'fleetq: '", r.stderr)
    r = run("fleetq", "frobnicate")
    c.ok(r.returncode == 2 and r.stderr.startswith("fleetq: "), "unknown command: exit 2",
         r.stderr)
    r = run("fleetq", "send", "-h")
    c.ok(r.returncode == 0 and "usage: fleetq send" in r.stdout, "fleetq send -h works", r.stderr)
    for sub in FLEETQ_SUBCOMMANDS:
        convention(c, "fleetq", sub)
    for grp in ("account", "proto", "campaign"):
        r = run("fleetq", grp, "--help")
        c.ok(r.returncode == 0 and r.stdout.startswith("usage: "), f"fleetq {grp} --help")
        r = run("fleetq", grp, "-h")
        c.ok(r.returncode == 0, f"fleetq {grp} -h")
        r = run("fleetq", grp, "--version")
        c.ok(r.returncode == 0 and re.fullmatch(rf"fleetq {VERSION_RE}\n", r.stdout),
             f"fleetq {grp} --version", r.stdout)
        r = run("fleetq", grp, "bogus")
        c.ok(r.returncode == 2 and r.stderr.startswith(f"fleetq {grp}: "),
             f"fleetq {grp} bogus: exit 2", r.stderr)

    # --opt=value on real runs, with --json parsed.
    ep, pub = f"--endpoint={d.endpoint}", f"--publish={d.publish}"

    def js(r, what):
        try:
            lines = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        except ValueError:
            lines = []
        c.ok(r.returncode == 0 and lines, f"{what}: exit 0, JSON output", r.returncode,
             r.stdout[-300:], r.stderr[-300:])
        return lines

    j = js(run("fleetq", "ping", ep, "--json", "--timeout=5"), "ping --endpoint=EP --json")
    c.ok(j and j[0].get("ok") is True, "ping --json says ok", j)
    j = js(run("fleetq", "send", "--tenant=conv", "--key=k1", "--account=acct", f"--vin={vin(5)}",
               "--command=set_charge_limit", "--param=percent=70", "--ttl-ms=60000", ep, "--json"),
           "send --opt=value --json")
    cid = j[0].get("id") if j else None
    c.ok(cid and j[0].get("state") == "queued", "send --opt=value accepted", j)
    j = js(run("fleetq", "get", f"--id={cid}", ep, "--json"), "get --id=ID --json")
    c.ok(j and j[0].get("command", {}).get("params") == {"percent": 70},
         "get --id=ID finds the command sent with --param=percent=70", j)
    j = js(run("fleetq", "get", "--tenant=conv", "--key=k1", ep, "--json"), "get --tenant= --key=")
    c.ok(j and j[0].get("command", {}).get("id") == cid, "get by --tenant=T --key=K", j)
    shard = j[0].get("command", {}).get("shard", 0) if j else 0
    j = js(run("fleetq", "history", f"--shard={shard}", "--after=0", "--limit=10", ep, "--json"),
           "history --shard=N --json")
    c.ok(j and any(e.get("id") == cid for e in j[0].get("events", [])),
         "history --shard=N holds the command's event", j)
    # watch sees what happens after it starts: the cancel below.
    w = subprocess.Popen([os.path.join(BIN, "fleetq"), "watch", "--tenant=conv",
                          f"--device={vin(5)}", "--count=1", "--timeout=20", ep, pub, "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fqlib.wait_for(lambda: False, timeout=1.0)  # let the subscription settle
    j = js(run("fleetq", "cancel", f"--id={cid}", ep, "--json"), "cancel --id=ID --json")
    c.ok(j and j[0].get("ok") is True, "cancel --id=ID", j)
    try:
        wout, werr = w.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        w.kill()
        wout, werr = w.communicate()
    wr = subprocess.CompletedProcess(w.args, w.returncode, wout, werr)
    j = js(wr, "watch --tenant=T --device=D --count=1 --json")
    c.ok(j and j[0].get("id") == cid and j[0].get("state") == "cancelled",
         "watch --count=1 prints the cancelled event", j)
    j = js(run("fleetq", "account", "list", ep, "--json", "--timeout=5"),
           "account list --endpoint=EP --json")
    c.ok(j and sorted(a.get("id") for a in j[0].get("accounts", [])) == ["acct", "replay-acct"],
         "account list --json: the two accounts", j)
    r = run("fleetq", "account", "get", "--account=nobody", ep)
    c.ok(r.returncode == 1 and r.stderr.startswith("fleetq account get: not_found"),
         "account get unknown: exit 1, 'fleetq account get: not_found'", r.stderr)
    out = os.path.join(tmp, "conv.fqt")
    j = js(run("fleetq", "export", "--from=2000-01-01", "--to=2100-01-01", f"--out={out}", ep,
               "--json"), "export --from=T --to=T --out=F --json")
    c.ok(j and j[0].get("written") == 1 and j[0].get("out") == out, "export --json summary", j)
    keys = os.path.join(tmp, "keys")
    j = js(run("fleetq", "keygen", f"--out={keys}", "--json"), "keygen --out=DIR --json")
    c.ok(j and j[0].get("private_key") == os.path.join(keys, "private.pem")
         and len(j[0].get("public_key_hex", "")) == 130, "keygen --json", j)
    j2 = js(run("fleetq", "pubkey", f"--key={os.path.join(keys, 'private.pem')}", "--json"),
            "pubkey --key=PEM --json")
    c.ok(j and j2 and j2[0].get("public_key_hex") == j[0].get("public_key_hex")
         and "BEGIN PUBLIC KEY" in j2[0].get("public_key_pem", ""), "pubkey --json", j2)
    ck = os.path.join(tmp, "client.key")
    j = js(run("fleetq", "curve-keygen", f"--out={ck}", "--json"), "curve-keygen --out=F --json")
    c.ok(j and len(j[0].get("public_key", "")) == 40 and j[0].get("file") == ck,
         "curve-keygen --json", j)
    with open(os.path.join(fqlib.SRC, "tests", "data", "vectors.json")) as f:
        v = json.load(f)
    pem = os.path.join(tmp, "vec.pem")
    fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, v["keys"]["client_private_pem"].encode())
    os.close(fd)
    hs, hc = v["handshake"], v["hmac_command"]
    j = js(run("fleetq", "proto", "sign", f"--key={pem}", f"--vin={v['vin']}",
               f"--session-info={hs['session_info']}",
               f"--routing-address={hs['routing_address']}", "--now=2650", "--lifetime=5",
               f"--uuid={hc['uuid']}", "--command=auto_conditioning_start", "--json"),
           "proto sign --opt=value --json")
    c.ok(j and j[0].get("routable_message") == hc["routable_message"],
         "proto sign --opt=value signs the vector", j)
    j = js(run("fleetq", "proto", "decode", "--json", hc["routable_message"]), "proto decode --json")
    c.ok(j and len(j) == 1 and j[0].get("flags") == 2, "proto decode --json: one line", j)
    # Failures: exit 1 with the prefix.
    r = run("fleetq", "ping", f"--endpoint=tcp://127.0.0.1:{free_port()}", "--timeout=0.3")
    c.ok(r.returncode == 1 and r.stderr.startswith("fleetq ping: timeout"),
         "ping with no daemon: exit 1, 'fleetq ping: timeout'", r.stderr)
    r = run("fleetq", "get", "--id=ffffffffffffffff", ep)
    c.ok(r.returncode == 1 and r.stderr.startswith("fleetq get: not_found: "),
         "get unknown: exit 1, 'fleetq get: not_found: '", r.stderr)
    r = run("fleetq", "keygen", f"--out={keys}")
    c.ok(r.returncode == 1 and r.stderr.startswith("fleetq keygen: "),
         "keygen over a key: exit 1", r.stderr)
    # Usage errors that are not option errors: exit 2, prefixed.
    r = run("fleetq", "send", "--tenant=t", ep)
    c.ok(r.returncode == 2 and r.stderr.startswith("fleetq send: ") and "required" in r.stderr,
         "send without required options: exit 2", r.stderr)
    r = run("fleetq", "send", "--json=1", ep)
    c.ok(r.returncode == 2 and "takes no value" in r.stderr, "--json=1: takes no value", r.stderr)
    r = run("fleetq", "send", "--tenant")
    c.ok(r.returncode == 2 and "needs a value" in r.stderr, "--tenant without value", r.stderr)
    r = run("fleetq", "get", "--end", d.endpoint, "--id", cid or "x")
    c.ok(r.returncode == 2 and "'--end'" in r.stderr, "abbreviation --end refused", r.stderr)
    return out


def replay_checks(c, tmp, d, traffic):
    r = run("fleetq-replay", "--help")
    c.ok(r.returncode == 0 and "gen" in r.stdout and "run" in r.stdout, "fleetq-replay --help")
    r = run("fleetq-replay", "--version")
    c.ok(r.returncode == 0 and re.fullmatch(rf"fleetq-replay {VERSION_RE}\n", r.stdout),
         "fleetq-replay --version", r.stdout)
    r = run("fleetq-replay", "--bogus")
    c.ok(r.returncode == 2 and r.stderr.startswith("fleetq-replay: "), "fleetq-replay --bogus",
         r.stderr)
    r = run("fleetq-replay", "bogus")
    c.ok(r.returncode == 2 and r.stderr.startswith("fleetq-replay: "), "fleetq-replay bogus",
         r.stderr)
    for sub in REPLAY_SUBCOMMANDS:
        convention(c, "fleetq-replay", sub)
    gen = os.path.join(tmp, "gen.fqt")
    r = run("fleetq-replay", "gen", f"--out={gen}", "--count=20", "--devices=5", "--seed=7",
            "--rate=1000", "--tenant=conv2", "--json")
    try:
        j = json.loads(r.stdout)
    except ValueError:
        j = {}
    c.ok(r.returncode == 0 and j.get("records") == 20 and j.get("seed") == 7 and j.get("out") == gen,
         "gen --opt=value --json", r.stdout, r.stderr[-300:])
    r = run("fleetq-replay", "run", gen, f"--endpoint={d.endpoint}", "--rate=2000", "--drain=2",
            "--json", timeout=60)
    try:
        j = json.loads(r.stdout)
    except ValueError:
        j = {}
    c.ok(r.returncode == 0 and j.get("acked") == 20, "run FILE --endpoint=EP --json", r.stdout,
         r.stderr[-300:])
    r = run("fleetq-replay", "run", os.path.join(tmp, "missing.fqt"), f"--endpoint={d.endpoint}")
    c.ok(r.returncode == 1 and r.stderr.startswith("fleetq-replay run: "),
         "run of a missing file: exit 1", r.stderr)


def fleetsim_checks(c, tmp):
    convention(c, "fleetsim", "", json_expected=False)
    cfg = os.path.join(tmp, "sim.json")
    with open(cfg, "w") as f:
        json.dump({"seed": 1, "accounts": [{"id": "a1", "token": "t1", "vins": [vin(1)]}],
                   "vehicles": [{"vin": vin(1)}]}, f)
    p = subprocess.Popen([os.path.join(BIN, "fleetsim"), f"--config={cfg}",
                          "--listen=127.0.0.1:0", "--log-level=warn"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        c.ok(line.startswith("fleetsim listening on http://127.0.0.1:"),
             "fleetsim --config=F --listen=H:P serves", line)
    finally:
        p.terminate()
        p.wait(10)
    r = run("fleetsim", f"--config={os.path.join(tmp, 'missing.json')}")
    c.ok(r.returncode == 1 and r.stderr.startswith("fleetsim: "), "fleetsim missing config: exit 1",
         r.stderr)
    r = run("fleetsim")
    c.ok(r.returncode == 2 and r.stderr.startswith("fleetsim: "), "fleetsim without --config",
         r.stderr)


def fleetqd_checks(c, tmp):
    r = run("fleetqd", "--help")
    c.ok(r.returncode == 0 and r.stdout.startswith("usage: fleetqd"), "fleetqd --help")
    text = r.stdout
    c.ok("--version" in text and "--flag=VALUE" in text, "fleetqd --help: --version, --flag=VALUE")
    c.ok("status" in text.lower() or "exit" in text.lower(), "fleetqd --help mentions exit status")
    r = run("fleetqd", "-h")
    c.eq(r.stdout, text, "fleetqd -h is --help")
    r = run("fleetqd", "--version")
    c.ok(r.returncode == 0 and re.fullmatch(rf"fleetqd {VERSION_RE}\n", r.stdout),
         "fleetqd --version", r.stdout, r.stderr)
    for bad in ("--no-such-option=1", "--no-such-option"):
        r = run("fleetqd", bad, "x")
        c.ok(r.returncode == 2 and r.stderr.startswith("fleetqd: ") and "--no-such-option" in r.stderr,
             f"fleetqd {bad}: exit 2, 'fleetqd: '", r.returncode, r.stderr)
    r = run("fleetqd", "--shards=0")
    c.ok(r.returncode == 2 and r.stderr.startswith("fleetqd: ") and "out of range" in r.stderr,
         "fleetqd --shards=0 refused like --shards 0", r.stderr)
    r = run("fleetqd", "--demo=yes")
    c.ok(r.returncode == 2 and "takes no value" in r.stderr, "fleetqd --demo=yes refused",
         r.stderr)
    for o in help_options(text):
        if o in ("help", "version", "demo"):
            continue
        r = run("fleetqd", f"--{o}=x", "--help")
        c.ok("unknown option" not in r.stderr, f"fleetqd: --{o} from the help is an option",
             r.stderr)
    # --data=DIR and the other values with '=' start a daemon that serves.
    data = os.path.join(tmp, "qd-data")
    port, pport = free_port(), free_port()
    log_path = os.path.join(tmp, "qd.log")
    with open(log_path, "wb") as logf:
        p = subprocess.Popen([os.path.join(BIN, "fleetqd"), f"--data={data}",
                              f"--listen=tcp://127.0.0.1:{port}",
                              f"--publish=tcp://127.0.0.1:{pport}", "--shards=2",
                              "--drain-timeout-ms=1000", "--log-level=info"],
                             stdout=logf, stderr=logf)
    try:
        ok = fqlib.wait_for(lambda: b"fleetqd: ready" in open(log_path, "rb").read(), timeout=20)
        c.ok(ok, "fleetqd --data=DIR --listen=EP ... starts", open(log_path).read()[-500:])
        if ok:
            r = run("fleetq", "ping", f"--endpoint=tcp://127.0.0.1:{port}", "--json")
            c.ok(r.returncode == 0 and '"shards":2' in r.stdout, "it serves (--shards=2)", r.stdout)
            c.ok(os.path.isfile(os.path.join(data, "SHARDS")), "--data=DIR is the data directory")
        # A failure at start-up: exit 1, prefixed (the directory in use).
        r = run("fleetqd", f"--data={data}", f"--listen=tcp://127.0.0.1:{free_port()}",
                f"--publish=tcp://127.0.0.1:{free_port()}", "--shards=2")
        # Log lines (timestamped) may come first; the error is its own line.
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        c.ok(r.returncode == 1 and last.startswith("fleetqd: ") and "in use" in last,
             "second fleetqd on --data=DIR: exit 1, 'fleetqd: '", r.returncode, r.stderr)
    finally:
        p.terminate()
        try:
            c.eq(p.wait(30), 0, "fleetqd started with --opt=value stops with 0")
        except subprocess.TimeoutExpired:
            p.kill()


def test(c):
    tmp = tempfile.mkdtemp(prefix="fq-cliconv-")
    try:
        fleetqd_checks(c, tmp)
        fleetsim_checks(c, tmp)
        # --no-dispatch: the commands stay queued for the get / cancel /
        # watch checks; the accounts the submits name must exist (acct for
        # fleetq send, replay-acct for fleetq-replay gen's default).
        with Daemon(shards=2, extra=["--no-dispatch"], accounts=["acct", "replay-acct"]) as d:
            traffic = fleetq_checks(c, tmp, d)
            replay_checks(c, tmp, d, traffic)
    finally:
        if os.environ.get("FQ_KEEP"):
            log(f"keeping {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


run_test("cli_convention", test)
