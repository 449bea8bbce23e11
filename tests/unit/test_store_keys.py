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


def _every_key(keys: Keys, customer: str) -> list[str]:
    return [
        keys.customer(customer),
        keys.members("buyer"),
        keys.sizes,
        keys.offsets,
        keys.clocks,
        keys.erased,
        keys.outbox(3),
        keys.due(3),
        keys.matrix("2026-01-01"),
        keys.meta("rules"),
        keys.progress("backfill:v1"),
    ]


def test_cluster_layout_puts_every_key_of_a_namespace_in_its_slot() -> None:
    keys = Keys("seg", cluster=True)
    assert keys.customer("u:42") == "{seg}:c:u:42"
    for customer in ("u:42", "carl.{x}", "}{", "dee"):
        slots = {key_slot(key.encode()) for key in _every_key(keys, customer)}
        assert slots == {key_slot(b"seg")}, customer


def test_a_customer_id_is_read_back_from_its_key_in_both_layouts() -> None:
    for cluster in (False, True):
        keys = Keys("seg", cluster=cluster)
        for customer in ("u:42", "carl.{x}", "}{", "a:c:{b}"):
            key = keys.customer(customer)
            assert key.startswith(keys.customer_prefix)
            assert keys.customer_id(key) == customer, (cluster, customer)
