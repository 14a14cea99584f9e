"""cmake --install and the client library (issue 14 point 5).

Installs the build into a temporary prefix and checks:
* the files: the four programs, the unit, the sysusers.d file, the man
  pages (when scdoc built them), libfleetq-client shared and static, the
  headers, fleetq.pc and the CMake package; the installed programs run;
* the library holds the client part only: no symbol defined by the daemon,
  fleet, vcp or sim parts (their archives in the build) is defined in
  either library, and the shared one exports exactly the functions that
  include/fleetq/*.h declare;
* examples/c builds with `cc ... $(pkg-config --cflags --libs fleetq)`
  (PKG_CONFIG_PATH into the prefix) and with CMake's find_package(fleetq)
  against the static library, and both binaries ping, submit and get
  against a real fleetqd; the installed `fleetq get` sees the same command;
* DESTDIR staging with the prefix /usr writes /usr paths into the unit and
  fleetq.pc and the config file to /etc; installing again keeps an edited
  config file.
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile

from lib import fqlib
from lib.fqlib import Daemon, json_lines, log, run_test, vin

BUILD = os.path.dirname(fqlib.BIN)
SRC = fqlib.SRC
PARTS_OUTSIDE = ("fq_daemon", "fq_fleet", "fq_vcp", "fq_sim")


def sanitizer_flags():
    """The -fsanitize flags of this build (an ASan or TSan build installs
    instrumented libraries: a program linking them needs the runtime)."""
    flags = []
    try:
        cache = open(os.path.join(BUILD, "CMakeCache.txt")).read()
    except OSError:
        return flags
    if re.search(r"^FQ_SANITIZE:BOOL=(ON|1|TRUE)", cache, re.M | re.I):
        flags.append("-fsanitize=address,undefined")
    if re.search(r"^FQ_TSAN:BOOL=(ON|1|TRUE)", cache, re.M | re.I):
        flags.append("-fsanitize=thread")
    return flags


def sh(args, timeout=180, env=None, cwd=None):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def nm_defined(path, dynamic=False, extern=True):
    args = ["nm", "--defined-only"] + (["-D"] if dynamic else []) + (["-g"] if extern else [])
    r = sh(args + [path])
    if r.returncode != 0:
        raise RuntimeError(f"nm {path}: {r.stderr}")
    out = set()
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.add(parts[2].split("@")[0])
    return out


def declared_api():
    """Functions declared by the installed headers (the library's API)."""
    names = set()
    for h in glob.glob(os.path.join(SRC, "include", "fleetq", "*.h")):
        for line in open(h):
            if re.match(r"^[a-z]", line):
                m = re.search(r"[ *](fq_[a-z0-9_]+)\(", line)
                if m:
                    names.add(m.group(1))
    return names


def files_checks(c, prefix):
    for prog in ("fleetqd", "fleetq", "fleetsim", "fleetq-replay"):
        p = os.path.join(prefix, "bin", prog)
        c.ok(os.access(p, os.X_OK), f"installed: bin/{prog}")
        r = sh([p, "--help"], timeout=20)
        c.eq(r.returncode, 0, f"installed {prog} --help runs", r.stderr)
    for f in ("lib/systemd/system/fleetqd.service", "lib/sysusers.d/fleetq.conf",
              "lib/libfleetq-client.a", "lib/libfleetq-client.so",
              "lib/pkgconfig/fleetq.pc", "lib/cmake/fleetq/fleetqConfig.cmake",
              "lib/cmake/fleetq/fleetqConfigVersion.cmake", "lib/cmake/fleetq/fleetqTargets.cmake",
              "etc/fleetq/fleetqd.json"):
        c.ok(os.path.isfile(os.path.join(prefix, f)), f"installed: {f}")
    so = os.path.realpath(os.path.join(prefix, "lib", "libfleetq-client.so"))
    c.ok(re.search(r"libfleetq-client\.so\.0\.\d+\.\d+$", so), "shared library is versioned", so)
    r = sh(["objdump", "-p", so])
    c.ok("SONAME               libfleetq-client.so.0" in r.stdout, "SONAME libfleetq-client.so.0",
         [l for l in r.stdout.splitlines() if "SONAME" in l])
    hdrs = sorted(os.path.basename(h) for h in glob.glob(os.path.join(prefix, "include", "fleetq",
                                                                      "*.h")))
    want = sorted(os.path.basename(h) for h in glob.glob(os.path.join(SRC, "include", "fleetq",
                                                                      "*.h")))
    c.eq(hdrs, want, "installed headers: include/fleetq/*.h")
    if shutil.which("scdoc"):
        for page in ("man8/fleetqd.8", "man1/fleetq.1", "man1/fleetsim.1", "man1/fleetq-replay.1",
                     "man7/fleetq-wire.7"):
            c.ok(os.path.isfile(os.path.join(prefix, "share", "man", page)),
                 f"installed: share/man/{page}")
    else:
        log("SKIP man page install check: scdoc not found (Debian package scdoc)")


def symbol_checks(c, prefix):
    libdir = os.path.join(BUILD, "lib")
    forbidden = {}
    for part in PARTS_OUTSIDE:
        for s in nm_defined(os.path.join(libdir, f"lib{part}.a")):
            forbidden[s] = part
    # The check can fail: the daemon's own API is in the set.
    c.ok("fq_shard_new" in forbidden and "fq_store_open_datadir" in forbidden
         and "fq_vcp_key_load" in forbidden, "daemon / vcp symbols known from the archives",
         len(forbidden))
    static = nm_defined(os.path.join(prefix, "lib", "libfleetq-client.a"))
    shared_all = nm_defined(os.path.join(prefix, "lib", "libfleetq-client.so"), extern=False)
    leak_a = sorted(f"{s} ({forbidden[s]})" for s in static if s in forbidden)
    leak_so = sorted(f"{s} ({forbidden[s]})" for s in shared_all if s in forbidden)
    c.eq(leak_a, [], "no daemon / fleet / vcp / sim symbol in libfleetq-client.a")
    c.eq(leak_so, [], "no daemon / fleet / vcp / sim symbol in libfleetq-client.so")
    exported = nm_defined(os.path.join(prefix, "lib", "libfleetq-client.so"), dynamic=True)
    api = declared_api()
    c.ok(len(api) > 50 and "fq_client_new_opts" in api, "API parsed from the headers", len(api))
    c.eq(sorted(exported - api), [], "the shared library exports nothing the headers do not declare")
    c.eq(sorted(api - exported), [], "every function the headers declare is exported")


def example_checks(c, prefix, tmp):
    env = dict(os.environ)
    env["PKG_CONFIG_PATH"] = os.path.join(prefix, "lib", "pkgconfig")
    r = sh(["pkg-config", "--cflags", "--libs", "fleetq"], env=env)
    c.ok(r.returncode == 0 and "-lfleetq-client" in r.stdout
         and f"-I{prefix}/include" in r.stdout, "pkg-config --cflags --libs fleetq", r)
    r = sh(["pkg-config", "--modversion", "fleetq"], env=env)
    c.ok(r.returncode == 0 and re.match(r"\d+\.\d+\.\d+$", r.stdout.strip()),
         "pkg-config --modversion fleetq", r.stdout)
    src = os.path.join(SRC, "examples", "c", "fleetq_example.c")
    exe_pc = os.path.join(tmp, "example-pc")
    flags = r.returncode == 0 and sh(["pkg-config", "--cflags", "--libs", "fleetq"],
                                     env=env).stdout.split()
    san = sanitizer_flags()
    r = sh(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror"] + san + [src] + (flags or []) +
           ["-o", exe_pc], env=env)
    c.ok(r.returncode == 0, "examples/c builds with cc $(pkg-config --cflags --libs fleetq)",
         r.stdout, r.stderr)

    bdir = os.path.join(tmp, "example-cmake")
    r = sh(["cmake", "-S", os.path.join(SRC, "examples", "c"), "-B", bdir,
            f"-DCMAKE_PREFIX_PATH={prefix}", "-DFLEETQ_STATIC=ON",
            f"-DCMAKE_C_FLAGS={' '.join(san)}", f"-DCMAKE_EXE_LINKER_FLAGS={' '.join(san)}"])
    ok = c.ok(r.returncode == 0, "examples/c configures with find_package(fleetq)",
              r.stdout[-800:], r.stderr[-800:])
    if ok:
        r = sh(["cmake", "--build", bdir])
        c.ok(r.returncode == 0, "examples/c builds against fleetq::client_static",
             r.stdout[-800:], r.stderr[-800:])
    exe_cm = os.path.join(bdir, "fleetq-example")
    r = sh(["ldd", exe_cm])
    c.ok(r.returncode == 0 and "libfleetq-client" not in r.stdout,
         "the static build does not need libfleetq-client.so", r.stdout)

    runenv = dict(os.environ)
    runenv["LD_LIBRARY_PATH"] = os.path.join(prefix, "lib")
    runenv.pop("FLEETQ_CURVE_KEY", None)
    runenv.pop("FLEETQ_SERVER_KEY", None)
    # --no-dispatch: the example's commands stay queued (what it prints);
    # fleetqd refuses submits for accounts it does not have.
    with Daemon(shards=2, extra=["--no-dispatch"], accounts=["alice"]) as d:
        ids = []
        for n, exe in enumerate((exe_pc, exe_cm)):
            r = sh([exe, d.endpoint, "acme", f"example-{n}", "alice", vin(n + 1),
                    "set_charge_limit", "percent=80"], env=runenv, timeout=30)
            lines = r.stdout.splitlines()
            c.ok(r.returncode == 0 and len(lines) == 3, f"example {n}: ping, submit, get",
                 r.stdout, r.stderr)
            if len(lines) != 3:
                continue
            c.ok(re.match(r"ping: fleetqd \d+\.\d+\.\d+, 2 shard\(s\)$", lines[0]),
                 f"example {n}: ping line", lines[0])
            m = re.match(r"submit: accepted ([0-9a-f]{16}) \(queued\)$", lines[1])
            c.ok(m, f"example {n}: submit accepted", lines[1])
            if m:
                ids.append(m.group(1))
                c.eq(lines[2], f"get: {m.group(1)} set_charge_limit on {vin(n + 1)} is queued",
                     f"example {n}: get reads the command back")
        # The installed CLI reads what the example stored.
        for i, cid in enumerate(ids):
            r = sh([os.path.join(prefix, "bin", "fleetq"), "get", "--id", cid, "--endpoint",
                    d.endpoint, "--json"], timeout=30)
            j = json_lines(r.stdout) if r.returncode == 0 else []
            cmd = j[0].get("command", {}) if j else {}
            c.ok(cmd.get("key") == f"example-{i}" and cmd.get("params") == {"percent": 80},
                 f"installed fleetq get sees example {i}'s command", r.stdout, r.stderr)
        # Same key, same content: a duplicate, as for any client.
        r = sh([exe_pc, d.endpoint, "acme", "example-0", "alice", vin(1), "set_charge_limit",
                "percent=80"], env=runenv, timeout=30)
        c.ok(r.returncode == 0 and ids and f"submit: duplicate {ids[0]}" in r.stdout,
             "example: a retry is a duplicate", r.stdout, r.stderr)
        # A refusal is reported with the daemon's error code, exit 1.
        r = sh([exe_pc, d.endpoint, "acme", "example-9", "alice", vin(9), "set_charge_limit",
                "percent=180"], env=runenv, timeout=30)
        c.ok(r.returncode == 1 and "submit: bad_param" in r.stderr, "example: refusal, exit 1",
             r.stdout, r.stderr)


def destdir_checks(c, tmp):
    stage = os.path.join(tmp, "stage")
    env = dict(os.environ)
    env["DESTDIR"] = stage
    r = sh(["cmake", "--install", BUILD, "--prefix", "/usr"], env=env)
    c.ok(r.returncode == 0, "DESTDIR install with prefix /usr", r.stderr[-500:])
    unit = os.path.join(stage, "usr", "lib", "systemd", "system", "fleetqd.service")
    text = open(unit).read() if os.path.isfile(unit) else ""
    c.ok("ExecStart=/usr/bin/fleetqd --config /etc/fleetq/fleetqd.json" in text,
         "staged unit names /usr/bin/fleetqd and /etc/fleetq/fleetqd.json",
         [l for l in text.splitlines() if l.startswith("ExecStart")])
    c.ok(stage not in text, "no DESTDIR in the staged unit")
    conf = os.path.join(stage, "etc", "fleetq", "fleetqd.json")
    c.ok(os.path.isfile(conf), "config file staged to DESTDIR/etc/fleetq")
    pcs = glob.glob(os.path.join(stage, "usr", "lib*", "**", "fleetq.pc"), recursive=True)
    pc = open(pcs[0]).read() if pcs else ""
    c.ok("prefix=/usr\n" in pc and stage not in pc, "staged fleetq.pc says prefix=/usr", pcs)
    # Installing again keeps an operator's config file.
    if os.path.isfile(conf):
        with open(conf, "w") as f:
            f.write('{"shards": 3}\n')
        r = sh(["cmake", "--install", BUILD, "--prefix", "/usr"], env=env)
        c.eq(open(conf).read(), '{"shards": 3}\n', "installing again keeps the edited config")


def test(c):
    tmp = tempfile.mkdtemp(prefix="fq-install-")
    try:
        prefix = os.path.join(tmp, "prefix")
        r = sh(["cmake", "--install", BUILD, "--prefix", prefix])
        if not c.ok(r.returncode == 0, "cmake --install --prefix", r.stdout[-800:], r.stderr):
            return
        files_checks(c, prefix)
        symbol_checks(c, prefix)
        example_checks(c, prefix, tmp)
        destdir_checks(c, tmp)
    finally:
        if os.environ.get("FQ_KEEP"):
            log(f"keeping {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


run_test("install", test)
