"""Python client for fleetq, the durable command dispatcher for Tesla
vehicles and energy sites.

    from fleetq_client import Client
    c = Client("tcp://127.0.0.1:5555")
    r = c.submit("acme", "order-1234", "fleet-ops", "set_charge_limit",
                 vin="5YJ3E1EA7KF000001", params={"percent": 80}, wait=True)
    print(r["id"], r["event"]["state"], r["event"]["reason"])

The asyncio variant with the same calls is :mod:`fleetq_client.aio`.  The
wire protocol is proto/wire-protocol.md in the fleetq repository; the
clients are compared in docs/clients.md.
"""

from .client import CampaignWatch, Client, Watch
from .errors import (BadParam, BadRequest, BudgetExceeded, Busy, FleetqError, Forbidden, IdempotencyMismatch,
                     InternalError, NotCancellable, NotFound, StorageFull, Timeout, TooLarge,
                     UnknownAccount, UnknownCommand, UnsupportedVersion, error_for)
from ._common import TERMINAL

__version__ = "0.1.0"

__all__ = ["Client", "Watch", "CampaignWatch", "FleetqError", "BadRequest", "BadParam", "BudgetExceeded", "Busy", "Forbidden",
           "IdempotencyMismatch", "InternalError", "NotCancellable", "NotFound", "StorageFull",
           "Timeout", "TooLarge", "UnknownAccount", "UnknownCommand", "UnsupportedVersion",
           "TERMINAL", "error_for", "__version__"]
