"""A measuring HTTP/2 client: ``h2.connection.H2Connection`` over a plain socket
(prior-knowledge h2c) or TLS with ALPN ``h2``.

Every DATA frame is recorded per stream as a :class:`Chunk` with its arrival time.
Local SETTINGS are configurable, and flow control can be manual: with
``auto_window_update=False`` the client grants stream credit only when told
(:meth:`H2Client.grant`), so a case can watch a server honour a tiny window.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from ._chunk import Chunk, body_of
from ._socket import SocketClient, as_bytes

HeaderList = Sequence[tuple[bytes | str, bytes | str]]

_READ_SIZE = 65536


class H2Error(Exception):
    """The connection failed or the peer broke the protocol (the message says how)."""


@dataclass(slots=True)
class H2Stream:
    """One request/response exchange on the connection, filled in as frames arrive."""

    stream_id: int
    t_request: float
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: Every DATA frame, empty ones included (an END_STREAM may ride an empty frame).
    frames: list[Chunk] = field(default_factory=list)
    t_headers: float | None = None
    t_end: float | None = None
    #: END_STREAM was received.
    ended: bool = False
    #: The error code of an RST_STREAM received from the server.
    reset_by_server: int | None = None
    #: The error code of an RST_STREAM this client sent.
    reset_by_client: int | None = None
    #: Flow-controlled bytes received and not yet granted back (manual mode).
    unacked: int = 0
    #: DATA bytes received so far.
    received: int = 0

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
        """The stream is over (END_STREAM or RST_STREAM either way)."""
        return self.ended or self.reset_by_server is not None or self.reset_by_client is not None

    def header(self, name: str | bytes) -> bytes | None:
        """The first value of a response header (lower-case name), or None."""
        key = (name.encode("latin-1") if isinstance(name, str) else name).lower()
        for k, v in self.headers:
            if k == key:
                return v
        return None


class H2Client(SocketClient):
    """One HTTP/2 connection with any number of concurrent streams.

    Args:
        host, port: where to connect.
        timeout: seconds one socket read may block.
        tls: a client SSLContext; ALPN ``h2`` is required of the server.
        server_hostname: SNI / certificate name (default ``host``).
        settings: local SETTINGS to announce, e.g.
            ``{h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16}``.
        auto_window_update: grant stream credit back as DATA is consumed (True) or
            only through :meth:`grant` (False). Connection-level credit is always
            granted back, so only the stream windows constrain the server.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        settings: dict[int, int] | None = None,
        auto_window_update: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.auto_window_update = auto_window_update
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            if tls is not None:
                tls.set_alpn_protocols(["h2"])
                sock = tls.wrap_socket(sock, server_hostname=server_hostname or host)
        except OSError as exc:
            sock.close()
            raise H2Error(f"cannot connect to {host}:{port}: {exc}") from exc
        self.sock: socket.socket = sock
        self.alpn: str | None = sock.selected_alpn_protocol() if isinstance(sock, ssl.SSLSocket) else None
        if tls is not None and self.alpn != "h2":
            self.close()
            raise H2Error(f"server did not negotiate h2 through ALPN (got {self.alpn!r})")
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.streams: dict[int, H2Stream] = {}
        #: Every h2 event received, with its arrival time.
        self.log: list[tuple[float, h2.events.Event]] = []
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.server_closed = False
        self.protocol_error: str | None = None
        self.closed = False
        self._settings_acked = False
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(dict(settings))
        self._flush()
        # Wait for the server's SETTINGS and the ACK of ours: from then on, h2 checks
        # the server's DATA against the windows we announced.
        self.run_until(lambda: self._settings_acked, timeout=timeout)

    # ------------------------------------------------------------ requests
    def request(
        self,
        method: str,
        path: str,
        headers: HeaderList = (),
        body: bytes = b"",
        *,
        scheme: str | None = None,
        authority: str | None = None,
    ) -> H2Stream:
        """Open a stream with a request (END_STREAM after ``body``); returns its record."""
        sid = self.conn.get_next_available_stream_id()
        scheme = scheme or ("https" if isinstance(self.sock, ssl.SSLSocket) else "http")
        hdrs = [
            (b":method", method.encode()),
            (b":scheme", scheme.encode()),
            (b":authority", (authority or f"{self.host}:{self.port}").encode()),
            (b":path", path.encode()),
        ] + [(as_bytes(k).lower(), as_bytes(v)) for k, v in headers]
        stream = H2Stream(stream_id=sid, t_request=time.monotonic())
        self.streams[sid] = stream
        self.conn.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.conn.send_data(sid, body, end_stream=True)
        self._flush()
        return stream

    def cancel(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Send RST_STREAM (CANCEL by default) for one stream."""
        self.conn.reset_stream(stream_id, error_code=code)
        self.streams[stream_id].reset_by_client = int(code)
        self._flush()

    def send_goaway(self, code: int = h2.errors.ErrorCodes.NO_ERROR, last_stream_id: int | None = None) -> None:
        """Send GOAWAY (the connection stays open for reading)."""
        self.conn.close_connection(error_code=code, last_stream_id=last_stream_id)
        self._flush()

    def grant(self, stream_id: int, increment: int) -> None:
        """Send a WINDOW_UPDATE of ``increment`` bytes for one stream."""
        self.conn.increment_flow_control_window(increment, stream_id=stream_id)
        st = self.streams.get(stream_id)
        if st is not None:
            st.unacked = max(0, st.unacked - increment)
        self._flush()

    def ping(self) -> None:
        """Send a PING (the reply shows the server is still reading)."""
        self.conn.ping(b"conform!")
        self._flush()

    # ------------------------------------------------------------ reading
    def pump(self, timeout: float | None = None) -> bool:
        """Read once from the socket (waiting up to ``timeout``) and process the frames.
        Returns False if nothing arrived in time; raises H2Error if the server closed."""
        if self.server_closed:
            raise H2Error("the server closed the connection")
        self.sock.settimeout(self.timeout if timeout is None else max(timeout, 0.001))
        try:
            data = self.sock.recv(_READ_SIZE)
        except TimeoutError:
            return False
        except OSError as exc:
            self.server_closed = True
            raise H2Error(f"recv failed: {exc}") from exc
        now = time.monotonic()
        if not data:
            self.server_closed = True
            raise H2Error("the server closed the connection")
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.protocol_error = f"{type(exc).__name__}: {exc}"
            raise H2Error(f"the server broke HTTP/2: {self.protocol_error}") from exc
        for event in events:
            self._handle(event, now)
        self._flush()
        return True

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
        """Pump until the given streams (default: all) are closed; True if they are."""
        ids = list(self.streams) if stream_ids is None else list(stream_ids)
        return self.run_until(lambda: all(self.streams[i].closed for i in ids), timeout)

    def _handle(self, event: h2.events.Event, now: float) -> None:
        self.log.append((now, event))
        sid = getattr(event, "stream_id", None)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.headers = [(bytes(k), bytes(v)) for k, v in event.headers]
            stream.t_headers = now
            status = stream.header(b":status")
            stream.status = int(status) if status else None
        elif isinstance(event, h2.events.TrailersReceived) and stream is not None:
            stream.trailers = [(bytes(k), bytes(v)) for k, v in event.headers]
        elif isinstance(event, h2.events.DataReceived):
            if stream is not None:
                stream.frames.append(Chunk(now, bytes(event.data), event.stream_id))
                stream.received += len(event.data)
            n = event.flow_controlled_length
            if n:
                # Connection credit always; stream credit only in automatic mode.
                self.conn.increment_flow_control_window(n)
                if stream is not None and not stream.closed:
                    if self.auto_window_update:
                        self._grant_quiet(event.stream_id, n)
                    else:
                        stream.unacked += n
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended = True
            stream.t_end = now
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            if event.remote_reset:
                stream.reset_by_server = int(event.error_code)
            stream.t_end = stream.t_end or now
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self._settings_acked = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def _grant_quiet(self, stream_id: int, n: int) -> None:
        try:
            self.conn.increment_flow_control_window(n, stream_id=stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise H2Error(f"send failed: {exc}") from exc

    def wait_closed(self, timeout: float) -> bool:
        """Pump until the server closes the connection; True if it did in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.pump(deadline - time.monotonic())
            except H2Error:
                return True
        return False

    # ------------------------------------------------------------ closing


SettingCodes = h2.settings.SettingCodes
ErrorCodes = h2.errors.ErrorCodes
