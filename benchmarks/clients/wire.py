"""Wire helpers for the clients: an SSE event scanner, HTTP/1.1 requests and a
minimal HTTP/2 (prior knowledge, cleartext) client connection."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

#: Prefix of a stamped throughput token on the wire (see targets.common.STAMP_EVERY).
STAMP = b"data: #"


def client_main(run: Any) -> None:
    """Shared entry point: pin to ``core`` (if given), run ``run(**args)`` with the JSON
    arguments from argv[1], print the JSON result."""
    args = json.loads(sys.argv[1])
    core = args.pop("core", None)
    if core is not None and core >= 0:
        os.sched_setaffinity(0, {core})
    result = run(**args)
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()


class SSEScanner:
    """Counts SSE events in a response body and, for stamped tokens (``data: #<ns>``),
    records how long ago they were stamped.

    An event ends at a blank line: ``\\n\\n`` or ``\\r\\n\\r\\n`` (sse-starlette's
    default); a body uses one or the other. The bytes after the last complete event are
    carried into the next :meth:`feed`, so events may straddle reads.
    """

    __slots__ = ("carry", "delays_ns", "events")

    def __init__(self) -> None:
        self.events = 0
        self.carry = b""
        self.delays_ns: list[int] = []

    def feed(self, data: bytes, now_ns: int) -> None:
        """Scan body bytes received at ``now_ns`` (``time.monotonic_ns``)."""
        buf = self.carry + data if self.carry else data
        end = buf.rfind(b"\n\n")
        if end >= 0:
            end += 2
            self.events += buf.count(b"\n\n", 0, end)
        else:
            end = buf.rfind(b"\r\n\r\n")
            if end < 0:
                self.carry = buf
                return
            end += 4
            self.events += buf.count(b"\r\n\r\n", 0, end)
        i = buf.find(STAMP, 0, end)
        while i >= 0:
            j = buf.index(b"\n", i)
            self.delays_ns.append(now_ns - int(buf[i + 7 : j]))
            i = buf.find(STAMP, j, end)
        self.carry = buf[end:]


class Dechunker:
    """Incremental HTTP/1.1 chunked-body decoder: wire bytes in, body bytes out."""

    __slots__ = ("_buf", "_crlf", "_remaining", "done")

    def __init__(self) -> None:
        self._buf = b""
        self._remaining = 0
        self._crlf = False
        #: True once the last (zero-size) chunk has been read.
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes contained in ``data`` (and what was held back before)."""
        buf = self._buf + data if self._buf else data
        pos, size = 0, len(buf)
        out: list[bytes] = []
        while pos < size and not self.done:
            if self._remaining:
                take = min(self._remaining, size - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                self._crlf = not self._remaining
            elif self._crlf:
                if size - pos < 2:
                    break
                pos += 2
                self._crlf = False
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                length = int(buf[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if length == 0:
                    self.done = True  # trailers, if any, are ignored
                self._remaining = length
        self._buf = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)


def h1_request(path: str, *, close: bool = False) -> bytes:
    """A GET request asking for SSE."""
    conn = b"Connection: close\r\n" if close else b""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n" + conn + b"\r\n"


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """``(head, rest)`` once the response head is complete, else None; raises on a
    non-200 status or a body that is not chunked."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {head[:200]!r}")
    if b"transfer-encoding: chunked" not in head.lower():
        raise RuntimeError(f"response is not chunked: {head[:300]!r}")
    return head, data[end + 4 :]


def connect(port: int, *, rcvbuf: int | None = None) -> socket.socket:
    """A blocking TCP connection to the loopback server, TCP_NODELAY set."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    return sock


# ------------------------------------------------------------------------- HTTP/2
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW = 0, 1, 3, 4, 6, 7, 8
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_MAX_WINDOW = (1 << 31) - 1


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


class H2Client:
    """HTTP/2 over cleartext with prior knowledge, just enough to stream responses:
    maximal flow-control windows, SETTINGS/PING acknowledged, DATA handed over raw."""

    def __init__(self, sock: socket.socket) -> None:
        import hpack

        self.sock = sock
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder()
        self._next_id = 1
        self._buf = b""
        self._consumed = 0
        settings = (2).to_bytes(2, "big") + (0).to_bytes(4, "big")  # ENABLE_PUSH = 0
        settings += (4).to_bytes(2, "big") + _MAX_WINDOW.to_bytes(4, "big")  # INITIAL_WINDOW_SIZE
        sock.sendall(
            _PREFACE
            + _frame(_SETTINGS, 0, 0, settings)
            + _frame(_WINDOW, 0, 0, (_MAX_WINDOW - 65535).to_bytes(4, "big"))
        )

    def request(self, path: str) -> int:
        """Send a GET for ``path``; returns its stream id."""
        sid = self._next_id
        self._next_id += 2
        block = self._encoder.encode(
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "bench"),
                (":path", path),
                ("accept", "text/event-stream"),
            ]
        )
        self.sock.sendall(_frame(_HEADERS, _END_STREAM | _END_HEADERS, sid, block))
        return sid

    def frames(self, data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
        """Parse received bytes into ``(type, flags, stream, payload)``; DATA payloads
        come without padding; control frames are answered here and not yielded."""
        buf = self._buf + data if self._buf else data
        pos, size = 0, len(buf)
        while size - pos >= 9:
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if pos + 9 + length > size:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & _MAX_WINDOW
            payload = buf[pos + 9 : pos + 9 + length]
            pos += 9 + length
            if kind == _DATA:
                self._consumed += length
                if flags & _PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                yield kind, flags, sid, payload
            elif kind == _HEADERS:
                if flags & _PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & _PRIORITY:
                    payload = payload[5:]
                headers = dict(self._decoder.decode(payload, raw=True))
                if headers.get(b":status", b"200") != b"200":
                    raise RuntimeError(f"stream {sid}: status {headers.get(b':status')!r}")
                yield kind, flags, sid, payload
            elif kind == _SETTINGS and not flags & _ACK:
                self.sock.sendall(_frame(_SETTINGS, _ACK, 0))
            elif kind == _PING and not flags & _ACK:
                self.sock.sendall(_frame(_PING, _ACK, 0, payload))
            elif kind == _RST:
                raise RuntimeError(f"stream {sid} reset by the server: {payload.hex()}")
            elif kind == _GOAWAY:
                raise RuntimeError(f"server sent GOAWAY: {payload[:64]!r}")
        self._buf = buf[pos:]
        if self._consumed > 1 << 30:  # keep the connection window wide open
            self.sock.sendall(_frame(_WINDOW, 0, 0, self._consumed.to_bytes(4, "big")))
            self._consumed = 0
