"""A real NATS JetStream cluster on loopback for the cluster tests (issue 18).

NatsCluster(n=3) starts n `nats-server` processes (Debian's nats-server,
installed by scripts/deps.sh), each with JetStream on its own temporary
store directory, free client / cluster / monitoring ports, and routes to
all the others, then waits until every server says JetStream is enabled
(/healthz?js-enabled-only=true) and healthy (/healthz: the JetStream
meta leader is known and the server is current).  Servers can be killed
(-9) and restarted on the same store directory and ports.

Everything is stopped and removed at exit (FQ_KEEP=1 keeps the
directories and logs), whatever happened, through fqlib's cleanup list.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from lib import fqlib
from lib.fqlib import free_port, log

NATS_SERVER = os.environ.get("FQ_NATS_SERVER") or shutil.which("nats-server") \
    or "/usr/sbin/nats-server"


def available():
    return os.path.exists(NATS_SERVER) and os.access(NATS_SERVER, os.X_OK)


class NatsCluster:
    # The logs carry up to 8 MiB per append (docs/cluster.md): above the
    # server's 1 MiB default payload limit.
    MAX_PAYLOAD = 8 * 1024 * 1024

    def __init__(self, n=3, name="fq"):
        self.n = n
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="fq-nats-")
        self.client_ports = [free_port() for _ in range(n)]
        self.route_ports = [free_port() for _ in range(n)]
        self.mon_ports = [free_port() for _ in range(n)]
        self.procs = [None] * n
        self.logs = [os.path.join(self.dir, f"n{i}.log") for i in range(n)]
        fqlib._cleanups.append(self.cleanup)

    def urls(self, order=None):
        """The client URLs, comma separated (in `order` when given)."""
        idx = order if order is not None else range(self.n)
        return ",".join(f"nats://127.0.0.1:{self.client_ports[i]}" for i in idx)

    def _args(self, i):
        conf = os.path.join(self.dir, f"n{i}.conf")
        with open(conf, "w") as f:
            f.write(f"max_payload: {self.MAX_PAYLOAD}\n")
        routes = ",".join(f"nats://127.0.0.1:{self.route_ports[j]}"
                          for j in range(self.n) if j != i)
        sd = os.path.join(self.dir, f"js{i}")
        os.makedirs(sd, exist_ok=True)
        return [NATS_SERVER, "-c", conf, "-a", "127.0.0.1", "-p", str(self.client_ports[i]),
                "-m", str(self.mon_ports[i]), "-js", "-sd", sd, "-n", f"{self.name}{i}",
                "--cluster_name", self.name,
                "--cluster", f"nats://127.0.0.1:{self.route_ports[i]}",
                "--routes", routes, "-l", self.logs[i]]

    def start_one(self, i):
        self.procs[i] = subprocess.Popen(self._args(i), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, timeout=30.0):
        for i in range(self.n):
            self.start_one(i)
        self.wait_ready(range(self.n), timeout)
        return self

    def _healthz(self, i, query=""):
        url = f"http://127.0.0.1:{self.mon_ports[i]}/healthz{query}"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, which, timeout=30.0):
        """Every server in `which` has JetStream on and is healthy."""
        end = time.time() + timeout
        for query in ("?js-enabled-only=true", ""):
            for i in which:
                while not self._healthz(i, query):
                    if self.procs[i] is None or self.procs[i].poll() is not None:
                        raise RuntimeError(f"nats-server {i} exited: {self.log_tail(i)}")
                    if time.time() > end:
                        raise RuntimeError(f"nats-server {i} not ready{query and ''} in "
                                           f"{timeout} s: {self.log_tail(i)}")
                    time.sleep(0.1)

    def kill9(self, i):
        p = self.procs[i]
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
        self.procs[i] = None

    def restart(self, i, timeout=30.0):
        self.kill9(i)
        self.start_one(i)
        self.wait_ready([i], timeout)

    def log_tail(self, i, n=15):
        try:
            with open(self.logs[i], errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def cleanup(self):
        for i in range(self.n):
            self.kill9(i)
        if os.environ.get("FQ_KEEP") == "1":
            log(f"[nats] kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
