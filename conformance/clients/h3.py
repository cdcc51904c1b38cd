"""A measuring HTTP/3 client: ``aioquic``'s sans-I/O ``QuicConnection`` and
``H3Connection`` driven by a datagram loop over a UDP socket.

Every DATA frame is recorded per request stream as a :class:`Chunk` stamped with the
monotonic time the datagram carrying its last byte arrived. The client parses the
frames of each request stream itself (type, length) from the QUIC stream data, so a
frame is a frame, however QUIC split it; ``H3Connection`` still decodes the HEADERS
(QPACK) and checks the protocol. ``H3Connection`` turns neither a peer's
``RESET_STREAM`` nor its ``STOP_SENDING`` into an HTTP event: the client watches the
QUIC events for them itself.

A request can be cancelled the way RFC 9114 §4.1.1 describes, with ``STOP_SENDING``
and/or ``RESET_STREAM`` carrying ``H3_REQUEST_CANCELLED`` (0x10c), and the whole
connection closed with ``CONNECTION_CLOSE`` (or dropped without a word).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.connection import ProtocolError as H3ProtocolError
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

from ._chunk import Chunk, body_of
from ._socket import as_bytes
from .h3_errors import H3Error

__all__ = ["H3_NO_ERROR", "H3_REQUEST_CANCELLED", "H3Client", "H3Error", "H3Stream", "QuicTLS"]

HeaderList = Sequence[tuple[bytes | str, bytes | str]]

#: HTTP/3 error codes (RFC 9114 §8.1) the suite uses.
H3_NO_ERROR = int(ErrorCode.H3_NO_ERROR)
H3_REQUEST_CANCELLED = int(ErrorCode.H3_REQUEST_CANCELLED)

#: The longest the handshake may take (``timeout`` may be a long stream's read budget).
HANDSHAKE_TIMEOUT = 10.0

_DATA, _HEADERS = 0x0, 0x1
_READ_SIZE = 65536


@dataclass(slots=True)
class H3Stream:
    """One request/response exchange on the connection, filled in as frames arrive."""

    stream_id: int
    t_request: float
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: Every DATA frame, empty ones included (a FIN may ride an empty frame).
    frames: list[Chunk] = field(default_factory=list)
    #: Frames of other types than DATA and HEADERS: (time, type, length).
    other_frames: list[tuple[float, int, int]] = field(default_factory=list)
    t_headers: float | None = None
    t_end: float | None = None
    #: The server's FIN arrived (after a whole frame).
    ended: bool = False
    #: The error code of a RESET_STREAM received from the server.
    reset_by_server: int | None = None
    #: The error code of a STOP_SENDING received from the server.
    stop_sending_by_server: int | None = None
    #: The error codes this client sent (RESET_STREAM / STOP_SENDING), if any.
    reset_by_client: int | None = None
    stop_sending_by_client: int | None = None
    #: DATA payload bytes received so far.
    received: int = 0
    #: Frame parser state: the bytes of a frame still incomplete.
    _pending: bytearray = field(default_factory=bytearray)

    @property
    def chunks(self) -> list[Chunk]:
        """The non-empty DATA frames."""
        return [f for f in self.frames if f.data]

    @property
    def body(self) -> bytes:
        """The body's bytes, joined."""
        return body_of(self.frames)

    @property
    def closed(self) -> bool:
        """The response is over for this client: FIN, a reset either way, or a STOP_SENDING sent."""
        return (
            self.ended
            or self.reset_by_server is not None
            or self.reset_by_client is not None
            or self.stop_sending_by_client is not None
        )

    def header(self, name: str | bytes) -> bytes | None:
        """The first value of a response header (lower-case name), or None."""
        key = (name.encode("latin-1") if isinstance(name, str) else name).lower()
        for k, v in self.headers:
            if k == key:
                return v
        return None

    def _feed(self, data: bytes, now: float) -> None:
        """Split the stream's bytes into HTTP/3 frames; record DATA frames when whole."""
        buf = self._pending
        buf += data
        pos = 0
        while True:
            head = _frame_head(buf, pos)
            if head is None:
                break
            ftype, length, start = head
            if len(buf) - start < length:
                break
            if ftype == _DATA:
                self.frames.append(Chunk(now, bytes(buf[start : start + length]), self.stream_id))
                self.received += length
            elif ftype != _HEADERS:
                self.other_frames.append((now, ftype, length))
            pos = start + length
        del buf[:pos]


def _varint(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """A QUIC variable-length integer at ``pos``: (value, next position), or None."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    size = 1 << (first >> 6)
    if pos + size > len(buf):
        return None
    value = first & 0x3F
    for b in buf[pos + 1 : pos + size]:
        value = (value << 8) | b
    return value, pos + size


def _frame_head(buf: bytearray, pos: int) -> tuple[int, int, int] | None:
    """(type, length, payload start) of the frame at ``pos``, or None if incomplete."""
    t = _varint(buf, pos)
    if t is None:
        return None
    n = _varint(buf, t[1])
    if n is None:
        return None
    return t[0], n[0], n[1]


@dataclass(frozen=True, slots=True)
class QuicTLS:
    """How the client verifies the server: a CA file, the system store, or not at all."""

    ca_file: Path | None = None
    insecure: bool = False
    #: SNI and the name the certificate must carry (default: the host connected to).
    server_name: str | None = None


class H3Client:
    """One HTTP/3 connection (QUIC over UDP) with any number of concurrent requests.

    Args:
        host, port: the server's UDP address.
        timeout: seconds one wait for a datagram may take (the handshake: at most
            :data:`HANDSHAKE_TIMEOUT`).
        tls: certificate verification (default: the system store, full verification).
        idle_timeout: the QUIC idle timeout the client announces.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        tls: QuicTLS | None = None,
        idle_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        tls = tls or QuicTLS()
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=H3_ALPN,
            idle_timeout=idle_timeout,
            server_name=tls.server_name or host,
        )
        if tls.insecure:
            config.verify_mode = ssl.CERT_NONE
        elif tls.ca_file is not None:
            config.load_verify_locations(cafile=str(tls.ca_file))
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.connect((host, port))
        except OSError as exc:
            sock.close()
            raise H3Error(f"cannot reach udp {host}:{port}: {exc}") from exc
        self.sock = sock
        self.addr = sock.getpeername()
        self.quic = QuicConnection(configuration=config)
        self.h3 = H3Connection(self.quic)
        self.streams: dict[int, H3Stream] = {}
        #: Every QUIC event received, with its arrival time.
        self.log: list[tuple[float, QuicEvent]] = []
        #: What this client sent beyond requests: (time, description), for evidence.
        self.sent: list[tuple[float, str]] = []
        self.terminated: ConnectionTerminated | None = None
        self.protocol_error: str | None = None
        self.alpn: str | None = None
        self.closed = False
        self._handshake_done = False
        self.quic.connect(self.addr, now=time.monotonic())
        self._flush()
        wait = min(timeout, HANDSHAKE_TIMEOUT)
        if not self.run_until(lambda: self._handshake_done, timeout=wait):
            self.abort()
            raise H3Error(f"no QUIC handshake with udp {host}:{port} within {wait:.0f} s")

    # ------------------------------------------------------------ requests
    def request(
        self,
        method: str,
        path: str,
        headers: HeaderList = (),
        body: bytes = b"",
        *,
        end_stream: bool = True,
        authority: str | None = None,
    ) -> H3Stream:
        """Open a request stream (its sending side finished after ``body`` unless
        ``end_stream`` is False); returns its record."""
        sid = self.quic.get_next_available_stream_id()
        hdrs = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", (authority or f"{self.host}:{self.port}").encode()),
            (b":path", path.encode()),
        ] + [(as_bytes(k).lower(), as_bytes(v)) for k, v in headers]
        stream = H3Stream(stream_id=sid, t_request=time.monotonic())
        self.streams[sid] = stream
        self.h3.send_headers(sid, hdrs, end_stream=end_stream and not body)
        if body:
            self.h3.send_data(sid, body, end_stream=end_stream)
        self._flush()
        return stream

    def cancel(
        self, stream_id: int, *, stop_sending: bool = True, reset: bool = True, code: int = H3_REQUEST_CANCELLED
    ) -> None:
        """Cancel a request (RFC 9114 §4.1.1): ``STOP_SENDING`` (abort reading the
        response) and/or ``RESET_STREAM`` (abort the request), with ``code``."""
        st = self.streams[stream_id]
        if st.ended or st.reset_by_server is not None:
            # Both directions may be over already (QUIC has forgotten the stream).
            self.sent.append((time.monotonic(), f"nothing (the response was already over) on stream {stream_id}"))
            return
        done: list[str] = []
        if stop_sending:
            self.quic.stop_stream(stream_id, code)
            st.stop_sending_by_client = code
            done.append("STOP_SENDING")
        if reset:
            self.quic.reset_stream(stream_id, code)
            st.reset_by_client = code
            done.append("RESET_STREAM")
        self._flush()
        self.sent.append((time.monotonic(), f"{' + '.join(done)}(0x{code:x}) on stream {stream_id}"))

    def close_connection(self, code: int = H3_NO_ERROR, reason: str = "") -> None:
        """Send ``CONNECTION_CLOSE`` with an HTTP/3 error code, then close the socket."""
        if self.closed:
            return
        self.quic.close(error_code=code, reason_phrase=reason)
        self._flush()
        self.sent.append((time.monotonic(), f"CONNECTION_CLOSE(0x{code:x})"))
        self.closed = True
        self.sock.close()

    def abort(self) -> None:
        """Drop the connection without a word (no CONNECTION_CLOSE): a vanished peer."""
        if self.closed:
            return
        self.sent.append((time.monotonic(), "nothing: the socket was closed silently"))
        self.closed = True
        self.sock.close()

    def close(self) -> None:
        """Close politely (``CONNECTION_CLOSE`` H3_NO_ERROR)."""
        try:
            self.close_connection()
        except OSError:
            self.abort()

    def ping(self) -> None:
        """Send a QUIC PING (the ACK shows the server is still there)."""
        self.quic.send_ping(int(time.monotonic() * 1000))
        self._flush()

    def __enter__(self) -> H3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the datagram loop
    def pump(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for a datagram (serving QUIC timers meanwhile) and
        process what arrived. Returns False if nothing arrived in time; raises H3Error
        once the connection is over."""
        if self.closed or self.terminated is not None:
            raise H3Error(self._why_over())
        deadline = time.monotonic() + (self.timeout if timeout is None else max(timeout, 0.001))
        while True:
            now = time.monotonic()
            timer = self.quic.get_timer()
            wait = deadline - now
            if timer is not None:
                wait = min(wait, timer - now)
            if wait > 0:
                self.sock.settimeout(wait)
                try:
                    data = self.sock.recv(_READ_SIZE)
                except TimeoutError:
                    data = None
                except OSError as exc:  # ICMP port unreachable: nobody listens any more
                    self.closed = True
                    raise H3Error(f"recv failed: {exc}") from exc
            else:
                data = None
            now = time.monotonic()
            if data is not None:
                self.quic.receive_datagram(data, self.addr, now=now)
                # Take whatever else is queued at once (same arrival time).
                self.sock.setblocking(False)
                try:
                    while True:
                        more = self.sock.recv(_READ_SIZE)
                        self.quic.receive_datagram(more, self.addr, now=time.monotonic())
                except (BlockingIOError, OSError):
                    pass
                finally:
                    self.sock.setblocking(True)
            else:
                timer = self.quic.get_timer()
                if timer is not None and now >= timer:
                    self.quic.handle_timer(now=now)
            self._process(now)
            self._flush()
            if data is not None:
                return True
            if self.terminated is not None:
                raise H3Error(self._why_over())
            if now >= deadline:
                return False

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Pump until ``predicate()`` holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(left)
        return True

    def read_all(self, stream_ids: Sequence[int] | None = None, timeout: float = 10.0) -> bool:
        """Pump until the given requests (default: all) are over; True if they are."""
        ids = list(self.streams) if stream_ids is None else list(stream_ids)
        return self.run_until(lambda: all(self.streams[i].closed for i in ids), timeout)

    def wait_closed(self, timeout: float) -> bool:
        """Pump until the server ends the connection; True if it did in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.pump(deadline - time.monotonic())
            except H3Error:
                return True
        return False

    def _process(self, now: float) -> None:
        while (event := self.quic.next_event()) is not None:
            self.log.append((now, event))
            if isinstance(event, HandshakeCompleted):
                self._handshake_done = True
                self.alpn = event.alpn_protocol
            elif isinstance(event, StreamDataReceived):
                st = self.streams.get(event.stream_id)
                if st is not None:
                    st._feed(event.data, now)
                    if event.end_stream:
                        st.ended = True
                        st.t_end = now
            elif isinstance(event, StreamReset):
                st = self.streams.get(event.stream_id)
                if st is not None:
                    st.reset_by_server = int(event.error_code)
                    st.t_end = st.t_end or now
            elif isinstance(event, StopSendingReceived):
                st = self.streams.get(event.stream_id)
                if st is not None:
                    st.stop_sending_by_server = int(event.error_code)
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event
            try:
                h3_events = self.h3.handle_event(event)
            except H3ProtocolError as exc:
                self.protocol_error = f"{type(exc).__name__}: {exc}"
                raise H3Error(f"the server broke HTTP/3: {self.protocol_error}") from exc
            for h3e in h3_events:
                if isinstance(h3e, HeadersReceived):
                    st = self.streams.get(h3e.stream_id)
                    if st is None:
                        continue
                    hdrs = [(bytes(k), bytes(v)) for k, v in h3e.headers]
                    if st.status is None:
                        st.headers = hdrs
                        st.t_headers = now
                        status = st.header(b":status")
                        st.status = int(status) if status else None
                    else:
                        st.trailers = hdrs

    def _flush(self) -> None:
        if self.closed:
            return
        for data, _addr in self.quic.datagrams_to_send(now=time.monotonic()):
            try:
                self.sock.send(data)
            except OSError as exc:
                raise H3Error(f"send failed: {exc}") from exc

    def _why_over(self) -> str:
        if self.terminated is not None:
            t = self.terminated
            return f"the connection ended (error 0x{t.error_code:x}, {t.reason_phrase!r})"
        return "the connection is closed"
