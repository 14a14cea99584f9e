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


def make_tls(d, names="IP:127.0.0.1,DNS:localhost", stem="srv", reuse_ca=False):
    """Make ca.key/ca.pem and srv.key/srv.pem (signed by that CA, for
    IP:127.0.0.1 and DNS:localhost, serverAuth) in directory d.  Returns
    (server cert, server key, CA cert) paths.  names: the certificate's
    subjectAltName; stem: its files' names; reuse_ca: sign with the CA
    already in d (a certificate the same daemon trusts, for other names)."""
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, crt = (os.path.join(d, stem + x) for x in (".key", ".csr", ".pem"))
    ext = os.path.join(d, stem + "-ext.cnf")
    with open(ext, "w") as f:
        f.write(f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    if not reuse_ca:
        _run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "2",
             "-subj", "/CN=fleetq test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")
    cn = names.split(",")[0].split(":", 1)[1]
    _run("req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    _run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext)
    return crt, key, ca_crt
