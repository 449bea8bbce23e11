"""The synthetic customers: deterministic, valid Segment events, every habit and trait kind."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.events.models import EVENT_ADAPTER, IdentifyEvent
from streams.generate.personas import PERSONAS, Generator, customer_key, history
from streams.generate.runner import resolve_bootstrap
from streams.settings import Settings

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
START = datetime(2025, 6, 1, tzinfo=UTC)


def live(seed: int, customers: int, n: int) -> list[dict[str, Any]]:
    gen = Generator(seed=seed, customers=customers)
    return [gen.next_event(NOW + timedelta(seconds=i)) for i in range(n)]


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    return live(seed=7, customers=300, n=6000)


@pytest.fixture(scope="module")
def hist() -> list[dict[str, Any]]:
    return history(seed=3, customers=60, days=180, start=START)


def names(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["event"] if e["type"] == "track" else e["type"] for e in events)


def test_same_seed_same_events() -> None:
    assert live(5, 100, 800) == live(5, 100, 800)
    assert history(9, 20, 30, START) == history(9, 20, 30, START)


def test_different_seed_different_events() -> None:
    first, second = live(5, 100, 200), live(6, 100, 200)
    assert [e["messageId"] for e in first] != [e["messageId"] for e in second]
    assert {e["messageId"] for e in first}.isdisjoint(e["messageId"] for e in second)


def test_every_event_validates_and_ids_are_unique(
    sample: list[dict[str, Any]], hist: list[dict[str, Any]]
) -> None:
    for event in sample + hist:
        parsed = EVENT_ADAPTER.validate_python(event)
        assert parsed.customer_id == customer_key(event)
        assert parsed.timestamp.utcoffset() is not None
    ids = [e["messageId"] for e in sample + hist]
    assert len(ids) == len(set(ids))


def test_live_events_are_stamped_now(sample: list[dict[str, Any]]) -> None:
    assert sample[0]["timestamp"] == "2026-01-01T10:00:00.000Z"
    assert sample[10]["timestamp"] == "2026-01-01T10:00:10.000Z"


def test_persona_mix_produces_every_behavior(sample: list[dict[str, Any]]) -> None:
    counts = names(sample)
    for name in (
        "page",
        "identify",
        "group",
        "consent",
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
        "Email Opened",
        "Email Link Clicked",
    ):
        assert counts[name] > 0, name
    assert counts["page"] > counts["Order Completed"]
    assert counts["Checkout Started"] > counts["Order Completed"]  # carts get abandoned
    assert any("anonymousId" in e and "userId" not in e for e in sample)
    consents = {e["categoryPreferences"]["marketing"] for e in sample if e["type"] == "consent"}
    assert consents == {True, False}


def test_orders_and_products_carry_the_ecommerce_properties(sample: list[dict[str, Any]]) -> None:
    orders = [e for e in sample if e.get("event") == "Order Completed"]
    for order in orders:
        props = order["properties"]
        assert set(props) >= {"order_id", "revenue", "total", "currency", "category"}
        assert props["currency"] == "USD" and props["revenue"] > 0
    assert len({o["properties"]["order_id"] for o in orders}) == len(orders)
    assert max(o["properties"]["revenue"] for o in orders) >= 1000  # VIPs and B2B spend big
    for event in sample:
        if event.get("event") in ("Product Viewed", "Product Added"):
            assert {"product_id", "price", "category"} <= set(event["properties"])


def test_traits_of_every_kind(sample: list[dict[str, Any]]) -> None:
    identifies = [IdentifyEvent.model_validate(e) for e in sample if e["type"] == "identify"]
    assert identifies
    countries, plans, lifestyles, needs, industries = set(), set(), set(), set(), set()
    for ev in identifies:
        t = ev.traits
        assert isinstance(t["age"], int) and 18 <= t["age"] <= 80
        assert t["gender"]
        assert t["address"]["city"]
        countries.add(t["address"]["country"])
        plans.add(t["plan"])
        lifestyles.add(t["survey"]["lifestyle"])
        needs.add(t["survey"]["primary_need"])
        if "company" in t:
            assert t["company"]["employee_count"] > 0
            industries.add(t["company"]["industry"])
    assert countries == {"CA", "US", "GB", "FR", "DE"}
    assert plans == {"free", "pro", "enterprise"}
    assert lifestyles == {"eco_conscious", "luxury", "bargain_hunter", "adventurer"}
    assert needs == {"price", "quality", "convenience", "support"}
    assert len(industries) >= 2
    groups = [e for e in sample if e["type"] == "group"]
    assert groups and all(
        {"name", "employee_count", "industry"} <= set(g["traits"]) for g in groups
    )


def test_identify_comes_first_for_each_known_customer(sample: list[dict[str, Any]]) -> None:
    first: dict[str, str] = {}
    for event in sample:
        if "userId" in event:
            first.setdefault(event["userId"], event["type"])
    assert first and set(first.values()) == {"identify"}


def test_average_size(sample: list[dict[str, Any]]) -> None:
    sizes = [len(orjson.dumps(e)) for e in sample]
    assert 200 <= sum(sizes) / len(sizes) <= 450
    assert max(sizes) < 2048


def test_history_is_ordered_and_spans_the_days(hist: list[dict[str, Any]]) -> None:
    times = [datetime.fromisoformat(e["timestamp"]) for e in hist]
    assert times == sorted(times)
    assert START <= times[0] < START + timedelta(days=18)
    assert START + timedelta(days=170) <= times[-1] < START + timedelta(days=180)
    assert len({customer_key(e) for e in hist}) == 60


def test_history_has_customers_who_stop_buying(hist: list[dict[str, Any]]) -> None:
    last_order: dict[str, datetime] = {}
    for event in hist:
        if event.get("event") == "Order Completed":
            last_order[customer_key(event)] = datetime.fromisoformat(event["timestamp"])
    end = START + timedelta(days=180)
    lapsed = [c for c, t in last_order.items() if end - t > timedelta(days=90)]
    recent = [c for c, t in last_order.items() if end - t < timedelta(days=30)]
    assert lapsed, "some customers buy and then stop for months"
    assert recent, "others keep buying"


def test_every_customer_is_introduced_before_acting(hist: list[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for event in hist:
        if "userId" in event:
            seen.setdefault(event["userId"], event["type"])
    assert set(seen.values()) == {"identify"}


def test_personas_are_distinct() -> None:
    assert len({p.name for p in PERSONAS}) == len(PERSONAS) >= 7
    assert any(p.b2b for p in PERSONAS)
    assert any(p.churn_after_days for p in PERSONAS)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Generator(seed=1, customers=0)
    with pytest.raises(ValueError):
        history(1, 5, 10, datetime(2026, 1, 1))


def test_bootstrap_from_settings_or_stack_file(tmp_path: Path) -> None:
    assert resolve_bootstrap(Settings(kafka_bootstrap="k:1", state_dir=tmp_path)) == "k:1"
    settings = Settings(kafka_bootstrap=None, state_dir=tmp_path)
    assert resolve_bootstrap(settings) is None
    (tmp_path / "stack.json").write_bytes(orjson.dumps({"kafka_bootstrap": "127.0.0.1:9"}))
    assert resolve_bootstrap(settings) == "127.0.0.1:9"
    (tmp_path / "stack.json").write_text("not json")
    assert resolve_bootstrap(settings) is None


async def test_run_generate_without_a_broker_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.generate.runner import run_generate

    settings = Settings(kafka_bootstrap=None, state_dir=tmp_path)
    assert await run_generate(settings, rate=10, customers=5, duration=1, seed=1) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SEGMENTER_KAFKA_BOOTSTRAP" in err[0]
    assert await run_generate(settings, rate=0, customers=5, duration=1, seed=1) == 1
