"""The store contract against the in-memory store."""

from __future__ import annotations

import pytest

from streams.store.memory import MemoryStore
from tests.store_contract import CONTRACT


@pytest.mark.parametrize("check", CONTRACT, ids=lambda c: c.__name__)
async def test_memory_store_contract(check) -> None:
    await check(MemoryStore())
