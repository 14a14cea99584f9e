"""The asyncio fleetq client: the calls of :class:`fleetq_client.Client` as
coroutines, on one DEALER socket shared by every task (replies matched by
``req``), so that concurrent calls pipeline by themselves::

    async with fleetq_client.aio.Client("tcp://127.0.0.1:5555") as c:
        replies = await asyncio.gather(*(c.submit("acme", f"k{i}", "fleet-ops",
                                                  "door_lock", vin=v) for i, v in ...))
        async for ev in c.watch("acme"):
            ...
"""

import asyncio
import collections
import datetime
import itertools
import random
import time
import weakref
from typing import Any, Deque, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import zmq
import zmq.asyncio

from . import _common as C
from . import _sockets as S
from .errors import Busy, FleetqError, NotFound, Timeout, error_for

Reply = Dict[str, Any]
Event = Dict[str, Any]


def _now() -> float:
    return time.monotonic()


class _Batch:
    """Replies of one call_many, queued by the reader; wait() sleeps until
    there is one (or the timeout)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.replies: Deque[Reply] = collections.deque()
        self._wake: "Optional[asyncio.Future[None]]" = None

    def put(self, reply: Reply) -> None:
        self.replies.append(reply)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def wait(self, timeout: float) -> bool:
        if self.replies:
            return True
        self._wake = self.loop.create_future()
        timer = self.loop.call_later(timeout, lambda f=self._wake: f.done() or f.set_result(None))
        try:
            await self._wake
        finally:
            timer.cancel()
            self._wake = None
        return bool(self.replies)


class Client:
    """See :class:`fleetq_client.Client` for the arguments.  Create it in
    a running event loop; close it with ``await client.close()`` or
    ``async with``."""

    def __init__(self, endpoint: str = C.DEFAULT_ENDPOINT, curve_key: Any = None,
                 server_key: Any = None, *, publish: Optional[str] = None,
                 timeout: float = 10.0, retries: int = 2,
                 context: Optional[zmq.asyncio.Context] = None) -> None:
        self.endpoint = endpoint
        self.publish = publish or C.default_publish(endpoint)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._curve = C.curve_options(curve_key, server_key)
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock = S.request_socket(self._ctx, endpoint, self._curve)
        # Plain non-blocking calls on the same socket: sends never block
        # (no high-water mark) and replies are drained in one go after each
        # wake-up, far cheaper than one awaited future per message.
        self._sync = zmq.Socket.shadow(self._sock.underlying)
        self._req = itertools.count(random.randrange(1, 2 ** 40))
        self._waiting: Dict[int, Any] = {}  # req -> Future or _Batch
        self._reader: Optional["asyncio.Task[None]"] = None
        self._watches: "weakref.WeakSet[Watch]" = weakref.WeakSet()

    async def _sub(self, topics: Iterable[bytes], rcvhwm: Optional[int] = None,
                   rcvbuf: Optional[int] = None, wait: float = 2.0) -> zmq.asyncio.Socket:
        if not self.publish:
            raise ValueError(f"no status endpoint known for {self.endpoint}: pass publish=")
        s, mon = S.status_socket(self._ctx, self._curve, topics, rcvhwm, rcvbuf)
        try:
            s.connect(self.publish)
            if await mon.poll(int(wait * 1000)):
                await mon.recv_multipart()
                await asyncio.sleep(0.05)
        finally:
            s.disable_monitor()
            mon.close(0)
        return s

    async def close(self) -> None:
        """Close the socket and this client's watches."""
        for w in list(self._watches):
            w.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
        for f in self._waiting.values():
            if not f.done():
                f.cancel()
        self._waiting.clear()
        if not self._sock.closed:
            self._sock.close(0)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- requests ----------------------------------------------------------

    async def _read(self) -> None:
        """Hand each reply to the call waiting for its `req`."""
        sync, more = self._sync, zmq.RCVMORE
        while True:
            await self._sock.poll(zmq.POLLIN)
            while True:
                try:
                    data = sync.recv(zmq.NOBLOCK)
                    while sync.get(more):
                        data = sync.recv()
                except zmq.Again:
                    break
                try:
                    reply = C.unpack(data)
                except Exception:
                    continue
                if not isinstance(reply, dict):
                    continue
                w = self._waiting.get(reply.get("req"))  # type: ignore[arg-type]
                if w is None:
                    continue
                if isinstance(w, _Batch):
                    w.put(reply)
                elif not w.done():
                    w.set_result(reply)

    def _send(self, body: Mapping[str, Any], req: int) -> None:
        m = dict(body)
        m["req"] = req
        try:
            # Never blocks the event loop: without a high-water mark a send
            # fails only when libzmq has no connection left at all, which
            # is what a refused handshake (an unlisted or removed CURVE key,
            # a wrong server key) leaves behind.
            self._sync.send(C.pack(m), zmq.NOBLOCK)
        except zmq.Again:
            raise Timeout(f"cannot send to {self.endpoint}: no connection (fleetqd refused "
                          "this client: check the CURVE key is in fleetqd's clients file and "
                          "the server key is fleetqd's)") from None

    def _start_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def call(self, body: Mapping[str, Any], timeout: Optional[float] = None,
                   retry: bool = True) -> Reply:
        """As :meth:`fleetq_client.Client.call`.  Any number of calls may
        run at once: they share the socket and pipeline."""
        self._start_reader()
        loop = asyncio.get_running_loop()
        budget = timeout if timeout is not None else self.timeout * (self.retries + 1)
        deadline = _now() + budget
        reqs: List[int] = []
        tries = 0
        try:
            while True:
                # A fresh future per attempt (a timed-out one is done); every
                # copy sent so far resolves the newest, so a late reply to an
                # earlier copy is taken too.
                fut: "asyncio.Future[Optional[Reply]]" = loop.create_future()
                req = next(self._req)
                reqs.append(req)
                for r in reqs:
                    self._waiting[r] = fut
                self._send(body, req)
                tries += 1
                timer = loop.call_later(max(0.001, min(self.timeout, deadline - _now())),
                                        lambda f=fut: f.done() or f.set_result(None))
                try:
                    reply = await fut
                finally:
                    timer.cancel()
                more = retry and tries <= self.retries and _now() < deadline
                if reply is None:
                    if more:
                        continue
                    raise Timeout(f"no reply from {self.endpoint} within {budget:.1f} s "
                                  f"({tries} attempt{'s' if tries > 1 else ''})")
                if reply.get("ok"):
                    return reply
                err = error_for(reply)
                if err.retriable and more:
                    await asyncio.sleep(min(0.05 * 2 ** tries, 1.0))
                    continue
                raise err
        finally:
            for r in reqs:
                self._waiting.pop(r, None)

    async def call_many(self, bodies: Iterable[Mapping[str, Any]], window: int = 1000
                        ) -> List[Union[Reply, FleetqError]]:
        """Pipeline requests, at most `window` at once (as the blocking
        client's call_many: timeouts and ``busy`` sent again); each reply
        or the FleetqError it turned into, in order."""
        self._start_reader()
        todo = list(bodies)
        n = len(todo)
        out: List[Any] = [None] * n
        batch = _Batch(asyncio.get_running_loop())
        owner: Dict[int, int] = {}
        sent_at: Dict[int, float] = {}
        order: Deque[Tuple[float, int]] = collections.deque()
        tries = [0] * n
        queue: Deque[int] = collections.deque(range(n))

        def send(i: int) -> None:
            req = next(self._req)
            owner[req] = i
            self._waiting[req] = batch
            self._send(todo[i], req)
            t = _now()
            sent_at[i] = t
            order.append((t, i))
            tries[i] += 1

        try:
            while queue or sent_at:
                while queue and len(sent_at) < window:
                    send(queue.popleft())
                if not batch.replies:
                    while order and sent_at.get(order[0][1]) != order[0][0]:
                        order.popleft()
                    left = (order[0][0] + self.timeout - _now()) if order else self.timeout
                    if left > 0 and await batch.wait(left):
                        continue
                    now = _now()
                    while order and order[0][0] + self.timeout <= now:
                        t, i = order.popleft()
                        if sent_at.get(i) != t:
                            continue
                        if tries[i] > self.retries:
                            out[i] = Timeout(f"no reply from {self.endpoint} after {tries[i]} attempts")
                            del sent_at[i]
                        else:
                            send(i)
                    continue
                reply = batch.replies.popleft()
                req = reply.get("req")
                self._waiting.pop(req, None)
                i = owner.pop(req, -1)
                if i < 0 or i not in sent_at:
                    continue
                del sent_at[i]
                if reply.get("ok"):
                    out[i] = reply
                    continue
                err = error_for(reply)
                if err.retriable and tries[i] <= self.retries:
                    await asyncio.sleep(0.01)
                    queue.append(i)
                else:
                    out[i] = err
        finally:
            for r in owner:
                self._waiting.pop(r, None)
        return out

    # ---- operations --------------------------------------------------------

    async def submit(self, tenant: str, key: Union[str, int], account: str, command: str,
                     vin: Optional[str] = None, site: Union[int, str, None] = None,
                     params: Optional[Mapping[str, Any]] = None, ttl_ms: Optional[int] = None,
                     wake: Optional[bool] = None, coalesce: Optional[bool] = None,
                     wait: bool = False, timeout: Optional[float] = None,
               not_before: Union[int, datetime.datetime, None] = None) -> Reply:
        """As :meth:`fleetq_client.Client.submit`."""
        body = C.submit_request(tenant, key, account, command, vin, site, params, ttl_ms,
                                wake, coalesce, not_before)
        if not wait:
            return await self.call(body, timeout)
        deadline = _now() + (timeout if timeout is not None else C.wait_budget(body.get("ttl_ms"), body.get("not_before")))
        device = body.get("vin") or str(body.get("site"))
        sub = await self._sub([f"{body['tenant']}/{device}".encode()])
        try:
            reply = await self.call(body, max(0.001, deadline - _now()))
            reply["event"] = await self._wait_event(sub, reply, body, deadline)
            return reply
        finally:
            sub.close(0)

    async def _wait_event(self, sub: zmq.asyncio.Socket, reply: Reply, body: Mapping[str, Any],
                          deadline: float) -> Event:
        cid = reply["id"]
        next_poll = _now() + 2.0
        done_at: Optional[float] = None
        cmd: Dict[str, Any] = {}
        while True:
            now = _now()
            if now >= deadline:
                raise Timeout(f"command {cid} did not end in time")
            wait = min(deadline, next_poll, done_at or next_poll) - now
            if await sub.poll(max(1, int(wait * 1000))):
                ev = C.unpack((await sub.recv_multipart())[-1])
                if ev.get("id") == cid and ev.get("state") in C.TERMINAL:
                    return ev
                continue
            if done_at is not None and _now() >= done_at:
                ev = await self._find_event(cid, body["tenant"], cmd.get("shard"))
                return ev if ev is not None else C.event_from_command(cmd)
            if _now() >= next_poll:
                next_poll = _now() + 2.0
                try:
                    got = await self.get(id=cid)
                except (Timeout, NotFound):
                    continue
                if got.get("state") in C.TERMINAL and done_at is None:
                    cmd = got
                    done_at = _now() + 0.3

    async def _search_last(self, core: C.WatchCore, shard: int, call: Any = None) -> int:
        call = call or self.call
        gen = C.search_last()
        x = next(gen)
        try:
            while True:
                x = gen.send(core.probe_result(await call(core.probe_request(shard, x)), x))
        except StopIteration as stop:
            return int(stop.value)

    async def _find_event(self, cid: str, tenant: str, shard: Any) -> Optional[Event]:
        if not isinstance(shard, int):
            return None
        hi = await self._search_last(C.WatchCore(tenant, None, None), shard)
        while hi > 0:
            lo = max(0, hi - 1000)
            r = await self.call(C.history_request(shard, lo, hi - lo, tenant))
            for ev in reversed(r.get("events") or []):
                if ev.get("id") == cid and ev.get("state") in C.TERMINAL:
                    return ev
            hi = lo
        return None

    async def submit_many(self, commands: Iterable[Mapping[str, Any]], window: int = 1000,
                          raise_errors: bool = True) -> List[Union[Reply, FleetqError]]:
        """As :meth:`fleetq_client.Client.submit_many`."""
        out = await self.call_many([C.submit_request(**c) for c in commands], window)
        if raise_errors:
            for r in out:
                if isinstance(r, FleetqError):
                    raise r
        return out

    async def get(self, id: Optional[str] = None, tenant: Optional[str] = None,
                  key: Union[str, int, None] = None) -> Dict[str, Any]:
        return (await self.call(C.lookup_request("get", id, tenant, key)))["command"]

    async def cancel(self, id: Optional[str] = None, tenant: Optional[str] = None,
                     key: Union[str, int, None] = None) -> Dict[str, Any]:
        return (await self.call(C.lookup_request("cancel", id, tenant, key), retry=False))["command"]

    async def history(self, shard: int, after: int = 0, limit: int = 100,
                      tenant: Optional[str] = None) -> Reply:
        return await self.call(C.history_request(shard, after, limit, tenant))

    async def ping(self, timeout: Optional[float] = None) -> Reply:
        return await self.call({"op": "ping"}, timeout)

    async def health(self, timeout: float = 2.0) -> Dict[str, Any]:
        t0 = _now()
        try:
            r = await self.call({"op": "ping"}, timeout, retry=False)
        except FleetqError as e:
            return {"ok": False, "error": e.code, "message": e.message}
        return {"ok": True, "version": r.get("version"), "shards": r.get("shards"),
                "latency_ms": round((_now() - t0) * 1000, 3)}

    async def health_report(self, stuck_ms: Optional[int] = None,
                            timeout: Optional[float] = None) -> Reply:
        """As :meth:`fleetq_client.Client.health_report`."""
        return await self.call(C.health_request(stuck_ms), timeout)

    def watch(self, tenant: Optional[str] = None, device: Union[str, int, None] = None, *,
              cursor: Optional[Mapping[int, int]] = None, idle: float = 0.5,
              rcvhwm: Optional[int] = None, rcvbuf: Optional[int] = None) -> "Watch":
        """``async for ev in client.watch(...)``: as :class:`fleetq_client.Watch`."""
        w = Watch(self, tenant, device, cursor=cursor, idle=idle, rcvhwm=rcvhwm, rcvbuf=rcvbuf)
        self._watches.add(w)
        return w

    async def campaign(self, tenant: str, key: Union[str, int], command: str,
                       devices: Iterable[Any], params: Optional[Mapping[str, Any]] = None,
                       ttl_ms: Optional[int] = None, rate: Optional[float] = None,
                       max_failure_ratio: Optional[float] = None,
                       not_before: Union[int, datetime.datetime, None] = None,
                       account: Optional[str] = None, timeout: Optional[float] = None,
                       part_bytes: int = C.BODY_LIMIT) -> Reply:
        """As :meth:`fleetq_client.Client.campaign`: the parts are sent in
        order, one at a time."""
        bodies = C.campaign_requests(tenant, key, command, devices, params, ttl_ms, rate,
                                     max_failure_ratio, not_before, account, part_bytes)
        send = C.campaign_send(bodies, timeout, self.timeout, self.retries)
        try:
            req = next(send)
            while True:
                try:
                    reply = await self.call(*req)
                except FleetqError as e:
                    req = send.throw(e)
                else:
                    req = send.send(reply)
        except StopIteration as stop:
            return stop.value

    async def campaign_get(self, id: Optional[str] = None, tenant: Optional[str] = None,
                           key: Union[str, int, None] = None) -> Dict[str, Any]:
        r = await self.call(C.campaign_lookup("campaign_get", id, tenant, key))
        return {k: v for k, v in r.items() if k not in ("ok", "req")}

    async def campaign_abort(self, id: Optional[str] = None, tenant: Optional[str] = None,
                             key: Union[str, int, None] = None) -> Dict[str, Any]:
        body = C.campaign_lookup("campaign_abort", id, tenant, key)
        end = _now() + self.timeout * (self.retries + 1)
        while True:
            try:
                r = await self.call(body, retry=False)
                break
            except Busy:
                if _now() >= end:
                    raise
                await asyncio.sleep(0.25)
        return {k: v for k, v in r.items() if k not in ("ok", "req")}

    def watch_campaign(self, id: Optional[str] = None, tenant: Optional[str] = None,
                       key: Union[str, int, None] = None, *,
                       quiet: float = 5.0) -> "CampaignWatch":
        """``async for ev in client.watch_campaign(id=...)``: as
        :meth:`fleetq_client.Client.watch_campaign` (ends after the final
        event)."""
        return CampaignWatch(self, id, tenant, key, quiet)

    async def admin(self, action: str, **fields: Any) -> Reply:
        return await self.call(C.admin_request(action, fields), retry=action != "account_remove")

    async def account_add(self, account: str, access_token: str, refresh_token: str,
                          client_id: str, region: Optional[str] = None,
                          base_url: Optional[str] = None) -> Dict[str, Any]:
        return (await self.admin("account_add", account=account, access_token=access_token,
                                 refresh_token=refresh_token, client_id=client_id,
                                 region=region, base_url=base_url))["account"]

    async def account_list(self) -> List[Dict[str, Any]]:
        return (await self.admin("account_list"))["accounts"]

    async def account_get(self, account: str) -> Dict[str, Any]:
        return (await self.admin("account_get", account=account))["account"]

    async def account_remove(self, account: str) -> None:
        await self.admin("account_remove", account=account)

    async def account_retry(self, account: str) -> bool:
        return bool((await self.admin("account_retry", account=account)).get("cleared"))


class Watch:
    """The asyncio form of :class:`fleetq_client.Watch` (same rules):
    ``async for ev in watch`` or ``await watch.get(timeout)``.  Set up on
    first use."""

    def __init__(self, client: Client, tenant: Optional[str], device: Union[str, int, None],
                 cursor: Optional[Mapping[int, int]] = None, idle: float = 0.5,
                 rcvhwm: Optional[int] = None, rcvbuf: Optional[int] = None) -> None:
        self._c = client
        self.core = C.WatchCore(tenant, None if device is None else str(device), cursor)
        self._had_cursor = cursor is not None
        self.idle = idle
        self._opts = (rcvhwm, rcvbuf)
        self._ready: Deque[Event] = collections.deque()
        self._sub: Optional[zmq.asyncio.Socket] = None
        self._closed = False
        self.shards = 0
        self._heard = 0.0

    @property
    def filled(self) -> int:
        return self.core.filled

    @property
    def cursor(self) -> Dict[int, int]:
        return self.core.cursor(self._ready)

    async def _call(self, body: Mapping[str, Any]) -> Reply:
        while True:
            if self._closed:
                raise FleetqError("watch closed", code="closed")
            try:
                return await self._c.call(body, timeout=self._c.timeout)
            except Timeout:
                continue

    async def start(self) -> "Watch":
        """Find the start points and subscribe (done by the first get)."""
        if self._sub is None:
            self.shards = int((await self._call({"op": "ping"}))["shards"])
            if not self._had_cursor:
                for sh in range(self.shards):
                    self.core.pos[sh] = await self._c._search_last(self.core, sh, self._call)
            self._sub = await self._c._sub([self.core.topic], *self._opts)
            self._heard = _now()
        return self

    async def _fill(self, shard: int, after: int, upto: Optional[int]) -> None:
        while True:
            req = self.core.fill_request(shard, after, upto)
            if req is None:
                return
            evs, after, done = self.core.fill_page(await self._call(req), after, upto)
            for ev in evs:
                if self.core.advance(ev) and self.core.matches(ev):
                    self._ready.append(ev)
            if done:
                return

    async def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        await self.start()
        assert self._sub is not None
        end = None if timeout is None else _now() + timeout
        while not self._ready:
            now = _now()
            if end is not None and now >= end:
                return None
            quiet = now - self._heard
            if quiet >= self.idle:
                for sh in range(self.shards):
                    await self._fill(sh, self.core.pos.get(sh, 0), None)
                self._heard = _now()
                continue
            left = self.idle - quiet if end is None else min(self.idle - quiet, end - now)
            if await self._sub.poll(max(1, int(left * 1000))):
                frames = await self._sub.recv_multipart()
                self._heard = _now()
                try:
                    ev = C.unpack(frames[-1])
                except Exception:
                    continue
                if not isinstance(ev, dict):
                    continue
                kind, after, upto = self.core.live(ev)
                if kind == "dup":
                    self.core.skipped += 1
                    continue
                if kind == "gap":
                    await self._fill(ev["shard"], after, upto)
                if self.core.advance(ev) and self.core.matches(ev):
                    self._ready.append(ev)
        return self._ready.popleft()

    def __aiter__(self) -> "Watch":
        return self

    async def __anext__(self) -> Event:
        ev = await self.get(None)
        assert ev is not None
        return ev

    def close(self) -> None:
        self._closed = True
        if self._sub is not None and not self._sub.closed:
            self._sub.close(0)

    async def __aenter__(self) -> "Watch":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


class CampaignWatch(C.CampaignWatchCore):
    """The asyncio form of :class:`fleetq_client.CampaignWatch`: ``async
    for ev in watch`` (ends after the final event) or ``await
    watch.get(timeout)``.  Set up on first use."""

    def __init__(self, client: Client, id: Optional[str], tenant: Optional[str],
                 key: Union[str, int, None], quiet: float = 5.0) -> None:
        self._c = client
        self._lookup = (id, tenant, key)
        self.quiet = quiet
        self.id: Optional[str] = None
        self.tenant: Optional[str] = tenant
        self.final: Optional[Event] = None
        self._last: Any = None
        self._sub: Optional[zmq.asyncio.Socket] = None
        self._heard = 0.0

    async def start(self) -> "CampaignWatch":
        if self._sub is None:
            first = await self._c.campaign_get(*self._lookup)
            self.id, self.tenant = first["id"], first.get("tenant", self.tenant)
            self._sub = await self._c._sub([f"{self.tenant}/campaign/{self.id}".encode()])
            self._heard = 0.0
        return self

    async def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next progress event, None after `timeout` seconds without
        one; raises StopAsyncIteration once the final one was returned."""
        if self.final is not None:
            raise StopAsyncIteration
        await self.start()
        assert self._sub is not None
        end = None if timeout is None else _now() + timeout
        while True:
            now = _now()
            if now - self._heard >= self.quiet:
                self._heard = now
                ev = C.campaign_snapshot(await self._c.call(
                    C.campaign_lookup("campaign_get", self.id, self.tenant)))
                if self._news(ev):
                    return ev
                continue
            if end is not None and now >= end:
                return None
            left = self.quiet - (now - self._heard)
            if end is not None:
                left = min(left, end - now)
            if not await self._sub.poll(max(1, int(left * 1000))):
                continue
            ev = self._event(await self._sub.recv_multipart())
            if ev is not None and self._news(ev):
                return ev

    def __aiter__(self) -> "CampaignWatch":
        return self

    async def __anext__(self) -> Event:
        ev = await self.get(None)
        assert ev is not None
        return ev

    def close(self) -> None:
        if self._sub is not None and not self._sub.closed:
            self._sub.close(0)

    async def __aenter__(self) -> "CampaignWatch":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
