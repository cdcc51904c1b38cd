"""RedisStore: resumable streams shared by every worker and host that reaches one Redis.

The worker that runs a stream's generator keeps the stream in its own memory too (a
:class:`MemoryStore`), so its consumers never wait for Redis; its writer copies the
events to a Redis Stream in the background, one pipelined round trip at a time, with
all the events produced meanwhile packed into one entry. Consumers on other workers
replay with ``XREAD`` and tail with ``XREAD BLOCK``.

Keys (``{sid}`` is a hash tag, so one stream's keys share a Redis Cluster slot):

* ``<prefix>{sid}:m`` — hash: the :class:`StreamMeta` fields, ``state`` (running |
  done) and ``outcome``;
* ``<prefix>{sid}:e`` — the Redis Stream. An entry ``<last seq>-0`` holds events
  ``f``..``last``: field ``f`` (first seq), ``d`` (their bytes, concatenated) and
  ``n`` (their lengths, little-endian uint32s). The end marker is ``<last seq>-1`` with
  field ``end`` (the outcome). ``XREAD`` from ``<cursor>-0`` thus returns exactly the
  entries holding events after the cursor, then the end marker;
* ``<prefix>{sid}:p`` — the producer's heartbeat (expires when it stops writing);
* ``<prefix>{sid}:c`` — consumers on other workers refresh it while attached: its
  remaining TTL (on Redis' clock) tells the producer how long ago one was last seen.

Every call is bounded by ``timeout``. When Redis cannot be reached the producing
worker keeps serving its own consumers from memory and copies the stream to Redis
once it is back (the whole kept window if Redis lost it); other workers answer 503
(or end a tail they are serving with an in-band error after ``patience`` seconds).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio

from .memory import MemoryStore, _MemoryWriter
from .store import Limits, ReplayStore, ResumeError, ResumeGap, StoreUnavailable, StreamMeta, StreamNotFound, Writer

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("RedisStore needs redis-py: pip install 'asgi-stream[redis]'") from exc

logger = logging.getLogger("asgi_stream")

T = TypeVar("T")

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
#: The longest back-off after a failed call (seconds).
_MAX_BACKOFF = 2.0
#: The TTL the settled marker is created with: its remaining TTL tells its age on
#: Redis' own clock (ten years; it is created again if it ever expires).
_MARKER_TTL_MS = 10 * 365 * 86_400 * 1000


class RedisStore(ReplayStore):
    """A replay store on Redis Streams (redis-py's asyncio client), shared by workers.

    Args:
        url_or_client: a ``redis://`` URL (the store makes and closes its client) or a
            ``redis.asyncio.Redis`` (bytes replies, i.e. ``decode_responses=False``).
        limits: per-stream bounds; ``max_events``/``max_bytes`` apply to the producer's
            memory and Redis alike (Redis is trimmed with ``XTRIM MINID`` once per
            round trip), ``running_ttl``/``ttl`` are the keys' TTLs.
        key_prefix: prefix of every key.
        timeout: seconds any one Redis call may take.
        heartbeat: seconds between producer and remote-consumer heartbeats (and the
            longest ``XREAD BLOCK``); keep ``resume_grace`` above it.
        patience: seconds a consumer on another worker rides out an unreachable Redis
            or a silent producer before it ends its response with an error.
        finish_retry: seconds a finished stream's writer keeps trying to get its
            tail into Redis when Redis was down as the stream ended.
        flush_interval: the writer makes at most one round trip per this many
            seconds, packing the events produced meanwhile into one entry: the most
            a tail on another worker lags behind the producer (plus a round trip).
        max_streams: streams kept in the producing worker's memory.
        max_total_bytes: bytes of events kept in the producing worker's memory, all
            streams together (as :class:`MemoryStore`'s).
    """

    def __init__(
        self,
        url_or_client: str | Any,
        *,
        limits: Limits | None = None,
        key_prefix: str = "asgi-stream:",
        timeout: float = 2.0,
        heartbeat: float = 1.0,
        patience: float = 5.0,
        finish_retry: float = 30.0,
        flush_interval: float = 0.02,
        max_streams: int = 10_000,
        max_total_bytes: int = 256 << 20,
    ) -> None:
        for name, value in (("timeout", timeout), ("heartbeat", heartbeat), ("patience", patience)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        for name, value in (("finish_retry", finish_retry), ("flush_interval", flush_interval)):
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
        self.limits = limits or Limits()
        self.key_prefix = key_prefix
        self.timeout = float(timeout)
        self.heartbeat = float(heartbeat)
        self.patience = float(patience)
        self.finish_retry = float(finish_retry)
        self.flush_interval = float(flush_interval)
        if isinstance(url_or_client, str):
            self.redis = aioredis.Redis.from_url(
                url_or_client,
                socket_timeout=self.timeout + self.heartbeat + 1.0,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._owns_client = True
        elif hasattr(url_or_client, "pipeline") and hasattr(url_or_client, "xread"):
            kwargs = getattr(getattr(url_or_client, "connection_pool", None), "connection_kwargs", {})
            if kwargs.get("decode_responses"):
                raise ValueError("RedisStore needs a client with bytes replies (decode_responses=False)")
            self.redis = url_or_client
            self._owns_client = False
        else:
            raise TypeError(f"RedisStore needs a redis:// URL or a redis.asyncio.Redis client, got {url_or_client!r}")
        self.local = MemoryStore(self.limits, max_streams=max_streams, max_total_bytes=max_total_bytes)
        self.local._keep_evicted = True  # the writer copies an evicted stream's newest events on
        self._down_until = 0.0
        self._failures = 0
        self._last_error = ""
        #: When a call succeeded after failures (this worker reached Redis again).
        self._reachable_since = -math.inf

    # ------------------------------------------------------------ keys and calls
    def key(self, stream_id: str, kind: str) -> str:
        """The Redis key of one part (``m``, ``e``, ``p``, ``c``) of a stream."""
        return f"{self.key_prefix}{{{stream_id}}}:{kind}"

    @property
    def available(self) -> bool:
        """False while the store backs off after Redis could not be reached."""
        return time.monotonic() >= self._down_until

    async def call(self, fn: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
        """Run one Redis round trip within the timeout; StoreUnavailable if it fails.

        After a failure the store answers StoreUnavailable at once for a short,
        growing back-off (up to 2 s), so callers do not pile up on a dead server.
        """
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(f"Redis is unavailable ({self._last_error})")
        try:
            with anyio.fail_after(self.timeout if timeout is None else timeout):
                result = await fn()
        except _UNREACHABLE as exc:
            self._failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._down_until = time.monotonic() + min(0.05 * 2**self._failures, _MAX_BACKOFF)
            if self._failures == 1:
                logger.warning("asgi_stream: Redis replay store unreachable: %s", self._last_error)
            raise StoreUnavailable(f"Redis is unavailable ({self._last_error})") from exc
        except RedisError as exc:  # reachable, but the command failed (e.g. OOM)
            raise StoreUnavailable(f"Redis refused a command ({type(exc).__name__}: {exc})") from exc
        if self._failures:
            logger.warning("asgi_stream: Redis replay store reachable again")
            self._failures = 0
            self._reachable_since = time.monotonic()
        return result

    # ------------------------------------------------------------ unknown, or not yet back?
    @property
    def recovery_window(self) -> float:
        """Seconds after Redis came back empty (or this worker reached it again) during
        which a stream Redis does not know may be one whose producer has not copied it
        back yet: the longest a live producer takes to notice and repair (a heartbeat
        round, the longest back-off, a slow call, a flush interval, and a heartbeat more)."""
        return 2 * self.heartbeat + _MAX_BACKOFF + self.timeout + self.flush_interval

    def _marker(self, pipe: Any) -> None:
        """Queue the settled-marker probe: create it if missing, then read its age.

        ``<prefix>settled`` exists as long as Redis has kept asgi-stream's data; whoever
        first finds it missing (Redis restarted empty, flushed, failed over to an empty
        replica, or never written to) creates it, so its age is how long this Redis has
        been holding what producers write.
        """
        key = f"{self.key_prefix}settled"
        pipe.set(key, b"1", px=_MARKER_TTL_MS, nx=True)
        pipe.pttl(key)

    def _unknown(self, stream_id: str, marker_pttl: Any) -> ResumeError:
        """What a miss means: StreamNotFound once Redis is settled, else StoreUnavailable."""
        window = self.recovery_window
        if not isinstance(marker_pttl, int) or marker_pttl == -2:
            age = 0.0  # just created, or gone again at once
        elif marker_pttl < 0:
            age = math.inf  # someone made it permanent: settled
        else:
            age = (_MARKER_TTL_MS - marker_pttl) / 1000
        since_back = time.monotonic() - self._reachable_since
        if age < window or since_back < window:
            wait = window - min(age, since_back)
            return StoreUnavailable(
                f"Redis came back {min(age, since_back):.1f} s ago and may not hold stream {stream_id!r} "
                f"again yet; retry (for up to {wait:.1f} s more)",
                retry_after=min(max(wait, 0.5), 1.0),
            )
        return StreamNotFound(f"stream {stream_id!r} is unknown or expired")

    # ------------------------------------------------------------ the protocol
    async def open(self, stream_id: str, meta: StreamMeta) -> Writer:
        """Create the stream in memory and (if Redis answers) in Redis."""
        local = await self.local.open(stream_id, meta)
        assert isinstance(local, _MemoryWriter)
        writer = RedisWriter(self, stream_id, meta, local)
        if self.available:
            try:
                await writer.write_meta(fresh=True)
            except StoreUnavailable as exc:
                logger.warning(
                    "asgi_stream: stream %s is resumable on this worker only until Redis is back: %s", stream_id, exc
                )
        return writer

    async def meta(self, stream_id: str) -> StreamMeta | None:
        """From memory when this worker produces the stream, else from Redis."""
        local = await self.local.meta(stream_id)
        if local is not None:
            return local
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.key(stream_id, "m"))
        self._marker(pipe)
        raw, _, marker_pttl = await self.call(pipe.execute)
        if not raw:
            miss = self._unknown(stream_id, marker_pttl)
            if isinstance(miss, StoreUnavailable):
                raise miss
            return None
        return decode_meta(raw)

    def read(self, stream_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        """From memory on the producing worker, else replay and tail from Redis."""
        if self.local.holds(stream_id):
            return self.local.read(stream_id, after)
        return self._read_remote(stream_id, after)

    async def aclose(self) -> None:
        """Stop the memory's expiry task; close the client if the store made it."""
        await self.local.aclose()
        if self._owns_client:
            await self.redis.aclose()

    # ------------------------------------------------------------ remote consumers
    async def _read_remote(self, stream_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        events_key, meta_key = self.key(stream_id, "e"), self.key(stream_id, "m")
        producer_key, consumer_key = self.key(stream_id, "p"), self.key(stream_id, "c")
        beat_ms = max(1, int(self.limits.running_ttl * 1000))
        block_ms = max(1, int(self.heartbeat * 1000))
        probe = self.redis.pipeline(transaction=False)
        probe.exists(meta_key)
        self._marker(probe)
        exists, _, marker_pttl = await self.call(probe.execute)
        if not exists:
            raise self._unknown(stream_id, marker_pttl)
        beat_at = -math.inf
        trouble_since: float | None = None  # Redis unreachable, or the producer silent
        done_seen = False  # the stream finished: one more XREAD drains what came with the end
        while True:
            now = time.monotonic()
            pipe = self.redis.pipeline(transaction=False)
            if now - beat_at >= self.heartbeat:
                pipe.set(consumer_key, b"1", px=beat_ms)
            pipe.xread({events_key: f"{after}-0"}, count=64, block=block_ms)
            try:
                replies = await self.call(pipe.execute, timeout=self.timeout + self.heartbeat)
            except StoreUnavailable:
                trouble_since = trouble_since or now
                if now - trouble_since >= self.patience:
                    raise
                await anyio.sleep(0.1)
                continue
            if len(replies) == 2:
                beat_at = now
            entries = _entries(replies[-1])
            if entries:
                trouble_since = None
                done_seen = False
                for entry_id, fields in entries:
                    if b"end" in fields:
                        return
                    first = int(fields[b"f"])
                    if first > after + 1:
                        raise ResumeGap(f"events {after + 1}..{first - 1} of the stream are no longer kept")
                    data, pos, seq = fields[b"d"], 0, first
                    for size in unpack_lengths(fields[b"n"]):
                        if seq > after:
                            after = seq
                            yield seq, data[pos : pos + size]
                        pos += size
                        seq += 1
                continue
            # Nothing new for a heartbeat: is the stream still there, its producer alive?
            check = self.redis.pipeline(transaction=False)
            check.hget(meta_key, "state")
            check.exists(producer_key)
            try:
                state, producing = await self.call(check.execute)
            except StoreUnavailable:
                if now - (trouble_since or now) >= self.patience:
                    raise
                trouble_since = trouble_since or now
                continue
            else:
                if state == b"done":
                    if done_seen:  # no end marker after the cursor: it is past the end
                        return
                    done_seen = True
                    continue
                if state is None or (state == b"running" and not producing):
                    trouble_since = trouble_since or now
                else:
                    trouble_since = None
            if trouble_since is not None and time.monotonic() - trouble_since >= self.patience:
                if state is None:
                    raise StreamNotFound(f"stream {stream_id!r} disappeared from Redis")
                raise StoreUnavailable(
                    f"the producer of stream {stream_id!r} stopped writing to Redis for {self.patience:.1f} s"
                )


class RedisWriter(Writer):
    """The producing worker's writer: memory first, Redis in pipelined batches."""

    def __init__(self, store: RedisStore, stream_id: str, meta: StreamMeta, local: _MemoryWriter) -> None:
        self.store = store
        self.stream_id = stream_id
        self.meta = meta
        self.local = local
        #: Highest seq known to be in Redis (None: unknown, resync before the next write).
        self.sent: int | None = None
        self._trimmed = 0
        self._expire_events = True
        self._beat_at = -math.inf
        self._outcome: str | None = None
        self._ended_in_redis = False
        #: Redis lost the stream and what this writer wrote since is partial: rewrite it all.
        self._lost = False
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._keys = {kind: store.key(stream_id, kind) for kind in ("m", "e", "p", "c")}

    # ------------------------------------------------------------ producing
    @property
    def seq(self) -> int:
        """The seq of the newest event appended."""
        return self.local.last_seq

    def append(self, seq: int, data: bytes) -> bool:
        """Into memory now (local consumers see it at once); Redis on the next round trip.

        The first event after a round trip wakes :meth:`run`; until run takes the
        batch, ``append`` is the memory writer's own (no cost beyond memory's).
        """
        full = self.local.append(seq, data)
        self.append = self.local.append  # type: ignore[method-assign]
        self._wake.set()
        return full

    async def wait_room(self) -> None:
        """The producing worker's memory holds the stream back for its local consumers."""
        await self.local.wait_room()

    def _poke(self) -> None:
        """Make :meth:`run` go round again at once."""
        self._wake.set()

    async def write_meta(self, *, fresh: bool = False) -> None:
        """Write the stream's metadata to Redis and learn what Redis holds of the stream.

        ``fresh``: a new stream, Redis holds nothing. Otherwise (after a failed round
        trip) Redis keeps what it has if the metadata survived; if it did not (a
        restarted Redis, or one that evicted the stream), whatever is there is dropped
        and the stream is copied anew from memory.
        """
        keys, store = self._keys, self.store
        self.sent, self._ended_in_redis = None, False
        keep = False
        if not fresh:
            probe = store.redis.pipeline(transaction=False)
            probe.exists(keys["m"])
            probe.xrevrange(keys["e"], "+", "-", count=1)
            existed, last = await store.call(probe.execute)
            keep = bool(existed and last and not self._lost)
        fields: dict[Any, Any] = {k: str(v) for k, v in self.meta.to_dict().items()}
        pipe = store.redis.pipeline(transaction=False)
        if keep:
            pipe.hset(keys["m"], mapping=fields)
        else:
            if not fresh:
                pipe.delete(keys["m"], keys["e"])
            pipe.hset(keys["m"], mapping={**fields, "state": "running"})
        pipe.pexpire(keys["m"], int(store.limits.running_ttl * 1000))
        pipe.set(keys["p"], b"1", px=self._producer_ttl_ms())
        await store.call(pipe.execute)
        self._beat_at = time.monotonic()
        self._lost = False
        self._expire_events = True
        self._trimmed = 0
        if keep:
            seq, _, part = last[0][0].partition(b"-")
            self._ended_in_redis = part == b"1"
            self.sent = int(seq)
        else:
            self.sent = 0

    def _producer_ttl_ms(self) -> int:
        return int(max(3 * self.store.heartbeat, self.store.timeout + self.store.heartbeat) * 1000)

    async def flush(self) -> None:
        """One pipelined round trip: the events since the last one (packed into one
        entry), trimming, heartbeat, and the end marker once finished."""
        async with self._lock:
            if self._ended_in_redis and self.sent is not None:
                return
            if self.sent is None:
                await self.write_meta()
                if self._ended_in_redis:
                    return
            await self._flush()

    async def _flush(self) -> None:
        store, keys = self.store, self._keys
        assert self.sent is not None
        first, events = self.local.kept_after(self.sent)
        pipe = store.redis.pipeline(transaction=False)
        pipe.exists(keys["m"])  # gone: Redis lost the stream (restarted, evicted)
        last = self.sent
        if events:
            last = first + len(events) - 1
            pipe.xadd(
                keys["e"],
                {b"f": str(first), b"d": b"".join(events), b"n": pack_lengths(events)},
                id=f"{last}-0",
            )
            if self._expire_events:
                pipe.pexpire(keys["e"], int(store.limits.running_ttl * 1000))
        if self.local.evicted:  # this worker's memory let it go: bound Redis by count
            kept_from = max(1, self.seq - store.limits.max_events + 1)
        else:
            kept_from = self.local.first_kept()
        if kept_from - 1 > self._trimmed and last >= kept_from:
            pipe.xtrim(keys["e"], minid=f"{kept_from}-0", approximate=False)
        now = time.monotonic()
        beat = now - self._beat_at >= store.heartbeat
        outcome = self._outcome
        if outcome is not None:
            ttl_ms = int(store.limits.ttl * 1000)
            pipe.xadd(keys["e"], {b"end": outcome}, id=f"{self.seq}-1")
            pipe.hset(keys["m"], mapping={"state": "done", "outcome": outcome})
            for kind in ("m", "e", "c"):
                pipe.pexpire(keys[kind], ttl_ms)
            pipe.delete(keys["p"])
        elif beat:
            pipe.set(keys["p"], b"1", px=self._producer_ttl_ms())
        if len(pipe) == 1:
            return
        try:
            replies = await store.call(pipe.execute)
        except StoreUnavailable:
            self.sent = None  # a write may or may not have happened: ask Redis next time
            raise
        if not replies[0]:
            logger.warning("asgi_stream: Redis lost stream %s; copying it there again", self.stream_id)
            self.sent, self._lost = None, True
            self._poke()
            return
        self.sent = last
        if events:
            self._expire_events = False
        if last >= kept_from:
            self._trimmed = kept_from - 1
        if outcome is not None:
            self._ended_in_redis = True
        elif beat:
            self._beat_at = now

    async def run(self) -> None:
        """Copy the stream to Redis until it finished there (or ``finish_retry`` passed)."""
        store = self.store
        give_up_at = math.inf
        while True:
            with anyio.move_on_after(store.heartbeat):
                await self._wake.wait()
            self._wake = anyio.Event()
            self.__dict__.pop("append", None)  # the next append wakes this loop again
            if self._ended_in_redis and self.sent is not None:
                return
            if self._outcome is not None and give_up_at == math.inf:
                give_up_at = time.monotonic() + store.finish_retry
            if not store.available:
                if time.monotonic() >= give_up_at:
                    break
                await anyio.sleep(max(0.0, store._down_until - time.monotonic()))
                self._poke()  # retry at once
                continue
            started = time.monotonic()
            try:
                await self.flush()
            except StoreUnavailable:
                if time.monotonic() >= give_up_at:
                    break
                self._poke()
                continue
            # Let events gather: one round trip per flush_interval at most (finish()
            # does not wait for this).
            linger = started + store.flush_interval - time.monotonic()
            if linger > 0 and self._outcome is None:
                await anyio.sleep(linger)
        logger.error(
            "asgi_stream: stream %s finished but Redis stayed unreachable for %.0f s; "
            "other workers cannot serve its end",
            self.stream_id,
            store.finish_retry,
        )

    async def finish(self, outcome: str) -> None:
        """End the stream for local consumers at once, then in Redis (one round trip;
        :meth:`run` retries if Redis is unreachable)."""
        await self.local.finish(outcome)
        self._outcome = outcome
        if self.store.available:
            try:
                await self.flush()
            except StoreUnavailable as exc:
                logger.warning("asgi_stream: could not end stream %s in Redis yet: %s", self.stream_id, exc)
        self._poke()

    # ------------------------------------------------------------ consumers
    async def wait_abandoned(self, grace: float) -> None:
        """Return once no consumer, here or on another worker, was attached for ``grace`` s.

        Consumers on other workers refresh a heartbeat key every ``heartbeat``
        seconds; one counts as gone ``heartbeat`` seconds after its last beat.
        While Redis is unreachable only this worker's consumers count.
        """
        local = self.local
        slack = self.store.heartbeat
        quiet_since = time.monotonic()
        while True:
            if local.consumers > 0:
                await local.wait_attach_change()
                quiet_since = time.monotonic()
                continue
            wait = quiet_since + grace - time.monotonic()
            if wait <= 0:
                wait = grace + slack - await self._remote_quiet_for()
                if wait <= 0:
                    return
            with anyio.move_on_after(wait) as scope:
                await local.wait_attach_change()
            if not scope.cancelled_caught:
                quiet_since = time.monotonic()

    async def _remote_quiet_for(self) -> float:
        """Seconds since a consumer on another worker last beat (inf: none, or unknown)."""
        store = self.store
        if not store.available:
            return math.inf
        try:
            pttl = await store.call(lambda: store.redis.pttl(self._keys["c"]))
        except StoreUnavailable:
            return math.inf
        if pttl is None or pttl < 0:
            return math.inf
        return max(0.0, (store.limits.running_ttl * 1000 - pttl) / 1000)


#: An array typecode of unsigned 32-bit integers (event lengths, little-endian in Redis).
_U32 = next(code for code in "IL" if array(code).itemsize == 4)


def pack_lengths(events: list[bytes]) -> bytes:
    """The events' lengths as little-endian uint32s (an entry's ``n`` field)."""
    lengths = array(_U32, map(len, events))
    if sys.byteorder == "big":
        lengths.byteswap()
    return lengths.tobytes()


def unpack_lengths(raw: bytes) -> array[int]:
    """The inverse of :func:`pack_lengths`."""
    lengths = array(_U32)
    lengths.frombytes(raw)
    if sys.byteorder == "big":
        lengths.byteswap()
    return lengths


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of a one-stream XREAD reply (RESP2 list or RESP3 map; empty if none)."""
    if not reply:
        return []
    entries: list[tuple[bytes, dict[bytes, bytes]]]
    if isinstance(reply, dict):
        (value,) = reply.values()
        entries = value[0] if value and isinstance(value[0], list) else value
    else:
        entries = reply[0][1]
    return entries


def decode_meta(raw: dict[bytes, bytes]) -> StreamMeta | None:
    """A StreamMeta from the meta hash's bytes (None if it is incomplete or garbled)."""
    try:
        data: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        if "created" in data:
            data["created"] = float(data["created"])
        return StreamMeta.from_dict(data)
    except (UnicodeDecodeError, ValueError, TypeError):
        return None


__all__ = ["RedisStore", "RedisWriter", "decode_meta"]
