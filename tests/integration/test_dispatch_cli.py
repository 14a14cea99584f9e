"""The user's view through the CLI: `fleetq send --wait` against a daemon
wired to fleetsim exits 0 and reports `succeeded` for a command the car
executes, and exits non-zero with the actionable reason (pairing link) for
a car that does not have the key; `fleetq get` shows the same outcome."""
import json

from lib import dispatch as dl

V = dl.vin(141)
UNPAIRED = dl.vin(142)


def send(w, key, vin_, command, *params):
    args = ["send", "--endpoint", w.daemon.endpoint, "--publish", w.daemon.publish,
            "--tenant", dl.TENANT, "--key", key, "--account", "acct1", "--vin", vin_,
            "--command", command, "--wait", "--timeout", "30"]
    for p in params:
        args += ["--param", p]
    return dl.cli(*args, timeout=60)


def body(c, w):
    r = send(w, "cli-ok", V, "set_charge_limit", "percent=68")
    c.eq(r.returncode, 0, "send --wait: exit 0 on success", r.stdout, r.stderr)
    c.ok("succeeded" in r.stdout, "says succeeded", r.stdout)
    c.eq(w.sim.vehicle(V)["charge_state"]["charge_limit_soc"], 68, "car state")
    # A PIN typed on the shell stays text (0042 is no number 42).
    r = send(w, "cli-pin", V, "speed_limit_activate", "pin=0042")
    c.eq(r.returncode, 0, "send --param pin=0042: exit 0", r.stdout, r.stderr)
    c.eq(w.sim.vehicle(V)["vehicle_state"]["speed_limit_mode"]["active"], True,
         "speed limit mode on")
    r = send(w, "cli-pin-off", V, "speed_limit_deactivate", "pin=0042")
    c.eq(r.returncode, 0, "the same PIN turns it off: sent as typed", r.stdout, r.stderr)
    w.check_execs(c, ["set_charge_limit", "speed_limit_activate", "speed_limit_deactivate"], V)
    r = send(w, "cli-unpaired", UNPAIRED, "door_lock")
    c.ok(r.returncode != 0, "send --wait: non-zero exit on failure", r.returncode, r.stdout)
    out = r.stdout + r.stderr
    c.ok("failed" in out and dl.PAIRING_LINK in out, "shows the state and the pairing link", out)
    c.eq(w.execs(UNPAIRED), [], "never executed")
    g = dl.cli("get", "--endpoint", w.daemon.endpoint, "--tenant", dl.TENANT, "--key",
               "cli-unpaired", "--json")
    c.eq(g.returncode, 0, "get", g.stdout, g.stderr)
    try:
        cmd = json.loads(g.stdout)
        cmd = cmd.get("command", cmd)
        c.eq((cmd.get("state"), cmd.get("error")), ("failed", "key_not_paired"), "get --json")
    except ValueError:
        c.ok(False, "get --json prints JSON", g.stdout)
    w.check_seq(c)


dl.run("test_dispatch_cli", body,
       vehicles=[dl.default_vehicle(V), dl.default_vehicle(UNPAIRED, paired=False)])
