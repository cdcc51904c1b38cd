"""Judging a stream from the outside: what its arrival times alone can show.

Pure functions on monotonic timestamps (no I/O), so every rule is unit-tested on
synthetic timelines. Two judgements:

* :func:`judge_keepalive`: the silences on the wire. A silence longer than the budget
  fails; an event-free stretch longer than the budget that something (a comment)
  kept alive passes; a stream without such a stretch cannot show whether keepalives
  would come, and says so.
* :func:`judge_pacing`: whether events reached the client as they were produced or
  were held and released in bursts. From outside, production times are unknown, so
  the rule rests on what a generator cannot do: release many events within a few
  milliseconds after a long silence. What it cannot tell apart is said in
  :data:`PACING_LIMITS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: Events arriving within this many seconds of a burst's first event belong to it.
BURST_WINDOW = 0.010
#: A burst of at least this many events after a long silence is "held" even alone.
MIN_LONE_BURST = 8
#: Bursts of fewer events never count as held (a decode step can emit 2: content + finish).
MIN_BURST = 3

PACING_LIMITS = (
    "from outside, a server that generates the whole answer before sending it looks like one that "
    "buffers it, and a fast model after a slow first token looks like a buffer on a short answer "
    f"(under {MIN_LONE_BURST} events); ask for a longer answer to judge"
)

UNOBSERVABLE = "unobservable"
PASS = "pass"
FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Silence:
    """A stretch with nothing on the wire, in seconds since the request."""

    start: float
    end: float
    #: Where it sits, for the evidence: "before the response headers", "after event 3"…
    where: str

    @property
    def length(self) -> float:
        """Its duration in seconds."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Stretch:
    """An event-free stretch (between two events), with the non-event bytes inside it."""

    start: float
    end: float
    where: str
    #: Arrival offsets of comments / keepalive bytes inside the stretch.
    fillers: tuple[float, ...] = ()

    @property
    def length(self) -> float:
        """Its duration in seconds."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verdict (``pass``, ``fail`` or ``unobservable``) and its evidence."""

    verdict: str
    evidence: str
    #: Numbers a report may plot or a test may assert on.
    figures: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- silences
def wire_silences(
    headers_at: float | None, wire: Sequence[float], events: Sequence[float], end_at: float
) -> list[Silence]:
    """The gaps between consecutive things on the wire, offsets in seconds since the
    request: request → headers, headers → first body bytes, body piece → body piece,
    and the last piece → ``end_at`` (the end of the stream, or when observation
    stopped). ``events`` (arrival offsets of events) only name the gaps."""
    points: list[tuple[float, str]] = [(0.0, "the request")]
    if headers_at is not None:
        points.append((headers_at, "the response headers"))
    ev = sorted(events)
    j = 0
    for t in sorted(wire):
        while j < len(ev) and ev[j] <= t:
            j += 1
        points.append((t, f"event {j}" if j else "the first body bytes"))
    out = []
    for (a, what_a), (b, _) in zip(points, points[1:]):
        where = "before the response headers" if what_a == "the request" else f"after {what_a}"
        out.append(Silence(a, b, where))
    last, what = points[-1]
    if end_at > last:
        out.append(Silence(last, end_at, f"after {what} (until the end)"))
    return out


def event_stretches(
    headers_at: float | None, events: Sequence[float], fillers: Sequence[float], end_at: float
) -> list[Stretch]:
    """Event-free stretches: headers → first event, event → event, last event → end;
    each with the filler arrivals (comments) that fell inside it."""
    start = headers_at if headers_at is not None else 0.0
    bounds = [start, *sorted(events), end_at]
    out = []
    fl = sorted(fillers)
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        if b <= a:
            continue
        inside = tuple(f for f in fl if a < f < b)
        where = "before the first event" if i == 0 else f"after event {i}"
        out.append(Stretch(a, b, where, inside))
    return out


def judge_keepalive(
    headers_at: float | None,
    wire: Sequence[float],
    events: Sequence[float],
    fillers: Sequence[float],
    end_at: float,
    budget: float,
) -> Judgement:
    """Keepalive from outside, offsets in seconds since the request.

    ``wire``: arrival of every body piece; ``events``: arrival of every event;
    ``fillers``: arrival of comments (or other non-event bytes); ``end_at``: end of
    the stream, or when observation stopped.
    """
    silences = wire_silences(headers_at, wire, events, end_at)
    longest = max(silences, key=lambda s: s.length, default=None)
    stretches = event_stretches(headers_at, events, fillers, end_at)
    long_stretch = max(stretches, key=lambda s: s.length, default=None)
    figures = {
        "longest_silence": longest.length if longest else 0.0,
        "longest_event_gap": long_stretch.length if long_stretch else 0.0,
        "comments": float(len(fillers)),
        "budget": budget,
    }
    if longest is not None and longest.length > budget:
        return Judgement(
            FAIL,
            f"{longest.length:.1f} s of silence on the wire {longest.where} (+{longest.start:.2f} s → "
            f"+{longest.end:.2f} s) with no keepalive, budget {budget:g} s; {len(fillers)} comments in the "
            f"whole stream",
            figures,
        )
    bridged = [s for s in stretches if s.length > budget]
    if bridged:
        s = max(bridged, key=lambda x: x.length)
        cadence = _cadence([s.start, *s.fillers, s.end])
        return Judgement(
            PASS,
            f"an event-free stretch of {s.length:.1f} s {s.where} (+{s.start:.2f} s → +{s.end:.2f} s) carried "
            f"{len(s.fillers)} keepalive(s), {cadence}; longest silence on the wire "
            f"{figures['longest_silence']:.2f} s ≤ {budget:g} s",
            figures,
        )
    gap = long_stretch.length if long_stretch else 0.0
    return Judgement(
        UNOBSERVABLE,
        f"not observable: the longest stretch without events was {gap:.2f} s, within the "
        f"{budget:g} s budget ({len(fillers)} comments seen); a stream that pauses longer (a slow first "
        f"token, a tool call) shows whether keepalives come, or lower --keepalive-budget",
        figures,
    )


def _cadence(points: Sequence[float]) -> str:
    gaps = [b - a for a, b in zip(points, points[1:])]
    if not gaps:
        return "no gaps"
    return "gaps " + "/".join(f"{g:.1f}" for g in gaps[:8]) + (" …" if len(gaps) > 8 else "") + " s"


# ---------------------------------------------------------------- pacing
@dataclass(frozen=True, slots=True)
class Burst:
    """Events that arrived within :data:`BURST_WINDOW` of the first of them."""

    start: float
    end: float
    size: int
    #: Seconds since the previous arrival (or since the request, for the first burst).
    silence_before: float


def bursts(arrivals: Sequence[float], window: float = BURST_WINDOW) -> list[Burst]:
    """Group arrival offsets (seconds since the request) into bursts."""
    out: list[Burst] = []
    for t in sorted(arrivals):
        if out and t - out[-1].start <= window:
            b = out[-1]
            out[-1] = Burst(b.start, t, b.size + 1, b.silence_before)
        else:
            prev = out[-1].end if out else 0.0
            out.append(Burst(t, t, 1, t - prev))
    return out


def histogram(arrivals: Sequence[float], bins: int = 12) -> tuple[float, list[int]]:
    """Arrival counts in ``bins`` equal bins from the request to the last arrival;
    returns (bin width, counts)."""
    if not arrivals:
        return 0.0, [0] * bins
    last = max(arrivals)
    width = last / bins if last > 0 else 1.0
    counts = [0] * bins
    for t in arrivals:
        counts[min(bins - 1, int(t / width)) if width else 0] += 1
    return width, counts


def format_histogram(arrivals: Sequence[float], bins: int = 12) -> str:
    """``arrivals per 0.50 s from the request: 0 0 0 … 12``."""
    width, counts = histogram(arrivals, bins)
    return f"arrivals per {width:.2f} s bin from the request: " + " ".join(map(str, counts))


def judge_pacing(arrivals: Sequence[float], headers_at: float | None, budget: float, unit: str = "event") -> Judgement:
    """Whether the events were released as produced or held and released in bursts.

    Held: bursts of ≥ :data:`MIN_BURST` events after a silence longer than ``budget``
    (the longest an event may wait), together carrying at least half the events, in
    two or more bursts or in one of ≥ :data:`MIN_LONE_BURST`. Paced: not held, and
    at least three separate arrivals. Anything else cannot be told from outside.
    """
    n = len(arrivals)
    figures: dict[str, float] = {"events": float(n), "budget": budget}
    if n < 3:
        return Judgement(UNOBSERVABLE, f"not observable: only {n} {unit}s", figures)
    bs = bursts(arrivals)
    held = [b for b in bs if b.size >= MIN_BURST and b.silence_before > budget]
    held_events = sum(b.size for b in held)
    span = max(arrivals) - min(arrivals)
    biggest = max(bs, key=lambda b: b.size)
    figures.update(bursts=float(len(bs)), held=float(held_events), span=float(span), largest_burst=float(biggest.size))
    hist = format_histogram(arrivals)
    headers = f"headers at +{headers_at:.3f} s, " if headers_at is not None else ""
    if held_events * 2 >= n and (len(held) >= 2 or held_events >= MIN_LONE_BURST):
        if len(held) == 1 and held_events == n:
            b = held[0]
            late_headers = headers_at is not None and headers_at >= b.start - 2 * BURST_WINDOW
            what = (
                "the headers came with it: the whole response was held (or generated before it was sent)"
                if late_headers
                else "after the headers: the body was held after the response started"
            )
            head = (
                f"all {n} {unit}s arrived in one burst ({(b.end - b.start) * 1000:.0f} ms wide) at "
                f"+{b.start:.2f} s, after {b.silence_before:.2f} s of nothing; {what}"
            )
        else:
            sizes = "/".join(str(b.size) for b in held[:10])
            waits = "/".join(f"{b.silence_before:.1f}" for b in held[:10])
            head = (
                f"{held_events} of {n} {unit}s arrived in {len(held)} bursts (sizes {sizes}) after silences of "
                f"{waits} s (budget {budget:g} s): released in batches, not as produced"
            )
        return Judgement(FAIL, f"{head}; {headers}{hist}", figures)
    if len(bs) >= 3:
        note = (
            f", largest burst {biggest.size} after {biggest.silence_before:.2f} s" if biggest.size >= MIN_BURST else ""
        )
        return Judgement(
            PASS,
            f"{n} {unit}s in {len(bs)} separate arrivals over {span:.2f} s{note}; {headers}{hist}",
            figures,
        )
    if held:
        why = (
            f"{held_events} of them after a silence of {held[0].silence_before:.2f} s: a buffer, or a fast model "
            f"after a slow first token, which cannot be told apart on so few"
        )
    else:
        why = f"with no silence above the {budget:g} s budget, so buffering cannot be told from generation"
    return Judgement(
        UNOBSERVABLE,
        f"not observable: {n} {unit}s arrived in {len(bs)} burst(s) within {max(arrivals):.2f} s of the request, "
        f"{why}; {PACING_LIMITS}",
        figures,
    )
