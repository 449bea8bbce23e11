"""The store contract: one set of checks every Store implementation must pass."""

from __future__ import annotations

import pytest

from streams.pipeline.routing import partition_for
from streams.store.base import (
    ANY_VERSION,
    Claim,
    CommitBatch,
    ConflictError,
    MembershipChange,
    StateWrite,
    Store,
)


async def check_round_trip(store: Store) -> None:
    """A committed state, offset and clock read back; versions count up."""
    snap = await store.load(["a", "b"], [0, 1])
    assert snap.states == {"a": None, "b": None}
    assert snap.offsets == {} and snap.clocks == {}
    await store.commit(
        CommitBatch(
            states=[StateWrite("a", 0, b'{"id":"a"}')],
            offsets={0: 41},
            clocks={0: 1700000000.5},
        )
    )
    snap = await store.load(["a", "b"], [0, 1])
    stored = snap.states["a"]
    assert stored is not None and stored.version == 1 and stored.data == b'{"id":"a"}'
    assert snap.states["b"] is None
    assert snap.offsets == {0: 41} and snap.clocks == {0: 1700000000.5}
    await store.commit(
        CommitBatch(states=[StateWrite("a", 1, b'{"id":"a","x":1}')], offsets={0: 7})
    )
    again = await store.get_state("a")
    assert again is not None and again.version == 2 and again.data == b'{"id":"a","x":1}'
    snap = await store.load([], [0])
    assert snap.offsets == {0: 41}, "an offset never moves backwards"


PARTITIONS = 8
"""The input partitions of the partitioned layout under test."""


def homed(partition: int, count: int, prefix: str = "h") -> list[str]:
    """``count`` customer ids whose home is ``partition`` (of :data:`PARTITIONS`)."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        cid = f"{prefix}{n}"
        if partition_for(cid.encode(), PARTITIONS) == partition:
            found.append(cid)
        n += 1
    return found


async def check_conflict_writes_nothing(store: Store) -> None:
    """A stale expected version rejects the whole batch (of one partition: the partitioned
    layout is atomic per partition)."""
    c, d = homed(3, 2)
    await store.commit(CommitBatch(states=[StateWrite(c, 0, b'{"id":"c"}')]))
    with pytest.raises(ConflictError):
        await store.commit(
            CommitBatch(
                states=[StateWrite(d, 0, b'{"id":"d"}'), StateWrite(c, 0, b'{"id":"c2"}')],
                memberships=[MembershipChange("vip", d, 1)],
                offsets={3: 10},
                outbox={3: [b"m1"]},
            )
        )
    assert await store.get_state(d) is None
    stored = await store.get_state(c)
    assert stored is not None and stored.data == b'{"id":"c"}'
    assert await store.segment_sizes() == {}
    assert await store.outbox(3, 10) == []
    assert (await store.load([], [3])).offsets == {}


async def check_memberships_and_sizes(store: Store) -> None:
    """Sizes follow membership exactly, and repeated adds or removes do not double count."""
    batch = CommitBatch(
        memberships=[
            MembershipChange("vip", "u1", 1),
            MembershipChange("vip", "u2", 1),
            MembershipChange("vip", "u2", 1),
            MembershipChange("new", "u1", 1),
        ]
    )
    await store.commit(batch)
    assert await store.segment_sizes() == {"vip": 2, "new": 1}
    await store.commit(
        CommitBatch(
            memberships=[
                MembershipChange("new", "u1", -1),
                MembershipChange("new", "u1", -1),
                MembershipChange("vip", "u9", -1),
            ]
        )
    )
    assert await store.segment_sizes() == {"vip": 2}
    seen: list[str] = []
    cursor = 0
    while True:
        cursor, page = await store.members("vip", cursor, 1)
        seen.extend(page)
        if cursor == 0:
            break
    assert sorted(seen) == ["u1", "u2"]


async def check_delete(store: Store) -> None:
    """A ``None`` write deletes the state."""
    await store.commit(CommitBatch(states=[StateWrite("e", 0, b'{"id":"e"}')]))
    await store.commit(CommitBatch(states=[StateWrite("e", 1, None)]))
    assert await store.get_state("e") is None
    assert (await store.load(["e"], [])).states == {"e": None}


async def check_outbox_order_and_trim(store: Store) -> None:
    """The outbox keeps commit order per partition and trims from the head."""
    await store.commit(CommitBatch(outbox={2: [b"one", b"two"], 5: [b"other"]}))
    await store.commit(CommitBatch(outbox={2: [b"three"]}))
    assert await store.outbox(2, 10) == [b"one", b"two", b"three"]
    assert await store.outbox(2, 2) == [b"one", b"two"]
    await store.outbox_trim(2, 2)
    assert await store.outbox(2, 10) == [b"three"]
    assert await store.outbox(5, 10) == [b"other"]


async def check_timers(store: Store) -> None:
    """Timers are set, moved and removed per partition; ``due`` is earliest first."""
    await store.commit(CommitBatch(due={1: {"x": 300.0, "y": 100.0, "z": 200.0}, 2: {"w": 50.0}}))
    assert await store.due(1, 250.0, 10) == [("y", 100.0), ("z", 200.0)]
    await store.commit(CommitBatch(due={1: {"y": None, "x": 150.0}}))
    assert await store.due(1, 1000.0, 10) == [("x", 150.0), ("z", 200.0)]
    assert await store.due(1, 1000.0, 1) == [("x", 150.0)]
    assert await store.due(2, 1000.0, 10) == [("w", 50.0)]


CONTRACT = [
    check_round_trip,
    check_conflict_writes_nothing,
    check_memberships_and_sizes,
    check_delete,
    check_outbox_order_and_trim,
    check_timers,
]


async def check_matrix_and_suppression(store: Store) -> None:
    """Matrix counts add up per day; erased ids are remembered by digest only."""
    await store.commit(CommitBatch(matrix={0: {"2026-01-01": {"-|vip": 2, "vip|-": 1}}}))
    await store.commit(
        CommitBatch(matrix={3: {"2026-01-01": {"-|vip": 1}, "2026-01-02": {"a|b": 1}}})
    )
    assert await store.matrix("2026-01-01") == {"-|vip": 3, "vip|-": 1}
    assert await store.matrix("2026-01-02") == {"a|b": 1}
    assert await store.matrix("2026-01-03") == {}
    await store.commit(CommitBatch(suppress={"gone": 1700000000.25}))
    snap = await store.load(["gone", "here"], [])
    assert snap.suppressed == {"gone": 1700000000.25}


async def check_unconditional_delete(store: Store) -> None:
    """``ANY_VERSION`` writes regardless of the current version."""
    await store.commit(CommitBatch(states=[StateWrite("f", 0, b'{"id":"f"}')]))
    await store.commit(CommitBatch(states=[StateWrite("f", 1, b'{"id":"f","n":2}')]))
    await store.commit(CommitBatch(states=[StateWrite("f", ANY_VERSION, b'{"id":"f","n":3}')]))
    stored = await store.get_state("f")
    assert stored is not None and stored.version == 3 and stored.data == b'{"id":"f","n":3}'
    await store.commit(CommitBatch(states=[StateWrite("f", ANY_VERSION, None)]))
    assert await store.get_state("f") is None


CONTRACT += [check_matrix_and_suppression, check_unconditional_delete]


async def check_scan_meta_and_progress(store: Store) -> None:
    """Every customer is found by paging; named values and counters round trip."""
    ids = [f"s{n}" for n in range(25)]
    await store.commit(CommitBatch(states=[StateWrite(cid, 0, b'{"id":"x"}') for cid in ids]))
    found: set[str] = set()
    cursor = 0
    # SCAN's small pages walk the whole database, which other tests' namespaces share: page until
    # the cursor comes back to 0 (the bound only stops a cursor that never does)
    for _ in range(1_000_000):
        cursor, page = await store.scan_customers(cursor, 7)
        found.update(page)
        if cursor == 0:
            break
    assert cursor == 0
    assert found == set(ids)
    assert await store.meta_get("pack") is None
    await store.meta_set("pack", b'{"v":1}')
    assert await store.meta_get("pack") == b'{"v":1}'
    assert await store.progress_add("job", 5) == 5
    assert await store.progress_add("job", 2) == 7


CONTRACT.append(check_scan_meta_and_progress)


async def check_size_history(store: Store) -> None:
    """Hourly counts add up; hours past the retention (2160 h) before the newest fold into the
    base, also when a late batch writes to such an hour."""
    start = 490_000  # an hour in 2025
    await store.commit(
        CommitBatch(history={0: {start: {"vip|in": 2}}, 5: {start + 1: {"vip|out": 1}}})
    )
    await store.commit(CommitBatch(history={1: {start + 1: {"vip|out": 1, "new|in": 4}}}))
    found = await store.history()
    assert found.base == {}
    assert found.hours == {start: {"vip|in": 2}, start + 1: {"vip|out": 2, "new|in": 4}}
    await store.commit(CommitBatch(history={2: {start + 2161: {"vip|in": 1}}}))
    found = await store.history()
    assert found.base == {"vip|in": 2}  # hour `start` is more than 2160 h before the newest
    assert found.hours == {start + 1: {"vip|out": 2, "new|in": 4}, start + 2161: {"vip|in": 1}}
    await store.commit(CommitBatch(history={0: {start: {"vip|in": 5}}}))  # late, already past
    found = await store.history()
    assert found.base == {"vip|in": 7}
    assert set(found.hours) == {start + 1, start + 2161}


CONTRACT.append(check_size_history)


async def check_common_members(store: Store) -> None:
    """Members of both segments, exactly."""
    changes = [MembershipChange("a", f"c{n}", 1) for n in range(10)]
    changes += [MembershipChange("b", f"c{n}", 1) for n in range(6, 15)]
    await store.commit(CommitBatch(memberships=changes))
    assert await store.common_members("a", "b") == 4
    assert await store.common_members("a", "a") == 10
    assert await store.common_members("a", "none") == 0


CONTRACT.append(check_common_members)


async def check_changes_made_from_another_partition(store: Store) -> None:
    """A merge's other side (and an erasure's aliases) changed by a record of another partition
    ends as if it had been changed from its own: state, memberships, timer, erasure record."""
    (survivor,) = homed(1, 1, "s")
    (other,) = homed(6, 1, "o")
    await store.commit(
        CommitBatch(
            states=[StateWrite(other, 0, b'{"id":"o","m":{"vip":1}}')],
            memberships=[MembershipChange("vip", other, 1)],
            due={6: {other: 1_800_000_000.0}},
            origins={other: 6},
        )
    )
    merged = CommitBatch(
        states=[
            StateWrite(survivor, 0, b'{"id":"s"}'),
            StateWrite(other, 1, b'{"id":"o","mi":"s"}'),
        ],
        memberships=[MembershipChange("vip", other, -1), MembershipChange("vip", survivor, 1)],
        due={6: {other: None}},
        offsets={1: 4},
        outbox={1: [b"exit", b"enter"]},
        origins={survivor: 1, other: 1},
        claims={other: Claim(1, b'{"id":"o","m":{"vip":1},"mi":"s","ho":1}')},
        suppress={"gone": 1_700_000_000.0},
    )
    merged.origins["gone"] = 1
    await store.commit(merged)
    assert (await store.get_state(other)).data == b'{"id":"o","mi":"s"}'  # type: ignore[union-attr]
    assert (await store.get_state(survivor)).data == b'{"id":"s"}'  # type: ignore[union-attr]
    assert await store.segment_sizes() == {"vip": 1}
    assert await store.due(6, 2_000_000_000.0, 10) == []
    assert await store.outbox(1, 10) == [b"exit", b"enter"]
    snapshot = await store.load([other, "gone"], [1, 6])
    assert snapshot.offsets == {1: 4}
    assert snapshot.suppressed == {"gone": 1_700_000_000.0}
    assert await store.recover() == 0


CONTRACT.append(check_changes_made_from_another_partition)


async def check_stale_claim_writes_nothing(store: Store) -> None:
    """A merge whose other side changed since it was read is rejected, survivor included."""
    (survivor,) = homed(2, 1, "s")
    (other,) = homed(5, 1, "o")
    await store.commit(CommitBatch(states=[StateWrite(other, 0, b'{"id":"o"}')]))
    await store.commit(CommitBatch(states=[StateWrite(other, 1, b'{"id":"o","e":1}')]))
    with pytest.raises(ConflictError):
        await store.commit(
            CommitBatch(
                states=[
                    StateWrite(survivor, 0, b'{"id":"s"}'),
                    StateWrite(other, 1, b'{"id":"o","mi":"s"}'),
                ],
                offsets={2: 9},
                origins={survivor: 2, other: 2},
                claims={other: Claim(1, b'{"id":"o","mi":"s","ho":1}')},
            )
        )
    assert await store.get_state(survivor) is None
    assert (await store.get_state(other)).data == b'{"id":"o","e":1}'  # type: ignore[union-attr]
    assert (await store.load([], [2])).offsets == {}


CONTRACT.append(check_stale_claim_writes_nothing)
