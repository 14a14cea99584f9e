"""The man pages (issue 14 point 6): fleetqd(8), fleetq(1), fleetsim(1),
fleetq-replay(1) and fleetq-wire(7), built by the build from docs/man/*.scd
with scdoc, each render with `man -l` without a warning, have the usual
sections, and list every option the program's --help lists (and fleetq(1)
every command of `fleetq --help`), so the pages cannot silently fall
behind the option tables.  Without scdoc (pages not built) or without man
(man-db) the test says so and skips what it cannot check.
"""
import os
import re
import shutil
import subprocess

from lib import fqlib
from lib.fqlib import BIN, log, run_test

BUILD = os.path.dirname(BIN)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN_DIR = os.path.join(BUILD, "man")
PAGES = {"fleetqd.8": "fleetqd", "fleetq.1": "fleetq", "fleetsim.1": "fleetsim",
         "fleetq-replay.1": "fleetq-replay", "fleetq-wire.7": None}
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "SEE ALSO")


def sh(args, env=None):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


def help_options(*args):
    r = sh([os.path.join(BIN, args[0])] + list(args[1:]) + ["--help"])
    return set(re.findall(r"^\s+(?:-\w, )?--([a-z][a-z0-9-]*)", r.stdout, re.M)) | \
        set(re.findall(r"^  --([a-z][a-z0-9-]*)", r.stdout, re.M))


def render(page):
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
    return sh(["man", "--warnings", "-l", os.path.join(MAN_DIR, page)], env=env)


def test(c):
    built = [p for p in PAGES if os.path.isfile(os.path.join(MAN_DIR, p))]
    if not built:
        if shutil.which("scdoc"):
            c.ok(False, f"scdoc is installed but no page was built in {MAN_DIR}")
        else:
            log("SKIP man pages: scdoc not found, so the build made none (Debian package scdoc)")
        return
    c.eq(sorted(built), sorted(PAGES), "every man page is built")
    if not shutil.which("man"):
        log("SKIP rendering: man not found (Debian package man-db)")
        return
    texts = {}
    for page, prog in PAGES.items():
        if page not in built:
            continue
        name, sec = page.rsplit(".", 1)
        r = render(page)
        text = r.stdout
        texts[page] = text
        c.ok(r.returncode == 0 and text.strip(), f"man -l {page} renders", r.returncode,
             r.stderr)
        c.eq(r.stderr.strip(), "", f"man -l {page}: no groff warning")
        c.ok(text.lstrip().startswith(f"{name}({sec})"), f"{page}: title {name}({sec})",
             text[:80])
        for s in SECTIONS if prog else ("NAME", "DESCRIPTION", "SEE ALSO"):
            c.ok(re.search(rf"^{s}$", text, re.M), f"{page}: section {s}")
        # scdoc markup that did not render would show up as literal markers.
        c.ok(not re.search(r"\*--|\b_[A-Z]+_\b", text), f"{page}: no raw scdoc markup",
             re.findall(r".{0,20}(?:\*--|\b_[A-Z]+_\b).{0,20}", text)[:5])

    def covers(page, opts, what):
        text = texts.get(page, "")
        missing = sorted(o for o in opts if f"--{o}" not in text)
        c.eq(missing, [], f"{page} documents every option of {what} "
                          f"(add the missing ones to docs/man/{page}.scd)")

    covers("fleetqd.8", help_options("fleetqd"), "fleetqd --help")
    # docs/configuration.md is the operator's list of every flag (issue 14):
    # it must not fall behind the option table either.
    conf = open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8").read()
    c.eq(sorted(o for o in help_options("fleetqd") if f"--{o}" not in conf), [],
         "docs/configuration.md lists every option of fleetqd --help")
    covers("fleetsim.1", help_options("fleetsim"), "fleetsim --help")
    covers("fleetq-replay.1", help_options("fleetq-replay", "gen") |
           help_options("fleetq-replay", "run"), "fleetq-replay gen/run --help")
    r = sh([os.path.join(BIN, "fleetq"), "--help"])
    cmds = re.findall(r"^  ([a-z][a-z-]*)\s{2,}", r.stdout, re.M)
    c.ok(len(cmds) >= 10, "fleetq --help lists its commands", cmds)
    fq_opts = set()
    subs = []
    for cmd in cmds:
        if cmd == "account":
            subs += [["account", a] for a in ("add", "list", "get", "remove", "retry")]
        elif cmd == "campaign":
            subs += [["campaign", a] for a in ("start", "get", "abort", "watch")]
        elif cmd == "proto":
            subs += [["proto", "sign"], ["proto", "decode"]]
        else:
            subs.append([cmd])
    for s in subs:
        fq_opts |= help_options("fleetq", *s)
    c.ok("tenant" in fq_opts and "curve-key" in fq_opts, "fleetq options gathered", fq_opts)
    covers("fleetq.1", fq_opts, "every fleetq command's --help")
    text = texts.get("fleetq.1", "")
    for cmd in cmds:
        c.ok(re.search(rf"^   .*\b{re.escape(cmd)}\b", text, re.M),
             f"fleetq.1 has a section for {cmd}")


run_test("man", test)
