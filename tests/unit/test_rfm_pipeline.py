"""RFM from the pipeline equals an independent pandas computation on the same history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd

from streams.engine import load_rules
from streams.generate.personas import history
from streams.pipeline.processor import PipelineContext, Record, process_batch
from streams.settings import Settings
from streams.state.customer import CustomerState
from streams.store.memory import MemoryStore
from tests.kit import CONTROL_SECRET, memory_store
from tests.kit import control as signed

PACK = load_rules(Path(__file__).resolve().parents[2] / "rules")
DAY = 86400.0
# The named map of rules/rfm_segments.yaml, written out independently: (R range, F range).
NAMED = {
    "rfm_champions": ((5, 5), (4, 5)),
    "rfm_loyal": ((3, 4), (4, 5)),
    "rfm_cannot_lose": ((1, 2), (5, 5)),
    "rfm_potential_loyalist": ((4, 5), (2, 3)),
    "rfm_at_risk": ((1, 2), (3, 4)),
    "rfm_new": ((5, 5), (1, 1)),
    "rfm_promising": ((4, 4), (1, 1)),
    "rfm_need_attention": ((3, 3), (3, 3)),
    "rfm_about_to_sleep": ((3, 3), (1, 2)),
    "rfm_hibernating": ((2, 2), (1, 2)),
    "rfm_lost": ((1, 1), (1, 2)),
}


def named(r: int, f: int) -> str:
    (found,) = [n for n, ((r0, r1), (f0, f1)) in NAMED.items() if r0 <= r <= r1 and f0 <= f <= f1]
    return found


def expected_scores(events: list[dict], end: float) -> pd.DataFrame:
    """R, F, M per customer with pandas, from the raw events (fixed cut points of rfm.yaml)."""
    frame = pd.DataFrame(events)
    for column in ("userId", "anonymousId"):
        if column not in frame:
            frame[column] = None
    merged = frame[
        (frame["type"] == "identify") & frame["anonymousId"].notna() & frame["userId"].notna()
    ]
    alias = dict(zip(merged["anonymousId"], merged["userId"], strict=True))
    frame["customer"] = frame["userId"].fillna(frame["anonymousId"]).map(lambda c: alias.get(c, c))
    orders = frame[(frame["type"] == "track") & (frame["event"] == "Order Completed")].copy()
    orders["ts"] = pd.to_datetime(orders["timestamp"], utc=True).map(lambda t: t.timestamp())
    orders["amount"] = orders["properties"].map(lambda p: p.get("revenue", p.get("total", 0.0)))
    per = orders.groupby("customer").agg(last=("ts", "max"), f=("ts", "size"), m=("amount", "sum"))
    inf = float("inf")
    days = (end - per["last"]) / DAY
    per["R"] = pd.cut(days, [-inf, 30, 60, 90, 180, inf], labels=[5, 4, 3, 2, 1]).astype(int)
    per["F"] = pd.cut(per["f"], [-inf, 1, 2, 3, 5, inf], labels=[1, 2, 3, 4, 5]).astype(int)
    per["M"] = pd.cut(per["m"], [-inf, 100, 250, 500, 1000, inf], labels=[1, 2, 3, 4, 5]).astype(
        int
    )
    per["segment"] = [named(r, f) for r, f in zip(per["R"], per["F"], strict=True)]
    return per


async def test_rfm_segments_match_pandas() -> None:
    events = history(11, 30, days=200, start=datetime(2026, 1, 1, tzinfo=UTC))
    settings = Settings(clock="event", idle_settle_s=0, control_secret=CONTROL_SECRET)
    ctx = PipelineContext.create(settings, PACK, MemoryStore(), 1)
    records = [
        Record("segmenter.events", 0, i, None, orjson.dumps(e)) for i, e in enumerate(events)
    ]
    for start in range(0, len(records), 500):
        await process_batch(ctx, records[start : start + 500])
    end = max(datetime.fromisoformat(e["timestamp"]).timestamp() for e in events)
    value, headers = signed(end)
    control = Record("segmenter.events", 0, len(records), None, value, headers)
    await process_batch(ctx, [control])

    expected = expected_scores(events, end)
    store = memory_store(ctx)
    got: dict[str, str] = {}
    for cid, stored in store.states.items():
        state = CustomerState.from_json(stored.data)
        rfm = [s for s in state.members if s.startswith("rfm_")]
        assert len(rfm) <= 1, "a family never holds a customer twice"
        if state.merged_into is None and rfm:
            got[cid] = rfm[0]
    assert len(expected) >= 20, "the history must have buyers"
    assert got == expected["segment"].to_dict()
    assert len(set(got.values())) >= 4, "the history should spread over the map"
