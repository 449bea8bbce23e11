"""The fan-out of migrations to the open visitor streams of one API process.

One :class:`VisitorHub` per ``segmenter api`` process. Its feed (:mod:`streams.api.visitor_feed`)
reads the migrations topic once and hands every record to :meth:`VisitorHub.feed`; the hub
passes each migration of a followed customer to that customer's open streams as one ready-made
Server-Sent Events frame (``event: entered|exited``, ``id:`` the migration's ``sequence``).

Every stream numbers what it sends in the sequence of the customer it follows, and sends a
sequence at most once and in increasing order. A stream starts (and restarts after a merge) in
*sync*: it is registered first, so that nothing arriving meanwhile is lost, then the customer's
state is read from Redis (the system of record). With a ``Last-Event-ID`` in the same
customer's sequence it is sent exactly the migrations it missed, when the hub still holds all
of them (the last ``SEGMENTER_VISITOR_RESUME_DEPTH`` of a customer followed now or within
``SEGMENTER_VISITOR_RESUME_S``); otherwise one ``snapshot`` frame with the current segment ids.
Then whatever arrived during the sync, above the sequence it ends at.

Merges: a merged-away id's key redirects to the survivor. The hub follows it when a migration
with ``trigger.kind = merge`` concerns a followed customer (or a survivor whose aliases are
followed), and, for merges that move no membership, in a sweep every :data:`MERGE_SWEEP_S`. A
stream moves once it was sent the merged-away profile's last migration (the redirect's
sequence): the two profiles' migrations are on different partitions, so the survivor's may
reach the process before the exits, and the exits may come over several fetches. A moved stream
then follows the survivor, starting with a snapshot of it. A stream still short of the exits
after :data:`HANDOVER_WAIT_S` moves anyway, at the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from streams.api.metrics import Exposition
from streams.settings import Settings
from streams.state.customer import CustomerState, StateDecodeError
from streams.store.base import Store

log = logging.getLogger("segmenter.visitor")

MERGE_SWEEP_S = 60.0
"""How often the followed customers are checked for merges that moved no membership."""
HANDOVER_WAIT_S = 30.0
"""How long a stream waits for a merged-away profile's exits before it moves without them."""
MAX_HOPS = 64
"""Redirects followed at most (as the pipeline does)."""
MAX_QUEUED_FRAMES = 1000
"""A stream whose reader falls this far behind is closed (it reconnects and resumes)."""
REDIS_READS = 32
"""Redis reads of the visitor routes at once (redis-py's pool holds 100 connections)."""
HEARTBEAT = b": keep-alive\n\n"
HEARTBEAT_PARTS = 15
"""The streams get their heartbeats in this many turns per interval."""
MERGE_MARK = b'"kind":"merge"'
ERASURE_MARK = b'"kind":"erasure"'


@dataclass(frozen=True, slots=True)
class Move:
    """One migration of a customer, as its visitor streams send it."""

    sequence: int
    frame: bytes


def move_frame(sequence: int, direction: str, data: Mapping[str, object]) -> bytes:
    """The SSE frame of a migration."""
    body = orjson.dumps(data)
    return b"event: %s\nid: %d\ndata: %s\n\n" % (direction.encode(), sequence, body)


def snapshot_frame(sequence: int, segments: Iterable[str]) -> bytes:
    """The SSE frame that states a customer's segment ids at ``sequence``."""
    body = orjson.dumps({"segments": sorted(segments), "sequence": sequence})
    return b"event: snapshot\nid: %d\ndata: %s\n\n" % (sequence, body)


def published_segments(state: CustomerState | None) -> list[str]:
    """The segment ids a customer's published migrations add up to (changes at an instant not
    yet over are published later, with the next sequence numbers)."""
    if state is None:
        return []
    opened = state.open
    return sorted(opened.members if opened is not None else state.members)


class StateReader:
    """Customer states read from the store, at most :data:`REDIS_READS` at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = asyncio.Semaphore(REDIS_READS)

    async def raw(self, customer: str) -> bytes | None:
        """A customer's stored JSON, or None."""
        async with self.gate:
            stored = await self.store.get_state(customer)
        return stored.data if stored is not None else None

    async def state(self, customer: str) -> CustomerState | None:
        """A customer's stored state (a redirect for a merged-away id), or None."""
        data = await self.raw(customer)
        try:
            return CustomerState.from_json(data) if data is not None else None
        except StateDecodeError:
            return None  # a page sees no segments rather than an error

    async def resolved(self, customer: str) -> CustomerState | None:
        """The state of ``customer``, or of the profile it was merged into (through the
        chain)."""
        for _ in range(MAX_HOPS):
            state = await self.state(customer)
            if state is None or state.merged_into is None:
                return state
            customer = state.merged_into
        return None


@dataclass(frozen=True, slots=True)
class Handover:
    """A merge of the id a stream follows: the stream moves to the survivor once it was sent
    ``last``, the merged-away profile's last sequence."""

    customer: str
    last: int
    since: float
    """When the merge was seen (monotonic)."""


@dataclass(eq=False, slots=True)
class VisitorStream:
    """One open stream: whom it follows, the last sequence sent, the frames to write."""

    token_customer: str
    following: str = ""
    last: int | None = None
    """The last sequence sent (in ``following``'s numbering); None while in sync."""
    pending: list[Move] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    waiter: asyncio.Future[None] | None = None
    closed: bool = False
    abort: Callable[[], None] | None = None
    """Closes the connection under a reader that stopped reading."""
    part: int = 0
    """Its turn for heartbeats (see :meth:`VisitorHub.heartbeat`)."""
    handover: Handover | None = None
    """A merge of the followed id whose exits are not all sent yet."""
    moving: bool = False
    """Moving to a survivor (reading its state)."""

    def send(self, frame: bytes) -> None:
        """Queue a frame for the writer."""
        if self.closed:
            return
        self.frames.append(frame)
        if len(self.frames) > MAX_QUEUED_FRAMES:
            self.close()
            if self.abort is not None:
                self.abort()
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def offer(self, move: Move) -> None:
        """A migration of the followed customer: kept during a sync, else sent if new."""
        if self.last is None:
            self.pending.append(move)
        elif move.sequence > self.last:
            self.last = move.sequence
            self.send(move.frame)

    def settle(self, last: int, frames: Iterable[bytes]) -> None:
        """End a sync: send ``frames``, then what arrived during it above ``last``."""
        for frame in frames:
            self.send(frame)
        self.last = last
        pending, self.pending = self.pending, []
        for move in pending:
            self.offer(move)

    def close(self) -> None:
        """No more frames; wakes the writer."""
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_frames(self) -> bytes | None:
        """The frames queued so far, waiting for one; None once closed."""
        while not self.frames and not self.closed:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        if self.closed:
            return None
        frames, self.frames = self.frames, []
        return b"".join(frames)


class VisitorHub:
    """Open visitor streams by followed customer, and the recent migrations for resuming."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.reader = StateReader(store)
        self.streams: dict[str, set[VisitorStream]] = {}
        self.recent: dict[str, deque[Move]] = {}
        """Followed customers (now, or recently) -> their latest migrations."""
        self.released: dict[str, float] = {}
        """Customer -> when its last stream closed (monotonic)."""
        self.count = 0
        self.sent = 0
        self.ready = asyncio.Event()
        """Set by the feed once it reads from the end of every partition."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._turns = itertools.count()
        self._merging: set[str] = set()
        """Customers whose merge is being followed (one check for a merge's migrations)."""

    # -- streams -----------------------------------------------------------------------------

    async def open(self, stream: VisitorStream, resume: int | None) -> None:
        """Register ``stream`` and queue what its visitor lacks (see the module docstring)."""
        stream.following, stream.last = stream.token_customer, None
        stream.part = next(self._turns) % HEARTBEAT_PARTS
        self._register(stream)
        self.count += 1
        try:
            state = await self._followed_state(stream)
            self._sync(stream, state, resume)
        except BaseException:
            self.close(stream)
            raise

    def close(self, stream: VisitorStream) -> None:
        """Forget a stream (its writer has ended)."""
        if stream.closed and stream.following == "":
            return
        stream.close()
        self._unregister(stream)
        stream.following = ""
        self.count -= 1

    def _register(self, stream: VisitorStream) -> None:
        customer = stream.following
        self.streams.setdefault(customer, set()).add(stream)
        self.released.pop(customer, None)
        if customer not in self.recent:
            self.recent[customer] = deque(maxlen=self.settings.visitor_resume_depth)

    def _unregister(self, stream: VisitorStream) -> None:
        customer = stream.following
        followers = self.streams.get(customer)
        if followers is None:
            return
        followers.discard(stream)
        if not followers:
            del self.streams[customer]
            self.released[customer] = time.monotonic()

    async def _followed_state(self, stream: VisitorStream) -> CustomerState | None:
        """The state of the customer ``stream`` follows, moving it along redirects."""
        for _ in range(MAX_HOPS):
            state = await self.reader.state(stream.following)
            if state is None or state.merged_into is None or stream.closed:
                return state
            self._unregister(stream)
            stream.following = state.merged_into
            stream.pending.clear()  # numbered in the merged-away id's sequence
            self._register(stream)
        return None

    def _sync(self, stream: VisitorStream, state: CustomerState | None, resume: int | None) -> None:
        """Queue the missed migrations, or a snapshot, and end the sync."""
        current = state.sequence if state is not None else 0
        missed = None
        if resume is not None and stream.following == stream.token_customer:
            missed = self._missed(stream.following, resume, current)
        if missed is not None:
            stream.settle(current, [move.frame for move in missed])
        else:
            stream.settle(current, [snapshot_frame(current, published_segments(state))])
        self._move_when_due(stream)

    def _missed(self, customer: str, after: int, current: int) -> list[Move] | None:
        """Every migration of ``customer`` numbered ``after + 1 .. current``, in order, or None
        when the hub does not hold them all."""
        if after == current:
            return []
        if after > current:
            return None
        held = [m for m in self.recent.get(customer, ()) if after < m.sequence <= current]
        if [m.sequence for m in held] != list(range(after + 1, current + 1)):
            return None
        return held

    # -- the feed ----------------------------------------------------------------------------

    def feed(self, customer: str, value: bytes, time_iso: str | None) -> None:
        """One record of the migrations topic (key: ``customer``; ``ce_time``: ``time_iso``)."""
        buffer = self.recent.get(customer)
        merge = MERGE_MARK in value
        if buffer is None and not (merge and self.streams):
            return
        try:
            data = orjson.loads(value)
            sequence = int(data["sequence"])
            direction = str(data["direction"])
            segment = str(data["segment"])
            trigger = str((data.get("trigger") or {}).get("kind"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("skipped a migration that is not the contract's shape")
            return
        if merge and customer not in self._merging:
            self._merging.add(customer)
            self._spawn(self._merged(customer))
        if buffer is None:
            return
        body = {"segment": segment, "time": time_iso, "trigger": trigger, "sequence": sequence}
        move = Move(sequence, move_frame(sequence, direction, body))
        if not buffer or sequence > buffer[-1].sequence:
            buffer.append(move)
        for stream in self.streams.get(customer, ()):
            stream.offer(move)
            self.sent += 1
            self._move_when_due(stream)
        if ERASURE_MARK in value:
            # the customer's keys are gone: a new profile numbers from 1 again
            buffer.clear()
            for stream in self.streams.get(customer, ()):
                if stream.last is not None:
                    stream.last = 0

    async def _merged(self, customer: str) -> None:
        """A merge concerned ``customer``: move the streams of every id now redirecting."""
        try:
            state = await self.reader.state(customer)
        finally:
            self._merging.discard(customer)
        if state is None:
            return
        if state.merged_into is not None:
            await self._refollow(customer, state)
        for alias in state.aliases:
            if alias in self.streams:
                await self._refollow(alias)

    async def _refollow(self, customer: str, state: CustomerState | None = None) -> None:
        """Move the streams following ``customer`` (a redirect now: its ``state``, read here
        when not given) to the survivor, each once it was sent the merged-away profile's last
        migration."""
        try:
            if state is None:
                state = await self.reader.state(customer)
        except Exception as exc:  # Redis down: the visitors reconnect and resync
            log.warning("cannot follow a merge for a visitor stream: %r", exc)
            for stream in list(self.streams.get(customer, ())):
                stream.close()
            return
        if state is None or state.merged_into is None or state.handing_over:
            return  # a merge half done: its migrations, or the next sweep, come back to it
        for stream in list(self.streams.get(customer, ())):
            if stream.handover is None or stream.handover.customer != customer:
                stream.handover = Handover(customer, state.sequence, time.monotonic())
            if self._moves_now(stream):
                await self._move(stream)

    def _move_when_due(self, stream: VisitorStream) -> None:
        """Start moving ``stream`` in the background if a handover of it is due (after a
        migration was sent to it, or a sync ended)."""
        if stream.handover is not None and self._moves_now(stream):
            self._spawn(self._move(stream))

    def _moves_now(self, stream: VisitorStream, force: bool = False) -> bool:
        """Whether ``stream``'s handover is due (or ``force``d); if so it is in sync from now
        and the caller runs :meth:`_move`."""
        handover = stream.handover
        if handover is None or stream.moving:
            return False
        if stream.following != handover.customer or stream.closed:
            stream.handover = None  # moved already (a stream that opened after the merge)
            return False
        if not force and (stream.last is None or stream.last < handover.last):
            return False
        stream.handover, stream.moving = None, True
        stream.last = None  # in sync again: what arrives waits for the snapshot
        return True

    async def _move(self, stream: VisitorStream) -> None:
        """Follow the redirects from the merged-away id, and start with a snapshot."""
        try:
            state = await self._followed_state(stream)
        except Exception as exc:  # Redis down: the visitor reconnects and resyncs
            log.warning("cannot follow a merge for a visitor stream: %r", exc)
            stream.close()
            return
        finally:
            stream.moving = False
        if not stream.closed:
            self._sync(stream, state, None)

    # -- upkeep ------------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception as exc:
                log.warning("visitor hub: %r", exc)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def heartbeat(self, part: int | None = None) -> None:
        """A comment frame to the streams of one part of :data:`HEARTBEAT_PARTS` (all without
        ``part``): it keeps proxies from closing idle streams and finds the dead ones; spread
        over the interval, it never stalls the migrations behind thousands of writes. Then the
        expiry of the recent migrations of customers no longer followed."""
        for followers in self.streams.values():
            for stream in followers:
                if stream.last is not None and (part is None or stream.part == part):
                    stream.send(HEARTBEAT)
        self.expire(time.monotonic())

    def expire(self, now: float) -> None:
        """Drop the recent migrations of customers not followed for ``visitor_resume_s``, and
        the oldest beyond ``visitor_max_connections`` such customers."""
        keep_s = self.settings.visitor_resume_s
        limit = self.settings.visitor_max_connections
        for customer, since in list(self.released.items()):
            if now - since < keep_s and len(self.released) <= limit:
                break
            del self.released[customer]
            self.recent.pop(customer, None)

    async def sweep(self) -> None:
        """Move the streams that waited :data:`HANDOVER_WAIT_S` for a merged-away profile's
        exits; check every followed customer for a merge (one that moved no membership), a
        few at a time."""
        overdue = time.monotonic() - HANDOVER_WAIT_S
        for followers in list(self.streams.values()):
            for stream in list(followers):
                waited = stream.handover is not None and stream.handover.since <= overdue
                if waited and self._moves_now(stream, force=True):
                    await self._move(stream)

        async def check(customer: str) -> None:
            data = await self.reader.raw(customer)
            if data is not None and b'"mi":' in data:
                await self._refollow(customer)

        followed = list(self.streams)
        for start in range(0, len(followed), REDIS_READS):
            await asyncio.gather(*(check(c) for c in followed[start : start + REDIS_READS]))

    async def upkeep(self, stop: asyncio.Event) -> None:
        """Heartbeats, one part every ``visitor_heartbeat_s / HEARTBEAT_PARTS``, so that each
        stream has one every ``visitor_heartbeat_s``; the merge sweep every MERGE_SWEEP_S."""
        tick = self.settings.visitor_heartbeat_s / HEARTBEAT_PARTS
        next_sweep = time.monotonic() + MERGE_SWEEP_S
        for count in itertools.count():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
            if stop.is_set():
                return
            self.heartbeat(count % HEARTBEAT_PARTS)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + MERGE_SWEEP_S
                self._spawn(self.sweep())

    def shutdown(self) -> None:
        """Close every stream (the process is stopping)."""
        for followers in list(self.streams.values()):
            for stream in list(followers):
                stream.close()
        for task in list(self._tasks):
            task.cancel()

    def metrics_text(self) -> str:
        """Prometheus lines of the visitor streams."""
        out = Exposition()
        out.single("segmenter_visitor_streams", "gauge", "Open visitor streams", self.count)
        out.single(
            "segmenter_visitor_frames_total",
            "counter",
            "Migrations sent to visitor streams",
            self.sent,
        )
        return out.text()
