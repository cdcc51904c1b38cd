"""The deterministic tokens the suite's target apps stream, and what a client must
receive. Light on imports: the measuring side and the broken test apps use it without
loading the target app (and the demo it mounts)."""

from __future__ import annotations

import base64
import random

from asgi_stream import Event

#: The tokens of ``/utf8`` and the text they decode to.
UTF8_TOKENS = (b"A", b"\xf0\x9f", b"\x98\x80", b" \xc3", b"\xa9B")
UTF8_TEXT = "A\U0001f600 \u00e9B"
#: The multi-line payload that ``events=1`` puts in the middle of the stream.
MULTILINE = "line one\nline two\r\nline three"
#: Incompressible (base64 of seeded random bytes) padding, so a compressing proxy cannot
#: shrink large tokens: bytes produced and bytes on the wire stay comparable.
_FILLER = base64.b64encode(random.Random(7).randbytes(96 * 1024)).decode()


def token_text(i: int, size: int = 0) -> str:
    """The i-th token of a stream (padded to ``size`` bytes with incompressible text)."""
    text = f"t{i:03d} "
    if size <= len(text):
        return text
    pad = size - len(text)
    if pad > len(_FILLER):
        return text + (_FILLER * (pad // len(_FILLER) + 1))[:pad]
    start = (i * 997) % (len(_FILLER) - pad + 1)
    return text + _FILLER[start : start + pad]


def expected_tokens(n: int, size: int = 0) -> list[str]:
    """The tokens ``/stream?n=…`` yields, in order."""
    return [token_text(i, size) for i in range(n)]


def event_for(i: int, n: int) -> Event:
    """The Event that ``events=1`` yields for token ``i`` of ``n``."""
    data = MULTILINE if i == n // 2 else token_text(i)
    return Event(data=data, event="token", id=str(i))
