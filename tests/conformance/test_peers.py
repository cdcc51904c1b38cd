"""Smoke test of the peer report command: two peers, direct, a short pause; the
section is written between its markers and shows the difference that exists."""

from __future__ import annotations

from pathlib import Path

from conformance.peers.__main__ import END, START, main


def test_peer_report_writes_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "conformance.md"
    doc.write_text(f"# Conformance\n\nbefore\n\n{START}\nOLD-SECTION\n{END}\n\nafter\n", encoding="utf-8")
    argv = [
        *("--peers", "starlette,asgi-stream", "--servers", "uvicorn", "--via", "direct"),
        *("--cases", "headers,per-token,keepalive", "--pause", "1.5", "--keepalive-budget", "1"),
        *("--max-duration", "10", "--doc", str(doc)),
    ]
    assert main(argv) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Conformance\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "OLD-SECTION" not in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    assert set(rows) == {"`starlette/uvicorn/direct`", "`asgi-stream/uvicorn/direct`"}
    # Plain Starlette sends no streaming headers and no keepalive comment (asgi-stream's
    # default keepalive of 15 s is longer than this pause: both fail the 1 s budget here).
    starlette = [c.strip() for c in rows["`starlette/uvicorn/direct`"].split("|")[2:6]]
    ours = [c.strip() for c in rows["`asgi-stream/uvicorn/direct`"].split("|")[2:6]]
    assert starlette == ["FAIL", "pass", "—", "FAIL"], starlette
    assert ours[:2] == ["pass", "pass"], ours
    assert "**starlette**, headers" in text and "Cache-Control" in text
    assert "**starlette**, keepalive" in text and "s of silence on the wire" in text
