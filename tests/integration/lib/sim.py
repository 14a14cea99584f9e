"""The one fleetsim wrapper of the integration tests, plus the small harness
of the fleetsim tests (test_sim_*.py).

Sim starts the real $FQ_BIN/fleetsim on loopback with a generated config
file, waits for its "fleetsim listening on ..." line, talks to its /sim
control endpoints and stops it (stop() returns the exit status: a
sanitizer build reports leaks through it).  Every Sim is stopped at exit
whatever happened (fqlib's atexit hook).
"""

import json
import os
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

from . import fqlib
from . import vcp_client as vc
from .fqlib import BIN, log
from .tls import make_tls


class Sim:
    """One fleetsim process on loopback.

    config:     the simulator config (a dict, written to DIR/NAME.json at
                start(); later changes to it apply at the next start())
    dir:        where its files go; None: a temporary directory of its own,
                removed by stop()
    tls:        None/False plain HTTP; True: HTTPS with a throwaway CA made
                in dir; or (cert, key, ca) paths from tls.make_tls()
    port:       0 lets fleetsim pick (self.port and self.base are known
                after start()); a fixed port makes self.base known at once
    fleet_key:  None leaves config["fleet_public_key"] to the caller; True
                makes a fresh fleet key pair, a private key object uses that
                one: its public half is written to dir and named in the
                config, and self.client (vcp_client.Client) signs with it
    """

    def __init__(self, config, dir=None, tls=None, port=0, name="fleetsim", extra_args=(),
                 fleet_key=None):
        self.own_dir = dir is None
        self.dir = tempfile.mkdtemp(prefix="fleetsim-test-") if dir is None else dir
        self.name = name
        self.config = config
        self.extra_args = list(extra_args)
        self.fleet_key = None
        self.client = None
        if fleet_key is not None:
            self.fleet_key = vc.new_private() if fleet_key is True else fleet_key
            pub = os.path.join(self.dir, name + "-fleet-pub.pem")
            with open(pub, "wb") as f:
                f.write(vc.public_pem(self.fleet_key))
            config.setdefault("fleet_public_key", pub)
            self.client = vc.Client(self.fleet_key)
        self.tls = make_tls(self.dir) if tls is True else (tls or None)
        self.scheme = "https" if self.tls else "http"
        self.context = ssl.create_default_context(cafile=self.tls[2]) if self.tls else None
        self.port = port
        self.base = f"{self.scheme}://127.0.0.1:{port}" if port else None
        self.proc = None
        self.own = 0  # our own /sim calls, see daemon_requests()
        self.cfgpath = os.path.join(self.dir, name + ".json")
        self.errpath = os.path.join(self.dir, name + ".err")
        fqlib._cleanups.append(self.stop)

    def start(self, timeout=15):
        with open(self.cfgpath, "w") as f:
            json.dump(self.config, f, indent=1)
        args = [os.path.join(BIN, "fleetsim"), "--listen", f"127.0.0.1:{self.port}",
                "--config", self.cfgpath] + self.extra_args
        if self.tls:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        err = open(self.errpath, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=err)
        err.close()
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode(errors="replace") if r else ""
        if "listening on" not in line:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"{self.name} did not start: {line!r}\n{self.err_tail()}")
        self.port = int(line.strip().rsplit(":", 1)[1])
        self.base = f"{self.scheme}://127.0.0.1:{self.port}"
        log(f"[{self.name}] {line.strip()} (config {self.cfgpath}, seed {self.config.get('seed')})")
        return self

    def err_tail(self, n=20):
        try:
            with open(self.errpath, "r", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # ---- the Fleet API, through the spec-only client ----------------------

    def fleet(self, token, timeout=10):
        return vc.Fleet(self.base, token, context=self.context, timeout=timeout)

    def state(self, vin, token="t1"):
        st, hd, j = self.fleet(token).call("GET", "/api/1/vehicles/" + vin)
        if st != 200:
            raise RuntimeError(f"{self.name} GET vehicle {vin} -> {st} {j!r}")
        return j["response"]

    # ---- /sim control endpoints -------------------------------------------

    def ctl(self, method, path, body=None):
        """(HTTP status, decoded JSON body or None)."""
        self.own += 1
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.context) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def _ok(self, method, path, body=None):
        st, j = self.ctl(method, path, body)
        if st != 200:
            raise RuntimeError(f"{self.name} {method} {path} -> {st} {j!r}")
        return j

    def stats(self):
        return self._ok("GET", "/sim/stats")

    def executions(self, vin=None, site=None):
        q = f"?vin={vin}" if vin else (f"?site={site}" if site is not None else "")
        return self._ok("GET", "/sim/executions" + q)["executions"]

    def vehicle(self, v):
        return self._ok("GET", "/sim/vehicles/" + v)["response"]

    def site(self, s):
        return self._ok("GET", f"/sim/sites/{s}")["response"]

    def account(self, a):
        return self._ok("GET", "/sim/accounts/" + a)["response"]

    def patch_vehicle(self, v, body):
        return self._ok("POST", "/sim/vehicles/" + v, body)["response"]

    def patch_account(self, a, body):
        return self._ok("POST", "/sim/accounts/" + a, body)["response"]

    def patch_site(self, s, body):
        return self._ok("POST", f"/sim/sites/{s}", body)["response"]

    def reboot(self, v):
        return self._ok("POST", f"/sim/vehicles/{v}/reboot", {})

    def daemon_requests(self):
        """Requests the simulator got from anybody but this harness (every
        /sim call of ours is counted in self.own, this read included)."""
        return self.stats()["requests"] - self.own

    def stop(self):
        """SIGTERM, wait (SIGKILL after 10 s); returns the exit status, None
        if never started.  Safe to call again."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            rc = self.proc.returncode
            try:
                self.proc.stdout.close()
            except OSError:
                pass
            if rc != 0 and not getattr(self, "_told", False):
                self._told = True
                log(f"---- {self.name} exited with {rc}; stderr tail ----\n{self.err_tail(40)}")
        if self.own_dir and not os.environ.get("FQ_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc


# --------------------------------------------------------------------------
# the fleetsim tests' harness (test_sim_*.py)

VIN = "5YJ3SIM0000000001"


def base_config(**over):
    cfg = {
        "seed": 42,
        "accounts": [{"id": "acct1", "token": "t1", "refresh_token": "r1",
                      "scopes": ["openid", "offline_access", "vehicle_device_data",
                                 "vehicle_cmds", "vehicle_charging_cmds", "energy_cmds",
                                 "energy_device_data"],
                      "vins": [VIN, "5YJ3SIM0000000002", "LEGACY00000000003"],
                      "sites": [42]}],
        "vehicles": [{"vin": VIN, "paired": True, "asleep": False, "legacy": False},
                     {"vin": "5YJ3SIM0000000002", "paired": False},
                     {"vin": "LEGACY00000000003", "legacy": True}],
        "sites": [{"id": 42}],
    }
    cfg.update(over)
    return cfg


def run_tests(tests):
    """Run test functions in order; print both sides on failure; return the
    number that failed."""
    failed = 0
    for t in tests:
        t0 = time.time()
        try:
            t()
            print("ok   %s (%.2fs)" % (t.__name__, time.time() - t0))
        except Exception:  # report every failure, keep going
            failed += 1
            print("FAIL %s" % t.__name__)
            traceback.print_exc()
        sys.stdout.flush()
    print("%d of %d failed" % (failed, len(tests)))
    return failed


def finish(sim, failed):
    """Stop the shared simulator, insist on a clean exit (sanitizer builds
    report leaks through the exit status), and exit."""
    if failed:
        log(f"---- {sim.name} stderr tail ----\n{sim.err_tail(40)}")
    rc = sim.stop()
    if rc != 0:
        print("FAIL fleetsim exited with status %r" % rc)
        failed += 1
    sys.exit(1 if failed else 0)


def check(cond, *what):
    if not cond:
        raise AssertionError(" ".join(repr(w) for w in what))
