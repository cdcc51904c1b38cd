"""The page's teaching aid: ``X-Split-Sends: 1`` moves read boundaries inside
multi-byte characters (the bytes are unchanged); without it nothing changes."""

from __future__ import annotations

from typing import Any

import httpx

from asgi_stream.demo.engine import PACED_TOKENS
from asgi_stream.demo.seams import mid_character

from .conftest import chunk_texts

BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 14, "stream": True}


def test_mid_character() -> None:
    assert mid_character(b"abc") is None
    assert mid_character("aé".encode()) == 2  # after the lead byte 0xc3
    assert mid_character("🙂".encode()) == 1
    assert mid_character(b"\x80\x80") is None  # continuation bytes are not a start


def _reads(url: str, headers: dict[str, str]) -> list[bytes]:
    with httpx.stream("POST", url + "/v1/chat/completions", json=BODY, headers=headers, timeout=30) as response:
        return list(response.iter_raw())


def test_split_sends_cut_inside_characters_only_when_asked(live: Any) -> None:
    _, url = live(paced=True, paced_interval=0.0)
    plain = _reads(url, {})
    split = _reads(url, {"X-Split-Sends": "1"})
    text = "".join(PACED_TOKENS[:14])
    for reads in (plain, split):  # the same stream either way
        assert "".join(chunk_texts(b"".join(reads).decode())) == text
    # Tokens 9-13 (" —", " café", " naïve", " 日本語", " 🙂") each get a read that ends
    # just after the lead byte of their first multi-byte character.
    assert len([r for r in split if r[-1] >= 0xC0]) == 5
    assert not [r for r in plain if r[-1] >= 0xC0]
