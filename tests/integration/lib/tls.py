"""The one TLS helper of the integration tests: a throwaway CA and a server
certificate for 127.0.0.1 / localhost, made with the openssl CLI
($FQ_OPENSSL, else openssl on PATH).  P-256 keys: quick to make."""

import os
import subprocess

OPENSSL = os.environ.get("FQ_OPENSSL") or "openssl"


def _run(*args):
    r = subprocess.run((OPENSSL,) + args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr}")


def make_tls(d):
    """Make ca.key/ca.pem and srv.key/srv.pem (signed by that CA, for
    IP:127.0.0.1 and DNS:localhost, serverAuth) in directory d.  Returns
    (server cert, server key, CA cert) paths."""
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, crt = os.path.join(d, "srv.key"), os.path.join(d, "srv.csr"), os.path.join(d, "srv.pem")
    ext = os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
         "-subj", "/CN=fleetq test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign")
    _run("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    _run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext)
    return crt, key, ca_crt
