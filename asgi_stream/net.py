"""Listening sockets whose connections notice a vanished peer in seconds.

A client that vanishes without a FIN or RST (a phone that lost its network, a cut
cable, a NAT that forgot the flow) is not noticed by the ASGI server at LLM token rates:
the small writes land in the kernel's send buffer and never block, so no send timeout
fires, and the kernel retransmits for ``net.ipv4.tcp_retries2`` rounds — about 15
minutes by default — before it gives up. The generator runs, and the GPU works, for
nobody all that time.

``TCP_USER_TIMEOUT`` bounds how long sent data may stay unacknowledged before the kernel
drops the connection; TCP keepalive probes a connection on which nothing is sent (a
long prefill of an NDJSON stream). Set on the *listening* socket, Linux copies them to
every accepted connection, so one socket serves any ASGI server that takes a socket::

    from asgi_stream.net import PeerTimeouts, listen_socket

    sock = listen_socket("0.0.0.0", 8000, PeerTimeouts(user_timeout=30.0))

    # uvicorn
    uvicorn.run(app, fd=sock.fileno())  # or uvicorn.Config(app, fd=sock.fileno())
    uvicorn.Server(uvicorn.Config(app)).run(sockets=[sock])  # or hand the socket over

    # hypercorn
    config = hypercorn.config.Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn takes the descriptor over

When the kernel drops the connection the server reports the client gone and the stream
is cancelled as on any disconnect (generator closed, ``on_cancel`` run).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = ["PeerTimeouts", "apply_peer_timeouts", "listen_socket"]


@dataclass(frozen=True)
class PeerTimeouts:
    """When the kernel gives up on a peer that stopped answering.

    A connection with data in flight is dropped once that data stayed unacknowledged for
    ``user_timeout`` seconds. An idle one is probed after ``keepalive_idle`` seconds of
    silence, then every ``keepalive_interval`` seconds, and dropped after
    ``keepalive_count`` unanswered probes (with ``user_timeout`` set, Linux drops it once
    ``user_timeout`` passed since the peer was last heard from, whichever comes first).
    ``None`` leaves the system default for that mechanism.
    """

    #: Seconds sent data may stay unacknowledged (``TCP_USER_TIMEOUT``).
    user_timeout: float | None = 30.0
    #: Seconds of silence before the first keepalive probe (``TCP_KEEPIDLE``).
    keepalive_idle: float | None = 15.0
    #: Seconds between keepalive probes (``TCP_KEEPINTVL``).
    keepalive_interval: float = 5.0
    #: Unanswered probes before the connection is dropped (``TCP_KEEPCNT``).
    keepalive_count: int = 3

    def __post_init__(self) -> None:
        for name in ("user_timeout", "keepalive_idle", "keepalive_interval"):
            value = getattr(self, name)
            if value is None and name != "keepalive_interval":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"PeerTimeouts.{name} must be > 0 seconds, got {value!r}")
        count = self.keepalive_count
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"PeerTimeouts.keepalive_count must be an integer >= 1, got {count!r}")


def _whole_seconds(value: float) -> int:
    return max(1, round(value))


def apply_peer_timeouts(sock: socket.socket, timeouts: PeerTimeouts | None = None) -> frozenset[str]:
    """Set ``timeouts`` (default :class:`PeerTimeouts`) on a TCP socket; on a listening
    socket they reach every connection it accepts (Linux). Returns the names of the
    options set: a platform without one of them (``TCP_USER_TIMEOUT`` is Linux's) skips it.
    """
    t = timeouts if timeouts is not None else PeerTimeouts()
    tcp = socket.IPPROTO_TCP
    applied: set[str] = set()

    def setopt(level: int, name: str, value: int) -> None:
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(level, option, value)
            applied.add(name)

    if t.keepalive_idle is not None:
        setopt(socket.SOL_SOCKET, "SO_KEEPALIVE", 1)
        # macOS calls the idle time TCP_KEEPALIVE.
        setopt(
            tcp,
            "TCP_KEEPIDLE" if hasattr(socket, "TCP_KEEPIDLE") else "TCP_KEEPALIVE",
            _whole_seconds(t.keepalive_idle),
        )
        setopt(tcp, "TCP_KEEPINTVL", _whole_seconds(t.keepalive_interval))
        setopt(tcp, "TCP_KEEPCNT", t.keepalive_count)
    if t.user_timeout is not None:
        setopt(tcp, "TCP_USER_TIMEOUT", max(1, round(t.user_timeout * 1000)))  # milliseconds
    return frozenset(applied)


def listen_socket(
    host: str = "127.0.0.1",
    port: int = 8000,
    timeouts: PeerTimeouts | None = None,
    *,
    backlog: int = 2048,
    reuse_port: bool = False,
) -> socket.socket:
    """A bound, listening TCP socket (IPv6 when ``host`` has a ``:``) with
    :func:`apply_peer_timeouts` applied, ready for ``uvicorn.run(app, fd=sock.fileno())``,
    ``uvicorn.Server(config).run(sockets=[sock])`` or hypercorn's ``fd://`` bind.
    ``port=0`` picks a free port (``sock.getsockname()[1]``). The descriptor is
    inheritable, for servers that start worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        apply_peer_timeouts(sock, timeouts)
        sock.bind((host.strip("[]"), port))
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock
