"""``type: audience_file``: custom-audience files of hashed identifiers, per segment.

In ``<directory>/<segment>/``, numbered files (the number comes from a Redis counter, so it
orders files across deliverer processes):

- ``00000001-full.csv``: every current member with the required consent and an identifier,
  written once, when the destination first runs (or its segment is new to it);
- ``0000000N-remove.csv`` and ``0000000N-add.csv``: the changes of one batch.

To rebuild the audience: take the newest ``-full`` file, then apply every later number in
order, ``-remove`` before ``-add`` of the same number. Columns: ``email_sha256,phone_sha256``
(empty where unknown). Files are written to a temporary name and renamed (atomic). The
identifiers last sent for each customer are kept in Redis, so a customer whose e-mail changes is
removed under the old hash, and one who is erased can still be removed.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from streams.deliver.config import AudienceFile, Destination
from streams.deliver.identifiers import hashed_identifiers
from streams.deliver.outcome import Outcome
from streams.deliver.records import Record
from streams.state.customer import CustomerState
from streams.store.base import Store

COLUMNS = ("email_sha256", "phone_sha256")
EXPORT_PAGE = 1000
Identifiers = dict[str, str]


def write_atomically(path: Path, rows: Sequence[Identifiers]) -> None:
    """Write the CSV to a temporary file beside ``path``, then rename it into place."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row.get(column, "") for column in COLUMNS])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(buffer.getvalue())
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


@dataclass
class AudienceSink:
    """Writes the files of one ``audience_file`` destination."""

    destination: Destination
    store: Store
    client: aioredis.Redis
    namespace: str
    segments: Sequence[str]
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)

    @property
    def spec(self) -> AudienceFile:
        """The destination file."""
        spec = self.destination.spec
        assert isinstance(spec, AudienceFile)
        return spec

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, "deliver", self.destination.id, *parts))

    async def _number(self, segment: str) -> int:
        return int(await self.client.incr(self._key("seq", segment)))

    def _path(self, segment: str, number: int, what: str) -> Path:
        return self.spec.directory / segment / f"{number:08d}-{what}.csv"

    def identifiers(self, state: CustomerState | None) -> Identifiers:
        """The customer's hashed identifiers, or none without the required consent."""
        if state is None or state.merged_into is not None:
            return {}
        consent = self.spec.consent
        if consent is not None and state.consent.get(consent) is not True:
            return {}
        return hashed_identifiers(
            state.traits, list(self.spec.identifiers), self.spec.default_country_code
        )

    async def _state(self, customer_id: str) -> CustomerState | None:
        stored = await self.store.get_state(customer_id)
        return CustomerState.from_json(stored.data) if stored is not None else None

    async def export_missing(self) -> None:
        """Write the full file of every segment that has none yet (one process does it)."""
        for segment in self.segments:
            if await self.client.get(self._key("exported", segment)):
                continue
            if not await self.client.set(self._key("exporting", segment), b"1", nx=True, ex=3600):
                continue
            try:
                await self._export(segment)
            finally:
                await self.client.delete(self._key("exporting", segment))

    async def _export(self, segment: str) -> None:
        number = await self._number(segment)
        sent = self._key("sent", segment)
        await self.client.delete(sent)
        rows: list[Identifiers] = []
        cursor, seen = 0, 0
        while True:
            cursor, page = await self.store.members(segment, cursor, EXPORT_PAGE)
            for customer_id in page:
                ids = self.identifiers(await self._state(customer_id))
                if ids:
                    rows.append(ids)
                    await self.client.hset(sent, customer_id, orjson.dumps(ids))
            seen += len(page)
            if seen and seen % (EXPORT_PAGE * 10) < len(page):
                self.say(f"deliver {self.destination.id}: exporting {segment}: {seen} members")
            if cursor == 0:
                break
        write_atomically(self._path(segment, number, "full"), rows)
        await self.client.set(self._key("exported", segment), str(number))
        self.say(
            f"deliver {self.destination.id}: {segment}: full export of {len(rows)} of {seen}"
            f" members ({self._path(segment, number, 'full')})"
        )

    async def deliver(self, records: Sequence[Record]) -> Outcome:
        """Write the add and remove files of the batch's changes, segment by segment."""
        latest: dict[str, dict[str, str]] = {}
        for record in records:
            per = latest.setdefault(record.segment, {})
            per.pop(record.customer_id, None)
            per[record.customer_id] = record.direction
        for segment, changes in latest.items():
            await self._apply(segment, changes)
        return Outcome.ok(1)

    async def _apply(self, segment: str, changes: dict[str, str]) -> None:
        sent_key = self._key("sent", segment)
        raw = await self.client.hmget(sent_key, list(changes))
        sent = {cid: orjson.loads(r) for cid, r in zip(changes, raw, strict=True) if r}
        adds: dict[str, Identifiers] = {}
        removes: dict[str, Identifiers] = {}
        for customer_id, direction in changes.items():
            before = sent.get(customer_id)
            now = self.identifiers(await self._state(customer_id)) if direction == "entered" else {}
            if now == before or (not now and not before):
                continue
            if before:
                removes[customer_id] = before
            if now:
                adds[customer_id] = now
        if not adds and not removes:
            return
        number = await self._number(segment)
        if removes:
            write_atomically(self._path(segment, number, "remove"), list(removes.values()))
        if adds:
            write_atomically(self._path(segment, number, "add"), list(adds.values()))
        async with self.client.pipeline(transaction=False) as pipe:
            if removes:
                pipe.hdel(sent_key, *removes)
            for customer_id, ids in adds.items():
                pipe.hset(sent_key, customer_id, orjson.dumps(ids))
            await pipe.execute()
