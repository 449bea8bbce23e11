"""The visitor hub: streams fed with the migrations the real processor produces.

States and migrations come from :func:`process_batch` over a MemoryStore (tests/visitor_kit.py);
what each stream writes is parsed back from its Server-Sent Events text and compared with the
migrations themselves, never with the hub's own view.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from streams.api.visitor_hub import (
    HANDOVER_WAIT_S,
    MAX_QUEUED_FRAMES,
    VisitorHub,
    VisitorStream,
)
from streams.store.base import StoredState
from tests.visitor_kit import Shop, canadian, doc, frames, moves, order, received


async def test_a_stream_starts_with_a_snapshot_then_gets_each_migration_once() -> None:
    shop = Shop()
    await shop.send(canadian("m1", "u1"), order("m2", "u1", 20))
    stream = VisitorStream("u1")
    await shop.hub.open(stream, None)
    [(event, sequence, data)] = frames(stream)
    assert event == "snapshot"
    assert data == {"segments": shop.segments("u1"), "sequence": len(shop.of("u1"))}
    assert sequence == 2 and data["segments"] == ["buyer", "canadians"]

    new = await shop.send(order("m3", "u1", 1500))
    shop.feed(new)  # delivered twice (at-least-once), sent once
    got = frames(stream)
    assert received(got) == moves(shop.of("u1")[2:])
    assert [d["trigger"] for _, _, d in got] == ["event"] * len(got)
    assert all(d["time"] == "2026-01-01T10:00:00.000Z" for _, _, d in got)
    assert set(got[0][2]) == {"segment", "time", "trigger", "sequence"}  # no traits, no reasons
    await shop.send(canadian("m4", "u2"))  # another customer: nothing for u1
    assert frames(stream) == []


async def test_resume_sends_exactly_the_missed_migrations_in_order() -> None:
    shop = Shop()
    stream = VisitorStream("u2")
    await shop.hub.open(stream, None)
    assert frames(stream) == [("snapshot", 0, {"segments": [], "sequence": 0})]
    await shop.send(canadian("m1", "u2"))
    seen = frames(stream)
    assert received(seen) == moves(shop.of("u2"))
    shop.hub.close(stream)
    last = seen[-1][1]

    await shop.send(order("m2", "u2", 20), order("m3", "u2", 1500))
    later = shop.of("u2")[last:]
    assert len(later) >= 2

    again = VisitorStream("u2")
    read = shop.store.get_state

    async def racing_read(customer: str) -> StoredState | None:
        """Migrations committed and delivered while the state is read: one before the read
        (so in the state), one after (so not)."""
        await shop.send(doc("identify", "m4", "u2", traits={"address": {"country": "US"}}))
        found = await read(customer)
        await shop.send(canadian("m5", "u2"))
        return found

    shop.store.get_state = racing_read  # type: ignore[method-assign]
    await shop.hub.open(again, last)
    shop.store.get_state = read  # type: ignore[method-assign]
    got = frames(again)
    assert len(shop.of("u2")) == len(later) + last + 2
    assert received(got) == moves(shop.of("u2")[last:])  # the missed ones and the racing ones
    assert [i for _, i, _ in got] == list(range(last + 1, len(shop.of("u2")) + 1))


async def test_resume_beyond_what_the_hub_holds_gets_a_snapshot() -> None:
    shop = Shop(visitor_resume_depth=2)
    first = VisitorStream("u3")
    await shop.hub.open(first, None)
    frames(first)
    shop.hub.close(first)
    await shop.send(canadian("m1", "u3"), order("m2", "u3", 20), order("m3", "u3", 1500))
    total = len(shop.of("u3"))
    assert total > 2
    for resume in (0, total + 5):  # too far back for a depth of 2; ahead of the customer
        stream = VisitorStream("u3")
        await shop.hub.open(stream, resume)
        snapshot = {"segments": shop.segments("u3"), "sequence": total}
        assert frames(stream) == [("snapshot", total, snapshot)]
        shop.hub.close(stream)
    stream = VisitorStream("u3")
    await shop.hub.open(stream, total)  # nothing missed: nothing sent
    assert frames(stream) == []

    fresh = VisitorHub(shop.settings, shop.store)  # another API process: holds nothing
    stream = VisitorStream("u3")
    await fresh.open(stream, total - 1)
    assert frames(stream)[0][0] == "snapshot"


async def wait_for_frames(stream: VisitorStream, count: int) -> list[tuple[str, int, Any]]:
    got: list[tuple[str, int, Any]] = []
    for _ in range(200):
        got += frames(stream)
        if len(got) >= count:
            return got
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {got}")


async def watched_canadian(shop: Shop, anonymous: str, *more: dict[str, Any]) -> VisitorStream:
    """An anonymous visitor from Canada (with ``more`` of their events), and a stream open on
    them (its snapshot not taken off)."""
    canada = {"address": {"country": "CA"}}
    await shop.send(doc("identify", "m1", anonymousId=anonymous, traits=canada), *more)
    stream = VisitorStream(anonymous)
    await shop.hub.open(stream, None)
    return stream


async def test_an_anonymous_visitor_merged_away_follows_the_survivor() -> None:
    shop = Shop()
    stream = await watched_canadian(shop, "anon-1")
    assert frames(stream) == [("snapshot", 1, {"segments": ["canadians"], "sequence": 1})]

    await shop.send(doc("alias", "m2", "u9", previousId="anon-1"))
    exits = shop.of("anon-1")[1:]
    assert [m["trigger"]["kind"] for m in exits] == ["merge"]
    got = await wait_for_frames(stream, 2)
    assert received(got[:1]) == moves(exits)
    survivor = {"segments": shop.segments("u9"), "sequence": len(shop.of("u9"))}
    assert got[1] == ("snapshot", survivor["sequence"], survivor)
    assert survivor["segments"] == ["canadians"]

    await shop.send(order("m3", "u9", 20))
    assert received(frames(stream)) == moves(shop.of("u9")[survivor["sequence"] :])
    shop.hub.close(stream)
    again = VisitorStream("anon-1")  # the old token resumes under the survivor, as a snapshot
    await shop.hub.open(again, 2)
    survivor = {"segments": shop.segments("u9"), "sequence": len(shop.of("u9"))}
    assert frames(again) == [("snapshot", survivor["sequence"], survivor)]


async def test_a_merge_that_moves_no_membership_is_found_by_the_sweep() -> None:
    shop = Shop()
    stream = VisitorStream("anon-2")  # no profile yet: its merge publishes nothing of its own
    await shop.hub.open(stream, None)
    frames(stream)
    await shop.send(doc("alias", "m1", "u8", previousId="anon-2"))
    assert shop.of("anon-2") == []
    await shop.hub.sweep()
    assert stream.following == "u8"
    await shop.send(order("m2", "u8", 20))
    got = frames(stream)
    assert got[0] == ("snapshot", 0, {"segments": [], "sequence": 0})
    assert received(got[1:]) == moves(shop.of("u8"))


async def test_recent_migrations_expire_and_slow_readers_are_cut_off() -> None:
    shop = Shop(visitor_resume_s=60)
    stream = VisitorStream("u4")
    await shop.hub.open(stream, None)
    shop.hub.close(stream)
    assert "u4" in shop.hub.recent and shop.hub.count == 0
    shop.hub.expire(shop.hub.released["u4"] + 30)
    assert "u4" in shop.hub.recent
    shop.hub.expire(shop.hub.released["u4"] + 61)
    assert "u4" not in shop.hub.recent and "u4" not in shop.hub.released

    slow = VisitorStream("u5")
    aborted: list[bool] = []
    slow.abort = lambda: aborted.append(True)
    await shop.hub.open(slow, None)
    for _ in range(MAX_QUEUED_FRAMES + 1):
        shop.hub.heartbeat()
    assert slow.closed and aborted == [True]
    assert await slow.next_frames() is None


async def settle_tasks() -> None:
    """Let the hub's spawned tasks (merge checks, moves) run to their end."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize("survivor_first", [True, False])
async def test_the_exits_come_before_the_survivors_snapshot_whatever_reaches_the_process_first(
    survivor_first: bool,
) -> None:
    """The two profiles' migrations are on different partitions: the survivor's may reach the
    process first, or the merged-away profile's exits, one fetch at a time."""
    shop = Shop()
    stream = await watched_canadian(shop, "anon-3", order("m2", "anon-3", 20))
    [(_, before, _)] = frames(stream)
    found = await shop.apply(doc("alias", "m3", "u7", previousId="anon-3"))
    exits = [[e] for e in found if e.key == b"anon-3"]
    of_survivor = [e for e in found if e.key == b"u7"]
    assert len(exits) == 2 and of_survivor
    for fetch in [of_survivor, *exits] if survivor_first else [*exits, of_survivor]:
        shop.feed(fetch)
        await settle_tasks()
    got = frames(stream)
    assert received(got[:-1]) == moves(shop.of("anon-3")[before:])
    survivor = {"segments": shop.segments("u7"), "sequence": len(shop.of("u7"))}
    assert got[-1] == ("snapshot", survivor["sequence"], survivor)
    assert stream.following == "u7"
    await shop.send(order("m4", "u7", 1500))
    assert received(frames(stream)) == moves(shop.of("u7")[survivor["sequence"] :])


async def test_a_stream_whose_exits_never_come_moves_at_the_sweep_after_the_wait() -> None:
    shop = Shop()
    stream = await watched_canadian(shop, "anon-4")
    frames(stream)
    found = await shop.apply(doc("alias", "m2", "u6", previousId="anon-4"))
    shop.feed([e for e in found if e.key == b"u6"])  # the exits are never delivered
    await settle_tasks()
    await shop.hub.sweep()
    assert stream.following == "anon-4" and frames(stream) == []
    assert stream.handover is not None
    stream.handover = replace(stream.handover, since=stream.handover.since - HANDOVER_WAIT_S)
    await shop.hub.sweep()
    survivor = {"segments": shop.segments("u6"), "sequence": len(shop.of("u6"))}
    assert stream.following == "u6"
    assert frames(stream) == [("snapshot", survivor["sequence"], survivor)]
