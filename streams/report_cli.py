"""``segmenter report [--json] [--window 30d]``: every segment against MIDAS, in the terminal."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from streams.api.analytics import build_report
from streams.engine import RuleLoadError, RuleSet, load_rules
from streams.engine.durations import DurationError, parse_duration
from streams.pipeline import rulepack
from streams.settings import Settings
from streams.stack.discovery import with_running_stack
from streams.store.redis_store import RedisStore


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def format_report(found: dict[str, Any]) -> str:
    """The report as a table, then each segment's flags with their reasons."""
    head = (
        f"{'segment':<24} {'size':>8} {'share':>7} {'revenue':>8} {'7d':>7} {'30d':>7}"
        f" {'reach':>6} {'conv.':>7} {'vs':>7} {'lift':>7}  largest overlap"
    )
    lines = [
        f"{found['customers']:,} customers; conversion: {found['conversion_event']} within"
        f" {found['window_days']:g} days; rules {found['rule_version']}",
        "",
        head,
        "-" * len(head),
    ]
    for row in found["segments"]:
        perf = row["performance"]
        overlap = row["largest_overlap"]
        lines.append(
            f"{row['segment']:<24} {row['size']:>8,} {_pct(row['share']):>7}"
            f" {_pct(row['revenue_share']):>8} {_pct(row['growth_7d']):>7}"
            f" {_pct(row['growth_30d']):>7} {_pct(row['reach'], 0):>6}"
            f" {_pct(perf['rate']):>7} {_pct(perf['comparison_rate']):>7}"
            f" {_pct(perf['lift'], 0):>7}  "
            + (f"{overlap['segment']} (J={overlap['jaccard']:.2f})" if overlap else "-")
        )
    flagged = [(row["segment"], f) for row in found["segments"] for f in row["flags"]]
    flagged += [("(pack)", f) for f in found["flags"]]
    lines.append("")
    if not flagged:
        lines.append("no flags")
    for segment, flag in flagged:
        lines.append(f"{segment:<24} {flag['flag']:<20} {flag['reason']}")
    return "\n".join(lines)


async def _report(settings: Settings, window: float | None) -> dict[str, Any]:
    store = RedisStore.from_settings(settings)
    try:
        pack = await rulepack.published(store)
        rules: RuleSet = pack.rules if pack is not None else load_rules(settings.rules)
        conversion = rules.conversion
        limit = conversion.window_s if conversion is not None else 0.0
        chosen = window if window is not None else settings.report_window_days * 86400
        if conversion is not None and chosen > limit:
            raise DurationError(f"at most {limit / 86400:g}d (the pack's performance window)")
        return await build_report(store, rules, settings, chosen)
    finally:
        await store.close()


def run_report(settings: Settings, as_json: bool, window: str | None) -> int:
    """Print the report; 2 without a Redis, 1 on a bad window or rule pack."""
    settings = with_running_stack(settings)
    if not settings.redis_url:
        print(
            "segmenter report: set SEGMENTER_REDIS_URL or run it beside `segmenter up`",
            file=sys.stderr,
        )
        return 2
    try:
        seconds = parse_duration(window) if window is not None else None
        print("segmenter report: reading every customer...", file=sys.stderr, flush=True)
        found = asyncio.run(_report(settings, seconds))
    except DurationError as exc:
        print(f"segmenter report: --window: {exc}", file=sys.stderr)
        return 1
    except RuleLoadError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    if as_json:
        print(orjson.dumps(found).decode())
    else:
        print(format_report(found))
    return 0
