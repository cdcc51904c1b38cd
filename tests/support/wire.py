"""A raw HTTP/1.1 client on h11 that timestamps every chunk as it arrives."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import h11


@dataclass
class Chunk:
    t: float
    data: bytes


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    raw_headers: list[tuple[bytes, bytes]]
    http_version: bytes
    t_headers: float
    chunks: list[Chunk] = field(default_factory=list)
    complete: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(c.data for c in self.chunks)


class Client:
    """One connection; ``stream()`` yields the response, then each chunk (reassembled
    from h11's chunk_start/chunk_end flags) with its arrival time."""

    def __init__(self, port: int, host: str = "127.0.0.1", *, timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.host = host
        self.port = port
        self.conn = h11.Connection(h11.CLIENT)

    def send_request(self, method: str, path: str, headers: list[tuple[str, str]] = (), body: bytes = b"") -> None:
        hdrs = [("host", f"{self.host}:{self.port}"), *headers]
        if body:
            hdrs.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=path, headers=hdrs))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        self.sock.sendall(data)

    def _events(self) -> Iterator[tuple[float, object]]:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                now = time.monotonic()
                self.conn.receive_data(data)
                self._now = now
                continue
            yield getattr(self, "_now", time.monotonic()), event
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    def stream(self) -> Iterator[Response | Chunk]:
        """Yield the Response (headers) and then every body chunk as it completes."""
        response: Response | None = None
        buf = b""
        for t, event in self._events():
            if isinstance(event, h11.Response):
                response = Response(
                    status=event.status_code,
                    headers={k.decode().lower(): v.decode() for k, v in event.headers},
                    raw_headers=list(event.headers),
                    http_version=event.http_version,
                    t_headers=t,
                )
                yield response
            elif isinstance(event, h11.Data):
                buf += event.data
                chunked = response is not None and "chunked" in response.headers.get("transfer-encoding", "")
                if not chunked or event.chunk_end:
                    chunk = Chunk(t, buf)
                    buf = b""
                    assert response is not None
                    response.chunks.append(chunk)
                    yield chunk
            elif isinstance(event, h11.EndOfMessage):
                if response is not None:
                    response.complete = True

    def fetch_http10(self, path: str, headers: list[tuple[str, str]] = ()) -> Response:
        """An HTTP/1.0 GET (h11 only speaks 1.1 as a client): read until the server closes."""
        hdrs = [("host", f"{self.host}:{self.port}"), *headers]
        head = f"GET {path} HTTP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
        self.sock.sendall(head.encode())
        raw = b""
        chunks: list[Chunk] = []
        while True:
            data = self.sock.recv(65536)
            if not data:
                break
            raw += data
            chunks.append(Chunk(time.monotonic(), data))
        head_bytes, _, body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
        raw_headers = [tuple(x.encode() for x in line.split(": ", 1)) for line in lines]
        return Response(
            status=int(status_line.split()[1]),
            headers={k.decode().lower(): v.decode() for k, v in raw_headers},
            raw_headers=raw_headers,
            http_version=status_line.split()[0].encode(),
            t_headers=chunks[0].t if chunks else time.monotonic(),
            chunks=[Chunk(chunks[-1].t if chunks else 0.0, body)],
            complete=True,
        )

    def fetch(
        self, method: str = "GET", path: str = "/", headers: list[tuple[str, str]] = (), body: bytes = b""
    ) -> Response:
        """Send a request and read the whole response."""
        self.send_request(method, path, headers, body)
        response = None
        for item in self.stream():
            if isinstance(item, Response):
                response = item
        assert response is not None
        return response

    def next_cycle(self) -> None:
        """Prepare the connection for another request (keep-alive)."""
        self.conn.start_next_cycle()

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Close with RST (no FIN), like a crashed client."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
