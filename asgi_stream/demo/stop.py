"""Stop sequences over streamed text, with hold-back (sans-I/O: no model, no async).

Text arrives in pieces (detokenised tokens); a stop sequence may span several of
them. :class:`StopMatcher` emits text as early as it safely can: a tail that could be
the start of a stop sequence is held back until the next piece settles it, and a
stop sequence itself is never emitted. Generation ends where a stop sequence first
*completes*, so the emitted text is the same however the output is split into
pieces — :func:`truncate` gives it for a whole text at once::

    m = StopMatcher(["\\nUser:"])
    m.push("Hello\\nUs")   # -> "Hello"   ("\\nUs" held back)
    m.push("er: hi")      # -> ""        (stopped; m.matched == "\\nUser:")
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopMatcher", "truncate"]


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """(start, stop) of the stop sequence that completes first in ``text``; of two
    completing at the same character, the longer (it starts earlier)."""
    best: tuple[int, int, str] | None = None  # (end, start, stop)
    for stop in stops:
        start = text.find(stop)
        if start < 0:
            continue
        end = start + len(stop)
        if best is None or end < best[0] or (end == best[0] and start < best[1]):
            best = (end, start, stop)
    return None if best is None else (best[1], best[2])


def truncate(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """The text before the first stop sequence to complete, and that stop (or None)."""
    found = _first_stop(text, [s for s in stops if s])
    if found is None:
        return text, None
    return text[: found[0]], found[1]


class StopMatcher:
    """Finds stop sequences in text fed piece by piece; see the module docstring.

    ``push`` returns the text that may be emitted now; once a stop sequence has
    completed, :attr:`matched` is set and every later ``push`` returns ``""``.
    At the end of the output, ``flush`` returns the text still held back.
    """

    __slots__ = ("_held", "_longest", "matched", "stops")

    def __init__(self, stops: Sequence[str]) -> None:
        #: The stop sequences (empty ones dropped: they cannot be matched meaningfully).
        self.stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        #: The stop sequence that ended the output, or None.
        self.matched: str | None = None
        self._held = ""
        self._longest = max((len(s) for s in self.stops), default=0)

    @property
    def stopped(self) -> bool:
        """A stop sequence has completed: the output is over."""
        return self.matched is not None

    @property
    def held(self) -> str:
        """Text received but not yet emitted (a possible start of a stop sequence)."""
        return self._held

    def push(self, text: str) -> str:
        """Feed the next piece of output; returns the text safe to emit now."""
        if self.matched is not None or not text:
            return ""
        if not self.stops:
            return text
        buffer = self._held + text
        found = _first_stop(buffer, self.stops)
        if found is not None:
            self.matched = found[1]
            self._held = ""
            return buffer[: found[0]]
        keep = self._prefix_tail(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The output ended without a stop: the text held back, to emit now."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held

    def _prefix_tail(self, buffer: str) -> int:
        """Length of the longest tail of ``buffer`` that is a proper prefix of a stop."""
        for size in range(min(self._longest - 1, len(buffer)), 0, -1):
            tail = buffer[-size:]
            for stop in self.stops:
                if len(stop) > size and stop.startswith(tail):
                    return size
        return 0
