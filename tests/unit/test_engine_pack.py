"""The default rule pack (rules/) on hand-made customers."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import get_args

import pytest

from streams.engine import RuleSet, load_rules
from streams.engine.model import Kind
from tests.unit.fakes_facts import DAY, NOW, Ev, FakeFacts

HOUR = 3600.0
KINDS = set(get_args(Kind))


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    return load_rules(Path(__file__).resolve().parents[2] / "rules")


def orders(*days_ago_and_revenue: tuple[float, float]) -> list[Ev]:
    return [Ev("Order Completed", NOW - d * DAY, {"revenue": r}) for d, r in days_ago_and_revenue]


def customer(pack: RuleSet, events: list[Ev], **traits: object) -> FakeFacts:
    done = [e for e in events if e.name == "Order Completed"]
    metrics: dict[str, float | None] = {
        "orders": float(len(done)),
        "revenue": float(sum(e.props["revenue"] for e in done)),
        "first_seen": min((e.ts for e in events), default=None),
    }
    return FakeFacts.of(pack, traits=traits, events=events, metrics=metrics)


def test_pack_has_every_kind_and_both_families(pack: RuleSet) -> None:
    assert {s.kind for s in pack.segments} == KINDS
    assert pack.families["value_tier"] == ("vip", "high_value", "mid_value")
    assert set(pack.families["lifecycle"]) == {
        "new_customer",
        "active",
        "at_risk",
        "lapsed",
        "prospect",
    }
    assert set(pack.families["rfm"]) == {
        "rfm_champions",
        "rfm_loyal",
        "rfm_potential_loyalist",
        "rfm_new",
        "rfm_promising",
        "rfm_need_attention",
        "rfm_about_to_sleep",
        "rfm_at_risk",
        "rfm_cannot_lose",
        "rfm_hibernating",
        "rfm_lost",
    }
    assert pack.families["predicted_value_tier"] == (
        "predicted_high",
        "predicted_medium",
        "predicted_low",
    )
    assert all(pack.segment(s).kind == "rfm" for s in pack.families["rfm"])
    assert all(s.name and s.description for s in pack.segments)
    assert pack.rfm is not None and pack.rfm.live is False


def test_lapsed_high_value_customer(pack: RuleSet) -> None:
    facts = customer(pack, orders((100, 700), (200, 500)))
    result = pack.evaluate(facts)
    # R: 100 days -> 2, F: 2 orders -> 2; no model fitted: no predicted value tier
    assert result.members == {"high_value", "lapsed", "rfm_hibernating"}
    assert result.primary == "high_value"
    reason = pack.explain(facts)["lapsed"].reason
    assert reason.rule == "lifetime orders >= 1 and no Order Completed within 90d"
    assert reason.values == {"orders": 2.0, "days_since_last(Order Completed)": 100.0}


def test_new_young_north_american_customer(pack: RuleSet) -> None:
    facts = customer(pack, orders((5, 150)), age=20, address={"country": "US", "city": "Boston"})
    result = pack.evaluate(facts)
    assert result.members == {
        "young_adults",
        "north_america",
        "mid_value",
        "new_customer",
        "rfm_new",  # R 5 (5 days), F 1
    }
    assert result.holds["active"] is True  # displaced by new_customer in the lifecycle family
    assert result.primary == "new_customer"


def test_cart_abandoner_leaves_when_checkout_starts(pack: RuleSet) -> None:
    added = [Ev("Product Added", NOW - 2 * HOUR, {"price": 30, "category": "shoes"})]
    before = customer(pack, added)
    result = pack.evaluate(before)
    assert result.members == {"cart_abandoner", "prospect"}
    assert result.primary == "cart_abandoner"
    explained = pack.explain(before)["cart_abandoner"].reason
    assert explained.rule == (
        "added to cart over 1h ago (within 1d) and no checkout started within 1d"
    )
    assert explained.values["count(Product Added, 1d)"] == 1
    assert explained.values["days_since_last(Checkout Started)"] is None
    after = customer(pack, [*added, Ev("Checkout Started", NOW - 600)])
    new = pack.evaluate(after).members
    assert new == {"prospect"}
    [exit_] = pack.transitions(result.members, new, after)
    assert (exit_.segment, exit_.direction, exit_.to_segment) == ("cart_abandoner", "exited", None)
    # a checkout keeps the customer out: the next instant anything can change is when the add
    # leaves the 1-day window (FakeFacts windows are exact), before the checkout ages out
    assert pack.next_due(after) == NOW - 2 * HOUR + 24 * HOUR
    assert "cart_abandoner" not in pack.evaluate(after.at(NOW + 50 * 60)).members


def test_active_customer_becomes_at_risk_on_time(pack: RuleSet) -> None:
    facts = customer(pack, orders((50, 40), (120, 40), (300, 40)))
    steady = {"mid_value", "rfm_potential_loyalist"}
    assert pack.evaluate(facts).members == {"active", *steady}
    due = pack.next_due(facts)
    assert due == NOW + 10 * DAY
    later = facts.at(due)
    new = pack.evaluate(later).members
    assert new == {"at_risk", *steady}  # R drops to 3 only once 60 days are exceeded
    moves = pack.transitions({"active", *steady}, new, later)
    assert [(t.segment, t.direction, t.from_segment, t.to_segment) for t in moves] == [
        ("active", "exited", "active", "at_risk"),
        ("at_risk", "entered", "active", "at_risk"),
    ]
    assert moves[0].reason.rule == "moved to at_risk (higher priority in lifecycle)"


def test_champion_vip(pack: RuleSet) -> None:
    facts = customer(
        pack, orders((3, 2000), (20, 2000), (60, 2000)), survey={"lifestyle": "eco_conscious"}
    )
    result = pack.evaluate(facts)
    assert result.members == {
        "champions",
        "vip",
        "active",
        "luxury_seeker",
        "eco_conscious",
        "rfm_potential_loyalist",  # R 5, F 3
    }
    assert result.primary == "vip"
    reason = pack.explain(facts)["champions"].reason
    assert reason.values["sum(Order Completed.revenue, 90d)"] == 6000


def test_window_shopper_and_engagement(pack: RuleSet) -> None:
    views = [Ev("Product Viewed", NOW - i * HOUR) for i in range(12)]
    pages = [Ev("Page Viewed", NOW - i * DAY) for i in range(5)]
    emails = [Ev("Email Opened", NOW - i * DAY) for i in range(3)] + [
        Ev("Email Link Clicked", NOW - DAY)
    ]
    facts = FakeFacts.of(
        pack, events=[*views, *pages, *emails], traits={"company": {"employee_count": 5000}}
    )
    result = pack.evaluate(facts)
    assert result.members == {
        "window_shopper",
        "frequent_visitor",
        "engaged_email_reader",
        "enterprise_accounts",
        "prospect",
    }
    assert result.primary == "engaged_email_reader"


def test_needs_and_firmographics(pack: RuleSet) -> None:
    facts = customer(
        pack,
        [],
        survey={"primary_need": "support", "lifestyle": "bargain_hunter"},
        company={"employee_count": 40},
    )
    assert pack.evaluate(facts).members == {
        "support_seeker",
        "price_sensitive",
        "smb_accounts",
        "prospect",
    }


def test_email_reactivation_needs_marketing_consent(pack: RuleSet) -> None:
    history = orders((100, 50))
    without = customer(pack, history)
    assert "lapsed" in pack.evaluate(without).members
    assert "email_reactivation" not in pack.evaluate(without).members
    reason = pack.explain(without)["email_reactivation"].reason
    assert reason.rule == "no marketing consent"
    assert reason.values == {"consent.marketing": None}
    refused = customer(pack, history, consent={"marketing": False})
    assert "email_reactivation" not in pack.evaluate(refused).members
    given = customer(pack, history, consent={"marketing": True})
    assert "email_reactivation" in pack.evaluate(given).members
    info = pack.segment("email_reactivation")
    assert (info.requires_consent, info.min_dwell_s) == ("marketing", 14 * DAY)


def test_cart_abandoner_has_a_ten_percent_holdout(pack: RuleSet) -> None:
    assert pack.segment("cart_abandoner").holdout_percent == 10
    ids = [f"c{i}" for i in range(2000)]
    share = sum(pack.is_holdout(c, "cart_abandoner") for c in ids) / len(ids)
    assert 0.07 < share < 0.13
    assert not any(pack.is_holdout(c, "vip") for c in ids)


@dataclass(frozen=True)
class Fitted(FakeFacts):
    """Facts with a fitted model whose one-year CLV is ``clv`` (None: no model)."""

    clv: float | None = None

    def prediction(
        self, metric: str, horizon_s: float | None, at: float | None = None
    ) -> float | None:
        return self.clv if metric == "clv" else None


def tier(pack: RuleSet, clv: float | None, was: str | None = None) -> set[str]:
    base = customer(pack, orders((5, 150)))
    facts = Fitted(**{f.name: getattr(base, f.name) for f in fields(base)}, clv=clv)
    if was is not None:
        facts = replace(facts, members={was: NOW - DAY})
    return set(pack.evaluate(facts).members) & set(pack.families["predicted_value_tier"])


def test_value_tiers_follow_the_fitted_clv_with_hysteresis(pack: RuleSet) -> None:
    assert tier(pack, None) == set(), "no model: the tiers stay empty"
    assert tier(pack, 2500.0) == {"predicted_high"}
    assert tier(pack, 1900.0) == {"predicted_medium"}, "1900 does not enter high"
    assert tier(pack, 1900.0, was="predicted_high") == {"predicted_high"}, "but stays there"
    assert tier(pack, 1700.0, was="predicted_high") == {"predicted_medium"}
    assert tier(pack, 480.0, was="predicted_medium") == {"predicted_medium"}
    assert tier(pack, 480.0) == {"predicted_low"}
    assert tier(pack, 12.0) == {"predicted_low"}
