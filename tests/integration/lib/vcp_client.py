"""A Tesla Vehicle Command Protocol client written from the spec alone
(../shared/spec/vehicle-command-protocol.md), independent of fleetq's C
code: its own protobuf encoder/decoder, key handling, handshake, HMAC
signing and reply decryption with Debian's python3-cryptography.

Used by the fleetsim integration tests to prove that a client somebody else
wrote from the same spec gets through a handshake and signed commands, and
by perf/bench_sim_gen.py to pre-sign benchmark traffic.
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import time
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DOMAIN_VCSEC = 2
DOMAIN_INFOTAINMENT = 3
FLAG_ENCRYPT_RESPONSE = 2

FAULTS = [
    "NONE", "BUSY", "TIMEOUT", "UNKNOWN_KEY_ID", "INACTIVE_KEY", "INVALID_SIGNATURE",
    "INVALID_TOKEN_OR_COUNTER", "INSUFFICIENT_PRIVILEGES", "INVALID_DOMAINS", "INVALID_COMMAND",
    "DECODING", "INTERNAL", "WRONG_PERSONALIZATION", "BAD_PARAMETER", "KEYCHAIN_IS_FULL",
    "INCORRECT_EPOCH", "IV_INCORRECT_LENGTH", "TIME_EXPIRED", "NOT_PROVISIONED_WITH_IDENTITY",
    "COULD_NOT_HASH_METADATA", "TIME_TO_LIVE_TOO_LONG", "REMOTE_ACCESS_DISABLED",
    "REMOTE_SERVICE_ACCESS_DISABLED", "COMMAND_REQUIRES_ACCOUNT_CREDENTIALS",
    "REQUEST_MTU_EXCEEDED", "RESPONSE_MTU_EXCEEDED", "REPEATED_COUNTER", "INVALID_KEY_HANDLE",
    "REQUIRES_RESPONSE_ENCRYPTION",
]

# Signatures.Tag
TAG_SIGNATURE_TYPE, TAG_DOMAIN, TAG_PERSONALIZATION, TAG_EPOCH = 0, 1, 2, 3
TAG_EXPIRES_AT, TAG_COUNTER, TAG_CHALLENGE, TAG_FLAGS = 4, 5, 6, 7
TAG_REQUEST_HASH, TAG_FAULT, TAG_END = 8, 9, 255
# Signatures.SignatureType
SIG_HMAC, SIG_HMAC_PERSONALIZED, SIG_AES_GCM_RESPONSE = 6, 8, 9


class ProtocolError(Exception):
    pass


# ---- protobuf, by hand ---------------------------------------------------------

def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(field, v):
    return _varint(field << 3) + _varint(v)


def f_bytes(field, b):
    return _varint(field << 3 | 2) + _varint(len(b)) + b


def f_fixed32(field, v):
    return _varint(field << 3 | 5) + struct.pack("<I", v)


def f_float(field, v):
    return _varint(field << 3 | 5) + struct.pack("<f", v)


def decode(buf):
    """Decode one protobuf message into {field: [values]}; length-delimited
    values stay bytes, varints ints, fixed32 ints."""
    out = {}
    i = 0
    n = len(buf)

    def rd_varint():
        nonlocal i
        shift = 0
        v = 0
        while True:
            if i >= n or shift > 63:
                raise ProtocolError("truncated varint")
            b = buf[i]
            i += 1
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7

    while i < n:
        key = rd_varint()
        field, wt = key >> 3, key & 7
        if wt == 0:
            v = rd_varint()
        elif wt == 2:
            ln = rd_varint()
            if i + ln > n:
                raise ProtocolError("truncated bytes")
            v = bytes(buf[i:i + ln])
            i += ln
        elif wt == 5:
            if i + 4 > n:
                raise ProtocolError("truncated fixed32")
            v = struct.unpack("<I", buf[i:i + 4])[0]
            i += 4
        elif wt == 1:
            if i + 8 > n:
                raise ProtocolError("truncated fixed64")
            v = struct.unpack("<Q", buf[i:i + 8])[0]
            i += 8
        else:
            raise ProtocolError("wire type %d" % wt)
        out.setdefault(field, []).append(v)
    return out


def first(msg, field, default=None):
    v = msg.get(field)
    return v[-1] if v else default


# ---- metadata and keys ----------------------------------------------------------

def tlv(items):
    """items: list of (tag, bytes) in increasing tag order; appends END."""
    out = bytearray()
    last = -1
    for tag, val in items:
        if tag <= last or len(val) > 255:
            raise ValueError("bad metadata item")
        last = tag
        out += bytes([tag, len(val)]) + val
    out.append(TAG_END)
    return bytes(out)


def u32(v):
    return struct.pack(">I", v)


def encode_public(pub):
    return pub.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def load_private(pem):
    if isinstance(pem, str):
        pem = pem.encode()
    return serialization.load_pem_private_key(pem, password=None)


def new_private():
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def shared_key(priv, peer65):
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer65)
    x = priv.exchange(ec.ECDH(), peer)
    return hashlib.sha1(x).digest()[:16]


def hmac256(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


def session_info_tag(k, vin, challenge, info):
    key = hmac256(k, b"session info")
    meta = tlv([(TAG_SIGNATURE_TYPE, bytes([SIG_HMAC])), (TAG_PERSONALIZATION, vin.encode()),
                (TAG_CHALLENGE, challenge)])
    return hmac256(key, meta + info)


def decode_session_info(b):
    m = decode(b)
    return {"counter": first(m, 1, 0), "public_key": first(m, 2, b""), "epoch": first(m, 3, b""),
            "clock_time": first(m, 4, 0), "status": first(m, 5, 0), "handle": first(m, 6, 0)}


# ---- messages ---------------------------------------------------------------------

def destination_domain(d):
    return f_varint(1, d)


def destination_routing(r):
    return f_bytes(2, r)


def decode_routable(b):
    m = decode(b)
    r = {"raw": m}
    to = first(m, 6)
    fr = first(m, 7)
    r["to_domain"] = first(decode(to), 1) if to is not None else None
    r["to_routing"] = first(decode(to), 2) if to is not None else None
    r["from_domain"] = first(decode(fr), 1) if fr is not None else None
    r["payload"] = first(m, 10)
    st = first(m, 12)
    if st is not None:
        sm = decode(st)
        r["op_status"] = first(sm, 1, 0)
        r["fault"] = first(sm, 2, 0)
    else:
        r["op_status"] = None
        r["fault"] = 0
    r["session_info"] = first(m, 15)
    r["request_uuid"] = first(m, 50)
    r["uuid"] = first(m, 51)
    r["flags"] = first(m, 52, 0)
    r["session_info_tag"] = None
    r["gcm"] = None
    sd = first(m, 13)
    if sd is not None:
        s = decode(sd)
        tagmsg = first(s, 6)
        if tagmsg is not None:
            r["session_info_tag"] = first(decode(tagmsg), 1)
        g = first(s, 9)
        if g is not None:
            gm = decode(g)
            r["gcm"] = {"nonce": first(gm, 1, b""), "counter": first(gm, 2, 0),
                        "tag": first(gm, 3, b"")}
    return r


class Session:
    """Client state for one (VIN, domain)."""

    def __init__(self, vin, domain, k, epoch, counter, clock_time, car_pub):
        self.vin = vin
        self.domain = domain
        self.k = k
        self.epoch = epoch
        self.counter = counter
        self.clock_offset = time.time() - clock_time
        self.car_pub = car_pub
        self.routing = os.urandom(16)

    def vehicle_now(self):
        return int(time.time() - self.clock_offset)

    def metadata(self, expires_at, counter, flags):
        items = [(TAG_SIGNATURE_TYPE, bytes([SIG_HMAC_PERSONALIZED])),
                 (TAG_DOMAIN, bytes([self.domain])), (TAG_PERSONALIZATION, self.vin.encode()),
                 (TAG_EPOCH, self.epoch), (TAG_EXPIRES_AT, u32(expires_at)),
                 (TAG_COUNTER, u32(counter))]
        if flags:
            items.append((TAG_FLAGS, u32(flags)))
        return tlv(items)

    def sign(self, client_pub65, payload, lifetime=5, counter=None, expires_at=None,
             flags=FLAG_ENCRYPT_RESPONSE, uuid=None, epoch=None, tamper=False):
        """Build a signed RoutableMessage; returns (bytes, request-state)."""
        if counter is None:
            self.counter += 1
            counter = self.counter
        if expires_at is None:
            expires_at = self.vehicle_now() + lifetime
        ep = epoch if epoch is not None else self.epoch
        saved = self.epoch
        self.epoch = ep
        meta = self.metadata(expires_at, counter, flags)
        self.epoch = saved
        tag = hmac256(hmac256(self.k, b"authenticated command"), meta + payload)
        if tamper:
            tag = bytes([tag[0] ^ 1]) + tag[1:]
        uuid = uuid or os.urandom(16)
        hm = f_bytes(1, ep) + f_varint(2, counter) + f_fixed32(3, expires_at) + f_bytes(4, tag)
        sig = f_bytes(1, f_bytes(1, client_pub65)) + f_bytes(8, hm)
        msg = (f_bytes(6, destination_domain(self.domain)) +
               f_bytes(7, destination_routing(self.routing)) + f_bytes(10, payload) +
               f_bytes(13, sig) + f_bytes(51, uuid))
        if flags:
            msg += f_varint(52, flags)
        return msg, {"uuid": uuid, "tag": tag, "counter": counter, "flags": flags,
                     "seen": set()}

    def resync(self, info_bytes, tag, req_uuid):
        want = session_info_tag(self.k, self.vin, req_uuid, info_bytes)
        if not hmac.compare_digest(want, tag):
            raise ProtocolError("session info tag mismatch")
        si = decode_session_info(info_bytes)
        if si["epoch"] != self.epoch:
            self.epoch = si["epoch"]
            self.counter = si["counter"]
        else:
            self.counter = max(self.counter, si["counter"])
        self.clock_offset = time.time() - si["clock_time"]
        return si

    def open_reply(self, reply, req):
        """Authenticate and decode the car's reply.  Returns a dict with
        fault (name), app (plain application bytes or None), resynced."""
        r = decode_routable(reply)
        if r["request_uuid"] != req["uuid"]:
            raise ProtocolError("reply answers another request")
        out = {"fault": FAULTS[r["fault"]] if r["fault"] < len(FAULTS) else str(r["fault"]),
               "op_status": r["op_status"], "app": None, "resynced": False,
               "encrypted": False}
        if r["session_info"] is not None and r["session_info_tag"] is not None:
            self.resync(r["session_info"], r["session_info_tag"], req["uuid"])
            out["resynced"] = True
        if r["fault"]:
            return out
        if r["gcm"] is not None:
            g = r["gcm"]
            if g["counter"] in req["seen"]:
                raise ProtocolError("replayed reply counter")
            h = bytes([SIG_HMAC_PERSONALIZED]) + (
                req["tag"][:16] if self.domain == DOMAIN_VCSEC else req["tag"])
            meta = tlv([(TAG_SIGNATURE_TYPE, bytes([SIG_AES_GCM_RESPONSE])),
                        (TAG_DOMAIN, bytes([r["from_domain"]])),
                        (TAG_PERSONALIZATION, self.vin.encode()),
                        (TAG_COUNTER, u32(g["counter"])), (TAG_FLAGS, u32(r["flags"])),
                        (TAG_REQUEST_HASH, h), (TAG_FAULT, u32(r["fault"]))])
            aad = hashlib.sha256(meta).digest()
            out["app"] = AESGCM(self.k).decrypt(g["nonce"], (r["payload"] or b"") + g["tag"], aad)
            req["seen"].add(g["counter"])
            out["encrypted"] = True
        else:
            out["app"] = r["payload"] or b""
        return out


class Client:
    """The fleet's key plus handshakes with cars."""

    def __init__(self, private_key):
        self.key = private_key
        self.pub = encode_public(private_key.public_key())

    def handshake_request(self, domain, routing=None, uuid=None):
        routing = routing or os.urandom(16)
        uuid = uuid or os.urandom(16)
        msg = (f_bytes(6, destination_domain(domain)) + f_bytes(7, destination_routing(routing)) +
               f_bytes(14, f_bytes(1, self.pub)) + f_bytes(51, uuid))
        return msg, {"uuid": uuid, "routing": routing, "domain": domain}

    def handshake_finish(self, vin, reply, req):
        """Returns (Session or None, decoded reply, SessionInfo dict)."""
        r = decode_routable(reply)
        if r["request_uuid"] != req["uuid"]:
            raise ProtocolError("handshake reply answers another request")
        if r["fault"]:
            return None, r, None
        if r["session_info"] is None or r["session_info_tag"] is None:
            raise ProtocolError("handshake reply without session info")
        si = decode_session_info(r["session_info"])
        k = shared_key(self.key, si["public_key"])
        want = session_info_tag(k, vin, req["uuid"], r["session_info"])
        if not hmac.compare_digest(want, r["session_info_tag"]):
            raise ProtocolError("session info tag mismatch")
        if si["status"] != 0:
            return None, r, si
        s = Session(vin, req["domain"], k, si["epoch"], si["counter"], si["clock_time"],
                    si["public_key"])
        s.routing = req["routing"]
        return s, r, si


# ---- payloads (spec section 2/3) ---------------------------------------------------

def action(field, body=b""):
    """CarServer.Action{vehicleAction{<field>: body}}."""
    return f_bytes(2, f_bytes(field, body))


PAYLOADS = {
    "door_lock": (DOMAIN_VCSEC, f_varint(2, 1)),
    "door_unlock": (DOMAIN_VCSEC, f_varint(2, 0)),
    "auto_conditioning_start": (DOMAIN_INFOTAINMENT, action(10, f_varint(1, 1))),
    "auto_conditioning_stop": (DOMAIN_INFOTAINMENT, action(10, b"")),
    "charge_start": (DOMAIN_INFOTAINMENT, action(6, f_bytes(2, b""))),
    "charge_stop": (DOMAIN_INFOTAINMENT, action(6, f_bytes(5, b""))),
    "honk_horn": (DOMAIN_INFOTAINMENT, action(27)),
    "flash_lights": (DOMAIN_INFOTAINMENT, action(26)),
    "charge_port_door_open": (DOMAIN_INFOTAINMENT, action(62)),
}


def set_charge_limit(pct):
    return DOMAIN_INFOTAINMENT, action(5, f_varint(1, pct & 0xFFFFFFFFFFFFFFFF))


def set_charging_amps(a):
    return DOMAIN_INFOTAINMENT, action(43, f_varint(1, a & 0xFFFFFFFFFFFFFFFF))


def set_vehicle_name(name):
    return DOMAIN_INFOTAINMENT, action(54, f_bytes(1, name.encode()))


def set_sentry_mode(on):
    return DOMAIN_INFOTAINMENT, action(30, f_varint(1, 1) if on else b"")


def set_temps(driver, passenger):
    return DOMAIN_INFOTAINMENT, action(14, f_float(6, driver) + f_float(7, passenger))


def actuate_trunk(which):
    return DOMAIN_VCSEC, f_bytes(4, f_varint(5 if which == "rear" else 6, 1))


def carserver_response(app):
    """Decode CarServer.Response -> (ok, reason)."""
    m = decode(app)
    st = first(m, 1)
    if st is None:
        return True, ""
    s = decode(st)
    ok = first(s, 1, 0) == 0
    reason = ""
    rr = first(s, 2)
    if rr is not None:
        reason = first(decode(rr), 1, b"").decode()
    return ok, reason


# ---- Fleet API over HTTP ------------------------------------------------------------

class Fleet:
    """Minimal Fleet API client (urllib)."""

    def __init__(self, base, token, context=None, timeout=10):
        self.base = base.rstrip("/")
        self.token = token
        self.context = context
        self.timeout = timeout

    def call(self, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        h = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"}
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as r:
                raw = r.read()
                return r.status, dict(r.headers), (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                j = json.loads(raw) if raw else None
            except ValueError:
                j = raw
            return e.code, dict(e.headers), j

    def signed(self, vin, msg):
        st, hd, j = self.call("POST", "/api/1/vehicles/%s/signed_command" % vin,
                              {"routable_message": base64.b64encode(msg).decode()})
        reply = base64.b64decode(j["response"]) if st == 200 else None
        return st, j, reply

    def session(self, client, vin, domain):
        msg, req = client.handshake_request(domain)
        st, j, reply = self.signed(vin, msg)
        if st != 200:
            raise ProtocolError("handshake HTTP %d %r" % (st, j))
        return client.handshake_finish(vin, reply, req)

    def command(self, client, session, vin, payload, **kw):
        msg, req = session.sign(client.pub, payload, **kw)
        st, j, reply = self.signed(vin, msg)
        if st != 200:
            return st, j, None
        return st, j, session.open_reply(reply, req)
