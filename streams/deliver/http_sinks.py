"""HTTP destinations: ``webhook`` (every migration) and ``profile_sync`` (current segments).

A batch is one POST of a JSON array. Each attempt waits for the destination's rate limit; 2xx
delivers; 408, 425, 429, 5xx, timeouts and connection errors are retried with backoff (at least
``Retry-After``) until ``retry.give_up_after_s`` has passed since the first attempt; any other
status is permanent. Either way a batch that was not delivered is handed back to be
dead-lettered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from streams.deliver.config import Destination, ProfileSyncFile, WebhookFile
from streams.deliver.outcome import Counters, Outcome
from streams.deliver.pacing import Backoff, Monotonic, RateLimit, Sleep, retry_after_seconds
from streams.deliver.records import Record
from streams.deliver.signing import SIGNATURE_HEADER, sign
from streams.state.customer import CustomerState, StateDecodeError
from streams.store.base import Store

RETRIABLE_STATUS = frozenset({408, 425, 429}) | frozenset(range(500, 600))
USER_AGENT = "segmenter-deliver/0.1"

log = logging.getLogger("segmenter.deliver")


def batch_key(ids: Sequence[str]) -> str:
    """The ``Idempotency-Key`` of a batch: the one id, or a digest of all ids in order."""
    if len(ids) == 1:
        return ids[0]
    return "batch-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


@dataclass
class Poster:
    """Sends one body to one HTTP destination until it is delivered or given up."""

    destination: Destination
    session: aiohttp.ClientSession
    counters: Counters
    monotonic: Monotonic = time.monotonic
    sleep: Sleep = asyncio.sleep
    backoff: Backoff = field(init=False)
    limit: RateLimit = field(init=False)

    def __post_init__(self) -> None:
        spec = self._spec
        self.backoff = Backoff(spec.retry)
        self.limit = RateLimit(spec.rate_limit_per_s, self.monotonic, self.sleep)
        self.secret = self.destination.secret()

    @property
    def _spec(self) -> WebhookFile | ProfileSyncFile:
        spec = self.destination.spec
        assert isinstance(spec, WebhookFile | ProfileSyncFile)
        return spec

    def headers(self, body: bytes, key: str, content_type: str) -> dict[str, str]:
        """The request headers: content type, idempotency key, signature, and the file's own."""
        headers = dict(self._spec.headers)
        headers.update(
            {
                "Content-Type": content_type,
                "Idempotency-Key": key,
                "User-Agent": USER_AGENT,
                "X-Segmenter-Destination": self.destination.id,
            }
        )
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        return headers

    async def _attempt(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[bool, bool, str, float | None]:
        """One POST: (delivered, retriable, error, retry-after seconds)."""
        spec = self._spec
        timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
        try:
            async with self.session.post(
                spec.url, data=body, headers=headers, timeout=timeout
            ) as r:
                await r.read()
                if 200 <= r.status < 300:
                    return True, False, "", None
                error = f"HTTP {r.status} {r.reason or ''}".strip()
                wait = retry_after_seconds(r.headers.get("Retry-After"))
                return False, r.status in RETRIABLE_STATUS, error, wait
        except TimeoutError:
            return False, True, f"timeout after {spec.timeout_s:g}s", None
        except aiohttp.ClientError as exc:
            return False, True, f"{type(exc).__name__}: {exc}", None

    async def post(self, body: bytes, key: str, content_type: str) -> Outcome:
        """POST ``body`` with retries; the outcome says whether it was delivered."""
        headers = self.headers(body, key, content_type)
        deadline = self.monotonic() + self._spec.retry.give_up_after_s
        attempt = 0
        while True:
            attempt += 1
            await self.limit.acquire()
            self.counters.requests += 1
            delivered, retriable, error, wait = await self._attempt(body, headers)
            if delivered:
                return Outcome.ok(attempt)
            left = deadline - self.monotonic()
            if not retriable:
                return Outcome.gave_up(attempt, f"{error} (not retriable)")
            if left <= 0:
                return Outcome.gave_up(attempt, f"{error} (gave up after {attempt} attempts)")
            self.counters.retried += 1
            await self.sleep(min(self.backoff.delay(attempt, wait), left))


@dataclass
class WebhookSink:
    """``type: webhook``: the batch's migrations as a CloudEvents JSON batch."""

    poster: Poster
    content_type: str = "application/cloudevents-batch+json"

    async def deliver(self, records: Sequence[Record]) -> Outcome:
        """POST the records in order."""
        body = orjson.dumps([r.cloudevent() for r in records])
        return await self.poster.post(
            body, batch_key([r.ce_id for r in records]), self.content_type
        )


def profile_of(customer_id: str, state: CustomerState | None, last: Record) -> dict[str, Any]:
    """One customer's current segments (an erased or merged customer has none)."""
    gone = state is None or state.merged_into is not None
    return {
        "customer_id": customer_id,
        "segments": [] if gone or state is None else sorted(state.members),
        "primary_segment": None if gone or state is None else state.primary,
        "sequence": int(last.data.get("sequence") or 0),
        "time": last.header("ce_time"),
        "rule_version": last.data.get("rule_version"),
        "deleted": gone,
    }


@dataclass
class ProfileSyncSink:
    """``type: profile_sync``: for each customer who moved, the full current segment list.

    Several migrations of one customer in one batch become one profile (the latest state, read
    from Redis when the batch is sent), in the order of each customer's last migration.
    """

    poster: Poster
    store: Store
    content_type: str = "application/json"

    async def deliver(self, records: Sequence[Record]) -> Outcome:
        """POST one profile per customer."""
        last: dict[str, Record] = {}
        for record in records:
            last.pop(record.customer_id, None)
            last[record.customer_id] = record
        profiles = []
        for customer_id, record in last.items():
            stored = await self.store.get_state(customer_id)
            try:
                state = CustomerState.from_json(stored.data) if stored is not None else None
            except StateDecodeError as exc:
                log.error("profile of %r not sent: %s", customer_id, exc)
                continue
            profiles.append(profile_of(customer_id, state, record))
        body = orjson.dumps(profiles)
        ids = [f"{p['customer_id']}@{p['sequence']}" for p in profiles]
        return await self.poster.post(body, batch_key(ids), self.content_type)
