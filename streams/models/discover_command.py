"""``segmenter discover [--k N] [--seed S] --out DIR [--json]``: draft rules from clusters."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from streams.api.queries import iter_states
from streams.engine import RuleLoadError, load_rules
from streams.engine.loader import parse_rules
from streams.models.discovery import Discovery, discover, features
from streams.models.predictor import Predictor
from streams.models.published import ModelReader
from streams.pipeline import rulepack
from streams.pipeline.timekeeping import namespace_now
from streams.settings import Settings
from streams.stack.discovery import with_running_stack
from streams.state.customer import CustomerState
from streams.store.redis_store import RedisStore


def _say(text: str) -> None:
    print(f"segmenter discover: {text}", file=sys.stderr, flush=True)


def draft(found: Discovery, index: int, seed: int) -> tuple[str, str] | None:
    """``(file name, YAML text)`` of one cluster's draft rule (None without a rule)."""
    cluster = found.clusters[index]
    if cluster.condition is None:
        return None
    total = len(found.labels)
    means = ", ".join(f"{name} {value:.4g}" for name, value in cluster.means.items())
    header = [
        f"# Draft from `segmenter discover` (seed {seed}, k={found.k},"
        f" silhouette {found.silhouette:.3f}). Review it before applying.",
        f"# Cluster {index}: {cluster.size} customers ({cluster.size / total:.1%}).",
        f"# Cluster means: {means}.",
        f"# This rule selects {cluster.selected} customers: precision {cluster.precision:.3f},"
        f" recall {cluster.recall:.3f} against the cluster.",
    ]
    sid = f"discovered_{index}"
    body = {
        "id": sid,
        "name": f"Discovered cluster {index}",
        "description": f"Cluster {index} of {found.k} found by segmenter discover (seed {seed}).",
        "kind": "behavioral",
        "condition": cluster.condition,
    }
    text = "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False, width=100)
    return f"{sid}.yaml", text


async def _states(settings: Settings) -> tuple[list[CustomerState], Any, Any, float]:
    store = RedisStore.from_settings(settings)
    try:
        pack = await rulepack.published(store)
        rules = pack.rules if pack is not None else load_rules(settings.rules)
        models = await ModelReader().current(store)
        states = [state async for state in iter_states(store)]
        return states, rules, models, await namespace_now(store, settings.clock)
    finally:
        await store.close()


def run_discover(settings: Settings, out: Path, k: int | None, seed: int, as_json: bool) -> int:
    """0 with the drafts written, 1 with too little data or drafts that do not check."""
    settings = with_running_stack(settings)
    if not settings.redis_url:
        _say("set SEGMENTER_REDIS_URL or run it beside `segmenter up`")
        return 2
    if k is not None and not 2 <= k <= 20:
        _say("--k must be between 2 and 20")
        return 1
    try:
        states, rules, models, now = asyncio.run(_states(settings))
    except RuleLoadError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    conversion = rules.conversion.event if rules.conversion else "Order Completed"
    predictor = Predictor(models, conversion) if models is not None else None
    columns = features(conversion, predictor)
    _say(f"clustering {len(states):,} customers on {len(columns)} features")
    try:
        found = discover(states, columns, now, k, seed)
    except ValueError as exc:
        _say(str(exc))
        return 1
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for index in range(found.k):
        made = draft(found, index, seed)
        if made is None:
            _say(f"cluster {index}: no rule separates it (depth 3); no draft written")
            continue
        files[made[0]] = made[1]
    try:
        parse_rules(files)
    except RuleLoadError as exc:  # a bug: the drafts are built from valid conditions
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    for name, text in files.items():
        (out / name).write_text(text)
    summary = {
        "k": found.k,
        "silhouette": found.silhouette,
        "silhouette_by_k": {str(k): v for k, v in found.scores.items()},
        "features": found.feature_names,
        "clusters": [
            {
                "cluster": c.index,
                "size": c.size,
                "means": c.means,
                "selected": c.selected,
                "precision": c.precision,
                "recall": c.recall,
                "file": f"discovered_{c.index}.yaml" if c.condition is not None else None,
            }
            for c in found.clusters
        ],
    }
    if as_json:
        print(orjson.dumps(summary).decode())
    else:
        print(f"k={found.k} (silhouette {found.silhouette:.3f}); drafts in {out}/")
        for c in found.clusters:
            print(
                f"  cluster {c.index}: {c.size:>7,} customers  rule precision {c.precision:.3f}"
                f" recall {c.recall:.3f}"
            )
    return 0
