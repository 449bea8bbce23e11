"""Segment intelligence on the real broker and Redis, against an independent computation.

A worker processes a generated history; then the size history, the overlap matrix, the
performance figures (with their tests) and the report are read through the HTTP API and
compared with what plain Python, pandas and SciPy compute from the input events and the
migrations the worker emitted.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import subprocess
import sys
import time
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from aiohttp.test_utils import TestClient, TestServer
from scipy import stats

from streams.api.http import HttpServer
from streams.engine import load_rules
from streams.pipeline.metrics import Metrics
from streams.settings import Settings
from streams.stack.children import Child
from streams.store.redis_store import RedisStore
from tests.integration.harness import Deployment, consume_until, event, keyed, produce, write_rules

pytestmark = pytest.mark.integration
DAY = 86400.0
NOW = time.time()
CUSTOMERS = 300
RULES = {
    "buyer.yaml": """
id: buyer
name: Buyer
description: ordered at least once
kind: behavioral
holdout_percent: 30
condition: {type: lifetime, metric: orders, op: ge, value: 1}
""",
    "big.yaml": """
id: big
name: Big
description: revenue of 500 or more
kind: value
condition: {type: lifetime, metric: revenue, op: ge, value: 500}
""",
    "canadians.yaml": """
id: canadians
name: Canadians
description: lives in Canada
kind: demographic
condition: {type: trait, path: address.country, op: eq, value: CA}
""",
    "performance.yaml": """
performance: {conversion_event: Order Completed, value_property: revenue, window_days: 60}
""",
}
# Days ago of each order: never within a day of the 30-day window's edge.
ORDER_DAYS = [3, 9, 21, 27, 34, 41, 48, 55]


def stamp(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def history_events() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The input, and the orders as rows (customer, time, revenue) for the reference."""
    docs: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    for c in range(CUSTOMERS):
        user = f"a{c:03d}"
        start = NOW - 58 * DAY - (c % 20) * 3600
        traits: dict[str, Any] = {"address": {"country": "CA" if c % 3 == 0 else "US"}}
        if c % 4 != 0:
            traits["email"] = f"a{c}@example.com"
        docs.append(event("identify", f"id-{user}", user, stamp(start), traits=traits))
        if c % 2 == 0:
            prefs = {"marketing": True}
            docs.append(
                event("consent", f"co-{user}", user, stamp(start + 60), categoryPreferences=prefs)
            )
        for j in range(c % 5):
            at = NOW - ORDER_DAYS[(c + 3 * j) % len(ORDER_DAYS)] * DAY - (c % 7) * 3600
            revenue = float(40 + (c * 37 + j * 91) % 400)
            props = {"revenue": revenue}
            docs.append(
                event(
                    "track",
                    f"o-{user}-{j}",
                    user,
                    stamp(at),
                    event="Order Completed",
                    properties=props,
                )
            )
            orders.append({"customer": user, "time": round(at, 3), "revenue": revenue})
    docs.sort(key=lambda d: d["timestamp"])
    return docs, orders


def settled(deployment: Deployment, worker: Child) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        wanted = max(1, len(seen))
        records = asyncio.run(
            consume_until(
                deployment.kafka,
                deployment.migrations,
                lambda r, wanted=wanted: len(r) >= wanted,
                settle=1.5,
                worker=worker,
            )
        )
        now = [
            {**orjson.loads(r.value), "time": dict(r.headers)["ce_time"].decode()} for r in records
        ]
        if len(now) == len(seen):
            return now
        seen = now


def not_different(
    segment: str, other: str | None, final: dict[str, set[str]], recent: pd.DataFrame
) -> bool:
    """The report's second test: conversion not different from the most similar segment's."""
    if other is None:
        return False
    a, b = final.get(segment, set()), final.get(other, set())
    if len(a) < 30 or len(b) < 30:
        return False
    x1, x2 = sum(c in recent.index for c in a), sum(c in recent.index for c in b)
    p1, p2 = x1 / len(a), x2 / len(b)
    pooled = (x1 + x2) / (len(a) + len(b))
    se = math.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)))
    if se == 0:
        return p1 == p2
    return bool(2 * stats.norm.sf(abs(p1 - p2) / se) >= 0.05)


def holdout(customer: str, segment: str, percent: float) -> bool:
    digest = hashlib.sha256(f"{segment}:{customer}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100 < percent


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_history_overlap_performance_and_report_match_an_independent_computation(
    deployment: Deployment, tmp_path: Path
) -> None:
    deployment.rules = write_rules(tmp_path / "analytics-rules", RULES)
    asyncio.run(deployment.create_topics())
    docs, orders = history_events()
    worker = deployment.worker()
    try:
        asyncio.run(produce(deployment.kafka, deployment.input, keyed(docs)))
        migrations = settled(deployment, worker)
    finally:
        worker.stop()
    moves = pd.DataFrame(migrations)
    assert len(moves) > CUSTOMERS
    final: dict[str, set[str]] = {}
    for m in migrations:
        members = final.setdefault(m["segment"], set())
        (members.add if m["direction"] == "entered" else members.discard)(m["customer_id"])

    settings = Settings(redis_url=deployment.redis, namespace=deployment.prefix)
    rules = load_rules(deployment.rules)
    body = asyncio.run(api_calls(settings, rules))

    # -- size history: per hour, from the migrations ------------------------------------------
    moves["hour"] = moves["time"].map(lambda t: int(epoch(t) // 3600))
    hours = range(moves["hour"].min(), moves["hour"].max() + 1)
    growth: dict[tuple[str, int], float | None] = {}
    for segment in ("buyer", "big", "canadians"):
        mine = moves[moves["segment"] == segment]
        came = mine[mine["direction"] == "entered"].groupby("hour").size()
        left = mine[mine["direction"] == "exited"].groupby("hour").size()
        size = 0
        expected = []
        for hour in hours:
            size += int(came.get(hour, 0)) - int(left.get(hour, 0))
            expected.append((hour * 3600, int(came.get(hour, 0)), int(left.get(hour, 0)), size))
        got = [
            (int(epoch(p["start"])), p["entered"], p["exited"], p["size"])
            for p in body["history"][segment]
        ]
        assert got == expected, segment
        assert size == len(final.get(segment, set()))
        by_hour = {hour: e[3] for hour, e in zip(hours, expected, strict=True)}
        for days in (7, 30):
            then = by_hour.get(hours[-1] - days * 24)
            growth[(segment, days)] = (size - then) / then if then else None
        days = body["history_days"][segment]
        assert [p["size"] for p in days][-1] == size
        assert sum(p["entered"] for p in days) == int(came.sum())

    # -- overlap: from the final memberships -----------------------------------------------------
    pairs = {(p["a"], p["b"]): p for p in body["overlap"]["pairs"]}
    for a, b in combinations(rules.ids, 2):
        both = len(final.get(a, set()) & final.get(b, set()))
        union = len(final.get(a, set()) | final.get(b, set()))
        assert pairs[(a, b)]["both"] == both
        assert pairs[(a, b)]["jaccard"] == pytest.approx(both / union if union else 0.0)

    # -- performance: conversions within 30 days, from the input -----------------------------
    frame = pd.DataFrame(orders)
    recent = (
        frame[NOW - frame["time"] < 30 * DAY].groupby("customer")["revenue"].agg(["count", "sum"])
    )
    everyone = [f"a{c:03d}" for c in range(CUSTOMERS)]

    def outcome(customers: list[str]) -> tuple[list[int], list[float]]:
        converted = [int(c in recent.index) for c in customers]
        value = [float(recent["sum"].get(c, 0.0)) for c in customers]
        return converted, value

    buyers = sorted(final["buyer"])
    groups = {
        "buyer": (
            [c for c in buyers if not holdout(c, "buyer", 30)],
            [c for c in buyers if holdout(c, "buyer", 30)],
            "holdout",
        ),
        "big": (
            sorted(final["big"]),
            [c for c in everyone if c not in final["big"]],
            "non_members",
        ),
    }
    for segment, (treated, control, name) in groups.items():
        perf = body["performance"][segment]
        assert perf["comparison_group"] == name
        x1, v1 = outcome(treated)
        x2, v2 = outcome(control)
        assert perf["members"]["customers"] == len(treated)
        assert perf["members"]["converted"] == sum(x1)
        assert perf["comparison"]["customers"] == len(control)
        assert perf["comparison"]["converted"] == sum(x2)
        p1, p2 = sum(x1) / len(x1), sum(x2) / len(x2)
        pooled = (sum(x1) + sum(x2)) / (len(x1) + len(x2))
        z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / len(x1) + 1 / len(x2)))
        se = math.sqrt(p1 * (1 - p1) / len(x1) + p2 * (1 - p2) / len(x2))
        rate = perf["rate"]
        assert rate["difference"] == pytest.approx(p1 - p2)
        assert rate["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)))
        assert rate["ci95"] == pytest.approx([p1 - p2 - 1.959964 * se, p1 - p2 + 1.959964 * se])
        assert rate["lift"] == pytest.approx(p1 / p2 - 1)
        welch = stats.ttest_ind(v1, v2, equal_var=False)
        value = perf["value"]
        assert value["difference"] == pytest.approx(sum(v1) / len(v1) - sum(v2) / len(v2))
        assert value["p_value"] == pytest.approx(welch.pvalue, rel=1e-6)
        low, high = welch.confidence_interval(0.95)
        assert value["ci95"] == pytest.approx([low, high], rel=1e-6)

    # -- report: shares, reach, overlap and flags ------------------------------------------------
    report = body["report"]
    assert report["customers"] == CUSTOMERS
    revenue = frame.groupby("customer")["revenue"].sum()
    total = float(revenue.sum())
    rows = {row["segment"]: row for row in report["segments"]}
    for segment in rules.ids:
        members = final.get(segment, set())
        row = rows[segment]
        assert row["size"] == len(members)
        assert row["share"] == pytest.approx(len(members) / CUSTOMERS)
        assert row["revenue_share"] == pytest.approx(
            float(revenue.reindex(list(members)).fillna(0).sum()) / total
        )
        reach = [c for c in members if int(c[1:]) % 2 == 0 and int(c[1:]) % 4 != 0]
        assert row["reach"] == pytest.approx(len(reach) / len(members))
        flags = {f["flag"] for f in row["flags"]}
        assert ("unreachable" in flags) == (len(reach) / len(members) < 0.3)
        assert ("too_large" in flags) == (len(members) / CUSTOMERS > 0.6)
        for days in (7, 30):
            assert row[f"growth_{days}d"] == pytest.approx(growth[(segment, days)])
    for segment in rules.ids:
        others = [
            (pairs[tuple(sorted((segment, o), key=list(rules.ids).index))]["jaccard"], o)
            for o in rules.ids
            if o != segment
        ]
        best = max((j, o) for j, o in others if j > 0) if any(j > 0 for j, _ in others) else None
        got = rows[segment]["largest_overlap"]
        if best is None:
            assert got is None
        else:
            assert got["segment"] == best[1] and got["jaccard"] == pytest.approx(best[0])
        flags = {f["flag"] for f in rows[segment]["flags"]}
        assert ("too_small" in flags) == (len(final.get(segment, set())) / CUSTOMERS < 0.02)
        too_alike = best is not None and best[0] > 0.8
        same_rate = not_different(segment, best[1] if best else None, final, recent)
        assert ("not_differentiable" in flags) == (too_alike or same_rate)
    in_any = set().union(*final.values())
    assert sum(row["primary_customers"] for row in report["segments"]) == len(in_any)
    assert report["active_primary_segments"] == sum(
        1 for row in report["segments"] if row["primary_customers"] > 0
    )
    assert (report["flags"] != []) == (report["active_primary_segments"] > 8)
    cli = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--json", "--window", "30d"],
        env=deployment.env(),
        capture_output=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr.decode()
    assert orjson.loads(cli.stdout) == report


async def api_calls(settings: Settings, rules: Any) -> dict[str, Any]:
    store = RedisStore.from_settings(settings)

    async def health() -> dict[str, Any]:
        return {"ok": True}

    server = HttpServer(settings, rules, store, Metrics(), health)
    found: dict[str, Any] = {"history": {}, "history_days": {}, "performance": {}}
    async with TestClient(TestServer(server.application())) as client:

        async def get(path: str, status: int = 200) -> Any:
            response = await client.get(path)
            assert response.status == status, await response.text()
            return await response.json()

        for segment in rules.ids:
            found["history"][segment] = (await get(f"/v1/segments/{segment}/history"))["points"]
            days = await get(f"/v1/segments/{segment}/history?granularity=day")
            found["history_days"][segment] = days["points"]
        found["overlap"] = await get("/v1/segments/overlap")
        for segment in ("buyer", "big"):
            found["performance"][segment] = await get(
                f"/v1/segments/{segment}/performance?window=30d"
            )
        found["report"] = await get("/v1/report?window=30d")
        # Bad input: a clear 4xx JSON error.
        assert "no segment" in (await get("/v1/segments/nope/history", 404))["error"]
        assert (
            "granularity" in (await get("/v1/segments/big/history?granularity=week", 400))["error"]
        )
        assert "since" in (await get("/v1/segments/big/history?since=yesterday", 400))["error"]
        assert "twice" in (await get("/v1/segments/overlap?segments=big,big", 400))["error"]
        assert "no segment" in (await get("/v1/segments/overlap?segments=big,nope", 404))["error"]
        assert "window" in (await get("/v1/segments/big/performance?window=soon", 400))["error"]
        assert "at most 60d" in (await get("/v1/segments/big/performance?window=90d", 400))["error"]
        assert "no segment" in (await get("/v1/segments/nope/performance", 404))["error"]
    await store.close()
    return found
