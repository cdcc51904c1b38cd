"""An SSE parser written from the WHATWG HTML standard's "event stream interpretation"
(§9.2.6), independent of asgi_stream's encoder. Feed bytes in any chunking."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field


@dataclass
class ParsedEvent:
    type: str
    data: str
    last_event_id: str


@dataclass
class SpecParser:
    events: list[ParsedEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    last_event_id: str = ""
    _decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    _buffer: str = ""
    _started: bool = False
    _pending_cr: bool = False
    _data: str = ""
    _type: str = ""
    _id_buffer: str = ""

    def feed(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):  # one leading BOM is stripped
                text = text[1:]
        for ch in text:
            if self._pending_cr:
                self._pending_cr = False
                if ch == "\n":  # CRLF: the CR already ended the line
                    continue
            if ch == "\r":
                self._pending_cr = True
                self._line(self._buffer)
                self._buffer = ""
            elif ch == "\n":
                self._line(self._buffer)
                self._buffer = ""
            else:
                self._buffer += ch

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        if ":" in line:
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            self._type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry":
            if value and all("0" <= c <= "9" for c in value):
                self.retry = int(value)

    def _dispatch(self) -> None:
        self.last_event_id = self._id_buffer
        if self._data == "":
            self._type = ""
            return
        data = self._data[:-1] if self._data.endswith("\n") else self._data
        self.events.append(ParsedEvent(self._type or "message", data, self.last_event_id))
        self._data = ""
        self._type = ""


def parse(body: bytes) -> SpecParser:
    parser = SpecParser()
    parser.feed(body)
    return parser
