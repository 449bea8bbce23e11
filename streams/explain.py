"""``segmenter explain CUSTOMER_ID``: a customer's state, segments, and why each holds or not."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from streams.api.customers import customer_view, explain_view
from streams.engine import RuleLoadError, load_rules
from streams.models.published import ModelReader
from streams.pipeline.timekeeping import namespace_now
from streams.settings import Settings
from streams.stack.discovery import with_running_stack
from streams.store.redis_store import RedisStore


async def _views(settings: Settings, customer_id: str) -> tuple[Any, Any]:
    rules = load_rules(settings.rules)
    store = RedisStore.from_settings(settings)
    try:
        models = await ModelReader().current(store)
        now = await namespace_now(store, settings.clock)
        summary = await customer_view(store, rules, customer_id, models, now)
        why = await explain_view(store, rules, customer_id, now, models)
        return summary, why
    finally:
        await store.close()


def format_explanation(summary: dict[str, Any], why: dict[str, Any]) -> str:
    """Human-readable text of a customer's segments and the reasons."""
    lines = [
        f"customer {summary['customer_id']}",
        f"  primary segment: {summary['primary_segment'] or '-'}",
        f"  segments: {', '.join(summary['segments']) or '-'}",
        "  features: " + ", ".join(f"{k}={v}" for k, v in summary["features"].items()),
        "  traits: " + orjson.dumps(summary["traits"]).decode(),
        f"  why (evaluated at {why['evaluated_at']}):",
    ]
    for item in why["segments"]:
        mark = "IN " if item["member"] else "   "
        verdict = "holds" if item["holds_now"] else "does not hold"
        values = ", ".join(f"{k}={v}" for k, v in item["values"].items())
        lines.append(f"    {mark}{item['segment']:<24} {verdict}: {item['rule']}  [{values}]")
    return "\n".join(lines)


def run_explain(settings: Settings, customer_id: str) -> int:
    """Print the explanation; exit 1 for an unknown customer, 2 without a Redis to ask."""
    settings = with_running_stack(settings)
    if not settings.redis_url:
        print(
            "segmenter explain: set SEGMENTER_REDIS_URL or run it beside `segmenter up`",
            file=sys.stderr,
        )
        return 2
    try:
        summary, why = asyncio.run(_views(settings, customer_id))
    except RuleLoadError as exc:
        for problem in exc.problems:
            print(f"{problem.file}:{problem.line}: {problem.message}", file=sys.stderr)
        return 1
    if summary is None or why is None:
        print(f"segmenter explain: unknown customer {customer_id!r}", file=sys.stderr)
        return 1
    print(format_explanation(summary, why))
    return 0
