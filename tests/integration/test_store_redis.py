"""The same store contract against a real Redis server."""

from __future__ import annotations

import pytest

from streams.store.base import Claim, CommitBatch, MembershipChange, StateWrite
from streams.store.redis_store import RedisStore
from tests.store_contract import CONTRACT, PARTITIONS, homed


@pytest.mark.parametrize("partitions", [0, PARTITIONS], ids=["single", "partitioned"])
@pytest.mark.parametrize("check", CONTRACT, ids=lambda c: c.__name__)
async def test_redis_store_contract(check, partitions: int, redis_url: str, namespace: str) -> None:
    store = RedisStore.from_url(redis_url, namespace, partitions=partitions)
    try:
        await check(store)
    finally:
        await store.close()


async def test_a_hand_over_cut_short_is_finished_by_recover(redis_url: str, namespace: str) -> None:
    """A crash after the survivor's commit, before the other partition's changes: the hand-over
    record stays in the survivor's group, and ``recover`` (run when a worker starts) applies it,
    once however often it runs."""
    (survivor,) = homed(1, 1, "s")
    (other,) = homed(6, 1, "o")
    store = RedisStore.from_url(redis_url, namespace, partitions=PARTITIONS)

    async def crash(handed: object) -> None:
        raise ConnectionError("killed between the two steps")

    try:
        await store.commit(
            CommitBatch(
                states=[StateWrite(other, 0, b'{"id":"o"}')],
                memberships=[MembershipChange("vip", other, 1)],
                due={6: {other: 1_800_000_000.0}},
            )
        )
        store._finish = crash  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await store.commit(
                CommitBatch(
                    states=[
                        StateWrite(survivor, 0, b'{"id":"s"}'),
                        StateWrite(other, 1, b'{"id":"o","mi":"s"}'),
                    ],
                    memberships=[MembershipChange("vip", other, -1)],
                    due={6: {other: None}},
                    offsets={1: 7},
                    origins={survivor: 1, other: 1},
                    claims={other: Claim(1, b'{"id":"o","mi":"s","ho":1}')},
                )
            )
        # the survivor's partition committed; the other side holds the claim (data kept)
        assert (await store.load([], [1])).offsets == {1: 7}
        assert (await store.get_state(other)).data == b'{"id":"o","mi":"s","ho":1}'  # type: ignore[union-attr]
        assert await store.segment_sizes() == {"vip": 1}
    finally:
        await store.close()
    fresh = RedisStore.from_url(redis_url, namespace, partitions=PARTITIONS)
    try:
        assert await fresh.recover() == 1
        assert await fresh.recover() == 0
        assert (await fresh.get_state(other)).data == b'{"id":"o","mi":"s"}'  # type: ignore[union-attr]
        assert await fresh.segment_sizes() == {}
        assert await fresh.due(6, 2_000_000_000.0, 10) == []
    finally:
        await fresh.close()
