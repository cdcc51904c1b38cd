"""Client-side helpers of the resume tests: read SSE/NDJSON responses as raw event
bytes (kept raw for byte-for-byte comparisons; what they say is read with the
conformance parser), drop connections, normalise stream ids."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from conformance.clients import H1Client, H1Response

from ..support.sse import SSEMessage, SSEParser, parse

ID_LINE = re.compile(rb"id: [A-Za-z0-9_-]{16}\.")


@dataclass
class Read:
    """What a client read: the response head and the complete events, raw."""

    response: H1Response | None
    events: list[bytes] = field(default_factory=list)
    complete: bool = False

    @property
    def worker(self) -> str:
        assert self.response is not None
        return self.response.header_map.get("x-worker", "?")

    @property
    def stream_id(self) -> str:
        assert self.response is not None
        return self.response.header_map["x-stream-id"]

    def sse(self) -> SSEParser:
        """The complete SSE events read, through the conformance parser."""
        return parse(self.events)

    @property
    def messages(self) -> list[SSEMessage]:
        return self.sse().events

    @property
    def last_id(self) -> str:
        """The id of the last complete SSE event read."""
        last = self.messages[-1]
        assert last.last_event_id, self.events[-1]
        return last.last_event_id


def read(
    port: int,
    path: str,
    headers: list[tuple[str, str]] = (),
    *,
    limit: int | None = None,
    duration: float | None = None,
    separator: bytes = b"\n\n",
    timeout: float = 20.0,
    into: Read | None = None,
) -> Read:
    """GET ``path``; read complete events (split at ``separator``) until the end,
    ``limit`` events or ``duration`` seconds, then abort the connection (RST) if the
    response is not over. ``into`` is filled as the events come (for other threads)."""
    until = time.monotonic() + duration if duration is not None else None
    c = H1Client("127.0.0.1", port, timeout=timeout)
    result = into if into is not None else Read(None)
    buf = b""
    try:
        c.request("GET", path, list(headers))
        for item in c.stream():
            if isinstance(item, H1Response):
                result.response = item
                continue
            buf += item.data
            while separator in buf:
                event, buf = buf.split(separator, 1)
                if not event.startswith(b":"):  # keepalive comments are not events
                    result.events.append(event + separator)
                if limit is not None and len(result.events) >= limit:
                    return result
            if until is not None and time.monotonic() >= until:
                return result
        result.complete = result.response is not None and result.response.complete
        return result
    finally:
        if not result.complete:
            c.abort()
        else:
            c.close()


def normalise(raw: bytes) -> bytes:
    """Stream ids replaced by a fixed one: two runs of one generator compare equal."""
    return ID_LINE.sub(b"id: ################.", raw)


def only_retry(body: bytes | list[bytes]) -> bool:
    """An event stream carrying a ``retry:`` and no event, not even an unfinished one."""
    parsed = parse(body)
    return parsed.retry is not None and not parsed.events and parsed.discarded_at_close is None


def told_to_retry(r: Read) -> bool:
    """An EventSource's "come back" answer: a 200 event stream carrying only ``retry:``."""
    return r.response is not None and r.response.status == 200 and only_retry(r.events)
