"""The Quix Streams peer's segment logic, and the (g) figures of ``segmenter bench --peer``.

``peer_app.step`` is what the peer runs per message; it must compute the same five segments as
the bench's peer pack, judged at each event's time (the peer has no timers). It is compared with
plain Python over the whole event list (``tests/exact_model.members``, the same definitions).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.benchmarks.common import Throughput
from streams.benchmarks.peer import PEER_RULES
from streams.benchmarks.peer_app import step
from streams.benchmarks.report import PEER_ROWS, peer_results
from streams.engine import load_rules
from tests.exact_model import ORDER, Event, members, ms

PEER_SEGMENTS = {"repeat_buyer", "big_spender", "recent_buyer", "lapsed", "frequent_buyer"}


def test_the_peer_pack_has_the_five_segments_the_peer_computes() -> None:
    assert {info.id for info in load_rules(PEER_RULES).segments} == PEER_SEGMENTS


def _docs(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    docs = []
    for n in range(40):
        at += timedelta(days=rng.choice((0, 1, 7, 29, 30, 31, 89, 90, 91)))
        kind = rng.choice(("order", "order", "page", "identify"))
        stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        base = {"messageId": f"m{n}", "userId": "u", "timestamp": stamp}
        if kind == "order":
            docs.append({**base, "type": "track", "event": ORDER, "properties": {"revenue": 70}})
        elif kind == "page":
            docs.append({**base, "type": "page", "name": "Home"})
        else:
            docs.append({**base, "type": "identify", "traits": {"plan": "pro"}})
    return docs


def test_the_peer_computes_the_pack_at_every_event() -> None:
    for seed in range(20):
        state: dict[str, Any] = {}
        seen: list[Event] = []
        current: list[str] = []
        for doc in _docs(seed):
            now = ms(doc["timestamp"])
            if doc["type"] == "track":
                seen.append(Event(now, ORDER, 70.0))
            changed, _dirty = step(state, doc)
            if changed is not None:
                current = changed
            want = members(seen, now) & PEER_SEGMENTS
            assert set(current) == want, (seed, doc["timestamp"])


def test_the_peer_reports_no_change_and_writes_nothing_for_a_quiet_event() -> None:
    state: dict[str, Any] = {}
    order = {
        "type": "track",
        "event": ORDER,
        "timestamp": "2026-01-01T00:00:00Z",
        "properties": {"revenue": 250},
    }
    assert step(state, order) == (["big_spender", "recent_buyer"], True)
    page = {"type": "page", "timestamp": "2026-01-02T00:00:00Z"}
    assert step(state, page) == (None, False)


def test_peer_figures_and_ratios() -> None:
    figures = peer_results(Throughput(10_000.0, 50.0), Throughput(40_000.0, 25.0))
    assert figures["peer_cpu_ratio"] == 0.5, "peer CPU / worker CPU: below 1, the peer is leaner"
    assert figures["peer_throughput_ratio"] == 0.25
    assert {key for _label, key, _unit in PEER_ROWS} <= set(figures)


def test_peer_without_quix_streams_exits_2_with_the_install_command(
    monkeypatch: Any, capsys: Any
) -> None:
    from streams import bench

    monkeypatch.setattr(bench, "peer_available", lambda: False)
    assert bench.run_bench(bench.Settings(), as_json=False, phases=bench.Phases(peer=True)) == 2
    assert "pip install -e '.[bench]'" in capsys.readouterr().err


def test_an_event_that_arrives_late_does_not_drop_a_later_order() -> None:
    state: dict[str, Any] = {}
    order = {"type": "track", "event": ORDER, "timestamp": "2026-03-10T00:00:00Z"}
    assert step(state, order) == (["recent_buyer"], True)
    late = {"type": "page", "timestamp": "2026-03-01T00:00:00Z"}
    assert step(state, late) == (None, False), "judged at the order, not before it"
    late_order = {**order, "timestamp": "2026-01-01T00:00:00Z"}
    assert step(state, late_order) == (["repeat_buyer", "recent_buyer"], True)
    assert state["recent"] == [ms("2026-03-10T00:00:00Z"), ms("2026-01-01T00:00:00Z")]
    lapse = {"type": "page", "timestamp": "2026-06-08T00:00:00Z"}
    assert step(state, lapse) == (["repeat_buyer", "lapsed"], True)


def test_the_peer_reads_revenue_like_the_worker() -> None:
    def revenue(props: dict[str, Any]) -> float:
        state: dict[str, Any] = {}
        step(
            state,
            {
                "type": "track",
                "event": ORDER,
                "timestamp": "2026-01-01T00:00:00Z",
                "properties": props,
            },
        )
        return float(state["revenue"])

    assert revenue({"revenue": 250, "total": 1}) == 250.0
    assert revenue({"total": 120.5}) == 120.5
    assert revenue({"revenue": None, "total": 30}) == 30.0
    assert revenue({"revenue": True}) == 0.0
    assert revenue({}) == 0.0
