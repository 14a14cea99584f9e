"""Shared harness of the fleetsim integration tests (not a test itself):
starts the real fleetsim binary on a loopback ephemeral port with a
temporary config directory, talks to its /sim control endpoints, and makes
a throwaway CA + server certificate with the openssl CLI for HTTPS tests.
"""

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vcp_client as vc  # noqa: E402

FQ_BIN = os.environ.get("FQ_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "bin")

VIN = "5YJ3SIM0000000001"


class Sim:
    def __init__(self, config, tls=False, extra_args=(), keep_keys=None):
        self.dir = tempfile.mkdtemp(prefix="fleetsim-test-")
        self.fleet_key = keep_keys or vc.new_private()
        with open(os.path.join(self.dir, "fleet_pub.pem"), "wb") as f:
            f.write(vc.public_pem(self.fleet_key))
        config.setdefault("fleet_public_key", "fleet_pub.pem")
        self.config = config
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(config, f)
        args = [os.path.join(FQ_BIN, "fleetsim"), "--listen", "127.0.0.1:0", "--config",
                os.path.join(self.dir, "config.json")]
        self.context = None
        scheme = "http"
        if tls:
            cert, key, ca = make_tls(self.dir)
            args += ["--tls-cert", cert, "--tls-key", key]
            self.context = ssl.create_default_context(cafile=ca)
            scheme = "https"
        args += list(extra_args)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError("fleetsim did not start: %r" % line)
        self.port = int(line.strip().rsplit(":", 1)[1])
        self.base = "%s://127.0.0.1:%d" % (scheme, self.port)
        self.client = vc.Client(self.fleet_key)

    def fleet(self, token, timeout=10):
        return vc.Fleet(self.base, token, context=self.context, timeout=timeout)

    def ctl(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.context) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def patch_vehicle(self, vin, body):
        st, j = self.ctl("POST", "/sim/vehicles/" + vin, body)
        assert st == 200, (st, j)
        return j["response"]

    def patch_account(self, ident, body):
        st, j = self.ctl("POST", "/sim/accounts/" + ident, body)
        assert st == 200, (st, j)
        return j["response"]

    def executions(self, vin=None, site=None):
        q = ("?vin=" + vin) if vin else ("?site=%d" % site) if site else ""
        st, j = self.ctl("GET", "/sim/executions" + q)
        assert st == 200, (st, j)
        return j["executions"]

    def state(self, vin, token="t1"):
        st, hd, j = self.fleet(token).call("GET", "/api/1/vehicles/" + vin)
        assert st == 200, (st, j)
        return j["response"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def make_tls(d):
    """Throwaway CA and a server certificate for 127.0.0.1, via openssl."""
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, crt = os.path.join(d, "srv.key"), os.path.join(d, "srv.csr"), os.path.join(d, "srv.pem")
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out",
        ca_crt, "-days", "2", "-subj", "/CN=fleetsim test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=127.0.0.1")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    return crt, key, ca_crt


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
    rc = sim.stop()
    if rc != 0:
        print("FAIL fleetsim exited with status %r" % rc)
        failed += 1
    sys.exit(1 if failed else 0)


def check(cond, *what):
    if not cond:
        raise AssertionError(" ".join(repr(w) for w in what))
