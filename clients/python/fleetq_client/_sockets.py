"""ZeroMQ socket setup shared by the blocking and the asyncio client: the
same options on both, whichever context (plain or asyncio) makes the
socket."""

from typing import Any, Iterable, Optional, Tuple

import zmq

Curve = Optional[Tuple[bytes, bytes, bytes]]


def make_socket(ctx: Any, kind: int, curve: Curve) -> Any:
    """A socket of ctx that drops what is unsent at close, with this
    client's CURVE keys (public, secret, server's public) when given."""
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    if curve:
        pub, sec, server = curve
        s.setsockopt(zmq.CURVE_PUBLICKEY, pub)
        s.setsockopt(zmq.CURVE_SECRETKEY, sec)
        s.setsockopt(zmq.CURVE_SERVERKEY, server)
    return s


def request_socket(ctx: Any, endpoint: str, curve: Curve,
                   send_timeout: Optional[float] = None) -> Any:
    """The DEALER requests go out on, connected to endpoint: no high-water
    mark (a burst of submits is never dropped nor blocked by one), and a
    send timeout in seconds when given (see Client)."""
    s = make_socket(ctx, zmq.DEALER, curve)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    if send_timeout is not None:
        s.setsockopt(zmq.SNDTIMEO, max(1, int(send_timeout * 1000)))
    s.connect(endpoint)
    return s


def status_socket(ctx: Any, curve: Curve, topics: Iterable[bytes], rcvhwm: Optional[int],
                  rcvbuf: Optional[int]) -> Tuple[Any, Any]:
    """A SUB for the status endpoint, subscribed to topics, not connected
    yet, and the monitor that reports its handshake: the caller connects
    and waits for it (blocking or awaited), then disables the monitor."""
    s = make_socket(ctx, zmq.SUB, curve)
    if rcvhwm is not None:
        s.setsockopt(zmq.RCVHWM, rcvhwm)
    if rcvbuf is not None:
        s.setsockopt(zmq.RCVBUF, rcvbuf)
    for t in topics:
        s.setsockopt(zmq.SUBSCRIBE, t)
    return s, s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
