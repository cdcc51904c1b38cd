"""hypercorn with its HTTP/3 disconnect reporting repaired, for proving the HTTP/3
cancellation cases can pass (and still fail for an app that ignores disconnects).

hypercorn 0.18's ``H3Protocol`` never tells a request stream that the client reset it
(``StreamReset`` / ``StopSendingReceived``) or that the connection ended
(``ConnectionTerminated``), so the app never receives ``http.disconnect`` on HTTP/3.
Imported as the server's app module (``h3_fixed_app:app`` / ``h3_fixed_app:broken``),
this patches ``H3Protocol.handle`` in the server process to deliver ``StreamClosed``
for those events, as hypercorn's HTTP/2 protocol does for RST_STREAM, and makes a send
on such a stream a silent no-op (ASGI spec 2.3 and older), as on HTTP/1.1 and HTTP/2.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.events import ConnectionTerminated, QuicEvent, StopSendingReceived, StreamReset
from hypercorn.protocol import h3
from hypercorn.protocol.events import StreamClosed

_handle = h3.H3Protocol.handle
_stream_send = h3.H3Protocol.stream_send


async def _handle_with_disconnects(self: Any, quic_event: QuicEvent) -> None:
    await _handle(self, quic_event)
    if isinstance(quic_event, (StreamReset, StopSendingReceived)):
        ids = [quic_event.stream_id]
    elif isinstance(quic_event, ConnectionTerminated):
        ids = list(self.streams)
    else:
        return
    gone = self.__dict__.setdefault("client_gone", set())
    for stream_id in ids:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            gone.add(stream_id)
            await stream.handle(StreamClosed(stream_id=stream_id))


async def _send_unless_gone(self: Any, event: Any) -> None:
    if event.stream_id in self.__dict__.get("client_gone", ()):
        return
    await _stream_send(self, event)


h3.H3Protocol.handle = _handle_with_disconnects  # type: ignore[method-assign]
h3.H3Protocol.stream_send = _send_unless_gone  # type: ignore[method-assign]

from broken_app import app as broken  # noqa: E402

from conformance.target_app import app  # noqa: E402

__all__ = ["app", "broken"]
