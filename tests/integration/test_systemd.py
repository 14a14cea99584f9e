"""fleetqd under systemd (issue 14 point 4).

* packaging/fleetqd.service, installed into a temporary prefix with
  `cmake --install`, passes `systemd-analyze verify` (its Documentation=
  man pages found in the prefix when they were built) and keeps the
  hardening the issue asks for; `systemd-analyze security --offline`
  rates its exposure below 2.0 where that option exists.  Without
  systemd-analyze these checks are skipped with a message.
* The notification protocol, on a NOTIFY_SOCKET that is a Python AF_UNIX
  datagram socket: READY=1 (with a STATUS line) once fleetqd is ready and
  not before, WATCHDOG=1 every third of WATCHDOG_USEC while it runs, none
  when WATCHDOG_PID names another process, STOPPING=1 as soon as SIGTERM
  starts the drain, then exit 0.  Without NOTIFY_SOCKET the daemon runs as
  before (every other test).
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from lib import fqlib
from lib.fqlib import Client, Daemon, log, run_test

BUILD = os.path.dirname(fqlib.BIN)


def install(tmp):
    prefix = os.path.join(tmp, "prefix")
    p = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], capture_output=True,
                       text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("cmake --install failed:\n" + p.stdout + p.stderr)
    return prefix


def unit_checks(c, tmp):
    prefix = install(tmp)
    unit = os.path.join(prefix, "lib", "systemd", "system", "fleetqd.service")
    c.ok(os.path.isfile(unit), "the unit is installed under <prefix>/lib/systemd/system", unit)
    text = open(unit).read()
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            settings.setdefault(k, []).append(v)
    want = {"Type": "notify", "User": "fleetq", "StateDirectory": "fleetq",
            "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
            "PrivateTmp": "yes", "PrivateDevices": "yes",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
            "ExecReload": "/bin/kill -HUP $MAINPID"}
    for k, v in want.items():
        c.eq(settings.get(k, [None])[0], v, f"unit: {k}")
    c.ok("@system-service" in settings.get("SystemCallFilter", []),
         "unit: SystemCallFilter=@system-service", settings.get("SystemCallFilter"))
    c.ok(settings.get("WatchdogSec"), "unit: WatchdogSec set (fleetqd pings)")
    execstart = settings.get("ExecStart", [""])[0].split()
    c.eq(execstart[0] if execstart else None, os.path.join(prefix, "bin", "fleetqd"),
         "ExecStart names the installed fleetqd")
    conf = execstart[execstart.index("--config") + 1] if "--config" in execstart else None
    c.ok(conf and os.path.isfile(conf), "ExecStart's --config file is installed", conf)
    # The installed config file is one fleetqd takes.
    if conf:
        r = subprocess.run([os.path.join(prefix, "bin", "fleetqd"), "--config", conf, "--help"],
                           capture_output=True, text=True, timeout=20)
        c.eq(r.returncode, 0, "fleetqd accepts the installed config file", r.stderr)
    c.ok(os.path.isfile(os.path.join(prefix, "lib", "sysusers.d", "fleetq.conf")),
         "the sysusers.d file for User=fleetq is installed")

    sa = shutil.which("systemd-analyze")
    if not sa:
        log("SKIP systemd-analyze verify: systemd-analyze not found (Debian package systemd)")
        return
    env = dict(os.environ)
    man = os.path.join(prefix, "share", "man")
    have_man = os.path.isfile(os.path.join(man, "man8", "fleetqd.8"))
    args = [sa, "verify"]
    if have_man:
        env["MANPATH"] = man + ":"
    else:
        log("note: man pages not built (no scdoc): verify runs with --man=no")
        args.append("--man=no")
    r = subprocess.run(args + [unit], capture_output=True, text=True, timeout=60, env=env)
    c.ok(r.returncode == 0 and not r.stderr.strip(), "systemd-analyze verify passes, silently",
         r.returncode, r.stdout, r.stderr)
    r = subprocess.run([sa, "security", "--offline=yes", unit], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0 and "offline" in r.stderr:
        log("SKIP systemd-analyze security: no --offline in this systemd")
        return
    exposure = None
    for line in r.stdout.splitlines():
        if "Overall exposure level" in line:
            exposure = float(line.split(":")[1].split()[0])
    c.ok(exposure is not None and exposure < 2.0, "systemd-analyze security: exposure < 2.0",
         exposure, r.stdout[-300:])


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket."""

    def __init__(self, tmp):
        self.path = os.path.join(tmp, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.msgs = []  # (monotonic time, {key: value})

    def pump(self, seconds):
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return
            kv = {}
            for line in data.decode().splitlines():
                k, _, v = line.partition("=")
                kv[k] = v
            self.msgs.append((time.monotonic(), kv))

    def wait_for(self, key, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for t, kv in self.msgs:
                if key in kv:
                    return t, kv
            self.pump(0.05)
        return None, None

    def count(self, key, since=0.0):
        return sum(1 for t, kv in self.msgs if key in kv and t >= since)


def start(env_extra, tmp):
    """A Daemon started with extra environment variables."""
    saved = {k: os.environ.get(k) for k in env_extra}
    os.environ.update(env_extra)
    try:
        d = Daemon(shards=2)
        d.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return d


def notify_checks(c, tmp):
    ns = NotifySocket(tmp)
    d = start({"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "600000"}, tmp)
    t_ready, ready = ns.wait_for("READY", 10)
    c.ok(ready is not None and ready.get("READY") == "1", "READY=1 arrives", ns.msgs)
    c.ok(ready and "ready: 2 shard(s)" in ready.get("STATUS", ""),
         "READY=1 comes with a STATUS line", ready)
    with open(d.logpath, "rb") as f:
        c.ok(b"fleetqd: ready" in f.read(), "READY=1 only after 'fleetqd: ready'")
    c.eq(Client(d.endpoint).ping().get("ok"), True, "the daemon serves")
    ns.pump(1.5)
    n = ns.count("WATCHDOG", since=t_ready or 0)
    # 600 ms watchdog: a ping every 200 ms, about 7 in 1.5 s.
    c.ok(4 <= n <= 12, "WATCHDOG=1 every third of WATCHDOG_USEC", n)
    c.ok(all(kv.get("WATCHDOG") == "1" for _, kv in ns.msgs if "WATCHDOG" in kv),
         "watchdog messages are WATCHDOG=1")
    t_term = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    t_stop, stop = ns.wait_for("STOPPING", 10)
    c.ok(stop is not None and stop.get("STOPPING") == "1", "STOPPING=1 on SIGTERM", ns.msgs[-5:])
    c.ok(stop and "draining" in stop.get("STATUS", ""), "STOPPING=1 says it drains", stop)
    try:
        rc = d.proc.wait(30)
    except subprocess.TimeoutExpired:
        rc = None
    c.eq(rc, 0, "exit 0 after the drain")
    c.ok(t_stop is not None and t_stop >= t_term, "STOPPING=1 follows the signal")
    c.ok(ns.count("READY") == 1, "READY=1 once", ns.count("READY"))
    d.cleanup()

    # WATCHDOG_PID names another process: that watchdog is not ours.
    ns2 = NotifySocket(tempfile.mkdtemp(dir=tmp))
    d2 = start({"NOTIFY_SOCKET": ns2.path, "WATCHDOG_USEC": "300000", "WATCHDOG_PID": "1"}, tmp)
    t2, ready2 = ns2.wait_for("READY", 10)
    ns2.pump(1.0)
    c.ok(ready2 is not None, "READY=1 with a foreign WATCHDOG_PID")
    c.eq(ns2.count("WATCHDOG"), 0, "no WATCHDOG=1 for another process's watchdog")
    c.eq(d2.term(), 0, "exit 0")
    d2.cleanup()


def test(c):
    tmp = tempfile.mkdtemp(prefix="fq-systemd-")
    try:
        unit_checks(c, tmp)
        notify_checks(c, tmp)
    finally:
        if not os.environ.get("FQ_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)


run_test("systemd", test)
