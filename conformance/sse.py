"""An incremental Server-Sent Events parser following the WHATWG HTML standard,
§9.2.5 "Parsing an event stream" and §9.2.6 "Interpreting an event stream".

Feed it bytes as they come off the wire (any split, even inside a UTF-8 character
or between the CR and LF of a CRLF); it decodes with a streaming UTF-8 decoder,
strips one leading BOM, splits lines on CRLF, LF or CR, and dispatches events the
way a browser's EventSource does. It keeps every event and comment it saw, each
with the time of the chunk that completed it, so cases can reason about timing.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """A dispatched event, as EventSource would deliver it."""

    type: str
    data: str
    last_event_id: str
    t: float | None = None


@dataclass(frozen=True, slots=True)
class SSEComment:
    """A comment line (the text after the colon, leading space kept as sent)."""

    text: str
    t: float | None = None
    #: How many events were dispatched before it (its place among the events).
    events_before: int = 0


@dataclass(slots=True)
class SSEParser:
    """Incremental event-stream parser. Call :meth:`feed` per chunk, :meth:`close` at the end."""

    events: list[SSEMessage] = field(default_factory=list)
    comments: list[SSEComment] = field(default_factory=list)
    #: The reconnection time set by a valid ``retry`` field, in ms (None if none).
    retry: int | None = None
    #: The EventSource's last event ID string.
    last_event_id: str = ""
    #: U+FFFD characters produced by the decoder (invalid or truncated UTF-8).
    replacement_chars: int = 0
    #: Fields with names the algorithm ignores (kept as evidence).
    ignored_fields: list[str] = field(default_factory=list)
    #: Data discarded at the end of the stream (an event without its blank line).
    discarded_at_close: str | None = None
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    _started: bool = False
    _pending: str = ""
    _block: list[str] = field(default_factory=list)
    _skip_lf: bool = False
    _data: str = ""
    _event_type: str = ""
    _id_buffer: str = ""
    _t: float | None = None

    def feed(self, data: bytes, t: float | None = None) -> list[SSEMessage]:
        """Parse one piece of the stream; returns the events it dispatched."""
        self._t = t
        text = self._decoder.decode(data)
        return self._feed_text(text)

    def close(self) -> list[SSEMessage]:
        """End of stream: flush the decoder; an unfinished event is discarded (spec)."""
        text = self._decoder.decode(b"", final=True)
        out = self._feed_text(text)
        # A last line without terminator is not a complete line: never processed (it
        # stays in ``unfinished``).
        if self._data or self._event_type:
            self.discarded_at_close = self._data
        self._data = ""
        self._event_type = ""
        return out

    @property
    def unfinished(self) -> str:
        """What came after the last blank line: the lines of a block not yet ended (each
        with a LF) and a last line without its terminator; "" at an event boundary."""
        return "".join(line + "\n" for line in self._block) + self._pending

    # ------------------------------------------------------------ the algorithm
    def _feed_text(self, text: str) -> list[SSEMessage]:
        if not text:
            return []
        self.replacement_chars += text.count("\ufffd")
        if not self._started:
            self._started = True
            if text[0] == BOM:  # one leading BOM only
                text = text[1:]
        out: list[SSEMessage] = []
        buf = self._pending + text
        self._pending = ""
        i = 0
        n = len(buf)
        if self._skip_lf and n:
            self._skip_lf = False
            if buf[0] == "\n":
                i = 1
        while i < n:
            cr = buf.find("\r", i)
            lf = buf.find("\n", i)
            if cr < 0 and lf < 0:
                self._pending = buf[i:]
                break
            if cr < 0 or (0 <= lf < cr):
                end, nxt = lf, lf + 1
            else:
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == "\n" else cr + 1
                else:
                    # A CR at the end of what we have: the line ends here; a LF that
                    # starts the next piece belongs to this CRLF.
                    nxt = cr + 1
                    self._skip_lf = True
            message = self._line(buf[i:end])
            if message is not None:
                out.append(message)
            i = nxt
        return out

    def _line(self, line: str) -> SSEMessage | None:
        if line == "":
            self._block.clear()
            return self._dispatch()
        self._block.append(line)
        if line[0] == ":":
            self.comments.append(SSEComment(line[1:], self._t, len(self.events)))
            return None
        colon = line.find(":")
        if colon >= 0:
            name, value = line[:colon], line[colon + 1 :]
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        self._field(name, value)
        return None

    def _field(self, name: str, value: str) -> None:
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry":
            if value and all("0" <= c <= "9" for c in value):
                self.retry = int(value)
        else:
            self.ignored_fields.append(name)

    def _dispatch(self) -> SSEMessage | None:
        self.last_event_id = self._id_buffer
        if self._data == "":
            self._event_type = ""
            return None
        data = self._data[:-1] if self._data.endswith("\n") else self._data
        message = SSEMessage(self._event_type or "message", data, self.last_event_id, self._t)
        self.events.append(message)
        self._data = ""
        self._event_type = ""
        return message


def parse_sse(chunks: list[bytes] | bytes) -> SSEParser:
    """Parse a whole stream (bytes, or a list of pieces fed one by one) and close it."""
    parser = SSEParser()
    for piece in [chunks] if isinstance(chunks, bytes) else chunks:
        parser.feed(piece)
    parser.close()
    return parser
