"""Which layer a verdict points at, and how to fix it: proxies seen in the response
headers, and the fix hints for buffering and missing streaming headers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: ``Server`` header words that name a reverse proxy or a CDN rather than an app server.
PROXY_SERVERS = (
    "nginx",
    "openresty",
    "cloudflare",
    "envoy",
    "haproxy",
    "varnish",
    "traefik",
    "caddy",
    "apache",
    "squid",
    "awselb",
    "akamai",
    "istio",
    "kong",
    "litespeed",
)
#: Headers only a proxy or CDN adds.
PROXY_HEADERS = ("via", "cf-ray", "x-amz-cf-id", "x-served-by", "x-cache", "x-varnish", "x-envoy-upstream-service-time")

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy in front of the endpoint: its name and how it was found."""

    name: str
    evidence: str

    @property
    def is_nginx(self) -> bool:
        """nginx (or openresty), which honours and removes ``X-Accel-Buffering``."""
        return self.name in ("nginx", "openresty")


def _get(headers: Headers, name: str) -> str | None:
    key = name.encode()
    for k, v in headers:
        if k.lower() == key:
            return v.decode("latin-1")
    return None


def detect_proxy(headers: Headers, declared: bool = False) -> Proxy | None:
    """The proxy the response headers reveal (``Server``, ``Via``, CDN headers), or
    the one declared with ``--behind-proxy``; None if neither."""
    server = (_get(headers, "server") or "").lower()
    for word in PROXY_SERVERS:
        if word in server:
            return Proxy(word, f"Server: {_get(headers, 'server')}")
    for name in PROXY_HEADERS:
        value = _get(headers, name)
        if value is not None:
            label = "proxy" if name == "via" else name
            return Proxy(label, f"{name}: {value[:60]}")
    if declared:
        return Proxy("proxy", "declared with --behind-proxy")
    return None


def buffering_hints(headers: Headers, proxy: Proxy | None, media_type: str) -> list[str]:
    """How to stop the buffering a pacing failure shows, most likely cause first."""
    hints = []
    encoding = (_get(headers, "content-encoding") or "identity").strip().lower()
    if encoding not in ("identity", ""):
        hints.append(
            f"the body is compressed (Content-Encoding: {encoding}) and compressors hold output until their "
            f"buffer fills: leave {media_type or 'the stream'} out of compression (nginx: gzip_types; "
            "GZipMiddleware/a CDN: exclude the type) or send Content-Encoding: identity"
        )
    if proxy is not None:
        if proxy.is_nginx or proxy.name == "proxy":
            hints.append(
                f"a proxy is in front ({proxy.evidence}): have the app send X-Accel-Buffering: no (nginx honours "
                "it per response and removes it) or set proxy_buffering off; for this location"
            )
        else:
            hints.append(f"a proxy/CDN is in front ({proxy.evidence}): turn off its response buffering for streams")
    if not hints:
        hints.append(
            "nothing between client and server shows in the headers, so the app, its framework or the server "
            "held the events: flush each one as it is produced (no response-level buffering; asgi-stream: "
            "flush=PerToken()), and check for a buffering layer the headers do not reveal"
        )
    return hints
