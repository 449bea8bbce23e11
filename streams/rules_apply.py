"""``segmenter rules apply [DIR] [--no-emit]`` and ``segmenter rfm refresh``.

``rules apply`` validates a rule directory, publishes it as the active pack, and follows the
workers' backfill with a progress bar until every stored customer has been re-evaluated.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from streams.engine import RuleLoadError
from streams.pipeline import rulepack
from streams.pipeline.rfm_live import compute_boundaries, publish_boundaries
from streams.settings import Settings
from streams.stack.discovery import with_running_stack
from streams.store.base import Store
from streams.store.redis_store import RedisStore

BAR = 30


async def count_customers(store: Store) -> int:
    """How many profiles (redirects excluded) the store holds."""
    total = 0
    cursor = 0
    while True:
        cursor, ids = await store.scan_customers(cursor, 1000)
        total += len(ids)
        if cursor == 0:
            return total


def _bar(done: int, total: int) -> str:
    filled = BAR if total == 0 else min(BAR, BAR * done // total)
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {done}/{total} customers"


async def _apply(settings: Settings, directory: Path, emit: bool, wait: float) -> int:
    store = RedisStore.from_settings(settings)
    try:
        files = rulepack.read_directory(directory)
        rules = await rulepack.publish(store, files, emit)
        segments = len(rules.segments)
        print(f"published rule_version={rules.version} ({segments} segments) from {directory}")
        total = await count_customers(store)
        name = f"backfill:{rules.version}"
        started = time.monotonic()
        last_change = started
        last_done = -1
        while True:
            done = int(await store.progress_add(name, 0))
            sys.stderr.write("\r" + _bar(min(done, total), total))
            sys.stderr.flush()
            if done >= total:
                sys.stderr.write("\n")
                mode = "migrations emitted" if emit else "no migrations emitted (--no-emit)"
                print(f"backfill complete in {time.monotonic() - started:.1f}s, {mode}")
                return 0
            if done != last_done:
                last_done, last_change = done, time.monotonic()
            if time.monotonic() - last_change > wait:
                sys.stderr.write("\n")
                print(
                    f"no backfill progress for {wait:.0f}s: are workers running? The pack is "
                    "published; workers backfill when they start."
                )
                return 0
            await asyncio.sleep(0.5)
    finally:
        await store.close()


def run_rules_apply(settings: Settings, directory: Path | None, emit: bool, wait: float) -> int:
    """Validate and publish; exit 1 on invalid rules, 2 without a Redis to publish to."""
    settings = with_running_stack(settings)
    source = directory or settings.rules
    if not settings.redis_url:
        print(
            "segmenter rules apply: set SEGMENTER_REDIS_URL or run beside `segmenter up`",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_apply(settings, source, emit, wait))
    except RuleLoadError as exc:
        for problem in exc.problems:
            print(f"{problem.file}:{problem.line}: {problem.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"segmenter rules apply: cannot read {source}: {exc.strerror}", file=sys.stderr)
        return 1


async def _refresh(settings: Settings) -> int:
    store = RedisStore.from_settings(settings)
    try:
        boundaries = await compute_boundaries(store)
        if boundaries is None:
            print("no customer with an order yet: boundaries unchanged")
            return 0
        await publish_boundaries(store, boundaries)
        print(f"live RFM boundaries: {boundaries.to_dict()}")
        return 0
    finally:
        await store.close()


def run_rfm_refresh(settings: Settings) -> int:
    """Recompute the live RFM boundaries now."""
    settings = with_running_stack(settings)
    if not settings.redis_url:
        print(
            "segmenter rfm refresh: set SEGMENTER_REDIS_URL or run beside `segmenter up`",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_refresh(settings))
