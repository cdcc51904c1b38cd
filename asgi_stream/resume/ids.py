"""Resumable stream ids: ``<stream id>.<sequence>``, opaque to clients.

The stream id is 16 URL-safe characters from ``secrets`` (96 bits): unguessable, so it
doubles as the capability to resume. The sequence counts the stream's events from 1; a
client's cursor is the id of the last event it received (SSE's ``Last-Event-ID``), or
for NDJSON ``<stream id>.<lines received>``.

A cursor is exactly ``<16 of A-Z a-z 0-9 _ ->.<1 to 12 ASCII digits>`` (HTTP's optional
spaces and tabs around it aside). Anything else — other lengths, non-ASCII digits such as
``²`` or ``٣``, a trailing newline — is not a cursor of ours: parsing is total and never
raises, and the request is left to the application.
"""

from __future__ import annotations

import re
import secrets

#: ``re.ASCII`` and ``fullmatch``: no Unicode digits, nothing after the last digit.
_CURSOR = re.compile(r"([A-Za-z0-9_-]{16})\.([0-9]{1,12})", re.ASCII)
#: The longest value worth matching: 16 + 1 + 12 characters and some optional whitespace.
_MAX_LEN = 64


def new_stream_id() -> str:
    """A fresh random stream id."""
    return secrets.token_urlsafe(12)


def event_id(stream_id: str, seq: int) -> str:
    """The wire id of event ``seq`` of a stream."""
    return f"{stream_id}.{seq}"


def parse_event_id(value: str | None) -> tuple[str, int] | None:
    """``(stream id, seq)`` for a cursor of ours, None for anything else (never raises)."""
    if not value or len(value) > _MAX_LEN:
        return None
    match = _CURSOR.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    return match[1], int(match[2])
