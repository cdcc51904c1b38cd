"""The measuring clients against scripted servers on loopback sockets: what they
record must be exactly what was put on the wire."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.events
import pytest

from conformance.clients import H1Client, H1Error, H2Client, H2Error
from conformance.clients.h2 import SettingCodes

Script = Callable[[socket.socket, bytes], None]


class ScriptedServer:
    """Accepts connections on a free loopback port; each runs ``script(conn, request_head)``."""

    def __init__(self, script: Script, *, read_head: bool = True) -> None:
        self.script = script
        self.read_head = read_head
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            head = b""
            if self.read_head:
                while b"\r\n\r\n" not in head:
                    data = conn.recv(4096)
                    if not data:
                        break
                    head += data
                self.requests.append(head)
            self.script(conn, head)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script, **kw: bool) -> ScriptedServer:
        s = ScriptedServer(script, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_h1_one_chunk_record_per_http_chunk_even_split_across_reads(serve) -> None:
    def script(conn: socket.socket, head: bytes) -> None:
        conn.sendall(HEAD_CHUNKED + b"5\r\nhel")
        time.sleep(0.1)
        conn.sendall(b"lo\r\n")
        time.sleep(0.1)
        conn.sendall(b"3\r\nabc\r\n2\r\nde\r\n")  # two chunks in one write
        time.sleep(0.1)
        conn.sendall(b"0\r\n\r\n")

    srv = serve(script)
    with H1Client("127.0.0.1", srv.port, timeout=5) as c:
        c.request("GET", "/x", headers=[("accept", "text/plain")])
        resp = c.read_response()
    assert resp.status == 200 and resp.chunked and resp.complete and resp.trailing_zero_chunk_seen
    assert [ch.data for ch in resp.chunks] == [b"hello", b"abc", b"de"]
    assert resp.chunks[1].t - resp.chunks[0].t > 0.05  # the split chunk completed later
    assert resp.t_request <= resp.t_headers <= resp.chunks[0].t <= resp.t_end
    assert resp.raw.endswith(b"0\r\n\r\n")
    assert b"GET /x HTTP/1.1\r\n" in srv.requests[0] and b"accept: text/plain" in srv.requests[0]


def test_h1_truncated_chunked_body_is_not_complete(serve) -> None:
    def script(conn: socket.socket, head: bytes) -> None:
        conn.sendall(HEAD_CHUNKED + b"3\r\nabc\r\n")

    srv = serve(script)
    with H1Client("127.0.0.1", srv.port, timeout=5) as c:
        c.request("GET", "/")
        with pytest.raises(H1Error):
            c.read_response()
        assert c.response is not None
        assert not c.response.complete and not c.response.trailing_zero_chunk_seen
        assert [ch.data for ch in c.response.chunks] == [b"abc"]


def test_h1_http10_request_line_and_close_delimited_body(serve) -> None:
    def script(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nab")
        time.sleep(0.1)
        conn.sendall(b"cd")

    srv = serve(script)
    with H1Client("127.0.0.1", srv.port, timeout=5) as c:
        c.request("GET", "/ten", http_version="1.0")
        resp = c.read_response()
    assert srv.requests[0].startswith(b"GET /ten HTTP/1.0\r\n")
    assert resp.complete and not resp.chunked and resp.server_closed
    assert [ch.data for ch in resp.chunks] == [b"ab", b"cd"]  # one record per socket read


def test_h1_keep_alive_reuse(serve) -> None:
    def script(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        second = b""
        while b"\r\n\r\n" not in second:
            second += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nyes")

    srv = serve(script)
    with H1Client("127.0.0.1", srv.port, timeout=5) as c:
        c.request("GET", "/1")
        assert c.read_response().body == b"ok"
        c.request("GET", "/2")
        assert c.read_response().body == b"yes"


def test_h1_head_has_no_body(serve) -> None:
    def script(conn: socket.socket, head: bytes) -> None:
        conn.sendall(HEAD_CHUNKED)

    srv = serve(script)
    with H1Client("127.0.0.1", srv.port, timeout=5) as c:
        c.request("HEAD", "/")
        resp = c.read_response()
    assert resp.complete and resp.chunks == [] and resp.status == 200


def test_h1_half_close_sends_fin_and_abort_sends_rst(serve) -> None:
    seen: list[bytes | str] = []

    def script(conn: socket.socket, head: bytes) -> None:
        try:
            seen.append(conn.recv(10))  # b"" on FIN; ECONNRESET on RST
        except ConnectionResetError:
            seen.append("reset")
        if seen[-1] == b"":
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nstill")

    srv = serve(script)
    c = H1Client("127.0.0.1", srv.port, timeout=5)
    c.request("GET", "/")
    c.half_close()
    assert c.read_response().body == b"stil"  # it can still read after SHUT_WR
    c.close()
    c2 = H1Client("127.0.0.1", srv.port, timeout=5)
    c2.request("GET", "/")
    time.sleep(0.1)
    c2.abort()
    deadline = time.monotonic() + 3
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == [b"", "reset"]


def test_h1_small_rcvbuf_is_applied(serve) -> None:
    srv = serve(lambda conn, head: None)
    with H1Client("127.0.0.1", srv.port, rcvbuf=4096) as c:
        size = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert size <= 16384  # Linux doubles the request


# ---------------------------------------------------------------- HTTP/2
def _h2_server_script(frames: list[tuple[float, bytes]], *, reset_after: int | None = None) -> Script:
    """A minimal h2 server: answers each request with the given DATA payloads,
    sleeping before each, then END_STREAM."""

    def script(conn: socket.socket, _head: bytes) -> None:
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for ev in h2c.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    sid = ev.stream_id
                    h2c.send_headers(sid, [(b":status", b"200"), (b"content-type", b"text/plain")])
                    conn.sendall(h2c.data_to_send())
                    for i, (delay, payload) in enumerate(frames):
                        time.sleep(delay)
                        if reset_after is not None and i == reset_after:
                            h2c.reset_stream(sid, 8)
                            conn.sendall(h2c.data_to_send())
                            break
                        h2c.send_data(sid, payload)
                        conn.sendall(h2c.data_to_send())
                    else:
                        h2c.end_stream(sid)
                        conn.sendall(h2c.data_to_send())
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    return
            conn.sendall(h2c.data_to_send())

    return script


def test_h2_records_each_data_frame_and_end_stream(serve) -> None:
    srv = serve(_h2_server_script([(0, b"a"), (0.1, b"bb"), (0.1, b"ccc")]), read_head=False)
    with H2Client("127.0.0.1", srv.port, timeout=5) as c:
        st = c.request("GET", "/s")
        assert c.read_all(timeout=5)
    assert st.status == 200 and st.ended and st.header("content-type") == b"text/plain"
    assert [f.data for f in st.chunks] == [b"a", b"bb", b"ccc"]
    assert all(f.stream_id == st.stream_id for f in st.frames)
    assert st.chunks[2].t - st.chunks[0].t > 0.1


def test_h2_server_reset_is_recorded(serve) -> None:
    srv = serve(_h2_server_script([(0, b"a"), (0.05, b"b")], reset_after=1), read_head=False)
    with H2Client("127.0.0.1", srv.port, timeout=5) as c:
        st = c.request("GET", "/s")
        assert c.read_all(timeout=5)
    assert st.reset_by_server == 8 and not st.ended and st.body == b"a"


def test_h2_manual_flow_control_detects_a_server_overrunning_the_window(serve) -> None:
    # The scripted server ignores our 4-byte window (h2 refuses locally, so it lies
    # by raising its own view of our window first).
    def script(conn: socket.socket, _head: bytes) -> None:
        h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        h2c.initiate_connection()
        conn.sendall(h2c.data_to_send())
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for ev in h2c.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    h2c.send_headers(ev.stream_id, [(b":status", b"200")])
                    h2c._get_stream_by_id(ev.stream_id).outbound_flow_control_window = 1000
                    h2c.send_data(ev.stream_id, b"x" * 100)
            conn.sendall(h2c.data_to_send())

    srv = serve(script, read_head=False)
    with H2Client(
        "127.0.0.1", srv.port, timeout=5, settings={SettingCodes.INITIAL_WINDOW_SIZE: 4}, auto_window_update=False
    ) as c:
        c.request("GET", "/s")
        with pytest.raises(H2Error, match="broke HTTP/2"):
            c.read_all(timeout=3)
        assert c.protocol_error and "FlowControlError" in c.protocol_error
