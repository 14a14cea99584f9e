"""Fixtures: a real fleetsim + fleetqd + account per test module, started
by the integration harness of the repository (tests/integration/lib), with
the binaries of FQ_BIN (default build/bin).  Run from the repository:

    /usr/bin/python3 -m pytest clients/python/tests
"""

import json
import os
import sys

import pytest
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("FQ_SRC") or os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, ".."))  # the package under test, not an installed one

from lib import dispatch as dl  # noqa: E402
from lib import fqlib  # noqa: E402

import fleetq_client  # noqa: E402

# An energy site id above 2**53: a float (a JavaScript number) cannot hold it.
BIG_SITE = 2 ** 60 + 7
ACCOUNT = "acct1"


def vins(n, base=0):
    return [dl.vin(base + i) for i in range(n)]


VINS = vins(8)
ASLEEP = dl.vin(50)
UNPAIRED = dl.vin(51)


def vehicles():
    return ([dl.default_vehicle(v) for v in VINS]
            + [dl.default_vehicle(ASLEEP, asleep=True, wake_ms=2500),
               dl.default_vehicle(UNPAIRED, paired=False)])


@pytest.fixture(scope="module")
def world(request):
    """fleetsim (8 awake cars, one asleep, one unpaired, a site with a big
    id) + fleetqd (2 shards) + account acct1."""
    w = dl.World(request.module.__name__, vehicles=vehicles(), sites=[{"id": BIG_SITE}],
                 shards=2, daemon_opts={"--wake-poll-ms": 1500})
    yield w
    w.close()


@pytest.fixture
def client(world):
    c = fleetq_client.Client(world.daemon.endpoint, publish=world.daemon.publish, timeout=5)
    yield c
    c.close()


def keypair():
    pub, sec = zmq.curve_keypair()
    return pub.decode(), sec.decode()


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class CurveWorld:
    """fleetsim + a fleetqd with CURVE on: keys for a tenant service
    (acme), an admin and a service of another tenant (globex)."""

    def __init__(self, name):
        self.w = dl.World(name, vehicles=[dl.default_vehicle(v) for v in VINS],
                          sites=[{"id": BIG_SITE}], shards=2, start=False)
        d = os.path.join(self.w.tmp, "curve")
        os.makedirs(d, mode=0o700)
        self.server_pub, sec = keypair()
        self.server_file = os.path.join(d, "server.key")
        write_private(self.server_file, f"public {self.server_pub}\nsecret {sec}\n")
        self.keys = {n: keypair() for n in ("acme", "ops", "globex")}
        self.key_files = {}
        for n, (pub, sec) in self.keys.items():
            p = os.path.join(d, f"{n}.key")
            write_private(p, f"public {pub}\nsecret {sec}\n")
            self.key_files[n] = p
        entries = [
            {"name": "acme-svc", "key": self.keys["acme"][0], "tenants": ["acme"],
             "roles": ["submit", "read", "cancel", "subscribe"]},
            {"name": "globex-svc", "key": self.keys["globex"][0], "tenants": ["globex"],
             "roles": ["submit", "read", "cancel", "subscribe"]},
            {"name": "ops", "key": self.keys["ops"][0], "tenants": ["*"],
             "roles": ["admin", "read", "subscribe"]},
        ]
        self.clients_file = os.path.join(d, "clients.json")
        write_private(self.clients_file, json.dumps(entries))
        self.w.daemon.extra += ["--curve-secret", self.server_file, "--clients", self.clients_file]
        self.w.sim.start()
        self.w.daemon.start()
        self.endpoint, self.publish = self.w.daemon.endpoint, self.w.daemon.publish
        with self.client("ops") as ops:
            a = self.w.accounts[0]
            ops.account_add(a["id"], a["token"], a["refresh_token"], dl.CLIENT_ID,
                            base_url=self.w.base_url)

    def client(self, name, **kw):
        return fleetq_client.Client(self.endpoint, self.key_files[name], self.server_pub,
                                    publish=self.publish, **kw)

    def close(self):
        self.w.close()


@pytest.fixture(scope="module")
def curve_world(request):
    cw = CurveWorld(request.module.__name__)
    yield cw
    cw.close()


def unique(prefix):
    """A tenant or key that no other test of the session uses."""
    unique.n += 1
    return f"{prefix}-{os.getpid()}-{unique.n}"


unique.n = 0

__all__ = ["dl", "fqlib", "fleetq_client", "BIG_SITE", "ACCOUNT", "VINS", "ASLEEP", "UNPAIRED",
           "unique", "keypair", "write_private"]
