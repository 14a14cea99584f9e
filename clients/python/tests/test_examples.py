"""The Python examples (examples/python) against a real fleetqd + fleetsim:
submit-and-wait (and its duplicate), the status consumer across a fleetqd
restart and its own restart from a cursor file (each event exactly once),
and the demand-response script's summary."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import ACCOUNT, SRC, VINS, fleetq_client, unique

EX = os.path.join(SRC, "examples", "python")


def run(world, script, *args, timeout=60):
    return subprocess.run([sys.executable, os.path.join(EX, script), "--endpoint",
                           world.daemon.endpoint, "--publish", world.daemon.publish,
                           *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_submit_and_wait(world):
    t = unique("ex")
    r = run(world, "submit_and_wait.py", "--tenant", t, "--account", ACCOUNT, "--vin", VINS[5],
            "--command", "set_charge_limit", "--params", '{"percent": 66}', "--key", "ex-1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("accepted ") and "succeeded" in r.stdout
    r = run(world, "submit_and_wait.py", "--tenant", t, "--account", ACCOUNT, "--vin", VINS[5],
            "--command", "set_charge_limit", "--params", '{"percent": 66}', "--key", "ex-1")
    assert r.returncode == 0 and r.stdout.startswith("duplicate of "), r.stdout + r.stderr
    r = run(world, "submit_and_wait.py", "--tenant", t, "--account", ACCOUNT, "--vin", VINS[5],
            "--command", "set_charge_limit", "--params", '{"percent": 6}')
    assert r.returncode == 2 and "bad_param" in r.stderr


def consumer(world, t, cursor_file):
    # Output to a file, not a pipe nobody reads: a full pipe would stall it.
    tag = time.monotonic_ns()
    out = open(cursor_file + f".out{tag}", "w+")
    err = open(cursor_file + f".err{tag}", "w+")
    p = subprocess.Popen([sys.executable, os.path.join(EX, "status_consumer.py"),
                          "--endpoint", world.daemon.endpoint, "--publish",
                          world.daemon.publish, "--tenant", t, "--json",
                          "--cursor-file", cursor_file], stdout=out, stderr=err, text=True)
    p.out = out
    # It says when its start points are fixed (a loaded machine can take
    # seconds to get there); events published before that are not its.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        err.seek(0)
        if "watching " in err.read():
            break
        assert p.poll() is None, "status_consumer.py exited early"
        time.sleep(0.05)
    else:
        raise AssertionError("status_consumer.py never said it was watching")
    return p


def stop(p):
    p.send_signal(signal.SIGINT)
    p.wait(10)
    p.out.seek(0)
    lines = p.out.read().splitlines()
    p.out.close()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_status_consumer_survives_restarts(world, tmp_path):
    t = unique("ex-cons")
    cursor_file = str(tmp_path / "cursor.json")
    c = fleetq_client.Client(world.daemon.endpoint, timeout=3)

    def burst(n, start):
        return [r["id"] for r in c.submit_many(
            [{"tenant": t, "key": f"k{i}", "account": ACCOUNT, "command": "door_lock",
              "vin": VINS[i % len(VINS)]} for i in range(start, start + n)])]

    p = consumer(world, t, cursor_file)
    ids = burst(40, 0)
    time.sleep(1.0)
    world.daemon.kill9()  # fleetqd goes away under the consumer...
    world.daemon.start()  # ...and comes back on the same data
    ids += burst(40, 40)
    time.sleep(3.0)
    seen = stop(p)        # the consumer stops too, its cursor saved
    ids += burst(40, 80)  # published while no consumer runs
    p = consumer(world, t, cursor_file)
    deadline = time.monotonic() + 60

    def done(evs):
        return {e["id"] for e in evs if e["state"] in fleetq_client.TERMINAL} >= set(ids)

    while time.monotonic() < deadline:
        time.sleep(2.0)
        stored = [e for sh in range(2) for e in c.iter_history(sh, 0, t)]
        if done(stored):
            break
    time.sleep(2.0)
    seen += stop(p)
    pos = [(e["shard"], e["tseq"]) for e in seen]
    assert len(pos) == len(set(pos)), "an event printed twice"
    assert sorted(pos) == sorted((e["shard"], e["tseq"]) for e in stored), "events missing"
    assert done(seen)
    c.close()


def test_demand_response(world):
    t = unique("ex-dr")
    cars = VINS[:4]
    r = run(world, "demand_response.py", "--tenant", t, "--account", ACCOUNT, "--amps", 9,
            "--event", "dr-test", *cars)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 of 4 cars set to 9 A" in r.stdout
    for v in cars:
        assert f"{v}  succeeded" in r.stdout
        assert world.sim.vehicle(v)["charge_state"]["charge_current_request"] == 9
    # The same event again: every car a duplicate, nothing sent twice.
    r = run(world, "demand_response.py", "--tenant", t, "--account", ACCOUNT, "--amps", 9,
            "--event", "dr-test", *cars)
    assert r.returncode == 0 and "4 of 4" in r.stdout
