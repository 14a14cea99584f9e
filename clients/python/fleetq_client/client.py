"""The blocking fleetq client: one DEALER socket to fleetqd's request
endpoint (pipelined, replies matched by ``req``) and SUB sockets to its
status endpoint for ``watch`` and ``submit(wait=True)``.

A Client is not thread-safe (ZeroMQ sockets are not): use one per thread,
or the asyncio variant (:mod:`fleetq_client.aio`) for concurrency.
"""

import collections
import datetime
import itertools
import random
import time
import weakref
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple, Union

import msgpack
import zmq

from . import _common as C
from . import _sockets as S
from .errors import Busy, FleetqError, NotFound, Timeout, error_for

Reply = Dict[str, Any]
Event = Dict[str, Any]


def _now() -> float:
    return time.monotonic()


class Client:
    """A connection to one fleetqd.

    :param endpoint: fleetqd's request endpoint (``--listen``).
    :param curve_key: with CURVE, this service's key pair: the path of a key
        file made by ``fleetq curve-keygen`` (refused when group or others
        may read it) or a ``(public, secret)`` pair of Z85 strings.
    :param server_key: with CURVE, fleetqd's public key (Z85).  Without
        both keys, ``FLEETQ_CURVE_KEY`` and ``FLEETQ_SERVER_KEY`` are used
        when set, else the connection is plaintext.
    :param publish: fleetqd's status endpoint (``--publish``); by default
        the request endpoint's TCP port plus one.
    :param timeout: seconds to wait for one reply before sending again.
    :param retries: how many times a request is sent again after a timeout
        (or a ``busy`` / ``internal`` reply).  Safe for submits: the same
        tenant + key is deduplicated by fleetqd.
    """

    def __init__(self, endpoint: str = C.DEFAULT_ENDPOINT, curve_key: Any = None,
                 server_key: Any = None, *, publish: Optional[str] = None,
                 timeout: float = 10.0, retries: int = 2,
                 context: Optional[zmq.Context] = None) -> None:
        self.endpoint = endpoint
        self.publish = publish or C.default_publish(endpoint)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._curve = C.curve_options(curve_key, server_key)
        self._ctx = context or zmq.Context.instance()
        # A DEALER with no connection blocks in send, and libzmq drops the
        # connection fleetqd refused (an unlisted or removed CURVE key, a
        # wrong server key): a send then fails after `timeout` (Timeout)
        # instead of hanging the caller.
        self._sock = S.request_socket(self._ctx, endpoint, self._curve, self.timeout)
        # Start request numbers at random so that a reply to an earlier
        # process's request on a reused connection cannot be taken for ours.
        self._req = itertools.count(random.randrange(1, 2 ** 40))
        self._waiter: Optional[zmq.Socket] = None
        self._watches: "weakref.WeakSet[Watch]" = weakref.WeakSet()

    # ---- sockets -----------------------------------------------------------

    def _sub(self, topics: Iterable[bytes], rcvhwm: Optional[int] = None,
             rcvbuf: Optional[int] = None, wait: float = 2.0) -> zmq.Socket:
        """A SUB on the status endpoint, connected (handshake done, or
        `wait` seconds passed: ZeroMQ keeps trying on its own)."""
        if not self.publish:
            raise ValueError(f"no status endpoint known for {self.endpoint}: pass publish=")
        s, mon = S.status_socket(self._ctx, self._curve, topics, rcvhwm, rcvbuf)
        try:
            s.connect(self.publish)
            if mon.poll(int(wait * 1000)):
                mon.recv_multipart()
                # The subscription travels right after the handshake; give
                # fleetqd a moment to apply it before anything is submitted.
                time.sleep(0.05)
        finally:
            s.disable_monitor()
            mon.close(0)
        return s

    def close(self) -> None:
        """Close the sockets and this client's watches (pending requests
        are abandoned)."""
        for w in list(self._watches):
            w.close()
        for s in (self._sock, self._waiter):
            if s is not None and not s.closed:
                s.close(0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------

    def _send(self, body: Mapping[str, Any]) -> int:
        req = next(self._req)
        m = dict(body)
        m["req"] = req
        try:
            self._sock.send(C.pack(m))
        except zmq.Again:
            raise Timeout(self._unsent()) from None
        return req

    def _unsent(self) -> str:
        return (f"cannot send to {self.endpoint} within {self.timeout:.1f} s: no connection "
                "(fleetqd is down, or it refused this client: check the CURVE key is in "
                "fleetqd's clients file and the server key is fleetqd's)")

    def _recv_for(self, reqs: Union[Set[int], Mapping[int, Any]], deadline: float) -> Optional[Reply]:
        """The next reply to one of reqs, or None at the deadline.  Replies
        to anything else (an abandoned call's late answer) are dropped."""
        while True:
            left = deadline - _now()
            if left <= 0 or not self._sock.poll(max(1, int(left * 1000))):
                return None
            frames = self._sock.recv_multipart()
            try:
                reply = C.unpack(frames[-1])
            except Exception:
                continue
            if isinstance(reply, dict) and reply.get("req") in reqs:
                return reply

    def call(self, body: Mapping[str, Any], timeout: Optional[float] = None,
             retry: bool = True) -> Reply:
        """Send one request map and return its reply (``ok: true``), or
        raise the :class:`FleetqError` of its code.  Without a reply within
        ``self.timeout`` the same request is sent again (at most
        ``self.retries`` times, within ``timeout`` seconds in all); a reply
        to any of the copies is taken."""
        budget = timeout if timeout is not None else self.timeout * (self.retries + 1)
        deadline = _now() + budget
        reqs: Set[int] = set()
        tries = 0
        while True:
            reqs.add(self._send(body))
            reply = self._recv_for(reqs, min(deadline, _now() + self.timeout))
            tries += 1
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
                time.sleep(min(0.05 * 2 ** tries, 1.0))
                continue
            raise err

    def call_many(self, bodies: Iterable[Mapping[str, Any]], window: int = 1000,
                  timeout: Optional[float] = None) -> List[Union[Reply, FleetqError]]:
        """Pipeline requests on this connection: up to `window` in flight,
        replies matched by ``req`` (they may come back in any order).
        Returns, in the order of `bodies`, each reply or the
        :class:`FleetqError` it turned into (nothing is raised for a
        refusal).  Requests unanswered for ``self.timeout`` are sent again,
        as by :meth:`call`; ``busy`` replies are sent again after a pause."""
        todo = list(bodies)
        n = len(todo)
        out: List[Any] = [None] * n
        owner: Dict[int, int] = {}          # req -> index (every copy sent)
        sent_at: Dict[int, float] = {}      # index -> time of its last send, while unanswered
        order: Deque[Tuple[float, int]] = collections.deque()  # (time, index), send order
        tries = [0] * n
        queue: Deque[int] = collections.deque(range(n))
        end = _now() + timeout if timeout is not None else None
        sock, packb, unpackb = self._sock, msgpack.Packer(use_bin_type=True).pack, C.unpack
        nxt = self._req
        rcvmore = zmq.RCVMORE

        def send(i: int) -> None:
            req = next(nxt)
            m = dict(todo[i])
            m["req"] = req
            try:
                sock.send(packb(m))
            except zmq.Again:
                raise Timeout(self._unsent()) from None
            owner[req] = i
            t = _now()
            sent_at[i] = t
            order.append((t, i))
            tries[i] += 1

        while queue or sent_at:
            while queue and len(sent_at) < window:
                send(queue.popleft())
            try:
                data = sock.recv(zmq.NOBLOCK)
                while sock.get(rcvmore):
                    data = sock.recv()
            except zmq.Again:
                # Nothing waiting: sleep until a reply or the oldest
                # request's timeout, whichever comes first.
                while order and sent_at.get(order[0][1]) != order[0][0]:
                    order.popleft()  # answered, or sent again since
                if not order:
                    continue
                left = order[0][0] + self.timeout - _now()
                if left > 0 and sock.poll(max(1, int(left * 1000))):
                    continue
                now = _now()
                while order and order[0][0] + self.timeout <= now:
                    t, i = order.popleft()
                    if sent_at.get(i) != t:
                        continue
                    if tries[i] > self.retries or (end is not None and now >= end):
                        out[i] = Timeout(f"no reply from {self.endpoint} after {tries[i]} attempts")
                        del sent_at[i]
                    else:
                        send(i)
                continue
            try:
                reply = unpackb(data)
            except Exception:
                continue
            i = owner.pop(reply.get("req"), -1) if isinstance(reply, dict) else -1
            if i < 0 or i not in sent_at:
                continue  # not ours, or a late copy of one already answered
            if reply.get("ok"):
                out[i] = reply
                del sent_at[i]
                continue
            err = error_for(reply)
            del sent_at[i]
            if err.retriable and tries[i] <= self.retries:
                time.sleep(0.01)
                queue.append(i)
            else:
                out[i] = err
        return out

    # ---- operations --------------------------------------------------------

    def submit(self, tenant: str, key: Union[str, int], account: str, command: str,
               vin: Optional[str] = None, site: Union[int, str, None] = None,
               params: Optional[Mapping[str, Any]] = None, ttl_ms: Optional[int] = None,
               wake: Optional[bool] = None, coalesce: Optional[bool] = None,
               wait: bool = False, timeout: Optional[float] = None,
               not_before: Union[int, datetime.datetime, None] = None) -> Reply:
        """Queue one command; returns once fleetqd has it on disk.

        Returns the reply map: ``id``, ``state`` (``queued``, or the
        original's current state when ``dup``), ``dup``.  With
        ``wait=True`` it also waits for the command to end and adds the
        terminal status event as ``reply["event"]`` (its ``state`` says
        how it ended; a failure does not raise).  `timeout` bounds the whole
        call (default: the retries for the reply; with `wait`, the TTL plus
        30 s).  Resending after a timeout uses the same key, so a command is
        never queued twice.  Values are converted to what fleetqd accepts
        (``coalesce=1``, ``percent=80.0``, a site id as str); None means
        "not given".  ``not_before`` (unix ms, or an aware datetime)
        schedules the command: ``state`` is ``scheduled`` until then, and
        the TTL counts from then."""
        body = C.submit_request(tenant, key, account, command, vin, site, params, ttl_ms,
                                wake, coalesce, not_before)
        if not wait:
            return self.call(body, timeout)
        deadline = _now() + (timeout if timeout is not None else C.wait_budget(body.get("ttl_ms"), body.get("not_before")))
        device = body.get("vin") or str(body.get("site"))
        topic = f"{body['tenant']}/{device}".encode()
        if self._waiter is None:
            self._waiter = self._sub([])
        self._waiter.setsockopt(zmq.SUBSCRIBE, topic)
        try:
            reply = self.call(body, max(0.001, deadline - _now()))
            reply["event"] = self._wait_event(reply, body, device, deadline)
            return reply
        finally:
            self._waiter.setsockopt(zmq.UNSUBSCRIBE, topic)

    def _wait_event(self, reply: Reply, body: Mapping[str, Any], device: str,
                    deadline: float) -> Event:
        """The terminal event of the submitted command: from the stream,
        or, when the stream missed it (a restart, a dropped event), read
        back from history once `get` shows the command ended."""
        cid = reply["id"]
        next_poll = _now() + 2.0
        done_at: Optional[float] = None
        cmd: Dict[str, Any] = {}
        while True:
            now = _now()
            if now >= deadline:
                raise Timeout(f"command {cid} did not end in time")
            wait = min(deadline, next_poll, done_at or next_poll) - now
            if self._waiter.poll(max(1, int(wait * 1000))):
                frames = self._waiter.recv_multipart()
                ev = C.unpack(frames[-1])
                if ev.get("id") == cid and ev.get("state") in C.TERMINAL:
                    return ev
                continue
            if done_at is not None and _now() >= done_at:
                ev = self._find_event(cid, body["tenant"], cmd.get("shard"))
                return ev if ev is not None else C.event_from_command(cmd)
            if _now() >= next_poll:
                next_poll = _now() + 2.0
                try:
                    got = self.get(id=cid)
                except (Timeout, NotFound):
                    continue
                if got.get("state") in C.TERMINAL and done_at is None:
                    cmd = got
                    done_at = _now() + 0.3  # its event may still be on the way

    def _find_event(self, cid: str, tenant: str, shard: Any) -> Optional[Event]:
        """The terminal event of command cid, searching the tenant's
        history of its shard backwards from the newest event."""
        if not isinstance(shard, int):
            return None
        core = C.WatchCore(tenant, None, None)
        last = self._search_last(core, shard)
        hi = last
        while hi > 0:
            lo = max(0, hi - 1000)
            r = self.call(C.history_request(shard, lo, hi - lo, tenant))
            for ev in reversed(r.get("events") or []):
                if ev.get("id") == cid and ev.get("state") in C.TERMINAL:
                    return ev
            hi = lo
        return None

    def _search_last(self, core: C.WatchCore, shard: int) -> int:
        gen = C.search_last()
        x = next(gen)
        try:
            while True:
                x = gen.send(core.probe_result(self.call(core.probe_request(shard, x)), x))
        except StopIteration as stop:
            return int(stop.value)

    def submit_many(self, commands: Iterable[Mapping[str, Any]], window: int = 1000,
                    raise_errors: bool = True) -> List[Union[Reply, FleetqError]]:
        """Submit many commands pipelined on this connection (up to
        `window` in flight).  Each item holds :meth:`submit`'s arguments
        (``tenant``, ``key``, ``account``, ``command``, ``vin`` or ``site``,
        ``params``...; no ``wait``).  Returns the replies in order; with
        ``raise_errors`` the first refusal is raised after all were
        answered, else refusals are returned in place as exceptions."""
        bodies = [C.submit_request(**c) for c in commands]
        out = self.call_many(bodies, window)
        if raise_errors:
            for r in out:
                if isinstance(r, FleetqError):
                    raise r
        return out

    def get(self, id: Optional[str] = None, tenant: Optional[str] = None,
            key: Union[str, int, None] = None) -> Dict[str, Any]:
        """The stored command (state, reason, transitions...) by id, or by
        the tenant + key it was submitted with.  Raises NotFound."""
        return self.call(C.lookup_request("get", id, tenant, key))["command"]

    def cancel(self, id: Optional[str] = None, tenant: Optional[str] = None,
               key: Union[str, int, None] = None) -> Dict[str, Any]:
        """Cancel a command that is still queued; returns it (state
        ``cancelled``).  Raises NotCancellable (``.state``) once it is being
        dispatched.  Not resent after a timeout: a second cancel of a
        cancelled command would say not_cancellable."""
        return self.call(C.lookup_request("cancel", id, tenant, key), retry=False)["command"]

    def history(self, shard: int, after: int = 0, limit: int = 100,
                tenant: Optional[str] = None) -> Reply:
        """One page of a shard's stored events: ``{"events": [...], "next": n}``.
        Pass ``next`` as `after` to continue.  With `tenant`, only its
        events, and after / next count its ``tseq``."""
        return self.call(C.history_request(shard, after, limit, tenant))

    def iter_history(self, shard: int, after: int = 0,
                     tenant: Optional[str] = None) -> Iterator[Event]:
        """Every stored event of a shard after `after`, page by page."""
        while True:
            r = self.history(shard, after, 1000, tenant)
            yield from r["events"]
            if r["next"] <= after:
                return
            after = r["next"]

    def ping(self, timeout: Optional[float] = None) -> Reply:
        """``{"ok": True, "version": ..., "shards": n}``."""
        return self.call({"op": "ping"}, timeout)

    def health(self, timeout: float = 2.0) -> Dict[str, Any]:
        """Whether fleetqd answers, without raising: ``ok``, and
        ``version``, ``shards``, ``latency_ms`` or ``error``, ``message``."""
        t0 = _now()
        try:
            r = self.call({"op": "ping"}, timeout, retry=False)
        except FleetqError as e:
            return {"ok": False, "error": e.code, "message": e.message}
        return {"ok": True, "version": r.get("version"), "shards": r.get("shards"),
                "latency_ms": round((_now() - t0) * 1000, 3)}

    def health_report(self, stuck_ms: Optional[int] = None,
                      timeout: Optional[float] = None) -> Reply:
        """fleetqd's own verdict (the ``health`` op): ``healthy``,
        ``problems``, per-shard ``shards`` and failing ``accounts``; a shard
        with unfinished commands and no commit for ``stuck_ms`` (default
        30000) is stuck.  Raises like any call (``Forbidden`` without the
        read or admin role under CURVE); ``health()`` only pings."""
        return self.call(C.health_request(stuck_ms), timeout)

    def watch(self, tenant: Optional[str] = None, device: Union[str, int, None] = None, *,
              cursor: Optional[Mapping[int, int]] = None, idle: float = 0.5,
              rcvhwm: Optional[int] = None, rcvbuf: Optional[int] = None) -> "Watch":
        """Follow status events: an iterator that yields each event once,
        in order per shard, filling whatever the stream dropped (slow
        consumer, fleetqd restart) from history.  See :class:`Watch`."""
        w = Watch(self, tenant, device, cursor=cursor, idle=idle, rcvhwm=rcvhwm, rcvbuf=rcvbuf)
        self._watches.add(w)
        return w

    # ---- campaigns ---------------------------------------------------------

    def campaign(self, tenant: str, key: Union[str, int], command: str,
                 devices: Iterable[Any], params: Optional[Mapping[str, Any]] = None,
                 ttl_ms: Optional[int] = None, rate: Optional[float] = None,
                 max_failure_ratio: Optional[float] = None,
                 not_before: Union[int, datetime.datetime, None] = None,
                 account: Optional[str] = None, timeout: Optional[float] = None,
                 part_bytes: int = C.BODY_LIMIT) -> Reply:
        """Start one command on many devices (at most 100,000): each gets
        an ordinary command with the key ``<key>/<vin or site>``.

        `devices`: mappings with ``vin`` or ``site`` and ``account`` (the
        `account` argument fills the ones without), or plain VINs / site
        ids.  A list too large for one request is sent as parts (256 KiB
        each) in order with the same key; a part that times out or gets
        ``busy`` is sent again, which is safe (``dup``), and calling again
        with the same arguments resumes an interrupted start.  Returns the
        reply to the last part: ``id``, ``devices`` (the total), ``state``,
        ``dup`` (true when fleetqd had every part already), ``parts``.
        `timeout` bounds each part (default: the client's timeout and
        retries, and for the last part, whose answer waits until every
        device command is stored, 1 s more per 1,000 devices).  Raises ValueError / TypeError for a
        bad list before anything is sent, and the :class:`FleetqError` of a
        refusal (which part it was in ``.part``)."""
        bodies = C.campaign_requests(tenant, key, command, devices, params, ttl_ms, rate,
                                     max_failure_ratio, not_before, account, part_bytes)
        send = C.campaign_send(bodies, timeout, self.timeout, self.retries)
        try:
            req = next(send)
            while True:
                try:
                    reply = self.call(*req)
                except FleetqError as e:
                    req = send.throw(e)
                else:
                    req = send.send(reply)
        except StopIteration as stop:
            return stop.value

    def campaign_get(self, id: Optional[str] = None, tenant: Optional[str] = None,
                     key: Union[str, int, None] = None) -> Dict[str, Any]:
        """A campaign by id or tenant + key: ``state`` (receiving,
        scheduled, running, done, aborted), ``devices``, ``counts`` per
        command state, ``succeeded``, ``failed``, times, ``reason``.
        Raises NotFound."""
        r = self.call(C.campaign_lookup("campaign_get", id, tenant, key))
        return {k: v for k, v in r.items() if k not in ("ok", "req")}

    def campaign_abort(self, id: Optional[str] = None, tenant: Optional[str] = None,
                       key: Union[str, int, None] = None) -> Dict[str, Any]:
        """Abort a campaign: cancels its device commands still scheduled or
        queued; returns ``id``, ``state``, ``cancelled`` (how many) and
        ``reason``.  Raises NotCancellable once it is done.  Sent again
        after ``busy`` (its device commands still being stored), not after
        a timeout (a second abort would report 0 cancelled)."""
        body = C.campaign_lookup("campaign_abort", id, tenant, key)
        end = _now() + self.timeout * (self.retries + 1)
        while True:
            try:
                r = self.call(body, retry=False)
                break
            except Busy:
                # The device commands are still being stored: nothing was
                # done, so asking again is safe.
                if _now() >= end:
                    raise
                time.sleep(0.25)
        return {k: v for k, v in r.items() if k not in ("ok", "req")}

    def watch_campaign(self, id: Optional[str] = None, tenant: Optional[str] = None,
                       key: Union[str, int, None] = None, *, quiet: float = 5.0,
                       callback: Any = None) -> "CampaignWatch":
        """Follow a campaign's progress: an iterator over its progress
        events that ends after the final one (state done or aborted).  It
        reads the campaign first (yielded with ``snapshot: True``) and again
        after `quiet` seconds without an event, so nothing is missed.  With
        `callback`, the events are passed to it instead and this returns
        once the campaign ended (the watch, whose ``final`` holds the last
        event)."""
        w = CampaignWatch(self, id, tenant, key, quiet=quiet)
        if callback is None:
            return w
        with w:
            for ev in w:
                callback(ev)
        return w

    # ---- accounts (admin) --------------------------------------------------

    def admin(self, action: str, **fields: Any) -> Reply:
        """An admin request (needs the ``admin`` role with CURVE)."""
        return self.call(C.admin_request(action, fields), retry=action != "account_remove")

    def account_add(self, account: str, access_token: str, refresh_token: str, client_id: str,
                    region: Optional[str] = None, base_url: Optional[str] = None) -> Dict[str, Any]:
        """Register a Tesla account (tokens are stored encrypted; replies
        never carry them).  Exactly one of region (na, eu, cn) or base_url."""
        return self.admin("account_add", account=account, access_token=access_token,
                          refresh_token=refresh_token, client_id=client_id, region=region,
                          base_url=base_url)["account"]

    def account_list(self) -> List[Dict[str, Any]]:
        return self.admin("account_list")["accounts"]

    def account_get(self, account: str) -> Dict[str, Any]:
        return self.admin("account_get", account=account)["account"]

    def account_remove(self, account: str) -> None:
        self.admin("account_remove", account=account)

    def account_retry(self, account: str) -> bool:
        return bool(self.admin("account_retry", account=account).get("cleared"))


class Watch:
    """An iterator over status events (see :meth:`Client.watch`).

    Without `tenant` it follows every event the connection may see and
    tracks each shard's ``seq``; with `tenant`, that tenant's ``tseq`` per
    shard (gap-free even where ``seq`` has gaps: a key limited to some
    tenants).  `device` (a VIN or site id, with `tenant`) keeps only that
    device's events, filtered here so that no other event hides a loss.

    A jump in the tracked number is filled from ``history`` before the
    event that revealed it; a quiet stream (`idle` seconds) is a reason to
    look too, since events lost at the end of a burst leave no later event
    to reveal them.  Each event is yielded exactly once: live copies of
    events already fetched are dropped.  While fleetqd is down the watch
    waits (ZeroMQ reconnects by itself) and fills the gap afterwards.

    It starts at the newest stored event of each shard, or at `cursor`
    ({shard: position}, from :attr:`cursor` of an earlier watch; a shard
    missing from it starts at its first event).  ``filled`` counts the
    events fetched from history."""

    def __init__(self, client: Client, tenant: Optional[str], device: Union[str, int, None],
                 cursor: Optional[Mapping[int, int]] = None, idle: float = 0.5,
                 rcvhwm: Optional[int] = None, rcvbuf: Optional[int] = None) -> None:
        self._c = client
        self.core = C.WatchCore(tenant, None if device is None else str(device), cursor)
        self.idle = idle
        self._ready: Deque[Event] = collections.deque()
        self._closed = False
        self.shards = int(self._call({"op": "ping"})["shards"])
        if cursor is None:
            for sh in range(self.shards):
                self.core.pos[sh] = self._search_last(sh)
        self._sub = client._sub([self.core.topic], rcvhwm=rcvhwm, rcvbuf=rcvbuf)
        self._heard = _now()  # last live event or look at history

    @property
    def filled(self) -> int:
        return self.core.filled

    @property
    def cursor(self) -> Dict[int, int]:
        """Positions of the events yielded so far ({shard: seq}, or tseq
        with a tenant): pass it as ``cursor=`` to resume right after the
        last event yielded."""
        return self.core.cursor(self._ready)

    def _call(self, body: Mapping[str, Any]) -> Reply:
        """A request that waits out a fleetqd restart: timeouts are retried
        until it answers (refusals raise)."""
        while True:
            if self._closed:
                raise FleetqError("watch closed", code="closed")
            try:
                return self._c.call(body, timeout=self._c.timeout)
            except Timeout:
                continue

    def _search_last(self, shard: int) -> int:
        gen = C.search_last()
        x = next(gen)
        try:
            while True:
                r = self._call(self.core.probe_request(shard, x))
                x = gen.send(self.core.probe_result(r, x))
        except StopIteration as stop:
            return int(stop.value)

    def _fill(self, shard: int, after: int, upto: Optional[int]) -> None:
        while True:
            req = self.core.fill_request(shard, after, upto)
            if req is None:
                return
            evs, after, done = self.core.fill_page(self._call(req), after, upto)
            for ev in evs:
                if self.core.advance(ev) and self.core.matches(ev):
                    self._ready.append(ev)
            if done:
                return

    def _on_live(self, ev: Event) -> None:
        kind, after, upto = self.core.live(ev)
        if kind == "dup":
            self.core.skipped += 1
            return
        if kind == "gap":
            self._fill(ev["shard"], after, upto)
        if self.core.advance(ev) and self.core.matches(ev):
            self._ready.append(ev)

    def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, or None when none came within `timeout` seconds
        (None: wait as long as it takes)."""
        end = None if timeout is None else _now() + timeout
        while not self._ready:
            now = _now()
            if end is not None and now >= end:
                return None
            # Quiet for `idle` seconds (across calls): look for what the
            # end of a burst may have lost.
            quiet = now - self._heard
            if quiet >= self.idle:
                for sh in range(self.shards):
                    self._fill(sh, self.core.pos.get(sh, 0), None)
                self._heard = _now()
                continue
            left = self.idle - quiet if end is None else min(self.idle - quiet, end - now)
            if self._sub.poll(max(1, int(left * 1000))):
                frames = self._sub.recv_multipart()
                self._heard = _now()
                try:
                    ev = C.unpack(frames[-1])
                except Exception:
                    continue
                if isinstance(ev, dict):
                    self._on_live(ev)
        return self._ready.popleft()

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> Event:
        ev = self.get(None)
        assert ev is not None
        return ev

    def close(self) -> None:
        self._closed = True
        if not self._sub.closed:
            self._sub.close(0)

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CampaignWatch(C.CampaignWatchCore):
    """An iterator over one campaign's progress events (see
    :meth:`Client.watch_campaign`): events of topic
    ``<tenant>/campaign/<id>``, plus a ``campaign_get`` snapshot at the
    start and after each quiet spell, each yielded only when it brings
    news.  Iteration ends after the final event; ``final`` holds it."""

    def __init__(self, client: Client, id: Optional[str], tenant: Optional[str],
                 key: Union[str, int, None], quiet: float = 5.0) -> None:
        self._c = client
        self.quiet = quiet
        first = client.campaign_get(id, tenant, key)
        self.id, self.tenant = first["id"], first.get("tenant", tenant)
        self.final: Optional[Event] = None
        self._last: Any = None
        self._sub = client._sub([f"{self.tenant}/campaign/{self.id}".encode()])
        self._heard = 0.0  # a snapshot is due at once

    def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next progress event, None after `timeout` seconds without
        one; raises StopIteration once the final event was returned."""
        if self.final is not None:
            raise StopIteration
        end = None if timeout is None else _now() + timeout
        while True:
            now = _now()
            if now - self._heard >= self.quiet:
                self._heard = now
                ev = C.campaign_snapshot(self._c.call(
                    C.campaign_lookup("campaign_get", self.id, self.tenant)))
                if self._news(ev):
                    return ev
                continue
            if end is not None and now >= end:
                return None
            left = self.quiet - (now - self._heard)
            if end is not None:
                left = min(left, end - now)
            if not self._sub.poll(max(1, int(left * 1000))):
                continue
            ev = self._event(self._sub.recv_multipart())
            if ev is not None and self._news(ev):
                return ev

    def __iter__(self) -> "CampaignWatch":
        return self

    def __next__(self) -> Event:
        ev = self.get(None)
        assert ev is not None
        return ev

    def close(self) -> None:
        if not self._sub.closed:
            self._sub.close(0)

    def __enter__(self) -> "CampaignWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
