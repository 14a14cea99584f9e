#!/usr/bin/python3
"""`fleetq keygen`, `fleetq pubkey` and `fleetq proto sign|decode` as a user
runs them: the signed message for the spec's vector inputs must be the
vector byte for byte; a second signature (other command, other clock) is
checked independently here with Python's hmac/hashlib and the
`cryptography` package (ECDH); bad params, bad key files and overwrites
are refused with the documented exit codes."""

import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile

BIN = os.environ.get("FQ_BIN", "../build/bin")
SRC = os.environ.get("FQ_SRC", "..")
FLEETQ = os.path.join(BIN, "fleetq")

failures = 0


def check(cond, what, r=None):
    global failures
    if cond:
        print("ok   " + what)
        return
    failures += 1
    print("FAIL " + what)
    if r is not None:
        print("     rc=%s\n     stdout=%r\n     stderr=%r" % (r.returncode, r.stdout, r.stderr))


def run(*args, stdin=None):
    return subprocess.run([FLEETQ, *args], capture_output=True, text=True, input=stdin, timeout=60)


def tlv(tag, value):
    assert len(value) <= 255
    return bytes([tag, len(value)]) + value


def main():
    with open(os.path.join(SRC, "tests", "data", "vectors.json")) as f:
        v = json.load(f)
    tmp = tempfile.mkdtemp(prefix="fq_proto_cli_")
    key = os.path.join(tmp, "client.pem")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, v["keys"]["client_private_pem"].encode())
    os.close(fd)
    hs, hc = v["handshake"], v["hmac_command"]
    base = ["proto", "sign", "--key", key, "--vin", v["vin"], "--session-info", hs["session_info"],
            "--routing-address", hs["routing_address"]]

    # 1. The vector, byte for byte.
    r = run(*base, "--now", "2650", "--lifetime", "5", "--uuid", hc["uuid"],
            "--command", "auto_conditioning_start")
    check(r.returncode == 0 and r.stdout.strip() == hc["routable_message"],
          "proto sign reproduces hmac_command.routable_message", r)

    # 2. Another command, checked independently: K from ECDH, K', metadata, tag.
    r = run(*base, "--now", "100000", "--lifetime", "30", "--uuid", "00" * 16,
            "--command", "set_charge_limit", "--params", '{"percent": 80}')
    check(r.returncode == 0, "proto sign set_charge_limit", r)
    msg = bytes.fromhex(r.stdout.strip())
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        priv = serialization.load_pem_private_key(v["keys"]["client_private_pem"].encode(), None)
        peer = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), bytes.fromhex(v["keys"]["vehicle_public_uncompressed"]))
        k = hashlib.sha1(priv.exchange(ec.ECDH(), peer)).digest()[:16]
        check(k.hex() == v["shared_key_K"], "python ECDH agrees on K")
        kp = hmac.new(k, b"authenticated command", hashlib.sha256).digest()
        payload = bytes.fromhex(v["payloads"]["set_charge_limit_80"]["hex"])
        epoch = bytes.fromhex(hc["epoch"])
        meta = (tlv(0, bytes([8])) + tlv(1, bytes([3])) + tlv(2, v["vin"].encode()) +
                tlv(3, epoch) + tlv(4, (100030).to_bytes(4, "big")) + tlv(5, (7).to_bytes(4, "big")) +
                tlv(7, (2).to_bytes(4, "big")) + b"\xff")
        tag = hmac.new(kp, meta + payload, hashlib.sha256).digest()
        check(tag in msg and payload in msg, "independent HMAC matches the tag in the message")
    except ImportError:
        print("skip independent check: python3-cryptography missing")

    # 3. decode prints the message as JSON.
    r = run("proto", "decode", hc["routable_message"])
    ok = r.returncode == 0
    if ok:
        j = json.loads(r.stdout)
        ok = (j["payload_decoded"]["command"] == "auto_conditioning_start" and
              j["signature_data"]["HMAC_Personalized_data"]["counter"] == 7 and
              j["signature_data"]["HMAC_Personalized_data"]["expires_at"] == 2655 and
              j["flags"] == 2)
    check(ok, "proto decode of the signed command", r)
    r = run("proto", "decode", stdin=v["fault_reply_unknown_key"]["routable_message"] + "\n")
    check(r.returncode == 0 and json.loads(r.stdout)["signedMessageStatus"]["reason"] ==
          v["fault_reply_unknown_key"]["status_reason"], "proto decode of the fault reply (stdin)", r)
    r = run("proto", "decode", hs["response_routable_message"])
    check(r.returncode == 0 and json.loads(r.stdout)["session_info"]["clock_time"] == 2650,
          "proto decode of the handshake reply", r)
    r = run("proto", "decode", "zz")
    check(r.returncode == 1, "proto decode of garbage: exit 1", r)

    # 4. Bad params are refused locally, before anything is signed.
    for params, needle in [('{"percent": 120}', "out of range"), ('{"percent": "80"}', "percent"),
                           ('{}', "required"), ('{"percent": 80, "x": 1}', "unknown")]:
        r = run(*base, "--now", "2650", "--command", "set_charge_limit", "--params", params)
        check(r.returncode == 1 and needle in r.stderr and r.stdout == "",
              "refused params %s" % params, r)
    r = run(*base, "--now", "2650", "--command", "no_such_thing")
    check(r.returncode == 1 and "unknown" in r.stderr, "unknown command refused", r)
    r = run(*base, "--now", "2650", "--command", "backup",
            "--params", '{"backup_reserve_percent": 20}')
    check(r.returncode == 1 and "energy-site" in r.stderr, "site command refused", r)
    r = run("proto", "sign", "--key", key)
    check(r.returncode == 2, "missing options: exit 2", r)

    # 5. keygen / pubkey.
    out = os.path.join(tmp, "keys")
    r = run("keygen", "--out", out)
    priv = os.path.join(out, "private.pem")
    check(r.returncode == 0 and "/.well-known/appspecific/com.tesla.3p.public-key.pem" in r.stdout,
          "keygen names the hosting path", r)
    check(os.stat(priv).st_mode & 0o777 == 0o600, "private.pem is 0600")
    r2 = run("keygen", "--out", out)
    check(r2.returncode == 1 and "overwrite" in r2.stderr, "keygen refuses to overwrite", r2)
    r3 = run("pubkey", "--key", priv)
    with open(os.path.join(out, "public.pem")) as f:
        pub = f.read()
    lines = r3.stdout.strip().split("\n")
    check(r3.returncode == 0 and r3.stdout.startswith(pub) and len(lines[-1]) == 130 and
          lines[-1].startswith("04") and lines[-1] in r.stdout, "pubkey prints PEM and hex", r3)
    os.chmod(priv, 0o640)
    r4 = run("pubkey", "--key", priv)
    check(r4.returncode == 1 and "chmod 600" in r4.stderr, "pubkey refuses a group-readable key", r4)
    os.chmod(priv, 0o600)
    link = os.path.join(tmp, "link.pem")
    os.symlink(priv, link)
    r5 = run("pubkey", "--key", link)
    check(r5.returncode == 1 and "symbolic link" in r5.stderr, "pubkey refuses a symlink", r5)
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        p384 = os.path.join(tmp, "p384.pem")
        fd = os.open(p384, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, other)
        os.close(fd)
        r6 = run("pubkey", "--key", p384)
        check(r6.returncode == 1 and "P-256" in r6.stderr, "pubkey refuses a P-384 key", r6)
    except ImportError:
        pass

    print("%s" % ("all passed" if failures == 0 else "%d failed" % failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
