#!/usr/bin/python3
"""`fleetqd --demo` as a user runs it (scripts/demo.sh): it starts the
fleetsim program as a child process, the tour ends 6 of 6 with exit 0, and
the child never outlives fleetqd: stopped cleanly at the end, gone when
fleetqd is killed, stopped when it does not start properly.  A missing
fleetsim is named in the error."""

import os
import re
import signal
import socket
import stat
import subprocess
import tempfile
import time

from lib import fqlib

BIN = os.environ.get("FQ_BIN", "../build/bin")
FLEETQD = os.path.join(BIN, "fleetqd")

# The integration harness's checker: keeps going, prints both sides.
CHECKS = fqlib.Checks("test_demo")
check = CHECKS.ok


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def demo_args(data):
    listen, publish = free_ports(2)
    return [FLEETQD, "--demo", "--log-level", "warn", "--data", data,
            "--listen", "tcp://127.0.0.1:%d" % listen, "--publish", "tcp://127.0.0.1:%d" % publish]


def alive(pid):
    """True while pid is a process that has not ended (a zombie has)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone_within(pid, seconds):
    until = time.time() + seconds
    while time.time() < until:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def sim_pid(text):
    m = re.search(r"Fleet API\s+http://127\.0\.0\.1:\d+ \(fleetsim, pid (\d+)\)", text)
    return int(m.group(1)) if m else None


def main():
    tmp = tempfile.mkdtemp(prefix="fq_demo_")

    # 1. The whole tour, as scripts/demo.sh runs it.
    data = os.path.join(tmp, "run")
    r = subprocess.run(demo_args(data), capture_output=True, text=True, timeout=180)
    detail = "rc=%s\nstdout tail=%r\nstderr=%r" % (r.returncode, r.stdout[-600:], r.stderr)
    check(r.returncode == 0, "the demo exits 0", detail)
    check("fleetq demo: 6 of 6 steps ended as expected" in r.stdout, "6 of 6 steps as expected",
          detail)
    check(r.stdout.count("(as expected)") == 6, "each step says as expected", detail)
    pid = sim_pid(r.stdout)
    check(pid is not None, "the banner names the fleetsim child", detail)
    if pid:
        check(not alive(pid), "fleetsim has ended when fleetqd has")
    check(not re.search(r"fleetsim (exited with|ended by|did not stop)", r.stderr),
          "fleetsim stopped cleanly on SIGTERM", detail)
    conf = os.path.join(data, "fleetsim.json")
    check(os.path.exists(conf) and stat.S_IMODE(os.stat(conf).st_mode) == 0o600,
          "the simulator's config is DATA/fleetsim.json, mode 0600")

    # 2. No fleetsim where FQ_FLEETSIM points: exit 1, the path named.
    env = dict(os.environ, FQ_FLEETSIM=os.path.join(tmp, "no-such-fleetsim"))
    r = subprocess.run(demo_args(os.path.join(tmp, "missing")), capture_output=True, text=True,
                       timeout=60, env=env)
    check(r.returncode == 1 and "no-such-fleetsim" in r.stderr and "FQ_FLEETSIM" in r.stderr,
          "a missing fleetsim is named, exit 1", "rc=%s stderr=%r" % (r.returncode, r.stderr))

    # 3. A "fleetsim" that prints something else: refused, and stopped.
    fake = os.path.join(tmp, "fake-fleetsim")
    pidfile = os.path.join(tmp, "fake.pid")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\necho $$ > '%s'\necho 'hello'\nexec sleep 60\n" % pidfile)
    os.chmod(fake, 0o700)
    env = dict(os.environ, FQ_FLEETSIM=fake)
    t0 = time.time()
    r = subprocess.run(demo_args(os.path.join(tmp, "fake")), capture_output=True, text=True,
                       timeout=60, env=env)
    check(r.returncode == 1 and "unexpected first line from fleetsim: hello" in r.stderr,
          "an unexpected first line is refused, exit 1",
          "rc=%s stderr=%r" % (r.returncode, r.stderr))
    check(time.time() - t0 < 20, "and promptly")
    try:
        with open(pidfile) as f:
            fpid = int(f.read())
        check(not alive(fpid), "the refused child has been stopped")
    except (OSError, ValueError) as e:
        check(False, "the fake fleetsim ran", e)

    # 4. fleetqd killed outright: the child goes with it (PR_SET_PDEATHSIG).
    p = subprocess.Popen(demo_args(os.path.join(tmp, "killed")), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    banner = ""
    for line in p.stdout:
        banner += line
        if "Fleet API" in line:
            break
    pid = sim_pid(banner)
    check(pid is not None and alive(pid), "fleetsim runs during the demo", banner)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()
    if pid:
        check(gone_within(pid, 10), "fleetsim ends when fleetqd is killed")

    CHECKS.finish()


if __name__ == "__main__":
    main()
