"""The integration tests' harness (not tests themselves):

  fqlib       fleetqd (Daemon: temporary data dir, free ports, wait for
              ready, stop), its clients (Client, Sub, pipeline), the fleetq
              CLI, and the check/report API (Checks, run_test)
  sim         fleetsim (Sim: generated config, wait for its port, /sim
              control endpoints, stop) and the fleetsim tests' helpers
  tls         a throwaway CA and server certificate (openssl CLI)
  dispatch    the end-to-end dispatch world: fleetsim + recording relay +
              fleetqd + accounts
  vcp_client  a Vehicle Command Protocol client written from the spec alone
  storage     full storage and retention: fill a store to storage_full,
              follow commands to their end, honks run at most once, a
              tmpfs, a store's pages in use (mdb_stat)

Tests import it as `from lib import fqlib` (their own folder is first on
sys.path when python3 runs tests/integration/test_x.py).
"""
