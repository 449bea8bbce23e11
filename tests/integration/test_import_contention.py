"""``segmenter import`` beside another writer of the same customers, on the real broker and Redis.

In ``segmenter up`` a live worker fires the imported customers' timers while the import still
writes them, so any commit of the import (a batch, the settling of the timers, a page of
announced customers) may find a customer's version moved. Here a competing writer rewrites one
customer of every other commit just before it reaches Redis, so the Lua script rejects it for
real; the import must read the customers again, finish, and end exactly where an import without
the competition ends.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.generate.history import HistorySpec, write_history
from streams.importer import command
from streams.importer.command import Options, Outcome
from streams.settings import Settings
from streams.store.base import CommitBatch, StateWrite
from streams.store.redis_store import RedisStore
from tests.integration.test_import import ROOT, dump

pytestmark = pytest.mark.integration


class ContendedStore(RedisStore):
    """A Redis store whose every other commit meets a write of another client first."""

    injected: Counter[str] = Counter()
    """Conflicts provoked, by the import step whose commit met them."""

    calls = 0
    redis_url = ""
    """Where the competing client connects (the same server)."""

    async def commit(self, batch: CommitBatch) -> None:
        ContendedStore.calls += 1
        if ContendedStore.calls % 2 == 1 and await self._rewrite_one(batch):
            ContendedStore.injected[_step(batch)] += 1
        await super().commit(batch)

    async def _rewrite_one(self, batch: CommitBatch) -> bool:
        """Store an existing customer of ``batch`` again, unchanged, through a second client:
        its version moves past the one the batch expects."""
        for write in batch.states:
            if write.expected <= 0:
                continue
            other = RedisStore.from_url(ContendedStore.redis_url, self.keys.namespace)
            try:
                stored = await other.get_state(write.customer_id)
                assert stored is not None and stored.version == write.expected
                await other.commit(
                    CommitBatch(states=[StateWrite(write.customer_id, stored.version, stored.data)])
                )
            finally:
                await other.close()
            return True
        return False


def _step(batch: CommitBatch) -> str:
    if batch.announced:
        return "announce"
    return "apply" if batch.progress else "settle"


def _settings(kafka: str, redis_url: str, namespace: str) -> Settings:
    return Settings(
        kafka_bootstrap=kafka,
        redis_url=redis_url,
        namespace=namespace,
        clock="event",
        rules=ROOT / "rules",
        input_topic=f"{namespace}.events",
        migrations_topic=f"{namespace}.migrations",
        dlq_topic=f"{namespace}.dlq",
        memberships_topic=f"{namespace}.memberships",
    )


def _import(settings: Settings, history: Path, work: Path) -> Outcome:
    options = Options(sources=[str(history)], batch=40, quiet=True, rejects=work / "rejects")
    return asyncio.run(command._import(settings, options, None, work))


def test_an_import_rereads_customers_another_writer_changed_and_ends_the_same(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = tmp_path / "history.jsonl"
    write_history(
        HistorySpec(customers=40, months=12, end=datetime(2026, 1, 1, tzinfo=UTC), seed=5),
        history,
    )
    plain_ns, contended_ns = f"p{uuid.uuid4().hex[:8]}", f"c{uuid.uuid4().hex[:8]}"
    (tmp_path / "plain").mkdir()
    (tmp_path / "contended").mkdir()
    plain = _import(_settings(kafka_bootstrap, redis_url, plain_ns), history, tmp_path / "plain")

    monkeypatch.setattr(command, "RedisStore", ContendedStore)
    ContendedStore.injected.clear()
    ContendedStore.calls = 0
    ContendedStore.redis_url = redis_url
    contended = _import(
        _settings(kafka_bootstrap, redis_url, contended_ns), history, tmp_path / "contended"
    )

    assert set(ContendedStore.injected) == {"apply", "settle", "announce"}, ContendedStore.injected
    assert (contended.events, contended.migrations) == (plain.events, plain.migrations)
    assert contended.events > 0 and contended.migrations > 0
    want: dict[str, Any] = asyncio.run(dump(redis_url, plain_ns))
    got: dict[str, Any] = asyncio.run(dump(redis_url, contended_ns))
    assert got == want
