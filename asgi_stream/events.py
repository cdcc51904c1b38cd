"""Explicit event objects a generator may yield instead of bare tokens."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FramingError


@dataclass(frozen=True, slots=True)
class Event:
    """One message of a stream, with the optional SSE fields.

    ``data`` may be ``str``, UTF-8 ``bytes`` or any JSON value (dict, list, number,
    bool); JSON values are encoded compactly. ``event``/``id``/``retry``/``comment``
    apply to SSE; NDJSON carries ``event``, ``id`` and ``data``; plain text carries
    ``data`` only. Invalid fields raise :class:`FramingError` at construction, so a
    bad event never reaches the wire.
    """

    data: object = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def __post_init__(self) -> None:
        if self.event is not None:
            _check_field("event", self.event)
        if self.id is not None:
            _check_field("id", self.id)
            if "\0" in self.id:
                raise FramingError("SSE 'id' must not contain NUL (U+0000): browsers ignore such ids")
        if self.retry is not None and (
            type(self.retry) is not int or self.retry < 0  # bool is not an int here
        ):
            raise FramingError(f"SSE 'retry' must be a non-negative integer, got {self.retry!r}")
        if self.comment is not None and not isinstance(self.comment, str):
            raise FramingError(f"SSE comment must be str, got {type(self.comment).__name__}")


def _check_field(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise FramingError(f"SSE {name!r} must be str, got {type(value).__name__}")
    if "\n" in value or "\r" in value:
        raise FramingError(f"SSE {name!r} must not contain CR or LF: {value!r}")


def comment(text: str = "") -> Event:
    """An SSE comment line (ignored by clients; NDJSON and text skip it)."""
    return Event(comment=text)
