"""Key layouts: Redis Cluster readiness of the single layout, and the partitioned layout's
groups (one slot per input partition, each customer in its home partition's)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from redis.crc import key_slot

from streams.pipeline.routing import partition_for
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


def test_a_customer_id_is_read_back_from_its_key_in_every_layout() -> None:
    for cluster, partitions in ((False, 0), (True, 0), (False, 8), (True, 8)):
        keys = Keys("seg", cluster=cluster, partitions=partitions)
        for customer in ("u:42", "carl.{x}", "}{", "a:c:{b}", "x}:c:y"):
            key = keys.customer(customer)
            assert fnmatchcase(key, keys.customer_pattern), (key, keys.customer_pattern)
            assert keys.customer_id(key) == customer, (cluster, customer)
    other = Keys("seg", partitions=8)
    assert not fnmatchcase(other.customer("u:1"), Keys("seg2", partitions=8).customer_pattern)
    assert not fnmatchcase(Keys("seg").customer("u:1"), other.customer_pattern)


def _group_keys(keys: Keys, group: int) -> list[str]:
    return [
        keys.members("buyer", group),
        keys.sizes_of(group),
        keys.offsets_of(group),
        keys.clocks_of(group),
        keys.matrix("2026-01-01", group),
        keys.history_hour(490000, group),
        keys.history_index(group),
        keys.history_base(group),
        keys.handover(group),
    ]


def test_partitioned_layout_has_one_slot_per_partition_holding_its_customers() -> None:
    keys = Keys("seg", cluster=True, partitions=8)
    slots = {}
    for group in range(8):
        found = {key_slot(key.encode()) for key in _group_keys(keys, group)}
        found |= {key_slot(keys.outbox(group).encode()), key_slot(keys.due(group).encode())}
        assert len(found) == 1, group
        slots[group] = found.pop()
    assert len(set(slots.values())) == 8
    for customer in ("u:42", "carl.{x}", "}{", "dee", *(f"c{n}" for n in range(50))):
        home = partition_for(customer.encode(), 8)
        assert keys.home(customer) == home
        assert key_slot(keys.customer(customer).encode()) == slots[home], customer
    namespace_wide = {keys.erased, keys.meta("rules"), keys.progress("backfill:v1")}
    assert {key_slot(key.encode()) for key in namespace_wide} == {key_slot(b"seg")}


def test_partition_groups_spread_evenly_over_masters_with_even_slot_shares() -> None:
    """Whatever the namespace, 8 groups over 3 masters holding even, contiguous slot ranges
    land 3, 2, 3 (tags hashed at random would leave a master empty about one time in eight)."""
    for namespace in ("seg", "bench-abc123", "t0f3c", "a", "ns.with.dots"):
        keys = Keys(namespace, cluster=True, partitions=8)
        slots = [key_slot(keys.sizes_of(group).encode()) for group in range(8)]
        masters = [min(slot * 3 // 16384, 2) for slot in slots]
        assert [masters.count(m) for m in range(3)] == [3, 2, 3], (namespace, slots)
        assert Keys(namespace, partitions=8).customer("u1") == keys.customer("u1")
    one = Keys("seg", partitions=1)
    assert key_slot(one.customer("u1").encode()) == key_slot(one.sizes_of(0).encode())
