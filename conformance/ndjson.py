"""An incremental NDJSON / JSON Lines parser: one JSON text per LF-terminated line.

A CR before the LF is tolerated (``\\r\\n``); blank lines are skipped. Lines are
split on bytes, then each complete line is decoded as strict UTF-8 and parsed, so a
multi-byte character split between chunks is fine and broken UTF-8 is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class NDJSONValue:
    """One parsed line, with the arrival time of the chunk that completed it."""

    value: Any
    t: float | None = None


@dataclass(slots=True)
class NDJSONParser:
    """Feed chunks with :meth:`feed`; :meth:`close` at the end of the body."""

    values: list[NDJSONValue] = field(default_factory=list)
    #: One message per line that is not valid UTF-8 JSON (or a truncated last line).
    errors: list[str] = field(default_factory=list)
    _buf: bytearray = field(default_factory=bytearray)
    _line_no: int = 0

    def feed(self, data: bytes, t: float | None = None) -> list[NDJSONValue]:
        """Parse every line this piece completes; returns the values parsed."""
        self._buf += data
        out: list[NDJSONValue] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            value = self._parse(line, t)
            if value is not None:
                out.append(value)
        return out

    def close(self) -> None:
        """End of body: a last line without its LF is an error."""
        if self._buf.strip():
            self.errors.append(f"line {self._line_no + 1}: no terminating LF: {bytes(self._buf[:80])!r}")
        self._buf.clear()

    def _parse(self, line: bytes, t: float | None) -> NDJSONValue | None:
        self._line_no += 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            return None
        try:
            value = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            self.errors.append(f"line {self._line_no}: invalid UTF-8 ({exc.reason}): {line[:80]!r}")
            return None
        except json.JSONDecodeError as exc:
            self.errors.append(f"line {self._line_no}: invalid JSON ({exc.msg}): {line[:80]!r}")
            return None
        parsed = NDJSONValue(value, t)
        self.values.append(parsed)
        return parsed


def parse_ndjson(chunks: list[bytes] | bytes) -> NDJSONParser:
    """Parse a whole body (bytes, or pieces fed one by one) and close it."""
    parser = NDJSONParser()
    for piece in [chunks] if isinstance(chunks, bytes) else chunks:
        parser.feed(piece)
    parser.close()
    return parser
