"""Key layout: Redis Cluster readiness of per-customer keys."""

from __future__ import annotations

from redis.crc import key_slot

from streams.store.redis_store import Keys


def test_customer_key_hashes_on_the_customer_id_only() -> None:
    keys = Keys("seg")
    key = keys.customer("u:42")
    assert key == "seg:c:{u:42}"
    assert key_slot(key.encode()) == key_slot(b"u:42")
    assert key_slot(Keys("other").customer("u:42").encode()) == key_slot(b"u:42")
