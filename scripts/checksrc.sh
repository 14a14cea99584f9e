#!/usr/bin/env bash
# checksrc: the source rules that a compiler does not enforce, checked on
# every run of scripts/test.sh.  Each finding is one line
#   path:line: rule: what is wrong
# and any finding makes the script exit 1 (2 for a usage or setup error).
#
#   scripts/checksrc.sh [--sources] [--cycles] [BUILD_DIR]
#     --sources  only the text rules (no build needed; test.sh runs this
#                before the build)
#     --cycles   only the cycle check on BUILD_DIR's object files (test.sh
#                runs this after the build)
#     neither    both; BUILD_DIR defaults to build/
#
# Files checked: every .c and .h under src/, tools/, perf/, tests/ and
# include/.  Comments and string literals are blanked out first, so prose
# that names a banned call is not a finding.
#
# Rules
#   strerror        strerror() shares one buffer between threads, and almost
#                   every part of fleetq runs in threads: write
#                   fq_strerror(-errno) (include/fleetq/error.h), which is
#                   thread-safe.  Banned everywhere, so no file has to know
#                   whether it runs on a thread.
#   sprintf         sprintf() and vsprintf() have no bound: use snprintf() or
#                   vsnprintf().
#   int-header      Parts are the folders under src/ (base, wire, vcp, fleet,
#                   daemon, client, sim).  A header named *_int.h is internal
#                   to its part: only files of that part may include it.
#                   tools/, perf/ and tests/ are users, not parts, and may not
#                   include it either, with one exception: the unit test of
#                   a part, tests/unit/test_<name>.c where <name> is the part
#                   (test_vcp.c) or one of its modules (test_vcp_app.c for
#                   src/vcp/vcp_app.c), may include its own part's *_int.h,
#                   because testing the inside is its job.
#   private-header  A header private to its part is not for other parts, but
#                   users (tools/, perf/, tests/) may include it.  A header is
#                   private when it is listed in PRIVATE_HEADERS below, or
#                   when one of its first 10 lines contains the marker
#                   "fq:private" (e.g. /* fq:private: the reason */).
#   cycle           From the object files of BUILD_DIR (the ones named in its
#                   compile_commands.json): when a.o has an undefined symbol
#                   that b.o defines, a.c uses b.c.  Two or more .c files that
#                   use each other, directly or around a loop, are a cycle:
#                   move what both need into a file of its own.  A symbol is
#                   resolved inside the same target first (a program's own
#                   files, a library's own files), then in the part
#                   libraries, as the linker does.
set -euo pipefail
cd "$(dirname "$0")/.."

# Headers private to their part (see private-header above), one per line:
#   path   reason
PRIVATE_HEADERS='
src/sim/sim.h  the simulator is a program of its own; no other part (fleetqd above all) may link it
'

export FQ_PRIVATE_HEADERS="$PRIVATE_HEADERS"
exec python3 - "$@" <<'PY'
import json, os, re, shlex, subprocess, sys

ROOT = os.getcwd()
SCAN_DIRS = ["src", "tools", "perf", "tests", "include"]
USER_DIRS = ["tools", "perf", "tests"]
findings = []


def finding(path, line, rule, msg):
    loc = f"{path}:{line}" if line else path
    findings.append(f"{loc}: {rule}: {msg}")


def usage(msg):
    print(f"checksrc: {msg}", file=sys.stderr)
    print("usage: scripts/checksrc.sh [--sources] [--cycles] [BUILD_DIR]", file=sys.stderr)
    sys.exit(2)


def blank_code(text):
    """Return text with comments and string/char literals replaced by spaces
    (newlines kept, so line numbers stay right)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + re.sub(r"[^\n]", " ", text[i + 1:j - 1]) + c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def part_of(path):
    """The part a file belongs to (folder under src/), or None for users."""
    bits = path.split("/")
    if bits[0] == "src" and len(bits) > 2:
        return bits[1]
    return None


def parts():
    return sorted(d for d in os.listdir("src") if os.path.isdir(os.path.join("src", d)))


def test_part(path):
    """The part whose unit test this is (tests/unit/test_<part or module>.c)."""
    m = re.fullmatch(r"tests/unit/test_(\w+)\.c", path)
    if not m:
        return None
    name = m.group(1)
    for p in parts():
        if name == p or os.path.exists(f"src/{p}/{name}.c"):
            return p
    return None


def source_files():
    files = []
    for top in SCAN_DIRS:
        for dirpath, dirnames, names in os.walk(top):
            dirnames.sort()
            for nm in sorted(names):
                if nm.endswith((".c", ".h")):
                    files.append(os.path.join(dirpath, nm))
    return files


def private_headers():
    """path -> reason, for the table and for headers carrying the marker."""
    priv = {}
    for line in os.environ.get("FQ_PRIVATE_HEADERS", "").splitlines():
        line = line.strip()
        if not line:
            continue
        path, _, reason = line.partition(" ")
        if not os.path.exists(path):
            finding(path, 0, "private-header",
                    "listed in PRIVATE_HEADERS of scripts/checksrc.sh but does not exist")
        priv[path] = reason.strip()
    for p in parts():
        for nm in sorted(os.listdir(f"src/{p}")):
            if not nm.endswith(".h"):
                continue
            path = f"src/{p}/{nm}"
            with open(path, encoding="utf-8", errors="replace") as f:
                head = [next(f, "") for _ in range(10)]
            for line in head:
                if "fq:private" in line:
                    priv.setdefault(path, line.split("fq:private", 1)[1].strip(" :*/\n") or
                                    "marked fq:private")
    return priv


def resolve_include(path, name):
    """The tree file a quoted #include names, or None (system or generated)."""
    here = os.path.join(os.path.dirname(path), name)
    if os.path.exists(here):
        return os.path.normpath(here)
    for p in parts():
        cand = f"src/{p}/{name}"
        if os.path.exists(cand):
            return cand
    if os.path.exists(f"include/{name}"):
        return f"include/{name}"
    return None


def check_sources():
    priv = private_headers()
    banned = [
        ("strerror", re.compile(r"(?<![A-Za-z0-9_])strerror\s*\("),
         "strerror() is not thread-safe; use fq_strerror(-errno)"),
        ("sprintf", re.compile(r"(?<![A-Za-z0-9_])v?sprintf\s*\("),
         "unbounded; use snprintf()/vsnprintf()"),
    ]
    incl = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
    for path in source_files():
        with open(path, encoding="utf-8", errors="replace") as f:
            raw = f.read()
        code = blank_code(raw)
        raw_lines = raw.split("\n")
        mine = part_of(path)
        tested = test_part(path)
        for ln, line in enumerate(code.split("\n"), 1):
            for rule, rx, msg in banned:
                if rx.search(line):
                    finding(path, ln, rule, msg)
            if not re.match(r"^\s*#\s*include\b", line):
                continue
            m = incl.match(raw_lines[ln - 1])
            if not m:
                continue
            hdr = resolve_include(path, m.group(1))
            owner = part_of(hdr) if hdr else None
            if not owner or owner == mine:
                continue
            if hdr.endswith("_int.h"):
                if owner != tested:
                    finding(path, ln, "int-header",
                            f"includes {hdr}, internal to part {owner}")
            elif hdr in priv and mine:
                finding(path, ln, "private-header",
                        f"part {mine} includes {hdr}, private to part {owner} ({priv[hdr]})")


def compile_entries(build):
    """(source relative to ROOT, object path, target) for every tree source
    BUILD_DIR compiles."""
    db = os.path.join(build, "compile_commands.json")
    if not os.path.exists(db):
        usage(f"no {db}: configure and build first (cmake -S . -B {build}), "
              "or run with --sources")
    with open(db) as f:
        entries = json.load(f)
    out = []
    for e in entries:
        src = os.path.relpath(os.path.realpath(e["file"]), os.path.realpath(ROOT))
        if src.startswith("..") or src.split("/")[0] not in SCAN_DIRS:
            continue  # generated code (protobuf) lives in the build dir
        obj = e.get("output")
        if not obj:
            args = shlex.split(e["command"]) if "command" in e else e["arguments"]
            obj = args[args.index("-o") + 1]
        obj = os.path.normpath(os.path.join(e["directory"], obj))
        m = re.search(r"/CMakeFiles/([^/]+)\.dir/", obj)
        out.append((src, obj, m.group(1) if m else obj))
    return out


def check_cycles(build):
    entries = compile_entries(build)
    if not entries:
        usage(f"{build}/compile_commands.json names no source of the tree")
    stale = []
    for src, obj, _ in entries:
        if not os.path.exists(obj) or os.path.getmtime(obj) < os.path.getmtime(src):
            stale.append(src)
    if stale:
        usage(f"{build} is not up to date ({stale[0]}"
              f"{' and %d more' % (len(stale) - 1) if len(stale) > 1 else ''}): "
              f"build it first (cmake --build {build})")
    libdir = os.path.join(build, "lib")
    libs = {t for _, _, t in entries if os.path.exists(os.path.join(libdir, f"lib{t}.a"))}
    objs = [o for _, o, _ in entries]
    nm = subprocess.run(["nm", "-A", "-P", "--no-sort"] + objs,
                        capture_output=True, text=True, check=True).stdout
    defs, undefs = {}, {}
    for line in nm.splitlines():
        # "obj.o: symbol T value size"
        obj, _, rest = line.partition(": ")
        f = rest.split()
        if len(f) < 2:
            continue
        sym, kind = f[0], f[1]
        if kind == "U":
            undefs.setdefault(obj, set()).add(sym)
        elif kind.isupper() or kind == "u":  # lower case: local (static)
            defs.setdefault(obj, set()).add(sym)
    by_target, lib_defs = {}, {}
    for src, obj, t in entries:
        for s in defs.get(obj, ()):
            by_target.setdefault(t, {}).setdefault(s, src)
            if t in libs:
                lib_defs.setdefault(s, src)
    edges = {}  # (a, b) -> symbols a takes from b
    for src, obj, t in entries:
        own = by_target.get(t, {})
        for s in undefs.get(obj, ()):
            dst = own.get(s) or lib_defs.get(s)
            if dst and dst != src:
                edges.setdefault((src, dst), set()).add(s)
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    for comp in sccs(graph):
        if len(comp) < 2:
            continue
        members = sorted(comp)
        finding(members[0], 0, "cycle", "these files use each other: " + ", ".join(members))
        for a in members:
            for b in sorted(graph.get(a, ())):
                if b in comp:
                    syms = sorted(edges[(a, b)])
                    more = f" and {len(syms) - 3} more" if len(syms) > 3 else ""
                    findings.append(f"    {a} uses {b}: {', '.join(syms[:3])}{more}")


def sccs(graph):
    """Tarjan's strongly connected components, iteratively."""
    index, low, onstack, stack, comps = {}, {}, set(), [], []
    counter = 0
    nodes = sorted(set(graph) | {b for bs in graph.values() for b in bs})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        onstack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    onstack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in onstack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    onstack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                comps.append(comp)
    return comps


def main(argv):
    do_src = do_cyc = False
    build = None
    for a in argv:
        if a == "--sources":
            do_src = True
        elif a == "--cycles":
            do_cyc = True
        elif a.startswith("-"):
            usage(f"unknown option {a}")
        elif build is None:
            build = a
        else:
            usage("more than one BUILD_DIR")
    if not do_src and not do_cyc:
        do_src = do_cyc = True
    if build and not do_cyc:
        usage("BUILD_DIR given with --sources")
    build = build or "build"
    if do_src:
        check_sources()
    if do_cyc:
        check_cycles(build)
    for f in findings:
        print(f)
    what = " and ".join(w for w, on in (("source rules", do_src), ("cycles", do_cyc)) if on)
    nfind = sum(1 for f in findings if not f.startswith(" "))
    if nfind:
        print(f"checksrc: {nfind} finding(s) ({what})", file=sys.stderr)
        return 1
    print(f"checksrc: ok ({what})")
    return 0


sys.exit(main(sys.argv[1:]))
PY
