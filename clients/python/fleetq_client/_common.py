"""What the blocking and the asyncio clients share: building requests from
Python values (so that fleetqd's strict typing never shows), CURVE key
files, and the bookkeeping of a status watch.  Nothing here does I/O on
sockets."""

import datetime
import decimal
import numbers
import os
import re
import stat
import time
from typing import Any, Dict, Generator, Iterable, List, Mapping, Optional, Tuple

import msgpack

from .errors import FleetqError, Timeout

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
TERMINAL = frozenset({"succeeded", "failed", "unknown", "expired", "cancelled", "superseded"})

# Parameters whose type the daemon checks strictly and that Python code
# often holds as another type (80.0 from JSON or pandas, 1 for True).
# Names are unique across the command table (proto/wire-protocol.md
# section 9), so no command is needed to look them up.
INT_PARAMS = frozenset({"percent", "charging_amps", "time", "backup_reserve_percent",
                        "off_grid_vehicle_charging_reserve_percent"})
BOOL_PARAMS = frozenset({"enable", "on", "manual_override", "fan_only", "enabled",
                         "disallow_charge_from_grid_with_solar_installed"})

_Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_TCP = re.compile(r"^(tcp://.+):(\d+)$")

def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def default_publish(endpoint: str) -> Optional[str]:
    """The status endpoint beside a request endpoint: fleetqd's defaults
    are 5555 and 5556, so tcp://host:N pairs with tcp://host:N+1."""
    m = _TCP.match(endpoint)
    return f"{m.group(1)}:{int(m.group(2)) + 1}" if m else None


# ---- values -------------------------------------------------------------


def _text(name: str, v: Any) -> str:
    if type(v) is str:  # the common case first: this runs for every field
        return v
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{name}: bytes that are not UTF-8") from None
    if not isinstance(v, str):
        raise TypeError(f"{name}: expected str, got {type(v).__name__}")
    return v


def _int(name: str, v: Any) -> int:
    """An integer from int, an integral float / Decimal, or numpy's types.
    bool is refused: True for a TTL is a mistake, not 1 ms."""
    if type(v) is int:
        return v
    if isinstance(v, bool):
        raise TypeError(f"{name}: expected an integer, got bool")
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, (float, decimal.Decimal, numbers.Real)):
        f = v if isinstance(v, decimal.Decimal) else float(v)
        if f != f or f in (float("inf"), float("-inf")) or int(f) != f:
            raise ValueError(f"{name}: {v!r} is not a whole number")
        return int(f)
    raise TypeError(f"{name}: expected an integer, got {type(v).__name__}")


def _bool(name: str, v: Any) -> bool:
    if v is True or v is False:
        return v
    if isinstance(v, numbers.Integral) and int(v) in (0, 1):
        return bool(v)
    raise TypeError(f"{name}: expected bool (or 0 / 1), got {v!r}")


def _site(v: Any) -> int:
    if isinstance(v, str) and v.isdigit():
        return int(v)
    if isinstance(v, float) and v >= 2 ** 53:
        raise ValueError("site: a float above 2**53 has lost digits already; "
                         "pass the site id as an int or a string")
    s = _int("site", v)
    if s <= 0 or s >= 2 ** 64:
        raise ValueError(f"site: {s} is not an energy site id (1 .. 2**64-1)")
    return s


def _json_value(name: str, v: Any, depth: int = 0) -> Any:
    """A nested parameter (tou_settings) as values JSON can carry."""
    if depth > 6:
        raise ValueError(f"{name}: nested too deeply")
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, (float, decimal.Decimal, numbers.Real)):
        return float(v)
    if isinstance(v, Mapping):
        return {_text(f"{name} key", k): _json_value(name, x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(name, x, depth + 1) for x in v]
    raise TypeError(f"{name}: {type(v).__name__} cannot be sent as JSON")


def params_value(params: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """Command parameters with None entries left out (the daemon would
    refuse a nil parameter) and the strictly typed ones converted."""
    if params is None:
        return None
    if type(params) is not dict and not isinstance(params, Mapping):
        raise TypeError(f"params: expected a mapping, got {type(params).__name__}")
    out: Dict[str, Any] = {}
    for k, v in params.items():
        k = _text("params key", k)
        if v is None:
            continue
        tv = type(v)
        if k in INT_PARAMS:
            out[k] = v if tv is int else _int(f"params.{k}", v)
        elif k in BOOL_PARAMS:
            out[k] = v if tv is bool else _bool(f"params.{k}", v)
        elif tv is str or tv is bool or tv is int or tv is float:
            out[k] = v
        elif isinstance(v, bool) or isinstance(v, str):
            out[k] = v
        elif isinstance(v, numbers.Integral):
            out[k] = int(v)
        elif isinstance(v, (float, decimal.Decimal, numbers.Real)):
            out[k] = float(v)
        else:
            out[k] = _json_value(f"params.{k}", v)
    return out


def submit_request(tenant: Any, key: Any, account: Any, command: Any, vin: Any = None,
                   site: Any = None, params: Optional[Mapping[str, Any]] = None,
                   ttl_ms: Any = None, wake: Any = None, coalesce: Any = None,
                   not_before: Any = None) -> Dict[str, Any]:
    """The submit map, every value in the type fleetqd wants; absent
    arguments are left out (never sent as nil)."""
    if (vin is None) == (site is None):
        raise ValueError("give exactly one of vin and site")
    if type(key) is not str and isinstance(key, numbers.Integral) and not isinstance(key, bool):
        key = str(int(key))  # order numbers make good idempotency keys
    m: Dict[str, Any] = {"op": "submit", "tenant": _text("tenant", tenant),
                         "key": _text("key", key), "account": _text("account", account)}
    if vin is not None:
        m["vin"] = _text("vin", vin).upper()
    else:
        m["site"] = _site(site)
    m["command"] = _text("command", command)
    p = params_value(params)
    if p:
        m["params"] = p
    if ttl_ms is not None:
        m["ttl_ms"] = _int("ttl_ms", ttl_ms)
    if wake is not None:
        m["wake"] = _bool("wake", wake)
    if coalesce is not None:
        m["coalesce"] = _bool("coalesce", coalesce)
    if not_before is not None:
        m["not_before"] = _when("not_before", not_before)
    return m


def _when(name: str, v: Any) -> int:
    """Unix milliseconds from an integer (ms) or a timezone-aware
    datetime; a naive datetime is refused rather than guessed."""
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            raise ValueError(f"{name}: a naive datetime; give it a timezone (or unix ms)")
        return int(v.timestamp() * 1000)
    return _int(name, v)


def lookup_request(op: str, id: Any = None, tenant: Any = None, key: Any = None) -> Dict[str, Any]:
    m: Dict[str, Any] = {"op": op}
    if id is not None:
        if key is not None:
            raise ValueError("give either id or tenant + key, not both")
        m["id"] = _text("id", id)
        if tenant is not None:
            m["tenant"] = _text("tenant", tenant)
        return m
    if tenant is None or key is None:
        raise ValueError("give id, or tenant and key")
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        key = str(int(key))
    m["tenant"] = _text("tenant", tenant)
    m["key"] = _text("key", key)
    return m


def history_request(shard: Any, after: Any = None, limit: Any = None,
                    tenant: Any = None) -> Dict[str, Any]:
    m: Dict[str, Any] = {"op": "history", "shard": _int("shard", shard)}
    if after is not None:
        m["after"] = _int("after", after)
    if limit is not None:
        m["limit"] = _int("limit", limit)
    if tenant is not None:
        m["tenant"] = _text("tenant", tenant)
    return m


def health_request(stuck_ms: Any = None) -> Dict[str, Any]:
    m: Dict[str, Any] = {"op": "health"}
    if stuck_ms is not None:
        m["stuck_ms"] = _int("stuck_ms", stuck_ms)
    return m


def admin_request(action: str, fields: Mapping[str, Any]) -> Dict[str, Any]:
    m: Dict[str, Any] = {"op": "admin", "action": action}
    for k, v in fields.items():
        if v is not None:
            m[k] = _text(k, v)
    return m


def wait_budget(ttl_ms: Optional[int], not_before: Optional[int] = None) -> float:
    """How long wait=True waits by default: the command's TTL (fleetqd's
    default is 60 s) and 30 s for the last attempt to be answered, from
    not_before for a scheduled command."""
    ahead = max(0.0, not_before / 1000.0 - time.time()) if not_before is not None else 0.0
    return ahead + (ttl_ms if ttl_ms is not None else 60000) / 1000.0 + 30.0


# ---- CURVE --------------------------------------------------------------


def _z85(what: str, v: Any) -> bytes:
    s = v.decode() if isinstance(v, bytes) else v
    if not isinstance(s, str) or not _Z85.match(s):
        raise ValueError(f"{what}: not a 40-character Z85 CURVE key")
    return s.encode()


def read_key_file(path: str) -> Tuple[bytes, bytes]:
    """(public, secret) from a key file of `fleetq curve-keygen` (lines
    "public <Z85>" and "secret <Z85>").  Refused, as by fleetqd and the
    CLI, when it is a symlink or readable by group or others: the secret
    key is what lets a service command cars."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise PermissionError(f"{path}: key file is a symlink")
    if st.st_mode & 0o077:
        raise PermissionError(f"{path}: key file is readable or writable by group or others "
                              f"(mode {stat.S_IMODE(st.st_mode):04o}; chmod 600 it)")
    pub = sec = None
    with open(path, "r", encoding="ascii", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "public":
                pub = _z85(f"{path}: public", parts[1])
            elif len(parts) == 2 and parts[0] == "secret":
                sec = _z85(f"{path}: secret", parts[1])
    if not pub or not sec:
        raise ValueError(f"{path}: want the lines \"public <key>\" and \"secret <key>\"")
    return pub, sec


def curve_options(curve_key: Any, server_key: Any) -> Optional[Tuple[bytes, bytes, bytes]]:
    """(client public, client secret, server public) or None for plaintext.
    curve_key: a key file path or a (public, secret) pair; server_key: the
    daemon's Z85 public key.  Without arguments, FLEETQ_CURVE_KEY and
    FLEETQ_SERVER_KEY are used when set (as the fleetq CLI does)."""
    if curve_key is None and server_key is None:
        curve_key = os.environ.get("FLEETQ_CURVE_KEY") or None
        server_key = os.environ.get("FLEETQ_SERVER_KEY") or None
    if curve_key is None and server_key is None:
        return None
    if curve_key is None or server_key is None:
        raise ValueError("CURVE needs both curve_key (your key pair) and server_key "
                         "(fleetqd's public key)")
    if isinstance(curve_key, (str, os.PathLike)) and not _Z85.match(str(curve_key)):
        pub, sec = read_key_file(os.fspath(curve_key))
    elif isinstance(curve_key, (tuple, list)) and len(curve_key) == 2:
        pub, sec = _z85("curve_key public", curve_key[0]), _z85("curve_key secret", curve_key[1])
    else:
        raise TypeError("curve_key: a key file path or a (public, secret) pair")
    return pub, sec, _z85("server_key", server_key)


# ---- status watch bookkeeping -----------------------------------------------


def event_device(ev: Mapping[str, Any]) -> str:
    return str(ev["vin"]) if "vin" in ev else str(ev.get("site"))


class WatchCore:
    """Positions of a watch and what to fetch when one is skipped.

    Without a tenant the watch follows every event it may see and counts
    each shard's ``seq``; with a tenant, that tenant's ``tseq`` on each
    shard, which has no gaps of its own (a CURVE key limited to some
    tenants sees gaps in ``seq``).  An event is passed on only when its
    position is beyond the last one passed on for its shard, so nothing is
    yielded twice; a jump is filled from ``history`` before the event that
    revealed it, so nothing is lost and each shard stays in order."""

    def __init__(self, tenant: Optional[str], device: Optional[str],
                 cursor: Optional[Mapping[int, int]]) -> None:
        if device is not None and tenant is None:
            raise ValueError("device needs tenant (topics are tenant/device)")
        self.tenant = _text("tenant", tenant) if tenant is not None else None
        self.device = str(device).upper() if device is not None else None
        self.pos: Dict[int, int] = {int(k): _int("cursor", v) for k, v in (cursor or {}).items()}
        self.filled = 0   # events fetched from history rather than received
        self.skipped = 0  # events received twice (live after a fetch), dropped

    @property
    def topic(self) -> bytes:
        return f"{self.tenant}/".encode() if self.tenant is not None else b""

    def position(self, ev: Mapping[str, Any]) -> Optional[int]:
        p = ev.get("tseq") if self.tenant is not None else ev.get("seq")
        return p if isinstance(p, int) else None

    def matches(self, ev: Mapping[str, Any]) -> bool:
        if self.tenant is not None and ev.get("tenant") != self.tenant:
            return False
        return self.device is None or event_device(ev) == self.device

    def live(self, ev: Mapping[str, Any]) -> Tuple[str, int, int]:
        """("dup", ..) for an event already passed on, ("gap", after, upto)
        when events (after, upto) of its shard must be fetched first, else
        ("new", ..)."""
        shard, p = ev.get("shard"), self.position(ev)
        if not isinstance(shard, int) or p is None:
            return "new", 0, 0
        # A shard without a position (not in a cursor) starts at its first
        # event, as the quiet-stream look does.
        last = self.pos.get(shard, 0)
        if p <= last:
            return "dup", 0, 0
        if p > last + 1:
            return "gap", last, p
        return "new", 0, 0

    def advance(self, ev: Mapping[str, Any]) -> bool:
        """Record that ev is passed on; False when it was already."""
        shard, p = ev.get("shard"), self.position(ev)
        if not isinstance(shard, int) or p is None:
            return True
        if p <= self.pos.get(shard, -1):
            self.skipped += 1
            return False
        self.pos[shard] = p
        return True

    def fill_request(self, shard: int, after: int, upto: Optional[int]) -> Optional[Dict[str, Any]]:
        """The next history page of (after, upto) (upto None: everything
        stored), or None when there is nothing left to ask."""
        if upto is not None and after + 1 >= upto:
            return None
        limit = 1000 if upto is None else min(1000, upto - after - 1)
        return history_request(shard, after, limit, self.tenant)

    def fill_page(self, reply: Mapping[str, Any], after: int,
                  upto: Optional[int]) -> Tuple[List[Dict[str, Any]], int, bool]:
        """(events within the range, next `after`, done)."""
        evs = [e for e in reply.get("events") or []
               if (p := self.position(e)) is not None and p > after and (upto is None or p < upto)]
        nxt = reply.get("next")
        nxt = nxt if isinstance(nxt, int) else max([after] + [self.position(e) or 0 for e in evs])
        # By tenant `next` is the last tseq returned; without, the last seq
        # examined (a key limited to some tenants gets pages with fewer
        # events, even none, while more follow).  No progress: caught up.
        done = nxt <= after or (upto is not None and nxt + 1 >= upto)
        self.filled += len(evs)
        return evs, max(nxt, after), done

    def cursor(self, unyielded: Iterable[Mapping[str, Any]]) -> Dict[int, int]:
        """Positions up to which every event was yielded (or filtered out):
        the tracked ones, except on a shard with events still waiting to
        be yielded, where it is just before the first of them."""
        out = dict(self.pos)
        seen = set()
        for ev in unyielded:
            sh, p = ev.get("shard"), self.position(ev)
            if isinstance(sh, int) and p is not None and sh not in seen:
                seen.add(sh)
                out[sh] = p - 1
        return out

    def probe_request(self, shard: int, x: int) -> Dict[str, Any]:
        return history_request(shard, x, 1, self.tenant)

    def probe_result(self, reply: Mapping[str, Any], x: int) -> bool:
        """Whether the shard has an event (of the tenant) beyond x."""
        if reply.get("events"):
            return True
        nxt = reply.get("next")
        return self.tenant is None and isinstance(nxt, int) and nxt > x


def search_last() -> Generator[int, bool, int]:
    """Binary search of the last position of a shard with one-event
    history requests: a generator that yields the x to probe and receives
    whether there is an event after it; returns (StopIteration.value) the
    last position, 0 for none.  About 2 log2(n) requests."""
    if not (yield 0):
        return 0
    hi = 1
    while (yield hi) and hi < 2 ** 62:
        hi *= 2
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (yield mid):
            lo = mid
        else:
            hi = mid
    return hi


def event_from_command(cmd: Mapping[str, Any]) -> Dict[str, Any]:
    """An event-shaped map from a `get` reply's command, for the rare
    wait=True whose terminal event could not be read back."""
    ev = {k: cmd.get(k) for k in ("id", "tenant", "key", "command", "state", "reason", "error",
                                  "http", "fault", "shard")}
    if "vin" in cmd:
        ev["vin"] = cmd["vin"]
    else:
        ev["site"] = cmd.get("site")
    tr = cmd.get("transitions") or []
    ev["prev"] = tr[-2]["state"] if len(tr) >= 2 else None
    ev["at"] = cmd.get("updated")
    ev["attempt"] = cmd.get("attempts")
    return ev


# ---- campaigns ------------------------------------------------------------

CAMPAIGN_MAX_DEVICES = 100000
CAMPAIGN_MAX_PARTS = 1000
# fleetqd's request body limit: a campaign's devices are sent in parts of
# at most this many bytes (msgpack), each a `campaign` request.
BODY_LIMIT = 256 * 1024
CAMPAIGN_FINAL = frozenset({"done", "aborted"})


def campaign_devices(devices: Iterable[Any], account: Any = None) -> List[Dict[str, Any]]:
    """The device list of a campaign as fleetqd wants it: each item a
    mapping with ``vin`` or ``site`` and ``account`` (`account` fills the
    ones without), a VIN string or a site id (int).  VINs are upper-cased;
    a device listed twice is refused naming both positions."""
    out: List[Dict[str, Any]] = []
    seen: Dict[Any, int] = {}
    dflt = _text("account", account) if account is not None else None
    for i, d in enumerate(devices):
        if isinstance(d, (str, bytes)):
            d = {"vin": d}
        elif isinstance(d, numbers.Integral) and not isinstance(d, bool):
            d = {"site": d}
        elif not isinstance(d, Mapping):
            raise TypeError(f"devices[{i}]: expected a mapping with vin or site, a VIN or a site "
                            f"id, got {type(d).__name__}")
        vin, site = d.get("vin"), d.get("site")
        if (vin is None) == (site is None):
            raise ValueError(f"devices[{i}]: give exactly one of vin and site")
        m: Dict[str, Any] = {}
        if vin is not None:
            v = _text(f"devices[{i}].vin", vin).upper()
            m["vin"] = v
            dev: Any = v
        else:
            s = _site(site)
            m["site"] = s
            dev = s
        acct = d.get("account")
        acct = _text(f"devices[{i}].account", acct) if acct is not None else dflt
        if not acct:
            raise ValueError(f"devices[{i}]: no account (give one, or account= as the default)")
        m["account"] = acct
        if dev in seen:
            raise ValueError(f"devices[{i}]: device {dev} is listed twice (first at "
                             f"devices[{seen[dev]}])")
        seen[dev] = i
        out.append(m)
    if not out:
        raise ValueError("devices: empty")
    if len(out) > CAMPAIGN_MAX_DEVICES:
        raise ValueError(f"devices: {len(out)} devices; a campaign takes at most "
                         f"{CAMPAIGN_MAX_DEVICES}")
    return out


def campaign_head(tenant: Any, key: Any, command: Any, params: Optional[Mapping[str, Any]] = None,
                  ttl_ms: Any = None, rate: Any = None, max_failure_ratio: Any = None,
                  not_before: Any = None) -> Dict[str, Any]:
    """What every part of a campaign repeats."""
    if type(key) is not str and isinstance(key, numbers.Integral) and not isinstance(key, bool):
        key = str(int(key))
    key = _text("key", key)
    if not 1 <= len(key.encode()) <= 100:
        raise ValueError("key: a campaign key is 1..100 bytes (device commands get "
                         "<key>/<vin or site>)")
    m: Dict[str, Any] = {"op": "campaign", "tenant": _text("tenant", tenant), "key": key,
                         "command": _text("command", command)}
    p = params_value(params)
    if p:
        m["params"] = p
    if ttl_ms is not None:
        m["ttl_ms"] = _int("ttl_ms", ttl_ms)
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError("rate: expected a number (commands per second)")
        r = float(rate)
        if not 0 < r <= 100000:
            raise ValueError(f"rate: {rate!r} is out of range (0 < rate <= 100000)")
        m["rate"] = int(r) if r == int(r) else r
    if max_failure_ratio is not None:
        if isinstance(max_failure_ratio, bool) or not isinstance(max_failure_ratio, numbers.Real):
            raise TypeError("max_failure_ratio: expected a number from 0 to 1")
        x = float(max_failure_ratio)
        if not 0 <= x <= 1:
            raise ValueError(f"max_failure_ratio: {max_failure_ratio!r} is out of range 0..1")
        m["max_failure_ratio"] = x
    if not_before is not None:
        m["not_before"] = _when("not_before", not_before)
    return m


def campaign_parts(head: Mapping[str, Any], devices: List[Dict[str, Any]],
                   part_bytes: int = BODY_LIMIT) -> List[Dict[str, Any]]:
    """The `campaign` requests of a device list: consecutive slices whose
    requests each fit part_bytes (with `req` added), numbered part 1..n with
    parts n when there is more than one."""
    # The head at its largest: part / parts of 1000, a `req`, and the
    # devices array header of 5 bytes instead of 1.
    big = dict(head, part=CAMPAIGN_MAX_PARTS, parts=CAMPAIGN_MAX_PARTS, req=2 ** 62, devices=[])
    base = len(pack(big)) + 4
    packer = msgpack.Packer(use_bin_type=True)
    slices: List[Tuple[int, int]] = []
    start, used = 0, base
    for i, d in enumerate(devices):
        n = len(packer.pack(d))
        if base + n > part_bytes:
            raise ValueError(f"devices[{i}]: does not fit in a request of {part_bytes} bytes")
        if used + n > part_bytes:
            slices.append((start, i))
            start, used = i, base
        used += n
    slices.append((start, len(devices)))
    if len(slices) > CAMPAIGN_MAX_PARTS:
        raise ValueError(f"{len(slices)} parts needed, at most {CAMPAIGN_MAX_PARTS}")
    out = []
    for k, (a, b) in enumerate(slices):
        m = dict(head)
        if len(slices) > 1:
            m["part"], m["parts"] = k + 1, len(slices)
        m["devices"] = devices[a:b]
        out.append(m)
    return out


def campaign_requests(tenant: Any, key: Any, command: Any, devices: Iterable[Any],
                      params: Optional[Mapping[str, Any]] = None, ttl_ms: Any = None,
                      rate: Any = None, max_failure_ratio: Any = None, not_before: Any = None,
                      account: Any = None, part_bytes: int = BODY_LIMIT) -> List[Dict[str, Any]]:
    head = campaign_head(tenant, key, command, params, ttl_ms, rate, max_failure_ratio,
                         not_before)
    return campaign_parts(head, campaign_devices(devices, account), part_bytes)


def part_budget(timeout: Optional[float], client_timeout: float, retries: int, devices: int,
                last: bool) -> float:
    """Seconds one part of a campaign may take, resends included: the
    caller's `timeout`, else the client's (timeout x tries), and for the
    last part, which fleetqd answers once every device command of the
    campaign is stored, 1 s more per 1,000 devices."""
    if timeout is not None:
        return float(timeout)
    return client_timeout * (retries + 1) + (devices / 1000.0 if last else 0.0)


def campaign_send(bodies: List[Dict[str, Any]], timeout: Optional[float], client_timeout: float,
                  retries: int) -> Generator[Tuple[Dict[str, Any], float], Dict[str, Any],
                                             Dict[str, Any]]:
    """Sending a campaign's parts (campaign_requests) in order, one at a
    time, without the I/O, for the blocking and the asyncio client alike: a
    generator that yields (request, seconds its call may take) and receives
    the reply, or gets the call's FleetqError thrown in (gen.throw).  A
    part that times out within its budget (part_budget) is yielded again:
    the same part is safe (fleetqd answers ``dup``), and fleetqd answers
    the copies together once the part is stored.  Any other error, or a
    timeout after the budget, is raised with the part's number in
    ``.part``.  Returns (StopIteration.value) the reply to the last part,
    ``dup`` true when fleetqd had every part already."""
    n = sum(len(b["devices"]) for b in bodies)
    dup, reply = True, {}
    for i, body in enumerate(bodies):
        end = time.monotonic() + part_budget(timeout, client_timeout, retries, n,
                                             i == len(bodies) - 1)
        while True:
            try:
                reply = yield body, max(0.001, end - time.monotonic())
                break
            except Timeout as e:
                if time.monotonic() >= end:
                    e.part = i + 1  # type: ignore[attr-defined]
                    raise
            except FleetqError as e:
                e.part = i + 1  # type: ignore[attr-defined]
                raise
        dup = dup and bool(reply.get("dup"))
    reply["dup"] = dup
    reply.setdefault("parts", len(bodies))
    return reply


def campaign_lookup(op: str, id: Any = None, tenant: Any = None, key: Any = None) -> Dict[str, Any]:
    return lookup_request(op, id, tenant, key)


def campaign_final(m: Mapping[str, Any]) -> bool:
    return bool(m.get("final")) or m.get("state") in CAMPAIGN_FINAL


def campaign_snapshot(reply: Mapping[str, Any]) -> Dict[str, Any]:
    """A progress-event-shaped map from a campaign_get reply (what a
    watch yields when it caught up by reading the campaign)."""
    ev = {k: v for k, v in reply.items() if k not in ("ok", "req")}
    ev["type"] = "campaign"
    ev.setdefault("at", int(time.time() * 1000))
    ev["final"] = reply.get("state") in CAMPAIGN_FINAL
    ev["snapshot"] = True
    return ev


def campaign_progress_key(m: Mapping[str, Any]) -> Tuple[Any, ...]:
    """What tells a campaign_get that brings news from one that does not."""
    return (m.get("state"), tuple(sorted((m.get("counts") or {}).items())))


class CampaignWatchCore:
    """What the blocking and the asyncio CampaignWatch share: which events
    bring news, and which subscription frames are this campaign's."""

    id: Optional[str]
    final: Optional[Dict[str, Any]]
    _last: Any
    _heard: float  # time.monotonic() of the last event of this campaign

    def _news(self, ev: Dict[str, Any]) -> bool:
        """Whether ev is worth yielding: progress the last one yielded did
        not show, or the campaign's end (then kept in ``final``)."""
        k = campaign_progress_key(ev)
        fin = campaign_final(ev)
        if k == self._last and not fin:
            return False
        self._last = k
        if fin:
            self.final = ev
        return True

    def _event(self, frames: List[bytes]) -> Optional[Dict[str, Any]]:
        """This campaign's progress event in a message of the subscription,
        None for anything else: undecodable, or another campaign's (the
        topic is a prefix: "c-1" also selects "c-12")."""
        try:
            ev = unpack(frames[-1])
        except Exception:
            return None
        if not isinstance(ev, dict) or ev.get("id") != self.id:
            return None
        self._heard = time.monotonic()
        return ev
