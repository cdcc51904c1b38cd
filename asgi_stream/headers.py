"""Response-header policy for streams."""

from __future__ import annotations

from collections.abc import Iterable

#: Hop-by-hop headers: illegal on HTTP/2 (RFC 9113 §8.2.2), owned by the server on HTTP/1.1.
CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})


def stream_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    content_type: str | None,
    anti_buffering: bool,
    vary_accept: bool = False,
    identity_encoding: bool = False,
) -> list[tuple[bytes, bytes]]:
    """Headers for a streaming response built from the app's own ``raw`` headers.

    Drops ``Content-Length`` and connection-specific headers; sets the content type
    (when given); adds ``Cache-Control: no-cache`` unless the app set one,
    ``X-Accel-Buffering: no`` (nginx and compatible proxies stop buffering),
    ``Vary: Accept`` for negotiated responses, and ``Content-Encoding: identity``
    when asked, which in-app compressors (Starlette's GZipMiddleware, nginx gzip) skip.
    """
    out: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    for name, value in raw:
        lname = name.lower()
        if lname in CONNECTION_SPECIFIC or lname == b"content-length":
            continue
        if content_type is not None and lname == b"content-type":
            continue
        if anti_buffering and lname == b"x-accel-buffering":
            continue
        seen.add(lname)
        out.append((lname, value))
    if content_type is not None:
        out.append((b"content-type", content_type.encode("latin-1")))
    if b"cache-control" not in seen:
        out.append((b"cache-control", b"no-cache"))
    if anti_buffering:
        out.append((b"x-accel-buffering", b"no"))
        if identity_encoding and b"content-encoding" not in seen:
            out.append((b"content-encoding", b"identity"))
    if vary_accept:
        out.append((b"vary", b"Accept"))
    return out


def header_value(raw: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of a header (``name`` lower-case), or None."""
    for key, value in raw:
        if key.lower() == name:
            return value
    return None
