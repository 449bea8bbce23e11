"""The same store contract against a real Redis server."""

from __future__ import annotations

import pytest

from streams.store.redis_store import RedisStore
from tests.store_contract import CONTRACT


@pytest.mark.parametrize("check", CONTRACT, ids=lambda c: c.__name__)
async def test_redis_store_contract(check, redis_url: str, namespace: str) -> None:
    store = RedisStore.from_url(redis_url, namespace)
    try:
        await check(store)
    finally:
        await store.close()
