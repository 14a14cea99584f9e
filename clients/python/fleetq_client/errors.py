"""Exceptions raised by the fleetq client, one class per error code.

Every refusal fleetqd sends (``{"ok": false, "error": CODE, "message": ...}``)
becomes a :class:`FleetqError` whose ``code`` is that code; the common ones
have their own subclass so that callers can write ``except Busy:``.  Codes
this version does not know still raise :class:`FleetqError` with their code.
"""

from typing import Any, Dict, Optional, Type


class FleetqError(Exception):
    """A request fleetqd refused, or one that got no answer.

    ``code`` is the machine-readable code (``"bad_param"``, ``"busy"`` ...),
    ``message`` the daemon's human text, ``reply`` the whole reply map (None
    when there was none, e.g. for a timeout)."""

    code = "error"
    #: True for codes where sending the same request again may succeed.
    retriable = False

    def __init__(self, message: str, code: Optional[str] = None,
                 reply: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reply = reply

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadRequest(FleetqError):
    """The body is not a well-formed request (a bug in the caller)."""
    code = "bad_request"


class UnsupportedVersion(FleetqError):
    code = "unsupported_version"


class UnknownCommand(FleetqError):
    """``command`` names no command for this device type."""
    code = "unknown_command"


class BadParam(FleetqError):
    """``params`` do not fit the command (name, type, range...)."""
    code = "bad_param"


class IdempotencyMismatch(FleetqError):
    """The tenant + key was used before for a different request."""
    code = "idempotency_mismatch"


class NotFound(FleetqError):
    code = "not_found"


class NotCancellable(FleetqError):
    """A cancel came too late; ``state`` is the command's current state."""
    code = "not_cancellable"

    @property
    def state(self) -> Optional[str]:
        return (self.reply or {}).get("state")


class Forbidden(FleetqError):
    """The client's CURVE key lacks the role or tenant the request needs."""
    code = "forbidden"


class Busy(FleetqError):
    """fleetqd is saturated; nothing was stored.  Retrying is safe."""
    code = "busy"
    retriable = True


class StorageFull(FleetqError):
    code = "storage_full"


class TooLarge(FleetqError):
    code = "too_large"


class InternalError(FleetqError):
    """Something went wrong inside fleetqd; a submit may be retried with the
    same key (dedupe makes that safe)."""
    code = "internal"
    retriable = True


class UnknownAccount(FleetqError):
    """The submit names an account fleetqd does not have."""
    code = "unknown_account"


class BudgetExceeded(FleetqError):
    """The tenant has used today's (UTC) Fleet API budget; nothing was
    stored.  ``reset_at`` (unix ms, the next UTC midnight) says when to
    submit again, with the same key."""
    code = "budget_exceeded"

    @property
    def reset_at(self) -> Optional[int]:
        return self.reply.get("reset_at") if self.reply else None


class Timeout(FleetqError, TimeoutError):
    """No reply (or, with ``wait=True``, no terminal event) in time."""
    code = "timeout"
    retriable = True


_BY_CODE: Dict[str, Type[FleetqError]] = {
    c.code: c for c in (BadRequest, UnsupportedVersion, UnknownCommand, BadParam,
                        IdempotencyMismatch, NotFound, NotCancellable, Forbidden, Busy,
                        StorageFull, TooLarge, InternalError, UnknownAccount, BudgetExceeded)
}


def error_for(reply: Dict[str, Any]) -> FleetqError:
    """The exception for an ``ok: false`` reply."""
    code = str(reply.get("error") or "internal")
    cls = _BY_CODE.get(code, FleetqError)
    return cls(str(reply.get("message") or code), code=code, reply=reply)
