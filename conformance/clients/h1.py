"""A measuring HTTP/1.1 (and 1.0) client: ``h11.Connection`` driven over a plain socket.

Every body piece is recorded with the monotonic time its last byte arrived (the
time of the socket read that delivered it, however late the caller asks for it): one
:class:`Chunk` per HTTP/1.1 chunk (reassembled from h11's ``chunk_start`` /
``chunk_end`` flags), one per socket read for a close-delimited body. The raw bytes
received are kept too, so a case can quote the wire in its evidence.

The suite's tests use the same client: :meth:`H1Client.fetch` for a whole response,
:meth:`H1Client.stream` to act between chunks, ``rcvbuf`` for a client that stops
reading, :meth:`~H1Client.close` (FIN) and :meth:`~H1Client.abort` (RST) to leave.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import h11

from ._chunk import Chunk, body_of
from ._socket import SocketClient, as_bytes

HeaderList = Sequence[tuple[bytes | str, bytes | str]]

_READ_SIZE = 65536


class H1Error(Exception):
    """The connection failed or the peer broke the protocol (the message says how)."""


@dataclass(slots=True)
class H1Response:
    """One response as observed on the wire; filled in while it is read."""

    t_request: float
    status: int | None = None
    http_version: str | None = None
    reason: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)
    t_headers: float | None = None
    t_end: float | None = None
    #: h11 saw the end of the message (the zero-length chunk, the full
    #: Content-Length, or the close of a close-delimited body).
    complete: bool = False
    #: The body used chunked transfer coding.
    chunked: bool = False
    #: The terminating ``0\r\n\r\n`` chunk arrived (chunked bodies only).
    trailing_zero_chunk_seen: bool = False
    #: The server closed the connection after (or instead of) this response.
    server_closed: bool = False
    #: A protocol or socket error that ended the read, if any.
    error: str | None = None
    #: Every byte received for this response, head included.
    raw: bytearray = field(default_factory=bytearray)

    @property
    def body(self) -> bytes:
        """The body's bytes, joined."""
        return body_of(self.chunks)

    def header(self, name: str | bytes) -> bytes | None:
        """The first value of a header (case-insensitive), or None."""
        key = name.encode("latin-1") if isinstance(name, str) else name
        key = key.lower()
        for k, v in self.headers:
            if k == key:
                return v
        return None

    def header_all(self, name: str | bytes) -> list[bytes]:
        """Every value of a header (case-insensitive)."""
        key = (name.encode("latin-1") if isinstance(name, str) else name).lower()
        return [v for k, v in self.headers if k == key]

    @property
    def header_map(self) -> dict[str, str]:
        """The headers as text, by lower-case name (a repeated header: its first value)."""
        out: dict[str, str] = {}
        for k, v in self.headers:
            out.setdefault(k.decode("latin-1"), v.decode("latin-1"))
        return out


class H1Client(SocketClient):
    """One HTTP/1.x connection. Not thread-safe; one request at a time.

    Args:
        host, port: where to connect (loopback in the suite).
        timeout: seconds a single socket read may block.
        rcvbuf: ``SO_RCVBUF`` in bytes, set before connecting (a small value makes a
            client that stops reading fill up quickly).
        tls: a client SSLContext to speak HTTPS.
        server_hostname: SNI / certificate name for TLS (default: ``host``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        rcvbuf: int | None = None,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=server_hostname or host)
        except OSError as exc:
            sock.close()
            raise H1Error(f"cannot connect to {host}:{port}: {exc}") from exc
        self.sock: socket.socket = sock
        self.conn = h11.Connection(h11.CLIENT)
        self.response: H1Response | None = None
        self.closed = False
        self._chunk_buf: bytearray | None = None
        self._requests = 0
        self._t_recv = time.monotonic()

    # ------------------------------------------------------------ requests
    def request(
        self,
        method: str,
        target: str,
        headers: HeaderList = (),
        body: bytes = b"",
        http_version: str = "1.1",
    ) -> H1Response:
        """Send a request (``http_version`` ``"1.1"`` or ``"1.0"``) and return the
        response object that :meth:`events` / :meth:`read_response` fill in."""
        if http_version not in ("1.0", "1.1"):
            raise ValueError(f"http_version must be '1.0' or '1.1', got {http_version!r}")
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        elif self._requests:
            raise H1Error(f"connection not reusable (client {self.conn.our_state}, server {self.conn.their_state})")
        hdrs = [(as_bytes(k), as_bytes(v)) for k, v in headers]
        names = {k.lower() for k, _ in hdrs}
        if b"host" not in names:
            hdrs.insert(0, (b"host", f"{self.host}:{self.port}".encode()))
        if body and b"content-length" not in names:
            hdrs.append((b"content-length", str(len(body)).encode()))
        req = h11.Request(method=method.encode(), target=target.encode(), headers=hdrs)
        wire = self.conn.send(req) or b""
        if body:
            wire += self.conn.send(h11.Data(data=body)) or b""
        wire += self.conn.send(h11.EndOfMessage()) or b""
        if http_version == "1.0":
            # h11 writes only HTTP/1.1; write the 1.0 request line ourselves. h11 still
            # parses the response, and frames a body without length as close-delimited.
            wire = _http10(method, target, hdrs, body)
        self._requests += 1
        self.response = H1Response(t_request=time.monotonic())
        self._chunk_buf = None
        self._sendall(wire)
        return self.response

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise H1Error(f"send failed: {exc}") from exc

    # ------------------------------------------------------------ reading
    def events(self, deadline: float | None = None) -> Iterator[h11.Event]:
        """Yield h11 events of the current response as they arrive (updating
        :attr:`response`), up to and including ``EndOfMessage`` or ``ConnectionClosed``.

        Raises :class:`TimeoutError` when ``deadline`` (monotonic) passes first and
        :class:`H1Error` on a protocol or socket error (also noted in the response).
        """
        resp = self.response
        if resp is None:
            raise H1Error("no request sent")
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                resp.error = f"protocol error: {exc}"
                raise H1Error(resp.error) from exc
            if event is h11.NEED_DATA:
                self._read_into(resp, deadline)
                continue
            if event is h11.PAUSED:
                resp.error = "h11 paused: the server sent data after the response"
                raise H1Error(resp.error)
            self._record(resp, event, self._t_recv)
            yield event
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    def _read_into(self, resp: H1Response, deadline: float | None) -> None:
        timeout = self.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise TimeoutError("deadline passed while reading the response")
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(_READ_SIZE)
        except TimeoutError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("deadline passed while reading the response") from exc
            resp.error = f"no data for {timeout:.1f} s"
            raise TimeoutError(resp.error) from exc
        except OSError as exc:
            resp.error = f"recv failed: {exc}"
            raise H1Error(resp.error) from exc
        self._t_recv = time.monotonic()
        if not data:
            resp.server_closed = True
        resp.raw += data
        try:
            self.conn.receive_data(data)
        except h11.RemoteProtocolError as exc:
            resp.error = f"protocol error: {exc}"
            raise H1Error(resp.error) from exc

    def _record(self, resp: H1Response, event: h11.Event, now: float) -> None:
        if isinstance(event, h11.InformationalResponse):
            return
        if isinstance(event, h11.Response):
            resp.status = event.status_code
            resp.http_version = event.http_version.decode()
            resp.reason = bytes(event.reason)
            resp.headers = [(bytes(k).lower(), bytes(v)) for k, v in event.headers]
            resp.t_headers = now
            te = resp.header(b"transfer-encoding") or b""
            resp.chunked = b"chunked" in te.lower()
        elif isinstance(event, h11.Data):
            data = bytes(event.data)
            if not resp.chunked:
                if data:
                    resp.chunks.append(Chunk(now, data))
                return
            if event.chunk_start or self._chunk_buf is None:
                self._chunk_buf = bytearray()
            self._chunk_buf += data
            if event.chunk_end:
                resp.chunks.append(Chunk(now, bytes(self._chunk_buf)))
                self._chunk_buf = None
        elif isinstance(event, h11.EndOfMessage):
            resp.complete = True
            resp.t_end = now
            # h11 emits EndOfMessage for a chunked body only after parsing the
            # last-chunk ("0" CRLF, trailers, CRLF).
            resp.trailing_zero_chunk_seen = resp.chunked
        elif isinstance(event, h11.ConnectionClosed):
            resp.server_closed = True
            resp.t_end = resp.t_end or now

    def read_head(self, deadline: float | None = None) -> H1Response:
        """Read until the response's status line and headers have arrived."""
        resp = self.response
        if resp is None:
            raise H1Error("no request sent")
        if resp.status is not None:
            return resp
        for _ in self.events(deadline):
            if resp.status is not None:
                break
        return resp

    def read_chunks(self, n: int, deadline: float | None = None) -> H1Response:
        """Read until at least ``n`` body chunks have arrived (or the body ended)."""
        resp = self.response
        if resp is None:
            raise H1Error("no request sent")
        if len(resp.chunks) >= n or resp.complete:
            return resp
        for _ in self.events(deadline):
            if len(resp.chunks) >= n:
                break
        return resp

    def read_response(self, deadline: float | None = None) -> H1Response:
        """Read the rest of the current response; returns it (``complete`` tells
        whether it ended properly)."""
        resp = self.response
        if resp is None:
            raise H1Error("no request sent")
        if resp.complete:
            return resp
        for _ in self.events(deadline):
            pass
        if self.conn.their_state is h11.MUST_CLOSE or self.conn.our_state is h11.MUST_CLOSE:
            resp.server_closed = resp.server_closed or self.conn.their_state is h11.CLOSED
        return resp

    def stream(self, deadline: float | None = None) -> Iterator[H1Response | Chunk]:
        """Yield the current response once its head has arrived, then each body
        :class:`Chunk` as it completes, until the body ends (errors as :meth:`events`)."""
        resp = self.response
        if resp is None:
            raise H1Error("no request sent")
        seen = len(resp.chunks)
        if resp.status is not None:
            yield resp
        if resp.complete:
            return
        for event in self.events(deadline):
            if isinstance(event, h11.Response):
                yield resp
            while seen < len(resp.chunks):
                seen += 1
                yield resp.chunks[seen - 1]

    def fetch(
        self,
        method: str = "GET",
        target: str = "/",
        headers: HeaderList = (),
        body: bytes = b"",
        *,
        http_version: str = "1.1",
        deadline: float | None = None,
    ) -> H1Response:
        """Send a request and read the whole response (:meth:`request` then
        :meth:`read_response`)."""
        self.request(method, target, headers, body, http_version)
        return self.read_response(deadline)

    def wait_closed(self, timeout: float) -> bool:
        """Read and discard until the server closes the connection; True if it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(_READ_SIZE)
            except TimeoutError:
                return False
            except OSError:
                return True
            if not data:
                return True
        return False

    # ------------------------------------------------------------ closing
    def close_draining(self) -> None:
        """Close the way a client that is done closes: take what is already received
        (so the kernel sends a FIN, not a RST), then close. The server's next write
        is answered with a RST."""
        if self.closed:
            return
        try:
            self.sock.setblocking(False)
            while self.sock.recv(_READ_SIZE):
                pass
        except (BlockingIOError, InterruptedError, OSError):
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close()

    def half_close(self) -> None:
        """Shut down the sending side (FIN); the client keeps reading."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _http10(method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.0".encode()]
    lines += [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
