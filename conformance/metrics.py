"""A Prometheus gauge of running generations, read from outside.

``--active-metric URL NAME`` names a metrics page in the Prometheus text format and a
gauge on it that counts the generations in progress (vLLM's
``vllm:num_requests_running``, TGI's ``tgi_batch_current_size``, the demo's
``asgi_stream_demo_generations_running``). NAME may carry label matchers,
``name{model_name="m"}``; the samples that match are summed. The suite watches the
gauge rise while it streams and fall after it closes the connection.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .clients import H1Client

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


class MetricError(RuntimeError):
    """The metrics page could not be read, or has no such gauge."""


def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    return {m.group(1): m.group(2) for m in _LABEL.finditer(text.strip("{}"))}


def parse_selector(selector: str) -> tuple[str, dict[str, str]]:
    """``name{a="b"}`` → (``name``, ``{"a": "b"}``)."""
    m = _SAMPLE.match(selector.strip() + " 0")
    if m is None:
        raise ValueError(f"not a metric name: {selector!r}")
    return m.group(1), _labels(m.group(2))


def gauge_value(text: str, selector: str) -> float | None:
    """The sum of the samples of ``selector`` in a Prometheus text page (None if absent)."""
    name, want = parse_selector(selector)
    total: float | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group(1) != name:
            continue
        labels = _labels(m.group(2))
        if any(labels.get(k) != v for k, v in want.items()):
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        total = value if total is None else total + value
    return total


@dataclass(frozen=True, slots=True)
class ActiveMetric:
    """Where the gauge of running generations is read."""

    url: str
    name: str
    insecure: bool = False
    _parts: tuple[str, str, int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        p = urlsplit(self.url)
        if p.scheme not in ("http", "https") or not p.hostname:
            raise ValueError(f"--active-metric URL must be http:// or https://, got {self.url!r}")
        parse_selector(self.name)
        port = p.port or (443 if p.scheme == "https" else 80)
        path = (p.path or "/") + (f"?{p.query}" if p.query else "")
        object.__setattr__(self, "_parts", (p.scheme, p.hostname, port, path))

    def read(self, timeout: float = 5.0) -> float:
        """The gauge's current value; raises :class:`MetricError`."""
        scheme, host, port, path = self._parts
        tls = None
        if scheme == "https":
            tls = ssl.create_default_context()
            if self.insecure:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        try:
            with H1Client(host, port, timeout=timeout, tls=tls) as c:
                c.request("GET", path, headers=[("accept", "text/plain")])
                resp = c.read_response(deadline=time.monotonic() + timeout)
        except Exception as exc:
            raise MetricError(f"cannot read {self.url}: {type(exc).__name__}: {exc}") from exc
        if resp.status != 200:
            raise MetricError(f"{self.url} answered {resp.status}")
        value = gauge_value(resp.body.decode("utf-8", "replace"), self.name)
        if value is None:
            raise MetricError(f"{self.url} has no sample of {self.name}")
        return value


@dataclass(slots=True)
class GaugeWatch:
    """Polls an :class:`ActiveMetric`, keeping every sample (time, value) as evidence."""

    metric: ActiveMetric
    interval: float = 0.05
    samples: list[tuple[float, float]] = field(default_factory=list)

    def read(self) -> float:
        """One sample."""
        value = self.metric.read()
        self.samples.append((time.monotonic(), value))
        return value

    def wait_for(
        self, predicate: Callable[[float], bool], timeout: float, between: Callable[[], None] | None = None
    ) -> tuple[bool, float]:
        """Poll until ``predicate(value)`` holds (True) or ``timeout`` passes (False);
        returns the verdict and the last value. ``between`` runs between samples (e.g.
        to keep reading a connection)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.read()
            if predicate(value):
                return True, value
            if time.monotonic() >= deadline:
                return False, value
            if between is not None:
                between()
            else:
                time.sleep(self.interval)

    def settle(self, floor: float, timeout: float, stable_for: float = 1.0) -> float:
        """Wait for the gauge to come back to ``floor`` (what it read before the suite's
        own streams), so that a generation left over from an earlier close cannot end
        during the next measurement and pass for it. After ``timeout`` (a leftover that
        never ends), settle for a value that has not changed for ``stable_for`` s.
        Returns the baseline."""
        deadline = time.monotonic() + timeout
        value = self.read()
        while value > floor and time.monotonic() < deadline:
            time.sleep(self.interval * 2)
            value = self.read()
        since = time.monotonic()
        while value > floor and time.monotonic() - since < stable_for:
            time.sleep(self.interval * 2)
            now_value = self.read()
            if now_value != value:
                value, since = now_value, time.monotonic()
        return value
