"""What the Python benchmarks under perf/ share: where the tree is, the
binaries they run (--bin, taken before the test harness is imported,
since it reads FQ_SRC and FQ_BIN when it is), and the machine line a
result is stamped with."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup(python_client=False):
    """Put the test harness (and the Python client) on the path and set
    FQ_SRC / FQ_BIN from --bin before anything imports the harness."""
    if python_client:
        sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    os.environ.setdefault("FQ_SRC", ROOT)
    os.environ.setdefault("FQ_BIN", os.path.join(ROOT, "build", "bin"))
    for i, arg in enumerate(sys.argv):
        if arg == "--bin" and i + 1 < len(sys.argv):
            os.environ["FQ_BIN"] = sys.argv[i + 1]
        elif arg.startswith("--bin="):
            os.environ["FQ_BIN"] = arg[6:]


def machine():
    """(CPU model, `git describe` of the tree) for a result's run line."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or "unknown"
    return cpu, git
