"""A deliberately broken HTTP/2 server (h2c prior knowledge, on the sans-I/O ``h2``
library, one thread per connection and per stream) for proving the HTTP/2 cases fail.

``GET /stream?n=&interval=`` answers ``data: t000 \\n\\n``… paced like the target app.
Flaws (any combination):

``conn-headers``       sends ``connection`` and ``transfer-encoding`` header fields
``rst-instead-of-end`` ends every stream with RST_STREAM(NO_ERROR), never END_STREAM
``ignore-window``      sends DATA beyond the client's flow-control window
``one-frame``          buffers the whole body into one DATA frame at the end
``head-body``          answers HEAD with a body
``serial``             serves the streams of a connection one after the other
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from conformance.targets import HOST, Endpoint, Target
from conformance.tokens import token_text


class BrokenH2Server:
    """Serve until :meth:`close`; :meth:`target` describes it for the runner."""

    def __init__(self, flaws: set[str]) -> None:
        self.flaws = flaws
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def target(self, name: str = "h2-broken") -> Target:
        """A Target for the runner (no hook endpoint: cases needing hooks skip)."""
        return Target(name, "h2", Endpoint(HOST, self.port), f"raw h2 server with flaws {sorted(self.flaws)}")

    def close(self) -> None:
        """Stop accepting."""
        self._closed = True
        self.sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=_Connection(conn, self.flaws).serve, daemon=True).start()


class _Connection:
    def __init__(self, sock: socket.socket, flaws: set[str]) -> None:
        self.sock = sock
        self.flaws = flaws
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.cond = threading.Condition()
        self.serial = threading.Lock()
        self.alive = True

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                self.alive = False

    def serve(self) -> None:
        with self.cond:
            self.h2.initiate_connection()
            self.flush()
        try:
            while self.alive:
                data = self.sock.recv(65536)
                if not data:
                    break
                with self.cond:
                    events = self.h2.receive_data(data)
                    for ev in events:
                        if isinstance(ev, h2.events.RequestReceived):
                            headers = dict(ev.headers)
                            path = headers.get(b":path", b"/").decode()
                            method = headers.get(b":method", b"GET").decode()
                            threading.Thread(
                                target=self.respond, args=(ev.stream_id, method, path), daemon=True
                            ).start()
                        elif isinstance(ev, h2.events.ConnectionTerminated):
                            self.alive = False
                    self.flush()
                    self.cond.notify_all()
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.alive = False
            with self.cond:
                self.cond.notify_all()
            self.sock.close()

    def respond(self, sid: int, method: str, path: str) -> None:
        if "serial" in self.flaws:
            with self.serial:
                self._respond(sid, method, path)
        else:
            self._respond(sid, method, path)

    def _respond(self, sid: int, method: str, path: str) -> None:
        q = parse_qs(urlsplit(path).query)
        n = int(q.get("n", ["5"])[0]) or 5
        interval = float(q.get("interval", ["0.1"])[0])
        headers = [
            (b":status", b"200"),
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        if "conn-headers" in self.flaws:
            headers += [(b"connection", b"keep-alive"), (b"transfer-encoding", b"chunked")]
        try:
            with self.cond:
                self.h2.send_headers(sid, headers, end_stream=method == "HEAD" and "head-body" not in self.flaws)
                self.flush()
            if method == "HEAD" and "head-body" not in self.flaws:
                return
            pending = b""
            for i in range(n):
                if i:
                    time.sleep(interval)
                data = f"data: {token_text(i)}\n\n".encode()
                if "one-frame" in self.flaws:
                    pending += data
                    continue
                self.send(sid, data)
            if pending:
                self.send(sid, pending)
            with self.cond:
                if "rst-instead-of-end" in self.flaws:
                    self.h2.reset_stream(sid, 0)
                else:
                    self.h2.end_stream(sid)
                self.flush()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, OSError):
            pass

    def send(self, sid: int, data: bytes) -> None:
        while data and self.alive:
            with self.cond:
                if "ignore-window" in self.flaws:
                    stream = self.h2._get_stream_by_id(sid)
                    stream.outbound_flow_control_window = max(stream.outbound_flow_control_window, len(data))
                    self.h2.outbound_flow_control_window = max(self.h2.outbound_flow_control_window, len(data))
                    self.h2.send_data(sid, data)
                    self.flush()
                    return
                window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if window <= 0:
                    self.cond.wait(1.0)
                    continue
                piece, data = data[:window], data[window:]
                self.h2.send_data(sid, piece)
                self.flush()
