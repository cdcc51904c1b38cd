"""Resumable stream ids: ``<stream id>.<sequence>``, opaque to clients.

The stream id is 16 URL-safe characters from ``secrets`` (96 bits): unguessable, so it
doubles as the capability to resume. The sequence counts the stream's events from 1; a
client's cursor is the id of the last event it received (SSE's ``Last-Event-ID``), or
for NDJSON ``<stream id>.<lines received>``.
"""

from __future__ import annotations

import re
import secrets

_SID = re.compile(r"^[A-Za-z0-9_-]{16}$")


def new_stream_id() -> str:
    """A fresh random stream id."""
    return secrets.token_urlsafe(12)


def event_id(stream_id: str, seq: int) -> str:
    """The wire id of event ``seq`` of a stream."""
    return f"{stream_id}.{seq}"


def parse_event_id(value: str | None) -> tuple[str, int] | None:
    """``(stream id, seq)`` for a cursor of ours, None for anything else."""
    if not value:
        return None
    sid, dot, seq = value.strip().rpartition(".")
    if not dot or not _SID.match(sid) or not seq.isdigit() or len(seq) > 12:
        return None
    return sid, int(seq)
