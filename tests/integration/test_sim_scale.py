"""fleetsim with 10,000 generated cars (--gen-vehicles): starts fast, every
car is reachable and verifies on its own keys, fleet_status over many VINs,
the execution log filters per car, /sim/reset keeps the generated fleet.
Also: many concurrent keep-alive clients signing for different cars.
"""
import re
import threading
import time

from lib.sim import Sim, base_config, check, finish, run_tests, vc

SIM = None
N = 10000


def gen_vin(i):
    return "SMGEN%012d" % i


def test_fleet_is_there():
    st, j = SIM.ctl("GET", "/sim/stats")
    check(st == 200 and j["vehicles"] == N + 3, st, j)
    vins = [gen_vin(i) for i in range(0, N, 50)]
    # The generated names (checked against the simulator's just below) are
    # VINs fleetqd accepts: 17 of A-H J-N P R-Z 0-9, so a campaign or a load
    # test addresses them directly.
    check(all(re.fullmatch(r"[A-HJ-NPR-Z0-9]{17}", v) for v in vins), vins[:3])
    st, hd, j = SIM.fleet("t1").call("POST", "/api/1/vehicles/fleet_status", {"vins": vins})
    check(st == 200 and sorted(j["response"]["key_paired_vins"]) == sorted(vins), st)


def test_cars_have_their_own_keys():
    f = SIM.fleet("t1")
    a, _, _ = f.session(SIM.client, gen_vin(0), vc.DOMAIN_INFOTAINMENT)
    b, _, _ = f.session(SIM.client, gen_vin(N - 1), vc.DOMAIN_INFOTAINMENT)
    check(a and b and a.car_pub != b.car_pub and a.epoch != b.epoch)
    st, j, out = f.command(SIM.client, b, gen_vin(N - 1), vc.set_charge_limit(90)[1])
    check(st == 200 and out["fault"] == "NONE", st, j, out)
    ex = SIM.executions(gen_vin(N - 1))
    check(len(ex) == 1 and ex[0]["command"] == "set_charge_limit", ex)
    check(SIM.executions(gen_vin(0)) == [])


def test_concurrent_clients():
    errors = []
    per = 25

    def worker(k):
        try:
            f = SIM.fleet("t1")
            vin = gen_vin(100 + k)
            s, _, _ = f.session(SIM.client, vin, vc.DOMAIN_INFOTAINMENT)
            for _ in range(per):
                st, j, out = f.command(SIM.client, s, vin, vc.PAYLOADS["flash_lights"][1])
                if st != 200 or out["fault"] != "NONE":
                    errors.append((vin, st, j, out))
        except Exception as e:  # collected and reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("     16 clients x %d commands in %.2fs" % (per, time.time() - t0))
    check(not errors, errors[:3])
    st, j = SIM.ctl("GET", "/sim/stats")
    total = sum(len(SIM.executions(gen_vin(100 + k))) for k in range(16))
    check(total == 16 * per, total)


def test_reset_keeps_generated_cars():
    st, j = SIM.ctl("POST", "/sim/reset", {})
    check(st == 200, st, j)
    st, j = SIM.ctl("GET", "/sim/stats")
    check(j["vehicles"] == N + 3 and j["executions"] == 0, j)


def main():
    global SIM
    t0 = time.time()
    SIM = Sim(base_config(), extra_args=["--gen-vehicles", str(N)], fleet_key=True).start()
    dt = time.time() - t0
    print("     %d generated cars up in %.2fs" % (N, dt))
    failed = 1
    try:
        failed = run_tests([test_fleet_is_there, test_cars_have_their_own_keys,
                            test_concurrent_clients, test_reset_keeps_generated_cars])
        if dt > 10:
            print("FAIL startup took %.1fs" % dt)
            failed += 1
    finally:
        finish(SIM, failed)


if __name__ == "__main__":
    main()
